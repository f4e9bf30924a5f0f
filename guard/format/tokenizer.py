"""The Llama 3 tokenizer, loaded from a checkpoint's tokenizer files or from the `llama-models` package.

Conversation text is always encoded with special-token parsing switched off, so a message that spells
``<|eot_id|>`` becomes ordinary text tokens and can never end the template early.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from guard.errors import GuardError

BOS, EOT = "<|begin_of_text|>", "<|eot_id|>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"
IMAGE = "<|image|>"

# Special tokens of the Llama 3.1/3.2 text tokenizers (ids 128000..128255), as in Llama Guard 3's tokenizer.json.
_NAMED = {
    0: BOS, 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: START_HEADER, 7: END_HEADER,
    8: "<|eom_id|>", 9: EOT, 10: "<|python_tag|>",
}


def llama3_special_tokens() -> list[str]:
    reserved = (f"<|reserved_special_token_{k}|>" for k in range(256))  # numbered over the unnamed ids only
    return [_NAMED[i] if i in _NAMED else next(reserved) for i in range(256)]


def llama_models_tokenizer_path() -> Path:
    try:
        import llama_models
    except ImportError:
        raise GuardError("the llama-models package is not installed; it ships the Llama 3 tokenizer") from None
    return Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"


def convert_tiktoken(model_path: Path):
    """Build a `tokenizers.Tokenizer` (tokenizer.json) from a Llama 3 tiktoken file."""
    from tokenizers import Tokenizer as HFTok

    return HFTok.from_str(_converted_json(str(model_path)))


@lru_cache(maxsize=4)
def _saved_json(model_path: str) -> str:
    """tokenizer.json's text as ``Tokenizer.save`` writes it, built once per process (each test checkpoint writes
    one: parsing and re-serialising the 128k-token vocabulary took ~2 s a checkpoint)."""
    return convert_tiktoken(Path(model_path)).to_str(pretty=True)


@lru_cache(maxsize=4)
def _converted_json(model_path: str) -> str:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=model_path, additional_special_tokens=llama3_special_tokens()).converted()
    if tok.get_vocab_size() != 128256:
        raise GuardError(f"{model_path} is not a Llama 3 tokenizer ({tok.get_vocab_size()} tokens)")
    return tok.to_str()


def save_hf_tokenizer(out_dir: Path, model_path: Path | None = None) -> None:
    """Write tokenizer.json and tokenizer_config.json for the real Llama 3 tokenizer into ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / "tokenizer.json").write_text(_saved_json(str(model_path or llama_models_tokenizer_path())), "utf-8")
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOT,
        "clean_up_tokenization_spaces": True,
        "model_max_length": 131072,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


@dataclass(frozen=True)
class GuardTokens:
    """Token ids the guard relies on, read from the tokenizer (never assumed)."""

    bos: int
    start_header: int
    end_header: int
    eot: int
    safe: int
    unsafe: int
    newline: int  # "\n"
    blank: int  # "\n\n"
    s: int  # "S", forced after "unsafe\n"

class Tokenizer:
    def __init__(self, tok, source: str):
        self._tok = tok
        self._tok.encode_special_tokens = True  # plain-text encoding: specials in text are not special
        self.source = source
        self.vocab_size = tok.get_vocab_size()
        self.tokens = GuardTokens(
            bos=self.special_id(BOS), start_header=self.special_id(START_HEADER), end_header=self.special_id(END_HEADER),
            eot=self.special_id(EOT), safe=self.single_id("safe"), unsafe=self.single_id("unsafe"),
            newline=self.single_id("\n"), blank=self.single_id("\n\n"), s=self.single_id("S"),
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        from tokenizers import Tokenizer as HFTok

        for name, read, what in (("tokenizer.json", lambda f: HFTok.from_file(str(f)), ""),
                                 ("tokenizer.model", convert_tiktoken, " as a Llama 3 tiktoken file")):
            if (path / name).is_file():
                try:
                    return cls(read(path / name), str(path / name))
                except GuardError:
                    raise
                except Exception as e:
                    raise GuardError(f"cannot read {path / name}{what}: {e}") from None
        raise GuardError(f"no tokenizer in {path} (expected tokenizer.json or tokenizer.model)")

    @classmethod
    def default(cls) -> "Tokenizer":
        return _default_tokenizer()

    def special_id(self, text: str) -> int:
        i = self._tok.token_to_id(text)
        if i is None:
            raise GuardError(f"tokenizer {self.source} has no {text} token; is it a Llama 3 tokenizer?")
        return i

    def single_id(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise GuardError(f"tokenizer {self.source} splits {text!r} into {len(ids)} tokens; is it a Llama 3 tokenizer?")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        """Plain-text encoding: never yields special tokens, whatever the text spells."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` as one vocabulary entry (special or not), or None."""
        return self._tok.token_to_id(token)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json."""
        self._tok.save(str(path))


@lru_cache(maxsize=1)
def _default_tokenizer() -> Tokenizer:
    return Tokenizer(convert_tiktoken(llama_models_tokenizer_path()), "llama-models llama3/tokenizer.model")
