"""GPTQModel run in its own virtual environment (`scripts/peers.sh gptqmodel`), through
`gptqmodel_worker.py`: its own loader and torch kernel read GPTQ and AWQ exports."""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import cache_dir
from .llama_cpp import EngineMissing
from .worker import EngineScores, score_in

NAME = "gptqmodel"


def python() -> Path:
    env = os.environ.get("QUANTWISE_GPTQMODEL_PYTHON")
    where = Path(env) if env else cache_dir("peers") / "gptqmodel-venv" / "bin" / "python"
    if not where.exists():
        raise EngineMissing(f"GPTQModel is not installed at {where}: run `bash scripts/peers.sh gptqmodel`")
    return where


def score_chunks(model_dir: str | Path, chunks: list[list[int]], dtype: str = "float16") -> EngineScores:
    return score_in(python(), "gptqmodel_worker.py", model_dir, chunks, dtype,
                    env={"GPTQMODEL_CPU_WORKERS": str(os.cpu_count() or 1)})
