"""FP16 and BF16: plain casts with no scales (round to nearest even)."""

from __future__ import annotations

import torch

from .container import QuantizedTensor
from .spec import FormatKind, QuantSpec

FLOAT_DTYPES = {FormatKind.FP16: torch.float16, FormatKind.BF16: torch.bfloat16}


def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    dtype = FLOAT_DTYPES[spec.kind]
    limit = torch.finfo(dtype).max
    if x.abs().max() > limit:
        raise ValueError(f"values exceed the {spec.kind.value} range (max {limit:g})")
    return QuantizedTensor(spec, tuple(x.shape), x.to(dtype))


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    return qt.data.float()
