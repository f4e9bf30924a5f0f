import json

import pytest
import torch

from guard.errors import GuardError
from guard.train.prune import PruneConfig, prune, prune_model

CALIB = ["How do I bake bread at home?", "Write a poem about the sea and the wind.", "What is 12 times 7?"]


@pytest.fixture(scope="module")
def four_blocks(tmp_path_factory):
    from guard.testing import make_checkpoint, tiny

    return make_checkpoint(tmp_path_factory.mktemp("p") / "model", tiny(n_layers=4))


def test_prune_by_importance_writes_a_loadable_dir(four_blocks, tmp_path):
    from transformers import AutoModelForCausalLM

    rec = prune(four_blocks, tmp_path / "out", PruneConfig(drop_blocks=1, mlp_width=96, calib=CALIB))
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert m.config.num_hidden_layers == 3 and m.config.intermediate_size == 96
    assert len(m.model.layers) == 3 and m.model.layers[0].mlp.down_proj.in_features == 96
    saved = json.loads((tmp_path / "out" / "prune_record.json").read_text())
    assert saved["removed_blocks"] == rec["removed_blocks"] and len(rec["removed_blocks"]) == 1
    assert rec["removed_blocks"][0] == min(range(4), key=lambda i: rec["block_scores"][i])
    # the pruned directory runs in the guard's eager runtime
    from guard.runtime.classifier import Guard
    from guard.runtime.load import load_runner

    runner, tok = load_runner(model=str(tmp_path / "out"))
    assert Guard(runner, tok).classify("hello").decision in ("safe", "unsafe", "indeterminate")


def test_explicit_blocks_equal_manual_removal(four_blocks):
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(four_blocks).eval()
    b = AutoModelForCausalLM.from_pretrained(four_blocks).eval()
    prune_model(a, PruneConfig(blocks=[1, 2]))
    b.model.layers = torch.nn.ModuleList([b.model.layers[0], b.model.layers[3]])
    b.model.layers[1].self_attn.layer_idx = 1
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)


def test_mlp_pruning_keeps_the_most_active_neurons(four_blocks):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(four_blocks).eval()
    full = m.model.layers[0].mlp.up_proj.weight.clone()
    prune_model(m, PruneConfig(mlp_width=128, calib=CALIB), _Tok())
    assert torch.equal(m.model.layers[0].mlp.up_proj.weight, full), "full width must be a no-op"


class _Tok:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 1000 for c in text]


@pytest.mark.parametrize("cfg,match", [
    (PruneConfig(blocks=[7]), "out of range"),
    (PruneConfig(drop_blocks=4, calib=CALIB), "out of range"),
    (PruneConfig(mlp_width=10_000, calib=CALIB), "out of range"),
    (PruneConfig(drop_blocks=1), "calibration"),
])
def test_bad_requests_leave_no_output(four_blocks, tmp_path, cfg, match):
    with pytest.raises(GuardError, match=match):
        prune(four_blocks, tmp_path / "out", cfg)
    assert list(tmp_path.iterdir()) == []


def test_cli_prune(four_blocks, tmp_path):
    from guard.cli import main

    calib = tmp_path / "c.txt"
    calib.write_text("\n".join(CALIB))
    assert main(["prune", str(four_blocks), "--out", str(tmp_path / "o"), "--blocks", "0", "--mlp-width", "64", "--calib", str(calib)]) == 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["num_hidden_layers"] == 3
    assert main(["prune", str(four_blocks), "--out", str(tmp_path / "o2"), "--blocks", "9"]) == 2
    assert not (tmp_path / "o2").exists()
