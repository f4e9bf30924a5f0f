"""An export-friendly Llama decoder (gpt-fast / ExecuTorch examples/models/llama style) for Hugging Face weights.

Every shape is static, so XNNPACK takes the whole graph: one forward serves both the padded prefill chunk
(``T = chunk``) and the single-token decode (``T = 1``); the two are exported as separate methods that share the
KV-cache buffers. The cache is ``[1, n_kv_heads, cache_len, head_dim]`` with ``cache_len = max_seq_len + chunk``
so a padded chunk never writes out of range; padding writes land after the real tokens and are overwritten
before anything attends to them (a query at position p only sees keys at positions <= p).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from guard.errors import GuardError


@dataclass
class ModelArgs:
    dim: int = 2048
    n_layers: int = 16
    n_heads: int = 32
    n_kv_heads: int = 8
    hidden_dim: int = 8192
    vocab_size: int = 128256
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict | None = None  # HF "llama3" rope scaling, as in Llama 3.1/3.2 configs
    tie_embeddings: bool = False
    max_seq_len: int = 1024  # positions the runner may use
    chunk: int = 64  # prefill chunk length (static); the cache has max_seq_len + chunk slots

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def cache_len(self) -> int:
        return self.max_seq_len + self.chunk

    @classmethod
    def from_hf(cls, cfg: dict, **overrides) -> "ModelArgs":
        """From a Llama config.json, or the text_config of a Llama 3.2 Vision (mllama) one."""
        if cfg.get("model_type", "llama") not in ("llama", "mllama_text_model"):
            raise GuardError(f"only Llama checkpoints can be exported, not model_type {cfg.get('model_type')!r}")
        if cfg.get("head_dim") not in (None, cfg["hidden_size"] // cfg["num_attention_heads"]):
            raise GuardError("checkpoints with a custom head_dim are not supported")
        args = cls(
            dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
            n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            hidden_dim=cfg["intermediate_size"], vocab_size=cfg["vocab_size"], norm_eps=cfg.get("rms_norm_eps", 1e-5),
            rope_theta=cfg.get("rope_theta", 10000.0), rope_scaling=cfg.get("rope_scaling"),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
        for k, v in overrides.items():
            setattr(args, k, v)
        return args

    def to_hf(self) -> dict:
        """from_hf's inverse: the Llama config.json fields (``max_seq_len`` as ``max_position_embeddings``)."""
        return {"hidden_size": self.dim, "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
                "num_key_value_heads": self.n_kv_heads, "intermediate_size": self.hidden_dim,
                "vocab_size": self.vocab_size, "rms_norm_eps": self.norm_eps, "rope_theta": self.rope_theta,
                "rope_scaling": self.rope_scaling, "tie_word_embeddings": self.tie_embeddings,
                "max_position_embeddings": self.max_seq_len}


def inv_freq(args: ModelArgs) -> torch.Tensor:
    """RoPE inverse frequencies [head_dim/2], with Llama 3 scaling when the config asks for it."""
    d = args.head_dim
    freq = 1.0 / (args.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = args.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return freq.float()
    if kind != "llama3":
        raise GuardError(f"rope scaling {kind!r} is not supported (only llama3)")
    factor, lo, hi = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / freq
    smooth = (old / wavelen - lo) / (hi - lo)
    scaled = torch.where(wavelen > old / lo, freq / factor, freq)  # long wavelengths: scaled down
    mid = (wavelen <= old / lo) & (wavelen >= old / hi)
    return torch.where(mid, (1 - smooth) * freq / factor + smooth * freq, scaled).float()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        ms = x.pow(2).view(shape[0], shape[1], 1, shape[2]).mean((2, 3), keepdim=True).view(shape[0], shape[1], 1)  # 4-D mean: XNNPACK delegates it
        return x * torch.rsqrt(ms + self.eps) * self.weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF-style RoPE (rotate_half), so HF q/k weights need no permutation. x [1, T, H, D], cos/sin [T, 1, D]."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention without repeat_interleave: the G query heads of a kv head become G*T rows of one bmm.
    q [T, n_heads, hd], k/v [n_kv, L, hd], bias [T, L] additive -> [1, T, n_heads * hd]."""
    T, H, hd = q.shape
    n_kv = k.shape[0]
    G = H // n_kv
    q = q.view(T, n_kv, G, hd).permute(1, 2, 0, 3).reshape(n_kv, G * T, hd)
    s = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(hd))  # [n_kv, G*T, L]
    s = (s.view(n_kv, G, T, -1) + bias).view(n_kv, G * T, -1)
    o = torch.bmm(torch.softmax(s, dim=-1), v)  # [n_kv, G*T, hd]
    return o.view(n_kv, G, T, hd).permute(2, 0, 1, 3).reshape(1, T, H * hd)


class Projections(nn.Module):
    """q/k/v/o projections of an attention layer (Hugging Face names), and its head counts."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = args.n_heads, args.n_kv_heads, args.head_dim
        self.q_proj = nn.Linear(args.dim, args.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(args.n_heads * self.hd, args.dim, bias=False)


class Attention(Projections):
    def __init__(self, args: ModelArgs):
        super().__init__(args)
        shape = (args.n_kv_heads, args.cache_len, self.hd)  # batch 1 folded away: bmm wants 3-D
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def forward(self, x, cos, sin, mask, pos):
        """x [1, T, dim], mask [T, S] additive, pos [T] -> [1, T, dim]: attends to cache slots 0..S-1 only."""
        T, S = x.shape[1], mask.shape[1]
        q = rotate(self.q_proj(x).view(1, T, self.n_heads, self.hd), cos, sin)
        k = rotate(self.k_proj(x).view(1, T, self.n_kv, self.hd), cos, sin)
        v = self.v_proj(x).view(T, self.n_kv, self.hd)
        self.k_cache.index_copy_(1, pos, k.view(T, self.n_kv, self.hd).transpose(0, 1))
        self.v_cache.index_copy_(1, pos, v.transpose(0, 1))
        whole = isinstance(S, int) and S == self.k_cache.shape[1]  # a traced dynamic S is a SymInt: never compared
        k, v = (self.k_cache, self.v_cache) if whole else (self.k_cache[:, :S], self.v_cache[:, :S])
        return self.o_proj(attend(q.view(T, self.n_heads, self.hd), k, v, mask))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.down_proj = nn.Linear(args.hidden_dim, args.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn, self.mlp = Attention(args), MLP(args)
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, cos, sin, mask, pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


def positions(args: ModelArgs) -> dict[str, torch.Tensor]:
    """The position tables every decoder shares: RoPE cos/sin [L, 1, head_dim] (HF rotate_half layout) and the
    positions as float vectors (query [L, 1], key [1, L]), L = cache_len, from which ``causal_bias`` computes the
    mask. An [L, L] mask table would be 5.3 MB of the file at L = 1152."""
    t = torch.arange(args.cache_len, dtype=torch.float32)
    ang = torch.cat([torch.outer(t, inv_freq(args))] * 2, dim=-1).unsqueeze(1)
    return {"rope_cos": ang.cos(), "rope_sin": ang.sin(), "query_pos": t.view(-1, 1).clone(), "key_pos": t.view(1, -1).clone()}


def causal_bias(query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
    """[T, 1] query positions, [1, L] key positions -> [T, L] additive bias: 0 for keys 0..p, -1e30 after (softmax
    gives them exactly 0, as -inf would, and a masked 0 * -1e30 stays finite). sub/clamp/mul go to XNNPACK."""
    return (key_pos - query_pos).clamp(0.0, 1.0) * -1e30


class Transformer(nn.Module):
    """forward(tokens [1, T], pos [T], last [1]) -> logits [1, n_out] of position ``last`` only.

    ``layers`` / ``embed_rows`` let a variant (guard.vision.model) mix in other blocks and embedding rows; it
    routes its extra inputs to them through ``block``."""

    def __init__(self, args: ModelArgs, layers=None, embed_rows: int | None = None):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(embed_rows or args.vocab_size, args.dim)
        self.layers = nn.ModuleList(layers if layers is not None else (Block(args) for _ in range(args.n_layers)))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.output_ids: list[int] | None = None  # set by prune_vocab
        for name, t in positions(args).items():
            self.register_buffer(name, t, persistent=False)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, last: torch.Tensor,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(tokens, pos, last, (), keys)

    def run(self, tokens, pos, last, extra: tuple, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``keys`` [1, S] float, the positions 0..S-1 (S > pos.max()): attention reads only those cache slots, so a
        step at position p costs O(S) instead of O(cache_len). An export makes S a dynamic dimension (the
        ``get_attention_span`` metadata); None attends to the whole cache."""
        x = self.embed_tokens(tokens)
        cos, sin = self.rope_cos.index_select(0, pos), self.rope_sin.index_select(0, pos)
        mask = causal_bias(self.query_pos.index_select(0, pos), self.key_pos if keys is None else keys)  # [T, S]
        for i, layer in enumerate(self.layers):
            x = self.block(i, layer, x, cos, sin, mask, pos, extra)
        x = self.norm(x.index_select(1, last))  # only the last real position goes through the head
        return self.lm_head(x).view(1, -1)

    def block(self, i: int, layer, x, cos, sin, mask, pos, extra: tuple):
        return layer(x, cos, sin, mask, pos)

def prune_vocab(model: Transformer, keep: list[int]) -> Transformer:
    """Keep only the output rows of ``keep`` (ExecuTorch's prune_vocab); logit column i is token keep[i]."""
    w = model.lm_head.weight.data[torch.tensor(keep)]
    head = nn.Linear(w.shape[1], w.shape[0], bias=False)
    head.weight.data.copy_(w)
    model.lm_head, model.output_ids = head, list(keep)
    return model


def read_weights(path: str | Path, rename=None) -> dict[str, torch.Tensor]:
    """Every tensor of a checked Hugging Face directory's safetensors files, as fp32, keys passed through ``rename``."""
    from safetensors.torch import load_file

    from guard.model.checkpoint import check_model_dir

    sd = {}
    for f in check_model_dir(path):
        for k, v in load_file(str(f)).items():
            sd[rename(k) if rename else k] = v.float()
    return sd


def materialize(make, sd: dict, path, what: str):
    """Build ``make()`` on the meta device, take the weights of ``sd`` without copying, then fill the non-persistent
    buffers (position tables computed, caches zeroed): one copy of the weights in memory, not two."""
    with torch.device("meta"):
        model = make()
    model = model.to_empty(device="cpu")
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    buffers = {name for name, _ in model.named_buffers()}
    missing = [k for k in missing if k not in buffers]
    if missing or unexpected:
        raise GuardError(f"{path}: weights do not match {what} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    table = positions(model.args)
    for name, buf in model.named_buffers():
        leaf = name.rpartition(".")[2]
        with torch.no_grad():
            buf.copy_(table[leaf]) if leaf in table and "." not in name else buf.zero_()
    return model.eval()


def load_hf(path: str | Path, **overrides) -> Transformer:
    """Build a Transformer from a Hugging Face Llama directory (config.json + *.safetensors)."""
    path = Path(path)
    sd = read_weights(path, lambda k: k.removeprefix("model."))  # checks the directory first
    args = ModelArgs.from_hf(json.loads((path / "config.json").read_text()), **overrides)
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["embed_tokens.weight"]  # tied embeddings
    return materialize(lambda: Transformer(args), sd, path, "a Llama model")
