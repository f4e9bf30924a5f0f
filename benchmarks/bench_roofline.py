"""How fast this CPU could run the Llama Guard 3-1B shape at best: a roofline for issue 22's absolute targets.

    python benchmarks/bench_roofline.py [--measured benchmarks/results/last_mile.json]

Builds benchmarks/roofline/roofline.c (gcc, AVX-512 VNNI) and measures this machine's peaks: int8 multiply-accumulates
per second (vpdpbusd, the instruction XNNPACK's qd8-f32-qc4w kernels use for 8da4w linears), fp32 FMAs (attention)
and memory read bandwidth, each on 1 and 2 threads, best of 5. From the model shape it derives the least time any
runtime needs on this machine:
- prefill is compute-bound: every token multiplies through every linear weight (int8 x int4 -> one MAC per weight)
  plus attention over the span in fp32;
- decode is bandwidth-bound: every token reads every linear weight (4 bits + a bf16 scale per group) and the KV cache.
It sets these bounds beside the measured `.pte` and llama.cpp numbers of `bench_last_mile.py` and the issue's targets.
The same arithmetic bounds guard-mini's long-input verdict (issue 18: a 4,000-token prompt in <= 2 s), from its config,
its policy head and the windows `bench_long_input.py` measured (`--long`).
Results: benchmarks/results/roofline.{json,md,png}, with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_1b_shape import SHAPE  # noqa: E402

from guard.bench.schema import command, describe, environment, write_result  # noqa: E402

TARGETS = {"ttft_s": 0.25, "verdict_ms": 120.0, "decode_tok_s": 91.9}  # issue 22
LONG_TARGET_S = 2.0  # issue 18: a 4,000-token prompt on guard-mini


def peaks(threads: int) -> dict:
    src = ROOT / "benchmarks" / "roofline" / "roofline.c"
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "roofline"
        subprocess.run(["gcc", "-O2", "-mavx512f", "-mavx512bw", "-mavx512vnni", "-pthread", str(src), "-o", str(exe)],
                       check=True)
        out = subprocess.run([str(exe), str(threads)], check=True, capture_output=True, text=True).stdout
    runs = json.loads(out)["threads"]
    return runs[-1] | {"all": runs}


def shape_costs(s: dict, group: int = 256) -> dict:
    hd = s["dim"] // s["n_heads"]
    per_layer = (2 * s["dim"] * s["dim"] + 2 * s["dim"] * s["n_kv_heads"] * hd  # q, o, k, v
                 + 3 * s["dim"] * s["hidden_dim"])  # w1, w2, w3
    linear = per_layer * s["n_layers"]
    return {"linear_params": linear, "head_dim": hd,
            "weight_bytes_per_token": linear / 2 + linear / group * 2,  # int4 + one bf16 scale per group
            "kv_bytes_per_position": s["n_layers"] * 2 * s["n_kv_heads"] * hd * 4,  # fp32 K and V
            "attn_macs_per_key": s["n_layers"] * s["n_heads"] * hd * 2}  # q.k and p.v


def span(end: int, step: int = 64) -> int:
    return math.ceil(end / step) * step


def bounds(p: dict, c: dict, n_full: int, n_verdict: int, n_head: int) -> dict:
    int8, fp32, bw = p["int8_gmac_s"] * 1e9, p["fp32_gflop_s"] / 2 * 1e9, p["read_gb_s"] * 1e9

    def prefill_s(n: int, start: int) -> float:  # linears + attention over the span the runtime passes
        return n * c["linear_params"] / int8 + n * c["attn_macs_per_key"] * span(start + n) / fp32

    decode_bytes = c["weight_bytes_per_token"] + c["kv_bytes_per_position"] * span(n_full + 32)
    return {"ttft_s": prefill_s(n_full, 0), "prefill_tok_s": n_full / prefill_s(n_full, 0),
            "verdict_ms": 1e3 * (prefill_s(n_verdict, n_head) + decode_bytes / bw),  # the prefill and one decode step
            "decode_tok_s": bw / decode_bytes, "decode_bytes_per_token": decode_bytes}


def long_input_bound(p: dict, c: dict, head: int, window: int, windows: int, prompt: int, chunk: int) -> dict:
    """guard-mini's long-input policy prefills ``windows`` windows of ``window`` tokens after a cached policy head of
    ``head`` tokens, in chunks of ``chunk``; each chunk attends over the span up to its end. -> the least seconds for
    those windows, and for the fewest windows of that size that cover the prompt (no overlap)."""
    int8, fp32 = p["int8_gmac_s"] * 1e9, p["fp32_gflop_s"] / 2 * 1e9

    def window_s(n: int) -> float:
        s, pos = 0.0, head
        while n > 0:
            k = min(chunk, n)
            s += k * c["linear_params"] / int8 + k * c["attn_macs_per_key"] * span(pos + k) / fp32
            pos, n = pos + k, n - k
        return s

    one, linear = window_s(window), windows * window * c["linear_params"] / int8
    least = math.ceil(prompt / window)
    return {"seconds": windows * one, "linear_s": linear, "attention_s": windows * one - linear,
            "no_overlap_windows": least, "no_overlap_seconds": least * one}


def guard_mini_long(p: dict, path: Path) -> dict | None:
    """The bound for the longest prompt of a bench_long_input.py result, on the guard-mini build (None without one)."""
    from guard.defaults import mini_dir
    from guard.format.categories import Policy
    from guard.format.prompt import encode_head
    from guard.format.tokenizer import Tokenizer

    d = mini_dir()
    if not (d / "hf" / "config.json").is_file():
        print(f"no guard-mini build at {d} (guard mini build): the long-input bound is left out", file=sys.stderr)
        return None
    row = max(json.loads(path.read_text())["rows"], key=lambda r: r["prompt_tokens"])
    cfg = json.loads((d / "hf" / "config.json").read_text())
    shape = {"dim": cfg["hidden_size"], "n_heads": cfg["num_attention_heads"], "n_kv_heads": cfg["num_key_value_heads"],
             "hidden_dim": cfg["intermediate_size"], "n_layers": cfg["num_hidden_layers"]}
    head = len(encode_head(Tokenizer.from_dir(d), Policy(), "User"))
    c = shape_costs(shape, group=64)
    b = long_input_bound(p, c, head, row["window_tokens"], row["windows"], row["prompt_tokens"], chunk=128)
    return {"from": str(path.relative_to(ROOT) if ROOT in path.resolve().parents else path), "shape": shape,
            "head_tokens": head, "measured": row, "costs": c, "bound": b, "target_s": LONG_TARGET_S}


def markdown(doc: dict) -> str:
    p, b, m, l = doc["peaks"], doc["bounds"], doc["measured_pte"], doc["measured_llama_cpp"]
    rows = [("time to first token, 235 tokens (s)", "ttft_s", "{:.3f}", "<="),
            ("verdict, 40-token message, head cached (ms)", "verdict_ms", "{:.0f}", "<="),
            ("decode (tok/s)", "decode_tok_s", "{:.1f}", ">=")]
    out = ["# Roofline: the least time this machine allows for the Llama Guard 3-1B shape (issue 22)", "",
           f"- command: `{doc['command']}`; measured numbers from `{doc['measured_from']}`",
           f"- machine: {describe({k: doc.get(k) for k in ('cpu_family', 'cpu_model')} | doc['environment']['machine'])}, load average {doc['environment']['machine']['load_avg']}",
           f"- peaks measured here ({p['n']} threads, best of 5): int8 {p['int8_gmac_s']:.0f} GMAC/s, "
           f"fp32 {p['fp32_gflop_s']:.0f} GFLOP/s, memory read {p['read_gb_s']:.1f} GB/s; one thread: "
           + ", ".join(f"{k} {v}" for k, v in p['all'][0].items() if k != 'n'),
           f"- model: {doc['shape']['n_layers']} layers, dim {doc['shape']['dim']}, MLP {doc['shape']['hidden_dim']}: "
           f"{doc['costs']['linear_params'] / 1e6:.0f} M linear weights = MACs per prefill token, "
           f"{b['decode_bytes_per_token'] / 1e6:.0f} MB read per decode token (int4 + bf16 scales per 256, fp32 KV)",
           "", "| metric | bound at this machine's peak | `.pte` measured | share of the bound | llama.cpp measured | "
           "issue 22 target | target reachable here |", "|---|---|---|---|---|---|---|"]
    for name, k, fmt, op in rows:
        share = b[k] / m[k] if op == "<=" else m[k] / b[k]
        ok = b[k] <= TARGETS[k] if op == "<=" else b[k] >= TARGETS[k]
        out.append(f"| {name} | {fmt.format(b[k])} | {fmt.format(m[k])} | {share:.0%} | {fmt.format(l[k])} | "
                   f"{op} {TARGETS[k]:g} | {'yes' if ok else '**no**'} |")
    out += ["", "A bound assumes every multiply-accumulate at the measured VNNI peak and every byte at the measured read "
            "bandwidth, with no activation quantization, int4 unpacking, softmax, norms or dispatch: real runs are "
            "slower. Where the bound misses the target, no runtime can meet it on this machine."]
    if (g := doc.get("guard_mini_long")):
        b, r, sh = g["bound"], g["measured"], g["shape"]
        out += ["", "## guard-mini, long input (issue 18: a 4,000-token prompt in <= 2 s)", "",
                f"guard-mini: {sh['n_layers']} layers, dim {sh['dim']}, MLP {sh['hidden_dim']}, {sh['n_heads']} heads: "
                f"{g['costs']['linear_params'] / 1e6:.1f} M MACs per token in the linears and "
                f"{g['costs']['attn_macs_per_key'] / 1e3:.1f} K per attended key. A {r['prompt_tokens']:,}-token prompt "
                f"runs as {r['windows']} windows of {r['window_tokens']} tokens after the cached {g['head_tokens']}-token "
                f"policy head (`{g['from']}`).", "",
                "| | seconds |", "|---|---|",
                f"| bound, the {r['windows']} windows measured (linears {b['linear_s']:.2f} + attention "
                f"{b['attention_s']:.2f}) | {b['seconds']:.2f} |",
                f"| bound, the fewest windows that cover it ({b['no_overlap_windows']}, no overlap) | "
                f"{b['no_overlap_seconds']:.2f} |",
                f"| `.pte` measured (median) | {r['median_s']:.2f} |",
                f"| target | <= {g['target_s']:g} |", "",
                f"The measured run is at {b['seconds'] / r['median_s']:.0%} of its bound; meeting the target with these "
                f"windows needs {b['seconds'] / g['target_s']:.0%} of this machine's peaks, and "
                f"{b['no_overlap_seconds'] / g['target_s']:.0%} even without overlap."]
    return "\n".join(out) + "\n"


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, m, l = doc["bounds"], doc["measured_pte"], doc["measured_llama_cpp"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, (k, title, scale) in zip(axes, [("ttft_s", "TTFT, 235 tokens (ms)", 1e3),
                                            ("verdict_ms", "verdict, 40-token message (ms)", 1.0),
                                            ("decode_tok_s", "decode (tok/s)", 1.0)]):
        vals = [b[k] * scale, m[k] * scale, l[k] * scale]
        ax.bar(["roofline\nbound", ".pte", "llama.cpp"], vals, color=["#999999", "#1f77b4", "#ff7f0e"])
        ax.axhline(TARGETS[k] * scale, color="red", ls="--", label="issue 22 target")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"Llama Guard 3-1B shape on {doc['environment']['machine']['cpu']}, 2 threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measured", type=Path, default=ROOT / "benchmarks" / "results" / "last_mile.json")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--long", type=Path, default=ROOT / "benchmarks" / "results" / "long_input_idle.json",
                    help="a bench_long_input.py result on guard-mini: its longest prompt gets a bound too")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "roofline")
    a = ap.parse_args()
    lm = json.loads(a.measured.read_text())
    et, lc = lm["executorch"], lm["llama_cpp"]
    p = peaks(a.threads)
    c = shape_costs(SHAPE)
    doc = {"command": command(), "environment": environment(a.threads), "measured_from": str(a.measured.relative_to(ROOT) if a.measured.is_absolute()
                                                            and ROOT in a.measured.parents else a.measured),
           "shape": SHAPE, "costs": c, "peaks": p, "targets": TARGETS,
           "bounds": bounds(p, c, et["n_full"], et["verdict_prefilled_tokens"], et["n_head"]),
           "measured_pte": {k: et[k] for k in ("ttft_s", "verdict_ms", "decode_tok_s", "prefill_tok_s")},
           "measured_llama_cpp": {k: lc[k] for k in ("ttft_s", "verdict_ms", "decode_tok_s", "prefill_tok_s")},
           "guard_mini_long": guard_mini_long(p, a.long) if a.long.is_file() else None}
    md = markdown(doc)
    write_result(a.out, doc, md, chart)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
