"""Checks on a Hugging Face checkpoint directory before anything is loaded: safetensors only, never pickle."""

from __future__ import annotations

import json
from pathlib import Path

from guard.errors import BadModelFile

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def check_model_dir(path: str | Path) -> list[Path]:
    """Validate ``path`` and return its safetensors files. Raises BadModelFile (a GuardError) with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise BadModelFile(f"model directory not found: {path}")
    if not path.is_dir():
        raise BadModelFile(f"not a directory: {path} (this needs a Hugging Face checkpoint directory, not an exported .pte)")
    if not (path / "config.json").is_file():
        raise BadModelFile(f"{path} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadModelFile(f"{path / 'config.json'} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise BadModelFile(f"{path / 'config.json'} must hold a JSON object, not {type(config).__name__}")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise BadModelFile(f"{path} holds only pickle weights ({pickles[0]}); refusing to unpickle, convert to safetensors")
        raise BadModelFile(f"no .safetensors weights in {path}")
    for f in files:
        check_safetensors(f)
    return files


def model_type(path: str | Path) -> str | None:
    """config.json's model_type ("llama", "mllama", ...), or None when there is no readable config."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError, RecursionError):  # unreadable, not JSON, not an object
        return None


def check_safetensors(path: Path) -> None:
    """Header and size checks: catches truncated and corrupt files without reading the tensors."""
    from safetensors import safe_open

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"expected {8 + n + end} bytes, found {size}")
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise BadModelFile(f"corrupt or truncated safetensors file {path}: {e}") from None
