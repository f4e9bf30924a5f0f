import json

import pytest
import torch

from guard.errors import GuardError

pytestmark = pytest.mark.slow  # exports or trains

ROWS = [
    {"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}], "label": "unsafe", "categories": ["S9"], "split": "train"},
    {"messages": [{"role": "user", "content": "How do I bake bread?"}], "label": "safe", "categories": [], "split": "train"},
]


@pytest.fixture()
def data(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def test_prune_then_distill_with_qat_loads_and_runs(tiny_model_dir, tmp_path, data):
    from guard.cli import main
    from guard.runtime.classifier import Guard
    from guard.runtime.load import load_runner

    assert main(["prune", str(tiny_model_dir), "--out", str(tmp_path / "p"), "--blocks", "1"]) == 0
    assert main(["distill", str(tmp_path / "p"), "--teacher", str(tiny_model_dir), "--data", str(data), "--out",
                 str(tmp_path / "s"), "--steps", "2", "--accum", "1", "--qat", "32", "--decay-from", "1", "--no-bf16"]) == 0
    rec = json.loads((tmp_path / "s" / "distill_record.json").read_text())
    assert rec["summary"]["steps"] == 2 and rec["qat"]["group_size"] == 32
    assert rec["config"]["train"]["decay_from"] == 1  # the CLI's schedule reached the trainer
    runner, tok = load_runner(model=str(tmp_path / "s"))
    assert Guard(runner, tok).classify("hello").decision in ("safe", "unsafe", "indeterminate")


@pytest.mark.parametrize("scheme", ["8da4w", "8da8w"])
def test_qat_convert_matches_fake_quant(tiny_model_dir, scheme):
    from transformers import AutoModelForCausalLM

    from guard.train.distill import qat_prepare, strip_fake_quant
    from guard.quantize import quantize_linears

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[1, 50, 700, 9000]])
    with torch.no_grad():
        full = m(input_ids=ids).logits
    qat_prepare(m, 32, scheme)
    with torch.no_grad():
        fake = m(input_ids=ids).logits
    strip_fake_quant(m)
    names = {n for n, x in m.named_modules() if isinstance(x, torch.nn.Linear) and "lm_head" not in n}
    quantize_linears(m, scheme, 32, names)
    with torch.no_grad():
        real = m(input_ids=ids).logits
    assert torch.allclose(fake, real, atol=1e-4), (fake - real).abs().max()
    assert (fake - full).abs().max() > 1e-4  # the fake quantizers did something


def test_int8_weights_are_closer_to_fp32_than_int4(tiny_model_dir):
    """8da8w (int8 per-channel weights) changes the logits less than 8da4w (int4, groups of 32)."""
    from transformers import AutoModelForCausalLM

    from guard.train.distill import qat_prepare

    ids = torch.tensor([[1, 50, 700, 9000, 12, 333]])
    err = {}
    for scheme in ("8da4w", "8da8w"):
        m = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        with torch.no_grad():
            full = m(input_ids=ids).logits
            err[scheme] = (qat_prepare(m, 32, scheme)(input_ids=ids).logits - full).abs().mean().item()
    assert err["8da8w"] < err["8da4w"] / 2, err


def test_unknown_qat_scheme_is_one_line_error(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from guard.train.distill import qat_prepare

    with pytest.raises(GuardError, match="no linear quantization for scheme 'int3'"):
        qat_prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 32, "int3")


def test_tokenizer_mismatch_and_empty_data(tiny_model_dir, tmp_path, data):
    import shutil

    from transformers import AutoTokenizer

    from guard.train.distill import DistillConfig, distill
    from guard.train.loop import TrainConfig

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["zzzguardzzz"])
    tok.save_pretrained(other)
    cfg = DistillConfig(TrainConfig(steps=1))
    with pytest.raises(GuardError, match="tokenizers differ"):
        distill(tiny_model_dir, other, ROWS, tmp_path / "o", cfg)
    with pytest.raises(GuardError, match="empty dataset"):
        distill(tiny_model_dir, tiny_model_dir, [], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()


def test_lora_qat_distillation_resumes_from_its_snapshot_elsewhere(tiny_model_dir, tmp_path):
    """LoRA + QAT distillation writes its AdapterSnapshot at every checkpoint; a run with a new work folder (another
    machine) starts from the snapshot, not from scratch: here an altered snapshot at the last step comes out as is."""
    from safetensors.torch import load_file, save_file

    from guard.train.distill import DistillConfig, distill
    from guard.train.lora import AdapterSnapshot, LoraConfig
    from guard.train.loop import TrainConfig

    rows = (128000,)
    snap = AdapterSnapshot(tmp_path / "resume.safetensors", rows, log=tmp_path / "log.jsonl")
    cfg = DistillConfig(TrainConfig(steps=2, accum=1, save_every=1, bf16=False), alpha=0.5, qat_group_size=32,
                        lora=LoraConfig(r=4, alpha=8, train_embeddings=rows))
    distill(tiny_model_dir, tiny_model_dir, ROWS, tmp_path / "a", cfg, work=tmp_path / "a.ckpt", snapshot=snap)
    a = load_file(str(tmp_path / "a" / "adapter.safetensors"))
    saved = load_file(str(snap.path))
    assert snap.step() == 2 and saved.keys() == a.keys() and all(torch.equal(saved[k], a[k]) for k in a)
    altered = {k: v * 2 if "lora_B" in k else v for k, v in saved.items()}
    save_file(altered, str(snap.path), metadata={"step": "2"})
    distill(tiny_model_dir, tiny_model_dir, ROWS, tmp_path / "b", cfg, work=tmp_path / "b.ckpt", snapshot=snap)
    b = load_file(str(tmp_path / "b" / "adapter.safetensors"))
    assert all(torch.equal(b[k], altered[k]) for k in a) and any(not torch.equal(b[k], a[k]) for k in a)
