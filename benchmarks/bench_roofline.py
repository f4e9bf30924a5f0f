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

from guard.bench.schema import command, environment  # noqa: E402

TARGETS = {"ttft_s": 0.25, "verdict_ms": 120.0, "decode_tok_s": 91.9}  # issue 22


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


def markdown(doc: dict) -> str:
    p, b, m, l = doc["peaks"], doc["bounds"], doc["measured_pte"], doc["measured_llama_cpp"]
    rows = [("time to first token, 235 tokens (s)", "ttft_s", "{:.3f}", "<="),
            ("verdict, 40-token message, head cached (ms)", "verdict_ms", "{:.0f}", "<="),
            ("decode (tok/s)", "decode_tok_s", "{:.1f}", ">=")]
    out = ["# Roofline: the least time this machine allows for the Llama Guard 3-1B shape (issue 22)", "",
           f"- command: `{doc['command']}`; measured numbers from `{doc['measured_from']}`",
           f"- machine: {doc['environment']['machine']['cpu']} (family {doc['cpu_family']}, model {doc['cpu_model']}), "
           f"{doc['environment']['machine']['cores']} cores, load average {doc['environment']['machine']['load_avg']}",
           f"- peaks measured here ({p['n']} threads, best of 5): int8 {p['int8_gmac_s']:.0f} GMAC/s (AVX-512 VNNI), "
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
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "roofline")
    a = ap.parse_args()
    lm = json.loads(a.measured.read_text())
    et, lc = lm["executorch"], lm["llama_cpp"]
    cpu = {k: next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith(k)), "?")
           for k in ("cpu family", "model\t")}
    p = peaks(a.threads)
    c = shape_costs(SHAPE)
    doc = {"command": command(), "environment": environment(a.threads), "cpu_family": cpu["cpu family"],
           "cpu_model": cpu["model\t"], "measured_from": str(a.measured.relative_to(ROOT) if a.measured.is_absolute()
                                                            and ROOT in a.measured.parents else a.measured),
           "shape": SHAPE, "costs": c, "peaks": p, "targets": TARGETS,
           "bounds": bounds(p, c, et["n_full"], et["verdict_prefilled_tokens"], et["n_head"]),
           "measured_pte": {k: et[k] for k in ("ttft_s", "verdict_ms", "decode_tok_s", "prefill_tok_s")},
           "measured_llama_cpp": {k: lc[k] for k in ("ttft_s", "verdict_ms", "decode_tok_s", "prefill_tok_s")}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(doc))
    chart(doc, a.out.with_suffix(".png"))
    print(a.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
