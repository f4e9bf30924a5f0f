import json
from pathlib import Path

import pytest

from guard.train.data import CATEGORIES, build, collect, key_of, load_jsonl, normalise, split_of, write_dataset, Example
from guard.errors import GuardError

ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not ROOT.is_dir(), reason="public datasets folder not present")


@pytest.fixture(scope="module")
def records():
    return collect(ROOT)


@needs_data
def test_splits_are_disjoint_and_deterministic(records):
    keys = {}
    for r in records:
        k = "\x1e".join(normalise(m["content"]) for m in r["messages"])
        assert keys.setdefault(k, r["split"]) == r["split"], "same normalised text in two splits"
    originals = [r for r in records if "augmented_from" not in r]  # augmentation (train only) may repeat a text
    assert len({"\x1e".join(normalise(m["content"]) for m in r["messages"]) for r in originals}) == len(originals), \
        "duplicates survived dedup"
    assert {r["split"] for r in records} == {"train", "dev", "test", "heldout"}


@needs_data
def test_labels_categories_and_negatives(records):
    for r in records:
        assert set(r["categories"]) <= set(CATEGORIES)
        assert (r["label"] == "unsafe") == bool(r["categories"])
    adjacent = [r for r in records if r["adjacent"]]
    assert adjacent and all(r["label"] == "safe" for r in adjacent)
    assert any(len(r["messages"]) == 2 and r["label"] == "unsafe" for r in records), "no response classification"
    assert 12000 < sum(r["split"] == "train" for r in records) < 25000


@needs_data
def test_collect_keeps_heldout_out_of_training(records):
    from guard.train.sources import HELDOUT_SOURCES

    held = [r for r in records if r["split"] == "heldout"]
    assert {r["source"] for r in held} == set(HELDOUT_SOURCES)
    texts = {normalise(r["messages"][0]["content"]) for r in held}
    rest = [r for r in records if r["split"] != "heldout"]
    assert not {r["source"] for r in rest} & set(HELDOUT_SOURCES)
    assert not [r for r in rest if normalise(r["messages"][0]["content"]) in texts]


def test_normalise_is_its_regex_definition():
    """normalise and dedup.words run on bytes.translate for speed; they must equal the regex they replace, on any text."""
    import random
    import re

    from guard.train.dedup import words

    rng = random.Random(0)
    alphabet = "aZ09 \t\n\x1c\x85\u00a0\u3000éİK\u212aß-_.!😀\x00\x7f\ud800"
    for _ in range(20000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert normalise(t) == re.sub(r"[^a-z0-9]+", " ", t.lower()).strip(), repr(t)
        assert words(t) == re.findall(r"[a-z0-9]+", t.lower()), repr(t)


def test_split_is_a_function_of_the_text():
    ex = Example((("user", "How do I bake bread?"),), "safe", (), "a")
    ex2 = Example((("user", "how do i bake  BREAD"),), "safe", (), "b")
    assert key_of(ex) == key_of(ex2)
    assert split_of(key_of(ex)) == split_of(key_of(ex2))


def test_build_writes_files_and_refuses_nonempty_out(tmp_path):
    rec = {"id": "x", "messages": [{"role": "user", "content": "hi"}], "label": "safe", "categories": [],
           "source": "t", "split": "test", "adjacent": False}
    stats = write_dataset([rec], tmp_path / "d")
    assert stats["splits"]["test"]["n"] == 1
    assert load_jsonl(tmp_path / "d" / "test.jsonl", "test")[0]["id"] == "x"
    with pytest.raises(GuardError, match="not empty"):
        write_dataset([rec], tmp_path / "d")
    with pytest.raises(GuardError, match="empty dataset"):
        write_dataset([], tmp_path / "e")
    assert not (tmp_path / "e").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["d"], "a temporary directory was left behind"


def test_bad_root_and_bad_records(tmp_path):
    with pytest.raises(GuardError, match="not a directory"):
        build(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "partial").mkdir()
    with pytest.raises(GuardError, match="missing file"):
        build(tmp_path / "partial", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}], "label": "unsafe", "categories": ["S15"]}) + "\n")
    with pytest.raises(GuardError, match="outside the category set"):
        load_jsonl(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(GuardError, match="empty dataset"):
        load_jsonl(empty)


@pytest.mark.slow
@needs_data
def test_cli_data_build_is_deterministic(records, tmp_path):
    """`guard data build` writes what a second, independent collect() returned, split by split (slow: a second
    full-corpus build, ~15 s on this CPU)."""
    from guard.cli import main

    assert main(["data", "build", "--root", str(ROOT), "--out", str(tmp_path / "d")]) == 0
    assert load_jsonl(tmp_path / "d" / "all.jsonl") == records
    for split in ("train", "dev", "test", "heldout"):
        assert load_jsonl(tmp_path / "d" / f"{split}.jsonl") == [r for r in records if r["split"] == split]
    stats = json.loads((tmp_path / "d" / "stats.json").read_text())
    assert stats["total"] == len(records) and stats["dropped"]


@pytest.mark.slow
@needs_data
def test_cli_data_build_no_augment_is_the_build_less_its_augmentations(records, tmp_path):
    """`guard data build --no-augment` (next9's training file) writes the default build's records but those of
    guard.train.augment (source aug_*), in the same order, and the same dev, test and held-out splits."""
    from guard.cli import main

    assert main(["data", "build", "--no-augment", "--root", str(ROOT), "--out", str(tmp_path / "d")]) == 0
    plain = [r for r in records if not r["source"].startswith("aug_")]
    assert len(plain) < len(records) and load_jsonl(tmp_path / "d" / "all.jsonl") == plain
    assert load_jsonl(tmp_path / "d" / "heldout.jsonl") == [r for r in records if r["split"] == "heldout"]


@pytest.mark.slow
@needs_data
def test_exclude_source_leaves_only_its_training_records_out(records, tmp_path, capsys):
    """--exclude-source drops the source from train only (dev, test and held-out are the full build's); a name that
    is not a training source is a one-line error, exit 2, and nothing is written."""
    from guard.cli import main

    plain = [r for r in records if not r["source"].startswith("aug_")]
    cut = collect(ROOT, augment=False, exclude_sources=("aart", "gsm8k"))
    assert cut == [r for r in plain if not (r["split"] == "train" and r["source"] in ("aart", "gsm8k"))]
    assert len(cut) < len(plain) and {r["source"] for r in cut if r["split"] != "train"} >= {"aart", "gsm8k"}
    assert main(["data", "build", "--root", str(ROOT), "--out", str(tmp_path / "d"), "--exclude-source", "harmfulq"]) == 2
    err = capsys.readouterr().err
    assert "harmfulq is not a training source" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def _rec(i: int, adjacent: bool) -> dict:
    return {"id": f"{i:016x}", "messages": [{"role": "user", "content": f"text {i}"}], "label": "safe",
            "categories": [], "source": "s", "split": "train", "adjacent": adjacent}


def test_repeat_adjacent_reaches_the_share_copying_evenly():
    """3 look-alikes of 20 records raised to share 0.4: ceil((8 - 3) / 0.6) = 9 copies, every look-alike copied 3
    times, each copy with its own id and the original in repeat_of; a share already reached gives no copies."""
    from guard.train.data import repeat_adjacent

    train = [_rec(i, i < 3) for i in range(20)]
    copies = repeat_adjacent(train, 0.4, seed=1)
    assert len(copies) == 9
    assert sum(r["adjacent"] for r in train + copies) / len(train + copies) >= 0.4
    assert sorted(r["repeat_of"] for r in copies) == sorted([f"{i:016x}" for i in range(3)] * 3)
    assert len({r["id"] for r in train + copies}) == len(train + copies)
    assert all(c | {"id": o["id"]} == o | {"repeat_of": o["id"]} for c in copies for o in train if o["id"] == c["repeat_of"])
    uneven = repeat_adjacent(train, 0.3, seed=1)  # ceil((6 - 3) / 0.7) = 5: two look-alikes twice, one once
    assert len(uneven) == 5 and sorted(sum(c["repeat_of"] == f"{i:016x}" for c in uneven) for i in range(3)) == [1, 2, 2]
    assert repeat_adjacent(train, 0.1) == []


def test_repeat_adjacent_refuses_what_it_cannot_do():
    from guard.train.data import repeat_adjacent

    for share in (0, 1, -0.2, float("nan")):
        with pytest.raises(GuardError, match="between 0 and 1"):
            repeat_adjacent([_rec(0, True)], share)
    with pytest.raises(GuardError, match="no safety-adjacent"):
        repeat_adjacent([_rec(0, False)], 0.5)


def _unsafe(i: int, source: str) -> dict:
    return _rec(i, False) | {"label": "unsafe", "categories": ["S2"], "source": source}


def test_unsafe_to_drop_keeps_the_share_and_every_sources_fraction():
    """10 safe, 5 look-alikes, 25 unsafe (15 of a, 10 of b). Share 0.5 alone: N = 15 / 0.5 = 30, keep 15 (a 9, b 6).
    With look-alikes raised to 0.25: N = 10 / 0.25 = 40, keep 20 (a 12, b 8), and repeat_adjacent then makes the
    split exactly 40 with 10 look-alikes. A share the split is already under drops nothing; the draw is seeded."""
    from guard.train.data import repeat_adjacent, unsafe_to_drop

    train = [_rec(i, False) for i in range(10)] + [_rec(i, True) for i in range(10, 15)]
    train += [_unsafe(i, "a") for i in range(15, 30)] + [_unsafe(i, "b") for i in range(30, 40)]
    by_id = {r["id"]: r for r in train}
    drop = unsafe_to_drop(train, 0.5, seed=3)
    assert sorted(by_id[i]["source"] for i in drop) == ["a"] * 6 + ["b"] * 4
    assert drop == unsafe_to_drop(train, 0.5, seed=3) != unsafe_to_drop(train, 0.5, seed=4)
    drop = unsafe_to_drop(train, 0.5, adjacent_share=0.25, seed=3)
    assert sorted(by_id[i]["source"] for i in drop) == ["a"] * 3 + ["b"] * 2
    left = [r for r in train if r["id"] not in drop]
    final = left + repeat_adjacent(left, 0.25, seed=3)
    assert len(final) == 40 and sum(r["label"] == "unsafe" for r in final) == 20 and sum(r["adjacent"] for r in final) == 10
    assert unsafe_to_drop(train, 0.7) == set()  # 25 / 40 = 0.625 already under
    assert unsafe_to_drop(train, 0.5, adjacent_share=0.05) == unsafe_to_drop(train, 0.5)  # 5 look-alikes are enough


def test_unsafe_share_refuses_what_it_cannot_do():
    from guard.train.data import unsafe_to_drop

    for share in (0, 1, -0.2, float("nan")):
        with pytest.raises(GuardError, match="--unsafe-share must be between 0 and 1"):
            unsafe_to_drop([_unsafe(0, "a")], share)
    with pytest.raises(GuardError, match="add up to 1 or more"):
        unsafe_to_drop([_unsafe(0, "a")], 0.5, adjacent_share=0.5)


@pytest.mark.parametrize("flags", [["--unsafe-share", "0"], ["--adjacent-share", "0.6", "--unsafe-share", "0.45"]])
def test_cli_unsafe_share_refused_before_reading(tmp_path, capsys, flags):
    from guard.cli import main

    assert main(["data", "build", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "d")] + flags) == 2
    err = capsys.readouterr().err
    assert ("between 0 and 1" in err or "add up to 1" in err) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_cli_adjacent_share_out_of_range_is_refused_before_reading(tmp_path, capsys):
    from guard.cli import main

    assert main(["data", "build", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "d"),
                 "--adjacent-share", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "between 0 and 1" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


@pytest.mark.slow
@needs_data
def test_adjacent_share_adds_only_copies_of_training_look_alikes(records):
    """collect(adjacent_share=0.29) is the default build plus copies of its train look-alikes, which then make up
    0.29 of the train split (at most one record over)."""
    report: dict = {}
    more = collect(ROOT, adjacent_share=0.29, report=report)
    assert more[:len(records)] == records and report["adjacent_copies"] == len(more) - len(records) > 0
    train = [r for r in more if r["split"] == "train"]
    share = sum(r["adjacent"] for r in train) / len(train)
    assert 0.29 <= share < 0.29 + 1 / len(train)
    orig = {r["id"]: r for r in records if r["split"] == "train" and r["adjacent"]}
    assert all(c["repeat_of"] in orig and c["split"] == "train" for c in more[len(records):])


@pytest.mark.slow
@needs_data
def test_unsafe_share_drops_only_unsafe_training_records(records):
    """collect(unsafe_share=0.373, adjacent_share=0.29): the default build less some unsafe train records (every
    unsafe source the same fraction, give or take one), plus look-alike copies; both shares within one record."""
    report: dict = {}
    out = collect(ROOT, adjacent_share=0.29, unsafe_share=0.373, report=report)
    copies = [r for r in out if "repeat_of" in r]
    kept = [r for r in out if "repeat_of" not in r]
    ids = {r["id"] for r in kept}
    gone = [r for r in records if r["id"] not in ids]
    assert kept == [r for r in records if r["id"] in ids] and len(copies) == report["adjacent_copies"] > 0
    assert gone and all(r["split"] == "train" and r["label"] == "unsafe" for r in gone)
    train = [r for r in out if r["split"] == "train"]
    for share, n in ((0.373, sum(r["label"] == "unsafe" for r in train)), (0.29, sum(r["adjacent"] for r in train))):
        assert abs(n - share * len(train)) <= 1
    before = {}
    for r in records:
        if r["split"] == "train" and r["label"] == "unsafe":
            before[r["source"]] = before.get(r["source"], 0) + 1
    frac = len(gone) / sum(before.values())
    for source, n in before.items():
        assert abs(sum(r["source"] == source for r in gone) - frac * n) <= 1


def test_cli_data_build_bad_root(tmp_path, capsys):
    from guard.cli import main

    assert main(["data", "build", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "d2")]) == 2
    assert "not a directory" in capsys.readouterr().err and not (tmp_path / "d2").exists()
