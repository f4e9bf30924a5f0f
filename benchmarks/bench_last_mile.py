"""Issue 22's targets side by side in one run: start-up, memory, verdict, TTFT, decode, size and load.

    python benchmarks/bench_last_mile.py [--runs 10] [--work DIR] [--llama-cpp DIR] [--out benchmarks/results/last_mile]

1. guard-mini (GUARD_HOME): cold `guard classify "hello"`, each run a new process (median of --runs after one
   warm-up that builds etlite and writes the policy-head snapshot); also without the snapshot
   (GUARD_PREFIX_CACHE=0) and on executorch's Python bindings (GUARD_NO_ETLITE=1), 3 runs each.
2. The Llama Guard 3-1B-shape .pte of bench_1b_shape.py (random weights, exported there and reused): cold
   `guard classify --pte ... "hello"` (wall, peak RSS of the process), then bench_1b_shape's measurements (load, TTFT of
   the 235-token prompt, decode, verdict for a 40-token message with the policy head cached) and llama.cpp's on the
   same weights.
Writes JSON, Markdown and a PNG, with machine, versions, command and the load average at each step: the machine is
shared, and wall times under load are not idle numbers (CPU time is given beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_1b_shape as b1  # noqa: E402
import bench_startup as bs  # noqa: E402
from guard.bench.schema import result_path  # noqa: E402

# issue 22's numbers (the same 2-core AMD EPYC, before this work): decode must not be slower
BEFORE = {"ttft_s": 0.298, "decode_tok_s": 91.9, "verdict_ms": 165, "size_mb": 474, "load_s": 2.2, "peak_rss_mb": 1392,
          "startup_s": 5.3}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


LOAD_CHILD = """
import json, resource, sys, time
import numpy, tokenizers
import guard.eval.calibrate, guard.format.prompt, guard.runtime.load, guard.runtime.pte
from guard.runtime import etlite
etlite.library()  # the runtime library and the modules, loaded before the clock starts (as in `guard bench`)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
c0, t0 = cpu(), time.perf_counter()
g = guard.runtime.load.load(pte=sys.argv[1])
print(json.dumps({"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(cpu() - c0, 3)}))
"""


def load_series(model: Path, env: dict, runs: int) -> dict:
    """guard.load of the .pte in fresh processes (after one unmeasured run), the runtime library and the modules
    already loaded: wall and CPU (user + sys, all threads): the tokenizer parse, the program and its methods."""
    import statistics
    import subprocess

    def one():
        out = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(model)], env=env, check=True, capture_output=True,
                             text=True).stdout
        return {**json.loads(out.strip().splitlines()[-1]), "load_1min": loadavg()[0]}

    one()
    rows = [one() for _ in range(runs)]
    return {"median_wall_s": round(statistics.median(r["wall_s"] for r in rows), 3),
            "median_cpu_s": round(statistics.median(r["cpu_s"] for r in rows), 3), "runs": rows}


def etlite_source() -> str:
    """Which etlite.cpp the runs use (its sha256)."""
    import hashlib

    from guard.runtime import etlite

    src = etlite.SOURCE
    name = os.path.relpath(src, ROOT) if src.resolve().is_relative_to(ROOT) else str(src)
    return f"{name} (sha256 {hashlib.sha256(src.read_bytes()).hexdigest()[:12]})"


def classify_cmd(pte: str | None) -> list[str]:
    return [sys.executable, "-m", "guard", "classify", *(["--pte", pte] if pte else []), "hello"]


def rss_ratio(rss_mib: float, size_mb: float) -> float:
    """Peak RSS over file size in one unit: ru_maxrss is KiB (the "MB" columns are KiB / 1024, MiB), sizes are 10^6."""
    return rss_mib * 1.048576 / size_mb


def targets(r: dict) -> list[tuple]:
    """(name, measured, target text, met) rows."""
    m = r["startup"]["etlite"]
    rows = [
        ("cold `guard classify \"hello\"`, guard-mini, median wall", f"{m['median_wall_s']} s (CPU {m['median_cpu_s']} s)",
         "<= 1.0 s idle", m["median_wall_s"] <= 1.0),
        ("peak RSS, guard-mini classification (cold process)", f"{m['median_peak_rss_mb']} MiB = {rss_ratio(m['median_peak_rss_mb'], r['mini_size_mb']):.2f}x the .pte",
         "reported", None)]
    if "executorch" not in r:
        return rows + [("1B-shape targets", "not measured in this run", "-", None)]
    e, l, c1 = r["executorch"], r.get("llama_cpp") or {}, r["classify_1b"]
    rows += [
        ("peak RSS, 1B-shape classification (cold process)", f"{c1['median_peak_rss_mb']} MiB = {rss_ratio(c1['median_peak_rss_mb'], e['size_mb']):.2f}x the .pte",
         "<= 1.3x .pte", rss_ratio(c1["median_peak_rss_mb"], e["size_mb"]) <= 1.3),
        ("verdict, 40-token message, head cached", f"{e['verdict_ms']} ms" + (f" ({l['verdict_ms'] / e['verdict_ms']:.2f}x llama.cpp's {l['verdict_ms']} ms)" if l else ""),
         "<= 120 ms and >= 2x llama.cpp", e["verdict_ms"] <= 120 and (not l or l["verdict_ms"] / e["verdict_ms"] >= 2)),
        ("TTFT, 235-token prompt", f"{e['ttft_s']} s", "<= 0.25 s", e["ttft_s"] <= 0.25),
        ("decode", f"{e['decode_tok_s']} tok/s" + (f" (llama.cpp {l['decode_tok_s']})" if l else ""),
         f">= {BEFORE['decode_tok_s']} (issue 22, before)", e["decode_tok_s"] >= BEFORE["decode_tok_s"]),
        ("1B-shape .pte size", f"{e['size_mb']} MB", "<= 440 MB", e["size_mb"] <= 440),
        ("1B-shape model load (in-process `guard bench`, median)", f"{e['load_s']} s (CPU {e.get('load_cpu_s', '-')} s)",
         "<= 1.0 s", e["load_s"] <= 1.0),
    ]
    return rows


def markdown(r: dict) -> str:
    from guard.bench.schema import describe

    env = r["environment"]
    lines = ["# Issue 22, the last mile: every target in one run", "",
             f"- machine: {describe(env['machine'])}; versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"- command: `{r['command']}`; etlite: {r.get('etlite_source', 'guard/runtime/etlite.cpp')}",
             f"- load average (1/5/15 min): start {r['load']['start']}, after start-up {r['load']['after_startup']}, "
             f"after the 1B cold runs {r['load'].get('after_classify_1b', '-')}, end {r['load']['end']}",
             f"- {r['load_note']}", "",
             "| target | measured | goal | met |", "|---|---|---|---|"]
    for name, got, goal, ok in targets(r):
        lines.append(f"| {name} | {got} | {goal} | {'-' if ok is None else 'yes' if ok else 'no'} |")
    s = r["startup"]
    lines += ["", "## Start-up (guard-mini, each run a new process)", "",
              "| path | median wall (s) | min wall (s) | median CPU (s) | peak RSS (MiB) | median load |", "|---|---|---|---|---|---|"]
    for key, name in (("etlite", "etlite + policy-head snapshot (default)"), ("no_snapshot", "etlite, GUARD_PREFIX_CACHE=0"),
                      ("python_bindings", "executorch Python bindings, GUARD_NO_ETLITE=1 (before)")):
        if key in s:
            x = s[key]
            lines.append(f"| {name} | {x['median_wall_s']} | {x['min_wall_s']} | {x['median_cpu_s']} | {x['median_peak_rss_mb']} | {x['median_load']} |")
    if "mini_bench" in r:
        lines += ["", "## guard-mini, `guard bench` (40-token message, 3 runs), before and now in this run", "",
                  "| build | .pte MB | load ms | TTFT ms (prompt tokens) | decode tok/s | verdict ms, head cached | load avg |",
                  "|---|---|---|---|---|---|---|"]
        for x in r["mini_bench"]:
            lines.append(f"| {x['label']} | {x['size_mb']} | {x['load_ms']} | {x['ttft_ms']} ({x['prompt_tokens']}) | "
                         f"{x['decode_tok_s']} | {x['verdict_ms']} | {x['load_avg']} |")
    if "executorch" not in r:
        return "\n".join(lines + ["", "The 1B-shape part was not run (`--skip-1b`).", ""])
    e, l, c1 = r["executorch"], r.get("llama_cpp"), r["classify_1b"]
    lines += ["", "## Llama Guard 3-1B shape (random weights)", "",
              f"- .pte: {e['size_mb']} MB, {r['pte_name']}; cold `guard classify --pte` median wall {c1['median_wall_s']} s, "
              f"CPU {c1['median_cpu_s']} s, peak RSS {c1['median_peak_rss_mb']} MiB ({c1['runs_n']} runs)"
              + (lambda x: f"; without the packed-weight file (GUARD_PACKED_CACHE=0): wall {x['median_wall_s']} s, CPU "
                 f"{x['median_cpu_s']} s, peak RSS {x['median_peak_rss_mb']} MiB" if x else "")(r.get("classify_1b_no_packed")),
              f"- in-process (`guard bench` timing, torch imported by the harness): load {e['load_s']} s, peak RSS {e['peak_rss_mb']} MiB",
              "", "| metric | .pte (this run) | llama.cpp Q4_0 (this run) | .pte / llama.cpp | issue 22 before |", "|---|---|---|---|---|"]
    for name, key, is_time in (("TTFT 235 tokens (s)", "ttft_s", True), ("prefill (tok/s)", "prefill_tok_s", False),
                               ("decode (tok/s)", "decode_tok_s", False), ("verdict, 40-token message (ms)", "verdict_ms", True)):
        ratio = f"{(l[key] / e[key]) if is_time else (e[key] / l[key]):.2f}x faster" if l else "-"
        lines.append(f"| {name} | {e[key]} | {l[key] if l else '-'} | {ratio} | {BEFORE.get(key, '-')} |")
    lines += ["", f"The verdict prefilled {e['verdict_prefilled_tokens']} tokens after the cached head, in the chunk plan "
              f"{r['verdict_plan']}.", ""]
    if "load_1b" in r:
        lines += ["## 1B-shape model load (`guard.load(pte=...)` in a fresh process, runtime library and modules loaded)", "",
                  "| XNNPACK weights | median wall (s) | median CPU (s) | runs |", "|---|---|---|---|"]
        for key, name in (("packed_file", "mapped from the packed-weight file (default)"),
                          ("no_packed_file", "packed at load, GUARD_PACKED_CACHE=0 (before)")):
            x = r["load_1b"][key]
            lines.append(f"| {name} | {x['median_wall_s']} | {x['median_cpu_s']} | {len(x['runs'])} |")
        lines += ["", f"In-process (`guard bench`): warm-up load {e.get('first_load_s', '-')} s (CPU {e.get('first_load_cpu_s', '-')} s), "
                  f"median of the measured loads {e['load_s']} s (CPU {e.get('load_cpu_s', '-')} s).", ""]
    return "\n".join(lines)


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["startup"]
    items = [("cold classify\nguard-mini (s)", s["etlite"]["median_wall_s"], 1.0, BEFORE["startup_s"]),
             ("cold classify\nguard-mini CPU (s)", s["etlite"]["median_cpu_s"], 1.0, s["python_bindings"]["median_cpu_s"])]
    if "executorch" in r:
        e, c1 = r["executorch"], r["classify_1b"]
        items += [("1B peak RSS\n/ .pte size", rss_ratio(c1["median_peak_rss_mb"], e["size_mb"]), 1.3, BEFORE["peak_rss_mb"] / BEFORE["size_mb"]),
                  ("verdict (ms)", e["verdict_ms"], 120, BEFORE["verdict_ms"]), ("TTFT (s)", e["ttft_s"], 0.25, BEFORE["ttft_s"]),
                  (".pte (MB)", e["size_mb"], 440, BEFORE["size_mb"]), ("1B load (s)", e["load_s"], 1.0, BEFORE["load_s"])]
    fig, axes = plt.subplots(1, len(items), figsize=(2.3 * len(items), 3.4))
    for ax, (name, now, goal, before) in zip(axes, items):
        ax.bar(["before", "now"], [before, now], color=["#bbbbbb", "#2a7ab9" if now <= goal else "#d9534f"])
        ax.axhline(goal, color="k", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"issue 22 targets (dashed); load {r['load']['start'][0]}-{r['load']['end'][0]} on {r['environment']['machine']['cores']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def mini_bench(pte: str, env: dict, label: str, out: Path) -> dict:
    """`guard bench` on a guard-mini .pte in a subprocess (so GUARD_NO_ETLITE applies): the 40-token message's medians."""
    import subprocess

    cmd = [sys.executable, "-m", "guard", "bench", "--pte", pte, "--runs", "3", "--prompt-tokens", "40", "--decode-tokens", "32",
           "--trust-tokenizer", "--label", label, "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    doc = json.loads(result_path(out, "json").read_text())
    s = doc["summary"]["40"]
    return {"label": label, "pte": pte, "size_mb": round(Path(pte).stat().st_size / 1e6, 1), "load_ms": s["model_load_ms"]["median"],
            "ttft_ms": s["ttft_ms"]["median"], "decode_tok_s": s["decode_tok_s"]["median"], "verdict_ms": s["verdict_ms"]["median"],
            "prompt_tokens": s["num_prompt_tokens"], "load_avg": doc["machine"]["load_avg"]}


def run_1b(r: dict, model: Path, q4, args, a, env: dict, threads: int) -> None:
    b1.log("cold guard classify on the 1B shape")
    c1 = bs.series(classify_cmd(str(model)), env, 3)
    c1["runs_n"] = 3
    r["classify_1b"] = c1
    r["classify_1b_no_packed"] = bs.series(classify_cmd(str(model)), {**env, "GUARD_PACKED_CACHE": "0"}, 3)
    r["load"]["after_classify_1b"] = loadavg()
    b1.log("1B shape: model load in fresh processes, with and without XNNPACK's packed-weight file")
    r["load_1b"] = {"packed_file": load_series(model, env, 5),
                    "no_packed_file": load_series(model, {**env, "GUARD_PACKED_CACHE": "0"}, 3)}
    b1.log("1B shape: load, TTFT, decode, verdict")
    os.environ["GUARD_THREADS"] = str(threads)
    r["executorch"] = b1.measure_pte(model, args)
    from guard.runtime.pte import plan

    r["verdict_plan"] = plan(int(r["executorch"]["verdict_prefilled_tokens"]), [128, 32, 8, 1])
    if q4:
        b1.log("llama.cpp")
        r["llama_cpp"] = b1.measure_llama_cpp(a.llama_cpp, q4, r["executorch"], args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "guard" / "bench_1b")
    ap.add_argument("--llama-cpp", type=Path, default=Path.home() / ".cache" / "guard" / "llama.cpp")
    ap.add_argument("--skip-llama-cpp", action="store_true")
    ap.add_argument("--skip-1b", action="store_true", help="guard-mini start-up only")
    ap.add_argument("--mini-before", metavar="PTE", help="guard-mini as main builds it: `guard bench` side by side, "
                    "run on executorch's Python bindings (the runtime before)")
    ap.add_argument("--attention-span", type=int, default=64, help="the 1B-shape export's attention span (0: whole cache)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "last_mile")
    a = ap.parse_args()
    from guard.bench.schema import environment, write_result
    from guard.defaults import mini_dir

    threads = len(os.sched_getaffinity(0))
    args = argparse.Namespace(chunk=128, chunks="32,8", max_seq_len=1024, group_size=256, embedding_group_size=256,
                              prune_vocab=True, runs=5, decode_steps=64, threads=threads, attention_span=a.attention_span)
    model = q4 = None
    if not a.skip_1b:
        hf = b1.checkpoint(a.work)
        model = b1.pte(a.work, hf, args)  # reused when bench_1b_shape.py exported it already
        q4 = None if a.skip_llama_cpp else b1.gguf(a.work, hf, a.llama_cpp)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]), "environment": environment(threads),
         "load": {"start": loadavg()}, "pte_name": model.parent.name if model else None,
         "mini_size_mb": round((mini_dir() / "model.pte").stat().st_size / 1e6, 1), "etlite_source": etlite_source()}
    b1.log("cold guard classify on guard-mini")
    r["startup"] = {"etlite": bs.series(classify_cmd(None), env, a.runs),
                    "no_snapshot": bs.series(classify_cmd(None), {**env, "GUARD_PREFIX_CACHE": "0"}, 3),
                    "python_bindings": bs.series(classify_cmd(None), {**env, "GUARD_NO_ETLITE": "1"}, 3)}
    r["load"]["after_startup"] = loadavg()
    if a.mini_before:
        b1.log("guard bench: guard-mini before (bindings, old file) and now")
        tmp = a.out.parent / "last_mile_mini"
        r["mini_bench"] = [mini_bench(a.mini_before, {**env, "GUARD_NO_ETLITE": "1"}, "before: main's file, Python bindings", tmp),
                           mini_bench(str(mini_dir() / "model.pte"), env, "now: this branch's file, etlite", tmp)]
        for ext in ("json", "md", "png"):
            result_path(tmp, ext).unlink(missing_ok=True)
    if model:
        run_1b(r, model, q4, args, a, env, threads)
    r["load"]["end"] = loadavg()
    busy = max(x[0] for x in r["load"].values())
    r["load_note"] = (f"the 1-minute load average reached {busy} on {threads} cores (other helpers' jobs): wall times "
                      "are under load, not idle numbers" if busy >= 0.7 else "the machine was close to idle")
    r["targets"] = [{"target": n, "measured": g, "goal": t, "met": ok} for n, g, t, ok in targets(r)]
    md = markdown(r)
    write_result(a.out, r, md, chart)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
