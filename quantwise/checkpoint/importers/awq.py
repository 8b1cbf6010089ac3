"""AWQ GEMM checkpoints (AutoAWQ, llm-compressor's AWQ via GPTQModel); layout in exporters/awq.py."""

from __future__ import annotations

from ...runtime.qlinear import QuantizedLinear
from ..int32_packing import unpack_int32
from .base import ImportError_, SafetensorsDir, int_linear

NAME = "awq"
MARKER = "qweight"
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def detect(qconfig: dict) -> bool:
    return qconfig.get("quant_method") == "awq"


def _deinterleave(values):
    rows, cols = values.shape
    out = values.clone().reshape(rows, cols // 8, 8)
    out[:, :, list(AWQ_ORDER)] = values.reshape(rows, cols // 8, 8)
    return out.reshape(rows, cols)


def linear(prefix: str, tensors: SafetensorsDir, qconfig: dict) -> QuantizedLinear:
    if qconfig.get("version", "gemm").lower() != "gemm" or int(qconfig.get("bits", 4)) != 4:
        raise ImportError_(f"{prefix}: only 4-bit AWQ GEMM checkpoints are read, not {qconfig.get('version')}")
    qweight, qzeros = tensors.get(f"{prefix}.qweight"), tensors.get(f"{prefix}.qzeros")
    scales = tensors.get(f"{prefix}.scales")                        # (groups, out)
    out = qweight.shape[1] * 8
    codes = _deinterleave(unpack_int32(qweight, 4, out)).T.contiguous()   # (out, in)
    zeros = _deinterleave(unpack_int32(qzeros, 4, out)).T.contiguous()    # (out, groups)
    bias = tensors.get(f"{prefix}.bias").float() if f"{prefix}.bias" in tensors.where else None
    return int_linear(codes, scales.T.contiguous(), zeros, 4, int(qconfig["group_size"]), bias)
