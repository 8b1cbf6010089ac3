"""Exact storage size of a quantized matrix, computed without torch.

The planner sizes whole models from this in microseconds; a test holds it equal to
`QuantizedTensor.nbytes` of real packed tensors, so it cannot drift from the storage code.
"""

from __future__ import annotations

import math

from .spec import SCALE_DTYPE_BYTES, FormatKind, Granularity, QuantSpec


def scale_count(spec: QuantSpec, rows: int, cols: int) -> tuple[int, int]:
    """(scale_rows, groups per scale row) of a (rows, cols) matrix."""
    if spec.granularity is Granularity.TENSOR:
        return 1, 1
    if spec.granularity is Granularity.GROUP:
        return rows, math.ceil(cols / spec.group_size)
    return rows, 1


def storage_bytes(spec: QuantSpec, rows: int, cols: int) -> int:
    """Bytes of packed data + scales + zero points (or offsets) for a (rows, cols) matrix in `spec`."""
    if rows < 1 or cols < 1:
        raise ValueError(f"matrix shape must be positive, got {rows}x{cols}")
    if spec.is_float_cast:
        return rows * cols * 2
    data = rows * math.ceil(cols * spec.bits / 8)
    scale_rows, groups = scale_count(spec, rows, cols)
    constants = scale_rows * groups
    if spec.kind is FormatKind.NF4 and spec.double_quant:
        scales = constants + 4 * math.ceil(constants / spec.dq_block) + 4  # int8 codes, fp32 block scales, offset
    else:
        scales = constants * SCALE_DTYPE_BYTES[spec.scale_dtype_name]
    zeros = 0 if spec.symmetric else scale_rows * math.ceil(groups * spec.bits / 8)
    if spec.kind is FormatKind.AFFINE:  # one float offset per scale, in the scale dtype
        zeros = constants * SCALE_DTYPE_BYTES[spec.scale_dtype_name]
    return data + scales + zeros


def bits_per_weight(spec: QuantSpec, rows: int, cols: int) -> float:
    return 8.0 * storage_bytes(spec, rows, cols) / (rows * cols)
