"""On-device Llama Guard 3-style moderation.

>>> import guard
>>> g = guard.load(model="path/to/Llama-Guard-3-1B")      # or pte="out/model.pte"; neither: the default model
>>> v = g.classify("How do I make a pipe bomb?")
>>> v.decision, v.categories, v.p_unsafe
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "Guard", "Policy", "Verdict", "GuardError"]


def load(model: str | None = None, pte: str | None = None, *, dtype: str = "fp32", policy=None,
         threshold: float = 0.5, block_indeterminate: bool = True, calibrated: bool = True,
         check_tokenizer: bool = True):
    """Load a guard from a Hugging Face directory, an exported .pte, or (neither given) the default model.

    ``calibrated``: apply the model's calibration.json when it has one (guard.eval.calibrate).
    ``check_tokenizer``: refuse a tokenizer.json beside a .pte that is not the one it was exported with.
    The returned Guard is safe to share between threads (calls are serialised around its KV cache)."""
    from guard.logs import quiet_third_party

    quiet_third_party()
    from guard.eval.calibrate import load as load_calibration
    from guard.runtime.classifier import Guard
    from guard.runtime.runner import load_runner

    if model is None and pte is None:
        from guard.defaults import default_model

        kind, path, _ = default_model()
        model, pte = (None, str(path)) if kind == "pte" else (str(path), None)
    runner, tok = load_runner(model=model, pte=pte, dtype=dtype, check_tokenizer=check_tokenizer)
    return Guard(runner, tok, policy, threshold=threshold, block_indeterminate=block_indeterminate,
                 calibration=load_calibration(model or pte) if calibrated else None)


def __getattr__(name):  # lazy: `import guard` stays cheap for the CLI
    if name == "Guard":
        from guard.runtime.classifier import Guard

        return Guard
    if name == "Policy":
        from guard.format.categories import Policy

        return Policy
    if name == "Verdict":
        from guard.format.verdict import Verdict

        return Verdict
    if name == "GuardError":
        from guard.errors import GuardError

        return GuardError
    raise AttributeError(name)
