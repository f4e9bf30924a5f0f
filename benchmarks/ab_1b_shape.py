"""Collate an A/B of bench_1b_shape.py's .pte measurement: runs of two trees on the same .pte, alternated.

    python benchmarks/ab_1b_shape.py --label-a beccf55 --label-b HEAD --a /tmp/ab/old1.json /tmp/ab/old2.json \
        --b /tmp/ab/new1.json /tmp/ab/new2.json --out benchmarks/results/bench_1b_shape_ab

Each input is a `bench_1b_shape.py --skip-llama-cpp --out ...` JSON (tree A run as `PYTHONPATH=WORKTREE python
WORKTREE/benchmarks/bench_1b_shape.py ...`). Runs are listed in the order given, A and B interleaved.
Writes OUT.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

KEYS = ("ttft_s", "prefill_tok_s", "decode_tok_s", "verdict_ms", "load_s", "peak_rss_mb")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True)
    ap.add_argument("--b", nargs="+", type=Path, required=True)
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from guard.bench.schema import describe, write_result

    pairs = [(args.label_a, p) for p in args.a], [(args.label_b, p) for p in args.b]
    order = [x for ab in zip(*pairs) for x in ab] + pairs[0][len(pairs[1]):] + pairs[1][len(pairs[0]):]
    runs, env = [], None
    for i, (label, path) in enumerate(order, 1):
        r = json.loads(path.read_text())
        env = env or r["environment"]
        runs.append({"tree": label, "order": i, "command": r["command"], "load_before": r["load_before"],
                     "load_after": r["load_after"], **{k: r["executorch"][k] for k in KEYS}})
    med = {t: {k: statistics.median(r[k] for r in runs if r["tree"] == t) for k in KEYS} for t in (args.label_a, args.label_b)}
    a, b = med[args.label_a], med[args.label_b]
    lines = [f"# A/B of the 1B-shape .pte: {args.label_a} vs {args.label_b}", "",
             f"- machine: {describe(env['machine'])}", "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             "- commands: " + "; ".join(f"`{r['command']}` ({r['tree']})" for r in runs), "",
             "| run | tree | TTFT (s) | prefill (tok/s) | decode (tok/s) | verdict (ms) | load (s) | peak RSS (MB) | load avg before |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['order']} | {r['tree']} | " + " | ".join(str(r[k]) for k in KEYS) + f" | {r['load_before']} |" for r in runs]
    lines += ["", f"| median | {args.label_a} | {args.label_b} | {args.label_b} / {args.label_a} |", "|---|---|---|---|"]
    lines += [f"| {k} | {round(a[k], 3)} | {round(b[k], 3)} | {b[k] / a[k]:.3f} |" for k in KEYS]

    def chart(doc, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
        panels = ("ttft_s", "TTFT (s)"), ("decode_tok_s", "decode (tok/s)"), ("verdict_ms", "verdict (ms)")
        for x, (k, title) in zip(ax, panels):
            x.bar([f"{r['order']}: {r['tree']}" for r in doc["runs"]], [r[k] for r in doc["runs"]],
                  color=["tab:gray" if r["tree"] == args.label_a else "tab:blue" for r in doc["runs"]])
            x.set(title=title)
            x.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    write_result(args.out, {"environment": env, "runs": runs, "median": med}, "\n".join(lines) + "\n", chart)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
