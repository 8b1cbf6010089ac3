"""Running a scoring worker inside an engine's own virtual environment (where quantwise is not
installed): the request goes in as a JSON file, one JSON line comes back."""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineScores:
    perplexity: float
    scored_tokens: int
    top1: list[list[int]]         # the engine's most likely token at each scored position, per chunk
    quantization: str | None      # the quantization method the engine recognised in the checkpoint
    load_seconds: float


def peer_python(env_var: str, venv: str, install: str) -> Path:
    """The interpreter of a peer's own virtual environment: $env_var, else the one
    `scripts/peers.sh` builds under the cache; EngineMissing (with how to install it) if absent."""
    from ..cache import cache_dir
    from .llama_cpp import EngineMissing

    where = Path(os.environ[env_var]) if os.environ.get(env_var) else cache_dir("peers") / venv / "bin" / "python"
    if not where.exists():
        raise EngineMissing(f"{install} is not installed at {where}: run `bash scripts/peers.sh "
                            f"{install.lower()}`, or set {env_var}")
    return where


def score_in(python: Path, worker: str, model_dir: str | Path, chunks: list[list[int]], dtype: str,
             env: dict[str, str] | None = None, timeout: float = 3600) -> EngineScores:
    """llama-perplexity's scheme in another engine: each chunk scores its second half."""
    first = len(chunks[0]) // 2
    with tempfile.TemporaryDirectory() as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({"model": str(model_dir), "dtype": dtype, "chunks": chunks, "first": first}))
        done = subprocess.run([str(python), str(Path(__file__).with_name(worker)), str(request)],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"{worker.removesuffix('_worker.py')} could not run {model_dir}: "
                           f"{lines[-1] if lines else 'no output'}")
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    logprobs = [lp for r in payload["results"] for lp in r["logprobs"]]
    return EngineScores(math.exp(-sum(logprobs) / len(logprobs)), len(logprobs),
                        [r["top1"] for r in payload["results"]], payload.get("quantization"), payload["load_s"])
