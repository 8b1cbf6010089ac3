"""Calibration statistics of one linear layer's inputs, gathered batch by batch (observe)."""

from __future__ import annotations

import math
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
    reference_product: torch.Tensor | None = None   # R^T X (`observe`'s reference), for the asymmetric target
    reference_outputs: bool = False
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

    def observe(self, inputs: torch.Tensor, token_weights: torch.Tensor | None = None,
                reference: torch.Tensor | None = None, reference_outputs: bool = False) -> None:
        """token_weights (tokens,): how much each token's output error counts in X^T X (None: all
        alike); the magnitudes and the sample stay unweighted. `reference`: what the float block gives
        for the same tokens, accumulated as R^T X for the asymmetric target (`target_product`): this
        group's outputs W X_ref (`reference_outputs`: the product is then W X_ref^T X itself, out x
        in) or its inputs X_ref (in x in, times W later: cheaper where the group is wider than its
        input); tokens weighted as in X^T X."""
        x = inputs.detach().reshape(-1, self.in_features).float()  # (tokens, in_features)
        if x.numel() == 0:
            return
        if reference is not None:
            ref = reference.detach().reshape(x.shape[0], -1).float()
            if token_weights is not None:
                ref = ref * token_weights.reshape(-1, 1)   # R^T D X, as X^T X is X^T D X
            if self.reference_product is None:
                self.reference_product = torch.zeros(ref.shape[1], self.in_features)
                self.reference_outputs = reference_outputs
            self.reference_product.addmm_(ref.T, x)
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
            weighted = x if token_weights is None else x * token_weights.reshape(-1, 1).sqrt()
            for start, stop in _row_blocks(self.in_features):
                self._gram[start:stop, start:].addmm_(weighted[:, start:stop].T, weighted[:, start:])
            self._mirrored = False
            _check_finite(self._gram.diagonal())  # diag = sum of x^2: NaN or Inf anywhere in x shows here
        elif not self.need_magnitudes:
            _check_finite(x)
        kept = x[:: self._stride]
        self.sample = kept if self.sample is None else torch.cat([self.sample, kept])
        while self.sample.shape[0] > 2 * self.max_sample_rows:
            self.sample = self.sample[::2]
            self._stride *= 2

    def target_product(self, weight: torch.Tensor) -> torch.Tensor | None:
        """W X_ref^T X scaled as `hessian()` (2 / n), for the stacked weights of this input group;
        None where no reference was observed."""
        if self.reference_product is None:
            return None
        product = self.reference_product if self.reference_outputs else weight @ self.reference_product
        return 2.0 * product / self.tokens

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


# Rows of the random sketch that estimates each token's output mean square for `norm_token_weights`:
# relative error sqrt(2 / rows) per token (18%) at rows / out_features of the output GEMM's flops
# (10% at Gemma-3's 640 outputs). Gemma-3 int4-g64, seed 0: 32 rows, 128 rows and the exact
# outputs gave perplexity 24.31, 24.37 and 24.50 against 24.63 unweighted: the sketch's error is
# below the run-to-run noise.
OUTPUT_SKETCH_ROWS = 64


def output_sketch(weight: torch.Tensor, rows: int = OUTPUT_SKETCH_ROWS) -> torch.Tensor:
    """P (rows, in_features) with E ||P x||^2 = mean((W x)^2) over W's outputs: W under a seeded
    Gaussian sketch, or W itself (scaled) when it has no more outputs than `rows`."""
    w = weight.detach().float()
    out_features = w.shape[0]
    if out_features <= rows:
        return w / math.sqrt(out_features)
    gaussian = torch.randn(rows, out_features, generator=torch.Generator().manual_seed(0))
    return gaussian @ w / math.sqrt(rows * out_features)


def norm_token_weights(inputs: torch.Tensor, sketch: torch.Tensor, eps: float) -> torch.Tensor:
    """(tokens,) 1 / the root mean square of each token's output (+ eps under the root): an RMSNorm
    after the linear divides each token's output, and its output error, by that root mean square, so
    a token whose output is small matters more downstream than X^T X alone counts it.

    The norm's own factor on the squared error is 1 / mean square; its square root is what measured
    better: Gemma-3 int4-g64 over calibration seeds 0/1/2, perplexity 24.50 / 24.55 / 24.55 with
    1 / mean square against 24.63 / 24.53 / 24.53 unweighted, and 24.31-24.50 / 24.35 / 24.41 with
    1 / root mean square (`benchmarks/results/2026-11-29-gptq-norm-weighting-gemma-3-270m.txt`).
    The full factor lets the few tokens with the smallest outputs rule H. (At g128 the weighting
    measured 0.2-1% worse on three seeds: it is an option, `GPTQOptions.norm_weighting`.)"""
    x = inputs.detach().reshape(-1, sketch.shape[1]).float()
    return (x @ sketch.T).square().sum(1).add_(eps).rsqrt_()


def _row_blocks(width: int) -> list[tuple[int, int]]:
    return [(start, min(start + GRAM_BLOCK, width)) for start in range(0, width, GRAM_BLOCK)]


def _check_finite(summary: torch.Tensor) -> None:
    if not torch.isfinite(summary).all():
        raise ValueError("calibration activations contain NaN/Inf")
