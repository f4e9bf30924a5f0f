"""Safe image loading for the vision guard: one clear GuardError per bad input, bounded memory.

Rules, in order (docs/vision.md lists them with the reasons):
- a missing path, a directory, an empty file, or bytes Pillow cannot identify -> GuardError;
- the size is read from the header before any pixel is decoded: zero width or height -> GuardError; more than
  ``MAX_PIXELS`` -> a JPEG is decoded at a reduced scale (``Image.draft``, DCT scaling by 1/2, 1/4 or 1/8), any other
  format -> GuardError. Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is left on and mapped
  to the same error;
- animated images (GIF, APNG, WebP): the first frame is used;
- EXIF orientation is applied (``ImageOps.exif_transpose``), as a viewer would show the photo;
- truncated or corrupt pixel data -> GuardError (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never switched on);
- every mode ends as RGB the way transformers' mllama processor does it: through RGBA, composited on white,
  so a transparent pixel becomes white (not black), and CMYK, palette, grey and 16-bit images convert via Pillow.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from guard.errors import GuardError

MAX_PIXELS = 50_000_000  # ~7071x7071; a 50 MP RGB decode is 150 MB. The model only ever sees <= 1120x1120 of it.
MAX_FILE_BYTES = 256 << 20


@dataclass
class ImageInfo:
    path: str
    format: str  # "PNG", "JPEG", ...
    size: tuple[int, int]  # (width, height) as stored in the file
    mode: str  # as stored, before conversion
    frames: int = 1  # > 1: animated, only the first frame was used
    draft_scale: int = 1  # > 1: decoded at 1/scale (huge JPEG)
    exif_rotated: bool = False


def load_image(src: str | Path | bytes, max_pixels: int = MAX_PIXELS):
    """-> (PIL RGB image, ImageInfo). ``src`` is a path or an image file's bytes (a data: URL's payload).
    Raises GuardError with a one-line reason for any bad input."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        p, fp, size, head = f"the image ({len(data)} bytes)", io.BytesIO(data), len(data), data[:32]
    else:
        p = Path(src)
        if not p.exists():
            raise GuardError(f"image not found: {p}")
        if not p.is_file():
            raise GuardError(f"not a file: {p} (give the path of an image)")
        fp, size = p, p.stat().st_size
        head = p.open("rb").read(32) if size else b""
    if size == 0:
        raise GuardError(f"{p} is an empty file, not an image")
    if size > MAX_FILE_BYTES:
        raise GuardError(f"{p} is {size >> 20} MiB, more than the {MAX_FILE_BYTES >> 20} MiB accepted for an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies below
            im = Image.open(fp)  # reads the header only
    except PermissionError:
        raise GuardError(f"no permission to read {p}") from None
    except UnidentifiedImageError:
        dims = _header_dims(head)
        if dims and 0 in dims:
            raise GuardError(f"{p} is a zero-size image ({dims[0]}x{dims[1]})") from None
        raise GuardError(f"{p} is not an image Pillow can read (corrupt, or not an image file)") from None
    except Image.DecompressionBombError:
        raise GuardError(f"{p} is too large to decode safely (over Pillow's {Image.MAX_IMAGE_PIXELS} pixel limit); downscale it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # a header that starts right but breaks off
        raise GuardError(f"{p} is truncated or corrupt: {' '.join(str(e).split())[:120]}") from None
    with im:
        return _decode(im, p, max_pixels, ImageOps)


def _decode(im, p, max_pixels: int, ImageOps):
    w, h = im.size
    info = ImageInfo(str(p), im.format or "?", (w, h), im.mode)
    if w <= 0 or h <= 0:
        raise GuardError(f"{p} is a zero-size image ({w}x{h})")
    if w * h > max_pixels:
        if im.format != "JPEG":
            raise GuardError(f"{p} is {w}x{h} ({w * h / 1e6:.0f} MP), more than the {max_pixels / 1e6:.0f} MP this guard "
                             f"decodes; downscale it first")
        fits = [s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= max_pixels]
        if not fits:
            raise GuardError(f"{p} is {w}x{h}; even decoded at 1/8 scale it exceeds {max_pixels / 1e6:.0f} MP")
        im.draft("RGB", (-(-w // fits[0]), -(-h // fits[0])))  # DCT scaling: never decodes the full size
        info.draft_scale = fits[0]
    try:
        info.frames = int(getattr(im, "n_frames", 1) or 1)
        if info.frames > 1:
            im.seek(0)
        im.load()
        info.exif_rotated = _orientation(im) not in (0, 1)
        out = ImageOps.exif_transpose(im)
        rgb = to_rgb(out)
        rgb.load()
    except GuardError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated data, bad chunks, broken frames
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise GuardError(f"{p} is truncated or corrupt: {reason}") from None
    return rgb, info


def _header_dims(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG/GIF/BMP header, for a precise message when Pillow refuses a zero-size image."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:2] == b"BM" and len(head) >= 26:
        return int.from_bytes(head[18:22], "little", signed=True), abs(int.from_bytes(head[22:26], "little", signed=True))
    return None


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def to_rgb(im):
    """transformers' mllama convert_to_rgb: RGB as is; anything else via RGBA, alpha composited on white."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
