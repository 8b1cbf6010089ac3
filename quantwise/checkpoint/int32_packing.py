"""Integer codes packed into int32 words, the container GPTQ, AWQ and compressed-tensors share."""

from __future__ import annotations

import torch


def pack_int32(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes along the last dimension into int32 words, element j at bit j*bits of
    a little-endian bit stream (32/bits elements per word when bits divides 32)."""
    rows, cols = values.shape
    if 32 % bits:
        stream = ((values.to(torch.int64).unsqueeze(-1) >> torch.arange(bits)) & 1).reshape(rows, cols * bits)
        words = -(-cols * bits // 32)
        stream = torch.nn.functional.pad(stream, (0, words * 32 - cols * bits))
        weights = (1 << torch.arange(32, dtype=torch.int64))
        packed = (stream.reshape(rows, words, 32) * weights).sum(-1)
    else:
        per_word = 32 // bits
        padded = torch.nn.functional.pad(values.to(torch.int64), (0, (-cols) % per_word))
        lanes = padded.reshape(rows, -1, per_word)
        packed = torch.zeros(lanes.shape[:2], dtype=torch.int64)
        for lane in range(per_word):
            packed |= lanes[:, :, lane] << (bits * lane)
    return (packed - ((packed >> 31) << 32)).to(torch.int32)  # reinterpret the low 32 bits as signed


def unpack_int32(words: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack_int32`: (rows, words) int32 -> (rows, count) int64 unsigned codes."""
    rows, n = words.shape
    as_unsigned = words.to(torch.int64) & 0xFFFFFFFF
    stream = ((as_unsigned.unsqueeze(-1) >> torch.arange(32)) & 1).reshape(rows, n * 32)[:, : count * bits]
    return (stream.reshape(rows, count, bits) << torch.arange(bits)).sum(-1)
