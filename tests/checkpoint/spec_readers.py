"""Readers of GPTQ v1 and AWQ GEMM written straight from the layouts' descriptions (element by
element, no shared code with the exporters), to check exports where no peer loader is installed."""

from __future__ import annotations

import torch


def _nibbles(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 words (..., n) -> (..., n * 32/bits) fields, lowest bits first."""
    per = 32 // bits
    w = words.to(torch.int64) & 0xFFFFFFFF
    fields = [(w >> (bits * j)) & ((1 << bits) - 1) for j in range(per)]
    return torch.stack(fields, -1).reshape(*words.shape[:-1], -1)


def gptq_v1_weight(qweight, qzeros, scales, g_idx, bits: int, zero_offset: int = 1) -> torch.Tensor:
    """(out, in) float32. qweight (in*bits/32, out): input row 8r+j of column n at bits 4j of word
    r; qzeros store zero - 1 (v1), so the reader adds `zero_offset`."""
    codes = _nibbles(qweight.T.contiguous(), bits)            # (out, in)
    zeros = _nibbles(qzeros, bits) + zero_offset              # (groups, out)
    g = g_idx.long()
    return (codes - zeros[g].T) * scales.float()[g].T


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_weight(qweight, qzeros, scales, group_size: int, order=AWQ_ORDER) -> torch.Tensor:
    """(out, in) float32. qweight (in, out/8): nibble j of word c is output column 8c + order[j]."""
    def unpack(words):
        fields = _nibbles(words, 4)                           # (rows, out) in nibble order
        rows, cols = fields.shape
        out = torch.empty_like(fields)
        for c in range(cols // 8):
            for j in range(8):
                out[:, 8 * c + order[j]] = fields[:, 8 * c + j]
        return out
    codes, zeros = unpack(qweight), unpack(qzeros)            # (in, out), (groups, out)
    g = torch.arange(codes.shape[0]) // group_size
    return ((codes - zeros[g]) * scales.float()[g]).T
