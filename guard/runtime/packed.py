"""XNNPACK's packed weights kept in a file, so that a later process maps them instead of packing again.

Loading a .pte spends most of its CPU in XNNPACK packing the INT4 linears into its kernels' layout (the weight cache
makes that once per process, not once per method). With a ``packed_cache_path`` runtime spec, XNNPACK writes the
packed weights into that file (MAP_SHARED) and a later process maps them: entries are found by weight name and by
the ukernel's seed, so a file packed for other kernels is not used for them (XNNPACK packs those in memory again).

Files live in GUARD_HOME/etlite/packed/, keyed by the .pte (path, size, mtime, inode) and the etlite build. The
file is written under a name of this process's own and renamed into place once every method is loaded, so no
process ever maps a file another one is still writing. The newest KEEP files are kept (the 1B shape's is ~300 MB).
GUARD_PACKED_CACHE=0 turns it off. Through etlite only (guard.runtime.etlite); a file in GUARD_HOME is trusted like
the etlite library beside it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from guard.fsutil import file_key, keep_newest

KEEP = 3
MAX_PATH = 255  # XNNPACK's option values are 256 bytes with the terminating zero
STALE_TMP_S = 3600


def enabled() -> bool:
    return os.environ.get("GUARD_PACKED_CACHE", "1") != "0"


def folder() -> Path:
    from guard.defaults import HOME

    return HOME / "etlite" / "packed"


def final_path(pte: Path, build: str) -> Path:
    return folder() / f"{file_key(pte, build).hexdigest()[:24]}.xnnpacked"


def choose(pte: Path, build: str) -> tuple[str | None, Path | None]:
    """-> (the path to give XNNPACK, the final path to publish it under once loaded, or None when it is already
    there). (None, None) when off, or when GUARD_HOME cannot hold it."""
    if not enabled():
        return None, None
    try:
        final = final_path(pte, build)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            os.utime(final)  # the newest files are the ones kept
            path, publish = final, None
        else:
            path, publish = final.with_name(f"{final.name}.{os.getpid()}.tmp"), final
    except OSError:
        return None, None
    return (str(path), publish) if len(str(path).encode()) <= MAX_PATH else (None, None)


def publish(path: str | None, final: Path | None) -> None:
    """After every method is loaded: rename this process's file into place (a complete one only: XNNPACK writes its
    index after each delegate) and prune old files. Never raises."""
    if not (path and final):
        return
    try:
        tmp = Path(path)
        if tmp.is_file() and tmp.stat().st_size > 0:
            os.replace(tmp, final)
        prune(final.parent)
    except OSError:
        pass


def discard(path: str | None, final: Path | None) -> None:
    """A load that failed: remove this process's partial file (never a published one)."""
    if path and final:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError:
            pass


def prune(d: Path, keep: int = KEEP) -> None:
    keep_newest(d, "*.xnnpacked", keep)
    now = time.time()
    for p in d.glob("*.tmp"):  # a process killed while loading
        if now - p.stat().st_mtime > STALE_TMP_S:
            p.unlink(missing_ok=True)
