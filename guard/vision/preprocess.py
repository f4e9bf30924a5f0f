"""Llama 3.2 Vision (mllama) image preprocessing in Pillow + NumPy, step for step as transformers'
``MllamaImageProcessor``: pick the tile canvas, resize (bilinear) to fit it, pad bottom/right with zeros,
rescale by 1/255, normalise, split into tiles, and build ``aspect_ratio_ids`` / ``aspect_ratio_mask``.

One image per conversation (Llama Guard 3 Vision), so the batch and image axes are always 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP statistics, as in the Llama 3.2 Vision preprocessor config
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    tile_size: int = 560
    max_tiles: int = 4
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    @classmethod
    def from_dir(cls, path) -> "VisionConfig":
        """preprocessor_config.json when present (size, max_image_tiles, mean, std), else config.json's vision_config."""
        import json
        from pathlib import Path

        from guard.errors import GuardError

        path = Path(path)
        try:
            if (path / "preprocessor_config.json").is_file():
                pre = json.loads((path / "preprocessor_config.json").read_text())
                size = pre.get("size", {})
                if size.get("height") != size.get("width"):
                    raise GuardError(f"{path}: tiles must be square, got size {size}")
                return cls(int(size.get("height", 560)), int(pre.get("max_image_tiles", 4)),
                           tuple(pre.get("image_mean", MEAN)), tuple(pre.get("image_std", STD)))
            vc = json.loads((path / "config.json").read_text()).get("vision_config", {})
            return cls(int(vc.get("image_size", 560)), int(vc.get("max_num_tiles", 4)))
        except (OSError, ValueError, TypeError) as e:
            raise GuardError(f"cannot read the image settings of {path}: {e}") from None


@dataclass
class ImageInputs:
    pixel_values: np.ndarray  # [1, 1, max_tiles, 3, tile, tile] float32; unused tiles are zero
    aspect_ratio_ids: np.ndarray  # [1, 1] int64, 1-based index into supported_aspect_ratios
    aspect_ratio_mask: np.ndarray  # [1, 1, max_tiles] int64, 1 for the tiles in use
    num_tiles: int
    canvas: tuple[int, int]  # (tiles high, tiles wide)
    resized: tuple[int, int]  # (height, width) after the resize, before padding

    def torch(self) -> dict:
        import torch

        return {"pixel_values": torch.from_numpy(self.pixel_values), "aspect_ratio_ids": torch.from_numpy(self.aspect_ratio_ids),
                "aspect_ratio_mask": torch.from_numpy(self.aspect_ratio_mask)}


@lru_cache(maxsize=8)
def supported_aspect_ratios(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """All (a, b) with a * b <= max_tiles, a outer: the order the aspect-ratio ids index."""
    return tuple((a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles)


def optimal_canvas(height: int, width: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """(canvas height, canvas width) in pixels: the smallest upscale if any canvas allows one, else the mildest
    downscale; ties go to the smallest area (least padding)."""
    best = None
    for th, tw in supported_aspect_ratios(max_tiles):
        ch, cw = th * tile, tw * tile
        scale = min(ch / height, cw / width)  # the limiting side: no distortion
        rank = (0, scale) if scale >= 1 else (1, -scale)  # prefer any upscale (smallest), else least downscale
        key = (rank, ch * cw)
        if best is None or key < best[0]:
            best = (key, (ch, cw))
    return best[1]


def fit_to_canvas(height: int, width: int, canvas_h: int, canvas_w: int, tile: int) -> tuple[int, int]:
    """New (height, width): aspect ratio kept, each side clipped to [tile, canvas side] before scaling."""
    target_w = min(max(width, tile), canvas_w)
    target_h = min(max(height, tile), canvas_h)
    scale_h, scale_w = target_h / height, target_w / width
    if scale_w < scale_h:
        return min(math.floor(height * scale_w), target_h), target_w
    return target_h, min(math.floor(width * scale_h), target_w)


def preprocess(image, cfg: VisionConfig = VisionConfig()) -> ImageInputs:
    """A PIL RGB image (see guard.vision.image.load_image) -> model inputs."""
    from PIL import Image

    if image.mode != "RGB":
        from guard.vision.image import to_rgb

        image = to_rgb(image)
    t = cfg.tile_size
    w, h = image.size
    ch, cw = optimal_canvas(h, w, cfg.max_tiles, t)
    nh, nw = fit_to_canvas(h, w, ch, cw, t)
    resized = image.resize((nw, nh), resample=Image.Resampling.BILINEAR)
    canvas = np.zeros((ch, cw, 3), dtype=np.uint8)  # pad bottom/right with 0 before normalising, as transformers does
    canvas[:nh, :nw] = np.asarray(resized, dtype=np.uint8)
    x = (canvas.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    th, tw = ch // t, cw // t
    tiles = x.reshape(th, t, tw, t, 3).transpose(0, 2, 4, 1, 3).reshape(th * tw, 3, t, t)  # row-major tiles, CHW
    pixels = np.zeros((1, 1, cfg.max_tiles, 3, t, t), dtype=np.float32)
    pixels[0, 0, : th * tw] = tiles
    ids = np.array([[supported_aspect_ratios(cfg.max_tiles).index((th, tw)) + 1]], dtype=np.int64)
    mask = np.zeros((1, 1, cfg.max_tiles), dtype=np.int64)
    mask[0, 0, : th * tw] = 1
    return ImageInputs(pixels, ids, mask, th * tw, (th, tw), (nh, nw))
