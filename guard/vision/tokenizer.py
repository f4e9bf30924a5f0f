"""The Llama 3.2 Vision tokenizer: the Llama 3 tokenizer plus ``<|image|>`` appended as special token 128256.

That is how transformers' mllama conversion builds it (Meta's tiktoken file has ``<|image|>`` at 128011; the
Hugging Face checkpoints, Llama Guard 3-11B-Vision included, use 128256 and ``image_token_index: 128256``). The
text embedding of those checkpoints has ``vocab_size + 8`` rows, so 128256 has an embedding.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from guard.errors import GuardError
from guard.format.tokenizer import IMAGE, Tokenizer, convert_tiktoken, llama_models_tokenizer_path, save_hf_tokenizer

IMAGE_ID = 128256


def _with_image(tok):
    from tokenizers import AddedToken

    if tok.token_to_id(IMAGE) is None:
        tok.add_special_tokens([AddedToken(IMAGE, special=True, normalized=False)])
    if tok.token_to_id(IMAGE) != IMAGE_ID:
        raise GuardError(f"{IMAGE} got id {tok.token_to_id(IMAGE)}, expected {IMAGE_ID}; is the base a Llama 3 tokenizer?")
    return tok


@lru_cache(maxsize=1)
def vision_tokenizer() -> Tokenizer:
    """The real Llama 3 tokenizer (llama-models) with ``<|image|>`` = 128256."""
    return Tokenizer(_with_image(convert_tiktoken(llama_models_tokenizer_path())), "llama-models llama3/tokenizer.model + <|image|>")


def save_vision_tokenizer(out_dir: str | Path) -> None:
    """tokenizer.json (+ config) with ``<|image|>``, as in a Llama 3.2 Vision checkpoint directory."""
    from tokenizers import Tokenizer as HFTok

    out_dir = Path(out_dir)
    save_hf_tokenizer(out_dir)
    tok = _with_image(HFTok.from_file(str(out_dir / "tokenizer.json")))
    tok.save(str(out_dir / "tokenizer.json"))


def image_position(current: int | None, tokens: list[int], start_pos: int, image_token: int) -> int | None:
    """Where ``<|image|>`` sits in a KV cache (None: not there) once ``tokens`` are written from ``start_pos`` on."""
    if current is not None and current >= start_pos:
        current = None
    return start_pos + tokens.index(image_token) if current is None and image_token in tokens else current


def image_id(tok: Tokenizer) -> int:
    """The ``<|image|>`` id of ``tok``; a GuardError naming the fix when the tokenizer is text-only."""
    i = tok.token_id(IMAGE)
    if i is None:
        raise GuardError(f"tokenizer {tok.source} has no {IMAGE} token: use a Llama 3.2 Vision / Llama Guard 3 Vision "
                         f"checkpoint's tokenizer.json")
    return i
