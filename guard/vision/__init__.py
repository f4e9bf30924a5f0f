"""Llama Guard 3 Vision: image loading and preprocessing, the mllama tokenizer, eager and ExecuTorch backends."""

from __future__ import annotations

from pathlib import Path


def is_vision_model(model: str | None = None, pte: str | None = None) -> bool:
    """True for an mllama checkpoint directory or a .pte written by guard.vision.export (cheap checks only)."""
    if model is not None:
        from guard.vision.eager import is_vision_dir

        return is_vision_dir(model)
    if pte is not None:  # the method names only: no torch import on the text path (guard.runtime.pte)
        from guard.runtime.pte import method_names

        return "vision_encoder" in method_names(pte)
    return False


def load_vision_runner(model: str | Path | None = None, pte: str | Path | None = None, dtype: str = "fp32"):
    """-> (runner, tokenizer) for a Llama Guard 3 Vision directory (eager) or a vision .pte (ExecuTorch)."""
    from guard.errors import GuardError

    if (model is None) == (pte is None):
        raise GuardError("give exactly one of --model DIR or --pte FILE")
    if pte is not None:
        from guard.vision.pte import VisionPteRunner

        runner = VisionPteRunner(pte)
    else:
        from guard.vision.eager import EagerVisionRunner

        runner = EagerVisionRunner(model, dtype=dtype)
    return runner, runner.tokenizer
