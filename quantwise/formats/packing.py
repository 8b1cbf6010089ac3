"""Bit packing of unsigned k-bit codes into bytes, row by row, lowest bits first.

Two 4-bit codes share a byte (low nibble = even column), four 2-bit codes likewise; 3/5/6/7-bit
codes form a continuous little-endian bit stream per row, so storage is exactly ceil(cols*k/8)
bytes per row.
"""

from __future__ import annotations

import math

import torch

_BIT_WEIGHTS = 1 << torch.arange(8, dtype=torch.int32)


def packed_cols(cols: int, bits: int) -> int:
    return math.ceil(cols * bits / 8)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) uint8 codes < 2**bits -> (rows, ceil(cols*bits/8)) uint8."""
    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise ValueError("pack_codes expects a 2-D uint8 tensor")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if bits == 8:
        return codes.clone()
    rows, cols = codes.shape
    if 8 % bits == 0:
        per_byte = 8 // bits
        pad = (-cols) % per_byte
        if pad:
            codes = torch.cat([codes, codes.new_zeros(rows, pad)], dim=1)
        lanes = codes.reshape(rows, -1, per_byte)
        out = lanes[:, :, 0].clone()
        for lane in range(1, per_byte):
            out |= lanes[:, :, lane] << (bits * lane)
        return out
    shifts = torch.arange(bits, dtype=torch.uint8)
    stream = ((codes.unsqueeze(-1) >> shifts) & 1).reshape(rows, cols * bits)
    pad = (-stream.shape[1]) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(rows, pad)], dim=1)
    byte_bits = stream.reshape(rows, -1, 8).to(torch.int32)
    return (byte_bits * _BIT_WEIGHTS).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of `pack_codes`: (rows, packed_cols) uint8 -> (rows, cols) uint8."""
    if bits == 8:
        return packed[:, :cols].clone()
    rows = packed.shape[0]
    mask = (1 << bits) - 1
    if 8 % bits == 0:
        per_byte = 8 // bits
        lanes = [(packed >> (bits * lane)) & mask for lane in range(per_byte)]
        return torch.stack(lanes, dim=-1).reshape(rows, -1)[:, :cols]
    stream = ((packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(rows, -1)
    stream = stream[:, : cols * bits].reshape(rows, cols, bits).to(torch.int32)
    return (stream * _BIT_WEIGHTS[:bits]).sum(-1).to(torch.uint8)
