"""Scale choice for calibrated integer quantization: the full symmetric grid and an error-minimising
clip search per scale group (llm-compressor's `mse` observer, GPTQModel's `mse` option).

The stored format is unchanged: a value is q x s with q in [-2^(b-1), 2^(b-1) - 1] (symmetric) or
(q - z) x s. Only the choice of s (and z) differs from `formats.integer.choose_params`:

- full grid (symmetric): s = absmax / (2^(b-1) - 0.5), as GPTQ's reference and the peers choose it
  (INT4: absmax / 7.5), so the -2^(b-1) code is used; the value at +absmax lands on 7.5 and rounds
  into the top code with the same s/2 worst-case error, on a grid 7% finer than absmax / 7.
- clip search: candidates shrink the range by p in [1 - max_shrink, 1], and each group keeps the
  candidate with the least squared error, weighted per column by `importance` (GPTQ passes the
  Hessian diagonal: the output error of quantizing column j alone is H_jj e_j^2 / 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import QuantSpec
from ..formats.container import scale_dtype
from ..formats.integer import round_scale_up


@dataclass(frozen=True)
class ScaleSearch:
    """full_grid: symmetric scales use the -2^(b-1) code. steps: shrink candidates (0 = absmax only),
    evenly spaced over [1 - max_shrink, 1]."""

    full_grid: bool = True
    steps: int = 20
    max_shrink: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 0 or not 0 <= self.max_shrink < 1:
            raise ValueError(f"scale search needs steps >= 0 and max_shrink in [0, 1), got {self}")


def _params(low: torch.Tensor, high: torch.Tensor, spec: QuantSpec, full_grid: bool
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stored scales (rounded up to the scale dtype) and float zeros for ranges [low, high]."""
    if spec.symmetric:
        qmax = 2 ** (spec.bits - 1) - (0.5 if full_grid else 1)
        scale = torch.maximum(-low, high) / qmax
    else:
        scale = (high - low) / (2**spec.bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: any scale works
    stored = round_scale_up(scale, scale_dtype(spec))
    zero = None if spec.symmetric else torch.round(-low / stored.float()).clamp(0, 2**spec.bits - 1)
    return stored, zero


def fake_quantize(grouped: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                  spec: QuantSpec) -> torch.Tensor:
    """(rows, groups, n) values on the grid of per-(row, group) scale/zero."""
    s = scale.float().unsqueeze(-1)
    if spec.symmetric:
        half = 2 ** (spec.bits - 1)
        return torch.round(grouped / s).clamp(-half, half - 1) * s
    z = zero.unsqueeze(-1)
    return ((torch.round(grouped / s) + z).clamp(0, 2**spec.bits - 1) - z) * s


def search_scales(grouped: torch.Tensor, spec: QuantSpec, search: ScaleSearch,
                  importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """grouped (rows, groups, n) -> stored scales (rows, groups) and float zeros (rows, groups) or None.

    importance (groups, n) or None: non-negative weight of each column's squared error.
    """
    grouped = grouped.float()
    low = grouped.amin(-1).clamp(max=0)   # (rows, groups)
    high = grouped.amax(-1).clamp(min=0)
    best = _params(low, high, spec, search.full_grid)
    if search.steps == 0 or search.max_shrink == 0:
        return best
    weight = torch.ones_like(grouped[0]) if importance is None else importance.float()  # (groups, n)
    best_err = torch.full(low.shape, float("inf"))
    work = torch.empty_like(grouped)  # one buffer, updated in place: the search is memory-bound
    err = torch.empty_like(best_err)
    for i in range(search.steps + 1):
        p = 1.0 - search.max_shrink * i / search.steps
        scale, zero = _params(low * p, high * p, spec, search.full_grid)
        _squared_error(grouped, scale, zero, spec, weight, work, err)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = (torch.where(better, scale, best[0]),
                None if zero is None else torch.where(better, zero, best[1]))
    return best


def _squared_error(grouped, scale, zero, spec, weight, work, out) -> None:
    """out (rows, groups) = sum over n of weight * (fake_quantize(grouped) - grouped)^2, computed in
    `work` without allocating (same arithmetic as fake_quantize)."""
    s = scale.float().unsqueeze(-1)
    torch.div(grouped, s, out=work).round_()
    if spec.symmetric:
        half = 2 ** (spec.bits - 1)
        work.clamp_(-half, half - 1)
    else:
        z = zero.unsqueeze(-1)
        work.add_(z).clamp_(0, 2**spec.bits - 1).sub_(z)
    work.mul_(s).sub_(grouped).square_().mul_(weight)
    torch.sum(work, -1, out=out)
