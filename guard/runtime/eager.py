"""Eager backend: a Hugging Face Llama Guard checkpoint run by transformers on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from guard.model.checkpoint import check_model_dir
from guard.errors import GuardError
from guard.format.tokenizer import Tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
log = logging.getLogger(__name__)


def bf16_native() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Elsewhere oneDNN emulates bf16 and
    autocast is far slower than float32: on an AVX2-only AMD EPYC (Zen 3) one rank-64 teacher step took 191 s in
    bf16 and 12.7 s in float32 (docs/compression.md, "bf16 only where the CPU has it"). Training uses it to choose;
    the eager backend warns when asked for bf16 without it."""
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def load_hf_model(path: str | Path, dtype: str = "fp32", cls=None):
    """A transformers model (``cls``, default AutoModelForCausalLM) from a checked directory, in eval mode."""
    check_model_dir(path)
    if cls is None:
        from transformers import AutoModelForCausalLM as cls
    if dtype not in DTYPES:
        raise GuardError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    if dtype == "bf16" and not bf16_native():
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 runs emulated, usually slower than fp32")
    try:
        model = cls.from_pretrained(str(path), dtype=DTYPES[dtype], use_safetensors=True)
    except Exception as e:
        raise GuardError(f"cannot load model from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return model.eval()


class EagerRunner:
    """Implements guard.runtime.runner.Runner with a transformers model and a DynamicCache."""

    output_ids = None

    def __init__(self, path: str | Path | None, dtype: str = "fp32", model=None, tokenizer: Tokenizer | None = None):
        if model is None:
            check_model_dir(path)  # cheap checks first, weights last
        self.tokenizer = tokenizer or Tokenizer.from_dir(path)
        self.model = model if model is not None else load_hf_model(path, dtype)
        cfg = self.model.config
        if cfg.vocab_size < self.tokenizer.vocab_size:
            raise GuardError(f"model vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's ({self.tokenizer.vocab_size})")
        self.max_seq_len = int(getattr(cfg, "max_position_embeddings", 8192))
        self.name = f"eager:{dtype}"
        self._cache = None

    @torch.inference_mode()
    def prefill(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        from transformers import DynamicCache

        if self._cache is None or start_pos == 0:
            self._reset()
            self._cache = DynamicCache()
        have = self._cache.get_seq_length()
        if start_pos > have:
            raise RuntimeError(f"prefill at {start_pos} but only {have} positions are cached")
        self._crop(start_pos)
        end = start_pos + len(tokens)
        ids, pos = torch.tensor([tokens], dtype=torch.long), torch.arange(start_pos, end)
        out = self.model(input_ids=ids, position_ids=pos.unsqueeze(0), past_key_values=self._cache, use_cache=True,
                         logits_to_keep=1, **self._extra(tokens, start_pos, end))
        return out.logits[0, -1].float()

    def decode(self, token: int, pos: int) -> torch.Tensor:
        return self.prefill([token], pos)

    # hooks for a variant with more state (guard.vision.eager)
    def _reset(self) -> None:
        self._cache = None

    def _crop(self, start_pos: int) -> None:
        if start_pos < self._cache.get_seq_length():
            self._cache.crop(start_pos)

    def _extra(self, tokens: list[int], start_pos: int, end: int) -> dict:
        return {}
