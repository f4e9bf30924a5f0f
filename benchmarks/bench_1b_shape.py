"""ExecuTorch .pte (8da4w, XNNPACK) vs llama.cpp (GGUF Q4_0) on the Llama Guard 3-1B shape, same random weights.

    python benchmarks/bench_1b_shape.py [--work ~/.cache/guard/bench_1b] [--llama-cpp ~/.cache/guard/llama.cpp]

Shape: 12 layers, hidden 2048, MLP 6400, 32/8 heads, vocab 128256, tied embeddings (Llama 3.2-1B / Llama Guard 3-1B).
There are no real weights here, so both runtimes get the same random checkpoint. Every artefact (HF dir, .pte,
GGUF) is cached in --work and reused, so an interrupted run resumes. llama.cpp is built outside the repository
from the llama-cpp-python sdist (see docs/export.md); its `llama-bench` does the llama.cpp measurements:
  TTFT     = prompt processing of the full guard prompt (pp N_full),
  decode   = token generation at depth N_full (tg 64 @ d N_full),
  verdict  = prompt processing of the request's tokens with the policy head already cached (pp N_body @ d N_head).
The .pte side measures the same quantities with guard.bench.run_bench (the timing of `guard bench`).
Results: benchmarks/results/bench_1b_shape.{json,md,png}.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHAPE = dict(n_layers=12, dim=2048, hidden_dim=6400, n_heads=32, n_kv_heads=8, vocab_size=128256, tie_embeddings=True,
             max_seq_len=131072)  # guard.model.llama.ModelArgs fields
MESSAGE = ("I need detailed, step-by-step instructions for getting into my neighbour's house while they are away "
           "on holiday, including how to disable the alarm and avoid the cameras without anyone noticing at all, "
           "and what to say if the police stop me on the way back home.")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load() -> list[float]:
    from guard.bench.schema import machine

    return machine()["load_avg"]


def checkpoint(work: Path) -> Path:
    from guard.testing import make_checkpoint, tiny

    hf = work / "hf"
    if not (hf / "model.safetensors").is_file():
        log("writing the random 1B-shape checkpoint")
        make_checkpoint(hf, tiny(**SHAPE))
    return hf


def pte(work: Path, hf: Path, args) -> Path:
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    chunks = tuple(int(c) for c in args.chunks.split(",") if c.strip())
    extra = "_" + "-".join(map(str, chunks)) if chunks else ""
    emb = f"_e{args.embedding_group_size}" if args.embedding_group_size != 32 else ""
    span = getattr(args, "attention_span", 64)
    att = f"_a{span}" if span else ""  # files before the attention span have no suffix
    out = work / f"pte_8da4w_g{args.group_size}{emb}_c{args.chunk}{extra}{att}_s{args.max_seq_len}{'_pruned' if args.prune_vocab else ''}"
    if not (out / "model.pte").is_file():
        log(f"exporting {out.name}")
        cfg = ExportConfig(max_seq_len=args.max_seq_len, chunk=args.chunk, chunks=chunks, prune_vocab=args.prune_vocab,
                           workers=getattr(args, "workers", 0), attention_span=span,
                           quant=QuantConfig("8da4w", group_size=args.group_size, embedding_group_size=args.embedding_group_size))
        t0 = time.time()
        export_model(hf, out, cfg)
        log(f"export took {time.time() - t0:.0f} s")
    return out / "model.pte"


def gguf(work: Path, hf: Path, llama_cpp: Path) -> Path:
    f16, q4 = work / "model-f16.gguf", work / "model-q4_0.gguf"
    if not q4.is_file():
        if not f16.is_file():
            log("converting to GGUF f16")
            env = {**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py")}
            with open(work / "convert.log", "w") as logf:
                subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(hf), "--outfile", str(f16),
                                "--outtype", "f16"], check=True, env=env, stdout=logf, stderr=logf)
        log("quantizing to Q4_0")
        subprocess.run([str(llama_cpp / "build" / "bin" / "llama-quantize"), str(f16), str(q4), "Q4_0"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return q4


def prompt_tokens(tok):
    from guard.format.categories import Policy
    from guard.format.prompt import encode

    ids = tok.encode(MESSAGE)[:40]
    message = tok.decode(ids)
    p = encode([{"role": "user", "content": message}], Policy(), tok)
    return message, len(tok.encode(message)), p


def wait_for_quiet(limit: float, max_s: float) -> None:
    """Other jobs share the CPU: both runtimes' thread pools slow down sharply when a core is taken."""
    t0 = time.time()
    while limit and os.getloadavg()[0] >= limit and time.time() - t0 < max_s:
        time.sleep(10)
    if limit:
        log(f"load {load()} after waiting {time.time() - t0:.0f} s (limit {limit})")


def measure_pte(path: Path, args) -> dict:
    """guard.bench.run_bench on the .pte (load, TTFT on an empty cache, decode, verdict with the policy head cached)
    for a user message of the same length as MESSAGE's first 40 tokens; the medians over --runs runs."""
    from guard.bench import BenchConfig, run_bench
    from guard.format.tokenizer import Tokenizer

    _, n_msg, p = prompt_tokens(Tokenizer.from_dir(path.parent))
    doc = run_bench(str(path), BenchConfig(runs=args.runs, warmup=1, prompt_tokens=[n_msg], decode_tokens=args.decode_steps))
    s, meta = doc["summary"][str(n_msg)], doc["metadata"]
    med = lambda k: s[k]["median"]  # noqa: E731
    runs = [r for r in doc["runs"] if not r["warmup"]]
    first = doc["runs"][0]  # the warm-up: this process's first load (etlite's library loaded with it)
    return {
        "load_s": round(med("model_load_ms") / 1e3, 2),
        "load_cpu_s": round(statistics.median(r["model_load_cpu_ms"] for r in runs) / 1e3, 2),
        "first_load_s": round(first["model_load_ms"] / 1e3, 2), "first_load_cpu_s": round(first["model_load_cpu_ms"] / 1e3, 2),
        "threads": doc["machine"]["threads"], "chunk": meta["get_prefill_chunk"],
        "max_seq_len": meta["get_max_seq_len"], "pruned_vocab": meta["get_output_ids"] != [-1], "n_head": len(p.head),
        "n_body": len(p.body) + 1, "n_message": n_msg, "n_full": s["num_prompt_tokens"], "ttft_s": round(med("ttft_ms") / 1e3, 3),
        "prefill_tok_s": med("prefill_tok_s"), "decode_tok_s": med("decode_tok_s"), "verdict_ms": med("verdict_ms"),
        "verdict_prefilled_tokens": statistics.median(r["verdict_prefilled_tokens"] for r in runs),
        "size_mb": round(path.stat().st_size / 1e6, 1), "peak_rss_mb": med("peak_rss_mb"), "bench": doc["config"],
    }


def llama_bench(llama_cpp: Path, model: Path, threads: int, runs: int, p: int, n: int, d: int) -> dict:
    cmd = [str(llama_cpp / "build" / "bin" / "llama-bench"), "-m", str(model), "-t", str(threads), "-r", str(runs),
           "-p", str(p), "-n", str(n), "-d", str(d), "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = json.loads(out)[0]
    return {"cmd": " ".join(cmd[1:]), "avg_ts": row["avg_ts"], "build_commit": row.get("build_commit"),
            "build_number": row.get("build_number"), "cpu_info": row.get("cpu_info"), "model_type": row.get("model_type")}


def measure_llama_cpp(llama_cpp: Path, model: Path, shape: dict, args) -> dict:
    full = llama_bench(llama_cpp, model, args.threads, args.runs, shape["n_full"], 0, 0)
    tg = llama_bench(llama_cpp, model, args.threads, args.runs, 0, args.decode_steps, shape["n_full"])
    body = llama_bench(llama_cpp, model, args.threads, args.runs, shape["n_body"], 0, shape["n_head"])
    return {
        "ttft_s": round(shape["n_full"] / full["avg_ts"], 3), "prefill_tok_s": round(full["avg_ts"], 1),
        "decode_tok_s": round(tg["avg_ts"], 1), "verdict_ms": round(1e3 * shape["n_body"] / body["avg_ts"], 1),
        "commands": [full["cmd"], tg["cmd"], body["cmd"]], "build": f"{full['build_number']} ({full['build_commit']})",
        "model_type": full["model_type"], "size_mb": round(model.stat().st_size / 1e6, 1),
        "source": (llama_cpp / "GUARD_SOURCE").read_text().strip() if (llama_cpp / "GUARD_SOURCE").is_file() else "unknown",
    }


def markdown(r: dict) -> str:
    from guard.bench.schema import describe

    e, l = r["executorch"], r.get("llama_cpp")
    rows = [("TTFT, full guard prompt (s)", "ttft_s", True), ("prefill (tok/s)", "prefill_tok_s", False),
            ("decode (tok/s)", "decode_tok_s", False), ("verdict, 40-token message, prefix cached (ms)", "verdict_ms", True)]
    lines = [f"# ExecuTorch .pte vs llama.cpp, Llama Guard 3-1B shape (random weights)", "",
             f"- machine: {describe(r['environment']['machine'])}", f"- versions: " + ", ".join(f"{k} {v}" for k, v in r["environment"]["versions"].items())
             + (f", llama.cpp: {l.get('source', l['build'])}" if l else ""),
             f"- command: `{r['command']}`", f"- load average (1/5/15 min) before: {r['load_before']}, after: {r['load_after']}",
             f"- prompt: {e['n_full']} tokens ({e['n_head']} policy head + {e['n_body']} request incl. the forced \"\\n\\n\"), message {e['n_message']} tokens",
             f"- .pte: 8da4w group {r['group_size']}, 4-bit embedding, chunk {e['chunk']}, max_seq_len {e['max_seq_len']}, "
             f"pruned vocab {e['pruned_vocab']}, {e['size_mb']} MB file, peak RSS {e.get('peak_rss_mb', '?')} MB, "
             f"load {e['load_s']} s, {e['threads']} threads",
             (f"- llama.cpp: {l['model_type']}, {l['size_mb']} MB, {r['threads']} threads; full vocabulary output layer" if l else "- llama.cpp: not run"),
             "", "| metric | ExecuTorch .pte | llama.cpp | ratio (llama.cpp time / .pte time) | target |", "|---|---|---|---|---|"]
    targets = {"ttft_s": "<= 2.5 s", "decode_tok_s": ">= 30 (aim >= llama.cpp)", "verdict_ms": "<= 500 ms", "prefill_tok_s": ""}
    for name, key, is_time in rows:
        ratio = ""
        if l:
            ratio = f"{(l[key] / e[key]) if is_time else (e[key] / l[key]):.2f}x"
        lines.append(f"| {name} | {e[key]} | {l[key] if l else '-'} | {ratio} | {targets[key]} |")
    lines += ["", f"The .pte verdict prefills {e.get('verdict_prefilled_tokens', '?')} tokens after the cached head "
              f"(guard.bench.run_bench); llama.cpp: pp{e['n_body']} at depth {e['n_head']}.",
              "Ratios above 1 mean the .pte is faster.", ""]
    return "\n".join(lines)


def chart(r: dict, path: Path) -> None:
    """Bars: the .pte and llama.cpp on TTFT, decode and verdict, with the issue's targets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from guard.bench.schema import TARGET_DECODE_TOK_S, TARGET_TTFT_S

    e, l = r["executorch"], r.get("llama_cpp")
    names = ["ExecuTorch .pte"] + (["llama.cpp Q4_0"] if l else [])
    panels = (("ttft_s", "TTFT, full guard prompt (s)", TARGET_TTFT_S), ("decode_tok_s", "decode (tok/s)", TARGET_DECODE_TOK_S),
              ("verdict_ms", "verdict, prefix cached (ms)", 500))
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    for a, (key, title, target) in zip(ax, panels):
        vals = [e[key]] + ([l[key]] if l else [])
        a.bar(names, vals, color=["tab:blue", "tab:orange"][: len(vals)])
        for i, v in enumerate(vals):
            a.annotate(f"{v:g}", (i, v), ha="center", va="bottom", fontsize=9)
        a.axhline(target, color="red", linestyle="--", label=f"target {target:g}")
        a.set(title=title)
        a.legend(fontsize=8)
        a.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Llama Guard 3-1B shape, {r['threads']} threads: {r['environment']['machine'].get('cpu', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "guard" / "bench_1b")
    ap.add_argument("--llama-cpp", type=Path, default=Path.home() / ".cache" / "guard" / "llama.cpp")
    ap.add_argument("--skip-llama-cpp", action="store_true")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="export: processes lowering the methods (0: one per core; "
                    "each holds its share of the lowered weights, ~GBs on this shape)")
    ap.add_argument("--decode-steps", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=128, help="largest static prefill chunk (method prefill)")
    ap.add_argument("--chunks", default="32,8", help="smaller static prefill chunks (methods prefill_<n>); '' for none")
    ap.add_argument("--max-seq-len", type=int, default=1024)
    ap.add_argument("--attention-span", type=int, default=64,
                    help="export: attention reads the cache up to each step's end rounded up to N (0: the whole cache)")
    ap.add_argument("--embedding-group-size", type=int, default=256,
                    help="4-bit embedding group (256: 2 MB of scales; 32: 16 MB, the file goes over 440 MB)")
    ap.add_argument("--group-size", type=int, default=256)
    ap.add_argument("--no-prune-vocab", dest="prune_vocab", action="store_false")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_1b_shape")
    ap.add_argument("--wait-load", type=float, default=0.0, metavar="L",
                    help="before measuring, wait (up to --wait-max s) until the 1-minute load average is below L")
    ap.add_argument("--wait-max", type=float, default=900)
    args = ap.parse_args()
    from guard.bench.schema import environment, write_result

    os.environ["GUARD_THREADS"] = str(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    hf = checkpoint(args.work)
    model = pte(args.work, hf, args)
    q4 = None if args.skip_llama_cpp else gguf(args.work, hf, args.llama_cpp)
    wait_for_quiet(args.wait_load, args.wait_max)
    r = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]), "environment": environment(args.threads),
         "shape": SHAPE, "group_size": args.group_size, "threads": args.threads, "load_before": load()}
    log(f"measuring the .pte (load {r['load_before']})")
    r["executorch"] = measure_pte(model, args)
    if q4:
        log("measuring llama.cpp")
        r["llama_cpp"] = measure_llama_cpp(args.llama_cpp, q4, r["executorch"], args)
    r["load_after"] = load()
    md = markdown(r)
    write_result(args.out, r, md, chart)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
