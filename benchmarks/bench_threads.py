"""Throughput of one loaded guard shared by 1, 2 and 4 threads (issue 21), and a check that the verdicts match.

    python benchmarks/bench_threads.py [--pte MODEL.pte] [--n 96] [--out benchmarks/results/bench_threads]

Calls on one guard are serialised around its KV cache (guard.runtime.classifier), so more threads are expected to
give the same throughput, not more; the number worth knowing is that they cost nothing and stay exact. Writes JSON
and Markdown naming the machine, versions, command and load average (other helpers share this machine's CPUs).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

from guard.bench.schema import environment, write_result

WORDS = "the a how do I make bomb kill bread cake steal bank robbery phone hello thanks please weather code".split()


def work(n: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(n)]


def run(g, texts, threads: int) -> tuple[float, dict]:
    out, items, start = {}, list(enumerate(texts)), threading.Barrier(threads + 1)

    def go(part):
        start.wait()
        for i, t in part:
            v = g.classify(t)
            out[i] = (v.decision, round(v.p_unsafe, 5))

    ts = [threading.Thread(target=go, args=(items[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0, out


def main() -> int:
    import guard
    from guard.defaults import mini_dir

    p = argparse.ArgumentParser()
    p.add_argument("--pte", default=str(mini_dir() / "model.pte"))
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/bench_threads")
    a = p.parse_args()
    g = guard.load(pte=a.pte)
    texts = work(a.n)
    ref = {i: (v.decision, round(v.p_unsafe, 5)) for i, v in ((i, g.classify(t)) for i, t in enumerate(texts))}
    rows, load_before = [], os.getloadavg()
    for threads in (1, 2, 4):
        times = []
        for _ in range(a.repeats):
            g.invalidate()
            dt, got = run(g, texts, threads)
            assert got == ref, f"{threads} threads changed a verdict"
            times.append(dt)
        times.sort()
        rows.append({"threads": threads, "classifications": a.n, "median_s": times[len(times) // 2],
                     "per_s": a.n / times[len(times) // 2], "all_s": times, "equal_to_single_thread": True})
    doc = {"model": a.pte, "runner": g.runner.name, "xnnpack_threads": getattr(g.runner, "threads", None),
           "environment": environment(getattr(g.runner, "threads", None)),
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "command": " ".join([Path(sys.executable).name] + sys.argv), "rows": rows}
    out = Path(a.out)
    md = [f"# One guard, several threads ({Path(a.pte).parent.name}, {g.runner.name})", "",
          f"`{doc['command']}`; {doc['environment']['machine']['cpu']}, {doc['environment']['machine']['cores']} cores; "
          f"torch {doc['environment']['versions']['torch']}; XNNPACK threads {doc['xnnpack_threads']}; load average "
          f"{load_before[0]:.1f} before, {doc['loadavg_after'][0]:.1f} after (other jobs share the CPUs).", "",
          "| caller threads | classifications | median wall s | classifications/s | verdicts equal to 1 thread |",
          "|---|---|---|---|---|"]
    md += [f"| {r['threads']} | {r['classifications']} | {r['median_s']:.2f} | {r['per_s']:.1f} | yes |" for r in rows]
    md += ["", "Calls on one guard are serialised around its KV cache, so extra threads add no throughput; "
           "for parallel throughput load one guard per thread (each has its own runner and cache)."]
    write_result(out, doc, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
