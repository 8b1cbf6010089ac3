"""GPTQ (Frantar et al. 2022, arXiv:2210.17323): quantize columns one at a time and push each
column's error onto the not-yet-quantized columns through the inverse Hessian's Cholesky factor.

Lazy batch updates (block of columns), dampening, act-order (columns by decreasing Hessian
diagonal) and group scales. With act-order and dynamic groups, groups are contiguous in the
permuted order: the matrix is stored permuted together with `perm`, and inputs are permuted at run
time (x[:, perm] @ Wp^T), so storage stays the plain contiguous-group layout. Static groups compute
every group's scale from the original weights first, so storage keeps the natural column order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import FormatKind, Granularity, QuantSpec
from ..formats.container import QuantizedTensor
from ..formats.integer import choose_params, from_codes


@dataclass(frozen=True)
class GPTQResult:
    weight: QuantizedTensor       # in stored column order
    perm: torch.Tensor | None     # stored column j holds original column perm[j]; None = natural order


def _inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, factorised in float64 for
    stability and returned in float32 for the column loop (as the reference implementation runs)."""
    h = hessian.double().clone()
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    lower = torch.linalg.cholesky(h)
    inverse = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(inverse, upper=True).float()


def _quantize_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                     spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows,) weights -> (unsigned codes, dequantized values) with per-row scale/zero."""
    s = scale.float()
    if spec.symmetric:
        half = 2 ** (spec.bits - 1)
        q = torch.round(w / s).clamp(-half, half - 1)
        return (q + half).to(torch.uint8), q * s
    q = (torch.round(w / s) + zero).clamp(0, 2**spec.bits - 1)
    return q.to(torch.uint8), (q - zero) * s


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, block_size: int = 128,
                  damp: float = 0.01, act_order: bool = False, static_groups: bool = False) -> GPTQResult:
    """weight (rows, cols); hessian (cols, cols) = 2 X^T X / n of the layer's inputs."""
    if spec.kind is not FormatKind.INT:
        raise ValueError(f"GPTQ quantizes to integer formats, not {spec.kind.value}")
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian shape {tuple(hessian.shape)} does not match {cols} input features")
    w = weight.detach().float().clone()
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    grouped = spec.granularity is Granularity.GROUP
    size = spec.group_size if grouped else cols
    n_groups = -(-cols // size)

    # Scales fixed before the solve: per-tensor, per-channel, or static groups (original order).
    fixed = None
    if not grouped or static_groups:
        if spec.granularity is Granularity.TENSOR:
            s, z = choose_params(w.float().reshape(1, 1, -1), spec)
            fixed = (s.expand(rows, 1), None if z is None else z.expand(rows, 1))
        else:
            slices = [w[:, g * size:(g + 1) * size].float().unsqueeze(1) for g in range(n_groups)]
            params = [choose_params(piece, spec) for piece in slices]
            fixed = (torch.cat([p[0] for p in params], 1),
                     None if spec.symmetric else torch.cat([p[1] for p in params], 1))

    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if act_order else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    upper = _inverse_hessian_factor(h, damp)
    store_permuted = perm is not None and fixed is None
    codes = torch.zeros(rows, cols, dtype=torch.uint8)
    scales = torch.zeros(rows, n_groups, dtype=torch.float32)
    zeros = None if spec.symmetric else torch.zeros(rows, n_groups)
    current = None
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        block = w[:, i1:i2].clone()
        errors = torch.zeros_like(block)
        for i in range(i2 - i1):
            col = i1 + i
            original = int(perm[col]) if perm is not None else col
            if fixed is not None:
                g = original // size if spec.granularity is not Granularity.TENSOR else 0
                current = (fixed[0][:, g], None if fixed[1] is None else fixed[1][:, g])
            elif col % size == 0:
                # dynamic group: params from this group's columns as updated so far
                span = torch.cat([block[:, i:], w[:, i2:col + size]], 1)[:, :size]
                s, z = choose_params(span.unsqueeze(1), spec)
                current = (s[:, 0], None if z is None else z[:, 0])
                scales[:, col // size] = s[:, 0].float()
                if zeros is not None:
                    zeros[:, col // size] = z[:, 0]
            column = block[:, i]
            code, deq = _quantize_column(column, current[0], current[1], spec)
            codes[:, col if store_permuted else original] = code
            err = (column - deq) / upper[col, col]
            block[:, i:] -= err.unsqueeze(1) * upper[col, col:i2].unsqueeze(0)
            errors[:, i] = err
        w[:, i2:] -= errors @ upper[i1:i2, i2:]
    if fixed is not None:
        scales, zeros = fixed
    stored_scales = scales.to(fixed[0].dtype if fixed is not None else _scale_dtype(spec))
    qt = from_codes(codes, stored_scales, zeros, spec, (rows, cols))
    return GPTQResult(qt, perm if store_permuted else None)


def _scale_dtype(spec: QuantSpec) -> torch.dtype:
    return getattr(torch, spec.scale_dtype_name)
