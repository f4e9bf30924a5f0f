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
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from guard.errors import GuardError
from guard.fsutil import atomic_dir

CATEGORIES = tuple(f"S{i}" for i in range(1, 15))
SPLITS = ("train", "dev", "test")
MAX_CHARS = 600  # long texts are cut: short sequences keep CPU training affordable

OPENAI = {"S": "S12", "S3": "S4", "H": "S10", "H2": "S10", "HR": "S10", "V": "S1", "V2": "S1", "SH": "S11"}
HARMBENCH = {"chemical_biological": "S9", "copyright": "S8", "cybercrime_intrusion": "S2", "illegal": "S2",
             "harassment_bullying": "S10", "harmful": "S1"}  # misinformation_disinformation: no clean code, dropped
CATQA = {"Illegal Activity": "S2", "Child Abuse": "S1", "Hate/Harass/Violence": "S10", "Malware Viruses": "S2",
         "Physical Harm": "S1", "Economic Harm": "S2", "Fraud/Deception": "S2", "Adult Content": "S12",
         "Political Campaigning": "S13", "Privacy Violation Activity": "S7", "Tailored Financial Advice": "S6"}
CATQA_SUB = {"Weapon:": "S9", "Content Sexual exploitation": "S4", "Online predation": "S4", "Self-harm": "S11",
             "Weapon making": "S9", "Terrorism and extremism": "S1", "Intellectual property theft": "S8"}
JBB = {"Harassment/Discrimination": "S10", "Malware/Hacking": "S2", "Physical harm": "S1", "Economic harm": "S2",
       "Fraud/Deception": "S2", "Disinformation": "S5", "Sexual/Adult content": "S12", "Privacy": "S7",
       "Expert advice": "S6", "Government decision-making": "S2"}

# Per-source caps keep the set CPU-sized and stop one source (e.g. gsm8k) from dominating; sampling is seeded.
CAPS = {"gsm8k": 300, "dolly_prompt": 400, "dolly_response": 400, "hatecheck_hateful": 500, "hatecheck_benign": 500,
        "jbb_response": 900, "harmfulqa": 0}


@dataclass(frozen=True)
class Example:
    messages: tuple  # ((role, text), ...)
    label: str
    categories: tuple[str, ...]
    source: str
    adjacent: bool = False


def _p(text: str, label: str, cats=(), source: str = "", adjacent: bool = False) -> Example:
    return Example((("user", text),), label, tuple(sorted(set(cats), key=lambda c: int(c[1:]))), source, adjacent)


def _r(prompt: str, response: str, label: str, cats=(), source: str = "") -> Example:
    return Example((("user", prompt), ("assistant", response)), label, tuple(sorted(set(cats), key=lambda c: int(c[1:]))), source)


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
    for r in _jsonl(root / "coconot/coconot_contrast_eval.jsonl"):
        yield _p(r["prompt"], "safe", (), "coconot_contrast", adjacent=True)
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


READERS = (openai_moderation, harmbench, catqa, cyberseceval, coconot, hatecheck, toxigen, benign, jbb_responses)


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def key_of(ex: Example) -> str:
    return hashlib.sha256("\x1e".join(normalise(t) for _, t in ex.messages).encode()).hexdigest()


def split_of(key: str, dev: float = 0.1, test: float = 0.15) -> str:
    """Deterministic split from the text hash (independent of the rest of the data)."""
    u = int(key[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "dev" if u < test + dev else "train"


def _clip(text: str) -> str:
    text = " ".join(text.split()) if len(text) > MAX_CHARS else text.strip()
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS].rsplit(" ", 1)[0] + " ..."


def collect(root: Path, seed: int = 0) -> list[dict]:
    """Read every source under ``root``, dedup by normalised text (a conflict keeps the unsafe label), cap, split."""
    root = Path(root)
    if not root.is_dir():
        raise GuardError(f"data root {root} is not a directory (expected the shared public datasets folder)")
    by_key: dict[str, Example] = {}
    for reader in READERS:
        try:
            items = list(reader(root))
        except FileNotFoundError as e:
            raise GuardError(f"{reader.__name__}: missing file {e.filename}; point --root at a copy of the datasets") from None
        for ex in items:
            ex = Example(tuple((r, _clip(t)) for r, t in ex.messages), ex.label, ex.categories, ex.source, ex.adjacent)
            if not all(normalise(t) for _, t in ex.messages):
                continue
            k = key_of(ex)
            old = by_key.get(k)
            if old is None or (old.label == "safe" and ex.label == "unsafe"):
                by_key[k] = ex
    rng = random.Random(seed)
    by_source: dict[str, list[str]] = {}
    for k in sorted(by_key):
        by_source.setdefault(by_key[k].source, []).append(k)
    keep = []
    for source, keys in sorted(by_source.items()):
        cap = CAPS.get(source)
        keep += rng.sample(keys, cap) if cap is not None and len(keys) > cap else keys
    out = []
    for k in sorted(keep):
        ex = by_key[k]
        out.append({"id": k[:16], "messages": [{"role": r, "content": t} for r, t in ex.messages], "label": ex.label,
                    "categories": list(ex.categories), "source": ex.source, "split": split_of(k), "adjacent": ex.adjacent})
    return out


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


def write_dataset(records: list[dict], out: str | Path) -> dict:
    """Write all.jsonl, {train,dev,test}.jsonl and stats.json into ``out`` atomically (temp dir, then rename)."""
    if not records:
        raise GuardError("empty dataset: no records were read")
    with atomic_dir(out, "--out") as tmp:
        stats = {"total": len(records), "splits": {}, "sources": {}, "categories": {}}
        for name in ("all",) + SPLITS:
            rows = records if name == "all" else [r for r in records if r["split"] == name]
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            if name != "all":
                stats["splits"][name] = {"n": len(rows), "unsafe": sum(r["label"] == "unsafe" for r in rows),
                                         "adjacent": sum(r["adjacent"] for r in rows),
                                         "response": sum(len(r["messages"]) > 1 for r in rows)}
        for r in records:
            s = stats["sources"].setdefault(r["source"], {"safe": 0, "unsafe": 0})
            s[r["label"]] += 1
            for c in r["categories"]:
                stats["categories"][c] = stats["categories"].get(c, 0) + 1
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def build(root: str | Path, out: str | Path, seed: int = 0) -> dict:
    return write_dataset(collect(Path(root), seed), out)


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
