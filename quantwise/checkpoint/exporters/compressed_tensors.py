"""compressed-tensors, the format llm-compressor writes and vLLM, SGLang and transformers load.

Source of the layout: vllm-project/compressed-tensors (`compressors/pack_quantized`,
`quantization/quant_args.py`), read at 0.20.
- pack-quantized (W4A16, W8A16, any 2..8 bits): `weight_packed` int32 (out, ceil(in*bits/32)),
  codes offset by 2^(bits-1) and packed little-endian along the input; `weight_scale` (out, groups);
  `weight_shape`; asymmetric adds `weight_zero_point` packed along the output dimension.
- int-quantized (W8A8 INT8, dynamic per-token activations): `weight` int8, `weight_scale` (out, 1).
- float-quantized (FP8 E4M3): `weight` float8_e4m3fn, `weight_scale` (out, 1) or (1,).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...formats import FormatKind, Granularity
from ...runtime.qlinear import QuantizedLinear
from ..int32_packing import pack_int32
from ..native import NativeCheckpoint
from .base import ExportError, ExportOptions, int_weight, model_dtype, write_hf_directory

NAME = "compressed-tensors"
ENGINES = "vLLM, SGLang, transformers (with compressed-tensors)"


def _scheme(module: QuantizedLinear, name: str) -> tuple[str, dict]:
    """(format, scheme dict) for one linear, or ExportError."""
    spec = module.weight_q.spec
    if module.perm is not None:
        raise ExportError(f"{name}: act-order without static groups needs g_idx, which compressed-tensors dropped "
                          "(and vLLM rejects); re-quantize with --act-order --static-groups")
    if module.outlier_threshold is not None:
        raise ExportError(f"{name}: LLM.int8() keeps outlier columns in 16 bits, which compressed-tensors cannot "
                          "express; export a SmoothQuant W8A8 or weight-only INT8 model instead")
    strategy = {Granularity.GROUP: "group", Granularity.CHANNEL: "channel", Granularity.TENSOR: "tensor"}.get(
        spec.granularity)
    if strategy is None:
        raise ExportError(f"{name}: {spec.granularity.value} scales are not a weight strategy of compressed-tensors")
    if spec.kind is FormatKind.INT:
        cols = module.in_features
        if strategy == "group" and cols % spec.group_size:
            raise ExportError(f"{name}: group size {spec.group_size} does not divide the input width {cols} "
                              f"(compressed-tensors and vLLM size scales as {cols} // {spec.group_size}); quantize "
                              "with --for vllm, or a group size that divides it")
        weights = {"num_bits": spec.bits, "type": "int", "symmetric": spec.symmetric, "strategy": strategy,
                   "group_size": spec.group_size, "dynamic": False, "actorder": None}
        if module.act_spec is None:
            return "pack-quantized", {"weights": weights, "input_activations": None}
        if spec.bits != 8 or not spec.symmetric or strategy != "channel":
            raise ExportError(f"{name}: W8A8 export takes symmetric per-channel int8 weights, not {spec.name}")
        acts = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
        return "int-quantized", {"weights": weights, "input_activations": acts}
    if spec.kind is FormatKind.FP8_E4M3 and strategy in ("channel", "tensor") and module.act_spec is None:
        weights = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": strategy, "group_size": None,
                   "dynamic": False}
        return "float-quantized", {"weights": weights, "input_activations": None}
    raise ExportError(f"{name}: {spec.name} has no compressed-tensors layout (NF4 is bitsandbytes' own format; "
                      "FP8 E5M2 and grouped FP8 are not served); choose int4/int8 or fp8_e4m3-channel")


def _tensors(name: str, module: QuantizedLinear, fmt: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    if module.bias is not None:
        out[f"{name}.bias"] = module.bias.to(dtype)
    qt = module.weight_q
    if fmt == "float-quantized":
        out[f"{name}.weight"] = qt.data
        scale = qt.scales.float()
        out[f"{name}.weight_scale"] = scale.reshape(1) if qt.spec.granularity is Granularity.TENSOR else scale
        return out
    w = int_weight(module, name)
    scales = w.scales.to(dtype)
    if fmt == "int-quantized":
        out[f"{name}.weight"] = (w.codes - 128).to(torch.int8)
        out[f"{name}.weight_scale"] = scales
        return out
    out[f"{name}.weight_packed"] = pack_int32(w.codes, w.bits)
    out[f"{name}.weight_scale"] = scales.reshape(1) if qt.spec.granularity is Granularity.TENSOR else scales
    out[f"{name}.weight_shape"] = torch.tensor([module.out_features, module.in_features], dtype=torch.int64)
    if not w.symmetric:
        out[f"{name}.weight_zero_point"] = pack_int32(w.zeros.T.contiguous(), w.bits).T.contiguous()
    return out


def _all_linears(ckpt: NativeCheckpoint):
    for block in ckpt.blocks():
        for name, module in block.linears.items():
            yield ckpt.manifest.full_name(block.index, name), module


def check(ckpt: NativeCheckpoint) -> dict[str, tuple[str, dict]]:
    """Every linear's scheme, refusing the first that compressed-tensors cannot hold."""
    return {name: _scheme(module, name) for name, module in _all_linears(ckpt)}


def quantization_config(schemes: dict[str, tuple[str, dict]]) -> dict:
    """One config group per distinct scheme; a group targets `Linear` when it covers every layer."""
    groups: dict[str, dict] = {}
    members: dict[str, list[str]] = {}
    for name, (fmt, scheme) in schemes.items():
        key = repr((fmt, sorted(scheme["weights"].items()), scheme["input_activations"] and
                    sorted(scheme["input_activations"].items())))
        groups.setdefault(key, {**scheme, "format": fmt})
        members.setdefault(key, []).append(name)
    formats = {group["format"] for group in groups.values()}
    config_groups = {}
    for index, (key, group) in enumerate(groups.items()):
        targets = ["Linear"] if len(groups) == 1 else members[key]
        config_groups[f"group_{index}"] = {**group, "targets": targets}
    return {"quant_method": "compressed-tensors", "format": formats.pop() if len(formats) == 1 else "mixed-precision",
            "quantization_status": "compressed", "ignore": ["lm_head"], "config_groups": config_groups}


def write(ckpt: NativeCheckpoint, out: Path, options: ExportOptions) -> dict:
    schemes = check(ckpt)
    dtype = model_dtype(ckpt.config(), options)
    qconfig = quantization_config(schemes)
    return write_hf_directory(ckpt, out, lambda name, module: _tensors(name, module, schemes[name][0], dtype),
                              qconfig, options)
