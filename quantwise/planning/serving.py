"""Serving a workload: continuous batching with chunked prefill, TTFT and TPOT at a concurrency,
the largest concurrency meeting the targets, and what binds it.

Steady state of one replica holding C sequences (Little's law): every step decodes one token for
each of the C sequences, and since a sequence leaves after `output_len` steps and a new prompt of
`input_len` tokens replaces it, each step also prefills on average C x input_len / output_len
prompt tokens in chunks (vLLM / TensorRT-LLM chunked prefill). The mean step time is the TPOT,
interference included. The step's token budget (engine's max batched tokens) caps C, and so does
the KV cache of C sequences at their mean length (prompt + half the answer) beside the weights.

TTFT at load = the prompt's chunks (ceil-free: prompt / chunk steps of a step carrying one chunk)
+ the mean wait for the prefill budget (an M/D/1 queue at the budget's utilisation) + half a step
(arrival mid-step). Unloaded TTFT = the prompt in one pass on an idle replica.
Static batching (plain `generate`): a batch of C prefills together and decodes to the end before
the next starts; a request waits on average half a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import QuantwiseError
from .roofline import Deployment

SECONDS_PER_DAY = 86_400.0
# Peak traffic over the daily mean. Diurnal LLM traffic peaks at about 2-3x its mean (the issue's
# serving teams; Azure LLM inference traces, Patel et al. "Splitwise" 2024, show similar swings);
# 2 is the low end, so replicas run at <= 50% average utilisation with headroom for the peak.
DEFAULT_PEAK_FACTOR = 2.0


@dataclass(frozen=True)
class Workload:
    """input_len / output_len: mean tokens per request; requests_per_s: daily average;
    peak_factor: size for average x this; ttft_ms / tpot_ms: targets (None: no target)."""

    input_len: int
    output_len: int
    requests_per_s: float
    peak_factor: float = DEFAULT_PEAK_FACTOR
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise QuantwiseError(f"--{name.replace('_', '-')} must be a positive number of tokens, got {value}")
        if self.requests_per_s < 0:
            raise QuantwiseError(f"traffic must be >= 0 requests/s, got {self.requests_per_s:g}")
        if self.peak_factor < 1:
            raise QuantwiseError(f"--peak-factor must be >= 1 (peak over average), got {self.peak_factor:g}")
        for name in ("ttft_ms", "tpot_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise QuantwiseError(f"--{name.replace('_', '-')} must be positive, got {value:g}")

    @classmethod
    def from_tokens_per_day(cls, tokens_per_day: float, input_len: int, output_len: int, **kw) -> Workload:
        if tokens_per_day < 0:
            raise QuantwiseError(f"traffic must be >= 0 tokens/day, got {tokens_per_day:g}")
        if not isinstance(output_len, int) or output_len < 1:
            raise QuantwiseError(f"--output-len must be a positive number of tokens, got {output_len}")
        return cls(input_len, output_len, tokens_per_day / SECONDS_PER_DAY / output_len, **kw)

    @property
    def mean_context(self) -> float:
        """KV tokens a decoding sequence holds on average: its prompt plus half its answer."""
        return self.input_len + self.output_len / 2

    @property
    def output_tokens_per_s(self) -> float:
        return self.requests_per_s * self.output_len

    @property
    def peak_output_tokens_per_s(self) -> float:
        return self.output_tokens_per_s * self.peak_factor

    @property
    def output_tokens_per_day(self) -> float:
        return self.output_tokens_per_s * SECONDS_PER_DAY


@dataclass(frozen=True)
class ServingPoint:
    """One replica at concurrency C. Times in seconds; throughput in output tokens/s."""

    concurrency: int
    tpot_s: float                 # mean step time, prefill interference included
    decode_only_s: float          # the same step without prefill chunks
    prefill_tokens_per_step: float
    prefill_utilisation: float    # share of the step budget's prefill room in use
    ttft_s: float                 # at this load
    ttft_unloaded_s: float
    output_tokens_per_s: float
    bound: str                    # memory | compute, of the mean step
    # Share of the replica's time that prefill adds (prices input tokens): continuous batching, the
    # step time beyond decode alone; static, the batch's prefill over its whole cycle.
    prefill_share: float = 0.0


def kv_concurrency(dep: Deployment, workload: Workload) -> int:
    """Sequences whose KV cache at their mean length fits beside the weights (0: none)."""
    capacity = dep.kv_capacity_bytes
    if capacity <= 0:
        return 0
    return int(capacity // (dep.kv_bytes_per_token * workload.mean_context))


def budget_concurrency(dep: Deployment, workload: Workload, static: bool) -> int:
    """Largest C whose decode tokens plus mean prefill tokens stay strictly inside the step budget."""
    if static:
        return 1 << 20
    budget = dep.assumptions.prefill_chunk_tokens
    per_sequence = 1.0 + workload.input_len / workload.output_len
    return max(0, int((budget - 1e-9) / per_sequence))


def serving_point(dep: Deployment, workload: Workload, concurrency: int, static: bool = False) -> ServingPoint:
    """TPOT, TTFT and throughput of one replica holding `concurrency` sequences."""
    c, length, ctx = concurrency, workload.input_len, workload.mean_context
    decode_only = dep.mixed_step(c, ctx, 0.0, 0.0)
    unloaded = dep.prefill_time_s(length)
    if static:
        prefill_all = dep.mixed_step(0.0, 0.0, float(c * length), length / 2, logits=float(c)).total_s
        cycle = prefill_all + workload.output_len * decode_only.total_s
        return ServingPoint(c, decode_only.total_s, decode_only.total_s, 0.0, 0.0, prefill_all + cycle / 2,
                            unloaded, c * workload.output_len / cycle, decode_only.bound, prefill_all / cycle)
    prefill = c * length / workload.output_len
    step = dep.mixed_step(c, ctx, prefill, length / 2)
    room = dep.assumptions.prefill_chunk_tokens - c
    utilisation = prefill / room if room > 0 else float("inf")
    ttft = float("inf") if utilisation >= 1 else _loaded_ttft(dep, workload, c, utilisation, room, step.total_s)
    return ServingPoint(c, step.total_s, decode_only.total_s, prefill, utilisation, ttft, unloaded,
                        c / step.total_s, step.bound, max(0.0, 1.0 - decode_only.total_s / step.total_s))


@dataclass(frozen=True)
class ServingLimit:
    """The operating point at the largest concurrency meeting the targets (None: none does) and
    what stops the concurrency from growing: memory | step budget | TPOT | TTFT."""

    point: ServingPoint | None
    binding: str
    kv_limit: int
    budget_limit: int
    why: str


def _largest(predicate: Callable[[int], bool], low: int, high: int) -> int:
    """Largest n in [low, high] with predicate(n), predicate monotone true-then-false; low-1 if none."""
    if high < low or not predicate(low):
        return low - 1
    if predicate(high):  # common when memory binds: one evaluation instead of a search
        return high
    while low < high:
        mid = (low + high + 1) // 2
        if predicate(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _misses(point: ServingPoint, workload: Workload, use_targets: bool) -> str | None:
    """The first target this point misses (TPOT, then TTFT), or None."""
    if point.ttft_s == float("inf"):
        return "step budget"
    if not use_targets:
        return None
    if workload.tpot_ms is not None and point.tpot_s * 1e3 > workload.tpot_ms:
        return "TPOT"
    if workload.ttft_ms is not None and point.ttft_s * 1e3 > workload.ttft_ms:
        return "TTFT"
    return None


def _miss(dep: Deployment, workload: Workload, c: int, static: bool, use_targets: bool) -> str | None:
    """What concurrency c misses (step budget, TPOT, TTFT) or None, computing only what the answer
    needs: the search's inner loop (a full grid asks this ~10^5 times)."""
    if static:
        return _misses(serving_point(dep, workload, c, static), workload, use_targets)
    length = workload.input_len
    prefill = c * length / workload.output_len
    room = dep.assumptions.prefill_chunk_tokens - c
    if prefill >= room:
        return "step budget"
    if not use_targets:
        return None
    step = dep.mixed_step(c, workload.mean_context, prefill, length / 2).total_s
    if workload.tpot_ms is not None and step * 1e3 > workload.tpot_ms:
        return "TPOT"
    if workload.ttft_ms is not None and _loaded_ttft(dep, workload, c, prefill / room, room, step) * 1e3 \
            > workload.ttft_ms:
        return "TTFT"
    return None


def _loaded_ttft(dep: Deployment, workload: Workload, c: int, utilisation: float, room: float,
                 step_s: float) -> float:
    """A prompt's chunks at the step's prefill room, times the M/D/1 wait factor at that room's
    utilisation, plus half a mean step (it arrives mid-step)."""
    length = workload.input_len
    chunk = min(float(length), room)
    service = length / chunk * dep.mixed_step(c, workload.mean_context, chunk, length / 2).total_s
    return service * (1 + utilisation / (2 * (1 - utilisation))) + step_s / 2


def best_concurrency(dep: Deployment, workload: Workload, static: bool = False,
                     use_targets: bool = True) -> ServingLimit:
    """The largest concurrency whose TPOT and TTFT meet the workload's targets (every target when
    use_targets; none, i.e. the memory-limited max throughput, when not)."""
    kv_limit = kv_concurrency(dep, workload)
    budget_limit = budget_concurrency(dep, workload, static)
    cap = min(kv_limit, budget_limit)
    if kv_limit < 1:
        return ServingLimit(None, "memory", kv_limit, budget_limit,
                            f"weights leave no room for one sequence of {workload.mean_context:,.0f} tokens")
    if budget_limit < 1:
        return ServingLimit(None, "step budget", kv_limit, budget_limit,
                            f"a {workload.input_len}-token prompt per {workload.output_len} answer tokens "
                            f"overflows the {dep.assumptions.prefill_chunk_tokens}-token step budget")
    best = _largest(lambda c: _miss(dep, workload, c, static, use_targets) is None, 1, cap)
    if best < 1:
        first = serving_point(dep, workload, 1, static)
        miss = _misses(first, workload, use_targets)
        return ServingLimit(None, miss or "memory", kv_limit, budget_limit, _why_none(first, workload, miss))
    if best == cap:
        binding = "memory" if kv_limit <= budget_limit else "step budget"
    else:
        binding = _miss(dep, workload, best + 1, static, use_targets) or "memory"
    return ServingLimit(serving_point(dep, workload, best, static), binding, kv_limit, budget_limit, "")


def _why_none(first: ServingPoint, workload: Workload, miss: str | None) -> str:
    if miss == "TPOT":
        return f"TPOT at concurrency 1 is {first.tpot_s * 1e3:.1f} ms > {workload.tpot_ms:g} ms"
    if miss == "TTFT":
        return (f"TTFT at concurrency 1 is {first.ttft_s * 1e3:.0f} ms > {workload.ttft_ms:g} ms "
                f"(unloaded prefill {first.ttft_unloaded_s * 1e3:.0f} ms)")
    return "the step budget cannot hold one sequence's prefill"
