"""The methods: one frozen config each, all with the same two steps.

  prepare_block(block, model_type, stats)  optional: fold smoothing scales (AWQ, SmoothQuant)
  quantize_linear(linear, stats)           -> QuantizedLinear

so the pipeline drives every method the same way and methods combine (SmoothQuant then GPTQ,
AWQ scales then RTN or GPTQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..formats import FormatKind, Granularity, QuantSpec, parse_spec, quantize
from ..models.structure import fold_into_producer, scale_consumer, smooth_groups
from ..runtime.qlinear import PER_TOKEN_INT8, QuantizedLinear
from .gptq_math import GPTQOptions, gptq_quantize
from .smoothing_math import awq_clip, awq_search, smoothquant_scales
from .stats import LinearStats


def _rtn_linear(linear: nn.Linear, spec: QuantSpec, **extra) -> QuantizedLinear:
    return QuantizedLinear(quantize(linear.weight.detach().float(), spec), linear.bias, **extra)


def _target_product(weight: torch.Tensor, stats: LinearStats, cfg: GPTQOptions) -> torch.Tensor | None:
    """W X_ref^T X where the asymmetric target is asked for and the float model's view was observed."""
    return stats.target_product(weight) if cfg.asymmetric else None


def _gptq_linear(linear: nn.Linear, stats: LinearStats, spec: QuantSpec, cfg: GPTQOptions,
                 **extra) -> QuantizedLinear:
    weight = linear.weight.detach().float()
    result = gptq_quantize(weight, stats.hessian(), spec, cfg, _target_product(weight, stats, cfg))
    return QuantizedLinear(result.weight(), linear.bias, perm=result.perm, **extra)


def _gptq_stacked(linears: list[nn.Linear], stats: LinearStats, spec: QuantSpec, cfg: GPTQOptions
                  ) -> list[QuantizedLinear]:
    """Linears with one input (q/k/v, gate/up) as one stacked solve: rows are independent given H."""
    if len(linears) == 1 or spec.granularity is Granularity.TENSOR:  # a tensor scale must not span linears
        return [_gptq_linear(linear, stats, spec, cfg) for linear in linears]
    stacked = torch.cat([linear.weight.detach().float() for linear in linears])
    result = gptq_quantize(stacked, stats.hessian(), spec, cfg, _target_product(stacked, stats, cfg))
    out, start = [], 0
    for linear in linears:
        rows = slice(start, start + linear.out_features)
        out.append(QuantizedLinear(result.weight(rows), linear.bias, perm=result.perm))
        start = rows.stop
    return out


@dataclass(frozen=True)
class RTN:
    """Round to nearest, any format of quantwise.formats."""

    format: str = "int4-g128"
    needs_hessian = False
    needs_magnitudes = False

    def prepare_block(self, block: nn.Module, model_type: str, stats: dict[str, LinearStats]) -> None:
        return None

    def quantize_linear(self, linear: nn.Linear, stats: LinearStats) -> QuantizedLinear:
        return _rtn_linear(linear, parse_spec(self.format))


@dataclass(frozen=True)
class GPTQ:
    format: str = "int4-g128"
    options: GPTQOptions = GPTQOptions()
    needs_hessian = True
    needs_magnitudes = False

    def __post_init__(self) -> None:
        if parse_spec(self.format).kind is not FormatKind.INT:
            raise ValueError(f"GPTQ needs an integer format, got {self.format}")

    def prepare_block(self, block, model_type, stats) -> None:
        return None

    @property
    def true_sequential(self) -> bool:
        return self.options.true_sequential

    @property
    def sequential_stages(self) -> str:
        return self.options.sequential_stages

    @property
    def asymmetric(self) -> bool:
        return self.options.asymmetric

    @property
    def norm_weighted(self) -> bool:
        return self.options.norm_weighting

    def quantize_linear(self, linear: nn.Linear, stats: LinearStats) -> QuantizedLinear:
        return _gptq_linear(linear, stats, parse_spec(self.format), self.options)

    def quantize_linears(self, linears: list[nn.Linear], stats: LinearStats) -> list[QuantizedLinear]:
        """Linears that share one input and this format: one stacked solve."""
        return _gptq_stacked(linears, stats, parse_spec(self.format), self.options)


def _smooth(block: nn.Module, model_type: str, stats: dict[str, LinearStats], choose, norms_only: bool) -> None:
    """Fold per-channel scales chosen by `choose(group, consumers, stats)` into each smoothing group."""
    for group in smooth_groups(model_type):
        if norms_only and not group.producer_is_norm:
            continue
        consumers = [block.get_submodule(path) for path in group.consumers]
        producer = block.get_submodule(group.producer)
        width = consumers[0].in_features
        if isinstance(producer, nn.Linear) and producer.out_features != width:
            continue  # grouped-query attention: v_proj rows do not map one-to-one to o_proj inputs
        first = stats[group.consumers[0]]
        scales = choose(consumers, first)
        fold_into_producer(producer, scales)
        for path, consumer in zip(group.consumers, consumers, strict=True):
            scale_consumer(consumer, scales)
            stats[path] = rescale_stats(stats[path], scales)


def rescale_stats(stats: LinearStats, scales: torch.Tensor) -> LinearStats:
    """Statistics of X / s from those of X."""
    inv = 1.0 / scales.double()
    out = LinearStats(stats.in_features, stats.need_hessian, stats.max_sample_rows, stats.need_magnitudes,
                      stats.tokens)
    out.abs_max = (stats.abs_max.double() * inv).float()
    out.abs_sum = stats.abs_sum * inv
    out.sample = (stats.sample.double() * inv).float()
    if stats.xtx is not None:
        out.xtx = (stats.xtx * inv.unsqueeze(0) * inv.unsqueeze(1)).float()
    return out


@dataclass(frozen=True)
class AWQ:
    """Activation-aware scaling, then RTN or GPTQ on the scaled weights."""

    format: str = "int4-g128"
    grid: int = 20
    clip: bool = True
    then: str = "rtn"
    options: GPTQOptions = GPTQOptions()
    sample_rows = 1024  # input rows kept per linear (up to twice this) for the scale and clipping searches

    def __post_init__(self) -> None:
        if self.then not in ("rtn", "gptq"):
            raise ValueError(f"AWQ is followed by rtn or gptq, got {self.then!r}")
        if self.grid < 1:
            raise ValueError("AWQ grid must be >= 1")

    @property
    def needs_hessian(self) -> bool:
        return self.then == "gptq"

    def prepare_block(self, block, model_type, stats) -> None:
        spec = parse_spec(self.format)

        def choose(consumers, first):
            weights = [c.weight.detach().float() for c in consumers]
            scales, _, _ = awq_search(first.sample, first.abs_mean, weights, spec, self.grid)
            return scales

        _smooth(block, model_type, stats, choose, norms_only=False)

    def quantize_linear(self, linear: nn.Linear, stats: LinearStats) -> QuantizedLinear:
        spec = parse_spec(self.format)
        if self.clip:
            with torch.no_grad():
                linear.weight.copy_(awq_clip(stats.sample, linear.weight.detach().float(), spec))
        if self.then == "gptq":
            return _gptq_linear(linear, stats, spec, self.options)
        return _rtn_linear(linear, spec)


@dataclass(frozen=True)
class SmoothQuant:
    """W8A8: smoothing folded into the norms, per-channel INT8 weights (RTN or GPTQ), per-token
    dynamic INT8 activations."""

    alpha: float = 0.5
    format: str = "int8-channel"
    then: str = "rtn"
    options: GPTQOptions = GPTQOptions()

    def __post_init__(self) -> None:
        smoothquant_scales(torch.ones(1), [torch.ones(1, 1)], self.alpha)  # validates alpha
        if self.then not in ("rtn", "gptq"):
            raise ValueError(f"SmoothQuant is followed by rtn or gptq, got {self.then!r}")

    @property
    def needs_hessian(self) -> bool:
        return self.then == "gptq"

    def prepare_block(self, block, model_type, stats) -> None:
        def choose(consumers, first):
            return smoothquant_scales(first.abs_max, [c.weight.detach().float() for c in consumers], self.alpha)

        _smooth(block, model_type, stats, choose, norms_only=True)

    def quantize_linear(self, linear: nn.Linear, stats: LinearStats) -> QuantizedLinear:
        spec = parse_spec(self.format)
        if self.then == "gptq":
            return _gptq_linear(linear, stats, spec, self.options, act_spec=PER_TOKEN_INT8)
        return _rtn_linear(linear, spec, act_spec=PER_TOKEN_INT8)


@dataclass(frozen=True)
class LLMInt8:
    """LLM.int8() (Dettmers et al. 2022): vector-wise INT8 weights and activations, with input
    columns holding any |x| > threshold kept in 16-bit."""

    threshold: float = 6.0
    format: str = "int8-channel"
    needs_hessian = False
    needs_magnitudes = False

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ValueError("LLM.int8 threshold must be positive")

    def prepare_block(self, block, model_type, stats) -> None:
        return None

    def quantize_linear(self, linear: nn.Linear, stats: LinearStats) -> QuantizedLinear:
        return _rtn_linear(linear, parse_spec(self.format), act_spec=PER_TOKEN_INT8,
                           outlier_threshold=self.threshold)


METHODS = {"rtn": RTN, "gptq": GPTQ, "awq": AWQ, "smoothquant": SmoothQuant, "llm-int8": LLMInt8}
