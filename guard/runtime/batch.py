"""JSONL batch classification: appends results, resumes by id, reports bad lines and retries them on the next run.

What a run guarantees (tests/runtime/test_batch_integrity.py):
- every line is handled by itself: whatever it holds (malformed JSON, invalid UTF-8, nesting deep enough for a
  RecursionError, an integer past Python's digit limit, wrong types, an over-long line) ends as an error record for
  that line, and the lines after it are still classified;
- ids keep their JSON type (``7`` and ``"7"`` are two ids); a line without one is ``"line-N"``; a line whose id an
  earlier line already used is a duplicate: reported, recorded as an error, not classified;
- OUT holds at most one result per id. Error records are removed when the next run starts and their lines retried;
  while any remain the exit code is 3;
- one writer per OUT: a run holds ``fcntl.flock`` on ``OUT.lock``; a second run on the same OUT is refused;
- OUT must be a regular file (a FIFO, ``/dev/stdout`` or a device is refused before the model loads);
- each record is one write, flushed and fsynced; a killed run leaves at most a torn last line, which the next run
  cuts off (a complete last record that lacks only its newline is kept); a failed write (a full disk) cuts the
  partial record and stops the run with one line, exit 2.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
from pathlib import Path

from guard.errors import GuardError
from guard.fsutil import write_atomic

MAX_LINE_BYTES = 1 << 20
MAX_INT_ID = 1 << 63  # ids are JSON strings or 64-bit integers


def id_key(rid) -> tuple[str, object]:
    """Ids compare with their JSON type: 7 and "7" differ."""
    return ("int" if isinstance(rid, int) else "str", rid)


def show_id(rid) -> str:
    return json.dumps(rid, ensure_ascii=False)[:80]


def parse_line(raw: bytes, lineno: int, max_bytes: int = MAX_LINE_BYTES) -> tuple[str | int, dict]:
    """-> (id, request). Raises GuardError naming the problem (and nothing else). A request is {"messages": [...]}."""
    if len(raw) > max_bytes:
        raise GuardError(f"line is {len(raw)} bytes, more than the {max_bytes} allowed")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise GuardError("line is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise GuardError(f"malformed JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise GuardError("JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise GuardError(f"unreadable JSON: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(obj, dict):
        raise GuardError("each line must be a JSON object")
    rid = obj.get("id", f"line-{lineno}")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise GuardError("'id' must be a string or an integer")
    if isinstance(rid, int) and not -MAX_INT_ID <= rid < MAX_INT_ID:
        raise GuardError("an integer 'id' must fit in 64 bits")
    image = {}
    if "image" in obj:  # a path inside the JSONL file's folder (run_batch checks), for a vision guard
        if not isinstance(obj["image"], str) or not obj["image"] or "\0" in obj["image"]:
            raise GuardError("'image' must be a path string")
        image = {"image": obj["image"]}
    if "messages" in obj:
        return rid, {"messages": obj["messages"], **image}
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise GuardError("a line needs 'messages' or a string 'prompt' (and optionally 'response')")
    msgs = [{"role": "user", "content": prompt}]
    if "response" in obj:
        if not isinstance(obj["response"], str):
            raise GuardError("'response' must be a string")
        msgs.append({"role": "assistant", "content": obj["response"]})
    return rid, {"messages": msgs, **image}


def image_path(in_path: Path, image: str, allow_any_path: bool = False) -> Path:
    """A line's image, relative to the JSONL file's folder, which it may not leave (symlinks included) unless
    ``allow_any_path``. The refusal does not depend on whether the file exists."""
    base = in_path.parent.resolve()
    path = (base / image).resolve()
    if not allow_any_path and not path.is_relative_to(base):
        raise GuardError("'image' must be a path inside the JSONL file's folder (--allow-any-path allows any)")
    return path


def is_special(path: Path) -> bool:
    return str(path.absolute()).startswith(("/dev/", "/proc/", "/sys/"))


def check_paths(in_path: str | Path, out_path: str | Path) -> tuple[Path, Path]:
    """Refuse unusable batch paths with one line, before any model is loaded or any output is written."""
    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.is_dir():
        raise GuardError(f"input {in_path} is a directory, not a JSONL file")
    if not in_path.exists():
        raise GuardError(f"input file not found: {in_path}")
    if not in_path.is_file():
        raise GuardError(f"input {in_path} is not a regular file")
    if in_path.resolve() == out_path.resolve():
        raise GuardError("--out must differ from the input file")
    if out_path.is_dir():
        raise GuardError(f"--out {out_path} is a directory; give a JSONL file path")
    if is_special(out_path) or is_special(out_path.resolve()) or (out_path.exists() and not out_path.is_file()):
        raise GuardError(f"--out {out_path} is not a regular file (a pipe, terminal or device cannot be resumed)")
    if not out_path.parent.is_dir():
        raise GuardError(f"--out directory {out_path.parent} does not exist")
    if not os.access(out_path if out_path.exists() else out_path.parent, os.W_OK):
        raise GuardError(f"--out {out_path} is not writable")
    return in_path, out_path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class BatchOutput:
    """OUT opened for one run: locked, its error records and torn tail removed, its finished ids known.

    Use as a context manager (the CLI takes it before loading the model, so a second run is refused at once)."""

    def __init__(self, out_path: str | Path):
        self.path = Path(out_path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd = self._fd = None

    def __enter__(self) -> "BatchOutput":
        try:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise GuardError(f"another run is writing {self.path} (it holds {self.lock_path}); wait for it or "
                             "choose another --out") from None
        except OSError as e:
            self.close()
            raise GuardError(f"cannot lock {self.lock_path}: {e.strerror}") from None
        try:
            self.done = self._tidy()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                raise GuardError(f"--out {self.path} is not a regular file")
            self._size = os.fstat(self._fd).st_size
        except OSError as e:
            self.close()
            raise GuardError(f"cannot open {self.path}: {e.strerror}") from None
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)  # closing the lock file releases the flock
                setattr(self, name, None)

    def _tidy(self) -> set:
        """Ids with a result in OUT. Error records (retried now) and a torn last line are removed, atomically."""
        if not self.path.exists():
            return set()
        if not self.path.is_file():
            raise GuardError(f"--out {self.path} is not a regular file")
        lines = self.path.read_bytes().split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        keep, done, changed = [], set(), False
        if tail:
            changed = True
            if _record(tail) is not None:  # complete, only the newline is missing: keep it
                lines.append(tail)
        for line in lines:
            rec = _record(line)
            if rec is not None and "error" in rec:
                changed = True
                continue
            if rec is not None and "decision" in rec:
                done.add(id_key(rec["id"]))
            keep.append(line)
        if changed:
            write_atomic(self.path, b"".join(line + b"\n" for line in keep), durable=True)
        return done

    def write(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, self._size)  # no half record left behind
            except OSError:
                pass
            what = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror
            raise GuardError(f"cannot write to {self.path}: {what}; the run stopped, rerun to resume") from None
        self._size += len(data)


def _record(line: bytes) -> dict | None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if isinstance(rec, dict) and isinstance(rec.get("id"), (str, int)) and not isinstance(rec.get("id"), bool):
        return rec
    return None


def read_lines(fh, max_bytes: int):
    """(line number, bytes without the line end, or None when longer than max_bytes (its length then))."""
    lineno = 0
    while True:
        raw = fh.readline(max_bytes + 2)
        if not raw:
            return
        lineno += 1
        if not raw.endswith(b"\n") and len(raw) == max_bytes + 2:
            n = len(raw)
            while not raw.endswith(b"\n"):  # drain the rest of an over-long line without holding it
                raw = fh.readline(1 << 20)
                n += len(raw)
                if not raw:
                    break
            yield lineno, None, n
            continue
        line = raw.rstrip(b"\r\n")
        yield (lineno, line, len(line)) if len(line) <= max_bytes else (lineno, None, len(line))


def _count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def run_batch(guard, in_path: str | Path, out_path: str | Path | BatchOutput, max_line_bytes: int = MAX_LINE_BYTES,
              progress: bool = True, log=None, allow_any_path: bool = False) -> dict:
    """Classify every line of ``in_path`` without a result in ``out_path`` yet; return the counts.

    ``out_path`` may be an entered ``BatchOutput`` (already locked). ``log`` defaults to the current
    ``sys.stderr``, looked up per call: a default bound at import time outlives a redirected or closed stream."""
    if not isinstance(out_path, BatchOutput):
        in_path, out_path = check_paths(in_path, out_path)
        with BatchOutput(out_path) as out:
            return run_batch(guard, in_path, out, max_line_bytes, progress, log, allow_any_path)
    from tqdm import tqdm

    log = log if log is not None else sys.stderr
    in_path, out = Path(in_path), out_path
    counts = new_counts()
    with open(in_path, "rb") as fin:
        lines = tqdm(read_lines(fin, max_line_bytes), total=_count_lines(in_path), disable=not progress, unit="line",
                     file=log)
        for lineno, rid, req, err in requests(lines, max_line_bytes, out.done, counts):
            try:
                if err is not None:
                    raise GuardError(err)
                kw = {}
                if "image" in req:
                    if not guard.vision:
                        raise GuardError("this line has an 'image' but the model is text-only")
                    kw["image"] = image_path(in_path, req["image"], allow_any_path)
                record = {"id": rid, **guard.classify(req["messages"], **kw).to_dict()}
                counts[record["decision"]] += 1
            except GuardError as e:
                record = _error(log, in_path, lineno, rid, str(e), counts)
            except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as e:  # an engine bug, per line
                record = _error(log, in_path, lineno, rid, f"internal error: {type(e).__name__}: {e}"[:300], counts)
            out.write(record)
    return counts


def new_counts() -> dict:
    """What every batch path returns: verdicts by decision, error lines, and lines skipped as already done."""
    return {"safe": 0, "unsafe": 0, "indeterminate": 0, "errors": 0, "skipped_done": 0}


def requests(lines, max_line_bytes: int, done, counts: dict):
    """(line number, id, request, None) or (line number, id, None, error) for each non-blank line of ``lines``
    (``read_lines``): ids keep their JSON type, a repeated id is an error (only its first line is classified), and
    ids in ``done`` are counted in ``counts["skipped_done"]`` and not yielded. Shared by every batch path."""
    first_line: dict = {}  # id key -> the first line that used it, in this input
    for lineno, raw, n in lines:
        if raw is not None and not raw.strip():
            continue
        rid = f"line-{lineno}"
        try:
            if raw is None:
                raise GuardError(f"line is {n} bytes, more than the {max_line_bytes} allowed")
            rid, req = parse_line(raw, lineno, max_line_bytes)
            key = id_key(rid)
            if key in first_line:
                raise GuardError(f"duplicate id {show_id(rid)}: line {first_line[key]} has it already; "
                                 "only the first line with an id is classified")
            first_line[key] = lineno
        except GuardError as e:
            yield lineno, rid, None, str(e)
            continue
        if key in done:
            counts["skipped_done"] += 1
            continue
        yield lineno, rid, req, None


def _error(log, in_path: Path, lineno: int, rid, msg: str, counts: dict) -> dict:
    print(f"{in_path}:{lineno}: skipped: {msg}", file=log)
    counts["errors"] += 1
    return {"id": rid, "line": lineno, "error": msg}
