"""PteRunner: a guard .pte run by the ExecuTorch runtime (XNNPACK), implementing guard.runtime.runner.Runner.

Two ways into the runtime, same results:
- guard.runtime.etlite (text models, default): a small C library over the runtime's C++ API, through ctypes. No
  torch import, so `guard classify` starts without torch/exir; the .pte is mmapped and XNNPACK's weight cache is
  on, so every prefill method and decode share one packed copy of the weights. Logits are float32 numpy arrays.
- executorch's Python bindings (``load_program``; vision models, whose methods take extra tensor inputs, and the
  fallback when etlite cannot be compiled or GUARD_NO_ETLITE=1): torch tensors.

Prefill of any length is split into the static chunk methods the file has (``get_prefill_chunks``, e.g. 128, 32
and 8, plus decode for single tokens), choosing the split with the least computed tokens plus a per-call overhead
(``plan``); files from before chunk methods have ``prefill`` only and are padded to ``get_prefill_chunk``.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from pathlib import Path

from guard.errors import BadModelFile, GuardError, SequenceTooLong
from guard.export.metadata import CHUNKS, MARKER, METHODS, PTE_FORMAT, REQUIRED, TOKEN_KEYS, chunk_method

CALL_OVERHEAD = 10  # a call costs about as much as this many extra tokens (weights are read once per call)


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
    """XNNPACK's threadpool size: GUARD_THREADS, else every available core. Set before methods are loaded."""
    from guard.runtime import etlite

    n = n or int(os.environ.get("GUARD_THREADS", 0)) or len(os.sched_getaffinity(0))
    lib = etlite.library()
    if lib is not None:
        return lib.etl_threads(n)
    from executorch.extension.pybindings import _portable_lib as portable_lib

    if portable_lib._threadpool_get_thread_count() != n:
        portable_lib._unsafe_reset_threadpool(n)
    return portable_lib._threadpool_get_thread_count()


def load_program(path: Path):
    """The ExecuTorch program at ``path`` through executorch's Python bindings (imports torch)."""
    from executorch.runtime import Runtime

    import executorch.kernels.quantized  # noqa: F401  (registers embedding_4bit)

    if not path.is_file():
        raise BadModelFile(f"model file not found: {path}")
    try:
        return Runtime.get().load_program(path)
    except Exception:
        raise BadModelFile(f"{path} is not a loadable ExecuTorch program (truncated or corrupt?)") from None


def packed_cache_path(path: Path) -> str | None:
    """GUARD_PACKED_CACHE=1 (experimental): ask XNNPACK to keep the packed weights in a file under
    GUARD_HOME/etlite/packed for later processes (the 1.4.1 runtime did not write one; docs/export.md)."""
    if os.environ.get("GUARD_PACKED_CACHE", "0") == "0":
        return None
    import hashlib

    from guard.defaults import HOME

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]
    d = HOME / "etlite" / "packed"
    d.mkdir(parents=True, exist_ok=True)
    return str(d / f"{key}.xnnpacked")


def open_program(path: Path):
    """The program through etlite (no torch) when it is available, else ``load_program``."""
    from guard.runtime import etlite

    if not path.is_file():
        raise BadModelFile(f"model file not found: {path}")
    lib = etlite.library()
    if lib is None:
        return load_program(path)
    cache = os.environ.get("GUARD_WEIGHT_CACHE", "1") != "0"
    try:
        return etlite.Program(lib, path, weight_cache=cache, packed_cache=packed_cache_path(path) if cache else None)
    except RuntimeError:
        raise BadModelFile(f"{path} is not a loadable ExecuTorch program (truncated or corrupt?)") from None


def method_names(path: str | Path) -> set[str]:
    """The method names of a .pte (header only; empty for a file that is not a program)."""
    try:
        with quiet_stderr():
            return set(open_program(Path(path)).method_names)
    except GuardError:
        return set()


def read_metadata(program, path: Path, keys, hint: str) -> dict:
    """The constant methods ``keys`` of a loaded program, each executed once; a missing one names ``hint``."""
    names = program.method_names
    meta = {}
    for key in keys:
        if key not in names:
            raise BadModelFile(f"{path} lacks metadata {key}; {hint}")
        try:
            out = program.constant(key) if hasattr(program, "constant") else list(program.load_method(key).execute([]))
        except Exception:
            raise BadModelFile(f"cannot read metadata {key} from {path}") from None
        meta[key] = list(out) if key in ("get_output_ids", CHUNKS) else out[0]
    return meta


def check_tokenizer(tok, meta: dict, path: Path):
    """The tokenizer's special-token ids must be the ones the program was exported with."""
    for k in TOKEN_KEYS:
        if getattr(tok.tokens, k) != int(meta[f"get_{k}_id"]):
            raise BadModelFile(f"tokenizer beside {path} disagrees with the model's {k} token id")
    return tok


@lru_cache(maxsize=4096)
def _best(n: int, sizes: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Cheapest split of n tokens into calls of the given static sizes (the last call may be padded)."""
    best = None
    for s in sizes:
        if s >= n:
            cand = (s + CALL_OVERHEAD, (s,))
        else:
            cost, rest = _best(n - s, sizes)
            cand = (cost + s + CALL_OVERHEAD, (s,) + rest)
        if best is None or cand[0] < best[0]:
            best = cand
    return best


def plan(n: int, sizes: list[int]) -> list[int]:
    """Call sizes for prefilling n tokens: largest chunks while they are full, then the cheapest mix for the rest."""
    sizes = tuple(sorted(set(sizes), reverse=True))
    big, calls = sizes[0], []
    while n > 2 * big:
        calls.append(big)
        n -= big
    return calls + list(_best(n, sizes)[1])


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
        import threading

        from guard.format.prompt import FORMAT_VERSION
        from guard.format.tokenizer import Tokenizer

        self.path = path
        text_only = type(self)._extra is PteRunner._extra  # extra tensor inputs need the Python bindings
        program = program or (open_program(path) if text_only else load_program(path))
        self._etl = hasattr(program, "step")
        names = program.method_names
        if MARKER not in names:
            raise BadModelFile(f"{path} is not a guard model (no {MARKER} method); export it with `guard export`")
        meta = read_metadata(program, path, self.REQUIRED + ((CHUNKS,) if CHUNKS in names else ()),
                             "re-export it with `guard export`")
        if meta[MARKER] != self.FORMAT:
            raise BadModelFile(f"{path} has format {meta[MARKER]!r}; this runtime reads {self.FORMAT!r}")
        if meta["get_prompt_format"] != FORMAT_VERSION:
            raise BadModelFile(f"{path} expects prompt format {meta['get_prompt_format']!r}, not {FORMAT_VERSION!r}")
        missing = [m for m in self.METHODS if m not in names]
        if missing:
            raise BadModelFile(f"{path} lacks the {missing[0]} method; re-export it with `guard export`")
        self.meta = meta
        self.max_seq_len = int(meta["get_max_seq_len"])
        self.chunk = int(meta["get_prefill_chunk"])
        self.chunks = sorted({int(c) for c in meta.get(CHUNKS, [self.chunk])} | {1}, reverse=True)
        self._chunk_names = {c: chunk_method(c, self.chunk) for c in self.chunks}
        missing = [m for m in self._chunk_names.values() if m not in names]
        if missing:
            raise BadModelFile(f"{path} lacks the {missing[0]} method its metadata names; re-export it")
        ids = [int(i) for i in meta["get_output_ids"]]
        self.output_ids = None if ids == [-1] else ids
        self._width = len(ids) if self.output_ids else int(meta["get_vocab_size"])
        self.name = f"{self.KIND}:{meta['get_quant_scheme']}"
        self.threads = set_threads()
        # The methods load (XNNPACK packs the weights) on a thread while the tokenizer is parsed here: etlite's calls
        # release the GIL, so on two cores the two overlap.
        box: dict = {}
        worker = threading.Thread(target=self._load_methods, args=(program, path, box), name="guard-pte-load")
        worker.start()
        try:
            tok = tokenizer or check_tokenizer(Tokenizer.from_dir(path.parent), meta, path)
        except GuardError as e:
            tok, box["tok_error"] = None, e
        import numpy  # noqa: F401  (the logits' type; imported while the methods load, not at the first step)

        worker.join()
        for key in ("error", "tok_error"):  # the model's own problems are reported first
            if key in box:
                raise box[key]
        self.tokenizer = tok
        self._program = program
        self._setup(program, meta)

    def _load_methods(self, program, path: Path, box: dict) -> None:
        try:
            names = set(self.METHODS) | set(self._chunk_names.values())
            if self._etl:
                for m in sorted(names):
                    program.load(m)
                self.methods = {}
            else:
                self.methods = {m: program.load_method(m) for m in sorted(names)}
        except Exception:
            box["error"] = BadModelFile(f"cannot load the model methods from {path} (truncated or corrupt?)")

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

    def _run(self, size: int, part: list[int], pos: int):
        n, name = len(part), self._chunk_names[size]
        padded = part + [0] * (size - n)
        if self._etl:
            try:
                return self._program.step(name, padded, list(range(pos, pos + size)), n - 1, self._width)
            except RuntimeError as e:
                raise GuardError(f"the model failed to run ({e})") from None
        import torch

        x = torch.tensor([padded], dtype=torch.long)
        return self.methods[name].execute([x, torch.arange(pos, pos + size), torch.tensor([n - 1]), *self._extra(pos, size)])[0][0]

    def prefill(self, tokens: list[int], start_pos: int):
        """Write positions start_pos.. in static chunks (``plan``); -> logits of the last token (numpy through
        etlite, torch through the Python bindings)."""
        if not tokens:
            raise GuardError("prefill needs at least one token")
        self._check(len(tokens), start_pos)
        self._on_tokens(tokens, start_pos)
        i, out = 0, None
        for size in plan(len(tokens), self.chunks):
            part = tokens[i:i + size]
            out = self._run(size, part, start_pos + i)
            i += len(part)
        return out

    def decode(self, token: int, pos: int):
        self._check(1, pos)
        self._on_tokens([token], pos)
        return self._run(1, [int(token)], pos)
