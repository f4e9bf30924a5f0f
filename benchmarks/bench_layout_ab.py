"""Issue 22's file layout against the layout it started from, on one machine, runs alternated.

    python benchmarks/bench_layout_ab.py --work /work/bench_1b [--rounds 2] [--summarize-only]

"before": the 1B-shape export as issue 22 found it (one static prefill chunk of 64, attention over the whole cache,
4-bit embedding in groups of 32: 453 MB). "after": today's default (chunks 128/32/8, attention span 64, embedding
groups of 256: 439 MB). Both are exported by the current code and run by the current runtime, so the comparison
isolates the layout. Each round runs `bench_1b_shape.py --skip-llama-cpp` on each file (before first), and the
summary keeps every round. Results: benchmarks/results/layout_ab.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from guard.bench.schema import write_result

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"before": ["--chunk", "64", "--chunks", "", "--attention-span", "0", "--embedding-group-size", "32"],
           "after": []}
KEYS = ("ttft_s", "prefill_tok_s", "decode_tok_s", "verdict_ms", "size_mb")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--summarize-only", action="store_true", help="summarise WORK/ab_*.json of an earlier run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "layout_ab")
    a = ap.parse_args()
    for i in range(1, a.rounds + 1):
        for name, extra in LAYOUTS.items():
            if not a.summarize_only:
                subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_1b_shape.py"), "--work", str(a.work),
                                "--skip-llama-cpp", "--runs", "5", "--out", str(a.work / f"ab_{name}_{i}"), *extra],
                               check=True, stdout=subprocess.DEVNULL)
    runs = {name: [json.loads((a.work / f"ab_{name}_{i}.json").read_text()) for i in range(1, a.rounds + 1)]
            for name in LAYOUTS}
    doc = {"command": "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT))] + sys.argv[1:]),
           "environment": runs["after"][0]["environment"], "layouts": {k: " ".join(v) or "defaults" for k, v in LAYOUTS.items()},
           "rounds": {name: [{k: r["executorch"][k] for k in KEYS} | {"load": r["load_before"]} for r in rs]
                      for name, rs in runs.items()},
           "commands": {name: [r["command"] for r in rs] for name, rs in runs.items()}}
    med = {name: {k: statistics.median(x[k] for x in rs) for k in KEYS} for name, rs in doc["rounds"].items()}
    doc["median"] = med
    md = ["# 1B shape: issue 22's layout against the one it started from (same machine, runs alternated)", "",
          f"- command: `{doc['command']}`; each round: `bench_1b_shape.py --skip-llama-cpp --runs 5` per file",
          f"- machine: {doc['environment']['machine']['cpu']}, {doc['environment']['machine']['cores']} cores; "
          f"load before each run: " + ", ".join(f"{n} {x['load'][0]}" for n, rs in doc["rounds"].items() for x in rs),
          f"- before: `{doc['layouts']['before']}`; after: the defaults (chunks 128/32/8, attention span 64, embedding "
          "groups of 256)", "", "| metric | before (rounds) | after (rounds) | after / before (medians) |", "|---|---|---|---|"]
    for k in KEYS:
        b, f = [x[k] for x in doc["rounds"]["before"]], [x[k] for x in doc["rounds"]["after"]]
        md.append(f"| {k} | {', '.join(map(str, b))} | {', '.join(map(str, f))} | {med['after'][k] / med['before'][k]:.2f} |")

    def chart(doc, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        med = doc["median"]
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
        for ax, (k, title) in zip(axes, [("ttft_s", "TTFT 235 tokens (s)"), ("verdict_ms", "verdict 40 tokens (ms)"),
                                         ("decode_tok_s", "decode (tok/s)")]):
            ax.bar(["before", "after"], [med["before"][k], med["after"][k]], color=["#999999", "#1f77b4"])
            ax.set_title(title, fontsize=10)
        fig.suptitle("Llama Guard 3-1B shape .pte, layout before and after issue 22 (medians of rounds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    write_result(a.out, doc, "\n".join(md) + "\n", chart)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
