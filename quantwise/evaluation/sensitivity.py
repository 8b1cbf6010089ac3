"""Per-layer sensitivity: quantize one linear at a time (everything else full precision) and
measure the KL divergence of the model's next-token distribution from the reference. From the
ranking, a mixed-precision plan under an average bits-per-weight budget."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..formats import bits_per_weight, parse_spec
from ..formats.api import fake_quantize
from .compare import _log_probs
from .perplexity import window_spans, with_bos


@dataclass
class LayerSensitivity:
    name: str
    block: int | None
    module: str
    params: int
    kl: float                # mean KL(reference || model with only this layer quantized), nats/token
    ppl_ratio: float         # perplexity with this layer quantized / reference perplexity


@dataclass
class MixedPlan:
    default: str
    high: str
    budget_bpw: float
    achieved_bpw: float
    overrides: dict[str, str] = field(default_factory=dict)

    def format_for(self, name: str) -> str:
        return self.overrides.get(name, self.default)


def _windows(ids: torch.Tensor, window: int, bos_id: int | None) -> list[torch.Tensor]:
    """Non-overlapping windows, each after the model's <bos> where its tokenizer puts one."""
    return [with_bos(ids[begin:end], bos_id) for begin, end, _ in window_spans(ids.numel(), window, window)]


def _score(model: nn.Module, chunks: list[torch.Tensor], reference: list[torch.Tensor] | None):
    """(log-probs per chunk, mean KL vs reference, mean NLL)."""
    log_probs, kl_sum, nll_sum, count = [], 0.0, 0.0, 0
    for i, chunk in enumerate(chunks):
        lp = _log_probs(model, chunk, chunk.numel() - 1)
        log_probs.append(lp)
        nll_sum += float(-lp.gather(1, chunk[1:].unsqueeze(1)).sum())
        if reference is not None:
            kl_sum += float((reference[i].exp() * (reference[i] - lp)).sum(-1).clamp(min=0).sum())
        count += chunk.numel() - 1
    return log_probs, kl_sum / count, nll_sum / count


def target_linears(model: nn.Module, include_lm_head: bool = False) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and (include_lm_head or not name.endswith("lm_head"))]


def layer_sensitivity(model: nn.Module, ids: torch.Tensor, fmt: str, window: int = 256,
                      progress=None, bos_id: int | None = None) -> list[LayerSensitivity]:
    """Each linear quantized alone (RTN in `fmt`); rows sorted most sensitive first."""
    spec = parse_spec(fmt)
    chunks = _windows(ids, window, bos_id)
    reference, _, ref_nll = _score(model, chunks, None)
    linears = target_linears(model)
    rows = []
    for number, (name, linear) in enumerate(linears):
        original = linear.weight.data
        linear.weight.data = fake_quantize(original.float(), spec).to(original.dtype)
        try:
            _, kl, nll = _score(model, chunks, reference)
        finally:
            linear.weight.data = original
        match = re.search(r"\.(\d+)\.", name)
        rows.append(LayerSensitivity(name, int(match[1]) if match else None, name.rsplit(".", 1)[-1],
                                     original.numel(), kl, float(torch.exp(torch.tensor(nll - ref_nll)))))
        if progress:
            progress(number + 1, len(linears), name)
    return sorted(rows, key=lambda r: r.kl, reverse=True)


def mixed_precision_plan(rows: list[LayerSensitivity], shapes: dict[str, tuple[int, int]], low: str, high: str,
                         budget_bpw: float) -> MixedPlan:
    """Greedy: upgrade layers from `low` to `high` in order of KL removed per extra bit, while the
    average bits per weight over all these linears stays within the budget."""
    low_spec, high_spec = parse_spec(low), parse_spec(high)
    size = {n: shapes[n][0] * shapes[n][1] for n in shapes}
    bits = {n: bits_per_weight(low_spec, *shapes[n]) * size[n] for n in shapes}
    total_weights = sum(size.values())
    floor = sum(bits.values()) / total_weights
    if budget_bpw < floor:
        raise ValueError(f"budget {budget_bpw} bits/weight is below {low} alone ({floor:.3f})")
    extra = {n: bits_per_weight(high_spec, *shapes[n]) * size[n] - bits[n] for n in shapes}
    order = sorted((r for r in rows if r.name in shapes), key=lambda r: r.kl / max(extra[r.name], 1e-9),
                   reverse=True)
    used = sum(bits.values())
    overrides = {}
    for row in order:
        if (used + extra[row.name]) / total_weights <= budget_bpw:
            overrides[row.name] = high
            used += extra[row.name]
    return MixedPlan(low, high, budget_bpw, used / total_weights, overrides)


def plan_kl(model: nn.Module, ids: torch.Tensor, format_for, window: int = 256, bos_id: int | None = None) -> float:
    """Mean KL of the model with every target linear fake-quantized per `format_for(name)`."""
    chunks = _windows(ids, window, bos_id)
    reference, _, _ = _score(model, chunks, None)
    saved = {}
    try:
        for name, linear in target_linears(model):
            saved[name] = linear.weight.data
            linear.weight.data = fake_quantize(linear.weight.data.float(), parse_spec(format_for(name)))
        _, kl, _ = _score(model, chunks, reference)
    finally:
        for name, linear in target_linears(model):
            if name in saved:
                linear.weight.data = saved[name]
    return kl
