"""Eager vision backend: a Llama Guard 3-11B-Vision-style (mllama) directory run by transformers on the CPU.

It implements guard.runtime.runner.Runner plus ``set_image``. The image is encoded once (vision model + projector) and
its cross-attention keys/values live in the cache's cross-attention layers; a prefix reuse crops only the
self-attention layers, so the image is never re-encoded for the verdict and category tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from guard.model.checkpoint import check_model_dir, model_type
from guard.runtime.eager import EagerRunner, load_hf_model
from guard.errors import GuardError
from guard.format.tokenizer import Tokenizer
from guard.vision.preprocess import ImageInputs, VisionConfig
from guard.vision.tokenizer import image_id, image_position

def load_mllama(path: str | Path, dtype: str = "fp32"):
    if model_type(path) != "mllama":
        check_model_dir(path)
        raise GuardError(f"{path} is not a Llama 3.2 Vision (model_type 'mllama') checkpoint")
    from transformers import MllamaForConditionalGeneration

    return load_hf_model(path, dtype, MllamaForConditionalGeneration)


class EagerVisionRunner(EagerRunner):
    """EagerRunner over MllamaForConditionalGeneration; ``set_image`` before the prompt that uses it."""

    def __init__(self, path: str | Path, dtype: str = "fp32"):
        check_model_dir(path)  # cheap checks first, weights last
        self.tokenizer = Tokenizer.from_dir(path)
        self.image_token = image_id(self.tokenizer)
        self.vision = VisionConfig.from_dir(path)
        self.model = load_mllama(path, dtype)
        cfg = self.model.config
        if cfg.image_token_index != self.image_token:
            raise GuardError(f"the model's image token is {cfg.image_token_index}, the tokenizer's {self.image_token}")
        if (cfg.vision_config.image_size, cfg.vision_config.max_num_tiles) != (self.vision.tile_size, self.vision.max_tiles):
            raise GuardError(f"{path}: preprocessor tiles ({self.vision.tile_size}, {self.vision.max_tiles}) do not match "
                             f"the vision model's ({cfg.vision_config.image_size}, {cfg.vision_config.max_num_tiles})")
        self.cross_layers = set(cfg.text_config.cross_attention_layers)
        self.max_seq_len = int(cfg.text_config.max_position_embeddings)
        self.name = f"eager-vision:{dtype}"
        self._states, self._num_tiles = None, 0
        self._reset()

    def _reset(self) -> None:
        self._cache, self._cross_cached, self._image_pos = None, False, None

    @torch.inference_mode()
    def set_image(self, image: ImageInputs | None) -> float:
        """Encode ``image`` (None: text only) for the next prompt; forgets the cache. Returns the encode time in ms."""
        self._reset()
        if image is None:
            self._states, self._num_tiles = None, 0
            return 0.0
        t0 = time.perf_counter()
        inner = self.model.model
        x = image.torch()
        out = inner.vision_model(pixel_values=x["pixel_values"].to(self.model.dtype), aspect_ratio_ids=x["aspect_ratio_ids"],
                                 aspect_ratio_mask=x["aspect_ratio_mask"]).last_hidden_state
        hidden = self.model.config.text_config.hidden_size
        self._states = inner.multi_modal_projector(out).reshape(-1, out.shape[-2], hidden)
        self._num_tiles = image.num_tiles
        return (time.perf_counter() - t0) * 1e3

    def _crop(self, start_pos: int) -> None:
        for i, layer in enumerate(self._cache.layers):
            if i not in self.cross_layers:  # cross-attention layers hold the image, not positions
                layer.crop(start_pos)

    def _extra(self, tokens: list[int], start_pos: int, end: int) -> dict:
        self._image_pos = image_position(self._image_pos, tokens, start_pos, self.image_token)
        kw = {"cache_position": torch.arange(start_pos, end)}
        if self._states is not None:
            mask = torch.zeros(1, end, 1, self.vision.max_tiles, dtype=torch.long)
            if self._image_pos is not None:  # text from the image token on sees the image's tiles (processor semantics)
                mask[0, self._image_pos:, 0, : self._num_tiles] = 1
            kw["cross_attention_mask"] = mask
            if not self._cross_cached:
                kw["cross_attention_states"] = self._states
        self._cross_cached = self._states is not None
        return kw
