"""Policy-head snapshots: a cold process skips prefilling the policy head.

Every request with the same policy and role starts with the same ~140-250 tokens (the policy head), and a warm
Guard computes them once (``Guard._feed`` reuses the cached prefix). A new process, e.g. each `guard classify`,
started from an empty cache and paid that prefill again: most of a short request's time. Through etlite the
runner's whole state is its planned memory (the KV cache and the methods' scratch, ``Program.arenas``; XNNPACK
keeps no state between calls), so after a fresh runner prefills the head alone, that memory is written to
GUARD_HOME/etlite/prefix/ and a later process with the same .pte, etlite build and head tokens copies it back
instead of computing it. Only the head is ever written (never a user's message): the snapshot is taken when the
runner holds nothing else. Pages that are all zero are not stored.

The file is keyed by the .pte's path, size and mtime, the etlite build and the head's token ids, and carries a
CRC-32 of its contents; anything that does not match is ignored (the head is prefilled as before) and rewritten.
GUARD_PREFIX_CACHE=0 turns snapshots off; the newest 16 files are kept.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

from guard.fsutil import file_key, keep_newest, write_atomic

MAGIC = b"GKV1"
PAGE = 4096
KEEP = 16  # snapshots kept per GUARD_HOME (the newest; one per .pte build, policy and role in use)


def enabled() -> bool:
    return os.environ.get("GUARD_PREFIX_CACHE", "1") != "0"


def snapshot_path(pte: Path, build: str, head: list[int]) -> Path:
    from guard.defaults import HOME

    h = file_key(pte, build, "")
    h.update(",".join(map(str, head)).encode())
    return HOME / "etlite" / "prefix" / f"{h.hexdigest()[:32]}.kv"


def save(arenas: list, path: Path, n_tokens: int) -> Path:
    """Write the non-zero pages of ``arenas`` (uint8 numpy views) to ``path`` atomically."""
    import numpy as np

    parts, table = [], []
    for a in arenas:
        full = a.size // PAGE
        pages = a[:full * PAGE].reshape(full, PAGE)
        nz = np.flatnonzero(a[:full * PAGE].view(np.uint64).reshape(full, PAGE // 8).any(axis=1)).astype(np.int64)
        parts += [nz.tobytes(), pages[nz].tobytes(), a[full * PAGE:].tobytes()]
        table.append({"size": int(a.size), "pages": int(nz.size)})
    payload = b"".join(parts)
    header = json.dumps({"arenas": table, "tokens": n_tokens, "crc32": zlib.crc32(payload)}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, MAGIC + len(header).to_bytes(4, "little") + header + payload)
    prune(path.parent)
    return path


def prune(folder: Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` newest snapshots (a re-exported .pte leaves its old ones behind)."""
    try:
        keep_newest(folder, "*.kv", keep)
    except OSError:
        pass


def restore(arenas: list, path: Path) -> bool:
    """Copy a snapshot back into ``arenas`` (fresh, zero-filled); False (nothing written) when it is missing,
    damaged or made for other arenas."""
    import numpy as np

    try:
        blob = path.read_bytes()
    except OSError:
        return False
    try:
        if blob[:4] != MAGIC:
            return False
        n = int.from_bytes(blob[4:8], "little")
        header = json.loads(blob[8:8 + n])
        payload = memoryview(blob)[8 + n:]
        table = header["arenas"]
        if len(table) != len(arenas) or any(t["size"] != a.size for t, a in zip(table, arenas)):
            return False
        if zlib.crc32(payload) != header["crc32"]:
            return False
        plan, off = [], 0
        for t, a in zip(table, arenas):
            full, k = a.size // PAGE, int(t["pages"])
            nz = np.frombuffer(payload, np.int64, k, off)
            data = np.frombuffer(payload, np.uint8, k * PAGE, off + 8 * k).reshape(k, PAGE)
            tail = np.frombuffer(payload, np.uint8, a.size - full * PAGE, off + 8 * k + k * PAGE)
            off += 8 * k + k * PAGE + tail.size
            if k and (nz.min() < 0 or nz.max() >= full):
                return False
            plan.append((a, full, nz, data, tail))
        if off != len(payload):
            return False
    except (ValueError, KeyError, TypeError):
        return False
    for a, full, nz, data, tail in plan:  # everything checked: now write
        a[:full * PAGE].reshape(full, PAGE)[nz] = data
        a[full * PAGE:] = tail
    return True
