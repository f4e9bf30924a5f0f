"""Vision guard measurements: image preprocessing at the real tile size, and the tiny mllama guard eager vs .pte.

    python benchmarks/bench_vision.py [--work ~/.cache/guard/bench_vision] [--runs 5]

A. Preprocessing (Llama Guard 3-11B-Vision settings: 560-pixel tiles, up to 4): guard.vision load_image + preprocess
   on JPEG photos from 640x480 to 64 MP (the last one is decoded at 1/2 scale by Image.draft), against transformers'
   MllamaImageProcessor on the same decoded image; peak RSS growth.
B. The tiny Llama Guard 3 Vision-format checkpoint (guard.vision.testing, 56-pixel tiles) as eager transformers,
   .pte fp32, .pte 8da4w (text decoder INT4, pruned output layer) and .pte 8da4w_vision (the vision encoder's
   linears INT4 too): verdict parity against eager over 12
   requests, and guard bench (image encode, TTFT, decode tok/s). These are pipeline numbers, not 11B numbers.
Artefacts are cached in --work (an interrupted run resumes). Results: benchmarks/results/bench_vision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PHOTOS = [(640, 480), (1600, 1200), (4032, 3024), (9248, 6936)]


def log(msg: str) -> None:
    print(f"[bench_vision {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def photo(work: Path, w: int, h: int) -> Path:
    import numpy as np
    from PIL import Image

    path = work / f"photo_{w}x{h}.jpg"
    if not path.is_file():
        rng = np.random.default_rng(w)
        small = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
        small.resize((w, h), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def preprocessing(work: Path, runs: int) -> list[dict]:
    from transformers.models.mllama.image_processing_mllama import MllamaImageProcessor

    from guard.vision.image import load_image
    from guard.vision.preprocess import MEAN, STD, preprocess

    proc = MllamaImageProcessor(size={"height": 560, "width": 560}, max_image_tiles=4, image_mean=list(MEAN), image_std=list(STD))
    rows = []
    for w, h in PHOTOS:
        path = photo(work, w, h)
        ours, ref, diff = [], [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            rgb, info = load_image(path)
            x = preprocess(rgb)
            ours.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            r = proc(images=[[rgb]], return_tensors="np")
            ref.append((time.perf_counter() - t0) * 1e3)
            diff = float(abs(r["pixel_values"] - x.pixel_values).max())
        rows.append({"photo": f"{w}x{h}", "megapixels": round(w * h / 1e6, 1), "file_kb": path.stat().st_size // 1024,
                     "decoded": list(rgb.size), "draft_scale": info.draft_scale, "tiles": x.num_tiles, "canvas": list(x.canvas),
                     "load_preprocess_ms": round(statistics.median(ours), 1),
                     "transformers_preprocess_ms": round(statistics.median(ref), 1), "max_abs_diff": diff,
                     "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
        log(f"preprocess {rows[-1]}")
    return rows


def models(work: Path) -> dict:
    import numpy as np
    from PIL import Image

    from guard.export import ExportConfig
    from guard.quantize import QuantConfig
    from guard.vision.export import export_vision_model
    from guard.vision.testing import make_vision_checkpoint, script_image_verdict

    hf = work / "tiny_vision"
    images = {"unsafe": work / "unsafe.png", "safe": work / "safe.png"}
    if not (hf / "done").is_file():
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)).save(images["unsafe"])
        Image.fromarray(rng.integers(0, 256, (300, 100, 3), dtype=np.uint8)).save(images["safe"])
        make_vision_checkpoint(hf)
        script_image_verdict(hf, "What is in this picture?", images["unsafe"], images["safe"])
        (hf / "done").write_text("ok\n")
    out = {"eager": hf}
    for name, cfg in {"pte_fp32": ExportConfig(max_seq_len=512, chunk=64),
                      "pte_8da4w": ExportConfig(max_seq_len=512, chunk=64, prune_vocab=True, quant=QuantConfig("8da4w", group_size=32)),
                      "pte_8da4w_vision": ExportConfig(max_seq_len=512, chunk=64, prune_vocab=True, quant=QuantConfig("8da4w", group_size=32))}.items():
        path = work / name / "model.pte"
        if not path.is_file():
            log(f"exporting {name}")
            t0 = time.perf_counter()
            export_vision_model(hf, work / name, cfg, vision_quant=name.endswith("_vision"))
            (work / name / "export_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        out[name] = path
    return {"paths": out, "images": images}


def parity(m: dict) -> dict:
    import guard

    imgs = m["images"]
    cases = [(img, text, resp) for img in (imgs["unsafe"], imgs["safe"], None)
             for text, resp in (("What is in this picture?", None), ("What is in this picture?", "It shows a street."),
                                ("Describe it in detail, please.", None), ("Is this allowed?", "Yes."))]
    guards = {}
    for name, path in m["paths"].items():
        guards[name] = guard.load(path)
    verdicts = {name: [g.classify(t, resp, image=img) for img, t, resp in cases] for name, g in guards.items()}
    out = {}
    for name in ("pte_fp32", "pte_8da4w", "pte_8da4w_vision"):
        pairs = list(zip(verdicts["eager"], verdicts[name]))
        out[name] = {"requests": len(pairs), "same_decision": sum(a.decision == b.decision for a, b in pairs),
                     "same_raw_text": sum(a.raw == b.raw for a, b in pairs),
                     "max_abs_p_unsafe_diff": max(abs(a.p_unsafe - b.p_unsafe) for a, b in pairs),
                     "eager_decisions": [a.decision for a, _ in pairs]}
        log(f"parity {name}: {out[name]}")
    return out


def bench(m: dict, runs: int) -> dict:
    from guard.bench import BenchConfig, run_bench

    out = {}
    for name, path in m["paths"].items():
        doc = run_bench(str(path), BenchConfig(runs=runs, warmup=1, prompt_tokens=[16, 128], decode_tokens=16))
        out[name] = {"backend": doc["backend"], "pte_bytes": Path(path).stat().st_size if name != "eager" else None,
                     "summary": doc["summary"]}
        log(f"bench {name}: " + json.dumps({n: {k: v["median"] for k, v in s.items() if isinstance(v, dict)} for n, s in doc["summary"].items()}))
    return out


def markdown(doc: dict) -> str:
    from guard.bench.schema import describe

    m, v = doc["machine"], doc["versions"]
    lines = ["# Vision guard measurements", "", f"- machine: {describe(m)}; "
             f"load average at start {doc['load_avg_start']}, at end {doc['load_avg_end']} (other jobs share the CPU)",
             "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x), f"- command: `{doc['command']}`", "",
             "## A. Preprocessing at the Llama Guard 3-11B-Vision settings (560-pixel tiles, up to 4)", "",
             "| photo (JPEG) | MP | decoded as | tiles | canvas | load + preprocess (ms) | transformers preprocess only (ms) | max abs diff | process peak RSS so far (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["preprocessing"]:
        lines.append(f"| {r['photo']} | {r['megapixels']} | {r['decoded'][0]}x{r['decoded'][1]}"
                     f"{' (draft 1/%d)' % r['draft_scale'] if r['draft_scale'] > 1 else ''} | {r['tiles']} | "
                     f"{r['canvas'][0]}x{r['canvas'][1]} | {r['load_preprocess_ms']} | {r['transformers_preprocess_ms']} | "
                     f"{r['max_abs_diff']:.1e} | {r['process_peak_rss_mb']} |")
    lines += ["", "Medians. Ours includes the JPEG decode; transformers' column starts from the decoded image. The 64 MP "
              "photo is decoded at half scale by Image.draft: 48 MB of RGB instead of the 192 MB a full decode takes. "
              "The RSS column is the process's peak so far (it includes the models and earlier rows).", "",
              "## B. Tiny Llama Guard 3 Vision-format guard (random weights, 56-pixel tiles): eager vs .pte", "",
              "| backend | .pte size (MB) | parity vs eager: same decision / same text / max p_unsafe diff | "
              "image encode (ms) | TTFT, 16-token message (ms) | decode tok/s | verdict, head cached (ms) |", "|---|---|---|---|---|---|---|"]
    for name, b in doc["bench"].items():
        s, p = b["summary"]["16"], doc["parity"].get(name)
        par = f"{p['same_decision']}/{p['requests']}, {p['same_raw_text']}/{p['requests']}, {p['max_abs_p_unsafe_diff']:.1e}" if p else "reference"
        size = f"{b['pte_bytes'] / 1e6:.1f}" if b["pte_bytes"] else "-"
        lines.append(f"| {name} ({b['backend']}) | {size} | {par} | {s['image_encode_ms']['median']:.1f} | {s['ttft_ms']['median']:.1f} | "
                     f"{s['decode_tok_s']['median']:.0f} | {s['verdict_ms']['median']:.1f} |")
    lines += ["", "The tiny model's numbers show the pipeline works on-device and what it costs around the model "
              "(preprocessing, method calls); they say nothing about 11B latency. The image is encoded once per image; "
              "TTFT excludes it. The 8da4w .pte also has the pruned output layer (~100 rows instead of 128,256), which "
              "is most of its speed-up at this size. 'Verdict' includes category decoding when the first token is "
              "'unsafe' (up to 24 decode steps).", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(Path.home() / ".cache/guard/bench_vision"))
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from guard.bench.schema import machine, versions, write_result

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "guard-bench-vision-1", "command": "python " + " ".join(sys.argv), "machine": machine(),
           "versions": versions(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    doc["preprocessing"] = preprocessing(work, args.runs)
    m = models(work)
    doc["parity"] = parity(m)
    doc["bench"] = bench(m, args.runs)
    doc["export_s"] = {n: float((work / n / "export_s.txt").read_text()) for n in ("pte_fp32", "pte_8da4w", "pte_8da4w_vision")
                       if (work / n / "export_s.txt").is_file()}
    doc["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_result(RESULTS / "bench_vision", doc, markdown(doc))
    log(f"wrote {RESULTS / 'bench_vision.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
