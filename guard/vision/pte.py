"""VisionPteRunner: a Llama Guard 3 Vision .pte (guard.vision.export) run by the ExecuTorch runtime.

Same Runner protocol as guard.runtime.pte.PteRunner, plus ``set_image``: the ``vision_encoder`` method writes the
image's cross-attention keys/values into buffers shared with ``prefill``/``decode``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from guard.errors import GuardError
from guard.export.metadata import MARKER, REQUIRED
from guard.runtime.pte import _load_program, check_tokenizer, read_metadata, set_threads

VISION_REQUIRED = REQUIRED + ("get_tile_size", "get_max_tiles", "get_image_token_id")


def is_vision_pte(path) -> bool:
    """True when ``path`` is a loadable program with a ``vision_encoder`` method (header read only)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        return "vision_encoder" in _load_program(p).method_names  # the header is checked first (check_pte_file)
    except GuardError:
        return False


class VisionPteRunner:
    def __init__(self, path: str | Path, tokenizer=None):
        self._load(Path(path), tokenizer)  # set_threads mutes the cpuinfo probes; load errors stay visible

    def _load(self, path: Path, tokenizer) -> None:
        from guard.format.prompt import FORMAT_VERSION
        from guard.format.tokenizer import Tokenizer
        from guard.vision.export import VISION_FORMAT, VISION_METHODS
        from guard.vision.preprocess import VisionConfig

        self.path = path
        program = _load_program(path)
        names = program.method_names
        meta = read_metadata(program, path, VISION_REQUIRED, "export it with guard.vision.export")
        if meta[MARKER] != VISION_FORMAT:
            raise GuardError(f"{path} has format {meta[MARKER]!r}; this runtime reads {VISION_FORMAT!r}")
        if meta["get_prompt_format"] != FORMAT_VERSION:
            raise GuardError(f"{path} expects prompt format {meta['get_prompt_format']!r}, not {FORMAT_VERSION!r}")
        missing = [m for m in VISION_METHODS if m not in names]
        if missing:
            raise GuardError(f"{path} lacks the {missing[0]} method; re-export it")
        self.meta = meta
        self.tokenizer = tokenizer or check_tokenizer(Tokenizer.from_dir(path.parent), meta, path)
        from guard.vision.tokenizer import image_id

        self.image_token = int(meta["get_image_token_id"])
        if image_id(self.tokenizer) != self.image_token:
            raise GuardError(f"tokenizer beside {path} has another <|image|> id than the model ({self.image_token})")
        self.vision = VisionConfig.from_dir(path.parent) if (path.parent / "preprocessor_config.json").is_file() else \
            VisionConfig(int(meta["get_tile_size"]), int(meta["get_max_tiles"]))
        if (self.vision.tile_size, self.vision.max_tiles) != (int(meta["get_tile_size"]), int(meta["get_max_tiles"])):
            raise GuardError(f"preprocessor_config.json beside {path} does not match the model's tiles")
        self.max_seq_len, self.chunk = int(meta["get_max_seq_len"]), int(meta["get_prefill_chunk"])
        ids = [int(i) for i in meta["get_output_ids"]]
        self.output_ids = None if ids == [-1] else ids
        vq = program.load_method("get_vision_quant_scheme").execute([])[0] if "get_vision_quant_scheme" in names else "none"
        self.name = f"pte-vision:{meta['get_quant_scheme']}" + (f"+vision-{vq}" if vq != "none" else "")
        self.threads = set_threads()
        try:
            self._vision, self._prefill, self._decode = (program.load_method(m) for m in VISION_METHODS)
        except Exception:
            raise GuardError(f"cannot load the model methods from {path} (truncated or corrupt?)") from None
        self._program = program
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

    def _check(self, n: int, start_pos: int) -> None:
        if start_pos < 0 or start_pos + n > self.max_seq_len:
            raise GuardError(f"positions {start_pos}..{start_pos + n - 1} exceed the model's max_seq_len {self.max_seq_len}")

    def _track_image(self, tokens: list[int], start_pos: int) -> None:
        if self._image_pos is not None and self._image_pos >= start_pos:
            self._image_pos = None
        if self._image_pos is None and self.image_token in tokens:
            self._image_pos = start_pos + tokens.index(self.image_token)

    def _xrow(self, pos: int, n: int) -> torch.Tensor:
        p = torch.arange(pos, pos + n)
        return (p >= self._image_pos).float() if self._image_pos is not None else torch.zeros(n)

    def prefill(self, tokens: list[int], start_pos: int) -> torch.Tensor:
        if not tokens:
            raise GuardError("prefill needs at least one token")
        self._check(len(tokens), start_pos)
        self._track_image(tokens, start_pos)
        C, pos, out = self.chunk, start_pos, None
        for i in range(0, len(tokens), C):
            part = tokens[i:i + C]
            n = len(part)
            if n == 1 and out is not None or len(tokens) == 1:
                return self.decode(part[0], pos)
            x = torch.tensor([part + [0] * (C - n)], dtype=torch.long)
            out = self._prefill.execute([x, torch.arange(pos, pos + C), torch.tensor([n - 1]), self._xrow(pos, C), self._xon])[0]
            pos += n
        return out[0]

    def decode(self, token: int, pos: int) -> torch.Tensor:
        self._check(1, pos)
        self._track_image([token], pos)
        x = torch.tensor([[token]], dtype=torch.long)
        return self._decode.execute([x, torch.tensor([pos]), torch.tensor([0]), self._xrow(pos, 1), self._xon])[0][0]
