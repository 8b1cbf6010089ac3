"""Calibration statistics of one linear layer's inputs, gathered batch by batch (observe)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LinearStats:
    """Running statistics of the inputs X (tokens, in_features) a linear layer sees.

    xtx: sum of X^T X (GPTQ's Hessian is 2 xtx / tokens), kept only when `need_hessian`; accumulated
      as its upper block triangle, the lower one mirrored when read.
    abs_max / abs_sum: per input channel (SmoothQuant, LLM.int8, AWQ).
    sample: a deterministic subset of input rows, at most 2 x max_sample_rows (AWQ's searches):
    every row is kept until the cap, then every other row, so the subset spans all batches.
    """

    in_features: int
    need_hessian: bool = False
    max_sample_rows: int = 2048
    need_magnitudes: bool = True        # abs_max / abs_sum (smoothing methods); GPTQ needs neither
    tokens: int = 0
    abs_max: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    sample: torch.Tensor | None = None
    _stride: int = field(default=1, repr=False)
    _gram: torch.Tensor | None = field(default=None, repr=False)   # valid on and above the diagonal blocks
    _mirrored: bool = field(default=True, repr=False)

    @property
    def xtx(self) -> torch.Tensor | None:
        if self._gram is not None and not self._mirrored:
            for start, stop in _row_blocks(self.in_features):  # in place: no second d x d matrix
                self._gram[start:stop, :start].copy_(self._gram[:start, start:stop].T)
            self._mirrored = True
        return self._gram

    @xtx.setter
    def xtx(self, value: torch.Tensor | None) -> None:
        self._gram, self._mirrored = value, True

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
            if self._gram is None:
                self._gram = torch.zeros(self.in_features, self.in_features)
            for start, stop in _row_blocks(self.in_features):
                self._gram[start:stop, start:].addmm_(x[:, start:stop].T, x[:, start:])
            self._mirrored = False
            _check_finite(self._gram.diagonal())  # diag = sum of x^2: NaN or Inf anywhere in x shows here
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
        xtx = self.xtx
        if xtx is None or self.tokens == 0:
            raise ValueError("no calibration inputs were observed for this layer")
        return 2.0 * xtx / self.tokens


# X^T X is symmetric: rows of blocks on and right of the diagonal hold 5/8 of the flops at
# 4 blocks (`benchmarks/gptq_parts.py`, one thread, 2048 tokens, observe against one full addmm:
# 1536 inputs 129 -> 81 ms, 4096: 823 -> 550 ms; 576: 15 -> 16 ms, no gain).
GRAM_BLOCK = 256


def _row_blocks(width: int) -> list[tuple[int, int]]:
    return [(start, min(start + GRAM_BLOCK, width)) for start in range(0, width, GRAM_BLOCK)]


def _check_finite(summary: torch.Tensor) -> None:
    if not torch.isfinite(summary).all():
        raise ValueError("calibration activations contain NaN/Inf")
