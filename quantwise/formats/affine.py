"""Group-affine integer quantization: x^ = q * scale + offset, q unsigned in 0..2^b - 1, with a
float offset per scale (not an integer zero point).

This is GGUF's "type-1" shape (Q4_1: x = d * q + m; Q4_K: x = d*sc * q - dmin*m): a minimum that
is not a multiple of the scale, which INT's integer zero point cannot hold exactly.
scale = (max - min) / (2^b - 1) and offset = min, both stored in the scale dtype; codes are
rounded against the stored values, so dequantization reproduces the best code choice.
"""

from __future__ import annotations

import torch

from .container import QuantizedTensor, scale_dtype
from .integer import round_scale_up
from .layout import as_rows, expand_to_elements, grouped_view
from .packing import pack_codes, unpack_codes
from .spec import QuantSpec


def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    x2d = as_rows(x.float())
    grouped = grouped_view(x2d, spec)
    low, high = grouped.amin(-1), grouped.amax(-1)
    scale = (high - low) / (2**spec.bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant group: the offset holds it
    scales = round_scale_up(scale, scale_dtype(spec))
    offsets = low.to(scale_dtype(spec))
    return from_codes(quantize_codes(x2d, spec, scales, offsets), scales, offsets, spec, tuple(x.shape))


def quantize_codes(x2d: torch.Tensor, spec: QuantSpec, scales: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Unsigned codes (rows, cols) uint8 nearest to x for the given stored scales and offsets."""
    rows, cols = x2d.shape
    scale = expand_to_elements(scales.float(), spec, rows, cols)
    offset = expand_to_elements(offsets.float(), spec, rows, cols)
    return torch.round((x2d - offset) / scale).clamp(0, 2**spec.bits - 1).to(torch.uint8)


def from_codes(codes: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, spec: QuantSpec,
               shape: tuple[int, ...]) -> QuantizedTensor:
    """Pack unsigned codes (rows, cols) with stored scales and offsets (GGUF Q4_1 / Q4_K imports use this)."""
    if scales.shape != offsets.shape or scales.dtype != offsets.dtype:
        raise ValueError(f"scales {tuple(scales.shape)} {scales.dtype} and offsets {tuple(offsets.shape)} "
                         f"{offsets.dtype} must match")
    return QuantizedTensor(spec, shape, pack_codes(codes, spec.bits), scales, offsets=offsets)


def codes(qt: QuantizedTensor) -> torch.Tensor:
    """Unsigned codes (rows, cols) uint8."""
    return unpack_codes(qt.data, qt.spec.bits, qt.rows_cols[1])


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    rows, cols = qt.rows_cols
    scale = expand_to_elements(qt.scales.float(), qt.spec, rows, cols)
    offset = expand_to_elements(qt.offsets.float(), qt.spec, rows, cols)
    # q * scale is exact for GGUF's scales (fp16 x 6-bit x 4-bit), so this adds in one rounding,
    # as gguf's d * q - dm does
    return (codes(qt).float() * scale + offset).reshape(qt.shape)


__all__ = ["quantize", "dequantize", "from_codes", "quantize_codes", "codes"]
