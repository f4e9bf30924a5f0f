import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from guard.tokenizer import Tokenizer

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
