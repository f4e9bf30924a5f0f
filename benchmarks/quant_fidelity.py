"""How much each linear-quantization scheme changes a guard's scores: eager, fake-quantized, on dev records.

    python benchmarks/quant_fidelity.py --hf HF_DIR --data DATA/dev.jsonl --limit 400 \\
        --schemes fp32 8da4w:64 8da4w:32 8da8w --out benchmarks/results/quant_fidelity_STEM

Each scheme wraps the Hugging Face model's linears (not lm_head) in torchao's fake quantizers for that scheme
(``guard.train.distill.qat_prepare``; the weight quantization is baked once, the int8 activations per token), the
function the exported ``.pte`` computes up to the 4-bit embedding. Every scheme is scored on the same records,
uncalibrated, and compared with the first scheme (fp32 by default): mean and 95th percentile of |delta margin| (the
unsafe-minus-safe logit), verdict agreement and Spearman's rank correlation of p_unsafe, beside the usual metrics
(AUPRC, recall at FPR 0.10). It measures fidelity on in-distribution data, so it can choose a scheme without the
held-out sources. Writes STEM.json, STEM.md and STEM.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


import guard
from guard.bench.schema import command, environment, write_result
from guard.errors import GuardError
from guard.eval.evaluate import metrics, predict
from guard.train.data import load_jsonl
from guard.train.distill import bake_fake_quant, qat_prepare


def parse_scheme(text: str) -> tuple[str, int]:
    name, _, group = text.partition(":")
    if name not in ("fp32", "8da4w", "8da8w") or (name == "8da4w") != bool(group):
        raise GuardError(f"scheme {text!r}: use fp32, 8da4w:GROUP or 8da8w")
    return name, int(group or 0)


def load(hf: str, scheme: str, group: int):
    g = guard.load(model=hf, calibrated=False)
    if scheme != "fp32":
        bake_fake_quant(qat_prepare(g.runner.model, group, scheme).eval())
    return g


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=xs.__getitem__)
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb) if len(a) > 1 else 1.0


def fidelity(ref: list[dict], preds: list[dict]) -> dict:
    d = sorted(abs(p["margin"] - r["margin"]) for p, r in zip(preds, ref))
    return {"mean_abs_margin_diff": statistics.mean(d), "p95_abs_margin_diff": d[int(0.95 * (len(d) - 1))],
            "verdict_agreement": sum(p["unsafe"] == r["unsafe"] for p, r in zip(preds, ref)) / len(ref),
            "spearman_p_unsafe": spearman([p["p_unsafe"] for p in preds], [r["p_unsafe"] for r in ref])}


def to_markdown(doc: dict) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"# Quantization fidelity: {doc['hf']}", "", f"{doc['n']} records of {doc['data']}, eager, uncalibrated; "
             f"fidelity against `{doc['reference']}`.", "",
             "| scheme | mean / p95 abs margin diff | verdict agreement | Spearman p_unsafe | F1 | AUPRC | recall at FPR 0.10 | hazard exact |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in doc["schemes"].items():
        m, q = r["metrics"], r["fidelity"]
        lines.append(f"| {name} | {q['mean_abs_margin_diff']:.3f} / {q['p95_abs_margin_diff']:.3f} | {q['verdict_agreement']:.3f} | "
                     f"{q['spearman_p_unsafe']:.4f} | {f(m['f1'])} | {f(m['auprc'])} | {f(m['recall_at_fpr10'])} | {f(m['hazard_exact'])} |")
    lines += ["", f"Environment: {json.dumps(doc['environment'])}", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["schemes"])
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].bar(names, [doc["schemes"][n]["fidelity"]["mean_abs_margin_diff"] for n in names], color="#4c72b0")
    ax[0].set_title(f"mean |delta margin| vs {doc['reference']}")
    ax[1].bar(names, [doc["schemes"][n]["metrics"]["recall_at_fpr10"] or 0 for n in names], color="#dd8452")
    ax[1].set_title("recall at FPR 0.10 (dev)")
    ax[1].set_ylim(0, 1)
    fig.suptitle(Path(doc["hf"]).name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="a Hugging Face model directory (a guard-mini teacher or student)")
    ap.add_argument("--data", required=True, help="JSON lines of labelled records (a dev split)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--schemes", nargs="+", default=["fp32", "8da4w:64", "8da4w:32", "8da8w"],
                    help="fp32, 8da4w:GROUP or 8da8w; the first is the reference")
    ap.add_argument("--out", required=True, type=Path, help="output stem")
    a = ap.parse_args()
    try:
        schemes = [(s, *parse_scheme(s)) for s in a.schemes]
        records = load_jsonl(Path(a.data))[: a.limit]
        if not records:
            raise GuardError(f"{a.data}: no records")
        doc = {"hf": a.hf, "data": a.data, "n": len(records), "reference": a.schemes[0], "schemes": {},
               "environment": environment(), "command": command()}
        ref = None
        for text, name, group in schemes:
            preds = predict(load(a.hf, name, group), records, progress=sys.stderr.isatty())
            ref = ref or preds
            doc["schemes"][text] = {"metrics": {k: v for k, v in metrics(records, preds).items() if k != "per_category"},
                                    "fidelity": fidelity(ref, preds)}
            print(text, json.dumps(doc["schemes"][text]["fidelity"]), flush=True)
    except GuardError as e:
        sys.exit(f"quant_fidelity: {e}")
    write_result(a.out, doc, to_markdown(doc), chart)
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
