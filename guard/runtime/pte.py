"""PteRunner: a guard .pte run by the ExecuTorch runtime (XNNPACK), implementing guard.runtime.runner.Runner."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from guard.errors import BadModelFile, GuardError, SequenceTooLong
from guard.export.metadata import MARKER, METHODS, PTE_FORMAT, REQUIRED, TOKEN_KEYS


@contextlib.contextmanager
def quiet_stderr():
    """The runtime's C++ logging (cpuinfo probes) writes to fd 2; keep the CLI's stderr to one line."""
    if os.environ.get("GUARD_DEBUG"):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def set_threads(n: int | None = None) -> int:
    """XNNPACK's threadpool size: GUARD_THREADS, else every available core."""
    from executorch.extension.pybindings import portable_lib

    n = n or int(os.environ.get("GUARD_THREADS", 0)) or len(os.sched_getaffinity(0))
    if portable_lib._threadpool_get_thread_count() != n:
        portable_lib._unsafe_reset_threadpool(n)
    return portable_lib._threadpool_get_thread_count()


def load_program(path: Path):
    """The ExecuTorch program at ``path`` (opened once; the runners take it as is)."""
    from executorch.runtime import Runtime

    import executorch.kernels.quantized  # noqa: F401  (registers embedding_4bit)

    if not path.is_file():
        raise BadModelFile(f"model file not found: {path}")
    try:
        return Runtime.get().load_program(path)
    except Exception:
        raise BadModelFile(f"{path} is not a loadable ExecuTorch program (truncated or corrupt?)") from None


def read_metadata(program, path: Path, keys, hint: str) -> dict:
    """The constant methods ``keys`` of a loaded program, each executed once; a missing one names ``hint``."""
    names = program.method_names
    meta = {}
    for key in keys:
        if key not in names:
            raise BadModelFile(f"{path} lacks metadata {key}; {hint}")
        try:
            out = program.load_method(key).execute([])
        except Exception:
            raise BadModelFile(f"cannot read metadata {key} from {path}") from None
        meta[key] = list(out) if key == "get_output_ids" else out[0]
    return meta


def check_tokenizer(tok, meta: dict, path: Path):
    """The tokenizer's special-token ids must be the ones the program was exported with."""
    for k in TOKEN_KEYS:
        if getattr(tok.tokens, k) != int(meta[f"get_{k}_id"]):
            raise BadModelFile(f"tokenizer beside {path} disagrees with the model's {k} token id")
    return tok


class PteRunner:
    """Runner over a .pte written by guard.export; the tokenizer is read from tokenizer.json beside it.

    Subclasses (guard.vision.pte) name their format, metadata and methods and use three hooks: ``_setup`` after
    loading, ``_on_tokens`` before tokens are written at a position, ``_extra(pos, n)`` for the inputs each
    prefill/decode call takes after (tokens, pos, last)."""

    FORMAT, REQUIRED, METHODS, KIND = PTE_FORMAT, REQUIRED, METHODS, "pte"

    def __init__(self, path: str | Path, tokenizer=None, program=None):
        with quiet_stderr():
            self._load(Path(path), tokenizer, program)

    def _load(self, path: Path, tokenizer, program) -> None:
        from guard.format.prompt import FORMAT_VERSION
        from guard.format.tokenizer import Tokenizer

        self.path = path
        program = program or load_program(path)
        names = program.method_names
        if MARKER not in names:
            raise BadModelFile(f"{path} is not a guard model (no {MARKER} method); export it with `guard export`")
        meta = read_metadata(program, path, self.REQUIRED, "re-export it with `guard export`")
        if meta[MARKER] != self.FORMAT:
            raise BadModelFile(f"{path} has format {meta[MARKER]!r}; this runtime reads {self.FORMAT!r}")
        if meta["get_prompt_format"] != FORMAT_VERSION:
            raise BadModelFile(f"{path} expects prompt format {meta['get_prompt_format']!r}, not {FORMAT_VERSION!r}")
        missing = [m for m in self.METHODS if m not in names]
        if missing:
            raise BadModelFile(f"{path} lacks the {missing[0]} method; re-export it with `guard export`")
        self.meta = meta
        self.tokenizer = tokenizer or check_tokenizer(Tokenizer.from_dir(path.parent), meta, path)
        self.max_seq_len = int(meta["get_max_seq_len"])
        self.chunk = int(meta["get_prefill_chunk"])
        ids = [int(i) for i in meta["get_output_ids"]]
        self.output_ids = None if ids == [-1] else ids
        self.name = f"{self.KIND}:{meta['get_quant_scheme']}"
        self.threads = set_threads()
        try:
            self.methods = {m: program.load_method(m) for m in self.METHODS}
        except Exception:
            raise BadModelFile(f"cannot load the model methods from {path} (truncated or corrupt?)") from None
        self._prefill, self._decode = self.methods["prefill"], self.methods["decode"]
        self._program = program
        self._setup(program, meta)

    def _setup(self, program, meta: dict) -> None:
        """Hook: read a subclass's own metadata and methods."""

    def _on_tokens(self, tokens: list[int], start_pos: int) -> None:
        """Hook: ``tokens`` are about to be written from ``start_pos`` on."""

    def _extra(self, pos: int, n: int) -> list:
        """Hook: the inputs after (tokens, pos, last) for positions pos..pos+n-1."""
        return []

    def _check(self, n: int, start_pos: int) -> None:
        if start_pos < 0 or start_pos + n > self.max_seq_len:
            raise SequenceTooLong(f"positions {start_pos}..{start_pos + n - 1} exceed the model's max_seq_len {self.max_seq_len}")

    def prefill(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        """Write positions start_pos.. in chunks of ``chunk`` (the last one padded); logits of the last token."""
        if not tokens:
            raise GuardError("prefill needs at least one token")
        self._check(len(tokens), start_pos)
        self._on_tokens(tokens, start_pos)
        C, pos, out = self.chunk, start_pos, None
        for i in range(0, len(tokens), C):
            part = tokens[i:i + C]
            n = len(part)
            if n == 1 and out is not None or len(tokens) == 1:
                return self.decode(part[0], pos)
            x = torch.tensor([part + [0] * (C - n)], dtype=torch.long)
            out = self._prefill.execute([x, torch.arange(pos, pos + C), torch.tensor([n - 1]), *self._extra(pos, C)])[0]
            pos += n
        return out[0]

    def decode(self, token: int, pos: int) -> torch.Tensor:
        self._check(1, pos)
        self._on_tokens([token], pos)
        x = torch.tensor([[token]], dtype=torch.long)
        return self._decode.execute([x, torch.tensor([pos]), torch.tensor([0]), *self._extra(pos, 1)])[0][0]
