"""guard bench support for vision models: a fixed synthetic photo."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=4)
def bench_image(width: int = 1600, height: int = 1200) -> Path:
    """A deterministic 1600x1200 JPEG (a phone-photo aspect ratio: 2x2 tiles of 560), written once per process."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)  # smooth-ish content, realistic JPEG size
    folder = tempfile.mkdtemp(prefix="guard-bench-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # removed when the process ends
    path = Path(folder) / "photo.jpg"
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)
    return path
