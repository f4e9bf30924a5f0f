"""Images in OpenAI content parts: ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``.

Only ``data:`` URLs are accepted: the server never fetches a URL (no network access from a guard, no SSRF). The
payload is base64-decoded here, bounded in size before and after decoding; the pixels are decoded by the worker
(guard.vision.image.load_image: pillow, with its own header, pixel-count and corruption checks)."""

from __future__ import annotations

import base64
import binascii
import re

MAX_IMAGE_BYTES = 4 << 20  # decoded; the request body limit (--max-body) applies first
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.S)


def image_bytes(url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The image file's bytes from a ``data:image/...;base64,...`` URL. ValueError (a client error) otherwise."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0][:16] if ":" in url else "no scheme"
        raise ValueError(f"only data: URLs are accepted (data:image/png;base64,...); this server does not fetch "
                         f"{scheme!r} URLs")
    m = _DATA_URL.fullmatch(url)
    if m is None:
        raise ValueError("a data: URL needs a comma before its payload (data:image/png;base64,...)")
    mime, params = m["mime"].strip().lower(), [p.strip().lower() for p in m["params"].split(";")[1:]]
    if not mime.startswith("image/"):
        raise ValueError(f"the data: URL's media type must be image/..., not {mime[:40] or 'empty'!r}")
    if "base64" not in params:
        raise ValueError("the data: URL must be base64-encoded (data:image/png;base64,...)")
    data = re.sub(r"\s+", "", m["data"])
    if len(data) // 4 * 3 > max_bytes:
        raise ValueError(f"the image is larger than the {max_bytes} bytes accepted")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data: URL's payload is not valid base64") from None
    if not raw:
        raise ValueError("the data: URL holds no image bytes")
    return raw
