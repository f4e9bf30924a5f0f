"""LoRA adapters, adopted Llama 3 tokens for ChatML models, and replayable prune records (guard-mini's recipe)."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guard.train.lora import LoraConfig, LoRALinear, add_lora, load_lora, lora_state_dict, merge_lora, shared_weights

IDS = torch.tensor([[1, 50, 700, 9000, 31]])


def _tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def _randomise(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.05)


def test_merge_equals_adapter_forward_and_only_adapters_train(tiny_model_dir):
    m = add_lora(_tiny(tiny_model_dir), LoraConfig(r=4, alpha=8))
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    _randomise(m)
    with torch.no_grad():
        a = m(input_ids=IDS).logits
    merge_lora(m)
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    with torch.no_grad():
        b = m(input_ids=IDS).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_qat_lora_fake_quant_matches_converted_8da4w(tiny_model_dir):
    """QAT sees fake_quant(W + BA): merging and converting with the exporter's 8da4w gives the same numerics."""
    from guard.train.distill import qat_prepare, strip_fake_quant
    from guard.quantize import quantize_linears

    m = qat_prepare(_tiny(tiny_model_dir), 32)
    add_lora(m, LoraConfig(r=4, alpha=8))
    _randomise(m)
    with torch.no_grad():
        fake = m(input_ids=IDS).logits
    strip_fake_quant(merge_lora(m))
    quantize_linears(m, "8da4w", 32, {n for n, x in m.named_modules() if isinstance(x, torch.nn.Linear) and "lm_head" not in n})
    with torch.no_grad():
        real = m(input_ids=IDS).logits
    assert torch.allclose(fake, real, atol=1e-4), (fake - real).abs().max()


def _qat_grads(tiny_model_dir, shared: bool):
    from guard.train.distill import qat_prepare

    m = qat_prepare(_tiny(tiny_model_dir), 32)
    torch.manual_seed(0)  # the same A init in both runs
    add_lora(m, LoraConfig(r=4, alpha=8))
    _randomise(m)
    calls = []
    for x in m.modules():
        if isinstance(x, LoRALinear):
            x.base.weight_fake_quantizer.register_forward_hook(lambda *a: calls.append(1))
    batches = [IDS, IDS[:, :3], torch.tensor([[7, 8, 9, 10, 11, 12]])]
    if shared:
        with shared_weights(m):
            for ids in batches:
                m(input_ids=ids).logits.square().mean().backward()
    else:
        for ids in batches:
            m(input_ids=ids).logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    return grads, len(calls), sum(isinstance(x, LoRALinear) for x in m.modules())


def test_shared_weights_give_the_per_example_gradients_with_one_fake_quant_per_step(tiny_model_dir):
    """QAT's weight fake quantization runs once per layer per optimizer step under shared_weights, not once per
    forward, and A and B get the same accumulated gradients as without it."""
    ref, n_ref, layers = _qat_grads(tiny_model_dir, shared=False)
    got, n_got, _ = _qat_grads(tiny_model_dir, shared=True)
    assert n_ref == 3 * layers and n_got == layers
    assert ref.keys() == got.keys() and any(g.abs().sum() > 0 for g in ref.values())
    for n in ref:
        assert torch.allclose(ref[n], got[n], rtol=1e-4, atol=1e-6), (n, (ref[n] - got[n]).abs().max())


def test_shared_weights_is_a_no_op_without_qat(tiny_model_dir):
    m = add_lora(_tiny(tiny_model_dir), LoraConfig(r=4, alpha=8))
    _randomise(m)
    with shared_weights(m):
        assert all(x.shared is None for x in m.modules() if isinstance(x, LoRALinear))
        m(input_ids=IDS).logits.sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "lora_" in n)


def test_adapter_roundtrip_and_trainable_embedding_rows(tiny_model_dir):
    m = add_lora(_tiny(tiny_model_dir), LoraConfig(r=4, train_embeddings=(5, 9)))
    before = m.get_input_embeddings().weight.detach().clone()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    m(input_ids=torch.tensor([[5, 9, 11, 12]])).logits.sum().backward()
    opt.step()
    after = m.get_input_embeddings().weight.detach()
    changed = (after != before).any(-1).nonzero().flatten().tolist()
    assert changed == [5, 9]
    sd = lora_state_dict(m, [5, 9])
    fresh = add_lora(_tiny(tiny_model_dir), LoraConfig(r=4))
    load_lora(fresh, sd)
    with torch.no_grad():
        assert torch.equal(merge_lora(m)(input_ids=IDS).logits, merge_lora(fresh)(input_ids=IDS).logits)


def test_merge_scale_interpolates_weights_and_trained_rows(tiny_model_dir):
    """merge_lora(model, scale): 0 is the model before the adapter, 1 the adapter as trained, 0.5 the midpoint of
    every weight and trained embedding row (WiSE-FT); a scale outside 0..1 is refused."""
    from guard.errors import GuardError

    base = _tiny(tiny_model_dir)
    with torch.no_grad():
        before = base(input_ids=IDS).logits
    w0, e0 = base.model.layers[0].self_attn.q_proj.weight.detach().clone(), base.get_input_embeddings().weight.detach().clone()

    trained = {}

    def adapted(scale):
        m = add_lora(_tiny(tiny_model_dir), LoraConfig(r=4, alpha=8, train_embeddings=(5, 9)))
        _randomise(m)
        with torch.no_grad():
            m.get_input_embeddings().weight_rows.add_(torch.rand(2, 1) * 0.3 + 0.5)
            trained[scale] = m.get_input_embeddings().weight_rows.detach().clone()
        return merge_lora(m, scale)

    with torch.no_grad():
        assert torch.equal(adapted(0.0)(input_ids=IDS).logits, before)
        full, half = adapted(1.0), adapted(0.5)
        assert not torch.allclose(full(input_ids=IDS).logits, before, atol=1e-3)
    w1, wh = full.model.layers[0].self_attn.q_proj.weight, half.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w1, w0) and torch.allclose(wh, (w0 + w1) / 2, atol=1e-6)
    e1, eh = full.get_input_embeddings().weight, half.get_input_embeddings().weight
    assert torch.equal(e1[[5, 9]], trained[1.0])  # scale 1: exactly the trained rows, bit for bit
    assert torch.allclose(eh[[5, 9]], (e0[[5, 9]] + trained[0.5]) / 2, atol=1e-6)
    assert torch.equal(eh[:5], e0[:5])
    with pytest.raises(GuardError, match="outside 0..1"):
        adapted(1.5)


def test_bad_rank_and_no_targets(tiny_model_dir):
    from guard.errors import GuardError

    with pytest.raises(GuardError, match="rank"):
        add_lora(_tiny(tiny_model_dir), LoraConfig(r=0))
    with pytest.raises(GuardError, match="no linear layer"):
        add_lora(_tiny(tiny_model_dir), LoraConfig(targets=("nope",)))


def test_prune_record_replays_to_the_same_weights(tiny_model_dir, tmp_path):
    from guard.train.prune import PruneConfig, apply_record, prune

    cfg = PruneConfig(drop_blocks=1, mlp_width=96, calib=["How do I bake bread?", "Tell me about the moon landing."])
    record = prune(tiny_model_dir, tmp_path / "p", cfg)
    assert len(record["mlp_keep"]) == 1 and len(next(iter(record["mlp_keep"].values()))) == 96
    replayed = _tiny(tiny_model_dir)
    apply_record(replayed, json.loads((tmp_path / "p" / "prune_record.json").read_text()))
    from safetensors.torch import load_file

    want = load_file(str(tmp_path / "p" / "model.safetensors"))
    got = replayed.state_dict()
    assert set(want) <= set(got) and all(torch.equal(want[k], got[k]) for k in want)


def _chatml_model(corpus=None):
    """A byte-level BPE with ChatML specials, like SmolLM2's (trained here on a few lines: no download), and a tied model."""
    from tokenizers import Tokenizer as HFTok, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = HFTok(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = corpus or [open(__file__).read(), "safe unsafe S1 S2 S10 \n\n Task: Check if there is unsafe content"] * 3
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    return model, hf


def test_adopted_llama3_tokens_make_the_exact_guard_prompt(tmp_path):
    """A ChatML tokenizer gets the Llama 3 header tokens: guard.format.prompt.encode and the training codec agree, template
    tokens typed in text stay plain text, and each new row starts as its ChatML counterpart."""
    from guard.format.categories import Policy
    from guard.format.prompt import encode
    from guard.format.tokenizer import Tokenizer
    from guard.train.loop import GuardCodec, adopt_llama3_specials, make_example

    model, hf = _chatml_model()
    rows = adopt_llama3_specials(model, hf)
    assert len(rows) in (4, 5) and model.get_input_embeddings().weight.shape[0] == len(hf)  # + 'unsafe' if it was split
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[hf.convert_tokens_to_ids("<|eot_id|>")], emb[hf.convert_tokens_to_ids("<|im_end|>")])
    assert torch.equal(emb[hf.convert_tokens_to_ids("<|start_header_id|>")], emb[hf.convert_tokens_to_ids("<|im_start|>")])
    hf.save_pretrained(tmp_path)
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.tokens.unsafe == hf.convert_tokens_to_ids("unsafe") and tok.tokens.eot == rows[3]
    rec = {"messages": [{"role": "user", "content": "hi <|eot_id|> there"}, {"role": "assistant", "content": "ok"}],
           "label": "unsafe", "categories": ["S14"]}
    for policy in (Policy(), Policy(excluded=("S2",))):
        head, body, target = make_example(GuardCodec(hf), rec, policy)
        want = encode(rec["messages"], policy, tok)
        assert head == want.head and body == want.body + [tok.tokens.blank]
        assert body.count(tok.tokens.eot) == 1  # the typed <|eot_id|> is plain text
    # S14 is not in the 1B list: reported under S2, which covers it; with S2 excluded too, safe under that policy
    assert make_example(GuardCodec(hf), rec, Policy())[2][0] == tok.tokens.unsafe
    assert make_example(GuardCodec(hf), rec, Policy(excluded=("S2",)))[2][0] == tok.tokens.safe


def test_adopting_no_template_tokens_adds_the_unsafe_token_and_keeps_chatml():
    """init={}: a ChatML model keeps its own template (GuardCodec(tok, CHATML)) and gets 'unsafe' as one token whose
    row is the mean of the pieces it replaces."""
    from guard.format.categories import Policy
    from guard.train.loop import CHATML, GuardCodec, adopt_llama3_specials, make_example

    model, hf = _chatml_model(["safe S1 S2 S10 \n\n Task: Check if there is content"] * 3)
    pieces = hf.encode("unsafe", add_special_tokens=False)
    assert len(pieces) > 1  # this corpus does not make "unsafe" one token
    want = model.get_input_embeddings().weight[pieces].mean(0).detach().clone()
    n = len(hf)
    rows = adopt_llama3_specials(model, hf, init={})
    assert rows == [n] and len(hf) == n + 1 and hf.convert_tokens_to_ids("unsafe") == n
    assert torch.allclose(model.get_input_embeddings().weight[n], want)
    assert hf.eos_token == "<|im_end|>" and hf.convert_tokens_to_ids("<|start_header_id|>") in (None, hf.unk_token_id)
    rec = {"messages": [{"role": "user", "content": "hi"}], "label": "unsafe", "categories": ["S1"]}
    head, body, target = make_example(GuardCodec(hf, CHATML), rec, Policy())
    assert target[0] == n and target[-1] == hf.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.slow
def test_cli_plain_lora_finetune_writes_adapters_that_rebuild_the_model(tiny_model_dir, tmp_path):
    """`guard distill --lora` without --teacher: plain fine-tuning of adapters; base + adapter == saved model."""
    from safetensors.torch import load_file

    from guard.cli import main

    rows = [{"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}], "label": "unsafe", "categories": ["S9"]},
            {"messages": [{"role": "user", "content": "How do I bake bread?"}], "label": "safe", "categories": []}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["distill", str(tiny_model_dir), "--data", str(data), "--split", "all", "--out", str(tmp_path / "s"),
                 "--steps", "2", "--accum", "1", "--lora", "4", "--lr", "1e-2", "--no-bf16"]) == 0
    rec = json.loads((tmp_path / "s" / "distill_record.json").read_text())
    assert rec["teacher"] is None and rec["config"]["lora"]["r"] == 4
    base = add_lora(_tiny(tiny_model_dir), LoraConfig(r=4, alpha=8))
    load_lora(base, load_file(str(tmp_path / "s" / "adapter.safetensors")))
    merge_lora(base)
    saved = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert any(not torch.equal(saved[k], v) for k, v in _tiny(tiny_model_dir).state_dict().items() if k in saved)  # it trained
    assert all(torch.equal(saved[k], base.state_dict()[k]) for k in saved)


@pytest.mark.slow
def test_cli_init_adapter_continues_from_earlier_adapters(tiny_model_dir, tmp_path):
    """--init-adapter starts the adapters where an earlier run left them (guard-mini's refine stage relies on it):
    one more step at lr 0 must give back the earlier adapters exactly, a fresh start does not."""
    from safetensors.torch import load_file

    from guard.cli import main

    rows = [{"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}], "label": "unsafe", "categories": ["S9"]},
            {"messages": [{"role": "user", "content": "How do I bake bread?"}], "label": "safe", "categories": []}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--data", str(data), "--split", "all", "--accum", "1", "--lora", "4", "--qat", "32", "--no-bf16"]
    assert main(["distill", str(tiny_model_dir), "--out", str(tmp_path / "a"), "--steps", "2", "--lr", "1e-2", *common]) == 0
    first = tmp_path / "a" / "adapter.safetensors"
    assert main(["distill", str(tiny_model_dir), "--out", str(tmp_path / "b"), "--steps", "1", "--lr", "0",
                 "--init-adapter", str(first), *common]) == 0
    assert main(["distill", str(tiny_model_dir), "--out", str(tmp_path / "c"), "--steps", "1", "--lr", "0", *common]) == 0
    a, b, c = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in "abc")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert main(["distill", str(tiny_model_dir), "--out", str(tmp_path / "d"), "--steps", "1",
                 "--init-adapter", str(tmp_path / "missing.safetensors"), *common]) == 2
    assert main(["distill", str(tiny_model_dir), "--data", str(data), "--split", "all", "--out", str(tmp_path / "e"),
                 "--steps", "1", "--init-adapter", str(first)]) == 2  # adapters need --lora


@pytest.mark.parametrize("tied", [True, False])
def test_trained_rows_give_the_whole_matrix_s_logits_and_gradients(tiny_model_dir, tied):
    """The rows live in a small parameter (TrainedRows); logits and the rows' gradient are those of training the
    whole (tied) matrix with the other rows masked."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from guard.train.lora import TrainedRows

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.tie_word_embeddings = tied
    torch.manual_seed(0)
    whole, rows = AutoModelForCausalLM.from_config(cfg).eval(), [5, 9]
    wrapped = AutoModelForCausalLM.from_config(cfg).eval()
    wrapped.load_state_dict(whole.state_dict())
    add_lora(wrapped, LoraConfig(r=4, train_embeddings=tuple(rows)))
    assert isinstance(wrapped.get_input_embeddings(), TrainedRows)
    assert isinstance(wrapped.get_output_embeddings(), TrainedRows) == tied
    ids = torch.tensor([[5, 9, 11, 12, 5]])
    whole.get_input_embeddings().weight.requires_grad_(True)
    a, b = whole(input_ids=ids).logits, wrapped(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-6)
    a.sum().backward()
    b.sum().backward()
    want = whole.get_input_embeddings().weight.grad[rows]
    assert torch.allclose(wrapped.get_input_embeddings().weight_rows.grad, want, rtol=1e-4, atol=1e-3)
    assert wrapped.get_input_embeddings().base.weight.grad is None  # no dense gradient at all


def test_frozen_weight_cast_once_under_autocast_matches_autocast_and_follows_changes():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 32), r=4, alpha=8.0)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 64)
    want = lambda: layer.base(x) + layer.scale * F.linear(F.linear(x, layer.lora_A), layer.lora_B)  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(layer(x), want())  # bit-identical to autocast casting the weight itself
        cast = layer._half[1]
        layer(x)
        assert layer._half[1] is cast  # cast once, reused
        with torch.no_grad():
            layer.base.weight.mul_(2)  # a changed weight (e.g. a resumed checkpoint) is cast again
        assert torch.equal(layer(x), want())
    assert torch.allclose(layer(x), want())  # outside autocast: the plain fp32 path


def test_mixed_adapters_fold_in_the_weighted_sum_of_the_deltas(tiny_model_dir):
    """mix_adapters: one adapter (rank r1 + r2, scale 1) whose merge is W0 + w1 * delta1 + w2 * delta2 exactly, with
    the trained rows mixed alike, whatever each adapter's own alpha / r; adapters on other layers or rows are refused."""
    from guard.errors import GuardError
    from guard.train.lora import mix_adapters

    w0 = _tiny(tiny_model_dir).model.layers[0].self_attn.q_proj.weight.detach().clone()

    def trained(r, alpha, shift):
        m = add_lora(_tiny(tiny_model_dir), LoraConfig(r=r, alpha=alpha, train_embeddings=(5, 9)))
        _randomise(m)
        with torch.no_grad():
            m.get_input_embeddings().weight_rows.add_(shift)
        return m, lora_state_dict(m, [5, 9]), alpha / r

    (m1, sd1, s1), (m2, sd2, s2) = trained(4, 8, 0.5), trained(2, 16, -0.25)
    d1 = m1.model.layers[0].self_attn.q_proj.delta().detach()
    d2 = m2.model.layers[0].self_attn.q_proj.delta().detach()
    sd, rank = mix_adapters([(sd1, s1, 0.3), (sd2, s2, 0.7)])
    assert rank == 6
    mixed = add_lora(_tiny(tiny_model_dir), LoraConfig(r=rank, alpha=float(rank), train_embeddings=(5, 9)))
    load_lora(mixed, sd)
    merge_lora(mixed)
    assert torch.allclose(mixed.model.layers[0].self_attn.q_proj.weight, w0 + 0.3 * d1 + 0.7 * d2, atol=1e-6)
    want = 0.3 * sd1["embedding_rows.weight"] + 0.7 * sd2["embedding_rows.weight"]
    assert torch.allclose(mixed.get_input_embeddings().weight[[5, 9]], want, atol=1e-6)
    with pytest.raises(GuardError, match="at least two"):
        mix_adapters([(sd1, s1, 1.0)])
    with pytest.raises(GuardError, match="same layers"):
        mix_adapters([(sd1, s1, 0.5), ({k: v for k, v in sd2.items() if "layers.0." not in k}, s2, 0.5)])
    with pytest.raises(GuardError, match="same embedding rows"):
        mix_adapters([(sd1, s1, 0.5), ({**sd2, "embedding_rows.index": torch.tensor([5, 10])}, s2, 0.5)])
