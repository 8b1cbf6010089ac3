"""Quantize the linears of one decoder block: observe their inputs, solve, swap in the results.

Linears that receive the same input tensor in a forward pass (q/k/v, gate/up) form an input group:
they share one LinearStats (one X^T X GEMM) and, for methods that offer `quantize_linears`, one
stacked solve. Groups are found from the block's own forward (execution order), not from names.

Two orders:
- block-parallel: one pass observes every linear on the float block, then all are quantized
  (AWQ and SmoothQuant need this: their smoothing groups span input groups).
- true-sequential (GPTQ's `true_sequential`): group by group in execution order, each group's
  statistics come from a pass through the block whose earlier groups are already quantized, so
  o_proj sees the error of the quantized q/k/v, down_proj that of gate/up. Each pass stops once
  the group's input is observed, and submodules finished in earlier passes are replayed
  (replay.py), so the passes together cost about one forward of the block. With GPTQ's asymmetric
  target (`asymmetric`, the default), one more pass through the float block first keeps what each
  later group sees there (`float_references`), and those groups fit the float block's outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..methods import LinearStats
from ..methods.stats import norm_token_weights, output_sketch
from ..runtime.qlinear import QuantizedLinear
from .replay import ReplayCache, StopPass, trace_block
from .skeleton import run_block


@dataclass
class BlockTimes:
    """Seconds spent per phase (summed over blocks by the caller)."""

    forward: float = 0.0        # block forward passes, excluding the statistics in the hooks
    hessian: float = 0.0        # statistics accumulation (X^T X, absmax, samples) in the hooks
    solve: float = 0.0          # the method's solve (GPTQ column loop, scale search, packing)
    io: float = 0.0             # reading the block's weights, writing shards and activations

    def add(self, other: BlockTimes) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# Input rows kept per linear (up to twice this) when the method itself uses none: only the
# reported relative output error reads them. 256 rows spread over every batch estimate it to a few
# percent; the 1,024 kept before cost SmolLM2's GPTQ ~4% of its run in reference and error GEMMs.
DIAGNOSTIC_SAMPLE_ROWS = 128


def linear_names(block: nn.Module) -> list[str]:
    return [name for name, module in block.named_modules() if isinstance(module, nn.Linear)]


def input_groups(block: nn.Module, names: list[str], hidden: torch.Tensor, kwargs: dict) -> list[list[str]]:
    """Linears grouped by the input tensor object they receive, in execution order (one forward);
    linears never called come last, one per group (observed as empty: fails loudly)."""
    return _named_groups(trace_block(block, hidden, kwargs), names)


def _named_groups(trace, names: list[str]) -> list[list[str]]:
    return [[n for n in group if n in names] for group in trace.groups if any(n in names for n in group)]


def observe(block: nn.Module, groups: list[list[str]], inputs: list[torch.Tensor], kwargs: list[dict],
            need_hessian: bool, sample_rows: int, stop_after: str | None, times: BlockTimes,
            need_magnitudes: bool = True, cache: ReplayCache | None = None,
            record: list[str] | None = None, tail: str | None = None,
            normalized: dict[str, float] | None = None, compute_dtype: str = "float32",
            references: dict[str, FloatReference] | None = None) -> dict[str, LinearStats]:
    """Statistics of the inputs of the linears in `groups` (one LinearStats per group), over every
    calibration batch; each pass ends once `stop_after`'s input is observed, or with a `tail`
    (a submodule ending in `stop_after`), once that submodule returns. With a `cache`, its recorded
    submodules are replayed, `record` is recorded and `tail` is recorded as a tail. `normalized`:
    linear -> epsilon of the RMSNorm its output enters; a linear alone in its group weighs its
    tokens in X^T X as that norm scales their output error (`norm_token_weights`). `compute_dtype`:
    the forward passes' precision (`run_block`); the statistics are float32 whatever it is."""
    stats = {}
    for group in groups:
        shared = LinearStats(block.get_submodule(group[0]).in_features, need_hessian, sample_rows, need_magnitudes)
        stats.update({name: shared for name in group})

    first = {group[0] for group in groups}  # the others see the same tensor: observed once
    normalized = normalized or {}
    sketches = {group[0]: (output_sketch(block.get_submodule(group[0]).weight), normalized[group[0]])
                for group in groups if need_hessian and len(group) == 1 and group[0] in normalized}

    batch = [0]

    def hook(name, args):
        if name in first:
            start = time.perf_counter()
            sketch = sketches.get(name)
            with torch.autocast("cpu", enabled=False):  # the pass's autocast stops at the statistics
                weights = None if sketch is None else norm_token_weights(args[0], *sketch)
                if references and name in references:
                    reference = references[name]
                    stats[name].observe(args[0], weights, reference.batches[batch[0]], reference.outputs)
                else:
                    stats[name].observe(args[0], weights)
            times.hessian += time.perf_counter() - start
        if name == stop_after and tail is None:
            raise StopPass

    def stop(*_):
        raise StopPass

    hooks = [block.get_submodule(n).register_forward_pre_hook(lambda _m, a, n=n: hook(n, a)) for n in stats]
    if tail is not None:
        hooks.append(block.get_submodule(tail).register_forward_hook(stop))
    start, hessian_before = time.perf_counter(), times.hessian
    replaying = cache.active(record or (), tail) if cache is not None else contextlib.nullcontext()
    try:
        with replaying:
            for index, (hidden, kw) in enumerate(zip(inputs, kwargs, strict=True)):
                batch[0] = index
                if cache is not None:
                    cache.batch = index
                with contextlib.suppress(StopPass):
                    run_block(block, hidden, kw, compute_dtype)
    finally:
        for h in hooks:
            h.remove()
    times.forward += time.perf_counter() - start - (times.hessian - hessian_before)
    return stats


@dataclass
class FloatReference:
    """One input group in a pass through the float block, per batch: its linears' outputs side by
    side where they are narrower than the input (o_proj, down_proj: W X_ref^T X is then one
    out x in GEMM), else the input they share (gate/up: X_ref^T X, in x in, times W later)."""

    outputs: bool
    batches: list[torch.Tensor]


def float_references(block: nn.Module, groups: list[list[str]], inputs: list[torch.Tensor], kwargs: list[dict],
                     times: BlockTimes, compute_dtype: str = "float32") -> dict[str, FloatReference]:
    """What `groups` see in one pass through the block before any of its linears is quantized: the
    float block's view of the same block inputs, for the asymmetric target. Keyed by each group's
    first linear."""
    modules = {name: block.get_submodule(name) for group in groups for name in group}
    by_output = {group[0]: sum(modules[n].out_features for n in group) < modules[group[0]].in_features
                 for group in groups}
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    hooks = []
    for group in groups:
        if by_output[group[0]]:
            hooks += [modules[n].register_forward_hook(lambda _m, _a, out, n=n: seen[n].append(out.detach()))
                      for n in group]
        else:
            hooks.append(modules[group[0]].register_forward_pre_hook(
                lambda _m, a, n=group[0]: seen[n].append(a[0].detach())))
    start = time.perf_counter()
    try:
        for hidden, kw in zip(inputs, kwargs, strict=True):
            run_block(block, hidden, kw, compute_dtype)
    finally:
        for h in hooks:
            h.remove()
    times.forward += time.perf_counter() - start
    references = {}
    for group in groups:
        if by_output[group[0]]:
            batches = [torch.cat(parts, -1) for parts in zip(*(seen[n] for n in group), strict=True)]
        else:
            batches = seen[group[0]]
        references[group[0]] = FloatReference(by_output[group[0]], batches)
    return references


def _relative_error(reference: torch.Tensor, quantized: QuantizedLinear, sample: torch.Tensor) -> float:
    with torch.no_grad():
        return float((quantized(sample) - reference).norm() / reference.norm().clamp(min=1e-12))


def _quantize_group(block: nn.Module, group: list[str], stats: dict[str, LinearStats], method,
                    formats: dict[str, str] | None) -> tuple[dict[str, QuantizedLinear], dict[str, float]]:
    """Quantize one input group; linears with the same format share a stacked solve where the
    method offers one (`quantize_linears`)."""
    chosen = {name: dataclasses.replace(method, format=formats[name]) if formats and name in formats else method
              for name in group}
    linears = {name: block.get_submodule(name) for name in group}
    with torch.no_grad():  # before quantizing, which may clip the weights in place (AWQ)
        references = {name: linears[name](stats[name].sample) for name in group}
    quantized = {}
    for config in dict.fromkeys(chosen.values()):
        members = [name for name in group if chosen[name] == config]
        if hasattr(config, "quantize_linears") and len({id(stats[n]) for n in members}) == 1:
            modules = config.quantize_linears([linears[n] for n in members], stats[members[0]])
        else:
            modules = [config.quantize_linear(linears[n], stats[n]) for n in members]
        quantized.update(zip(members, modules, strict=True))
    errors = {name: _relative_error(references[name], quantized[name], stats[name].sample) for name in group}
    return quantized, errors


def _install(block: nn.Module, quantized: dict[str, QuantizedLinear]) -> None:
    for name, module in quantized.items():
        parent, _, child = name.rpartition(".")
        setattr(block.get_submodule(parent) if parent else block, child, module)


def quantize_block(block: nn.Module, model_type: str, method, inputs: list[torch.Tensor], kwargs: list[dict],
                   formats: dict[str, str] | None = None, times: BlockTimes | None = None,
                   groups: list[list[str]] | None = None, cache: ReplayCache | None = None,
                   on_group: Callable[[list[str]], None] | None = None,
                   normalized: dict[str, float] | None = None, compute_dtype: str = "float32"
                   ) -> tuple[dict[str, QuantizedLinear], dict[str, float]]:
    """Observe, prepare (smoothing), quantize every linear of one block in place; `formats`
    overrides the method's format per linear (block-relative names); `groups` are the block's input
    groups when the caller has them; `cache` replays the submodules that earlier passes finished
    (true-sequential), and the caller can reuse it for the block's outputs; `on_group(names)` is
    called as each input group is done (an 8B block takes minutes); `normalized`: the linears whose
    output enters an RMSNorm (`BlockTrace.normalized`; traced here with the groups when those are
    not given), for methods that weigh tokens by it; `compute_dtype`: the precision of the block's
    forward passes (`run_block`; the cache's passes are its own). Returns the quantized modules and
    each linear's relative output error on its calibration sample."""
    times = times if times is not None else BlockTimes()
    if groups is None:
        trace = trace_block(block, inputs[0], kwargs[0], compute_dtype)
        groups = _named_groups(trace, linear_names(block))
        normalized = trace.normalized if normalized is None else normalized
    if not getattr(method, "norm_weighted", False):
        normalized = None
    need_hessian, rows = method.needs_hessian, getattr(method, "sample_rows", DIAGNOSTIC_SAMPLE_ROWS)
    magnitudes = getattr(method, "needs_magnitudes", True)
    quantized, errors = {}, {}
    if getattr(method, "true_sequential", False):
        references = (float_references(block, groups[1:], inputs, kwargs, times, compute_dtype)
                      if getattr(method, "asymmetric", False) else None)
        for stage in sequential_stages(groups, getattr(method, "sequential_stages", "groups")):
            span = cache.spans.get(stage[0][0]) if cache is not None else None
            record = cache.final_before(span.start) if span is not None else []
            tail = cache.tail_owner(stage[0]) if cache is not None and len(stage) == 1 else None
            stop_after = stage[0][0] if len(stage) == 1 else _last_started(stage, cache)
            stats = observe(block, stage, inputs, kwargs, need_hessian, rows, stop_after, times, magnitudes,
                            cache, record, tail, normalized, compute_dtype, references)
            for group in stage:
                start = time.perf_counter()
                q, e = _quantize_group(block, group, stats, method, formats)
                times.solve += time.perf_counter() - start
                _install(block, q)
                quantized.update(q)
                errors.update(e)
                if on_group is not None:
                    on_group(group)
        return quantized, errors
    stats = observe(block, groups, inputs, kwargs, need_hessian, rows, _last_started(groups, cache), times,
                    magnitudes, normalized=normalized, compute_dtype=compute_dtype)
    start = time.perf_counter()
    method.prepare_block(block, model_type, stats)
    for group in groups:
        q, e = _quantize_group(block, group, stats, method, formats)
        quantized.update(q)
        errors.update(e)
        if on_group is not None:
            on_group(group)
    times.solve += time.perf_counter() - start
    _install(block, quantized)
    return quantized, errors


def sequential_stages(groups: list[list[str]], unit: str) -> list[list[list[str]]]:
    """The passes of a true-sequential block: one per input group ("groups", GPTQ's order), or one per
    sublayer ("sublayers": q/k/v with o_proj, then gate/up with down_proj), whose groups are observed
    together on the sublayer's float weights after the sublayers before it are quantized."""
    if unit == "groups":
        return [[group] for group in groups]
    if unit != "sublayers":
        raise ValueError(f"unknown sequential stage unit {unit!r}")
    stages: list[list[list[str]]] = []
    for group in groups:
        owner = group[0].partition(".")[0]
        if stages and stages[-1][0][0].partition(".")[0] == owner:
            stages[-1].append(group)
        else:
            stages.append([group])
    return stages


def _last_started(groups: list[list[str]], cache: ReplayCache | None) -> str | None:
    """The linear whose input is the last one a pass observing every group needs (None: run the
    whole block, e.g. when some linear was never called)."""
    if cache is None or any(group[0] not in cache.spans for group in groups):
        return None
    return max((group[0] for group in groups), key=lambda name: cache.spans[name].start)
