"""compressed-tensors checkpoints (llm-compressor): pack-quantized, int-quantized (W8A8) and
float-quantized (FP8) linears; layout in exporters/compressed_tensors.py."""

from __future__ import annotations

import re

import torch

from ...formats import Granularity, QuantSpec, parse_spec
from ...formats.container import QuantizedTensor
from ...formats.spec import FormatKind
from ...runtime.qlinear import QuantizedLinear
from ..int32_packing import unpack_int32
from .base import ImportError_, SafetensorsDir, int_linear

NAME = "compressed-tensors"
MARKER = "weight_scale"
_PER_TOKEN_INT8 = parse_spec("int8-token")


def detect(qconfig: dict) -> bool:
    return qconfig.get("quant_method") == "compressed-tensors"


def _scheme(prefix: str, qconfig: dict) -> dict:
    """The config group whose targets match this linear (exact name, re: pattern or `Linear`)."""
    for group in qconfig.get("config_groups", {}).values():
        for target in group.get("targets", []):
            if target == "Linear" or target == prefix or \
                    (target.startswith("re:") and re.match(target[3:], prefix)):
                return group
    raise ImportError_(f"{prefix}: no config group of quantization_config targets this layer")


def linear(prefix: str, tensors: SafetensorsDir, qconfig: dict) -> QuantizedLinear:
    group_cfg = _scheme(prefix, qconfig)
    weights = group_cfg["weights"]
    fmt = group_cfg.get("format") or qconfig.get("format")
    acts = group_cfg.get("input_activations")
    bias = tensors.get(f"{prefix}.bias").float() if f"{prefix}.bias" in tensors.where else None
    scale = tensors.get(f"{prefix}.weight_scale")
    # "static" act-order keeps groups contiguous in the natural order (no g_idx): read as plain groups
    if weights.get("actorder") not in (None, "static") or f"{prefix}.weight_g_idx" in tensors.where:
        raise ImportError_(f"{prefix}: act-order with g_idx is not read (vLLM rejects it too)")
    if fmt == "float-quantized":
        weight = tensors.get(f"{prefix}.weight")
        if weight.dtype != torch.float8_e4m3fn:
            raise ImportError_(f"{prefix}: float-quantized weight is {weight.dtype}, expected float8_e4m3fn")
        rows = weight.shape[0]
        granularity = Granularity.TENSOR if scale.numel() == 1 else Granularity.CHANNEL
        spec = QuantSpec(kind=FormatKind.FP8_E4M3, granularity=granularity, scale_dtype="float32")
        scales = scale.float().reshape(1, 1) if scale.numel() == 1 else scale.float().reshape(rows, 1)
        return QuantizedLinear(QuantizedTensor(spec, tuple(weight.shape), weight, scales), bias)
    bits = int(weights["num_bits"])
    half = 2 ** (bits - 1)
    if fmt == "int-quantized":
        weight = tensors.get(f"{prefix}.weight")
        codes = weight.to(torch.int64) + half
        act = _PER_TOKEN_INT8 if acts else None
        return int_linear(codes, scale.reshape(weight.shape[0], -1), None, bits, None, bias, act_spec=act)
    if fmt != "pack-quantized":
        raise ImportError_(f"{prefix}: compressed-tensors format {fmt!r} is not read "
                           "(pack-, int- and float-quantized are)")
    out, cols = (int(v) for v in tensors.get(f"{prefix}.weight_shape"))
    codes = unpack_int32(tensors.get(f"{prefix}.weight_packed"), bits, cols)
    zeros = None
    if not weights.get("symmetric", True):
        packed = tensors.get(f"{prefix}.weight_zero_point")                 # (out*bits/32, groups)
        zeros = unpack_int32(packed.T.contiguous(), bits, out).T.contiguous()
    group = weights.get("group_size") if weights.get("strategy") == "group" else None
    scales = scale.reshape(out, -1) if scale.numel() > 1 else scale.reshape(1, 1).expand(out, 1).contiguous()
    return int_linear(codes, scales, zeros, bits, group, bias)
