"""Atomic outputs: a stage writes into a temporary sibling and renames it only when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from guard.errors import GuardError


@contextlib.contextmanager
def atomic_dir(out: str | Path, what: str = "output directory"):
    """Yield a temporary directory that becomes ``out`` on success and is removed on any failure."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GuardError(f"{out} exists and is not empty; choose a new {what}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path: str | Path, data: str | bytes, durable: bool = False) -> Path:
    """Write ``data`` to a temporary sibling, then rename it over ``path``: readers see the old or the new file.
    ``durable``: the data and the rename are fsynced, so they survive a power cut too."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        if durable:
            fsync(tmp)
        tmp.replace(path)
        if durable:
            fsync(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(model, tokenizer, out: str | Path, record: dict | None = None, record_name: str = "prune_record.json",
                extra: dict | None = None) -> Path:
    """save_pretrained into a temporary sibling directory, then rename: no half-written output on failure.
    ``extra`` maps file names to tensor dicts written as safetensors beside the model (e.g. LoRA adapters)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if record is not None:
            (tmp / record_name).write_text(json.dumps(record, indent=2) + "\n")
        for name, tensors in (extra or {}).items():
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / name))
    return out


def file_key(path: Path, *extra: str) -> "hashlib._Hash":
    """sha256 over a file's identity (resolved path, size, mtime, inode) and ``extra``: the key of a cache derived
    from that file (policy-head snapshots, packed weights), which a rewritten file no longer matches."""
    import hashlib

    st = path.stat()
    return hashlib.sha256("\0".join([str(path.resolve()), str(st.st_size), str(st.st_mtime_ns), str(st.st_ino), *extra]).encode())


def keep_newest(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the ``keep`` most recently modified files of ``folder`` matching ``pattern``."""
    files = sorted(folder.glob(pattern), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files[keep:]:
        f.unlink(missing_ok=True)
