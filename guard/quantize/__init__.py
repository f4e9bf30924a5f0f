"""Post-training quantization for export: torchao 8da4w (or 8da8w) linears and a 4-bit grouped embedding.

``quantize(model, QuantConfig("8da4w", group_size=256))`` is the Llama Guard 3-1B-INT4 recipe: INT4 weights in
groups of ``group_size`` with int8 dynamic activations (XNNPACK runs these linears), and the token embedding as
4-bit groups run by ExecuTorch's ``quantized_decomposed::embedding_4bit`` kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from guard.errors import GuardError

SCHEMES = ("none", "8da4w", "8da8w")


@dataclass
class QuantConfig:
    scheme: str = "none"  # one of SCHEMES
    group_size: int = 256  # INT4 weight group (Llama Guard 3-1B-INT4 uses 256)
    embedding_bits: int = 4  # 0 keeps the embedding fp32
    embedding_group_size: int = 32  # 256 at the 1B shape: 2 MB of fp16 scales instead of 16 (docs/export.md)

    def check(self) -> None:
        if self.scheme not in SCHEMES:
            raise GuardError(f"unknown quantization scheme {self.scheme!r} (choose from {', '.join(SCHEMES)})")
        if self.group_size <= 0 or self.group_size % 32:
            raise GuardError(f"group size must be a positive multiple of 32, got {self.group_size}")
        if self.embedding_group_size <= 0 or self.embedding_group_size % 2:
            raise GuardError(f"embedding group size must be a positive even number, got {self.embedding_group_size}")
        if self.embedding_bits not in (0, 4):
            raise GuardError(f"embedding bits must be 0 or 4, got {self.embedding_bits}")

    @property
    def linear_group(self) -> int:
        """The linears' weight group as the .pte records it: group_size for 8da4w, 0 where there is none (8da8w is
        per output channel; none keeps fp32)."""
        return self.group_size if self.scheme == "8da4w" else 0


def quantize(model: nn.Module, cfg: QuantConfig, skip: tuple[str, ...] = ()) -> nn.Module:
    """Quantize ``model`` in place; linears whose name is in ``skip`` stay fp32."""
    cfg.check()
    if cfg.scheme == "none":
        return model
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip}
    bad = [n for n, m in linears.items() if m.in_features % cfg.group_size] if cfg.scheme == "8da4w" else []
    if bad:
        w = linears[bad[0]].in_features
        raise GuardError(f"group size {cfg.group_size} does not divide {bad[0]}'s input width {w}; pick a divisor of {w}")
    quantize_linears(model, cfg.scheme, cfg.group_size, set(linears))
    if cfg.embedding_bits:
        for name, m in list(model.named_modules()):
            for child_name, child in list(m.named_children()):
                if isinstance(child, nn.Embedding):
                    setattr(m, child_name, Embedding4bit.from_float(child, cfg.embedding_group_size))
    return model


def linear_config(scheme: str, group_size: int):
    """torchao's config for ``scheme``'s linears, shared by the exporter and QAT (guard.train.distill.qat_prepare):
    8da4w is int4 weights in groups of ``group_size``, 8da8w int8 weights per output channel (``group_size``
    unused); both with int8 dynamic per-token activations, as XNNPACK runs them."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    if scheme == "8da4w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size))
    if scheme == "8da8w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    raise GuardError(f"no linear quantization for scheme {scheme!r} (choose from 8da4w, 8da8w)")


def quantize_linears(model: nn.Module, scheme: str, group_size: int, names: set[str]) -> None:
    from torchao.quantization import quantize_

    quantize_(model, linear_config(scheme, group_size), filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn in names)


class Embedding4bit(nn.Module):
    """Symmetric 4-bit grouped embedding, two values per byte (the layout of ExecuTorch's embedding_4bit)."""

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, group_size: int):
        super().__init__()
        self.group_size = group_size
        self.register_buffer("weight", packed)  # [vocab, dim/2] uint8
        self.register_buffer("scales", scales)  # [vocab, dim/group] fp16

    @classmethod
    @torch.no_grad()
    def from_float(cls, emb: nn.Embedding, group_size: int) -> "Embedding4bit":
        w = emb.weight.detach().float()
        v, d = w.shape
        if d % group_size or d % 2:
            raise GuardError(f"embedding group size {group_size} does not divide the embedding width {d}")
        g = w.view(v, d // group_size, group_size)
        # symmetric: [-7, 7] used, -8 reachable. Scales are stored fp16 (half the 33 MB of fp32 scales at the 1B
        # shape); the values are quantized against the fp16-rounded scales, so dequantization matches exactly.
        scales = (g.abs().amax(-1) / 7.0).clamp(min=1e-6).half().clamp(min=2 ** -24)
        q = (g / scales.float().unsqueeze(-1)).round().clamp(-8, 7).to(torch.int8).view(v, d)
        u = (q + 8).to(torch.uint8).view(v, d // 2, 2)
        return cls(u[..., 0] * 16 + u[..., 1], scales, group_size)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_4bit.dtype(
            self.weight, self.scales, None, -8, 7, indices, dtype=torch.float32)


def load_quantized_ops() -> None:
    """Register quantized_decomposed ops for eager use and the portable embedding_4bit kernel for the runtime."""
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  (defines the eager ops)
    import executorch.kernels.quantized  # noqa: F401
