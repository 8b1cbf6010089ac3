"""Calibration statistics of one linear layer's inputs, gathered batch by batch (observe)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LinearStats:
    """Running statistics of the inputs X (tokens, in_features) a linear layer sees.

    xtx: sum of X^T X (GPTQ's Hessian is 2 xtx / tokens), kept only when `need_hessian`.
    abs_max / abs_sum: per input channel (SmoothQuant, LLM.int8, AWQ).
    sample: a deterministic subset of input rows, at most 2 x max_sample_rows (AWQ's searches):
    every row is kept until the cap, then every other row, so the subset spans all batches.
    """

    in_features: int
    need_hessian: bool = False
    max_sample_rows: int = 2048
    need_magnitudes: bool = True        # abs_max / abs_sum (smoothing methods); GPTQ needs neither
    tokens: int = 0
    xtx: torch.Tensor | None = None
    abs_max: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    sample: torch.Tensor | None = None
    _stride: int = field(default=1, repr=False)

    def observe(self, inputs: torch.Tensor) -> None:
        x = inputs.detach().reshape(-1, self.in_features).float()  # (tokens, in_features)
        if x.numel() == 0:
            return
        self.tokens += x.shape[0]
        if self.need_magnitudes:
            magnitude = x.abs()
            batch_max, batch_sum = magnitude.amax(0), magnitude.sum(0, dtype=torch.float64)
            _check_finite(batch_max)  # amax propagates NaN, and Inf is its own max
            if self.abs_max is None:
                self.abs_max, self.abs_sum = batch_max, batch_sum
            else:
                self.abs_max = torch.maximum(self.abs_max, batch_max)
                self.abs_sum += batch_sum
        if self.need_hessian:
            # Accumulated in place in float32, as GPTQ's reference does: a float64 sum (and the
            # batch's product beside it) held 2.4 GB more at 14336 inputs and cost a conversion
            # per batch, for agreement to 1e-6 that the dampening swamps.
            if self.xtx is None:
                self.xtx = torch.zeros(self.in_features, self.in_features)
            self.xtx.addmm_(x.T, x)
            _check_finite(self.xtx.diagonal())  # diag = sum of x^2: NaN or Inf anywhere in x shows here
        elif not self.need_magnitudes:
            _check_finite(x)
        kept = x[:: self._stride]
        self.sample = kept if self.sample is None else torch.cat([self.sample, kept])
        while self.sample.shape[0] > 2 * self.max_sample_rows:
            self.sample = self.sample[::2]
            self._stride *= 2

    @property
    def abs_mean(self) -> torch.Tensor:
        return (self.abs_sum / max(self.tokens, 1)).float()

    def hessian(self) -> torch.Tensor:
        """H = 2 X^T X / n, (in_features, in_features) float32."""
        if self.xtx is None or self.tokens == 0:
            raise ValueError("no calibration inputs were observed for this layer")
        return 2.0 * self.xtx / self.tokens


def _check_finite(summary: torch.Tensor) -> None:
    if not torch.isfinite(summary).all():
        raise ValueError("calibration activations contain NaN/Inf")
