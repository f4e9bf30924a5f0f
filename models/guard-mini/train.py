"""Train guard-mini with the project's recipe; writes the small artefacts that guard.mini.build replays.

    guard data build --root ../shared/data --out /work/guard_data/v1
    python models/guard-mini/train.py --data /work/guard_data/v1 --work /work/guard_models/mini-run

Stages (each resumable: rerun the same command after an interruption; finished stages are skipped):
teacher (LoRA on SmolLM2 + adopted Llama 3 tokens) -> prune (blocks + MLP by measured importance on dev)
-> distil (LoRA + QAT 8da4w, KL to the teacher + CE) -> refine (optional: continue the adapters on a mix that
oversamples named sources, e.g. hate speech and its benign look-alikes) -> check that guard.mini.build reproduces the student
-> calibrate (build the 8da4w .pte from the artefacts, fit p_unsafe's scale on dev records: guard.eval.calibrate).
Artefacts go to --artefacts (default: this folder). --until STAGE stops after that stage (e.g. --until teacher, to
measure a longer-trained teacher on dev before pruning from it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from guard.train.data import load_jsonl
from guard.train.distill import DistillConfig, distill
from guard.train.lora import LoraConfig, add_lora, lora_state_dict, merge_lora
from guard.mini import ARTEFACTS, BASE_VOCAB, MiniRecipe, build_hf, load_base, policies, refine_records
from guard.format.prompt import render
from guard.fsutil import save_atomic
from guard.train.prune import PruneConfig, prune
from guard.train.loop import GuardCodec, TrainConfig, finetune


def save_adapter(sd: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def teacher(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    if (art / "teacher_adapter.safetensors").is_file() and (work / "teacher").is_dir():
        return print("teacher: done")
    model, tok, rows = load_base()
    lora = LoraConfig(r=recipe.lora_r, alpha=recipe.lora_alpha, train_embeddings=tuple(rows))
    add_lora(model, lora)
    cfg = TrainConfig(steps=recipe.teacher_steps, lr=recipe.teacher_lr, accum=recipe.accum, save_every=10, bf16=False,
                      seed=recipe.seed, decay_from=recipe.teacher_decay_from)
    summary = finetune(model, GuardCodec(tok), load_jsonl(data / "train.jsonl"), work / "teacher.ckpt", cfg,
                       policy=policies(recipe.policies))
    save_adapter(lora_state_dict(model, rows), art / "teacher_adapter.safetensors")
    merge_lora(model)
    save_atomic(model, tok, work / "teacher", {"stage": "teacher", "summary": summary}, "train_record.json")
    print("teacher:", summary)


def prune_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    if (work / "pruned").is_dir():
        return print("prune: done")
    dev = load_jsonl(data / "dev.jsonl")[: recipe.calib]
    calib = [render(r["messages"]) for r in dev]  # real guard prompts, template tokens included
    record = prune(work / "teacher", work / "pruned", PruneConfig(drop_blocks=recipe.drop_blocks, mlp_width=recipe.mlp_width,
                                                                  calib=calib, max_tokens=512))
    record["calib_source"] = f"first {len(dev)} records of {data / 'dev.jsonl'} rendered as Llama Guard 3 prompts"
    (art / "prune_record.json").write_text(json.dumps(record) + "\n")
    print("prune: removed blocks", record["removed_blocks"], "->", record["parameters_after"], "parameters")


def _distil(recipe: MiniRecipe, records: list[dict], work: Path, art: Path, name: str, train: TrainConfig,
            init_adapter: Path | None = None) -> dict:
    """LoRA + QAT distillation of the pruned student toward the teacher into WORK/NAME (checkpoints in NAME.ckpt);
    its adapters become the artefacts' student_adapter.safetensors."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(work / "pruned"))
    rows = tuple(range(BASE_VOCAB, len(tok)))  # the tokens the teacher stage added
    cfg = DistillConfig(train, alpha=recipe.alpha, qat_group_size=recipe.group_size,
                        lora=LoraConfig(r=recipe.lora_r, alpha=recipe.lora_alpha, train_embeddings=rows),
                        init_adapter=str(init_adapter) if init_adapter else None)
    rec = distill(work / "pruned", work / "teacher", records, work / name, cfg, work=work / f"{name}.ckpt",
                  policy=policies(recipe.policies))
    shutil.copy(work / name / "adapter.safetensors", art / "student_adapter.safetensors")
    return rec


def distill_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    if (work / "student").is_dir():
        return print("distil: done")
    train = TrainConfig(steps=recipe.student_steps, lr=recipe.student_lr, accum=recipe.accum, save_every=10, bf16=False,
                        seed=recipe.seed + 1, decay_from=recipe.student_decay_from)
    rec = _distil(recipe, load_jsonl(data / "train.jsonl"), work, art, "student", train)
    print("distil:", rec["summary"])


def refine_stage(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    """Continue the distilled adapters (same LoRA, QAT and teacher) on refine_records: the focus sources oversampled."""
    if not recipe.refine_steps:
        return print("refine: not in this recipe")
    if (work / "refined").is_dir():
        return print("refine: done")
    records = refine_records(load_jsonl(data / "train.jsonl"), recipe)
    train = TrainConfig(steps=recipe.refine_steps, lr=recipe.refine_lr, accum=recipe.accum, save_every=10, bf16=False,
                        seed=recipe.seed + 2, decay_from=0)
    rec = _distil(recipe, records, work, art, "refined", train, init_adapter=work / "student" / "adapter.safetensors")
    print(f"refine: {len(records)} records,", rec["summary"])


def final_student(recipe: MiniRecipe, work: Path) -> Path:
    return work / ("refined" if recipe.refine_steps else "student")


def check_rebuild(recipe: MiniRecipe, data: Path, work: Path, art: Path) -> None:
    """guard.mini.build_hf from the artefacts alone must give the trained student's weights exactly."""
    from safetensors.torch import load_file

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
    """Fit calibration.json on the deployed artefact: the 8da4w .pte that `guard mini build` makes, under the default
    S1-S13 policy, on dev records (the test split stays untouched)."""
    from guard.eval.calibrate import CALIBRATION_FILE, calibrate
    from guard.runtime.classifier import Guard
    from guard.mini import build, is_current, sync_calibration
    from guard.runtime.load import load_runner

    out = work / "mini"
    if not is_current(out, art):
        build(out, art)
    digest = json.loads((out / "build.json").read_text())["artefacts_sha256"]
    if (art / CALIBRATION_FILE).is_file() and digest in (art / CALIBRATION_FILE).read_text():
        return print("calibrate: done")
    runner, tok = load_runner(pte=str(out / "model.pte"))
    dev = load_jsonl(data / "dev.jsonl")[recipe.calib:]  # the dev records pruning did not measure importance on
    cal, report = calibrate(Guard(runner, tok), dev, source=f"dev records {recipe.calib}.. of {data / 'dev.jsonl'}, default "
                            f"S1-S13 policy, guard-mini 8da4w .pte built from artefacts {digest}")
    cal.save(art / CALIBRATION_FILE)
    sync_calibration(out, art)  # the build above was made before this fit: put the new calibration beside its .pte
    print(f"calibrate: a={cal.a:.4f} b={cal.b:+.4f}", json.dumps(report))


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
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    a.work.mkdir(parents=True, exist_ok=True)
    a.artefacts.mkdir(parents=True, exist_ok=True)
    src = a.recipe or a.artefacts / "recipe.json"
    recipe = MiniRecipe.load(src) if src.is_file() else MiniRecipe()
    recipe.save(a.artefacts / "recipe.json")
    t0 = time.time()
    for name in STAGES[: STAGES.index(a.until) + 1]:
        STAGE_FNS[name](recipe, a.data, a.work, a.artefacts)
    print(f"stages up to {a.until} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
