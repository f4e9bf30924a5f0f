"""PteRunner: a guard .pte run by the ExecuTorch runtime (XNNPACK), implementing guard.runtime.runner.Runner.

Two ways into the runtime, same results:
- guard.runtime.etlite (default): a small C library over the runtime's C++ API, through ctypes. No torch import,
  so `guard classify` starts in well under a second; the .pte is mmapped and XNNPACK's weight cache is on, so
  every prefill method and decode share one packed copy of the weights.
- executorch's Python bindings (fallback when etlite cannot be compiled, or GUARD_NO_ETLITE=1): need torch.
Logits are returned as float32 numpy arrays either way.

Prefill of any length is split into the static chunk methods the file has (``get_prefill_chunks``, e.g. 128, 32
and 8, plus decode for single tokens), choosing the split with the least computed tokens plus a per-call overhead
(``plan``); files from before chunk methods have ``prefill`` only and are padded to ``get_prefill_chunk``.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from pathlib import Path

from guard.errors import GuardError
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


def _load_program(path: Path):
    """The .pte through executorch's Python bindings (imports torch)."""
    from executorch.runtime import Runtime

    import executorch.kernels.quantized  # noqa: F401  (registers embedding_4bit)

    if not path.is_file():
        raise GuardError(f"model file not found: {path}")
    try:
        return Runtime.get().load_program(path)
    except Exception:
        raise GuardError(f"{path} is not a loadable ExecuTorch program (truncated or corrupt?)") from None


class _Pybind:
    """executorch.runtime.Program behind the small interface etlite.Program has."""

    def __init__(self, path: Path):
        self._program = _load_program(path)
        self.method_names = self._program.method_names
        self._methods = {}

    def constant(self, name: str) -> list:
        return list(self._program.load_method(name).execute([]))

    def load(self, name: str) -> None:
        self._methods[name] = self._program.load_method(name)

    def step(self, name: str, tokens: list[int], pos: list[int], last: int, width: int):
        import torch

        args = [torch.tensor([tokens], dtype=torch.long), torch.tensor(pos, dtype=torch.long), torch.tensor([last])]
        return self._methods[name].execute(args)[0][0].numpy()


def open_program(path: Path):
    """-> etlite.Program (no torch) or _Pybind; one-line GuardErrors for a missing or corrupt file."""
    from guard.runtime import etlite

    if not path.is_file():
        raise GuardError(f"model file not found: {path}")
    lib = etlite.library()
    if lib is None:
        return _Pybind(path)
    cache = os.environ.get("GUARD_WEIGHT_CACHE", "1") != "0"
    try:
        return etlite.Program(lib, path, weight_cache=cache, packed_cache=packed_cache_path(path) if cache else None)
    except RuntimeError:
        raise GuardError(f"{path} is not a loadable ExecuTorch program (truncated or corrupt?)") from None


def packed_cache_path(path: Path) -> str | None:
    """GUARD_PACKED_CACHE=1: XNNPACK keeps the packed weights of ``path`` in a file under GUARD_HOME/etlite/packed
    and later processes map it instead of packing again (keyed by the .pte's path, size and mtime)."""
    if os.environ.get("GUARD_PACKED_CACHE", "0") == "0":
        return None
    import hashlib

    from guard.defaults import HOME

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]
    d = HOME / "etlite" / "packed"
    d.mkdir(parents=True, exist_ok=True)
    return str(d / f"{key}.xnnpacked")


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
            raise GuardError(f"{path} lacks metadata {key}; {hint}")
        try:
            out = program.constant(key) if hasattr(program, "constant") else list(program.load_method(key).execute([]))
        except Exception:
            raise GuardError(f"cannot read metadata {key} from {path}") from None
        meta[key] = list(out) if key in ("get_output_ids", CHUNKS) else out[0]
    return meta


def check_tokenizer(tok, meta: dict, path: Path):
    """The tokenizer's special-token ids must be the ones the program was exported with."""
    for k in TOKEN_KEYS:
        if getattr(tok.tokens, k) != int(meta[f"get_{k}_id"]):
            raise GuardError(f"tokenizer beside {path} disagrees with the model's {k} token id")
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
    """Runner over a .pte written by guard.export; the tokenizer is read from tokenizer.json beside it."""

    def __init__(self, path: str | Path, tokenizer=None):
        with quiet_stderr():
            self._load(Path(path), tokenizer)

    def _load(self, path: Path, tokenizer) -> None:
        """The program (metadata, then every method: XNNPACK packs the weights) loads in a thread while the
        tokenizer (a 9-17 MB tokenizer.json) is parsed here: etlite's calls release the GIL, so on two cores the
        two overlap."""
        import threading

        from guard.format.tokenizer import Tokenizer

        self.path = path
        box: dict = {}

        def load_program():
            try:
                self._open(path)
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e

        worker = threading.Thread(target=load_program, name="guard-pte-load")
        worker.start()
        try:
            tok = tokenizer or Tokenizer.from_dir(path.parent)
        except GuardError as e:
            tok, box["tok_error"] = None, e
        import numpy  # noqa: F401  (the logits' type; imported while the worker loads, not at the first step)

        worker.join()
        if "error" in box:  # the model's own problems are reported first
            raise box["error"]
        if "tok_error" in box:
            raise box["tok_error"]
        self.tokenizer = tok if tokenizer else check_tokenizer(tok, self.meta, path)

    def _open(self, path: Path) -> None:
        program = open_program(path)
        names = program.method_names
        if MARKER not in names:
            raise GuardError(f"{path} is not a guard model (no {MARKER} method); export it with `guard export`")
        meta = read_metadata(program, path, REQUIRED + ((CHUNKS,) if CHUNKS in names else ()),
                             "re-export it with `guard export`")
        if meta[MARKER] != PTE_FORMAT:
            raise GuardError(f"{path} has format {meta[MARKER]!r}; this runtime reads {PTE_FORMAT!r}")
        from guard.format.prompt import FORMAT_VERSION

        if meta["get_prompt_format"] != FORMAT_VERSION:
            raise GuardError(f"{path} expects prompt format {meta['get_prompt_format']!r}, not {FORMAT_VERSION!r}")
        missing = [m for m in METHODS if m not in names]
        if missing:
            raise GuardError(f"{path} lacks the {missing[0]} method; re-export it with `guard export`")
        self.meta = meta
        self.max_seq_len = int(meta["get_max_seq_len"])
        self.chunk = int(meta["get_prefill_chunk"])
        self.chunks = sorted({int(c) for c in meta.get(CHUNKS, [self.chunk])} | {1}, reverse=True)
        self._methods = {c: chunk_method(c, self.chunk) for c in self.chunks}
        ids = [int(i) for i in meta["get_output_ids"]]
        self.output_ids = None if ids == [-1] else ids
        self._width = len(ids) if self.output_ids else int(meta["get_vocab_size"])
        self.name = f"pte:{meta['get_quant_scheme']}"
        self.threads = set_threads()
        for m in self._methods.values():
            if m not in names:
                raise GuardError(f"{path} lacks the {m} method its metadata names; re-export it")
            try:
                program.load(m)
            except RuntimeError:
                raise GuardError(f"cannot load the model methods from {path} (truncated or corrupt?)") from None
        self._program = program

    def _check(self, n: int, start_pos: int) -> None:
        if start_pos < 0 or start_pos + n > self.max_seq_len:
            raise GuardError(f"positions {start_pos}..{start_pos + n - 1} exceed the model's max_seq_len {self.max_seq_len}")

    def _run(self, size: int, part: list[int], pos: int):
        n = len(part)
        try:
            return self._program.step(self._methods[size], part + [0] * (size - n), list(range(pos, pos + size)), n - 1,
                                      self._width)
        except RuntimeError as e:
            raise GuardError(f"the model failed to run ({e})") from None

    def prefill(self, tokens: list[int], start_pos: int):
        """Write positions start_pos.. in static chunks (``plan``); -> float32 logits of the last token."""
        if not tokens:
            raise GuardError("prefill needs at least one token")
        self._check(len(tokens), start_pos)
        i, out = 0, None
        for size in plan(len(tokens), self.chunks):
            part = tokens[i:i + size]
            out = self._run(size, part, start_pos + i)
            i += len(part)
        return out

    def decode(self, token: int, pos: int):
        self._check(1, pos)
        return self._run(1, [int(token)], pos)
