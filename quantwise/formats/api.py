"""One entry point for every format: `quantize(x, spec)` and `dequantize(qt)`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import affine, floating, fp8, integer, nf4
from .container import QuantizedTensor
from .spec import FormatKind, QuantSpec

_Quantizer = Callable[[torch.Tensor, QuantSpec], QuantizedTensor]
_Dequantizer = Callable[[QuantizedTensor], torch.Tensor]

REGISTRY: dict[FormatKind, tuple[_Quantizer, _Dequantizer]] = {
    FormatKind.INT: (integer.quantize, integer.dequantize),
    FormatKind.AFFINE: (affine.quantize, affine.dequantize),
    FormatKind.NF4: (nf4.quantize, nf4.dequantize),
    FormatKind.FP8_E4M3: (fp8.quantize, fp8.dequantize),
    FormatKind.FP8_E5M2: (fp8.quantize, fp8.dequantize),
    FormatKind.FP16: (floating.quantize, floating.dequantize),
    FormatKind.BF16: (floating.quantize, floating.dequantize),
}


def check_input(x: torch.Tensor) -> None:
    """Refuse what would give a silently wrong result."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"tensor has {bad} NaN/Inf value(s); quantization needs finite values")


def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Quantize `x` (any shape; groups run along its last dimension) into packed storage."""
    check_input(x)
    return REGISTRY[spec.kind][0](x.detach(), spec)


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    """float32 reconstruction with the original shape."""
    return REGISTRY[qt.spec.kind][1](qt)


def fake_quantize(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """quantize then dequantize, in x's dtype: for error studies, never for storage."""
    return dequantize(quantize(x, spec)).to(x.dtype)
