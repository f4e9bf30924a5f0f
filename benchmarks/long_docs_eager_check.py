"""Is guard-mini's verdict on long benign documents the model's or the runtime's? p_unsafe of the same benign
documents (benchmarks/bench_long_docs.py's builder, dev split) from the .pte and from the eager Hugging Face model.

    python benchmarks/long_docs_eager_check.py --data DATA/dev.jsonl --pte MODEL.pte --hf HF_DIR

Both uncalibrated; three documents per filler and length; prints one line per filler and length: (pte, eager,
prompt tokens) for each document.
"""

from __future__ import annotations

import argparse
import json

import guard
from bench_long_docs import FILLERS, documents


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--pte", required=True)
    ap.add_argument("--hf", required=True)
    a = ap.parse_args()
    records = [json.loads(line) for line in open(a.data) if line.strip()]
    pte, eager = guard.load(pte=a.pte, calibrated=False), guard.load(model=a.hf, calibrated=False)
    for kind in FILLERS:
        for tokens in (100, 300, 700):
            benign = [t for t, harmful in documents(records, pte.tokenizer, kind, 3, tokens, seed=5) if not harmful]
            row = [(round(pte.classify(t).p_unsafe, 2), round(eager.classify(t).p_unsafe, 2), pte.classify(t).prompt_tokens)
                   for t in benign]
            print(kind, tokens, row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
