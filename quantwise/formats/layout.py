"""Where scales apply: views of a tensor as (scale rows, groups, elements per group).

Everything is done on a 2-D view (rows, cols): rows are output channels for a weight, tokens for
activations; groups run along cols. A row's last group may be shorter than group_size (SmolLM2's
576 = 4 x 128 + 64): it is padded with copies of the row's own last element, which changes neither
its absmax nor its min/max, and the padding is cut away after quantizing.
"""

from __future__ import annotations

import math

import torch

from .spec import Granularity, QuantSpec


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., cols) -> (rows, cols); a 1-D tensor becomes one row."""
    return x.reshape(1, -1) if x.dim() <= 1 else x.reshape(-1, x.shape[-1])


def num_groups(cols: int, spec: QuantSpec) -> int:
    if spec.granularity is Granularity.GROUP:
        return math.ceil(cols / spec.group_size)
    return 1


def grouped_view(x2d: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """(rows, cols) -> (scale_rows, groups, group_len); scale_rows is 1 for per-tensor."""
    rows, cols = x2d.shape
    if spec.granularity is Granularity.TENSOR:
        return x2d.reshape(1, 1, rows * cols)
    if spec.granularity in (Granularity.CHANNEL, Granularity.TOKEN):
        return x2d.reshape(rows, 1, cols)
    size = spec.group_size
    groups = math.ceil(cols / size)
    pad = groups * size - cols
    if pad:
        x2d = torch.cat([x2d, x2d[:, -1:].expand(rows, pad)], dim=1)
    return x2d.reshape(rows, groups, size)


def expand_to_elements(params: torch.Tensor, spec: QuantSpec, rows: int, cols: int) -> torch.Tensor:
    """Per-scale parameters (scale_rows, groups) -> broadcastable against (rows, cols)."""
    if spec.granularity is Granularity.GROUP:
        return params.repeat_interleave(spec.group_size, dim=1)[:, :cols]
    return params  # (1, 1) or (rows, 1) broadcast as they are
