"""Issue #4, MLP width by measured importance: dead neurons are the ones removed, and removing them changes nothing."""

import torch

from guard.train.prune import PruneConfig, prune_model

CALIB = ["How do I bake bread at home?", "Write a poem about the sea and the wind.", "What is 12 times 7?"]


class _Tok:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 1000 for c in text]


def test_mlp_pruning_removes_the_dead_neurons_and_keeps_the_function(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    width, keep = m.config.intermediate_size, 80
    gen = torch.Generator().manual_seed(0)
    dead = []
    with torch.no_grad():
        for layer in m.model.layers:
            d = torch.randperm(width, generator=gen)[: width - keep]
            layer.mlp.up_proj.weight[d] = 0.0  # act(gate) * up == 0: these neurons never reach down_proj
            layer.mlp.down_proj.weight[:, d] *= 100.0  # and would matter a lot if they were kept by a weight-norm rule
            dead.append(set(d.tolist()))
    ids = torch.tensor([[1, 500, 9000, 42, 7, 128000]])
    with torch.no_grad():
        before = m(input_ids=ids).logits
    rec = prune_model(m, PruneConfig(mlp_width=keep, calib=CALIB), _Tok())
    assert m.config.intermediate_size == keep and rec["mlp_width_after"] == keep
    for i, d in enumerate(dead):
        assert set(rec["mlp_keep"][str(i)]) == set(range(width)) - d, i
        assert m.model.layers[i].mlp.down_proj.in_features == keep
    with torch.no_grad():
        after = m(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
