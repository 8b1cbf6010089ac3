"""Real low-bit CPU kernels: PyTorch's packed weight-only matmuls.

- INT4 groups: aten._convert_weight_to_int4pack_for_cpu + aten._weight_int4pack_mm_for_cpu
  (the kernels torchao and gpt-fast use on CPU). Each group stores a scale and a float offset:
  w = (q - 8) * scale + offset, so our (q - z) * s maps to offset = (8 - z) * s.
- INT8 per-channel: aten._weight_int8pack_mm (int8 weights, one scale per output row).

The INT4 kernel needs the input width to be a multiple of the group size (and of 32 for its
tiles); a layer whose width is not (SmolLM2's 576 with g128) gets zero-padded columns whose codes
dequantize to exactly 0, and inputs padded with zeros: same result, a layout the kernel accepts.
"""

from __future__ import annotations

import torch
from torch import nn

from ..formats import FormatKind, Granularity
from ..formats.container import QuantizedTensor
from ..formats.integer import unpacked_codes, zero_points
from .qlinear import QuantizedLinear

INT4_GROUPS = (32, 64, 128, 256)
_INNER_K_TILES = 2


def has_cpu_int4_kernel() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def int4_kernel_supports(qt: QuantizedTensor) -> bool:
    spec = qt.spec
    return (spec.kind is FormatKind.INT and spec.bits == 4 and spec.granularity is Granularity.GROUP
            and spec.group_size in INT4_GROUPS and has_cpu_int4_kernel())


def int8_kernel_supports(qt: QuantizedTensor) -> bool:
    spec = qt.spec
    return (spec.kind is FormatKind.INT and spec.bits == 8 and spec.symmetric
            and spec.granularity is Granularity.CHANNEL and hasattr(torch.ops.aten, "_weight_int8pack_mm"))


class PackedInt4Linear(nn.Module):
    def __init__(self, qt: QuantizedTensor, bias: torch.Tensor | None, perm: torch.Tensor | None):
        super().__init__()
        if not int4_kernel_supports(qt):
            raise ValueError(f"the CPU INT4 kernel does not take {qt.spec.name}")
        rows, cols = qt.rows_cols
        group = qt.spec.group_size
        padded = -(-cols // max(group, 32)) * max(group, 32)
        codes = unpacked_codes(qt).to(torch.int32)  # symmetric: signed q; asymmetric: unsigned codes
        if qt.spec.symmetric:
            codes = codes + 8
        groups = padded // group
        scales = qt.scales.float()
        zeros = zero_points(qt)
        offsets = torch.zeros_like(scales) if zeros is None else (8 - zeros) * scales
        if padded != cols:
            codes = torch.cat([codes, torch.full((rows, padded - cols), 8, dtype=torch.int32)], 1)
            extra = groups - scales.shape[1]
            scales = torch.cat([scales, torch.ones(rows, extra)], 1)
            offsets = torch.cat([offsets, torch.zeros(rows, extra)], 1)
        self.in_features, self.out_features, self.padded, self.group = cols, rows, padded, group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, _INNER_K_TILES))
        self.register_buffer("scales_and_zeros", torch.stack([scales, offsets], -1).transpose(0, 1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.float())
        self.register_buffer("perm", perm)

    @property
    def weight_bytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + \
            self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2d = x.reshape(-1, shape[-1]).float()
        if self.perm is not None:
            x2d = x2d[:, self.perm]
        if self.padded != self.in_features:
            x2d = nn.functional.pad(x2d, (0, self.padded - self.in_features))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2d.contiguous(), self.packed, self.group,
                                                        self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


class PackedInt8Linear(nn.Module):
    def __init__(self, qt: QuantizedTensor, bias: torch.Tensor | None, perm: torch.Tensor | None):
        super().__init__()
        if not int8_kernel_supports(qt):
            raise ValueError(f"the CPU INT8 kernel does not take {qt.spec.name}")
        self.out_features, self.in_features = qt.rows_cols
        self.register_buffer("weight", qt.data)
        self.register_buffer("scales", qt.scales.float().reshape(-1))
        self.register_buffer("bias", None if bias is None else bias.float())
        self.register_buffer("perm", perm)

    @property
    def weight_bytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2d = x.reshape(-1, shape[-1]).float()
        if self.perm is not None:
            x2d = x2d[:, self.perm]
        y = torch.ops.aten._weight_int8pack_mm(x2d.contiguous(), self.weight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


def packed_module(module: QuantizedLinear) -> nn.Module | None:
    """The fastest real kernel for a weight-only QuantizedLinear, or None when none applies."""
    if module.act_spec is not None:
        return None
    if int4_kernel_supports(module.weight_q):
        return PackedInt4Linear(module.weight_q, module.bias, module.perm)
    if int8_kernel_supports(module.weight_q):
        return PackedInt8Linear(module.weight_q, module.bias, module.perm)
    return None


def use_packed_kernels(model: nn.Module) -> dict[str, str]:
    """Swap every QuantizedLinear that a real kernel takes; returns {name: kernel used}."""
    used = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            fast = packed_module(module)
            label = type(fast).__name__ if fast is not None else "dequantize+fp32 (no packed kernel)"
            if fast is not None:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, fast)
            used[name] = label
    return used
