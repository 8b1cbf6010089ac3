import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import make_tiny_model, write_text  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama") / "model", "llama", layers=3)


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("gemma") / "model", "gemma3", layers=2)


@pytest.fixture(scope="session")
def calib_text(tmp_path_factory):
    return write_text(tmp_path_factory.mktemp("text") / "calib.txt")
