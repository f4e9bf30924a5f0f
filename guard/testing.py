"""Tiny random Llama Guard-format checkpoints for tests, demos and benchmarks (no downloads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from guard.format.tokenizer import save_hf_tokenizer


@dataclass
class TinyConfig:
    num_hidden_layers: int = 2
    hidden_size: int = 64
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 128256
    max_position_embeddings: int = 1024
    rope_theta: float = 500000.0
    tie_word_embeddings: bool = False
    seed: int = 0


def make_checkpoint(out: str | Path, cfg: TinyConfig | None = None) -> Path:
    """Save a random LlamaForCausalLM with the real Llama 3 tokenizer as a Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    fields = {k: v for k, v in asdict(cfg).items() if k != "seed"}
    hf = LlamaConfig(**fields, bos_token_id=128000, eos_token_id=128009, rms_norm_eps=1e-5, hidden_act="silu",
                     torch_dtype="float32")
    model = LlamaForCausalLM(hf).eval()
    model.save_pretrained(out, safe_serialization=True)
    save_hf_tokenizer(out)
    return out


def make_scripted_checkpoint(out: str | Path, next_logits: dict[int, dict[int, float]], cfg: TinyConfig | None = None) -> Path:
    """A real Llama checkpoint whose next-token logits depend only on the current token.

    The attention and MLP output projections are zeroed, so the residual stream is the token's embedding;
    each scripted source token gets its own embedding direction, and the output layer maps it to the given
    logits (all other logits 0). ``{271: {safe_id: 2.0, unsafe_id: 1.0}}`` makes the verdict after the
    forced "\\n\\n" 'safe' with p_unsafe = sigmoid(-1). Used to test decisions, thresholds and category decoding
    through real transformers and ExecuTorch code paths.
    """
    import torch
    from safetensors.torch import load_file, save_file

    cfg = cfg or TinyConfig()
    if len(next_logits) > cfg.hidden_size:
        raise ValueError("more scripted tokens than hidden dimensions")
    out = make_checkpoint(out, cfg)
    path = Path(out) / "model.safetensors"
    sd = load_file(str(path))
    h = cfg.hidden_size
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
