"""Native (android_runner/, C++) against the Python runtime on the same .pte, in one run:

- verdict latency: a 40-token user message with the policy head cached (Guard.classify after a warm-up request);
- TTFT: a classification on an empty cache (the whole prompt prefilled up to the verdict token);
- peak RSS of each process (each runtime in its own process, the .pte loaded once).

    python benchmarks/native_latency.py --pte ~/.cache/ondevice-llamaguard/guard-mini/model.pte --runs 7 \
        --out benchmarks/results/native_latency

Writes OUT.json, OUT.md and OUT.png. Needs `bash android_runner/build.sh host` first. The two runtimes run one after
the other, alternating, so that background load (other processes on the machine) hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from guard.bench.schema import write_result

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "android_runner" / "build-host"

PY_SIDE = r"""
import json, resource, sys, time
from guard.eval.calibrate import load
from guard.runtime.classifier import Guard
from guard.runtime.pte import PteRunner
pte, runs = sys.argv[1], int(sys.argv[2])
inp = json.loads(sys.stdin.read())
t0 = time.perf_counter()
runner = PteRunner(pte)
g = Guard(runner, runner.tokenizer, calibration=load(pte))
load_ms = (time.perf_counter() - t0) * 1e3
msgs, ttft, verdict = inp["messages"], [], []
for r in range(runs):
    g.invalidate()
    first = g.classify(msgs[r % len(msgs)])
    ttft.append(first.timings["prefill_ms"])
    g.classify(inp["warm"])
    v = g.classify(msgs[(r + 1) % len(msgs)])
    verdict.append(v.latency_ms)
tokens = {"prompt": first.prompt_tokens, "verdict_prefilled": v.timings["prefilled_tokens"]}
print(json.dumps({"load_ms": load_ms, "ttft_ms": ttft, "verdict_ms": verdict, "tokens": tokens,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def texts(pte: Path, n_tokens: int) -> dict:
    from guard.bench.host import FILLER, message
    from guard.format.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(pte.parent)
    msgs = []
    for k in range(4):  # different 40-token messages: each verdict prefills its own message
        words = FILLER[k:] + FILLER[:k]
        m = message(tok, n_tokens)
        msgs.append(" ".join(words[:3]) + " " + m if k else m)
    msgs = [tok.decode(tok.encode(m)[:n_tokens]) for m in msgs]
    return {"warm": message(tok, 8), "messages": msgs}


def run_native(pte: Path, inp: dict, runs: int) -> dict:
    p = subprocess.run([str(BUILD / "guard_latency"), "--pte", str(pte), "--runs", str(runs)], input=json.dumps(inp),
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def run_python(pte: Path, inp: dict, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", PY_SIDE, str(pte), str(runs)], input=json.dumps(inp), capture_output=True,
                       text=True, check=True, env=env)
    return json.loads(p.stdout.strip().splitlines()[-1])


def summary(samples: list[dict]) -> dict:
    ttft = [x for s in samples for x in s["ttft_ms"]]
    verdict = [x for s in samples for x in s["verdict_ms"]]
    return {"ttft_ms_median": statistics.median(ttft), "verdict_ms_median": statistics.median(verdict),
            "ttft_ms_min": min(ttft), "verdict_ms_min": min(verdict), "n": len(ttft),
            "load_ms_median": statistics.median(s["load_ms"] for s in samples),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in samples), "tokens": samples[-1]["tokens"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pte", required=True)
    ap.add_argument("--runs", type=int, default=5, help="measurements per process")
    ap.add_argument("--rounds", type=int, default=2, help="processes per runtime, alternating native/python")
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "native_latency"))
    a = ap.parse_args(argv)
    pte = Path(a.pte).expanduser()
    inp = texts(pte, a.tokens)
    load_before = os.getloadavg()
    res = {"native": [], "python": []}
    for _ in range(a.rounds):
        res["native"].append(run_native(pte, inp, a.runs))
        res["python"].append(run_python(pte, inp, a.runs))
    import executorch
    import torch

    doc = {
        "command": "python benchmarks/native_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": str(pte), "message_tokens": a.tokens, "threads": os.environ.get("GUARD_THREADS", "all available cores"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "note": "shared machine: other helpers' jobs load the CPU; both runtimes alternate so they share it"},
        "versions": {"executorch": getattr(executorch, "__version__", "1.4.1"), "torch": torch.__version__, "python": platform.python_version()},
        "native": summary(res["native"]), "python": summary(res["python"]), "samples": res,
    }
    out = Path(a.out)
    n, p = doc["native"], doc["python"]
    md = [f"# Native (C++) vs Python runtime on the same .pte", "",
          f"Model `{pte}`, a {a.tokens}-token user message; {n['n']} samples per runtime ({a.rounds} processes x {a.runs}), "
          f"alternating. Machine: {doc['machine']['cores']} cores, load average {load_before[0]:.1f} before / "
          f"{doc['machine']['loadavg_after'][0]:.1f} after (shared machine: other jobs were running). "
          f"executorch {doc['versions']['executorch']}, torch {doc['versions']['torch']}.", "",
          f"Command: `{doc['command']}`", "",
          "| | native (C++) | Python | native / Python |", "|---|---|---|---|",
          f"| verdict latency, policy head cached (median ms) | {n['verdict_ms_median']:.1f} | {p['verdict_ms_median']:.1f} | {n['verdict_ms_median'] / p['verdict_ms_median']:.2f} |",
          f"| TTFT, empty cache, {n['tokens']['prompt']}-token prompt (median ms) | {n['ttft_ms_median']:.1f} | {p['ttft_ms_median']:.1f} | {n['ttft_ms_median'] / p['ttft_ms_median']:.2f} |",
          f"| load (median ms) | {n['load_ms_median']:.0f} | {p['load_ms_median']:.0f} | {n['load_ms_median'] / p['load_ms_median']:.2f} |",
          f"| peak RSS (MB) | {n['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} | {n['peak_rss_mb'] / p['peak_rss_mb']:.2f} |", "",
          "Peak RSS is the whole process: the Python figure includes the interpreter, torch and the tokenizers package; the "
          "native one is the .pte (memory-mapped), the KV-cache arena, the tokenizer and, in this host build, the executorch "
          "wheel's `_portable_lib.so` with its libpython/torch dependencies (a phone build links only the runtime).", ""]

    def chart(doc, path):
        try:
            import matplotlib
        except ImportError:  # no chart without matplotlib
            return
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
        for i, k in enumerate(("verdict_ms", "ttft_ms")):
            data = [[x for s in doc["samples"][r] for x in s[k]] for r in ("native", "python")]
            ax[i].boxplot(data, tick_labels=["native (C++)", "Python"])
            ax[i].set_title({"verdict_ms": "verdict, head cached (ms)", "ttft_ms": "TTFT, empty cache (ms)"}[k])
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    write_result(out, doc, "\n".join(md), chart)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
