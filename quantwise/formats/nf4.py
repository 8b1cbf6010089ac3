"""NF4: 4-bit NormalFloat with blockwise absmax (QLoRA, Dettmers et al. 2023, arXiv:2305.14314).

Each block of `group_size` values (64 by default) is divided by its absmax and every value is
mapped to the nearest of 16 levels: quantiles of N(0, 1) normalised to [-1, 1], with an exact 0.
Blocks run along each row (bitsandbytes blocks the flattened tensor; the two agree whenever the
row length is a multiple of the block). With double quantization the fp32 absmax constants are
themselves stored as int8 in blocks of 256.
"""

from __future__ import annotations

import torch

from .container import DoubleQuantScales, QuantizedTensor, scale_dtype
from .layout import as_rows, expand_to_elements, grouped_view
from .packing import pack_codes, unpack_codes
from .spec import QuantSpec

# The 16 levels bitsandbytes uses (bitsandbytes.functional, quant_type="nf4").
NF4_CODEBOOK = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])
_MIDPOINTS = (NF4_CODEBOOK[1:] + NF4_CODEBOOK[:-1]) / 2


def nearest_level(normalized: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook level for values in [-1, 1], as uint8."""
    return torch.bucketize(normalized.contiguous(), _MIDPOINTS).to(torch.uint8)


def quantize(x: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    x2d = as_rows(x.float())
    rows, cols = x2d.shape
    absmax = grouped_view(x2d, spec).abs().amax(-1)  # (scale_rows, groups)
    absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    if spec.double_quant:
        scales = DoubleQuantScales.from_constants(absmax, spec.dq_block)
        effective = scales.dequantize()
    else:
        scales = absmax.to(scale_dtype(spec))
        effective = scales.float()
    # Normalise by the constants as stored, so dequantization reproduces the best level choice.
    normalized = (x2d / expand_to_elements(effective, spec, rows, cols)).clamp(-1, 1)
    data = pack_codes(nearest_level(normalized), 4)
    return QuantizedTensor(spec, tuple(x.shape), data, scales)


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    rows, cols = qt.rows_cols
    codes = unpack_codes(qt.data, 4, cols).long()
    scales = qt.scales
    absmax = scales.dequantize() if isinstance(scales, DoubleQuantScales) else scales.float()
    values = NF4_CODEBOOK[codes] * expand_to_elements(absmax, qt.spec, rows, cols)
    return values.reshape(qt.shape)
