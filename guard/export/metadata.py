"""Metadata stored inside the .pte as constant methods (ExecuTorch's get_max_seq_len convention).

The runtime refuses a .pte that lacks any of ``REQUIRED``; nothing is ever parsed from file names.
``TOKENIZER_DIGEST`` (the sha256 of the tokenizer.json written beside the .pte) pins the tokenizer: a different or
edited tokenizer.json is refused unless the caller trusts it explicitly. Files exported before it existed load with
a warning.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from guard.format.tokenizer import GuardTokens, Tokenizer

PTE_FORMAT = "guard-pte-1"  # bump when the method signatures change
MARKER = "get_guard_format"
TOKEN_KEYS = ("bos", "eot", "safe", "unsafe", "newline", "blank", "s")
REQUIRED = (
    MARKER, "get_max_seq_len", "get_prefill_chunk", "get_vocab_size", "get_output_ids", "get_prompt_format",
    "get_quant_scheme", "get_group_size", *(f"get_{k}_id" for k in TOKEN_KEYS),
)
METHODS = ("prefill", "decode")
TOKENIZER_DIGEST = "get_tokenizer_sha256"


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()
# Llama Guard 3 Vision (guard.vision.export): one more method, and the image's tiles and token
VISION_FORMAT = "guard-vision-pte-1"
VISION_REQUIRED = REQUIRED + ("get_tile_size", "get_max_tiles", "get_image_token_id")
VISION_METHODS = ("vision_encoder",) + METHODS
CHUNKS = "get_prefill_chunks"  # optional: every static prefill size, largest first (the largest is `prefill`)
# optional: the methods take a fourth input keys[1, S] (positions 0..S-1, S dynamic up to max_seq_len) and attend to
# those cache slots only; the value is the step the runtime rounds S up to. Absent or 0: three inputs, whole cache.
SPAN = "get_attention_span"


def chunk_method(size: int, main: int) -> str:
    """The method that prefills ``size`` tokens: decode (1), prefill (the main chunk) or prefill_<size>."""
    return "decode" if size == 1 else "prefill" if size == main else f"prefill_{size}"


def guard_vocab(tok: Tokenizer, max_code: int = 99) -> list[int]:
    """Token ids the guard can emit: safe/unsafe, "S"/",S" and numbers of category codes, separators, end of turn."""
    t = tok.tokens
    keep = {t.safe, t.unsafe, t.newline, t.blank, t.s, t.eot}
    end = tok.token_id("<|end_of_text|>")  # Llama 3 has it; a ChatML model given the Llama 3 headers may not
    if end is not None:
        keep.add(end)
    keep.update(tok.encode(","))
    for i in range(max_code + 1):
        keep.update(tok.encode(f"S{i}") + tok.encode(f",S{i}"))
    return sorted(keep)


def build(tokens: GuardTokens, *, max_seq_len: int, chunk: int, vocab_size: int, output_ids: list[int] | None,
          prompt_format: str, quant_scheme: str, group_size: int, chunks: list[int] | None = None,
          tokenizer_sha256: str | None = None, attention_span: int = 0) -> dict:
    meta = {
        MARKER: PTE_FORMAT, "get_max_seq_len": max_seq_len, "get_prefill_chunk": chunk, "get_vocab_size": vocab_size,
        CHUNKS: sorted(set(chunks or [chunk]), reverse=True),
        "get_output_ids": list(output_ids) if output_ids else [-1],  # [-1]: full vocabulary
        "get_prompt_format": prompt_format, "get_quant_scheme": quant_scheme, "get_group_size": group_size,
        "get_eos_ids": [tokens.eot],  # the name ExecuTorch's own runners read
    }
    meta.update({f"get_{k}_id": getattr(tokens, k) for k in TOKEN_KEYS})
    if tokenizer_sha256:
        meta[TOKENIZER_DIGEST] = tokenizer_sha256
    if attention_span:
        meta[SPAN] = attention_span
    return meta
