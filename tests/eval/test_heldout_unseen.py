"""benchmarks/heldout_unseen.py: the held-out look-alikes split by whether guard-mini v4 trained on them."""

import json
from pathlib import Path

from guard.train.data import split_of
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "heldout_unseen.py"


def _module():
    return load_script(SCRIPT)


def test_subsets_follow_the_hash_split(tmp_path):
    train_id, test_id = "f" * 16, "0" * 16  # split_of reads the first 8 hex digits: ffff... is train, 0000... is test
    assert (split_of(train_id), split_of(test_id)) == ("train", "test")
    row = lambda i, source, label, cats: {"id": i, "messages": [{"role": "user", "content": "q"}], "label": label,  # noqa: E731
                                          "categories": cats, "source": source, "split": "heldout", "adjacent": False}
    rows = [row(train_id, "coconot_contrast", "safe", []), row(test_id, "coconot_contrast", "safe", []),
            row("e" * 16, "harmfulq", "unsafe", ["S1"])]  # unsafe records are kept whatever their hash (eeee... is train)
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parts = _module().subsets(path)
    assert [r["id"] for r in parts["seen"]] == [train_id]
    assert [r["id"] for r in parts["unseen"]] == [test_id, "e" * 16]


def test_a_missing_or_malformed_heldout_file_is_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "heldout.jsonl").write_text("{not json\n")
    for data in (tmp_path / "nowhere", tmp_path):
        out = subprocess.run([sys.executable, str(SCRIPT), "m.pte", "--data", str(data), "--out", str(tmp_path / "r")],
                             capture_output=True, text=True)
        assert out.returncode == 1 and out.stderr.startswith("heldout_unseen: ") and len(out.stderr.splitlines()) == 1
