"""Real low-bit CPU kernels: PyTorch's packed weight-only matmuls.

- INT4 groups: aten._convert_weight_to_int4pack_for_cpu + aten._weight_int4pack_mm_for_cpu
  (the kernels torchao and gpt-fast use on CPU). Each group stores a scale and a float offset:
  w = (q - 8) * scale + offset, so our (q - z) * s maps to offset = (8 - z) * s.
- INT8 per-channel: aten._weight_int8pack_mm (int8 weights, one scale per output row).

Both run with bf16 activations, the dtype their fast paths are built for: on this project's
AVX-512 machine the INT4 kernel streams packed weights at ~18 GB/s with bf16 inputs and at
~0.6 GB/s with fp32 inputs (4096 x 4096, batch 1), so fp32 activations are cast on the way in.

Shapes the kernels refuse or mishandle get a layout they accept, with the same result: the INT4
kernel needs the input width to be a multiple of its group size (and of 32) and the output width a
multiple of 16. A row whose last stored group is short (SmolLM2's 576 with g128) runs with a
smaller kernel group that divides it, each stored scale repeated; where none does, zero-code
columns and zero inputs are appended; extra output rows are cut off. The bf16 INT8 kernel
crashes (segfault) when the input width is not a multiple of 32, so such layers get zero columns.
"""

from __future__ import annotations

import torch
from torch import nn

from ..formats import FormatKind, Granularity
from ..formats.container import QuantizedTensor
from ..formats.integer import unpacked_codes, zero_points
from .qlinear import QuantizedLinear

INT4_GROUPS = (32, 64, 128, 256)
ACT_DTYPE = torch.bfloat16
_INNER_K_TILES = 2


def _kernel_group(group_size: int, cols: int) -> int:
    """The largest kernel group that divides both the stored group and the row: a g128 row of 576
    runs as nine g64 groups (each g128 scale repeated) instead of being padded to 640."""
    for candidate in sorted(INT4_GROUPS, reverse=True):
        if group_size % candidate == 0 and cols % candidate == 0:
            return candidate
    return group_size


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


class _KernelDtypes(nn.Module):
    """Keeps the kernel's scale tensors in bf16 when the model is moved with .to(dtype)."""

    _kernel_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name in self._kernel_buffers:
            setattr(self, name, getattr(self, name).to(ACT_DTYPE))
        return self

    def _kernel_input(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (tokens, padded) bf16, permuted for act-order checkpoints."""
        x2d = x.reshape(-1, x.shape[-1]).to(ACT_DTYPE)
        if self.perm is not None:
            x2d = x2d[:, self.perm]
        if self.padded != self.in_features:
            x2d = nn.functional.pad(x2d, (0, self.padded - self.in_features))
        return x2d.contiguous()

    def _layer_output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if y.shape[1] != self.out_features:
            y = y[:, : self.out_features]
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class PackedInt4Linear(_KernelDtypes):
    _kernel_buffers = ("scales_and_zeros",)

    def __init__(self, qt: QuantizedTensor, bias: torch.Tensor | None, perm: torch.Tensor | None):
        super().__init__()
        if not int4_kernel_supports(qt):
            raise ValueError(f"the CPU INT4 kernel does not take {qt.spec.name}")
        rows, cols = qt.rows_cols
        group = _kernel_group(qt.spec.group_size, cols)
        padded = -(-cols // max(group, 32)) * max(group, 32)
        padded_rows = -(-rows // 16) * 16
        codes = unpacked_codes(qt).to(torch.int32)  # symmetric: signed q; asymmetric: unsigned codes
        if qt.spec.symmetric:
            codes = codes + 8
        groups = padded // group
        scales = qt.scales.float()
        zeros = zero_points(qt)
        offsets = torch.zeros_like(scales) if zeros is None else (8 - zeros) * scales
        split = qt.spec.group_size // group  # each stored group spans `split` kernel groups
        if split > 1:
            scales = scales.repeat_interleave(split, 1)[:, : -(-cols // group)]
            offsets = offsets.repeat_interleave(split, 1)[:, : -(-cols // group)]
        if padded != cols:
            codes = torch.cat([codes, torch.full((rows, padded - cols), 8, dtype=torch.int32)], 1)
            extra = groups - scales.shape[1]
            scales = torch.cat([scales, torch.ones(rows, extra)], 1)
            offsets = torch.cat([offsets, torch.zeros(rows, extra)], 1)
        if padded_rows != rows:
            extra_rows = padded_rows - rows
            codes = torch.cat([codes, torch.full((extra_rows, padded), 8, dtype=torch.int32)], 0)
            scales = torch.cat([scales, torch.ones(extra_rows, groups)], 0)
            offsets = torch.cat([offsets, torch.zeros(extra_rows, groups)], 0)
        self.in_features, self.out_features, self.padded, self.group = cols, rows, padded, group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, _INNER_K_TILES))
        self.register_buffer("scales_and_zeros",
                             torch.stack([scales, offsets], -1).transpose(0, 1).contiguous().to(ACT_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.float())
        self.register_buffer("perm", perm)

    @property
    def weight_bytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + \
            self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(self._kernel_input(x), self.packed, self.group,
                                                        self.scales_and_zeros)
        return self._layer_output(y, x)


class PackedInt8Linear(_KernelDtypes):
    _kernel_buffers = ("scales",)

    def __init__(self, qt: QuantizedTensor, bias: torch.Tensor | None, perm: torch.Tensor | None):
        super().__init__()
        if not int8_kernel_supports(qt):
            raise ValueError(f"the CPU INT8 kernel does not take {qt.spec.name}")
        self.out_features, self.in_features = qt.rows_cols
        self.padded = -(-self.in_features // 32) * 32
        weight = qt.data.clone()  # own aligned storage: tensors read from safetensors may be unaligned (segfault)
        if self.padded != self.in_features:
            weight = torch.cat([weight, weight.new_zeros(self.out_features, self.padded - self.in_features)], 1)
        self.register_buffer("weight", weight)
        self.register_buffer("scales", qt.scales.reshape(-1).to(ACT_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.float())
        self.register_buffer("perm", perm)

    @property
    def weight_bytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * self.scales.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(self._kernel_input(x), self.weight, self.scales)
        return self._layer_output(y, x)


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
