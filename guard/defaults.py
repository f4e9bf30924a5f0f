"""Where the default model lives. guard-mini once it is built; until then a tiny random stand-in, said plainly."""

from __future__ import annotations

import os
from pathlib import Path

HOME = Path(os.environ.get("GUARD_HOME", Path.home() / ".cache" / "ondevice-llamaguard"))


def default_model() -> tuple[str, Path, str]:
    """-> (kind, path, description) with kind 'pte' or 'model'. Builds the stand-in if nothing exists."""
    mini = HOME / "guard-mini"
    if (mini / "model.pte").is_file():
        return "pte", mini / "model.pte", "guard-mini (.pte)"
    if (mini / "config.json").is_file():
        return "model", mini, "guard-mini (eager)"
    tiny = HOME / "tiny-random"
    if not (tiny / "config.json").is_file():
        from guard.testing import make_checkpoint

        make_checkpoint(tiny)
    return "model", tiny, "tiny RANDOM stand-in (guard-mini not built): verdicts are meaningless"
