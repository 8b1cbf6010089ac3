"""Real low-bit kernels: PyTorch's own packed weight-only matmuls, on CPU and on CUDA.

- INT4 groups: aten._convert_weight_to_int4pack_for_cpu + aten._weight_int4pack_mm_for_cpu on
  CPU, aten._convert_weight_to_int4pack + aten._weight_int4pack_mm (tinygemm) on CUDA: the kernels
  torchao and gpt-fast use, shipped inside torch itself, so no extra dependency. Each group stores
  a scale and a float offset: w = (q - 8) * scale + offset, so our (q - z) * s maps to
  offset = (8 - z) * s. The CUDA packer takes two codes per byte, the even column in the high nibble.
- INT8 per-channel: aten._weight_int8pack_mm (int8 weights, one scale per output row), on whichever
  device torch registered it for.
- W8A8 (SmoothQuant, and LLM.int8() with its outlier columns in floating point): activations
  quantized per token to INT8 at run time, then torch._int_mm, a real INT8 x INT8 -> INT32 GEMM,
  rescaled by both scales. CPU only: on CUDA _int_mm wants more than 16 rows,
  which a decode step does not have.
The packed layout belongs to the device it was built for: build on the target device
(`use_packed_kernels(model, device=...)`) instead of moving packed modules afterwards.

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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..formats import FormatKind, Granularity, affine
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


_INT4_MM = {"cpu": "_weight_int4pack_mm_for_cpu", "cuda": "_weight_int4pack_mm"}
_INT4_PACK = {"cpu": "_convert_weight_to_int4pack_for_cpu", "cuda": "_convert_weight_to_int4pack"}
_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


def _has_kernel(op: str, device_type: str) -> bool:
    """Whether this torch build registered `op` for the device (a CPU wheel has no CUDA kernels)."""
    key = _DISPATCH_KEY.get(device_type)
    return key is not None and hasattr(torch.ops.aten, op) and \
        torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", key)


def has_cpu_int4_kernel() -> bool:
    return _has_kernel(_INT4_MM["cpu"], "cpu")


def int4_kernel_supports(qt: QuantizedTensor, device_type: str = "cpu") -> bool:
    spec = qt.spec
    return (spec.kind in (FormatKind.INT, FormatKind.AFFINE) and spec.bits == 4
            and spec.granularity is Granularity.GROUP and spec.group_size in INT4_GROUPS and device_type in _INT4_MM
            and _has_kernel(_INT4_MM[device_type], device_type))


def int8_kernel_supports(qt: QuantizedTensor, device_type: str = "cpu") -> bool:
    spec = qt.spec
    return (spec.kind is FormatKind.INT and spec.bits == 8 and spec.symmetric
            and spec.granularity is Granularity.CHANNEL and _has_kernel("_weight_int8pack_mm", device_type))


def _int_mm_weight_supports(qt: QuantizedTensor, device_type: str = "cpu") -> bool:
    """INT8 per-channel symmetric weights, on a device where _int_mm serves a decode step (CPU)."""
    spec = qt.spec
    return (spec.kind is FormatKind.INT and spec.bits == 8 and spec.symmetric
            and spec.granularity is Granularity.CHANNEL and device_type == "cpu" and _has_kernel("_int_mm", "cpu"))


def w8a8_kernel_supports(module: QuantizedLinear, device_type: str = "cpu") -> bool:
    act = module.act_spec
    return (act is not None and act.kind is FormatKind.INT and act.bits == 8 and act.symmetric
            and act.granularity is Granularity.TOKEN and _int_mm_weight_supports(module.weight_q, device_type))


def tinygemm_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(rows, cols) codes 0..15 -> (rows, cols / 2) uint8, the even column in the high nibble: the
    input _convert_weight_to_int4pack takes on CUDA (torch >= 2.5)."""
    codes = codes.to(torch.uint8)
    return (codes[:, ::2] << 4) | codes[:, 1::2]


class _PackedLinear(nn.Module):
    """What the packed kernels share: the kernel's scale tensors keep their dtype and values when the
    model moves with .to(dtype), the packed layout stays on its device, and the input/output handling."""

    _kernel_buffers: tuple[str, ...] = ()
    _layout_buffer = ""

    def _apply(self, fn, recurse=True):
        # the kernel's scale tensors keep their exact values: casting them to the model's dtype and
        # back would round them (fp32 -> bf16 -> fp32 loses 16 bits), so only their device follows
        kept = {name: getattr(self, name) for name in self._kernel_buffers}
        super()._apply(fn, recurse)
        for name, tensor in kept.items():
            setattr(self, name, tensor.to(getattr(self, name).device))
        moved_to = getattr(self, self._layout_buffer).device.type
        if moved_to != self.kernel_device:
            raise ValueError(f"{type(self).__name__} was packed for {self.kernel_device} and cannot move to "
                             f"{moved_to}: build it there (use_packed_kernels(model, device=...))")
        return self

    def _kernel_input(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (tokens, padded) bf16, permuted for act-order checkpoints. Every step
        is skipped when not needed: at decode, this wrapper's fixed cost is of the order of the
        kernel's own on small matrices."""
        x2d = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
        if x2d.dtype != ACT_DTYPE:
            x2d = x2d.to(ACT_DTYPE)
        if self._permuted:
            x2d = x2d[:, self.perm]
        if self._pad_cols:
            x2d = nn.functional.pad(x2d, (0, self._pad_cols))
        return x2d if x2d.is_contiguous() else x2d.contiguous()

    def _layer_output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self._pad_rows:
            y = y[:, : self.out_features]
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        if self._biased:
            y = y + (self.bias if self.bias.dtype == y.dtype else self.bias.to(y.dtype))
        return y.view(*x.shape[:-1], self.out_features) if x.dim() != 2 else y

    def _claim(self, weights, device, supports, label: str) -> list[QuantizedTensor]:
        """The weights as a row stack, after checking this kernel takes them on `device`."""
        parts = _row_stack(weights)
        self.kernel_device = torch.device(device).type
        if not supports(parts[0], self.kernel_device):
            raise ValueError(f"the {self.kernel_device.upper()} {label} kernel does not take {parts[0].spec.name}")
        return parts

    def _finish(self, parts: list[QuantizedTensor], bias, perm: torch.Tensor | None, device,
                rows_stored: int) -> None:
        stacked = _stacked_bias(parts, bias)
        self.register_buffer("bias", None if stacked is None else stacked.to(device))
        self.register_buffer("perm", None if perm is None else perm.to(device))
        # plain attributes read on every call (buffer lookups through nn.Module cost ~0.5 us each)
        self._permuted = self.perm is not None
        self._biased = self.bias is not None
        self._pad_cols = self.padded - self.in_features
        self._pad_rows = rows_stored != self.out_features


def _row_stack(weights: QuantizedTensor | Sequence[QuantizedTensor]) -> list[QuantizedTensor]:
    """One weight, or several with the same format and input width stacked along their rows (the
    fused q/k/v or gate/up projections: one kernel call instead of three or two)."""
    parts = [weights] if isinstance(weights, QuantizedTensor) else list(weights)
    if not parts:
        raise ValueError("no weights to pack")
    first = parts[0]
    for other in parts[1:]:
        if other.spec != first.spec or other.rows_cols[1] != first.rows_cols[1]:
            raise ValueError(f"cannot stack {other.spec.name} {other.rows_cols} under {first.spec.name} "
                             f"{first.rows_cols}: fused weights need one format and one input width")
    return parts


def _stacked_bias(parts: list[QuantizedTensor], bias) -> torch.Tensor | None:
    biases = [bias] if isinstance(bias, torch.Tensor) or bias is None else list(bias)
    if all(b is None for b in biases):
        return None
    if len(biases) != len(parts):
        raise ValueError(f"{len(parts)} stacked weights but {len(biases)} biases")
    return torch.cat([b.float() if b is not None else torch.zeros(qt.rows_cols[0])
                      for b, qt in zip(biases, parts, strict=True)])


@dataclass(frozen=True)
class _Int4Layout:
    """Codes 0..15 (rows_padded, cols_padded) int32 and per-kernel-group scales and offsets
    (rows_padded, groups) fp32: what torch's INT4 packers and kernels take."""

    codes: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor
    group: int


def int4_kernel_layout(parts: list[QuantizedTensor]) -> _Int4Layout:
    """Row-stacked INT4 group weights in the kernels' terms: w = (q - 8) * scale + offset, a stored
    group split into smaller kernel groups where the row needs it, zero-code padding to widths and
    row counts the kernels accept."""
    spec, cols = parts[0].spec, parts[0].rows_cols[1]
    scales = torch.cat([qt.scales.float() for qt in parts])
    if spec.kind is FormatKind.AFFINE:  # q * s + offset = (q - 8) * s + (offset + 8 s)
        codes = torch.cat([affine.codes(qt).to(torch.int32) for qt in parts])
        offsets = torch.cat([qt.offsets.float() for qt in parts]) + 8 * scales
    else:
        # symmetric: signed q shifted to 0..15; asymmetric: the unsigned codes as stored
        codes = torch.cat([unpacked_codes(qt).to(torch.int32) + (8 if spec.symmetric else 0) for qt in parts])
        zeros = [zero_points(qt) for qt in parts]
        offsets = torch.zeros_like(scales) if zeros[0] is None else (8 - torch.cat(zeros)) * scales
    rows = codes.shape[0]
    group = _kernel_group(spec.group_size, cols)
    padded = -(-cols // max(group, 32)) * max(group, 32)
    groups = padded // group
    split = spec.group_size // group  # each stored group spans `split` kernel groups
    if split > 1:
        scales = scales.repeat_interleave(split, 1)[:, : -(-cols // group)]
        offsets = offsets.repeat_interleave(split, 1)[:, : -(-cols // group)]
    if padded != cols:
        codes = torch.cat([codes, torch.full((rows, padded - cols), 8, dtype=torch.int32)], 1)
        extra = groups - scales.shape[1]
        scales = torch.cat([scales, torch.ones(rows, extra)], 1)
        offsets = torch.cat([offsets, torch.zeros(rows, extra)], 1)
    padded_rows = -(-rows // 16) * 16
    if padded_rows != rows:
        extra_rows = padded_rows - rows
        codes = torch.cat([codes, torch.full((extra_rows, padded), 8, dtype=torch.int32)], 0)
        scales = torch.cat([scales, torch.ones(extra_rows, groups)], 0)
        offsets = torch.cat([offsets, torch.zeros(extra_rows, groups)], 0)
    return _Int4Layout(codes, scales, offsets, group)


class PackedInt4Linear(_PackedLinear):
    """INT4 group weights (one QuantizedTensor, or several stacked by rows) on torch's INT4 kernel."""

    _kernel_buffers = ("scales_and_zeros",)
    _layout_buffer = "packed"

    def __init__(self, weights: QuantizedTensor | Sequence[QuantizedTensor], bias, perm: torch.Tensor | None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        parts = self._claim(weights, device, int4_kernel_supports, "INT4")
        layout = int4_kernel_layout(parts)
        self.in_features, self.padded, self.group = parts[0].rows_cols[1], layout.codes.shape[1], layout.group
        self.out_features = sum(qt.rows_cols[0] for qt in parts)
        pack = getattr(torch.ops.aten, _INT4_PACK[self.kernel_device])
        layout_input = layout.codes if self.kernel_device == "cpu" else tinygemm_nibbles(layout.codes)
        self._mm = getattr(torch.ops.aten, _INT4_MM[self.kernel_device])
        self.register_buffer("packed", pack(layout_input.to(device), _INNER_K_TILES))
        scales_and_zeros = torch.stack([layout.scales, layout.offsets], -1).transpose(0, 1)  # (groups, rows, 2)
        self.register_buffer("scales_and_zeros", scales_and_zeros.contiguous().to(device, ACT_DTYPE))
        self._finish(parts, bias, perm, device, rows_stored=layout.codes.shape[0])

    @property
    def weight_bytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + \
            self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._mm(self._kernel_input(x), self.packed, self.group, self.scales_and_zeros)
        return self._layer_output(y, x)


class PackedInt8Linear(_PackedLinear):
    """INT8 per-channel weights (one QuantizedTensor, or several stacked by rows) on the INT8 kernel."""

    _kernel_buffers = ("scales",)
    _layout_buffer = "weight"

    def __init__(self, weights: QuantizedTensor | Sequence[QuantizedTensor], bias, perm: torch.Tensor | None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        parts = self._claim(weights, device, int8_kernel_supports, "INT8")
        self.in_features = parts[0].rows_cols[1]
        self.padded = -(-self.in_features // 32) * 32
        # torch.cat always copies into fresh, 64-byte aligned storage: tensors read from safetensors
        # may sit at unaligned offsets, and the AVX-512 INT8 kernel segfaults on those
        weight = torch.cat([qt.data for qt in parts])
        self.out_features = weight.shape[0]
        if self.padded != self.in_features:
            weight = torch.cat([weight, weight.new_zeros(self.out_features, self.padded - self.in_features)], 1)
        self.register_buffer("weight", weight.to(device))
        self.register_buffer("scales", torch.cat([qt.scales.reshape(-1) for qt in parts]).to(device, ACT_DTYPE))
        self._finish(parts, bias, perm, device, rows_stored=self.out_features)

    @property
    def weight_bytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * self.scales.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(self._kernel_input(x), self.weight, self.scales)
        return self._layer_output(y, x)


class PackedW8A8Linear(_PackedLinear):
    """INT8 per-channel weights x per-token dynamic INT8 activations on torch._int_mm. With an
    outlier threshold, LLM.int8()'s decomposition: input columns holding any |x| above it are left
    out of the INT8 product and multiplied in floating point with their dequantized weight columns."""

    _kernel_buffers = ("scales",)  # fp32: the rescaling stays exact whatever dtype the model moves to
    _layout_buffer = "weight"

    def __init__(self, weights: QuantizedTensor | Sequence[QuantizedTensor], bias, perm: torch.Tensor | None,
                 outlier_threshold: float | None = None):
        super().__init__()
        self.outlier_threshold = outlier_threshold
        parts = self._claim(weights, "cpu", _int_mm_weight_supports, "W8A8")
        self.in_features = self.padded = parts[0].rows_cols[1]
        self.register_buffer("weight", torch.cat([qt.data for qt in parts]))  # (out, in) int8, own storage
        self.out_features = self.weight.shape[0]
        self.register_buffer("scales", torch.cat([qt.scales.reshape(-1).float() for qt in parts]))
        self._finish(parts, bias, perm, "cpu", rows_stored=self.out_features)

    @property
    def weight_bytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * self.scales.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.shape[-1])
        if self._permuted:
            x2d = x2d[:, self.perm]
        x2d = x2d.float()
        outliers = None
        if self.outlier_threshold is not None:
            outliers = (x2d.abs() > self.outlier_threshold).any(0).nonzero().squeeze(1)
            if outliers.numel():
                kept = x2d[:, outliers]
                x2d = x2d.index_fill(1, outliers, 0.0)
            else:
                outliers = None
        # per-token scales in fp32: they are never stored, so the reference's fp16 rounding of scales
        # is skipped (half the cost of this step at decode; codes differ only at rounding ties)
        scale = x2d.abs().amax(1, keepdim=True).clamp_(min=1e-12) / 127
        codes = torch.round(x2d / scale).to(torch.int8)
        y = torch._int_mm(codes, self.weight.t()).float() * (scale * self.scales)
        if outliers is not None:
            columns = self.weight[:, outliers].float() * self.scales.unsqueeze(1)  # (out, outliers)
            y = y + kept @ columns.t()
        return self._layer_output(y, x)


class _SharedCall:
    """The input a fused kernel last ran on and its output, shared by the sibling projections."""

    def __init__(self, members: int):
        self.members = members
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.served: set[int] = set()


class FusedSlice(nn.Module):
    """One projection of a fused group (q of q/k/v, gate of gate/up): the first sibling called with
    an input runs the fused kernel once; each sibling returns its slice of that output. A sibling
    called with another input reruns the kernel, so the result never depends on call order."""

    def __init__(self, kernel: nn.Module, index: int, start: int, stop: int, shared: _SharedCall):
        super().__init__()
        self.kernel, self.index, self.start, self.stop, self._shared = kernel, index, start, stop, shared
        self.in_features, self.out_features = kernel.in_features, stop - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self._shared
        if shared.x is not x or self.index in shared.served:
            shared.x, shared.y, shared.served = x, self.kernel(x), set()
        out = shared.y[..., self.start : self.stop]
        shared.served.add(self.index)
        if len(shared.served) == shared.members:  # every sibling served: drop the references
            shared.x = shared.y = None
        return out

    def extra_repr(self) -> str:
        return f"rows {self.start}:{self.stop} of {type(self.kernel).__name__}"


# Sibling projections that read the same input inside one parent module (Llama, Mistral, Qwen,
# Gemma): q/k/v in attention, gate/up in the MLP.
FUSABLE_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
FUSED_LABEL = " (fused)"


def packed_module(modules: QuantizedLinear | Sequence[QuantizedLinear],
                  device: str | torch.device = "cpu") -> nn.Module | None:
    """The fastest real kernel for one weight-only QuantizedLinear, or for several that share an input
    (stacked by rows), or None when no kernel takes them."""
    group = [modules] if isinstance(modules, QuantizedLinear) else list(modules)
    first = group[0]
    if any(m.weight_q.spec != first.weight_q.spec or m.in_features != first.in_features for m in group):
        return None
    if any(not _same_perm(m.perm, first.perm) for m in group):
        return None  # act-order checkpoints permute each projection's inputs its own way
    weights, biases = [m.weight_q for m in group], [m.bias for m in group]
    device_type = torch.device(device).type
    if any(m.act_spec is not None for m in group):
        if all(w8a8_kernel_supports(m, device_type) and m.outlier_threshold == first.outlier_threshold
               for m in group):
            return PackedW8A8Linear(weights, biases, first.perm, first.outlier_threshold)
        return None
    if int4_kernel_supports(first.weight_q, device_type):
        return PackedInt4Linear(weights, biases, first.perm, device)
    if int8_kernel_supports(first.weight_q, device_type):
        return PackedInt8Linear(weights, biases, first.perm, device)
    return None


def _same_perm(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return torch.equal(a, b)


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _fuse_siblings(model: nn.Module, used: dict[str, str], device) -> None:
    for parent_name, parent in list(model.named_modules()):
        for names in FUSABLE_SIBLINGS:
            members = [getattr(parent, n, None) for n in names]
            if not all(isinstance(m, QuantizedLinear) for m in members):
                continue
            kernel = packed_module(members, device)
            if kernel is None:
                continue
            shared, start = _SharedCall(len(members)), 0
            for index, (child, member) in enumerate(zip(names, members, strict=True)):
                setattr(parent, child, FusedSlice(kernel, index, start, start + member.out_features, shared))
                start += member.out_features
                full = f"{parent_name}.{child}" if parent_name else child
                used[full] = f"{type(kernel).__name__}{FUSED_LABEL}"


def use_packed_kernels(model: nn.Module, fuse: bool = True, device: str | torch.device = "cpu") -> dict[str, str]:
    """Swap every QuantizedLinear that a real kernel on `device` takes; returns {name: kernel used}.
    With `fuse`, sibling projections of one input (q/k/v, gate/up) share one stacked kernel call: on
    small models each call's fixed cost, not the weight bytes, dominates a decode step."""
    used: dict[str, str] = {}
    if fuse:
        _fuse_siblings(model, used, device)
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            fast = packed_module(module, device)
            if fast is not None:
                _set_child(model, name, fast)
            used[name] = type(fast).__name__ if fast is not None else "dequantized copy (no packed kernel)"
    return used
