"""An export-friendly Llama 3.2 Vision (mllama) guard for Hugging Face weights: static shapes, shared buffers.

``encode_image(pixel_values, aspect_ratio_ids, aspect_ratio_mask)`` runs the vision encoder and the projector and
writes every cross-attention layer's keys/values (``xk``/``xv``) and the tile mask (``xbias``) into buffers, once
per image. ``forward(tokens, pos, last, xrow, xon)`` is the text decoder of guard.model.llama (same self-attention
blocks and KV cache) with the cross-attention blocks reading those buffers: ``xrow[t]`` is 1 for positions at or
after ``<|image|>``, ``xon`` is 0 for a text-only prompt (the cross-attention blocks are then skipped, as in
transformers). Exported as three methods of one .pte by guard.vision.export; the buffers are shared.

Semantics follow transformers' MllamaForConditionalGeneration exactly, quirks included: a text row before the
image token attends to every vision token with no mask and only its MLP output is zeroed; vision padding
patches are masked only against each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from guard.errors import GuardError
from guard.model.llama import MLP, Block, ModelArgs, Projections, RMSNorm, Transformer, attend, materialize, read_weights

NEG = torch.finfo(torch.float32).min  # transformers' mask value (finite: 0 * NEG is 0, not NaN)


@dataclass
class VisionArgs:
    # defaults: Llama 3.2 11B Vision's encoder; the comment names the vision_config key each field is read from
    dim: int = 1280  # hidden_size
    n_layers: int = 32  # num_hidden_layers: the local (per-tile) encoder
    n_global_layers: int = 8  # num_global_layers: gated layers over all tiles
    n_heads: int = 16  # attention_heads
    hidden_dim: int = 5120  # intermediate_size (MLP)
    image_size: int = 560  # image_size: a tile's side in pixels
    patch_size: int = 14  # patch_size
    max_tiles: int = 4  # max_num_tiles
    n_aspect_ratios: int = 8  # len(supported_aspect_ratios)
    intermediate: list[int] = field(default_factory=lambda: [3, 7, 15, 23, 30])  # intermediate_layers_indices
    norm_eps: float = 1e-5  # norm_eps
    output_dim: int = 7680  # vision_output_dim: what the cross-attention layers of the text model read

    @property
    def n_patches(self) -> int:  # per tile, with the class token
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def padded(self) -> int:  # per tile, padded to a multiple of 8
        return self.n_patches + (8 - self.n_patches % 8) % 8

    @classmethod
    def from_hf(cls, v: dict) -> "VisionArgs":
        """From the vision_config of a Llama 3.2 Vision (mllama) config.json."""
        ratios = v.get("supported_aspect_ratios") or [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
        return cls(dim=v["hidden_size"], n_layers=v["num_hidden_layers"], n_global_layers=v["num_global_layers"],
                   n_heads=v.get("attention_heads", v.get("num_attention_heads")), hidden_dim=v["intermediate_size"],
                   image_size=v["image_size"], patch_size=v["patch_size"], max_tiles=v["max_num_tiles"],
                   n_aspect_ratios=len(ratios), intermediate=list(v["intermediate_layers_indices"]),
                   norm_eps=v.get("norm_eps", 1e-5), output_dim=v["vision_output_dim"])

    def to_hf(self) -> dict:
        """from_hf's inverse (transformers derives the aspect ratios from ``max_num_tiles``)."""
        return {"hidden_size": self.dim, "num_hidden_layers": self.n_layers, "num_global_layers": self.n_global_layers,
                "num_attention_heads": self.n_heads, "intermediate_size": self.hidden_dim, "image_size": self.image_size,
                "patch_size": self.patch_size, "max_num_tiles": self.max_tiles, "norm_eps": self.norm_eps,
                "intermediate_layers_indices": list(self.intermediate), "vision_output_dim": self.output_dim}


class VisionLayer(nn.Module):
    def __init__(self, a: VisionArgs, gated: bool):
        super().__init__()
        self.n_heads, self.hd = a.n_heads, a.dim // a.n_heads
        self.self_attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self.self_attn, name, nn.Linear(a.dim, a.dim, bias=False))
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(a.dim, a.hidden_dim), nn.Linear(a.hidden_dim, a.dim)
        self.input_layernorm = nn.LayerNorm(a.dim, eps=a.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(a.dim, eps=a.norm_eps)
        self.gated = gated
        if gated:
            self.gate_attn, self.gate_ffn = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [L, dim], bias [L, L] additive."""
        L, at = x.shape[0], self.self_attn
        h = self.input_layernorm(x)
        q, k, v = (p(h).view(L, self.n_heads, self.hd).transpose(0, 1) for p in (at.q_proj, at.k_proj, at.v_proj))
        s = torch.bmm(q, k.transpose(1, 2)) * self.hd**-0.5 + bias
        o = at.o_proj(torch.bmm(torch.softmax(s, dim=-1), v).transpose(0, 1).reshape(L, -1))
        x = x + (self.gate_attn.tanh() * o if self.gated else o)
        m = self.mlp.fc2(F.gelu(self.mlp.fc1(self.post_attention_layernorm(x))))
        return x + (self.gate_ffn.tanh() * m if self.gated else m)


class TileEmbedding(nn.Module):
    """MllamaPrecomputedAspectRatioEmbedding: one vector per (aspect ratio, tile), gated."""

    def __init__(self, a: VisionArgs):
        super().__init__()
        self.embedding = nn.Embedding(a.n_aspect_ratios + 1, a.max_tiles * a.dim)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, ar_id: torch.Tensor) -> torch.Tensor:  # x [tiles, n, dim]
        return x + self.embedding(ar_id).view(x.shape[0], 1, x.shape[2]) * self.gate.tanh()


class PositionEmbedding(nn.Module):
    """MllamaPrecomputedPositionEmbedding: (1 - g) * patch positions + g * per-aspect-ratio tile positions."""

    def __init__(self, a: VisionArgs):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(1))
        self.embedding = nn.Parameter(torch.zeros(a.n_patches, a.dim))
        self.tile_embedding = nn.Embedding(a.n_aspect_ratios + 1, a.max_tiles * a.n_patches * a.dim)

    def forward(self, x: torch.Tensor, ar_id: torch.Tensor) -> torch.Tensor:  # x [tiles, n_patches, dim]
        g = self.gate.tanh()
        return x + (1 - g) * self.embedding + g * self.tile_embedding(ar_id).view(x.shape)


class VisionEncoder(nn.Module):
    """MllamaVisionModel for one image: [tiles, 3, S, S] -> [tiles, n_patches, output_dim]."""

    def __init__(self, a: VisionArgs):
        super().__init__()
        self.a = a
        self.patch_embedding = nn.Conv2d(3, a.dim, a.patch_size, a.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(a.dim))
        self.gated_positional_embedding = PositionEmbedding(a)
        self.pre_tile_positional_embedding = TileEmbedding(a)
        self.post_tile_positional_embedding = TileEmbedding(a)
        self.layernorm_pre, self.layernorm_post = nn.LayerNorm(a.dim), nn.LayerNorm(a.dim)
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(VisionLayer(a, False) for _ in range(a.n_layers))
        self.global_transformer = nn.Module()
        self.global_transformer.layers = nn.ModuleList(VisionLayer(a, True) for _ in range(a.n_global_layers))

    def forward(self, pixels: torch.Tensor, ar_id: torch.Tensor, tile_mask: torch.Tensor) -> torch.Tensor:
        a, T = self.a, pixels.shape[0]
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [T, g*g, dim]
        x = self.pre_tile_positional_embedding(x, ar_id)
        x = torch.cat([self.class_embedding.view(1, 1, -1).expand(T, 1, a.dim), x], dim=1)  # [T, P, dim]
        x = self.layernorm_pre(self.gated_positional_embedding(x, ar_id))
        P, Lp = a.n_patches, a.padded
        x = F.pad(x, (0, 0, 0, Lp - P)).reshape(T * Lp, a.dim)
        # transformers' mask: a token is "masked" if its tile is unused or it is padding; only masked-masked pairs get NEG
        inv = 1.0 - (tile_mask.view(T, 1).float() * (torch.arange(Lp) < P).float().view(1, Lp)).reshape(T * Lp, 1)
        bias = (inv @ inv.t()) * NEG
        keep = {}
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, bias)
            keep[i] = x
        x = self.layernorm_post(x).view(T, Lp, a.dim)
        x = self.post_tile_positional_embedding(x, ar_id).reshape(T * Lp, a.dim)
        for layer in self.global_transformer.layers:
            x = layer(x, bias)
        inter = torch.stack([keep[i] for i in a.intermediate], dim=-1).reshape(T, Lp, -1)  # (dim, k) interleaved, as transformers stacks them
        return torch.cat([x.view(T, Lp, a.dim), inter], dim=-1)[:, :P]


class CrossAttention(Projections):
    def __init__(self, args: ModelArgs, n_vision_tokens: int):
        super().__init__(args)
        self.q_norm, self.k_norm = RMSNorm(self.hd, args.norm_eps), RMSNorm(self.hd, args.norm_eps)
        self.register_buffer("xk", torch.zeros(args.n_kv_heads, n_vision_tokens, self.hd), persistent=False)
        self.register_buffer("xv", torch.zeros(args.n_kv_heads, n_vision_tokens, self.hd), persistent=False)

    def set_image(self, states: torch.Tensor) -> None:
        """states [L, dim] -> this layer's keys/values, written in place."""
        L = states.shape[0]
        self.xk.copy_(self.k_norm(self.k_proj(states).view(L, self.n_kv, self.hd)).transpose(0, 1))
        self.xv.copy_(self.v_proj(states).view(L, self.n_kv, self.hd).transpose(0, 1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [1, T, dim], bias [T, L] -> [1, T, dim]."""
        q = self.q_norm(self.q_proj(x).view(x.shape[1], self.n_heads, self.hd))
        return self.o_proj(attend(q, self.xk, self.xv, bias))


class CrossBlock(nn.Module):
    def __init__(self, args: ModelArgs, n_vision_tokens: int):
        super().__init__()
        self.cross_attn = CrossAttention(args, n_vision_tokens)
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = MLP(args)
        self.cross_attn_attn_gate = nn.Parameter(torch.zeros(1))
        self.cross_attn_mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x, xbias, xrow, xon):
        """xbias [L] (NEG on unused tiles), xrow [T] (1 from <|image|> on), xon [1] (0: no image, skip the block)."""
        bias = xrow.view(-1, 1) * xbias.view(1, -1)  # rows before the image token: no mask at all (transformers)
        h = x + self.cross_attn_attn_gate.tanh() * self.cross_attn(self.input_layernorm(x), bias)
        m = self.mlp(self.post_attention_layernorm(h)) * xrow.view(1, -1, 1)
        h = h + self.cross_attn_mlp_gate.tanh() * m
        return torch.where(xon.view(1, 1, 1) > 0, h, x)  # where, not a product: stale buffers can never leak NaN


class VisionGuardModel(Transformer):
    """The mllama guard: ``encode_image`` once per image, then ``forward`` through guard.model.Transformer's decoder,
    with the cross-attention blocks at ``cross_layers`` reading the image."""

    def __init__(self, args: ModelArgs, vargs: VisionArgs, cross_layers: list[int]):
        L = vargs.max_tiles * vargs.n_patches
        layers = [CrossBlock(args, L) if i in cross_layers else Block(args) for i in range(args.n_layers)]
        super().__init__(args, layers, embed_rows=args.vocab_size + 8)  # +8: <|image|> and 7 spare rows
        self.vargs, self.cross_layers = vargs, list(cross_layers)
        self.vision_model = VisionEncoder(vargs)
        self.multi_modal_projector = nn.Linear(vargs.output_dim, args.dim)
        self.register_buffer("xbias", torch.zeros(L), persistent=False)

    def encode_image(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask) -> torch.Tensor:
        """[1, 1, tiles, 3, S, S], [1, 1], [1, 1, tiles] -> writes xk/xv/xbias; returns the tile mask [tiles]."""
        v = self.vargs
        tiles = aspect_ratio_mask.view(v.max_tiles)
        out = self.vision_model(pixel_values.view(v.max_tiles, 3, v.image_size, v.image_size), aspect_ratio_ids.view(1), tiles)
        states = self.multi_modal_projector(out).reshape(v.max_tiles * v.n_patches, self.args.dim)
        for i in self.cross_layers:
            self.layers[i].cross_attn.set_image(states)
        valid = tiles.float().view(v.max_tiles, 1).expand(v.max_tiles, v.n_patches).reshape(-1)
        self.xbias.copy_((1.0 - valid) * NEG)
        return tiles.float()

    def forward(self, tokens, pos, last, xrow, xon) -> torch.Tensor:
        return self.run(tokens, pos, last, (xrow, xon))

    def block(self, i: int, layer, x, cos, sin, mask, pos, extra: tuple):
        return layer(x, self.xbias, *extra) if i in self.cross_layers else layer(x, cos, sin, mask, pos)


PREFIXES = (("language_model.model.", ""), ("language_model.lm_head.", "lm_head."), ("model.language_model.", ""),
            ("model.vision_model.", "vision_model."), ("model.multi_modal_projector.", "multi_modal_projector."))


def args_from_hf(cfg: dict, **overrides) -> tuple[ModelArgs, VisionArgs, list[int]]:
    if cfg.get("model_type") != "mllama":
        raise GuardError(f"not a Llama 3.2 Vision (mllama) config: model_type {cfg.get('model_type')!r}")
    t, v = cfg["text_config"], cfg["vision_config"]
    args = ModelArgs.from_hf({"model_type": "mllama_text_model", "rope_theta": 500000.0, **t}, **overrides)
    return args, VisionArgs.from_hf(v), list(t["cross_attention_layers"])


def rename(key: str) -> str:
    for old, new in PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_hf_vision(path: str | Path, **overrides) -> VisionGuardModel:
    """Build a VisionGuardModel from a Hugging Face mllama directory (config.json + *.safetensors), on the meta
    device like guard.model.llama.load_hf."""
    path = Path(path)
    sd = read_weights(path, rename)
    args, vargs, cross = args_from_hf(json.loads((path / "config.json").read_text()), **overrides)
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["embed_tokens.weight"][: args.vocab_size]
    return materialize(lambda: VisionGuardModel(args, vargs, cross), sd, path, "an mllama model")
