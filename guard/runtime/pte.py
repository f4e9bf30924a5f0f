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
import sys
from functools import lru_cache
from pathlib import Path

from guard.errors import BadModelFile, GuardError, GuardWarning, SequenceTooLong
from guard.export.metadata import (CHUNKS, MARKER, METHODS, PTE_FORMAT, REQUIRED, SPAN, TOKEN_KEYS, TOKENIZER_DIGEST,
                                   chunk_method, file_digest)

PTE_IDENTIFIER = b"ET12"  # the flatbuffer file identifier of ExecuTorch programs (bytes 4..8)
EXTENDED_MAGIC = b"eh00"  # ExecuTorch's extended header, at bytes 8..12 (exir/_serialize/_program.py)
MIN_PTE_BYTES = 64  # ExecuTorch reads this many head bytes to find the headers
CALL_OVERHEAD = 10  # a call costs about as much as this many extra tokens (weights are read once per call)


@contextlib.contextmanager
def quiet_stderr():
    """XNNPACK's cpuinfo probes write to fd 2 when the threadpool and the delegates start; keep the CLI's stderr to
    one line (GUARD_DEBUG=1 shows them). What was written is kept aside and shown if the block fails, so a failure
    still says something. Used only after the file's header was checked (check_pte_file)."""
    import tempfile

    from guard.logs import debug

    if debug():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    try:
        with tempfile.TemporaryFile() as aside:
            os.dup2(aside.fileno(), 2)
            try:
                yield
                failed = False
            finally:
                os.dup2(saved, 2)
                if failed:
                    aside.seek(0)
                    text = aside.read().decode("utf-8", "replace")
                    lines = [ln for ln in text.splitlines() if ln.strip() and "cpuinfo" not in ln]
                    if lines:
                        print("\n".join(lines[-5:]), file=sys.stderr)
    finally:
        os.close(saved)


def threads_from_env() -> int:
    raw = os.environ.get("GUARD_THREADS", "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 1 <= n <= 256:
        raise GuardError(f"GUARD_THREADS must be a whole number of threads from 1 to 256, got {raw[:20]!r}")
    return n


def set_threads(n: int | None = None) -> int:
    """XNNPACK's threadpool size: GUARD_THREADS, else every available core. Set before methods are loaded."""
    from guard.runtime import etlite

    n = n or threads_from_env() or len(os.sched_getaffinity(0))
    lib = etlite.library()
    with quiet_stderr():
        if lib is not None:
            return lib.etl_threads(n)
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != n:
            portable_lib._unsafe_reset_threadpool(n)
        return portable_lib._threadpool_get_thread_count()


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing). Parsing Llama 3's
    tokenizer.json frees ~85 MB of temporaries that glibc keeps mapped; with the packed-weight file nothing reuses
    them, so the 1B shape's peak RSS was 666 MB instead of 583 (docs/export.md). Costs a few ms."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)


def check_pte_file(path: Path) -> None:
    """Refuse what is not an ExecuTorch program before the runtime sees it.

    The runtime aborts the whole process on some garbage (its error log of a bad header is not valid UTF-8, which
    pybind turns into std::terminate), so the header is checked here: the flatbuffer identifier ``ET12`` at bytes
    4..8, a root offset inside the file and, when the extended header ``eh00`` is present, program and segment
    sizes that fit in the file (a truncated download)."""
    if not path.exists():
        raise BadModelFile(f"model file not found: {path}")
    if not path.is_file():
        raise BadModelFile(f"{path} is not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(MIN_PTE_BYTES)
    except OSError as e:
        raise BadModelFile(f"cannot read {path}: {e.strerror}") from None
    bad = f"{path} is not an ExecuTorch program"
    if size < MIN_PTE_BYTES:
        raise BadModelFile(f"{bad} ({size} bytes)")
    if head[4:8] != PTE_IDENTIFIER:
        raise BadModelFile(f"{bad} (no {PTE_IDENTIFIER.decode()} identifier in its header)")
    root = int.from_bytes(head[0:4], "little")
    if not 8 <= root < size:
        raise BadModelFile(f"{bad} (its root offset {root} is outside the file)")
    if head[8:12] == EXTENDED_MAGIC:
        length = int.from_bytes(head[12:16], "little")
        program = int.from_bytes(head[16:24], "little")
        base = int.from_bytes(head[24:32], "little")
        data = int.from_bytes(head[32:40], "little") if length >= 32 else 0
        if length < 24 or program > size or (base and (base < program or base + data > size)):
            raise BadModelFile(f"{path} is truncated or corrupt: its header promises {max(program, base + data)} bytes, "
                               f"the file has {size}")


def load_program(path: Path):
    """The ExecuTorch program at ``path`` through executorch's Python bindings (imports torch). The header is checked first
    (check_pte_file); the runtime's own log of a failure goes into the one-line BadModelFile."""
    check_pte_file(path)
    from executorch.runtime import Runtime

    import executorch.kernels.quantized  # noqa: F401  (registers embedding_4bit)

    import io

    # The runtime logs through Python's sys.stderr: its message goes into the one-line error, not above it.
    log, saved = io.StringIO(), sys.stderr
    sys.stderr = log
    try:
        program = Runtime.get().load_program(path)
    except Exception:
        why = [line.split("] ", 1)[-1] for line in log.getvalue().splitlines() if line.strip()]
        raise BadModelFile(f"{path} is not a loadable ExecuTorch program"
                           + (f": {why[-1][:200]}" if why else " (truncated or corrupt?)")) from None
    finally:
        sys.stderr = saved
    if log.getvalue():
        print(log.getvalue(), end="", file=sys.stderr)
    return program


def open_program(path: Path):
    """The program through etlite (no torch) when it is available, else ``load_program``."""
    from guard.runtime import etlite

    check_pte_file(path)
    lib = etlite.library()
    if lib is None:
        return load_program(path)
    from guard.runtime import packed

    cache = os.environ.get("GUARD_WEIGHT_CACHE", "1") != "0"
    pk, publish = packed.choose(path, ",".join(etlite.BUILT)) if cache else (None, None)
    try:
        program = etlite.Program(lib, path, weight_cache=cache, packed_cache=pk)
    except RuntimeError:
        raise BadModelFile(f"{path} is not a loadable ExecuTorch program (truncated or corrupt?)") from None
    program.packed = (pk, publish)  # published by PteRunner once every method is loaded (guard.runtime.packed)
    return program


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


def check_tokenizer_digest(program, path: Path, trust: bool = False) -> None:
    """tokenizer.json beside the .pte must be the file it was exported with (its sha256 is in the metadata).

    ``trust``: accept a different one (``--trust-tokenizer``, ``check_tokenizer=False``). A .pte exported before the
    digest existed loads with a warning."""
    import warnings

    if trust:
        return
    tok_path = path.parent / "tokenizer.json"
    if TOKENIZER_DIGEST not in program.method_names:
        warnings.warn(f"{path} records no tokenizer digest (exported before it was added); tokenizer.json beside it "
                      "is not verified: re-export to pin it", GuardWarning, stacklevel=3)
        return
    want = read_metadata(program, path, (TOKENIZER_DIGEST,), "")[TOKENIZER_DIGEST]
    if not tok_path.is_file():
        raise BadModelFile(f"no tokenizer.json beside {path}")
    have = file_digest(tok_path)
    if have != want:
        raise BadModelFile(f"{tok_path} is not the tokenizer {path.name} was exported with (sha256 {have[:12]}, "
                           f"expected {want[:12]}); restore it, or trust it explicitly: --trust-tokenizer "
                           "(Python: check_tokenizer=False)")


_PREFETCH: dict = {}  # folder -> (thread, box): tokenizer.json parsed while the runtime library loads


def prefetch_tokenizer(folder: Path) -> None:
    """Start parsing ``folder``'s tokenizer on a thread (guard.runtime.load calls this before loading the runtime
    library: both release the GIL, so on two cores they overlap); ``tokenizer_of`` takes the result."""
    import threading

    import tokenizers  # noqa: F401  (imported here, not on the thread: see below)

    from guard.format.tokenizer import Tokenizer

    # Modules are imported on this thread before the parse starts: an import on the thread raced the caller's
    # imports (dataclasses reads sys.modules["typing"] without the import lock, and saw it half-initialised while
    # the thread imported tokenizers -> typing: "partially initialized module 'typing'", ~1 load in 8).
    box: dict = {}

    def parse():
        try:
            box["tok"] = Tokenizer.from_dir(folder)
        except Exception as e:  # re-raised by tokenizer_of, on the caller's thread
            box["error"] = e

    t = threading.Thread(target=parse, name="guard-tokenizer", daemon=True)
    _PREFETCH[str(folder)] = (t, box)
    t.start()


def drop_prefetch(folder: Path) -> None:
    _PREFETCH.pop(str(folder), None)


def tokenizer_of(folder: Path):
    """The tokenizer in ``folder``: the prefetched one when prefetch_tokenizer started it, else parsed now."""
    from guard.format.tokenizer import Tokenizer

    got = _PREFETCH.pop(str(folder), None)
    if got is None:
        return Tokenizer.from_dir(folder)
    t, box = got
    t.join()
    if "error" in box:
        raise box["error"]
    return box["tok"]


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
    """Runner over a .pte written by guard.export; the tokenizer is read from tokenizer.json beside it, and must be
    the one recorded at export (``check_tokenizer=False`` trusts another).

    Subclasses (guard.vision.pte) name their format, metadata and methods and use three hooks: ``_setup`` after
    loading, ``_on_tokens`` before tokens are written at a position, ``_extra(pos, n)`` for the inputs each
    prefill/decode call takes after (tokens, pos, last). ``CHECK_DIGEST = False``: a format without the digest."""

    FORMAT, REQUIRED, METHODS, KIND = PTE_FORMAT, REQUIRED, METHODS, "pte"
    CHECK_DIGEST = True

    def __init__(self, path: str | Path, tokenizer=None, program=None, check_tokenizer: bool = True):
        # stderr stays visible while loading: set_threads and the method loads mute the cpuinfo probes themselves
        self._trust_tokenizer = not check_tokenizer or tokenizer is not None or not self.CHECK_DIGEST
        self._load(Path(path), tokenizer, program)

    def _load(self, path: Path, tokenizer, program) -> None:
        import threading

        from guard.format import spec
        from guard.format.prompt import FORMAT_VERSION

        self.path = path
        text_only = type(self)._extra is PteRunner._extra  # extra tensor inputs need the Python bindings
        program = program or (open_program(path) if text_only else load_program(path))
        self._etl = hasattr(program, "step")
        names = program.method_names
        if MARKER not in names:
            raise BadModelFile(f"{path} is not a guard model (no {MARKER} method); export it with `guard export`")
        meta = read_metadata(program, path, self.REQUIRED + tuple(k for k in (CHUNKS, SPAN) if k in names),
                             "re-export it with `guard export`")
        if meta[MARKER] != self.FORMAT:
            raise BadModelFile(f"{path} has format {meta[MARKER]!r}; this runtime reads {self.FORMAT!r}")
        if meta["get_prompt_format"] != FORMAT_VERSION:
            raise BadModelFile(f"{path} expects prompt format {meta['get_prompt_format']!r}, not {FORMAT_VERSION!r}")
        missing = [m for m in self.METHODS if m not in names]
        if missing:
            raise BadModelFile(f"{path} lacks the {missing[0]} method; re-export it with `guard export`")
        self.meta = meta
        check_tokenizer_digest(program, path, self._trust_tokenizer)
        spec.check(path)  # a guard_format.json beside it (for the native runtime) must be this template
        self.max_seq_len = int(meta["get_max_seq_len"])
        self.chunk = int(meta["get_prefill_chunk"])
        self.chunks = sorted({int(c) for c in meta.get(CHUNKS, [self.chunk])} | {1}, reverse=True)
        self._chunk_names = {c: chunk_method(c, self.chunk) for c in self.chunks}
        missing = [m for m in self._chunk_names.values() if m not in names]
        if missing:
            raise BadModelFile(f"{path} lacks the {missing[0]} method its metadata names; re-export it")
        self.span = int(meta.get(SPAN, 0))  # > 0: every step also takes the key positions 0..S-1 it attends to
        if self.span < 0:
            raise BadModelFile(f"{path} names an attention span of {self.span}; re-export it")
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
            tok = tokenizer or check_tokenizer(tokenizer_of(path.parent), meta, path)
        except GuardError as e:
            tok, box["tok_error"] = None, e
        import numpy  # the logits' type; imported while the methods load, not at the first step

        # 0, 1, ..., max_seq_len - 1: a step passes a prefix of it as its key positions (as android_runner's Pte::keys_)
        self._positions = numpy.arange(self.max_seq_len, dtype=numpy.float32) if self.span else None

        worker.join()
        for key in ("error", "tok_error"):  # the model's own problems are reported first
            if key in box:
                raise box[key]
        release_free_heap()
        self.tokenizer = tok
        self._program = program
        self.pristine = True  # nothing computed yet: the cache holds no request (guard.runtime.prefix)
        self._setup(program, meta)

    def _load_methods(self, program, path: Path, box: dict) -> None:
        from guard.runtime import packed

        try:
            names = set(self.METHODS) | set(self._chunk_names.values())
            with quiet_stderr():
                if self._etl:
                    for m in sorted(names):
                        program.load(m)
                    self.methods = {}
                    packed.publish(*getattr(program, "packed", (None, None)))
                else:
                    self.methods = {m: program.load_method(m) for m in sorted(names)}
        except Exception:
            if self._etl:
                packed.discard(*getattr(program, "packed", (None, None)))
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

    @property
    def prefix_snapshots(self) -> bool:
        """Policy-head snapshots on disk are available (etlite, GUARD_PREFIX_CACHE not 0): guard.runtime.prefix."""
        from guard.runtime import prefix

        return self._etl and prefix.enabled()

    def _snapshot_path(self, head: list[int]):
        from guard.runtime import etlite, prefix

        return prefix.snapshot_path(self.path, ",".join(etlite.BUILT), head)

    def restore_prefix(self, head: list[int]) -> bool:
        """Load the snapshot of ``head`` into a pristine runner; True when positions 0..len(head)-1 now hold it."""
        from guard.runtime import prefix

        if not (self.pristine and self.prefix_snapshots and head):
            return False
        ok = prefix.restore(self._program.arenas(), self._snapshot_path(head))
        self.pristine = not ok
        return ok

    def save_prefix(self, head: list[int]) -> None:
        """Snapshot the runner right after a pristine runner prefilled exactly ``head`` (and nothing else)."""
        from guard.runtime import prefix

        if self.prefix_snapshots and head:
            try:
                prefix.save(self._program.arenas(), self._snapshot_path(head), len(head))
            except OSError:  # a read-only or full GUARD_HOME: the next process prefills the head again
                pass

    def _keys(self, end: int):
        """The key positions a step ending at ``end`` (exclusive; the real tokens' end) attends to: 0..S-1 with S
        rounded up to the file's span step, at most max_seq_len. None for a file without an attention span."""
        if not self.span:
            return None
        return self._positions[:min(self.max_seq_len, -(-end // self.span) * self.span)]

    def _run(self, size: int, part: list[int], pos: int):
        self.pristine = False
        n, name = len(part), self._chunk_names[size]
        padded = part + [0] * (size - n)
        keys = self._keys(pos + n)
        if self._etl:
            try:
                return self._program.step(name, padded, list(range(pos, pos + size)), n - 1, self._width, keys)
            except RuntimeError as e:
                raise GuardError(f"the model failed to run ({e})") from None
        import torch

        x = torch.tensor([padded], dtype=torch.long)
        k = [] if keys is None else [torch.from_numpy(keys).view(1, -1)]
        return self.methods[name].execute([x, torch.arange(pos, pos + size), torch.tensor([n - 1]), *k,
                                           *self._extra(pos, size)])[0][0]

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
