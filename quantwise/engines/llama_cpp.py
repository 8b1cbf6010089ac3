"""llama.cpp run from its own binaries (built by `scripts/peers.sh llama.cpp`): perplexity,
tokenization and decode speed of a GGUF file, measured by llama.cpp itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir

NAME = "llama.cpp"


class EngineMissing(ValueError):
    """The engine is not installed where quantwise looks for it."""


def binaries() -> Path:
    """Directory of llama.cpp's tools: $QUANTWISE_LLAMA_CPP, else the peers cache."""
    env = os.environ.get("QUANTWISE_LLAMA_CPP")
    where = Path(env) if env else cache_dir("peers") / "llama.cpp" / "bin"
    if not (where / "llama-perplexity").exists():
        raise EngineMissing(f"llama.cpp is not built at {where}: run `bash scripts/peers.sh llama.cpp` "
                            "(about 12 minutes on 2 cores), or set QUANTWISE_LLAMA_CPP to its bin directory")
    return where


def _run(tool: str, *args: str, timeout: float = 3600) -> str:
    path = binaries() / tool
    env = {**os.environ, "LD_LIBRARY_PATH": f"{path.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    done = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        lines = (done.stderr + done.stdout).strip().splitlines()
        tail = [line for line in lines if " E " in line or "error" in line.lower()][-2:] or lines[-2:]
        raise RuntimeError(f"{tool} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout + done.stderr


@dataclass(frozen=True)
class LlamaPerplexity:
    perplexity: float
    chunks: int
    ctx: int
    running: list[float]          # llama.cpp's running estimate after each chunk


def perplexity(gguf: str | Path, text: str | Path, ctx: int = 512, chunks: int | None = None,
               threads: int | None = None) -> LlamaPerplexity:
    args = ["-m", str(gguf), "-f", str(text), "-c", str(ctx), "-b", str(ctx), "-t", str(threads or os.cpu_count())]
    if chunks:
        args += ["--chunks", str(chunks)]
    out = _run("llama-perplexity", *args)
    running = [float(v) for v in re.findall(r"\[\d+\](\d+\.\d+)", out)]
    final = re.search(r"Final estimate: PPL = (\d+\.\d+)", out)
    if not running and not final:
        raise RuntimeError(f"llama-perplexity printed no estimate for {gguf}")
    # the final line is sometimes missing (exit 0 regardless): the last running value is the same number
    return LlamaPerplexity(float(final[1]) if final else running[-1], len(running), ctx, running)


def tokenize(gguf: str | Path, text: str | Path) -> list[int]:
    """llama.cpp's token ids for a text file (with BOS when the model adds one), as perplexity sees them."""
    out = _run("llama-tokenize", "-m", str(gguf), "-f", str(text), "--ids", "--log-disable")
    match = re.search(r"\[([\d,\s]*)\]\s*$", out.strip())
    if not match:
        raise RuntimeError("llama-tokenize printed no token ids")
    return [int(v) for v in match[1].split(",") if v.strip()]


def perplexity_bos(gguf_path: str | Path) -> int | None:
    """The token llama-perplexity puts first in every chunk (its BOS when the vocabulary adds one,
    as Gemma's does), to pass as chunked_perplexity's bos_id; None when it keeps the text's token."""
    from ..models.gguf_file import open_gguf

    fields = open_gguf(gguf_path).fields
    add, bos = fields.get("tokenizer.ggml.add_bos_token"), fields.get("tokenizer.ggml.bos_token_id")
    return int(bos.contents()) if add is not None and bos is not None and add.contents() else None


@dataclass(frozen=True)
class LlamaBench:
    prompt_tokens: int
    generated_tokens: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    threads: int


def bench(gguf: str | Path, prompt: int = 17, generate: int = 128, threads: int | None = None,
          repetitions: int = 3) -> LlamaBench:
    """llama-bench's own prompt-processing and text-generation speeds (batch 1)."""
    threads = threads or os.cpu_count()
    out = _run("llama-bench", "-m", str(gguf), "-p", str(prompt), "-n", str(generate), "-t", str(threads),
               "-r", str(repetitions), "-o", "json")
    rows = json.loads(out[out.index("["):out.rindex("]") + 1])
    prefill = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    decode = next(r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return LlamaBench(prompt, generate, float(prefill), float(decode), threads)


def bytes_per_token(gguf_path: str | Path) -> int:
    """Weight bytes one decode step reads: every tensor but the token embedding table (a lookup)."""
    from ..models.gguf_file import open_gguf

    reader = open_gguf(gguf_path)
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def generate(gguf: str | Path, prompt: str, tokens: int = 16, threads: int | None = None) -> str:
    """Greedy continuation of `prompt` by llama.cpp (the text after the prompt)."""
    out = subprocess.run([str(binaries() / "llama-completion"), "-m", str(gguf), "-p", prompt, "-n", str(tokens),
                          "--temp", "0", "--top-k", "1", "-s", "0", "-no-cnv", "--no-display-prompt",
                          "-t", str(threads or os.cpu_count())],
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                         env={**os.environ, "LD_LIBRARY_PATH": str(binaries())})
    if out.returncode != 0:
        raise RuntimeError(f"llama-completion failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    return out.stdout
