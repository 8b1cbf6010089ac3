"""llm-compressor's environment (`scripts/peers.sh llm-compressor`): its transformers and
compressed-tensors load the checkpoints llm-compressor writes, through `transformers_worker.py`."""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import cache_dir
from .llama_cpp import EngineMissing
from .worker import EngineScores, score_in

NAME = "llm-compressor"


def python() -> Path:
    env = os.environ.get("QUANTWISE_LLMCOMPRESSOR_PYTHON")
    where = Path(env) if env else cache_dir("peers") / "llmcompressor-venv" / "bin" / "python"
    if not where.exists():
        raise EngineMissing(f"llm-compressor is not installed at {where}: run `bash scripts/peers.sh llm-compressor`")
    return where


def score_chunks(model_dir: str | Path, chunks: list[list[int]], dtype: str = "float32") -> EngineScores:
    return score_in(python(), "transformers_worker.py", model_dir, chunks, dtype)
