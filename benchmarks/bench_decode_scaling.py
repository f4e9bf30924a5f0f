"""Decode cost vs the KV cache's maximum length: 4 fp32 layers x 2048 wide, exported with 128 and 1024 slots.

    python benchmarks/bench_decode_scaling.py [--work ~/.cache/guard/bench_scaling]

The issue measured the plain static cache with the pip runtime at 115 tok/s (128 slots) and 24 tok/s (1024 slots).
With guard.model.llama's fully static, fully delegated decode method the step cost should barely move.
Results: benchmarks/results/bench_decode_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(n_layers=4, dim=2048, hidden_dim=6400, n_heads=32, n_kv_heads=8, vocab_size=128256,
             tie_embeddings=True)  # guard.model.llama.ModelArgs fields


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "guard" / "bench_scaling")
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_decode_scaling")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_1b_shape import load

    from guard.bench.schema import describe, environment, write_result

    from guard.export import ExportConfig, export_model
    from guard.runtime.pte import PteRunner
    from guard.testing import make_checkpoint, tiny

    hf = args.work / "hf"
    if not (hf / "model.safetensors").is_file():
        make_checkpoint(hf, tiny(**SHAPE))
    r = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]), "environment": environment(),
         "shape": SHAPE, "quant": "none (fp32)", "pruned_vocab": True, "load_before": load(), "rows": []}
    for n in args.lengths:
        out = args.work / f"pte_s{n}"
        if not (out / "model.pte").is_file():
            export_model(hf, out, ExportConfig(max_seq_len=n, chunk=16, prune_vocab=True))
        runner = PteRunner(out / "model.pte")
        runner.prefill(list(range(1000, 1016)), 0)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            for i in range(args.steps):
                runner.decode(1000 + i, 16 + i)
            times.append((time.perf_counter() - t0) / args.steps)
        ms = statistics.median(times) * 1e3
        r["rows"].append({"max_seq_len": n, "cache_slots": n + 16, "ms_per_step": round(ms, 2), "tok_s": round(1e3 / ms, 1)})
        print(r["rows"][-1], flush=True)
    r["load_after"] = load()
    lines = ["# Decode step cost vs KV-cache length (4 fp32 layers x 2048, pruned vocabulary)", "",
             f"- machine: {describe(r['environment']['machine'])}", f"- command: `{r['command']}`",
             f"- load average before: {r['load_before']}, after: {r['load_after']}",
             "- reference (issue #3, plain static cache, pip runtime): 115 tok/s at 128 slots, 24 tok/s at 1024 "
             "(a different layer configuration, so compare the ratio, not the absolute numbers)",
             "- here: fp32 weights with the 6400-wide MLP, ~0.8 GB of weights read per step, so a step is memory-bound; "
             "the static, fully delegated decode method makes its cost nearly independent of the cache length", "",
             "| max_seq_len | cache slots | ms / step | tok/s |", "|---|---|---|---|"]
    lines += [f"| {x['max_seq_len']} | {x['cache_slots']} | {x['ms_per_step']} | {x['tok_s']} |" for x in r["rows"]]
    write_result(args.out, r, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
