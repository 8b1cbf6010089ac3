"""FP8 E4M3 (max 448) and E5M2 (max 57344) with a scale per tensor, channel, token or group.

Values are divided by absmax/fp8_max, clamped to +-fp8_max (saturating) and cast with torch's
round-to-nearest-even `float8_e4m3fn` / `float8_e5m2` conversion, so the stored bits are exactly
torch's.
"""

from __future__ import annotations

import torch

from .container import QuantizedTensor, scale_dtype
from .layout import as_rows, expand_to_elements, grouped_view
from .spec import FormatKind, QuantSpec

FP8_DTYPES = {FormatKind.FP8_E4M3: torch.float8_e4m3fn, FormatKind.FP8_E5M2: torch.float8_e5m2}


def fp8_max(kind: FormatKind) -> float:
    return float(torch.finfo(FP8_DTYPES[kind]).max)


def cast_saturating(x: torch.Tensor, kind: FormatKind) -> torch.Tensor:
    limit = fp8_max(kind)
    return x.clamp(-limit, limit).to(FP8_DTYPES[kind])


def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    x2d = as_rows(x.float())
    rows, cols = x2d.shape
    scale = grouped_view(x2d, spec).abs().amax(-1) / fp8_max(spec.kind)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(scale_dtype(spec))
    data = cast_saturating(x2d / expand_to_elements(scale.float(), spec, rows, cols), spec.kind)
    return QuantizedTensor(spec, tuple(x.shape), data, scale)


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    rows, cols = qt.rows_cols
    values = qt.data.float() * expand_to_elements(qt.scales.float(), qt.spec, rows, cols)
    return values.reshape(qt.shape)
