"""Image preprocessing against transformers' MllamaImageProcessor (built offline from explicit settings), and the
handling of every kind of bad image: each gets one clear GuardError or a documented conversion."""

import io
import resource
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from guard.errors import GuardError
from guard.vision.image import load_image, to_rgb
from guard.vision.preprocess import MEAN, STD, VisionConfig, optimal_canvas, preprocess


@pytest.fixture(scope="module")
def processor():
    from transformers.models.mllama.image_processing_mllama import MllamaImageProcessor

    # Llama 3.2 Vision / Llama Guard 3 Vision preprocessor_config.json values, written out: no hub download.
    return MllamaImageProcessor(do_convert_rgb=True, do_resize=True, size={"height": 560, "width": 560},
                                resample=Image.Resampling.BILINEAR, do_rescale=True, rescale_factor=1 / 255,
                                do_normalize=True, image_mean=list(MEAN), image_std=list(STD), do_pad=True,
                                max_image_tiles=4)


def noise(w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).convert(mode)


def compare(mine, ref):
    assert mine.pixel_values.shape == ref["pixel_values"].shape == (1, 1, 4, 3, 560, 560)
    diff = float(np.abs(mine.pixel_values - ref["pixel_values"]).max())
    assert diff <= 1e-5, diff
    assert (mine.aspect_ratio_ids == ref["aspect_ratio_ids"]).all()
    assert (mine.aspect_ratio_mask == ref["aspect_ratio_mask"]).all()
    assert [[mine.num_tiles]] == ref["num_tiles"]


# (width, height): square, tiny (upscaled), wide and tall strips, 2x2, odd sizes near tile borders, extreme ratios
SIZES = [(560, 560), (37, 23), (1200, 300), (300, 1200), (2000, 1500), (561, 1119), (1, 1), (3000, 40), (800, 801), (1121, 559)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_matches_transformers(size, processor):
    im = noise(*size, seed=size[0])
    compare(preprocess(im), processor(images=[[im]], return_tensors="np"))


def test_canvas_choice_by_hand():
    assert optimal_canvas(560, 560, 4, 560) == (560, 560)  # exact fit: 1 tile
    assert optimal_canvas(300, 1200, 4, 560) == (560, 1680)  # scale 1.4 on 1x3 beats 0.47 on 1x1; 1x4 has more padding
    assert optimal_canvas(5000, 5000, 4, 560) == (1120, 1120)  # no upscale possible: the mildest downscale
    assert optimal_canvas(100, 80, 4, 560) == (560, 560)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L", "1", "I;16"])
def test_modes_match_transformers(mode, processor, tmp_path):
    im = noise(300, 200, "RGBA" if mode == "RGBA" else "L", seed=3)
    if mode not in ("RGBA", "L"):
        im = im.convert(mode)
    ext = {"CMYK": "jpg", "I;16": "tif"}.get(mode, "png")
    path = tmp_path / f"x.{ext}"
    im.save(path)
    rgb, info = load_image(path)
    assert rgb.mode == "RGB" and info.mode == (mode if mode != "I;16" else info.mode)
    ref_im = Image.open(path)
    ref_im.load()
    compare(preprocess(rgb), processor(images=[[ref_im]], return_tensors="np"))


def test_alpha_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent black
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.save(tmp_path / "a.png")
    rgb, _ = load_image(tmp_path / "a.png")
    assert rgb.getpixel((5, 5)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (255, 0, 0)
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.info["transparency"] = 1
    p.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[0].getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGB", (2, 2), (1, 2, 3))).getpixel((1, 1)) == (1, 2, 3)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    rgb, info = load_image(tmp_path / "a.gif")
    assert info.frames == 2 and rgb.size == (16, 8)
    r, g, b = rgb.getpixel((3, 3))
    assert r > 200 and b < 50


def test_exif_rotation_is_applied(tmp_path, processor):
    im = noise(120, 60, seed=7)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    rgb, info = load_image(tmp_path / "r.jpg")
    assert info.exif_rotated and rgb.size == (60, 120)
    stored = Image.open(tmp_path / "r.jpg").convert("RGB")
    shown = stored.transpose(Image.Transpose.ROTATE_270)  # by hand: orientation 6 == rotate 270 CCW
    assert np.array_equal(np.asarray(rgb), np.asarray(shown))
    compare(preprocess(rgb), processor(images=[[shown]], return_tensors="np"))


def png_bytes(w: int, h: int, rows=None) -> bytes:
    """A valid 1-bit greyscale PNG streamed row by row: a huge image costs kilobytes on disk and in memory."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    z, parts, row = zlib.compressobj(9), [], b"\x00" + b"\x00" * ((w + 7) // 8)
    for i in range(0, h, 1024):
        parts.append(z.compress(row * min(1024, h - i)))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_huge_images_are_refused_from_the_header(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    (tmp_path / "bomb.png").write_bytes(png_bytes(20000, 20000))  # 400 MP: ~1.2 GB as RGB if decoded
    with pytest.raises(GuardError, match="too large"):
        load_image(tmp_path / "bomb.png")
    (tmp_path / "big.png").write_bytes(png_bytes(9000, 9000))  # 81 MP: under Pillow's limit, over ours
    with pytest.raises(GuardError, match="9000x9000 .* more than the 50 MP"):
        load_image(tmp_path / "big.png")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # nothing was decoded


def test_big_jpeg_is_decoded_at_reduced_scale(tmp_path):
    noise(800, 600, seed=1).save(tmp_path / "big.jpg", quality=90)
    rgb, info = load_image(tmp_path / "big.jpg", max_pixels=100_000)
    assert info.draft_scale == 4 and rgb.size == (200, 150) and info.size == (800, 600)


def test_small_png_decodes(tmp_path):
    (tmp_path / "ok.png").write_bytes(png_bytes(64, 32))
    rgb, info = load_image(tmp_path / "ok.png")
    assert rgb.size == (64, 32) and rgb.getpixel((0, 0)) == (0, 0, 0) and info.format == "PNG"


def write(tmp_path, name, data: bytes):
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def zero_gif() -> bytes:
    g = bytearray(encoded("GIF", (1, 1)))
    g[6:10] = bytes(4)  # logical screen 0x0
    i = g.index(b",")  # image descriptor: left, top, width, height
    g[i + 5:i + 9] = bytes(4)
    return bytes(g)


def encoded(fmt: str, size=(200, 150)) -> bytes:
    b = io.BytesIO()
    noise(*size, seed=5).save(b, fmt)
    return b.getvalue()


@pytest.mark.parametrize("case,match", [
    ("missing", "image not found"),
    ("directory", "not a file"),
    ("empty", "empty file"),
    ("text", "not an image"),
    ("random", "not an image"),
    ("zero-png", "zero-size image \\(0x10\\)"),
    ("zero-gif", "zero-size image \\(0x0\\)"),
    ("truncated-png", "truncated or corrupt"),
    ("truncated-jpeg", "truncated or corrupt"),
    ("corrupt-png-data", "truncated or corrupt"),
])
def test_bad_images_raise_one_clear_error(case, match, tmp_path):
    png = encoded("PNG")
    paths = {
        "missing": lambda: tmp_path / "nope.png",
        "directory": lambda: tmp_path,
        "empty": lambda: write(tmp_path, "e.png", b""),
        "text": lambda: write(tmp_path, "t.png", b"just some text, not pixels\n" * 10),
        "random": lambda: write(tmp_path, "r.jpg", np.random.default_rng(0).bytes(5000)),
        "zero-png": lambda: write(tmp_path, "z.png", png[:16] + struct.pack(">II", 0, 10) + png[24:]),
        "zero-gif": lambda: write(tmp_path, "z.gif", zero_gif()),
        "truncated-png": lambda: write(tmp_path, "t.png", png[: len(png) // 2]),
        "truncated-jpeg": lambda: write(tmp_path, "t.jpg", encoded("JPEG")[:600]),
        "corrupt-png-data": lambda: write(tmp_path, "c.png", png[:60] + bytes(64) + png[124:]),
    }
    with pytest.raises(GuardError, match=match) as e:
        load_image(paths[case]())
    assert "\n" not in str(e.value)


def test_tile_size_is_a_parameter(processor):
    im = noise(200, 90, seed=9)
    small = preprocess(im, VisionConfig(tile_size=56, max_tiles=4))
    ref = processor(images=[[im]], size={"height": 56, "width": 56}, return_tensors="np")
    assert small.pixel_values.shape == (1, 1, 4, 3, 56, 56)
    assert float(np.abs(small.pixel_values - ref["pixel_values"]).max()) <= 1e-5
    assert (small.aspect_ratio_ids == ref["aspect_ratio_ids"]).all()
