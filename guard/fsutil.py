"""Atomic output directories: a stage writes into a temporary sibling and renames it only when complete."""

from __future__ import annotations

import contextlib
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
