"""Tiny random Llama Guard 3 Vision-format checkpoints (mllama) for tests and demos: no downloads."""

from __future__ import annotations

import json
from pathlib import Path

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def tiny_text(**overrides):
    """The text decoder: guard.testing.tiny with 3 layers (layer 1 cross-attends, as 8 of the 11B's 40 do) and
    16,384 positions, above the llama3 rope scaling's original 8,192."""
    from guard.testing import tiny

    return tiny(**{"n_layers": 3, "max_seq_len": 16384, "rope_scaling": LLAMA3_ROPE, **overrides})


def tiny_encoder(**overrides):
    """The vision encoder as guard.vision.model.VisionArgs: 56-pixel tiles of 14-pixel patches (the real model:
    560 and 14), up to 4 tiles, width 32, 2 layers + 1 global."""
    from guard.vision.model import VisionArgs

    return VisionArgs(**{"dim": 32, "n_layers": 2, "n_global_layers": 1, "n_heads": 2, "hidden_dim": 64,
                         "image_size": 56, "max_tiles": 4, "intermediate": [0], "output_dim": 64, **overrides})


def mllama_config(text, vision, cross_layers=(1,)):
    """A transformers MllamaConfig from guard's ModelArgs (text) and VisionArgs."""
    from transformers import MllamaConfig

    t = {**text.to_hf(), "cross_attention_layers": list(cross_layers), "bos_token_id": 128000, "eos_token_id": 128009,
         "pad_token_id": 128004}
    return MllamaConfig(vision_config=vision.to_hf(), text_config=t, image_token_index=128256)


def make_vision_checkpoint(out: str | Path, text=None, vision=None, cross_layers=(1,), gate: float = 0.8,
                           seed: int = 0) -> Path:
    """Save a random MllamaForConditionalGeneration (``tiny_text()`` / ``tiny_encoder()`` by default), the Llama 3.2
    Vision tokenizer and a preprocessor config. ``gate``: every tanh gate's value (a fresh model's are 0, which
    would hide the image from the text)."""
    import torch
    from transformers import MllamaForConditionalGeneration

    from guard.vision.preprocess import MEAN, STD
    from guard.vision.tokenizer import save_vision_tokenizer

    vision = vision or tiny_encoder()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(mllama_config(text or tiny_text(), vision, cross_layers)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate", "_gate")):  # every tanh gate, vision and text
                p.fill_(gate)
    model.save_pretrained(out, safe_serialization=True)
    save_vision_tokenizer(out)
    pre = {"image_processor_type": "MllamaImageProcessor", "size": {"height": vision.image_size, "width": vision.image_size},
           "max_image_tiles": vision.max_tiles, "image_mean": list(MEAN), "image_std": list(STD), "do_convert_rgb": True,
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
