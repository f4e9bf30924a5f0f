"""Train guard-mini with the project's recipe; writes the small artefacts that guard.mini.build replays.

    guard data build --root ../shared/data --out /work/guard_data/v1
    python models/guard-mini/train.py --data /work/guard_data/v1 --work /work/guard_models/mini-run

Stages (each resumable: rerun the same command after an interruption; finished stages are skipped):
teacher (LoRA on SmolLM2 + adopted Llama 3 tokens) -> prune (blocks + MLP by measured importance on dev)
-> distil (LoRA + QAT in the recipe's quant_scheme, 8da4w by default, KL to the teacher + CE) -> refine (optional: continue the adapters on a mix that
oversamples named sources, e.g. hate speech and its benign look-alikes) -> check that guard.mini.build reproduces the student
-> calibrate (build the quantized .pte from the artefacts, fit p_unsafe's scale on dev records: guard.eval.calibrate).
Artefacts go to --artefacts (default: this folder). --until STAGE stops after that stage (e.g. --until teacher, to
measure a longer-trained teacher on dev before pruning from it).

Issue 18 (models/guard-mini/next/README.md): the recipe may give the teacher its own LoRA rank (teacher_lora_r) and
names held-out sources that the training file must not contain. Every checkpoint of the teacher, distil and refine
stages also writes a committable ARTEFACTS/{teacher,student,refined}_resume.safetensors (adapters + step) and its log,
from which a later session resumes when WORK is gone (another machine); finished teacher and prune stages are rebuilt
from their artefacts. A folder that holds a stage's artefacts skips that stage: train afresh into a new --artefacts.

    python models/guard-mini/train.py --data DATA --work /work/home-mini/teacher-run --artefacts models/guard-mini/next \
        --threads 1 --until teacher
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from guard.errors import GuardError
from guard.train.data import load_jsonl
from guard.train.distill import DistillConfig, distill
from guard.train.lora import AdapterSnapshot, LoraConfig, add_lora, load_lora, lora_state_dict, merge_lora, save_adapter
from guard.mini import ARTEFACTS, BASE_VOCAB, MiniRecipe, artefact_path, build_hf, load_base, missing_artefacts, policies, refine_records
from guard.format.prompt import render
from guard.fsutil import save_atomic
from guard.train.prune import PruneConfig, prune
from guard.train.loop import GuardCodec, TrainConfig, finetune


RESUME = "teacher_resume.safetensors"  # committable snapshot: the teacher's adapters (fp16) + its step


def training_records(recipe: MiniRecipe, data: Path) -> list[dict]:
    """The train split, refused if it holds a record of a held-out source (the recipe's choice, made before training)."""
    rows = load_jsonl(data / "train.jsonl")
    leak = sorted({r["source"] for r in rows} & set(recipe.heldout_sources))
    if leak:
        sys.exit(f"{data / 'train.jsonl'} contains held-out sources {leak}: rebuild the data with `guard data build`")
    return rows


def init_dir(recipe: MiniRecipe, art: Path) -> Path | None:
    """The earlier build this recipe continues (recipe.init_from, relative to the artefacts folder), or None."""
    if not recipe.init_from:
        return None
    d = (art / recipe.init_from).resolve()
    if missing := missing_artefacts(d):
        sys.exit(f"init_from {d}: not a finished guard-mini build (missing {', '.join(missing)})")
    return d


def teacher(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    """LoRA fine-tuning of the base. Resumes from WORK/teacher.ckpt/ckpt.pt (model + optimizer), else from the
    committable snapshot ART/teacher_resume.safetensors (adapters + step; AdamW moments restart from zero). When done,
    ART/teacher_adapter.safetensors replaces the snapshot, and WORK/teacher is rebuilt from it on another machine.
    With recipe.init_from: the earlier build's teacher, rebuilt from its artefacts; its adapter file is not copied
    (guard.mini.artefact_path finds it there). With recipe.teacher_soup: the named teachers mixed, nothing trained."""
    if (src := init_dir(recipe, art)) is not None:
        if recipe.refine_weight < 1 and not (work / "teacher").is_dir():  # only a distilling refine reads it
            build_hf(work / "teacher", src, stage="teacher")
        return print(f"teacher: taken from {src}")
    if recipe.teacher_soup or (art / "teacher_adapter.safetensors").is_file():  # mixed, not trained; or trained before
        if not (work / "teacher").is_dir():
            build_hf(work / "teacher", art, stage="teacher")
        return print("teacher: " + ("mixed from " + ", ".join(f"{w:g} x {f}" for f, w in recipe.teacher_soup)
                                     if recipe.teacher_soup else "done"))
    model, tok, rows = load_base()
    r, alpha = recipe.teacher_rank
    add_lora(model, LoraConfig(r=r, alpha=alpha, train_embeddings=tuple(rows)))
    # committed in fp16, half the bytes (rank 8: 4.9 MB, rank 64: 39 MB; teachers before next7 were rank-8 fp32 files)
    half = torch.float16
    cfg = TrainConfig(steps=recipe.teacher_steps, lr=recipe.teacher_lr, accum=recipe.accum, save_every=recipe.teacher_save_every,
                      bf16=recipe.teacher_bf16, seed=recipe.seed, decay_from=recipe.teacher_decay_from,
                      category_weight=recipe.category_weight)
    snap = AdapterSnapshot(art / RESUME, tuple(rows), half, art / "teacher_train_log.jsonl")
    summary = finetune(model, GuardCodec(tok), training_records(recipe, data), work / "teacher.ckpt", cfg,
                       policy=policies(recipe.policies), snapshot=snap)
    sd = lora_state_dict(model, rows)
    sd = {k: v.to(half).float() if v.is_floating_point() else v for k, v in sd.items()}  # what is merged is what is
    load_lora(model, sd)  # shipped: the adapters rounded to fp16
    save_adapter(sd, art / "teacher_adapter.safetensors", half)
    merge_lora(model)
    save_atomic(model, tok, work / "teacher", {"stage": "teacher", "summary": summary}, "train_record.json")
    (art / RESUME).unlink(missing_ok=True)  # the adapter above holds the same weights: keep the artefacts small
    print("teacher:", summary)


def prune_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    if (work / "pruned").is_dir():
        return print("prune: done")
    src = init_dir(recipe, art) or art
    if artefact_path(src, "prune_record.json").is_file():  # pruned before: the earlier build, or this run on another machine
        build_hf(work / "pruned", src, stage="pruned")
        return print(f"prune: rebuilt from {src}")
    dev = load_jsonl(data / "dev.jsonl")[: recipe.calib]
    calib = [render(r["messages"]) for r in dev]  # real guard prompts, template tokens included
    record = prune(work / "teacher", work / "pruned", PruneConfig(drop_blocks=recipe.drop_blocks, mlp_width=recipe.mlp_width,
                                                                  calib=calib, max_tokens=512))
    record["calib_source"] = f"first {len(dev)} records of {data / 'dev.jsonl'} rendered as Llama Guard 3 prompts"
    (art / "prune_record.json").write_text(json.dumps(record) + "\n")
    print("prune: removed blocks", record["removed_blocks"], "->", record["parameters_after"], "parameters")


def _distil(recipe: MiniRecipe, records: list[dict], work: Path, art: Path, name: str, train: TrainConfig,
            init_adapter: Path | None = None, alpha: float | None = None) -> dict:
    """LoRA + QAT distillation of the pruned student toward the teacher into WORK/NAME (checkpoints in NAME.ckpt, and
    the committable ART/NAME_resume.safetensors + NAME_train_log.jsonl: another machine resumes from them); its
    adapters become the artefacts' student_adapter.safetensors."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(work / "pruned"))
    rows = tuple(range(BASE_VOCAB, len(tok)))  # the tokens the teacher stage added
    alpha = recipe.alpha if alpha is None else alpha
    cfg = DistillConfig(train, alpha=alpha, qat_group_size=recipe.group_size, qat_scheme=recipe.quant_scheme,
                        lora=LoraConfig(r=recipe.lora_r, alpha=recipe.lora_alpha, train_embeddings=rows),
                        init_adapter=str(init_adapter) if init_adapter else None)
    rec = distill(work / "pruned", work / "teacher" if alpha < 1 else None, records, work / name, cfg, work=work / f"{name}.ckpt",
                  policy=policies(recipe.policies),
                  snapshot=AdapterSnapshot(art / f"{name}_resume.safetensors", rows, log=art / f"{name}_train_log.jsonl"))
    shutil.copy(work / name / "adapter.safetensors", art / "student_adapter.safetensors")
    return rec


def distill_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    if (work / "student").is_dir():
        return print("distil: done")
    if not recipe.has_student:  # post-training quantization: the pruned teacher is the model that is exported
        shutil.rmtree(work / "student.tmp", ignore_errors=True)  # a copy a killed run left half done
        shutil.copytree(work / "pruned", work / "student.tmp")
        (work / "student.tmp").rename(work / "student")
        return print("distil: none in this recipe (student_steps 0): the pruned teacher is quantized after training")
    if (src := init_dir(recipe, art)) is not None:  # the earlier build's adapters: the refine stage continues them
        (work / "student").mkdir(parents=True)
        shutil.copy(artefact_path(src, "student_adapter.safetensors"), work / "student" / "adapter.safetensors")
        return print(f"distil: taken from {src}" + ("" if recipe.refine_steps else
                                                   f" (no refine: the build is that student at scale {recipe.student_scale:g})"))
    train = TrainConfig(steps=recipe.student_steps, lr=recipe.student_lr, accum=recipe.accum, save_every=10, bf16=False,
                        seed=recipe.seed + 1, decay_from=recipe.student_decay_from,
                        category_weight=recipe.category_weight)
    rec = _distil(recipe, training_records(recipe, data), work, art, "student", train)
    print("distil:", rec["summary"])


def refine_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    """Continue the distilled adapters (same LoRA, QAT and teacher) on refine_records: the focus sources oversampled."""
    if not recipe.refine_steps:
        return print("refine: not in this recipe")
    if (work / "refined").is_dir():
        return print("refine: done")
    records = refine_records(training_records(recipe, data), recipe)
    train = TrainConfig(steps=recipe.refine_steps, lr=recipe.refine_lr, accum=recipe.accum, save_every=10, bf16=False,
                        seed=recipe.seed + 2, decay_from=0, category_weight=recipe.category_weight)
    rec = _distil(recipe, records, work, art, "refined", train, init_adapter=work / "student" / "adapter.safetensors",
                  alpha=recipe.refine_weight)
    print(f"refine: {len(records)} records,", rec["summary"])


def final_student(recipe: MiniRecipe, work: Path) -> Path:
    return work / ("refined" if recipe.refine_steps else "student")


def check_rebuild(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    """guard.mini.build_hf from the artefacts alone must give the trained student's weights exactly."""
    from safetensors.torch import load_file

    if recipe.init_from and not recipe.refine_steps:
        return print(f"check: nothing was trained in this build (it continues {recipe.init_from})")
    out = work / "rebuilt"
    if out.exists():
        shutil.rmtree(out)
    build_hf(out, art)
    a, b = load_file(str(final_student(recipe, work) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"rebuild check: {len(a)} tensors, max abs difference {worst:g}")
    if set(a) != set(b) or worst > 1e-6:
        sys.exit("rebuild check FAILED: the artefacts do not reproduce the trained student")


def calibrate_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    """Fit calibration.json on the deployed artefact: the quantized .pte that `guard mini build` makes, under the default
    S1-S13 policy, on dev records (the test split stays untouched)."""
    from guard.eval.calibrate import CALIBRATION_FILE, calibrate
    from guard.runtime.classifier import Guard
    from guard.mini import build, calibration_fits, calibration_source, is_current, sync_calibration
    from guard.runtime.load import load_runner

    out = work / "mini"
    if not is_current(out, art):
        build(out, art)
    stamp = json.loads((out / "build.json").read_text())
    if (art / CALIBRATION_FILE).is_file() and calibration_fits((art / CALIBRATION_FILE).read_text(), stamp):
        return print("calibrate: done")
    runner, tok = load_runner(pte=str(out / "model.pte"))
    dev = load_jsonl(data / "dev.jsonl")[recipe.calib:]  # the dev records pruning did not measure importance on
    cal, report = calibrate(Guard(runner, tok), dev, source=f"dev records {recipe.calib}.. of {data / 'dev.jsonl'}, default "
                            f"S1-S13 policy, {calibration_source(stamp)}")
    cal.save(art / CALIBRATION_FILE)
    sync_calibration(out, art)  # the build above was made before this fit: put the new calibration beside its .pte
    print(f"calibrate: a={cal.a:.4f} b={cal.b:+.4f}", json.dumps(report))


def snapshot_hf(recipe: MiniRecipe, art: Path, out: Path) -> None:
    """The teacher as it stands in ART/teacher_resume.safetensors (or its finished adapter), merged into a Hugging Face
    directory (for `guard eval` of a run in progress; eager: no export)."""
    from guard.mini import apply_adapter

    if recipe.teacher_soup:
        sys.exit("train.py: this recipe mixes its teacher (teacher_soup): there is no teacher in training to snapshot")
    path = art / RESUME if (art / RESUME).is_file() else art / "teacher_adapter.safetensors"
    step = AdapterSnapshot(path).step() if path.name == RESUME else recipe.teacher_steps
    model, tok, rows = load_base()
    apply_adapter(model, path, recipe, rows, teacher=True)
    save_atomic(model, tok, out, {"stage": "teacher snapshot", "step": step, "artefacts": str(art)}, "train_record.json")
    print(f"teacher snapshot at step {step} -> {out}")


STAGE_FNS = {"teacher": teacher, "prune": prune_stage, "distil": distill_stage, "refine": refine_stage, "check": check_rebuild,
             "calibrate": calibrate_stage}
STAGES = tuple(STAGE_FNS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--artefacts", type=Path, default=ARTEFACTS)
    ap.add_argument("--recipe", type=Path, help="recipe JSON (default: ARTEFACTS/recipe.json, else the built-in recipe)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--until", choices=STAGES, default=STAGES[-1], help="stop after this stage (default: run them all)")
    ap.add_argument("--snapshot-hf", type=Path, help="only write the in-progress teacher (ARTEFACTS/teacher_resume.safetensors) "
                    "as a Hugging Face directory here, and exit")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    a.work.mkdir(parents=True, exist_ok=True)
    a.artefacts.mkdir(parents=True, exist_ok=True)
    src = a.recipe or a.artefacts / "recipe.json"
    try:
        recipe = MiniRecipe.load(src) if src.is_file() else MiniRecipe()
    except (GuardError, ValueError, TypeError) as e:
        sys.exit(f"train.py: {src}: {e}")
    if a.snapshot_hf:
        return snapshot_hf(recipe, a.artefacts, a.snapshot_hf)
    recipe.save(a.artefacts / "recipe.json")
    t0 = time.time()
    try:
        for name in STAGES[: STAGES.index(a.until) + 1]:
            STAGE_FNS[name](recipe, a.data, a.work, a.artefacts)
    except GuardError as e:  # e.g. TrainingStopped by SIGTERM: one line, non-zero exit; rerun to resume
        sys.exit(f"train.py: {e}")
    print(f"stages up to {a.until} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
