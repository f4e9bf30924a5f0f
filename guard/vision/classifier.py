"""VisionGuard: the text Guard plus one image per conversation (Llama Guard 3 Vision).

``classify(content, response=None, image=PATH or BYTES)`` loads and preprocesses the image, encodes it once in the
runner (eager or .pte), puts an image part in the first user turn (so the prompt carries ``<|image|>``), and
returns the same Verdict as the text guard, with ``timings["image_encode_ms"]`` and ``timings["image"]``.
The Guard's token-prefix cache is dropped whenever the image changes: after ``<|image|>`` every position
depends on the pixels, not just on the tokens.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

from guard.runtime.classifier import Guard
from guard.errors import GuardError
from guard.format.prompt import Message, as_messages, conversation
from guard.format.verdict import Verdict
from guard.vision.image import load_image
from guard.vision.preprocess import preprocess


def with_image_part(messages) -> list:
    """Messages with an ``{"type": "image"}`` part at the front of the first user turn (unless one is there)."""
    msgs = [dict(m) if isinstance(m, dict) else m for m in messages]
    conv = conversation(msgs)  # validates roles, parts and the one-image rule
    if any(m.image for m in conv):
        return msgs
    first = msgs[0]
    if isinstance(first, Message):
        msgs[0] = replace(first, image=True)
        return msgs
    content = first["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    first["content"] = [{"type": "image"}] + parts
    return msgs


class VisionGuard(Guard):
    """A Guard over a vision runner (guard.vision.eager.EagerVisionRunner or guard.vision.pte.VisionPteRunner)."""

    vision = True

    def __init__(self, runner, tokenizer, policy=None, threshold: float = 0.5, block_indeterminate: bool = True,
                 calibration=None, segment_checks: int | None = None):
        if not hasattr(runner, "set_image"):
            raise GuardError(f"{runner.name} is a text-only model; an image needs a Llama Guard 3 Vision (mllama) model")
        super().__init__(runner, tokenizer, policy, threshold, block_indeterminate, calibration,
                         segment_checks=segment_checks)
        self._image_key: str | None = None  # what the runner currently holds ("" = no image)

    def _set_image(self, image) -> dict:
        """Load + encode ``image`` (a path, an image file's bytes, or None for text only) if it differs from the runner's."""
        if image is None:
            key, inputs, info = "", None, None
        else:
            t0 = time.perf_counter()
            rgb, info = load_image(image)
            inputs = preprocess(rgb, self.runner.vision)
            key = hashlib.sha256(inputs.pixel_values.tobytes() + inputs.aspect_ratio_ids.tobytes()).hexdigest()
            load_ms = (time.perf_counter() - t0) * 1e3
        if key == self._image_key:
            return {"image_encode_ms": 0.0, "image_cached": True} if image is not None else {}
        encode_ms = self.runner.set_image(inputs)
        self.invalidate()  # cached positions after <|image|> belong to the old image
        self._image_key = key
        if image is None:
            return {}
        return {"image_load_ms": load_ms, "image_encode_ms": encode_ms, "image_cached": False,
                "image": {"path": info.path, "size": list(info.size), "format": info.format, "mode": info.mode,
                          "frames": info.frames, "exif_rotated": info.exif_rotated, "draft_scale": info.draft_scale,
                          "tiles": inputs.num_tiles, "canvas": list(inputs.canvas)}}

    def classify(self, content, response: str | None = None, image: str | Path | bytes | None = None, *,
                 segments: bool = True) -> Verdict:
        t0 = time.perf_counter()
        msgs = as_messages(content, response)
        if image is not None:
            msgs = with_image_part(msgs)
        elif any(m.image for m in conversation(msgs)):
            raise GuardError("the conversation has an image part but no image was given (pass image=PATH / --image)")
        with self.lock:  # the image in the runner and the token cache belong together (guard.runtime.classifier)
            extra = self._set_image(image)
            verdict = super().classify(msgs, segments=segments)
        verdict.timings.update(extra)
        verdict.latency_ms = (time.perf_counter() - t0) * 1e3
        return verdict
