"""What segment checks (guard.runtime.segments) cost: verdict time with and without them, by sentences per prompt.

    python benchmarks/bench_segments.py --pte ~/.cache/ondevice-llamaguard/guard-mini/model.pte [--sentences 1 2 3 5 9]

Each prompt is benign (so it is judged whole first and then cut, the case that pays), made of N short sentences and
a suffix "(visit K)" that makes every prompt new text: so N ends, and min(N, 4) cuts judged.
The policy head is cached by a warm-up, as in a running app; each prompt is new text, so only the head is reused
from one request to the next. Per N: the median of ``--runs`` verdicts with ``segment_checks`` 0 and with the default
(4), alternated, and the tokens prefilled. Results: benchmarks/results/segments.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["The river town held its autumn market on the square.", "Bakers sold rye loaves by the fountain.",
             "Children chased pigeons between the stalls.", "An old man tuned his violin while the bells rang noon.",
             "What time does the market close on Sundays?", "Is there parking near the town hall?",
             "My sister wants to buy honey for her tea.", "We plan to walk back along the river.",
             "Which bakery has the best bread?"]


def prompt(n: int, run: int) -> str:
    return " ".join(SENTENCES[(run + i) % len(SENTENCES)] for i in range(n)) + f" (visit {run})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pte", required=True)
    ap.add_argument("--sentences", type=int, nargs="+", default=[1, 2, 3, 5, 9])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "segments")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import guard as guard_pkg
    from guard.runtime.segments import DEFAULT_CHECKS

    guards = {0: guard_pkg.load(pte=a.pte, segment_checks=0)}
    guards[DEFAULT_CHECKS] = guard_pkg.load(pte=a.pte, segment_checks=DEFAULT_CHECKS)
    for g in guards.values():
        g.classify("warm-up: how do I bake bread?")
    rows = []
    for n in a.sentences:
        ms = {k: [] for k in guards}
        row = {"sentences": n}
        for run in range(a.runs):
            for k, g in guards.items():  # alternated, so drift on a shared machine hits both alike
                text = prompt(n, run)
                t0 = time.perf_counter()
                v = g.classify(text)
                ms[k].append((time.perf_counter() - t0) * 1e3)
                row[f"decision_{k}"] = v.decision
                row[f"cuts_{k}"] = v.segments.get("checked", 0)
        for k in guards:
            row[f"median_ms_{k}"] = round(statistics.median(ms[k]), 1)
        row["prompt_tokens"] = v.prompt_tokens
        row["ratio"] = round(row[f"median_ms_{DEFAULT_CHECKS}"] / row["median_ms_0"], 2)
        row["loadavg"] = os.getloadavg()
        rows.append(row)
        print(json.dumps(row), flush=True)
    from guard.bench.schema import command, environment, write_result

    report = {"pte": a.pte, "threads": a.threads, "runs": a.runs, "checks": DEFAULT_CHECKS, "rows": rows,
              "environment": environment(a.threads), "command": "python " + command()}
    k = DEFAULT_CHECKS
    lines = [f"# Segment checks on {Path(a.pte).name} ({a.threads} threads, median of {a.runs})", "",
             "Benign prompts of N sentences plus a '(visit K)' suffix (N ends), policy head cached; verdict time "
             "without segment checks and with the "
             f"default {k}.", "", f"| sentences | prompt tokens | cuts judged | ms, checks 0 | ms, checks {k} | ratio | "
             "load avg (1 min) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sentences']} | {r['prompt_tokens']} | {r[f'cuts_{k}']} | {r['median_ms_0']} | {r[f'median_ms_{k}']} | "
              f"{r['ratio']} | {r['loadavg'][0]:.1f} |" for r in rows]
    lines += ["", f"Environment: {json.dumps(report['environment'])}", f"Command: `{report['command']}`", ""]

    def chart(doc, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = [r["sentences"] for r in doc["rows"]]
        ax.plot(xs, [r["median_ms_0"] for r in doc["rows"]], "o-", label="segment checks 0")
        ax.plot(xs, [r[f"median_ms_{k}"] for r in doc["rows"]], "s-", label=f"segment checks {k} (default)")
        ax.set_xlabel("sentences in a benign prompt")
        ax.set_ylabel("verdict ms (median)")
        ax.set_title(f"Segment checks: {Path(a.pte).name}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    write_result(a.out, report, "\n".join(lines), chart)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
