"""What every exporter shares: integer codes of a quantized linear in engine terms, the refusal
error, and the sharded Hugging Face directory writer (config.json + safetensors + index)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ...formats import FormatKind, Granularity
from ...formats.integer import unpacked_codes, zero_points
from ...runtime.qlinear import QuantizedLinear
from ..atomic import atomic_save_tensors, atomic_write_json
from ..layout import copy_model_files
from ..native import NativeCheckpoint


class ExportError(ValueError):
    """The checkpoint cannot be written in the requested format: the message says why and what to do."""


@dataclass(frozen=True)
class ExportOptions:
    dtype: torch.dtype | None = None     # high-precision tensors and scales; None: the source config's dtype
    gguf_pre: str | None = None          # llama.cpp pre-tokenizer name when quantwise cannot tell it
    gguf_vocab: str | None = None        # GGUF file whose tokenizer.* keys are copied (SentencePiece vocabularies)
    gguf_type: str | None = None         # "q4_k" / "q6_k": K-quants for rows of 256k values; None: from the codes
    gguf_embeddings: str = "auto"        # "auto": token embeddings and output as llama-quantize stores them; "f32"


@dataclass(frozen=True)
class IntWeight:
    """A quantized linear's integer weight as engines store it, in natural input order.

    codes: (out, in) unsigned codes 0..2^bits-1; zeros: (out, groups) unsigned zero points
    (2^(bits-1) for symmetric formats); scales: (out, groups) float32, w = (code - zero) * scale.
    group_size is the input width for per-channel (and per-tensor) scales.
    """

    bits: int
    group_size: int
    symmetric: bool
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor


def int_weight(module: QuantizedLinear, name: str) -> IntWeight:
    qt = module.weight_q
    spec = qt.spec
    if spec.kind is not FormatKind.INT:
        raise ExportError(f"{name}: {spec.name} is not an integer format")
    if module.perm is not None:
        raise ExportError(f"{name}: act-order groups are not contiguous in the original column order, which this "
                          "format cannot express; re-quantize with --act-order --static-groups")
    rows, cols = qt.rows_cols
    half = 2 ** (spec.bits - 1)
    signed = unpacked_codes(qt).to(torch.int32)
    codes = signed + half if spec.symmetric else signed
    scales = qt.scales.float()
    if spec.granularity is Granularity.TENSOR:
        scales = scales.reshape(1, 1).expand(rows, 1).contiguous()
    group = spec.group_size if spec.granularity is Granularity.GROUP else cols
    zeros = torch.full_like(scales, half, dtype=torch.int32) if spec.symmetric else \
        zero_points(qt).to(torch.int32).expand(rows, scales.shape[1]).contiguous()
    return IntWeight(spec.bits, group, spec.symmetric, codes, scales, zeros)


def model_dtype(config: dict, options: ExportOptions) -> torch.dtype:
    if options.dtype is not None:
        return options.dtype
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, str(name).replace("torch.", ""))


def hf_architectures(config: dict) -> list[str]:
    """config.json's `architectures`, which vLLM needs to pick a model class: kept when present,
    otherwise the causal-LM class transformers maps the model type to."""
    if config.get("architectures"):
        return config["architectures"]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if name is None:
        raise ExportError(f"no transformers causal-LM class for model_type {model_type!r}")
    return [name]


LinearWriter = Callable[[str, QuantizedLinear], dict[str, torch.Tensor]]


def write_hf_directory(ckpt: NativeCheckpoint, out: Path, write_linear: LinearWriter,
                       quantization_config: dict, options: ExportOptions,
                       extra_files: dict[str, dict] | None = None) -> dict:
    """A Hugging Face model directory: one safetensors shard per decoder block plus one for the
    rest (so memory stays at one block), `model.safetensors.index.json`, config.json with
    `quantization_config`, and the tokenizer files. Returns what was written."""
    config = ckpt.config()
    dtype = model_dtype(config, options)
    shards = ckpt.manifest.num_blocks + 1
    weight_map: dict[str, str] = {}
    total = 0

    def save(tensors: dict[str, torch.Tensor], index: int) -> None:
        nonlocal total
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        atomic_save_tensors(tensors, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        total += sum(t.numel() * t.element_size() for t in tensors.values())

    for block in ckpt.blocks():
        tensors = {ckpt.manifest.full_name(block.index, k): v.to(dtype) for k, v in block.tensors.items()}
        for name, module in block.linears.items():
            tensors.update(write_linear(ckpt.manifest.full_name(block.index, name), module))
        save(tensors, block.index)
    rest, head = ckpt.rest()
    rest = {k: v.to(dtype) for k, v in rest.items()}
    if head is not None:  # engines expect a plain lm_head unless told otherwise: give them its exact values
        rest["lm_head.weight"] = head.dense_weight().to(dtype)
        if head.bias is not None:
            rest["lm_head.bias"] = head.bias.to(dtype)
    save(rest, shards - 1)
    atomic_write_json({"metadata": {"total_size": total}, "weight_map": weight_map},
                      out / "model.safetensors.index.json")
    copy_model_files(ckpt.path, out, skip=("config.json",))
    config = {**config, "architectures": hf_architectures(config), "dtype": str(dtype).replace("torch.", ""),
              "quantization_config": quantization_config}
    config.pop("torch_dtype", None)
    atomic_write_json(config, out / "config.json")
    for name, data in (extra_files or {}).items():
        atomic_write_json(data, out / name)
    return {"shards": shards, "weight_bytes": total, "dtype": config["dtype"],
            "quantization_config": quantization_config}

