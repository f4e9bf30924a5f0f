"""`guard data build`: public moderation datasets -> labelled JSONL for prompt and response classification.

One record per line (docs/data.md)::

    {"id": "3f2a...", "messages": [{"role": "user", "content": "..."}, ...], "label": "safe"|"unsafe",
     "categories": ["S1", ...], "source": "harmbench", "split": "train"|"dev"|"test", "adjacent": false}

``adjacent`` marks benign prompts that look risky (XSTest-like hard negatives); false-positive rate on them is
reported separately. Records are deduplicated across sources by a hash of the normalised text of the whole
conversation, and the split is a pure function of that hash, so the same text always lands in the same split
(no leakage, whatever the sources or their order).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import random
from pathlib import Path

from guard.errors import GuardError
from guard.train.dedup import words
from guard.train.examples import Example, prompt as _p, read_rows as _jsonl, response as _r  # noqa: F401
from guard.train.sources import HELDOUT_READERS, JBB, NEW_READERS
from guard.fsutil import atomic_dir

CATEGORIES = tuple(f"S{i}" for i in range(1, 15))
SPLITS = ("train", "dev", "test", "heldout")  # heldout: whole sources kept out of training (sources.HELDOUT_SOURCES)
MAX_CHARS = 600  # long texts are cut: short sequences keep CPU training affordable

OPENAI = {"S": "S12", "S3": "S4", "H": "S10", "H2": "S10", "HR": "S10", "V": "S1", "V2": "S1", "SH": "S11"}
HARMBENCH = {"chemical_biological": "S9", "copyright": "S8", "cybercrime_intrusion": "S2", "illegal": "S2",
             "harassment_bullying": "S10", "harmful": "S1"}  # misinformation_disinformation: no clean code, dropped
CATQA = {"Illegal Activity": "S2", "Child Abuse": "S1", "Hate/Harass/Violence": "S10", "Malware Viruses": "S2",
         "Physical Harm": "S1", "Economic Harm": "S2", "Fraud/Deception": "S2", "Adult Content": "S12",
         "Political Campaigning": "S13", "Privacy Violation Activity": "S7", "Tailored Financial Advice": "S6"}
CATQA_SUB = {"Weapon:": "S9", "Content Sexual exploitation": "S4", "Online predation": "S4", "Self-harm": "S11",
             "Weapon making": "S9", "Terrorism and extremism": "S1", "Intellectual property theft": "S8"}

# Per-source caps keep the set CPU-sized and stop one source (e.g. gsm8k) from dominating; sampling is seeded.
# Caps apply after exact and near-duplicate removal. DangerousQA is HarmfulQ (held out), so none of it survives.
CAPS = {"gsm8k": 300, "dolly_prompt": 400, "dolly_response": 400, "hatecheck_hateful": 500, "hatecheck_benign": 500,
        "jbb_response": 900, "harmfulqa": 500, "aart": 1000, "davidson_hate": 700, "davidson_offensive": 700,
        "davidson_neither": 300, "gptfuzz": 1200, "diasafety": 1000, "sap": 500, "trustllm_jailbreak": 400,
        "trustllm_privacy": 250, "diselect_voting": 250, "diselect_mps": 250, "jbb_attack_prompt": 500,
        "jbb_attack_response": 900, "coconot_pref": 600, "advbench": 500}
# Templated sources: near-duplicates (word 3-gram Jaccard >= NEAR_DUP with a kept record of the same label) are removed
TEMPLATED = ("aart", "sap", "harmfulqa", "trustllm_jailbreak", "trustllm_privacy", "diselect_voting", "diselect_mps",
             "diselect_benign", "cyberseceval_interpreter", "cyberseceval_mitre_frr", "gptfuzz", "gptfuzz_question",
             "jbb_attack_prompt", "jbb_attack_response", "catqa", "advbench", "adversarialqa", "patronus_copyright")
NEAR_DUP = 0.7
HELDOUT_NEAR_DUP = 0.6  # a training record this close to any held-out text is dropped
# statement and chit-chat sources cannot hold a held-out request: only the exact check is run on them (speed)
NO_NEAR_CHECK = ("davidson_hate", "davidson_offensive", "davidson_neither", "hatecheck_hateful", "hatecheck_benign",
                 "toxigen", "toxigen_neutral", "gsm8k", "diasafety")



def openai_moderation(root: Path):
    for r in _jsonl(root / "openai_moderation/samples-1680.jsonl"):
        flags = {k: r.get(k) for k in OPENAI}
        hit = sorted({OPENAI[k] for k, v in flags.items() if v == 1})
        if hit:
            yield _p(r["prompt"], "unsafe", hit, "openai_moderation")
        elif all(v == 0 for v in flags.values()):
            yield _p(r["prompt"], "safe", (), "openai_moderation")


def harmbench(root: Path):
    with open(root / "harmbench/harmbench_behaviors_text_all.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["SemanticCategory"] in HARMBENCH and not r["ContextString"]:
                yield _p(r["Behavior"], "unsafe", [HARMBENCH[r["SemanticCategory"]]], "harmbench")


def catqa(root: Path):
    data = json.loads((root / "red_instruct/harmful_questions/catqa_english.json").read_text(encoding="utf-8"))
    for cat, subs in data.items():
        for sub, qs in subs.items():
            code = CATQA_SUB.get(sub, CATQA[cat])
            for q in qs:
                yield _p(q, "unsafe", [code], "catqa")


def cyberseceval(root: Path):
    for r in json.loads((root / "purplellama_cyberseceval/interpreter.json").read_text(encoding="utf-8")):
        yield _p(r["mutated_prompt"], "unsafe", ["S14"], "cyberseceval_interpreter")
    for r in json.loads((root / "purplellama_cyberseceval/mitre_frr.json").read_text(encoding="utf-8")):
        yield _p(r["mutated_prompt"], "safe", (), "cyberseceval_mitre_frr", adjacent=True)


def coconot(root: Path):
    # The safety-concern part of the eval set is left out: many of its prompts are mild and Llama Guard 3 would pass them.
    for r in _jsonl(root / "coconot/coconot_eval.jsonl"):
        if r["category"] != "Requests with safety concerns":
            yield _p(r["prompt"], "safe", (), "coconot_eval")
    for r in _jsonl(root / "coconot/coconot_pref.jsonl"):
        yield _p(r["prompt"], "safe", (), "coconot_pref", adjacent=True)


def hatecheck(root: Path):
    with open(root / "hatecheck/test_suite_cases.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["label_gold"] == "hateful":
                yield _p(r["test_case"], "unsafe", ["S10"], "hatecheck_hateful")
            else:
                yield _p(r["test_case"], "safe", (), "hatecheck_benign", adjacent=True)


def toxigen(root: Path):
    for path in sorted(glob.glob(str(root / "toxigen_demonstrations/demonstrations/*/*.txt"))):
        hate = os.path.basename(path).startswith("hate")
        for line in open(path, encoding="utf-8"):
            if line.strip():
                yield (_p(line.strip(), "unsafe", ["S10"], "toxigen") if hate
                       else _p(line.strip(), "safe", (), "toxigen_neutral", adjacent=True))


def benign(root: Path):
    for r in _jsonl(root / "gsm8k/test.jsonl"):
        yield _p(r["question"], "safe", (), "gsm8k")
    for r in _jsonl(root / "self_instruct/user_oriented_instructions.jsonl"):
        yield _p(r["instruction"], "safe", (), "self_instruct")
    for path in ("fastchat_bench/mt_bench/question.jsonl", "fastchat_bench/vicuna_bench/question.jsonl"):
        for r in _jsonl(root / path):
            yield _p(r["turns"][0], "safe", (), "fastchat_bench")
    for r in _jsonl(root / "dolly_partial/google_flan-t5-small_decode_output.jsonl"):  # `decoded` is ignored
        yield _p(r["instruction"], "safe", (), "dolly_prompt")
        if r["text"].strip():
            yield _r(r["instruction"], r["text"], "safe", (), "dolly_response")


def jbb_responses(root: Path):
    """Model responses to JailbreakBench prompts judged by Llama Guard 2 (model-judged labels: judge errors included)."""
    for path in sorted(glob.glob(str(root / "refusal_direction/pipeline/runs/*/completions/jailbreakbench_*_evaluations.json"))):
        for r in json.loads(Path(path).read_text(encoding="utf-8"))["completions"]:
            if not r["response"].strip():
                continue
            if r["is_jailbreak_llamaguard2"] == 1:
                yield _r(r["prompt"], r["response"], "unsafe", [JBB[r["category"]]], "jbb_response")
            else:
                yield _r(r["prompt"], r["response"], "safe", (), "jbb_response")


READERS = (openai_moderation, harmbench, catqa, cyberseceval, coconot, hatecheck, toxigen, benign, jbb_responses) + NEW_READERS


def normalise(text: str) -> str:
    """Lower case, every run of characters other than ``[a-z0-9]`` one space, stripped."""
    return " ".join(words(text))


def text_key(texts) -> str:
    """The identity of a conversation's texts (one per message), as deduplication and the splits see it."""
    return hashlib.sha256("\x1e".join(normalise(t) for t in texts).encode()).hexdigest()


def key_of(ex: Example) -> str:
    return text_key(t for _, t in ex.messages)


def split_of(key: str, dev: float = 0.1, test: float = 0.15) -> str:
    """Deterministic split from the text hash (independent of the rest of the data)."""
    u = int(key[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "dev" if u < test + dev else "train"


def _clip(text: str) -> str:
    text = " ".join(text.split()) if len(text) > MAX_CHARS else text.strip()
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS].rsplit(" ", 1)[0] + " ..."


def _read(reader, root: Path) -> list[Example]:
    try:
        items = list(reader(root))
    except FileNotFoundError as e:
        raise GuardError(f"{reader.__name__}: missing file {e.filename}; point --root at a copy of the datasets") from None
    out = []
    for ex in items:
        ex = Example(tuple((r, _clip(t)) for r, t in ex.messages), ex.label, ex.categories, ex.source, ex.adjacent)
        if all(normalise(t) for _, t in ex.messages):
            out.append(ex)
    return out


def _text(ex: Example) -> str:
    return "\n".join(t for _, t in ex.messages)


def collect(root: Path, seed: int = 0, augment: bool = True, report: dict | None = None,
            exclude_sources: tuple[str, ...] = (), adjacent_share: float | None = None,
            unsafe_share: float | None = None) -> list[dict]:
    """Read every source under ``root``; hold out whole sources (split 'heldout'); drop training candidates that
    equal or nearly equal a held-out text; dedup by normalised text (a conflict keeps the unsafe label), drop near
    duplicates inside templated sources, cap, split, and add the robustness augmentation (train split only).
    ``exclude_sources``: sources whose records are then left out of the train split (dev, test and held-out stay the
    full build's, so runs that differ in it read the same evaluation records; the augmentation is made from the
    training records left); a name that is not a training source of the build is a GuardError.
    ``adjacent_share``: repeat the safety-adjacent benign training records (seeded, each as evenly as possible)
    until they are this share of the train split; see ``repeat_adjacent``.
    ``unsafe_share``: drop unsafe training records (the same fraction of every source) until they are this share of
    the train split, after any look-alike copies; see ``unsafe_to_drop``."""
    from guard.train.dedup import NearDup

    root = Path(root)
    _check_shares(adjacent_share, unsafe_share)
    if not root.is_dir():
        raise GuardError(f"data root {root} is not a directory (expected the shared public datasets folder)")
    report = report if report is not None else {}
    held: dict[str, Example] = {}
    for reader in HELDOUT_READERS:
        for ex in _read(reader, root):
            held.setdefault(key_of(ex), ex)
    held_index = NearDup(HELDOUT_NEAR_DUP)
    held_users = set()
    for k, ex in held.items():
        held_index.add(k, _text(ex))
        held_users.add(normalise(ex.messages[0][1]))
    by_key: dict[str, Example] = {}
    dropped = report.setdefault("dropped", {})
    for reader in READERS:
        for ex in _read(reader, root):
            k = key_of(ex)
            if k in held or normalise(ex.messages[0][1]) in held_users or (
                    ex.source not in NO_NEAR_CHECK and held_index.find(ex.messages[0][1]) is not None):
                dropped[f"{ex.source}: same as held-out"] = dropped.get(f"{ex.source}: same as held-out", 0) + 1
                continue
            old = by_key.get(k)
            if old is None or (old.label == "safe" and ex.label == "unsafe"):
                by_key[k] = ex
    near = {lab: NearDup(NEAR_DUP) for lab in ("safe", "unsafe")}
    for k in sorted(by_key, key=lambda k: (by_key[k].source, k)):
        ex = by_key[k]
        if ex.source in TEMPLATED and near[ex.label].add(k, _text(ex)) is not None:
            dropped[f"{ex.source}: near-duplicate"] = dropped.get(f"{ex.source}: near-duplicate", 0) + 1
            del by_key[k]
    rng = random.Random(seed)
    by_source: dict[str, list[str]] = {}
    for k in sorted(by_key):
        by_source.setdefault(by_key[k].source, []).append(k)
    keep = []
    for source, keys in sorted(by_source.items()):
        cap = CAPS.get(source)
        keep += rng.sample(keys, cap) if cap is not None and len(keys) > cap else keys
    out = [_record(k, by_key[k], split_of(k)) for k in sorted(keep)]
    out += [_record(k, held[k], "heldout") for k in sorted(held)]
    if exclude_sources:
        unknown = sorted(set(exclude_sources) - {r["source"] for r in out if r["split"] == "train"})
        if unknown:
            raise GuardError(f"--exclude-source: {', '.join(unknown)} is not a training source of this build "
                             f"(the names are the 'source' fields of its train.jsonl and stats.json)")
        kept = []
        for r in out:
            if r["split"] == "train" and r["source"] in exclude_sources:
                why = f"{r['source']}: excluded from train"
                dropped[why] = dropped.get(why, 0) + 1
            else:
                kept.append(r)
        out = kept
    if augment:
        from guard.train.augment import augment_records

        out += augment_records([r for r in out if r["split"] == "train"], seed)
    if unsafe_share is not None:
        drop = unsafe_to_drop([r for r in out if r["split"] == "train"], unsafe_share, adjacent_share, seed)
        for r in out:
            if r["id"] in drop:
                why = f"{r['source']}: unsafe share"
                dropped[why] = dropped.get(why, 0) + 1
        out = [r for r in out if r["id"] not in drop]
    if adjacent_share is not None:
        copies = repeat_adjacent([r for r in out if r["split"] == "train"], adjacent_share, seed)
        report["adjacent_copies"] = len(copies)
        out += copies
    return out


def _check_share(share: float, flag: str = "--adjacent-share") -> None:
    if not 0 < share < 1:
        raise GuardError(f"{flag} must be between 0 and 1 (exclusive), not {share}")


def _check_shares(adjacent_share: float | None, unsafe_share: float | None) -> None:
    if adjacent_share is not None:
        _check_share(adjacent_share)
    if unsafe_share is not None:
        _check_share(unsafe_share, "--unsafe-share")
    if adjacent_share is not None and unsafe_share is not None and not adjacent_share + unsafe_share < 1:
        raise GuardError(f"--adjacent-share {adjacent_share} and --unsafe-share {unsafe_share} add up to 1 or more: "
                         "no room is left for the other safe records")


def unsafe_to_drop(train: list[dict], share: float, adjacent_share: float | None = None, seed: int = 0) -> set[str]:
    """The ids of the unsafe records of ``train`` to drop so that unsafe records are ``share`` of the train split,
    counted after ``repeat_adjacent(.., adjacent_share)`` has copied the look-alikes (None: no copies).

    With S safe records that are not look-alikes and A look-alikes, the final split has N = S / (1 - share - a)
    records when the copies are needed (a * N > A), else N = (S + A) / (1 - share); U' = round(share * N) unsafe
    records are kept. Every source keeps the same fraction of its unsafe records (largest remainders, seeded ties);
    which records go is a seeded sample. A share the split is already under drops nothing."""
    _check_shares(adjacent_share, share)
    unsafe = sorted((r for r in train if r["label"] == "unsafe"), key=lambda r: r["id"])
    adj = sum(r["adjacent"] for r in train)
    other = len(train) - len(unsafe) - adj
    total = (other + adj) / (1 - share)
    if adjacent_share is not None and adjacent_share * other / (1 - share - adjacent_share) > adj:
        total = other / (1 - share - adjacent_share)
    keep = round(share * total)
    if keep >= len(unsafe):
        return set()
    by_source: dict[str, list[dict]] = {}
    for r in unsafe:
        by_source.setdefault(r["source"], []).append(r)
    rng = random.Random(seed)
    exact = {s: len(rs) * keep / len(unsafe) for s, rs in by_source.items()}
    quota = {s: math.floor(q) for s, q in exact.items()}
    order = sorted(by_source, key=lambda s: (-(exact[s] - quota[s]), rng.random()))
    for s in order[:keep - sum(quota.values())]:
        quota[s] += 1
    drop = set()
    for s, rs in sorted(by_source.items()):
        kept = {r["id"] for r in rng.sample(rs, quota[s])}
        drop |= {r["id"] for r in rs if r["id"] not in kept}
    return drop


def repeat_adjacent(train: list[dict], share: float, seed: int = 0) -> list[dict]:
    """Copies of the safety-adjacent benign records of ``train`` that raise their share of it to ``share``.

    n copies make (A + n) / (N + n) = share. Every record is copied k or k + 1 times (the + 1 go to a seeded sample), so
    no look-alike is favoured. A copy keeps its record's text, label and source, gets an id of its own and names the
    original in ``repeat_of``. A share the records already reach gives no copies; a share outside (0, 1), or one
    asked of a split without such records, is a GuardError."""
    _check_share(share)
    adj = sorted((r for r in train if r["adjacent"]), key=lambda r: r["id"])
    if not adj:
        raise GuardError("--adjacent-share: the train split has no safety-adjacent benign records to repeat")
    n = math.ceil((share * len(train) - len(adj)) / (1 - share))
    if n <= 0:
        return []
    times, extra = divmod(n, len(adj))
    plus = set(r["id"] for r in random.Random(seed).sample(adj, extra))
    out = []
    for r in adj:
        for c in range(times + (r["id"] in plus)):
            h = hashlib.sha256(f"{r['id']}\x1erepeat {c}".encode()).hexdigest()[:16]
            out.append(r | {"id": h, "repeat_of": r["id"]})
    return out


def _record(k: str, ex: Example, split: str) -> dict:
    return {"id": k[:16], "messages": [{"role": r, "content": t} for r, t in ex.messages], "label": ex.label,
            "categories": list(ex.categories), "source": ex.source, "split": split, "adjacent": ex.adjacent}


def validate(record: dict, where: str) -> dict:
    """Check one labelled record; raise GuardError naming the bad value."""
    if record.get("label") not in ("safe", "unsafe"):
        raise GuardError(f"{where}: label must be 'safe' or 'unsafe', not {record.get('label')!r}")
    cats = record.get("categories", [])
    bad = [c for c in cats if c not in CATEGORIES]
    if bad:
        raise GuardError(f"{where}: categories {bad} are outside the category set S1..S14")
    if record["label"] == "unsafe" and not cats:
        raise GuardError(f"{where}: an unsafe record needs at least one category")
    if record["label"] == "safe" and cats:
        raise GuardError(f"{where}: a safe record cannot have categories ({cats})")
    if not isinstance(record.get("messages"), list) or not record["messages"]:
        raise GuardError(f"{where}: 'messages' must be a non-empty list")
    return record


def load_jsonl(path: str | Path, split: str | None = None) -> list[dict]:
    """Read a labelled JSONL file (optionally one split); empty or malformed input is a GuardError."""
    path = Path(path)
    if not path.is_file():
        raise GuardError(f"no such data file {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise GuardError(f"{path}:{n}: not JSON ({e.msg})") from None
            if split is None or rec.get("split") == split:
                rows.append(validate(rec, f"{path}:{n}"))
    if not rows:
        raise GuardError(f"{path}: empty dataset" + (f" (no records in split {split!r})" if split else ""))
    return rows


def split_counts(rows: list[dict]) -> dict:
    """How many records, unsafe, safety-adjacent benign and response-classification (more than one turn) ROWS hold."""
    return {"n": len(rows), "unsafe": sum(r["label"] == "unsafe" for r in rows),
            "adjacent": sum(r["adjacent"] for r in rows), "response": sum(len(r["messages"]) > 1 for r in rows)}


def write_dataset(records: list[dict], out: str | Path) -> dict:
    """Write all.jsonl, {train,dev,test}.jsonl and stats.json into ``out`` atomically (temp dir, then rename)."""
    if not records:
        raise GuardError("empty dataset: no records were read")
    with atomic_dir(out, "--out") as tmp:
        stats = {"total": len(records), "splits": {}, "sources": {}, "categories": {}, "categories_by_split": {},
                 "heldout_sources": sorted({r["source"] for r in records if r["split"] == "heldout"})}
        for name in ("all",) + SPLITS:
            rows = records if name == "all" else [r for r in records if r["split"] == name]
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            if name != "all":
                stats["splits"][name] = split_counts(rows)
        for r in records:
            s = stats["sources"].setdefault(r["source"], {"safe": 0, "unsafe": 0})
            s[r["label"]] += 1
            s[r["split"]] = s.get(r["split"], 0) + 1
            by = stats["categories_by_split"].setdefault(r["split"], {})
            for c in r["categories"]:
                stats["categories"][c] = stats["categories"].get(c, 0) + 1
                by[c] = by.get(c, 0) + 1
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def build(root: str | Path, out: str | Path, seed: int = 0, augment: bool = True,
          exclude_sources: tuple[str, ...] = (), adjacent_share: float | None = None,
          unsafe_share: float | None = None) -> dict:
    report: dict = {}
    records = collect(Path(root), seed, augment=augment, report=report, exclude_sources=tuple(exclude_sources),
                      adjacent_share=adjacent_share, unsafe_share=unsafe_share)
    stats = write_dataset(records, out)
    stats["dropped"] = dict(sorted(report.get("dropped", {}).items()))
    if "adjacent_copies" in report:
        stats["adjacent_copies"] = report["adjacent_copies"]
    (Path(out) / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def calibration_texts(path: str | Path | None, n: int) -> list[str]:
    """Up to ``n`` texts to measure importance on (guard prune --calib): a labelled JSONL file (each record's
    messages joined) or a plain text file (one text per line). None: no texts."""
    if path is None:
        return []
    try:
        lines = [line for line in open(path, encoding="utf-8") if line.strip()]
    except OSError as e:
        raise GuardError(f"cannot read calibration file {path}: {e.strerror}") from None
    texts = []
    for line in lines[:n]:
        try:
            rec = json.loads(line)
            texts.append("\n\n".join(m["content"] for m in rec["messages"]) if isinstance(rec, dict) and "messages" in rec else line)
        except json.JSONDecodeError:
            texts.append(line.strip())
    if not texts:
        raise GuardError(f"calibration file {path} is empty")
    return texts
