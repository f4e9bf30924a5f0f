"""Image-encode cost at the real Llama Guard 3-11B-Vision shape, measured on reduced depth and extrapolated.

    python benchmarks/bench_vision_encoder_shape.py [--work ~/.cache/guard/bench_vision_shape] [--runs 3]

The 11B's vision side per image: a ViT-H-like encoder (width 1280, 16 heads, MLP 5120, 560-pixel tiles of 14-pixel
patches, 4 tiles = 6,404 tokens; 32 layers + 8 gated global layers, every layer attending over all tiles), a
projector 7680 -> 4096, and keys/values for 8 cross-attention layers (4096 -> 8 x 128). 40 layers do not fit a sane
benchmark on this shared 2-core machine, so guard.vision.model's encode path is built at the real width with random
weights and fewer layers, exported to ExecuTorch (XNNPACK, fp32) and timed, and also timed in eager PyTorch:
  A = 1 layer + 1 global layer + 1 cross layer, B = A + 2 layers, C = A + 2 cross layers.
per vision layer = (B - A) / 2, per cross layer = (C - A) / 2, fixed = A - 2 * layer - cross;
11B estimate = fixed + 40 * layer + 8 * cross. Results: benchmarks/results/bench_vision_encoder_shape.{json,md}.
With --quant 8da4w every linear (vision, projector, cross K/V) is INT4 weights + int8 dynamic activations (group 256)
and only the .pte is timed: benchmarks/results/bench_vision_encoder_shape_8da4w.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {"A": (1, 1, 1), "B": (3, 1, 1), "C": (1, 1, 3)}  # (layers, global layers, cross layers)


def log(msg: str) -> None:
    print(f"[vision_shape {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Encode(nn.Module):
    """guard.vision.model's image path: vision encoder -> projector -> cross-attention keys/values (buffers)."""

    def __init__(self, layers: int, global_layers: int, cross: int):
        super().__init__()
        from guard.model.llama import ModelArgs
        from guard.vision.model import CrossAttention, VisionArgs, VisionEncoder

        self.v = VisionArgs(n_layers=layers, n_global_layers=global_layers, intermediate=[0], output_dim=1280 * 2)
        self.vision_model = VisionEncoder(self.v)
        self.projector = nn.Linear(self.v.output_dim, 4096)  # the 11B's is 7680 -> 4096 (5 intermediate layers)
        text = ModelArgs(dim=4096, n_heads=32, n_kv_heads=8, max_seq_len=16, chunk=16)
        self.cross = nn.ModuleList(CrossAttention(text, 4 * self.v.n_patches) for _ in range(cross))
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0, 0.02)

    def forward(self, pixels, ar_id, tiles):
        out = self.vision_model(pixels, ar_id, tiles)
        states = self.projector(out).reshape(-1, 4096)
        for c in self.cross:
            c.set_image(states)
        return out[:, :1, :1]


def inputs():
    torch.manual_seed(0)
    return torch.randn(4, 3, 560, 560), torch.tensor([6]), torch.ones(4, dtype=torch.long)  # id 6 = 2x2 tiles


def export(model: nn.Module, path: Path) -> float:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    t0 = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(model, inputs(), strict=True)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], compile_config=EdgeCompileConfig(_check_ir_validity=False))
    et = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True,
                                                    memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False)))
    path.write_bytes(et.buffer)
    return time.perf_counter() - t0


def time_pte(path: Path, runs: int) -> list[float]:
    from executorch.runtime import Runtime

    from guard.runtime.pte import quiet_stderr, set_threads

    with quiet_stderr():
        set_threads()
        method = Runtime.get().load_program(path).load_method("forward")
    x, out = list(inputs()), []
    method.execute(x)  # warm-up
    for _ in range(runs):
        t0 = time.perf_counter()
        method.execute(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_eager(model: nn.Module, runs: int) -> list[float]:
    x, out = inputs(), []
    with torch.inference_mode():
        model(*x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(*x)
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(Path.home() / ".cache/guard/bench_vision_shape"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quant", choices=["none", "8da4w"], default="none")
    args = p.parse_args()
    suffix = "" if args.quant == "none" else f"_{args.quant}"
    sys.path.insert(0, str(ROOT))
    from guard.bench.schema import describe, machine, versions, write_result

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load0 = [round(x, 2) for x in os.getloadavg()]
    rows = {}
    for name, (layers, glob, cross) in CONFIGS.items():
        done = work / f"{name}{suffix}.json"
        if done.is_file():
            rows[name] = json.loads(done.read_text(), parse_constant=lambda c: None)  # older caches: NaN -> null
            continue
        torch.manual_seed(0)
        model = Encode(layers, glob, cross).eval()
        if args.quant != "none":
            from guard.quantize import QuantConfig, load_quantized_ops, quantize

            load_quantized_ops()
            quantize(model, QuantConfig(args.quant, group_size=256, embedding_bits=0))
        eager = time_eager(model, args.runs) if args.quant == "none" else []  # not measured: eager_ms null
        pte = work / f"{name}.pte"
        export_s = export(model, pte)
        xnn = time_pte(pte, args.runs)
        rows[name] = {"layers": layers, "global_layers": glob, "cross_layers": cross, "export_s": round(export_s, 1),
                      "pte_mb": round(pte.stat().st_size / 1e6, 1),
                      "eager_ms": round(statistics.median(eager), 1) if eager else None,
                      "xnnpack_ms": round(statistics.median(xnn), 1), "eager_runs": eager, "xnnpack_runs": xnn,
                      "load_avg": [round(x, 2) for x in os.getloadavg()]}
        done.write_text(json.dumps(rows[name]))
        pte.unlink()  # hundreds of MB; the timing is what we keep
        log(f"{name}: {rows[name]}")
    est = {}
    for k in ("eager_ms", "xnnpack_ms") if args.quant == "none" else ("xnnpack_ms",):
        a, b, c = rows["A"][k], rows["B"][k], rows["C"][k]
        layer, cross = (b - a) / 2, (c - a) / 2
        fixed = a - 2 * layer - cross
        est[k] = {"per_vision_layer_ms": round(layer, 1), "per_cross_layer_ms": round(cross, 1), "fixed_ms": round(fixed, 1),
                  "llama_guard_3_11b_vision_estimate_s": round((fixed + 40 * layer + 8 * cross) / 1e3, 1)}
    doc = {"schema": "guard-bench-vision-shape-1", "quant": args.quant, "command": "python " + " ".join(sys.argv), "machine": machine(),
           "versions": versions(), "load_avg_start": load0, "load_avg_end": [round(x, 2) for x in os.getloadavg()],
           "configs": rows, "estimate": est}
    m = doc["machine"]
    md = [f"# Image encode at the Llama Guard 3-11B-Vision shape (reduced depth, extrapolated; {args.quant})", "",
          f"- machine: {describe(m)}; load average after each config: "
          + ", ".join(f"{n} {r['load_avg']}" for n, r in rows.items()) + " (shared CPU)",
          "- versions: " + ", ".join(f"{k} {x}" for k, x in doc["versions"].items() if x), f"- command: `{doc['command']}`",
          "- one image, 4 tiles of 560 px (6,404 vision tokens), random weights, " + ("fp32" if args.quant == "none" else
          "linears 8da4w (INT4 weights, group 256, int8 dynamic activations); attention, norms and the patch conv fp32"), "",
          "| config | vision layers + global | cross layers | eager PyTorch (ms) | ExecuTorch XNNPACK (ms) | .pte (MB) | export (s) |",
          "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        eager_ms = "-" if r["eager_ms"] is None else r["eager_ms"]
        md.append(f"| {name} | {r['layers']} + {r['global_layers']} | {r['cross_layers']} | {eager_ms} | {r['xnnpack_ms']} | "
                  f"{r['pte_mb']} | {r['export_s']} |")
    md += ["", "| runtime | per vision layer (ms) | per cross layer K/V (ms) | fixed (ms) | 11B estimate: 40 layers + 8 cross (s) |",
           "|---|---|---|---|---|"]
    for k, e in est.items():
        md.append(f"| {k.removesuffix('_ms')} | {e['per_vision_layer_ms']} | {e['per_cross_layer_ms']} | {e['fixed_ms']} | "
                  f"{e['llama_guard_3_11b_vision_estimate_s']} |")
    md += ["", "Medians. The estimate is linear in depth (every layer has the same shape); the projector is 2560 -> 4096 "
           "here, 7680 -> 4096 in the 11B, a small part of the total.", ""]
    write_result(RESULTS / f"bench_vision_encoder_shape{suffix}", doc, "\n".join(md))
    log(f"wrote benchmarks/results/bench_vision_encoder_shape{suffix}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
