"""Near-duplicate detection for templated sources: MinHash over normalised word 3-gram shingles, LSH banding for
candidates, exact Jaccard to confirm.

``NearDup(threshold=0.7)``: ``add(key, text)`` keeps ``key`` and returns None, or returns the key of an
already-kept text whose shingle Jaccard similarity with ``text`` is >= threshold (the new text is then not kept).
Deterministic: the hash is crc32 (not Python's salted ``hash``) and the permutations come from a fixed seed.
"""

from __future__ import annotations

import zlib

import numpy as np

N_PERM, BANDS = 32, 8  # 8 bands of 4 rows: a pair at Jaccard 0.7 becomes a candidate with p ~ 0.98
_P = (1 << 31) - 1


_ALNUM = bytes(range(48, 58)) + bytes(range(97, 123))
_SPACE_OUT = bytes(c if c in _ALNUM else 32 for c in range(256))  # bytes.translate: every byte but [a-z0-9] is a space


def words(text: str) -> list[str]:
    """The runs of ``[a-z0-9]`` in ``text.lower()``: ``re.findall(r"[a-z0-9]+", text.lower())``, 3x faster (any
    non-ASCII character becomes ``?`` and then a space)."""
    return text.lower().encode("ascii", "replace").translate(_SPACE_OUT).decode("ascii").split()


def shingles(text: str, n: int = 3) -> set[int]:
    w = words(text)
    if len(w) < n:
        return {zlib.crc32(" ".join(w).encode())}
    return {zlib.crc32(" ".join(w[i:i + n]).encode()) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


class NearDup:
    def __init__(self, threshold: float = 0.7, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _P, N_PERM, dtype=np.int64)
        self.b = rng.integers(0, _P, N_PERM, dtype=np.int64)
        self.threshold = threshold
        self.buckets: dict[tuple, list] = {}
        self.sets: dict = {}

    def _signature(self, sh: set[int]) -> np.ndarray:
        x = np.fromiter(sh, dtype=np.int64, count=len(sh))[:, None]
        return ((x * self.a + self.b) % _P).min(axis=0)

    def find(self, text: str):
        """The key of a kept near-duplicate of ``text``, or None (nothing is added)."""
        return self._match(shingles(text))[0]

    def _match(self, sh: set[int]):
        sig = self._signature(sh)
        rows = N_PERM // BANDS
        bands = [(i,) + tuple(sig[i * rows:(i + 1) * rows].tolist()) for i in range(BANDS)]
        seen = set()
        for band in bands:
            for key in self.buckets.get(band, ()):
                if key not in seen:
                    seen.add(key)
                    if jaccard(sh, self.sets[key]) >= self.threshold:
                        return key, bands
        return None, bands

    def add(self, key, text: str):
        sh = shingles(text)
        hit, bands = self._match(sh)
        if hit is not None:
            return hit
        self.sets[key] = sh
        for band in bands:
            self.buckets.setdefault(band, []).append(key)
        return None
