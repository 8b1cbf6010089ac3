"""Uniform integer quantization, symmetric or with a zero point, at any granularity.

Symmetric:  s = absmax / (2^(b-1) - 1),  q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1),  x^ = q s
Asymmetric: s = (max - min) / (2^b - 1) over a range that includes 0,  z = round(-min / s),
            q = clamp(round(x / s) + z, 0, 2^b - 1),  x^ = (q - z) s
Scales are rounded *up* to their storage dtype, so no in-range value is clipped and
|x - x^| <= s/2 holds with the stored scale.
"""

from __future__ import annotations

import torch

from .container import QuantizedTensor, scale_dtype
from .layout import as_rows, expand_to_elements, grouped_view, num_groups
from .packing import pack_codes, unpack_codes
from .spec import QuantSpec


def round_scale_up(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast positive scales to `dtype`, never below their exact value."""
    stored = scale.to(dtype)
    if not torch.isfinite(stored).all():
        raise ValueError(f"scales overflow {dtype}; use a wider scale_dtype")
    too_small = stored.float() < scale
    bumped = torch.nextafter(stored, torch.full_like(stored, float("inf")))
    return torch.where(too_small, bumped, stored)


def choose_params(grouped: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale_rows, groups, n) -> stored scales (scale_rows, groups) and float zero points or None."""
    if spec.symmetric:
        qmax = 2 ** (spec.bits - 1) - 1
        scale = grouped.abs().amax(-1) / qmax
        zero = None
    else:
        levels = 2**spec.bits - 1
        low = grouped.amin(-1).clamp(max=0)
        high = grouped.amax(-1).clamp(min=0)
        scale = (high - low) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: any scale works
    stored = round_scale_up(scale, scale_dtype(spec))
    if not spec.symmetric:
        zero = torch.round(-low / stored.float()).clamp(0, levels)
    return stored, zero


def quantize_codes(x2d: torch.Tensor, spec: QuantSpec, scales: torch.Tensor,
                   zeros: torch.Tensor | None) -> torch.Tensor:
    """Unsigned codes (rows, cols) uint8 for the given per-scale parameters (float zeros)."""
    rows, cols = x2d.shape
    scale = expand_to_elements(scales.float(), spec, rows, cols)
    if spec.symmetric:
        half = 2 ** (spec.bits - 1)
        q = torch.round(x2d / scale).clamp(-half, half - 1) + half
    else:
        zero = expand_to_elements(zeros, spec, rows, cols)
        q = (torch.round(x2d / scale) + zero).clamp(0, 2**spec.bits - 1)
    return q.to(torch.uint8)


def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    x2d = as_rows(x.float())
    scales, zeros = choose_params(grouped_view(x2d, spec), spec)
    codes = quantize_codes(x2d, spec, scales, zeros)
    return from_codes(codes, scales, zeros, spec, tuple(x.shape))


def from_codes(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, spec: QuantSpec,
               shape: tuple[int, ...]) -> QuantizedTensor:
    """Pack unsigned codes (rows, cols) with stored scales and float zero points (GPTQ, AWQ use this)."""
    if spec.bits == 8 and spec.symmetric:
        data = (codes.to(torch.int16) - 128).to(torch.int8)
    else:
        data = pack_codes(codes, spec.bits)
    packed_zeros = None if zeros is None else pack_codes(zeros.to(torch.uint8), spec.bits)
    return QuantizedTensor(spec, shape, data, scales, packed_zeros)


def unpacked_codes(qt: QuantizedTensor) -> torch.Tensor:
    """Signed integer values q (symmetric) or unsigned codes (asymmetric), (rows, cols) int16."""
    rows, cols = qt.rows_cols
    spec = qt.spec
    if spec.bits == 8 and spec.symmetric:
        return qt.data.to(torch.int16)
    codes = unpack_codes(qt.data, spec.bits, cols).to(torch.int16)
    return codes - 2 ** (spec.bits - 1) if spec.symmetric else codes


def zero_points(qt: QuantizedTensor) -> torch.Tensor | None:
    if qt.zeros is None:
        return None
    groups = num_groups(qt.rows_cols[1], qt.spec)
    return unpack_codes(qt.zeros, qt.spec.bits, groups).float()


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    rows, cols = qt.rows_cols
    spec = qt.spec
    scale = expand_to_elements(qt.scales.float(), spec, rows, cols)
    values = unpacked_codes(qt).float()
    zeros = zero_points(qt)
    if zeros is not None:
        values = values - expand_to_elements(zeros, spec, rows, cols)
    return (values * scale).reshape(qt.shape)


__all__ = ["quantize", "dequantize", "from_codes", "choose_params", "quantize_codes", "round_scale_up",
           "unpacked_codes", "zero_points"]
