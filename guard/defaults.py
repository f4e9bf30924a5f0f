"""Where the default model lives: guard-mini, built once from the committed artefacts (models/guard-mini/)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from guard.errors import GuardError

HOME = Path(os.environ.get("GUARD_HOME", Path.home() / ".cache" / "ondevice-llamaguard"))


def check_home() -> Path:
    """GUARD_HOME must be a directory (or not exist yet): checked before anything is built into it."""
    for p in (HOME, *HOME.parents):
        if p.exists():
            if not p.is_dir():
                raise GuardError(f"GUARD_HOME {HOME} is not a directory ({p} is a file); point it at a directory")
            break
    if (HOME / "guard-mini").exists() and not (HOME / "guard-mini").is_dir():
        raise GuardError(f"{HOME / 'guard-mini'} is a file; GUARD_HOME needs a directory there")
    return HOME


def mini_dir() -> Path:
    return HOME / "guard-mini"


def _described(mini: Path, note: str = "") -> str:
    """'guard-mini (.pte, SCHEME)': the scheme its build.json records (the recipe's quant_scheme)."""
    try:
        scheme = json.loads((mini / "build.json").read_text()).get("quant", "8da4w")
    except (OSError, ValueError, AttributeError):
        scheme = "8da4w"
    return f"guard-mini (.pte, {scheme}){note}"


def default_model(build: bool = True) -> tuple[str, Path, str]:
    """-> (kind, path, description) with kind 'pte' or 'model'.

    guard-mini's ``model.pte`` when it is built from the current artefacts; otherwise it is (re)built now from the
    committed artefacts (a few minutes, once; scripts/setup.sh does it). Only when the artefacts or the SmolLM2
    weights are not installed does it fall back to a tiny random stand-in, and says so."""
    from guard.mini import ARTEFACTS, gguf_path, is_current, missing_artefacts, sync_calibration

    check_home()
    mini = mini_dir()
    if is_current(mini, ARTEFACTS):
        sync_calibration(mini, ARTEFACTS)
        return "pte", mini / "model.pte", _described(mini)
    try:
        gguf_path()
        ready = True
    except GuardError:
        ready = False
    ready = ready and not missing_artefacts(ARTEFACTS)  # a malformed recipe is an error, not a random stand-in
    if ready and build:
        from guard.mini import build as build_mini
        from guard.mini import build_lock

        with build_lock(mini):  # another process may be building it now: wait, then use its build
            if not is_current(mini, ARTEFACTS):
                why = "its artefacts changed" if (mini / "model.pte").is_file() else "once"
                print(f"guard: building guard-mini from {ARTEFACTS} into {mini} ({why}, a few minutes)", file=sys.stderr)
                build_mini(mini)
        return "pte", mini / "model.pte", _described(mini)
    if (mini / "model.pte").is_file():
        return "pte", mini / "model.pte", _described(mini, " built from OLDER artefacts: run `guard mini build`")
    tiny = HOME / "tiny-random"
    if not (tiny / "config.json").is_file():
        from guard.testing import make_checkpoint

        make_checkpoint(tiny)
    return "model", tiny, "tiny RANDOM stand-in (guard-mini is not installed): verdicts are meaningless"
