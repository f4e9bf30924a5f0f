"""The one way a model becomes a Guard (guard.load): ``resolve`` what was named (a Hugging Face directory or a
.pte, told apart on disk; neither: the default model), ``open_runner`` opens it once (text or vision, eager or
ExecuTorch), ``make_guard`` wraps it. The CLI, demo, eval, calibrate, bench and the server all load through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guard.errors import GuardError


@dataclass(frozen=True)
class Source:
    kind: str  # "pte" (ExecuTorch program) or "model" (Hugging Face directory, eager)
    path: Path
    description: str
    default: bool = False  # the default model, not one the caller named


def resolve(model: str | Path | None = None, pte: str | Path | None = None, *, build: bool = True) -> Source:
    """What ``model`` / ``pte`` (at most one) name; neither: the default model, built first if ``build``."""
    if model is not None and pte is not None:
        raise GuardError("give one model: a directory or .pte (model=...) or a .pte (pte=...), not both")
    if model is None and pte is None:
        from guard.defaults import default_model

        kind, path, desc = default_model(build=build)
        return Source(kind, Path(path), desc, default=True)
    path = Path(pte if pte is not None else model)
    kind = "pte" if pte is not None or path.is_file() else "model"
    return Source(kind, path, str(path))


def open_runner(source: Source, dtype: str = "fp32", check_tokenizer: bool = True):
    """The runner for ``source``: PteRunner / VisionPteRunner (the program is loaded once and handed over) or
    EagerRunner / EagerVisionRunner (chosen by config.json's model_type).

    ``check_tokenizer=False`` accepts a tokenizer.json beside a .pte that differs from the one it was exported with.
    The .pte's header is checked before the runtime sees it, and stderr is not muted while it loads (a failure's
    log goes into the one-line error; only XNNPACK's cpuinfo probes are hidden). Text models run through etlite
    (no torch import) when it is available; vision models on executorch's Python bindings."""
    if source.kind == "pte":
        from guard.runtime.pte import PteRunner, drop_prefetch, open_program, prefetch_tokenizer

        if (source.path.parent / "tokenizer.json").is_file():
            prefetch_tokenizer(source.path.parent)  # parsed while the runtime library loads
        try:
            program = open_program(source.path)  # etlite (no torch) when available: guard.runtime.pte
            if "vision_encoder" in program.method_names:  # Llama Guard 3 Vision: docs/vision.md
                from guard.vision.pte import VisionPteRunner

                # its methods take extra tensor inputs: it runs on executorch's Python bindings
                return VisionPteRunner(source.path, program=None if hasattr(program, "step") else program,
                                       check_tokenizer=check_tokenizer)
            return PteRunner(source.path, program=program, check_tokenizer=check_tokenizer)
        finally:
            drop_prefetch(source.path.parent)  # unused when loading failed early
    from guard.model.checkpoint import model_type

    if model_type(source.path) == "mllama":
        from guard.vision.eager import EagerVisionRunner

        return EagerVisionRunner(source.path, dtype=dtype)
    from guard.runtime.eager import EagerRunner

    return EagerRunner(source.path, dtype=dtype)


def load_runner(model: str | Path | None = None, pte: str | Path | None = None, dtype: str = "fp32",
                check_tokenizer: bool = True):
    """-> (runner, tokenizer): ``open_runner(resolve(model, pte), dtype)`` for callers that drive a runner directly."""
    runner = open_runner(resolve(model, pte), dtype, check_tokenizer)
    return runner, runner.tokenizer


def make_guard(runner, tokenizer=None, *, policy=None, threshold: float = 0.5, block_indeterminate: bool = True,
               calibration=None, source: Source | None = None, segment_checks: int | None = None):
    """The only place a Guard is constructed: a VisionGuard when the runner takes images."""
    if hasattr(runner, "set_image"):
        from guard.vision.classifier import VisionGuard as cls
    else:
        from guard.runtime.classifier import Guard as cls
    g = cls(runner, tokenizer or runner.tokenizer, policy, threshold=threshold, block_indeterminate=block_indeterminate,
            calibration=calibration, segment_checks=segment_checks)
    g.source = source
    return g


def load(model: str | Path | None = None, pte: str | Path | None = None, *, dtype: str = "fp32", policy=None,
         threshold: float = 0.5, block_indeterminate: bool = True, calibrated: bool = True, build: bool = True,
         check_tokenizer: bool = True, segment_checks: int | None = None):
    """A Guard for a Hugging Face directory or .pte (``model``), a .pte (``pte``) or, neither given, the default model.

    ``calibrated``: apply the model's calibration.json when it has one (guard.eval.calibrate). ``build``: build the
    default model when it is missing or stale (else fall back to what is there). ``check_tokenizer``: refuse a
    tokenizer.json beside a .pte that is not the one it was exported with. The returned Guard is safe to share
    between threads (calls are serialised around its runner's KV cache). ``segment_checks``: how many cuts of a
    prompt are judged too (guard.runtime.segments; None: its default, 0: none)."""
    from guard.eval.calibrate import load as load_calibration
    from guard.logs import quiet_third_party

    quiet_third_party()
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise GuardError(f"threshold must be in [0, 1], got {threshold}")
    source = resolve(model, pte, build=build)
    calibration = load_calibration(source.path) if calibrated else None
    return make_guard(open_runner(source, dtype, check_tokenizer), policy=policy, threshold=threshold,
                      block_indeterminate=block_indeterminate, calibration=calibration, source=source,
                      segment_checks=segment_checks)
