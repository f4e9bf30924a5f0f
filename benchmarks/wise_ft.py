"""Weight-space ensembles of a guard-mini student with its teacher (WiSE-FT), scored on dev records.

    python benchmarks/wise_ft.py --teacher WORK/teacher --artefacts models/guard-mini/next3 \\
        --data DATA/dev.jsonl --limit 600 --scales 0 0.25 0.5 0.75 1 --scheme 8da8w \\
        --out benchmarks/results/wise_ft_next3_dev

For each scale s the teacher (a Hugging Face directory, e.g. the ``teacher`` stage a build writes) gets the student's
LoRA adapter folded in at ``W + s * delta`` (``guard.train.lora.merge_lora(model, scale=s)``; trained embedding rows
likewise), then the scheme's fake quantizers (``qat_prepare`` + ``bake_fake_quant``, the function the exported
``.pte`` computes up to its 4-bit embedding). s = 0 is the teacher, 1 the student as trained. Every scale is scored
eager and uncalibrated on the same records: F1 at p 0.5, AUPRC, recall at FPR 0.10, hazard codes exact. Fine-tuned
models interpolated toward the model they started from often keep their in-distribution accuracy while gaining on
shifted data (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022); this script measures the
in-distribution side on dev, so a scale can be chosen without the held-out sources (recipe field ``student_scale``).

``--soup A B`` scores mixes of two builds' teachers instead (recipe field ``teacher_soup``, "model soups", Wortsman et
al., ICML 2022): at scale s the teacher is ``(1 - s) x A's + s x B's`` (``guard.mini.build_hf(..., stage="teacher")``
on a recipe naming both), with the same fake quantizers:

    python benchmarks/wise_ft.py --soup models/guard-mini/v4 models/guard-mini/next5 --data DATA/dev.jsonl \
        --limit 400 --scales 0 0.25 0.5 0.75 1 --scheme 8da8w --out benchmarks/results/teacher_soup_v4_next5_dev

Writes STEM.json, STEM.md and STEM.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import guard
from guard.bench.schema import command, environment, write_result
from guard.errors import GuardError
from guard.eval.evaluate import metrics, predict
from guard.train.data import load_jsonl


def load(teacher: str, artefacts: Path, scale: float):
    from dataclasses import replace

    from safetensors import safe_open

    from guard.mini import STUDENT, MiniRecipe, apply_adapter, artefact_path

    recipe = replace(MiniRecipe.load(artefacts / "recipe.json"), student_scale=scale)
    adapter = artefact_path(artefacts, STUDENT)  # the build's own, or the one a build that trains nothing inherits
    with safe_open(str(adapter), "pt") as f:
        rows = f.get_tensor("embedding_rows.index").tolist() if "embedding_rows.index" in f.keys() else []
    g = guard.load(model=teacher, calibrated=False)
    apply_adapter(g.runner.model, adapter, recipe, rows)  # what guard.mini.build_hf does at recipe.student_scale
    return g


def load_soup(a: Path, b: Path, scale: float, tmp: Path):
    """The teacher mixed from A's and B's teachers at (1 - scale, scale), as a build with that teacher_soup makes it."""
    from dataclasses import replace

    from guard.mini import MiniRecipe, build_hf

    art = tmp / f"soup-{scale:g}"
    art.mkdir(parents=True, exist_ok=True)
    recipe = replace(MiniRecipe.load(b / "recipe.json"), teacher_soup=((str(a.resolve()), 1 - scale), (str(b.resolve()), scale)))
    recipe.save(art / "recipe.json")
    return guard.load(model=str(build_hf(art / "hf", art, stage="teacher")), calibrated=False)


def fake_quantize(g, scheme: str, group: int):
    """The scheme's fake quantizers on the guard's eager model (the function the exported .pte computes, up to its
    4-bit embedding); fp32 leaves it as it is."""
    from guard.train.distill import bake_fake_quant, qat_prepare

    if scheme != "fp32":
        bake_fake_quant(qat_prepare(g.runner.model, group, scheme).eval())
    return g


def to_markdown(doc: dict) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    title = (f"Teacher soup: (1 - s) x {doc['soup'][0]}'s teacher + s x {doc['soup'][1]}'s" if doc.get("soup") else
             f"WiSE-FT: {doc['teacher']} + s x the adapter of {doc['artefacts']}")
    lines = [f"# {title}", "",
             f"{doc['n']} records of {doc['data']}, eager, uncalibrated, {doc['scheme']} fake quantizers.", "",
             "| scale s | F1 at p 0.5 | precision | recall | AUPRC | recall at FPR 0.10 | hazard exact |", "|---|---|---|---|---|---|---|"]
    for s, m in doc["scales"].items():
        lines.append(f"| {s} | {f(m['f1'])} | {f(m['precision'])} | {f(m['recall'])} | {f(m['auprc'])} | "
                     f"{f(m['recall_at_fpr10'])} | {f(m['hazard_exact'])} |")
    lines += ["", f"Environment: {json.dumps(doc['environment'])}", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(s) for s in doc["scales"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for key, label in (("auprc", "AUPRC"), ("recall_at_fpr10", "recall at FPR 0.10"), ("f1", "F1 at p 0.5"),
                       ("hazard_exact", "hazard exact")):
        ax.plot(xs, [m[key] or 0 for m in doc["scales"].values()], marker="o", label=label)
    ax.set_xlabel("scale s (0 = first teacher, 1 = second)" if doc.get("soup") else "scale s (0 = teacher, 1 = student)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    name = " + ".join(Path(f).name for f in doc["soup"]) if doc.get("soup") else Path(doc["artefacts"]).name
    ax.set_title(f"dev, {doc['scheme']}: {name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="the teacher as a Hugging Face directory")
    ap.add_argument("--artefacts", type=Path, help="a guard-mini build folder (recipe.json, student_adapter.safetensors)")
    ap.add_argument("--soup", nargs=2, type=Path, metavar=("A", "B"),
                    help="instead of --teacher/--artefacts: two guard-mini build folders whose teachers are mixed")
    ap.add_argument("--data", required=True, help="JSON lines of labelled records (a dev split)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--scales", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--scheme", default="8da8w", help="fp32, 8da8w or 8da4w (group from the recipe)")
    ap.add_argument("--out", required=True, type=Path, help="output stem")
    a = ap.parse_args()
    try:
        from guard.mini import MiniRecipe

        if a.scheme not in ("fp32", "8da8w", "8da4w"):
            raise GuardError(f"scheme {a.scheme!r}: use fp32, 8da8w or 8da4w")
        if any(not 0 <= s <= 1 for s in a.scales):
            raise GuardError(f"scales must lie in 0..1, got {a.scales}")
        if bool(a.soup) == bool(a.teacher and a.artefacts):
            raise GuardError("give --teacher and --artefacts, or --soup A B")
        group = MiniRecipe.load((a.soup[1] if a.soup else a.artefacts) / "recipe.json").group_size
        records = load_jsonl(Path(a.data))[: a.limit]
        if not records:
            raise GuardError(f"{a.data}: no records")
        doc = {"teacher": a.teacher, "artefacts": a.artefacts and str(a.artefacts), "soup": a.soup and [str(f) for f in a.soup],
               "data": a.data, "n": len(records), "scheme": a.scheme, "scales": {}, "environment": environment(),
               "command": command()}
        with tempfile.TemporaryDirectory(prefix="soup-") as tmp:  # a soup's recipe and Hugging Face directory
            for s in a.scales:
                g = fake_quantize(load_soup(*a.soup, s, Path(tmp)) if a.soup else load(a.teacher, a.artefacts, s),
                                  a.scheme, group)
                preds = predict(g, records, progress=sys.stderr.isatty())
                shutil.rmtree(Path(tmp) / f"soup-{s:g}", ignore_errors=True)
                doc["scales"][f"{s:g}"] = {k: v for k, v in metrics(records, preds).items() if k != "per_category"}
                print(f"{s:g}", json.dumps(doc["scales"][f"{s:g}"]), flush=True)
    except (GuardError, OSError) as e:
        sys.exit(f"wise_ft: {e}")
    write_result(a.out, doc, to_markdown(doc), chart)
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
