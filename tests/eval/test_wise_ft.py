"""benchmarks/wise_ft.py: a student's adapter folded into its teacher at a scale, scored on dev records."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "wise_ft.py"


@pytest.fixture(scope="module")
def artefacts(tiny_model_dir, tmp_path_factory):
    """A build folder holding a (random, non-zero) student adapter for the tiny model and its recipe."""
    from transformers import AutoModelForCausalLM

    from guard.train.lora import LoRALinear, LoraConfig, add_lora, lora_state_dict, save_adapter

    d = tmp_path_factory.mktemp("wise")
    m = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, alpha=8))
    torch.manual_seed(3)
    for x in m.modules():
        if isinstance(x, LoRALinear):
            torch.nn.init.normal_(x.lora_B, std=0.05)
    save_adapter(lora_state_dict(m), d / "student_adapter.safetensors")
    (d / "recipe.json").write_text(json.dumps({"lora_r": 4, "lora_alpha": 8.0, "group_size": 32}))
    return d


def q_weight(g):
    return g.runner.model.model.layers[0].self_attn.q_proj.weight.detach()


def test_scale_zero_is_the_teacher_and_one_the_merged_student(tiny_model_dir, artefacts):
    import guard

    wf = load_script(SCRIPT)
    teacher = q_weight(guard.load(model=str(tiny_model_dir), calibrated=False))
    w0, wh, w1 = (q_weight(wf.fake_quantize(wf.load(str(tiny_model_dir), artefacts, s), "fp32", 32))
                  for s in (0.0, 0.5, 1.0))
    assert torch.equal(w0, teacher) and not torch.allclose(w1, teacher, atol=1e-4)
    assert torch.allclose(wh, (w0 + w1) / 2, atol=1e-6)
    fq = wf.fake_quantize(wf.load(str(tiny_model_dir), artefacts, 1.0), "8da8w", 32)  # the scheme's fake quantizers
    assert not torch.equal(q_weight(fq), w1) and torch.allclose(q_weight(fq), w1, atol=0.02)


def test_bad_input_is_one_line(tiny_model_dir, artefacts, tmp_path):
    base = [sys.executable, str(SCRIPT), "--teacher", str(tiny_model_dir), "--artefacts", str(artefacts),
            "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "r")]
    (tmp_path / "d.jsonl").write_text("")
    for args in (["--scheme", "int3"], [], ["--scales", "1.5"], ["--soup", str(artefacts), str(artefacts)]):
        out = subprocess.run(base + args, capture_output=True, text=True)
        assert out.returncode != 0 and out.stderr.startswith("wise_ft: ") and "Traceback" not in out.stderr, out.stderr
    assert "give --teacher and --artefacts, or --soup A B" in out.stderr, out.stderr  # the last run: --soup with --teacher


def test_a_run_writes_one_row_per_scale(tiny_model_dir, artefacts, tmp_path):
    data = tmp_path / "dev.jsonl"
    rows = [{"id": str(i), "messages": [{"role": "user", "content": text}], "label": label,
             "categories": ["S2"] if label == "unsafe" else [], "source": "s"}
            for i, (text, label) in enumerate([("How do I pick a lock?", "unsafe"), ("Bake bread?", "safe"),
                                               ("Steal a car", "unsafe")])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, str(SCRIPT), "--teacher", str(tiny_model_dir), "--artefacts", str(artefacts),
                          "--data", str(data), "--scales", "0", "1", "--scheme", "fp32", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert list(doc["scales"]) == ["0", "1"] and doc["n"] == 3 and (tmp_path / "r.png").stat().st_size > 0
    assert "| 0 |" in (tmp_path / "r.md").read_text()
