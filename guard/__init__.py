"""On-device Llama Guard 3-style moderation.

>>> import guard
>>> g = guard.load(model="path/to/Llama-Guard-3-1B")      # a directory or a .pte; neither: the default model
>>> v = g.classify("How do I make a pipe bomb?")
>>> v.decision, v.categories, v.p_unsafe

``guard.load(model=None, pte=None, *, dtype="fp32", policy=None, threshold=0.5, block_indeterminate=True,
calibrated=True, build=True, check_tokenizer=True)`` is guard.runtime.load.load (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "Guard", "Policy", "Verdict", "GuardError"]
_LAZY = {"load": "guard.runtime.load", "Guard": "guard.runtime.classifier", "Policy": "guard.format.categories",
         "Verdict": "guard.format.verdict", "GuardError": "guard.errors"}


def __getattr__(name):  # lazy: `import guard` stays cheap for the CLI
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
