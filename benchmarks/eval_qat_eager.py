"""guard-mini's .pte against the eager model it was trained as: the merged weights with the INT4 QAT fake quantizers.

    python benchmarks/eval_qat_eager.py --hf HF_DIR --pte MODEL.pte --data DATA/test.jsonl [--limit 1000]
        [--segment-checks N] --out STEM

guard-mini's student is trained with torchao QAT (8da4w, the recipe's group size), so the function it learned is the
fake-quantized one; the plain fp32 weights (``guard eval HF_DIR``) are a different, untrained function. This wraps
the Hugging Face directory's model in the same fake quantizers (guard.train.distill.qat_prepare; the
weight quantization is applied once, the activations' per token) and evaluates it
beside the .pte with guard.eval.evaluate, both uncalibrated (raw p_unsafe at 0.5). Writes STEM.json and STEM.md.
"""

from __future__ import annotations

import argparse
import json
import sys

import guard
from guard.bench.schema import command
from guard.eval.evaluate import evaluate
from guard.train.distill import bake_fake_quant, qat_prepare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--pte", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--segment-checks", type=int, help="guard.runtime.segments' checks for both (default: its default)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    records = [json.loads(line) for line in open(a.data) if line.strip()][: a.limit]

    def qat_eager():
        g = guard.load(model=a.hf, calibrated=False, segment_checks=a.segment_checks)
        bake_fake_quant(qat_prepare(g.runner.model, a.group_size).eval())
        return g

    print(evaluate([lambda: guard.load(pte=a.pte, calibrated=False, segment_checks=a.segment_checks), qat_eager], records, a.out, data=a.data,
                   command=command(), progress=sys.stderr.isatty(),
                   note=f"second model: {a.hf} with 8da4w QAT fake quantizers, group {a.group_size}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
