"""VisionPteRunner: a Llama Guard 3 Vision .pte (guard.vision.export) run by the ExecuTorch runtime.

The text PteRunner plus ``set_image``: the ``vision_encoder`` method writes the image's cross-attention
keys/values into buffers shared with ``prefill``/``decode``, which take two extra inputs (``xrow``: 1 from
``<|image|>`` on, ``xon``: 0 for a text-only prompt).
"""

from __future__ import annotations

import time

import torch

from guard.errors import BadModelFile
from guard.export.metadata import VISION_FORMAT, VISION_METHODS, VISION_REQUIRED
from guard.runtime.pte import PteRunner
from guard.vision.tokenizer import image_position


class VisionPteRunner(PteRunner):
    FORMAT, REQUIRED, METHODS, KIND = VISION_FORMAT, VISION_REQUIRED, VISION_METHODS, "pte-vision"

    def _setup(self, program, meta: dict) -> None:
        from guard.vision.preprocess import VisionConfig
        from guard.vision.tokenizer import image_id

        path = self.path
        self.image_token = int(meta["get_image_token_id"])
        if image_id(self.tokenizer) != self.image_token:
            raise BadModelFile(f"tokenizer beside {path} has another <|image|> id than the model ({self.image_token})")
        tiles = (int(meta["get_tile_size"]), int(meta["get_max_tiles"]))
        self.vision = VisionConfig.from_dir(path.parent) if (path.parent / "preprocessor_config.json").is_file() else \
            VisionConfig(*tiles)
        if (self.vision.tile_size, self.vision.max_tiles) != tiles:
            raise BadModelFile(f"preprocessor_config.json beside {path} does not match the model's tiles")
        vq = program.load_method("get_vision_quant_scheme").execute([])[0] if "get_vision_quant_scheme" in program.method_names else "none"
        self.name += f"+vision-{vq}" if vq != "none" else ""
        self._vision = self.methods["vision_encoder"]
        self._xon, self._image_pos = torch.zeros(1), None

    def set_image(self, image) -> float:
        """Run ``vision_encoder`` for ``image`` (guard.vision.preprocess.ImageInputs), or switch it off (None). ms."""
        self._image_pos = None
        if image is None:
            self._xon = torch.zeros(1)
            return 0.0
        x = image.torch()
        t0 = time.perf_counter()
        self._vision.execute([x["pixel_values"], x["aspect_ratio_ids"], x["aspect_ratio_mask"]])
        self._xon = torch.ones(1)
        return (time.perf_counter() - t0) * 1e3

    def _on_tokens(self, tokens: list[int], start_pos: int) -> None:
        self._image_pos = image_position(self._image_pos, tokens, start_pos, self.image_token)

    def _extra(self, pos: int, n: int) -> list:
        p = torch.arange(pos, pos + n)
        return [(p >= self._image_pos).float() if self._image_pos is not None else torch.zeros(n), self._xon]
