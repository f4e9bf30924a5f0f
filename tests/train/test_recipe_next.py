"""The issue-18 recipe: its own teacher LoRA rank, held-out sources refused in training data, finetune's save hook."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from guard.mini import ARTEFACTS, MiniRecipe

NEXT = ARTEFACTS / "next" / "recipe.json"


def _train_module():
    spec = importlib.util.spec_from_file_location("mini_train", ARTEFACTS / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_next_recipe_names_heldout_sources_and_teacher_rank():
    r = MiniRecipe.load(NEXT)
    assert set(r.heldout_sources) == {"harmfulq", "trustllm_misuse", "coconot_contrast"}
    assert r.teacher_rank == (64, 128.0) and (r.lora_r, r.lora_alpha) == (8, 16.0)
    shipped = MiniRecipe.load(ARTEFACTS / "recipe.json")
    assert shipped.teacher_rank == (shipped.lora_r, shipped.lora_alpha) and shipped.heldout_sources == r.heldout_sources


def test_training_refuses_heldout_sources(tmp_path):
    train = _train_module()
    rec = {"id": "a", "messages": [{"role": "user", "content": "hi"}], "label": "safe", "categories": [],
           "source": "harmfulq", "split": "train", "adjacent": False}
    (tmp_path / "train.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(SystemExit, match="held-out sources"):
        train.training_records(MiniRecipe.load(NEXT), tmp_path)
    rec["source"] = "advbench"
    (tmp_path / "train.jsonl").write_text(json.dumps(rec) + "\n")
    assert len(train.training_records(MiniRecipe.load(NEXT), tmp_path)) == 1


def test_finetune_calls_the_save_hook_and_logs_seconds_per_step(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guard.train.loop import GuardCodec, TrainConfig, finetune

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    recs = [{"messages": [{"role": "user", "content": f"hello {i}"}], "label": "safe" if i % 2 else "unsafe",
             "categories": [] if i % 2 else ["S1"]} for i in range(4)]
    seen = []
    finetune(model, GuardCodec(tok), recs, tmp_path / "ck", TrainConfig(steps=2, accum=1, save_every=1, bf16=False),
             progress=False, on_save=lambda m, step: seen.append(step))
    assert seen == [1, 2]
    log = [json.loads(x) for x in (tmp_path / "ck" / "log.jsonl").read_text().splitlines()]
    assert all(x["s_per_step"] > 0 for x in log)
    assert torch.load(tmp_path / "ck" / "ckpt.pt", weights_only=False)["step"] == 2
