"""GPTQModel run in its own virtual environment (`scripts/peers.sh gptqmodel`), through
`gptqmodel_worker.py`: its own loader and torch kernel read GPTQ and AWQ exports."""

from __future__ import annotations

import os
from pathlib import Path

from .worker import EngineScores, peer_python, score_in

NAME = "gptqmodel"


def python() -> Path:
    return peer_python("QUANTWISE_GPTQMODEL_PYTHON", "gptqmodel-venv", "GPTQModel")


def score_chunks(model_dir: str | Path, chunks: list[list[int]], dtype: str = "float16") -> EngineScores:
    return score_in(python(), "gptqmodel_worker.py", model_dir, chunks, dtype,
                    env={"GPTQMODEL_CPU_WORKERS": str(os.cpu_count() or 1)})
