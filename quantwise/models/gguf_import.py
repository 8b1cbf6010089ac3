"""GGUF files in: transformers dequantizes them (needs the `gguf` package); we keep an fp32
safetensors copy so later runs stream tensors instead of re-decoding the whole file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file


def gguf_to_safetensors(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize `gguf_path` to fp32 safetensors + config + tokenizer in out_dir (cached)."""
    if (out_dir / "config.json").exists() and (out_dir / "model.safetensors").exists():
        return out_dir
    try:
        import gguf  # noqa: F401 - transformers needs it to read GGUF
    except ImportError:
        raise ValueError("reading GGUF needs the `gguf` and `accelerate` packages: "
                         "pip install gguf accelerate") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf_file import open_gguf

    open_gguf(gguf_path)  # a damaged file fails here in one line, not inside transformers
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        # the file's header passed our checks but its contents contradict each other (e.g. an
        # embedding length that does not match the tensors): transformers' reader gives up
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{gguf_path}: damaged or unsupported GGUF file ({reason})") from None
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the same tensor as the input embeddings
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt", "source": name,
                                                                   "source_path": str(gguf_path.resolve())})
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the copy is plain fp32, not a GGUF-quantized model
    model.config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)  # appears complete or not at all
    return out_dir
