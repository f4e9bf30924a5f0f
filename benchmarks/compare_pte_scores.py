"""Do two .pte builds of one model give the same verdicts? Margins, calibrated p_unsafe and decisions on labelled records.

    python benchmarks/compare_pte_scores.py OLD.pte NEW.pte --data test.jsonl [--every 9] [--out benchmarks/results/NAME]

Used for guard-mini when the exporter changed (chunk methods, fp16 embedding scales, computed mask): each .pte is
scored with the calibration.json beside it, on every ``--every``-th record of ``--data``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--every", type=int, default=9)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import guard
    from guard.bench.schema import write_result

    recs = [json.loads(line) for line in a.data.read_text().splitlines() if line.strip()][:: a.every]
    guards = {k: guard.load(pte=p) for k, p in (("old", a.old), ("new", a.new))}
    rows, t0 = [], time.time()
    for r in recs:
        row = {"id": r["id"], "label": r["label"]}
        for k, g in guards.items():
            v = g.classify(r["messages"])
            row[k] = {"decision": v.decision, "margin": round(v.margin, 5), "p": round(v.p_unsafe, 5)}
        rows.append(row)
    dm = [abs(x["old"]["margin"] - x["new"]["margin"]) for x in rows]
    dp = [abs(x["old"]["p"] - x["new"]["p"]) for x in rows]
    flips = [x for x in rows if x["old"]["decision"] != x["new"]["decision"]]

    def f1(k):
        tp = sum(x[k]["decision"] == "unsafe" and x["label"] == "unsafe" for x in rows)
        fp = sum(x[k]["decision"] == "unsafe" and x["label"] != "unsafe" for x in rows)
        fn = sum(x[k]["decision"] != "unsafe" and x["label"] == "unsafe" for x in rows)
        return round(2 * tp / max(1, 2 * tp + fp + fn), 4)

    s = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]), "records": len(rows),
         "data": str(a.data), "old": a.old, "new": a.new, "decision_flips": len(flips),
         "max_abs_margin_diff": max(dm), "mean_abs_margin_diff": round(sum(dm) / len(dm), 5),
         "max_abs_p_diff": max(dp), "mean_abs_p_diff": round(sum(dp) / len(dp), 5), "f1_old": f1("old"), "f1_new": f1("new"),
         "seconds": round(time.time() - t0, 1), "load_avg": [round(x, 2) for x in os.getloadavg()], "flips": flips, "rows": rows}
    md = [f"# {Path(a.new).name}: new build vs old build, same weights", "", f"- command: `{s['command']}`",
          f"- {len(rows)} records (every {a.every}th of {a.data.name}); load average at the end {s['load_avg']}", "",
          "| | value |", "|---|---|", f"| decisions that differ | {len(flips)} |",
          f"| max / mean abs margin difference (log-odds) | {s['max_abs_margin_diff']} / {s['mean_abs_margin_diff']} |",
          f"| max / mean abs calibrated p_unsafe difference | {s['max_abs_p_diff']} / {s['mean_abs_p_diff']} |",
          f"| F1 old / new | {s['f1_old']} / {s['f1_new']} |", ""]
    write_result(a.out, s, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
