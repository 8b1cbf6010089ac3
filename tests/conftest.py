import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import make_tiny_model, write_text  # noqa: E402

from quantwise.calibration import CalibrationConfig  # noqa: E402
from quantwise.methods import build_method  # noqa: E402
from quantwise.pipeline.sequential import QuantizeJob, run_quantize  # noqa: E402

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


@pytest.fixture(scope="session")
def quantized(tiny_llama, calib_text, tmp_path_factory):
    """Quantize the tiny Llama once per (method, format)."""
    made = {}

    def make(method: str, fmt: str, **options):
        key = (method, fmt, tuple(sorted(options.items())))
        if key not in made:
            out = tmp_path_factory.mktemp("q") / "ckpt"
            calibration = CalibrationConfig((str(calib_text),), samples=4, seq_len=32, seed=1)
            run_quantize(QuantizeJob(str(tiny_llama), method, build_method(method, fmt, **options), calibration, out))
            made[key] = out
        return made[key]
    return make
