"""Tiny random Llama Guard 3 Vision-format checkpoints (mllama) for tests and demos: no downloads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class TinyVisionConfig:
    # text decoder: layer 1 is a cross-attention layer (the 11B has 8 of its 40 layers cross-attending)
    num_hidden_layers: int = 3
    cross_attention_layers: list[int] = field(default_factory=lambda: [1])
    hidden_size: int = 64
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 16384  # above the llama3 rope scaling's original 8192
    # vision encoder: a 56-pixel tile of 14-pixel patches (the real model: 560 and 14), 4 tiles
    image_size: int = 56
    patch_size: int = 14
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_global_layers: int = 1
    vision_heads: int = 2
    intermediate_layers_indices: list[int] = field(default_factory=lambda: [0])
    max_num_tiles: int = 4
    gate: float = 0.8  # tanh gates start at 0 in a fresh model, which would hide the image from the text
    seed: int = 0


def mllama_config(cfg: TinyVisionConfig):
    from transformers import MllamaConfig

    vision = dict(
        hidden_size=cfg.vision_hidden_size, num_hidden_layers=cfg.vision_layers, num_global_layers=cfg.vision_global_layers,
        num_attention_heads=cfg.vision_heads, intermediate_size=2 * cfg.vision_hidden_size, image_size=cfg.image_size,
        patch_size=cfg.patch_size, max_num_tiles=cfg.max_num_tiles, intermediate_layers_indices=list(cfg.intermediate_layers_indices),
        vision_output_dim=cfg.vision_hidden_size * (1 + len(cfg.intermediate_layers_indices)),
    )
    text = dict(
        vocab_size=128256, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        cross_attention_layers=list(cfg.cross_attention_layers), num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        bos_token_id=128000, eos_token_id=128009, pad_token_id=128004,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)


def make_vision_checkpoint(out: str | Path, cfg: TinyVisionConfig | None = None) -> Path:
    """Save a random MllamaForConditionalGeneration, the Llama 3.2 Vision tokenizer and a preprocessor config."""
    from transformers import MllamaForConditionalGeneration

    from guard.vision.preprocess import MEAN, STD
    from guard.vision.tokenizer import save_vision_tokenizer

    cfg = cfg or TinyVisionConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = MllamaForConditionalGeneration(mllama_config(cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate", "_gate")):  # every tanh gate, vision and text
                p.fill_(cfg.gate)
    model.save_pretrained(out, safe_serialization=True)
    save_vision_tokenizer(out)
    pre = {"image_processor_type": "MllamaImageProcessor", "size": {"height": cfg.image_size, "width": cfg.image_size},
           "max_image_tiles": cfg.max_num_tiles, "image_mean": list(MEAN), "image_std": list(STD), "do_convert_rgb": True,
           "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True, "rescale_factor": 1 / 255, "resample": 2}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return out


def script_image_verdict(model_dir: str | Path, text: str, unsafe_image: str | Path, safe_image: str | Path,
                         strength: float = 60.0) -> None:
    """Rewrite the output rows of "safe" and "unsafe" so that ``text`` with ``unsafe_image`` is classified unsafe
    and with ``safe_image`` safe: the rows point along the difference of the two final hidden states at the
    verdict position. Everything else stays random, so the verdict is decided by the pixels through the
    vision encoder and the cross-attention layers (used to test eager/.pte verdict parity end to end).
    """
    from safetensors.torch import load_file, save_file

    from guard.runtime.load import load

    guard = load(model_dir, calibrated=False)
    runner = guard.runner
    seen = []
    hook = runner.model.model.language_model.norm.register_forward_hook(lambda m, i, o: seen.append(o[0, -1].detach()))
    try:
        guard.classify(text, image=unsafe_image)
        h_unsafe = seen[0]
        seen.clear()
        guard.classify(text, image=safe_image)
        h_safe = seen[0]
    finally:
        hook.remove()
    d = h_unsafe - h_safe
    d = d / d.norm()
    t = runner.tokenizer.tokens
    path = Path(model_dir) / "model.safetensors"
    sd = load_file(str(path))
    key = "language_model.lm_head.weight" if "language_model.lm_head.weight" in sd else "lm_head.weight"  # HF saves mllama with legacy names
    head = sd[key]
    scale = strength / float(h_unsafe.norm())
    head[t.unsafe] = scale * d
    head[t.safe] = -scale * d
    save_file(sd, str(path), metadata={"format": "pt"})
