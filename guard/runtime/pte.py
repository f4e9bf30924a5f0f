"""PteRunner: a guard .pte run by the ExecuTorch runtime (XNNPACK), implementing guard.runtime.runner.Runner."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from guard.errors import BadModelFile, GuardError, SequenceTooLong
from guard.export.metadata import MARKER, METHODS, PTE_FORMAT, REQUIRED, TOKEN_KEYS, TOKENIZER_DIGEST, file_digest


PTE_IDENTIFIER = b"ET12"  # the flatbuffer file identifier of ExecuTorch programs (bytes 4..8)
EXTENDED_MAGIC = b"eh00"  # ExecuTorch's extended header, at bytes 8..12 (exir/_serialize/_program.py)
MIN_PTE_BYTES = 64  # ExecuTorch reads this many head bytes to find the headers


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
    """XNNPACK's threadpool size: GUARD_THREADS, else every available core."""
    n = n or threads_from_env() or len(os.sched_getaffinity(0))
    with quiet_stderr():
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != n:
            portable_lib._unsafe_reset_threadpool(n)
        return portable_lib._threadpool_get_thread_count()


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
    """The ExecuTorch program at ``path`` (opened once; the runners take it as is). The header is checked first
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


def check_tokenizer_digest(program, path: Path, trust: bool = False) -> None:
    """tokenizer.json beside the .pte must be the file it was exported with (its sha256 is in the metadata).

    ``trust``: accept a different one (``--trust-tokenizer``, ``check_tokenizer=False``). A .pte exported before the
    digest existed loads with a warning."""
    import warnings

    from guard.errors import GuardWarning

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
        check_tokenizer_digest(program, path, self._trust_tokenizer)
        from guard.format import spec

        spec.check(path)  # a guard_format.json beside it (for the native runtime) must be this template
        self.tokenizer = tokenizer or check_tokenizer(Tokenizer.from_dir(path.parent), meta, path)
        self.max_seq_len = int(meta["get_max_seq_len"])
        self.chunk = int(meta["get_prefill_chunk"])
        ids = [int(i) for i in meta["get_output_ids"]]
        self.output_ids = None if ids == [-1] else ids
        self.name = f"{self.KIND}:{meta['get_quant_scheme']}"
        self.threads = set_threads()
        try:
            with quiet_stderr():
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
