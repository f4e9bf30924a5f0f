import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytest-xdist runs one worker per core (-n auto): torch's OpenMP threads per worker share the cores, more runnable
# threads than cores, and spin. Each worker (and the guard processes it spawns) gets its share; an explicit setting wins.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture(scope="session")
def tokenizer():
    from guard.format.tokenizer import Tokenizer

    return Tokenizer.default()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (2 layers, hidden 64) saved as a Hugging Face dir with the real Llama 3 tokenizer."""
    from guard.testing import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny_copy(tiny_model_dir, tmp_path) -> Path:
    """A writable copy of the tiny checkpoint, for tests that damage it."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory):
    """A tiny random Llama Guard 3 Vision-format (mllama) dir and two images: with "What is in this picture?",
    image ``unsafe`` is classified unsafe and image ``safe`` safe (guard.vision.testing.script_image_verdict)."""
    import numpy as np
    from PIL import Image

    from guard.vision.testing import make_vision_checkpoint, script_image_verdict

    root = tmp_path_factory.mktemp("tiny_vision")
    rng = np.random.default_rng(0)
    images = {"unsafe": root / "unsafe.png", "safe": root / "safe.png"}
    Image.fromarray(rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)).save(images["unsafe"])  # 3 tiles wide
    Image.fromarray(rng.integers(0, 256, (300, 100, 3), dtype=np.uint8)).save(images["safe"])  # 3 tiles high
    model = make_vision_checkpoint(root / "model")
    script_image_verdict(model, "What is in this picture?", images["unsafe"], images["safe"])
    return {"dir": model, "text": "What is in this picture?", **images}
