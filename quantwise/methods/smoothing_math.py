"""Per-input-channel scales that move quantization difficulty between activations and weights.

Both fold into the layer that produces the input (a norm, or a linear), so inference cost is
unchanged: with s > 0 per input channel, X W^T = (X / s)(W * s)^T.

SmoothQuant (Xiao et al. 2022, arXiv:2211.10438): s_j = max|X_j|^alpha / max|W_j|^(1-alpha).
AWQ (Lin et al. 2023, arXiv:2306.00978): s = mean|X|^a, a chosen on a grid to minimize the output
error after quantizing W * s; optional per-row clipping search of the weight range.
"""

from __future__ import annotations

import torch

from ..formats import QuantSpec
from ..formats.api import fake_quantize
from ..formats.layout import grouped_view


def smoothquant_scales(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """(in,) scales from activation maxima and the weights that share this input."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    w_absmax = torch.cat([w.abs() for w in weights], 0).amax(0).float()
    scales = act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    return scales.clamp(min=1e-5)


def output_error(x: torch.Tensor, weights: list[torch.Tensor], approx: list[torch.Tensor]) -> float:
    """Sum over layers of mean squared output error on inputs x (tokens, in)."""
    return float(sum(((x @ (a - w).T) ** 2).mean() for w, a in zip(weights, approx, strict=True)))


def awq_search(x: torch.Tensor, act_mean: torch.Tensor, weights: list[torch.Tensor], spec: QuantSpec,
               grid: int = 20) -> tuple[torch.Tensor, float, list[tuple[float, float]]]:
    """Grid-search the exponent a of s = act_mean^a; returns (scales, best a, [(a, error)])."""
    tried = []
    best = (float("inf"), 0.0, torch.ones_like(act_mean))
    for step in range(grid + 1):
        a = step / grid
        s = act_mean.float().clamp(min=1e-4).pow(a)
        s = s / (s.max() * s.min()).sqrt()  # keep the scale range centred on 1
        approx = [fake_quantize(w * s, spec) / s for w in weights]
        err = output_error(x, weights, approx)
        tried.append((a, err))
        if err < best[0]:
            best = (err, a, s)
    return best[2], best[1], tried


def awq_clip(x: torch.Tensor, weight: torch.Tensor, spec: QuantSpec,
             ratios: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)) -> torch.Tensor:
    """Weights clipped per output row to the range ratio x (group extremes) that minimizes that
    row's output error on x; returned unquantized (quantize them afterwards)."""
    rows, cols = weight.shape
    best_err = torch.full((rows,), float("inf"))
    best = weight.clone()
    for ratio in ratios:
        grouped = grouped_view(weight, spec)
        high = grouped.amax(-1, keepdim=True).clamp(min=0) * ratio
        low = grouped.amin(-1, keepdim=True).clamp(max=0) * ratio
        if spec.symmetric:
            high = torch.maximum(high, -low)
            low = -high
        clipped = torch.minimum(torch.maximum(grouped, low), high).reshape(grouped.shape[0], -1)[:, :cols]
        clipped = clipped.reshape(rows, cols)
        err = ((x @ (fake_quantize(clipped, spec) - weight).T) ** 2).mean(0)  # (rows,)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best[better] = clipped[better]
    return best
