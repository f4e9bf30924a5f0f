"""Tiny random Llama Guard-format checkpoints for tests, demos and benchmarks (no downloads)."""

from __future__ import annotations

from pathlib import Path

from guard.format.tokenizer import save_hf_tokenizer


def tiny(**overrides):
    """The tests' tiny Llama as guard.model.llama.ModelArgs: 2 layers, hidden 64, 4/2 heads, the Llama 3
    vocabulary, 1,024 positions; ``overrides`` by ModelArgs field (``n_layers=4``, ``max_seq_len=512`` ...)."""
    from guard.model.llama import ModelArgs

    return ModelArgs(**{"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 128, **overrides})


def make_checkpoint(out: str | Path, args=None, seed: int = 0) -> Path:
    """Save a random LlamaForCausalLM of shape ``args`` (a ModelArgs; default ``tiny()``) with the real Llama 3
    tokenizer as a Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    hf = LlamaConfig(**(args or tiny()).to_hf(), bos_token_id=128000, eos_token_id=128009, hidden_act="silu",
                     torch_dtype="float32")
    model = LlamaForCausalLM(hf).eval()
    model.save_pretrained(out, safe_serialization=True)
    save_hf_tokenizer(out)
    return out


def bias_verdict_rows(model_dir: str | Path, safe: float = 16.0, unsafe: float = 20.0) -> Path:
    """Scale a random checkpoint's ``safe``/``unsafe`` output rows in place, so its first verdict token is one of them
    and p_unsafe varies with the text (a random model's verdicts are otherwise mostly indeterminate)."""
    from safetensors.torch import load_file, save_file

    from guard.format.tokenizer import Tokenizer

    t = Tokenizer.from_dir(model_dir).tokens
    path = f"{model_dir}/model.safetensors"
    sd = load_file(path)
    w = sd["lm_head.weight"].clone()
    w[t.safe] *= safe
    w[t.unsafe] *= unsafe
    sd["lm_head.weight"] = w
    save_file(sd, path, metadata={"format": "pt"})
    return Path(model_dir)


def make_scripted_checkpoint(out: str | Path, next_logits: dict[int, dict[int, float]], args=None) -> Path:
    """A real Llama checkpoint whose next-token logits depend only on the current token.

    The attention and MLP output projections are zeroed, so the residual stream is the token's embedding;
    each scripted source token gets its own embedding direction, and the output layer maps it to the given
    logits (all other logits 0). ``{271: {safe_id: 2.0, unsafe_id: 1.0}}`` makes the verdict after the
    forced "\\n\\n" 'safe' with p_unsafe = sigmoid(-1). Used to test decisions, thresholds and category decoding
    through real transformers and ExecuTorch code paths.
    """
    from safetensors.torch import load_file, save_file

    args = args or tiny()
    if len(next_logits) > args.dim:
        raise ValueError("more scripted tokens than hidden dimensions")
    out = make_checkpoint(out, args)
    path = Path(out) / "model.safetensors"
    sd = load_file(str(path))
    h = args.dim
    for k, v in sd.items():
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            v.zero_()
        if k.endswith("norm.weight"):
            v.fill_(1.0)
    emb, head = sd["model.embed_tokens.weight"], sd["lm_head.weight"]
    emb.mul_(0.01)
    head.zero_()
    for k, (src, logits) in enumerate(sorted(next_logits.items())):
        emb[src].zero_()
        emb[src, k] = 1.0  # after RMSNorm this is sqrt(h) * e_k
        for dst, value in logits.items():
            head[dst, k] = value / h**0.5
    save_file(sd, str(path), metadata={"format": "pt"})
    return out
