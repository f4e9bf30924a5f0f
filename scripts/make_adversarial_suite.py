"""Build the committed adversarial suite (benchmarks/adversarial/suite.jsonl) from HELD-OUT prompts, deterministically.

    guard data build --root ../shared/data --out DATA
    python scripts/make_adversarial_suite.py --data DATA --out benchmarks/adversarial/suite.jsonl

Base prompts: 15 HarmfulQ + 15 TrustLLM-misuse unsafe prompts and 20 CoCoNot-contrast benign look-alikes, all from the
'heldout' split (never trained on). Each unsafe base gets 8 attack variants in the SUITE wordings of
guard.train.augment (disjoint from the training wordings): 2 fake-turn, 1 benign-append, 2 wrapper, 2 typed
special-token, 1 invisible-character; plus one response record (the prompt answered by a refusal: safe). Each benign
base gets 4 variants (fake turns, wrapper, special tokens, invisible), which must stay safe. Every record carries
``base_id`` and ``kind`` ('base' for the originals); `guard eval` then reports flip rates (guard.eval.adversarial).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from guard.train.augment import SUITE, SUITE_REFUSALS, apply
from guard.train.data import load_jsonl

UNSAFE_KINDS = (("fake_turns", 0), ("fake_turns", 1), ("benign_append", 0), ("wrapper", 0), ("wrapper", 1),
                ("special_tokens", 0), ("special_tokens", 1), ("invisible", None))
SAFE_KINDS = (("fake_turns", 0), ("wrapper", 0), ("special_tokens", 0), ("invisible", None))


def pick(rows: list[dict], source: str, n: int, seed: int) -> list[dict]:
    pool = sorted((r for r in rows if r["source"] == source and len(r["messages"][0]["content"]) < 300), key=lambda r: r["id"])
    return random.Random(seed).sample(pool, n)


def build(data: Path, seed: int = 18) -> list[dict]:
    held = load_jsonl(data / "heldout.jsonl", "heldout")
    unsafe = pick(held, "harmfulq", 15, seed) + pick(held, "trustllm_misuse", 15, seed)
    safe = pick(held, "coconot_contrast", 20, seed)
    out = []

    def rec(base: dict, kind: str, messages: list[dict], label: str, cats) -> None:
        h = hashlib.sha256(("\x1e".join([base["id"], kind] + [m["content"] for m in messages])).encode()).hexdigest()[:16]
        out.append({"id": h, "messages": messages, "label": label, "categories": list(cats), "source": base["source"],
                    "split": "heldout", "adjacent": base.get("adjacent", False), "base_id": base["id"], "kind": kind})

    for base, kinds in [(b, UNSAFE_KINDS) for b in unsafe] + [(b, SAFE_KINDS) for b in safe]:
        text = base["messages"][0]["content"]
        rng = random.Random(f"{seed}:{base['id']}")
        rec(base, "base", [{"role": "user", "content": text}], base["label"], base["categories"])
        for n, (kind, i) in enumerate(kinds):
            tpl = SUITE[kind][i] if i is not None else SUITE[kind][n % 2]
            new = apply(kind, text, tpl, rng)
            rec(base, f"{kind}:{i if i is not None else tpl}", [{"role": "user", "content": new}], base["label"], base["categories"])
        if base["label"] == "unsafe":
            rec(base, "refusal", [{"role": "user", "content": text}, {"role": "assistant", "content": SUITE_REFUSALS[0]}], "safe", ())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="a `guard data build` output directory")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/adversarial/suite.jsonl"))
    a = ap.parse_args()
    rows = build(a.data)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    kinds = {}
    for r in rows:
        kinds[r["kind"].split(":")[0]] = kinds.get(r["kind"].split(":")[0], 0) + 1
    print(f"{len(rows)} records -> {a.out}: {kinds}")


if __name__ == "__main__":
    main()
