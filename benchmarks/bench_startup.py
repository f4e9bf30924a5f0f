"""Start-up: wall time of a cold `guard classify "hello"` (a new process each run), the way a user runs it.

    python benchmarks/bench_startup.py [--runs 10] [--pte FILE] [--compare-bindings N] [--out benchmarks/results/bench_startup]

Each run is a fresh interpreter (the page cache stays warm: "cold" means a new process, not a cold disk). Per run it
records wall time, the child's CPU time (user + sys, much less sensitive to other jobs on a shared machine than wall
time), its peak RSS and the load average. ``--compare-bindings N`` also times the same command on executorch's Python
bindings (GUARD_NO_ETLITE=1, which imports torch), the path before etlite. Default model: guard-mini in GUARD_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from guard.bench.schema import environment, write_result

ROOT = Path(__file__).resolve().parents[1]


def one(cmd: list[str], env: dict) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out = p.stdout.read().decode(errors="replace").strip()
    p.stdout.close(), p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 10, 11):  # safe / unsafe / indeterminate exit codes
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {out}")
    return {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "load_1min": round(load, 2), "output": out[-200:]}


def series(cmd: list[str], env: dict, runs: int) -> dict:
    one(cmd, env)  # warm the page cache and build caches (etlite) once
    rows = [one(cmd, env) for _ in range(runs)]

    def med(k):
        return round(statistics.median(r[k] for r in rows), 3)

    return {"median_wall_s": med("wall_s"), "min_wall_s": min(r["wall_s"] for r in rows), "median_cpu_s": med("cpu_s"),
            "median_peak_rss_mb": med("peak_rss_mb"), "median_load": med("load_1min"), "runs": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--pte", help="a .pte instead of the default model (guard-mini)")
    ap.add_argument("--compare-bindings", type=int, default=0, metavar="N",
                    help="also time N runs on executorch's Python bindings (GUARD_NO_ETLITE=1: torch)")
    ap.add_argument("--compare-no-snapshot", type=int, default=0, metavar="N",
                    help="also time N runs without the policy-head snapshot (GUARD_PREFIX_CACHE=0)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_startup")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "guard", "classify", *(["--pte", args.pte] if args.pte else []), "hello"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
         "measured": " ".join(["guard"] + cmd[3:]), "model": args.pte or "guard-mini (GUARD_HOME)",
         "environment": environment(), "load_before": [round(x, 2) for x in os.getloadavg()]}
    r["etlite"] = series(cmd, env, args.runs)
    if args.compare_no_snapshot:
        r["no_snapshot"] = series(cmd, {**env, "GUARD_PREFIX_CACHE": "0"}, args.compare_no_snapshot)
    if args.compare_bindings:
        r["python_bindings"] = series(cmd, {**env, "GUARD_NO_ETLITE": "1"}, args.compare_bindings)
    r["load_after"] = [round(x, 2) for x in os.getloadavg()]
    lines = ["# Start-up: cold `guard classify \"hello\"`", "",
             f"- command: `{r['command']}`; measured: `{r['measured']}` ({args.runs} runs after one warm-up, each a new process)",
             f"- model: {r['model']}; environment: {json.dumps(r['environment'])}",
             f"- load average (1/5/15 min) before: {r['load_before']}, after: {r['load_after']} (the machine is shared: "
             "wall time grows with the load; CPU time much less)", "",
             "| runtime path | median wall (s) | min wall (s) | median CPU user+sys (s) | peak RSS (MB) | median load |",
             "|---|---|---|---|---|---|"]
    for key, name in (("etlite", "etlite (ctypes, no torch) + policy-head snapshot"), ("no_snapshot", "etlite, no snapshot (GUARD_PREFIX_CACHE=0)"),
                      ("python_bindings", "executorch Python bindings (torch)")):
        if key in r:
            s = r[key]
            lines.append(f"| {name} | {s['median_wall_s']} | {s['min_wall_s']} | {s['median_cpu_s']} | "
                         f"{s['median_peak_rss_mb']} | {s['median_load']} |")
    lines += ["", "Target: <= 1.0 s wall on an idle machine.", ""]
    write_result(args.out, r, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
