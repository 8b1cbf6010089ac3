"""The packed container every format returns, and NF4's double-quantized scale constants."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import as_rows, grouped_view
from .spec import Granularity, QuantSpec


@dataclass(frozen=True)
class DoubleQuantScales:
    """Scale constants stored as int8 codes in blocks (QLoRA's double quantization).

    codes: (n,) int8; block_scales: (ceil(n/block),) float32 absmax/127 of each centred block;
    offset: () float32 mean subtracted before quantizing (the constants are all positive).
    QLoRA quantizes with an 8-bit dynamic float map; a linear int8 map is used here, which has the
    same storage cost (8 bits + 32/block bits per constant).
    """

    codes: torch.Tensor
    block_scales: torch.Tensor
    offset: torch.Tensor
    shape: tuple[int, ...]
    block: int

    @classmethod
    def from_constants(cls, constants: torch.Tensor, block: int) -> DoubleQuantScales:
        flat = constants.reshape(-1).float()
        offset = flat.mean()
        blocks = grouped_view((flat - offset).reshape(1, -1), QuantSpec(
            kind="int", bits=8, granularity=Granularity.GROUP, group_size=block))
        block_scales = blocks.abs().amax(-1) / 127.0  # (1, nblocks)
        block_scales = torch.where(block_scales > 0, block_scales, torch.ones_like(block_scales))
        codes = torch.round(blocks / block_scales.unsqueeze(-1)).clamp(-127, 127)
        codes = codes.reshape(-1)[: flat.numel()].to(torch.int8)
        return cls(codes, block_scales.reshape(-1), offset, tuple(constants.shape), block)

    def dequantize(self) -> torch.Tensor:
        per_value = self.block_scales.repeat_interleave(self.block)[: self.codes.numel()]
        return (self.codes.float() * per_value + self.offset).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.codes) + _nbytes(self.block_scales) + _nbytes(self.offset)


@dataclass(frozen=True)
class QuantizedTensor:
    """Packed data plus what it takes to dequantize it.

    data: INT<8 and NF4: (rows, ceil(cols*bits/8)) uint8 packed codes; INT8: (rows, cols) int8
    (symmetric) or uint8 (asymmetric); FP8: (rows, cols) torch float8; FP16/BF16: the cast tensor.
    scales: (scale_rows, groups) in the spec's scale dtype, or DoubleQuantScales for NF4-dq.
    zeros: asymmetric INT only, (scale_rows, ceil(groups*bits/8)) packed uint8 zero points.
    offsets: AFFINE only, (scale_rows, groups) float offsets in the scale dtype.
    shape: the original tensor's shape; rows x cols is its 2-D view (`layout.as_rows`).
    """

    spec: QuantSpec
    shape: tuple[int, ...]
    data: torch.Tensor
    scales: torch.Tensor | DoubleQuantScales | None = None
    zeros: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def rows_cols(self) -> tuple[int, int]:
        view = as_rows(torch.empty(self.shape, device="meta"))
        return view.shape[0], view.shape[1]

    @property
    def nbytes(self) -> int:
        """Exact storage in bytes: packed data + scales + zero points or offsets."""
        total = _nbytes(self.data) + _nbytes(self.zeros) + _nbytes(self.offsets)
        if isinstance(self.scales, DoubleQuantScales):
            return total + self.scales.nbytes
        return total + _nbytes(self.scales)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / self.numel

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from .api import dequantize  # the registry lives with the formats, which import this module

        return dequantize(self).to(dtype)


def scale_dtype(spec: QuantSpec) -> torch.dtype:
    return getattr(torch, spec.scale_dtype_name)


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()
