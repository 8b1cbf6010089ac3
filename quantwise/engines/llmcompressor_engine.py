"""llm-compressor's environment (`scripts/peers.sh llm-compressor`): its transformers and
compressed-tensors load the checkpoints llm-compressor writes, through `transformers_worker.py`."""

from __future__ import annotations

from pathlib import Path

from .worker import EngineScores, peer_python, score_in

NAME = "llm-compressor"


def python() -> Path:
    return peer_python("QUANTWISE_LLMCOMPRESSOR_PYTHON", "llmcompressor-venv", "llm-compressor")


def score_chunks(model_dir: str | Path, chunks: list[list[int]], dtype: str = "float32") -> EngineScores:
    return score_in(python(), "transformers_worker.py", model_dir, chunks, dtype)
