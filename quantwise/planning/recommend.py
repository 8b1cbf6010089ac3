"""`recommend`: from a latency SLO, daily traffic, an accuracy budget and candidate GPUs, a ranked
list of serving plans with the reasons, following the lesson's decision flow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..hardware.catalog import GPU
from ..hardware.support import ComputePath
from ..models import ModelArch
from .assumptions import PlannerAssumptions
from .plan import DAYS_PER_MONTH, SECONDS_PER_DAY, TP_DEGREES, monthly_cost, replicas_needed
from .precisions import PRECISIONS, PlanPrecision
from .quality import QualityEstimate, estimate_quality
from .roofline import Deployment

DEFAULT_RECOMMEND_PRECISIONS = ("fp16", "fp8", "int8", "int8-wo", "int4", "int3", "nf4")


@dataclass(frozen=True)
class RecommendRequest:
    arch: ModelArch
    gpus: list[GPU]
    slo_ms: float
    tokens_per_day: float
    context: int = 4096
    precisions: list[PlanPrecision] = field(default_factory=lambda: [PRECISIONS[p] for p in
                                                                     DEFAULT_RECOMMEND_PRECISIONS])
    kv_dtypes: tuple[str, ...] = ("fp16",)
    max_quality_loss_pct: float | None = None
    peak_to_average: float = 1.0        # size replicas for peak traffic = average x this
    quantize_lm_head: bool = False
    assumptions: PlannerAssumptions = PlannerAssumptions()

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ValueError(f"the latency SLO must be positive, got {self.slo_ms} ms")
        if self.tokens_per_day < 0:
            raise ValueError(f"traffic must be >= 0 tokens/day, got {self.tokens_per_day:g}")
        if self.peak_to_average < 1:
            raise ValueError("peak-to-average ratio must be >= 1")
        if self.max_quality_loss_pct is not None and self.max_quality_loss_pct < 0:
            raise ValueError("the quality-loss budget must be >= 0 percent")
        if not self.gpus:
            raise ValueError("no GPUs to plan on")

    @property
    def tokens_per_s_needed(self) -> float:
        return self.tokens_per_day / SECONDS_PER_DAY * self.peak_to_average


@dataclass(frozen=True)
class Candidate:
    precision: str
    precision_label: str
    method: str
    gpu: str
    gpu_name: str
    gpus_per_replica: int
    replicas: int
    total_gpus: int
    kv_dtype: str
    batch: int                  # operating batch per replica for the traffic
    max_batch_in_slo: int       # largest batch that meets the SLO and fits memory
    max_batch_memory: int
    ms_per_token: float         # at the operating batch
    ms_per_token_batch1: float
    tokens_per_s_capacity: float  # per replica at max_batch_in_slo
    usd_per_month: float
    usd_per_mtok: float         # at the requested traffic
    weights_gb: float
    capacity_gb: float
    bound: str
    matmul_path: str
    quality: QualityEstimate
    price_unconfirmed: bool = False
    alternatives: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    model: str
    slo_ms: float
    tokens_per_day: float
    tokens_per_s_needed: float
    context: int
    plans: list[Candidate]
    best_per_gpu: list[Candidate]  # the cheapest feasible plan on each GPU type, cheapest first
    closest: list[Candidate]     # when nothing meets the SLO: the fastest plans and what they lack
    needed: str | None
    rejected_for_quality: int


def _largest(predicate: Callable[[int], bool], low: int, high: int) -> int:
    """Largest n in [low, high] with predicate(n), predicate monotone true-then-false; low-1 if none."""
    if high < low or not predicate(low):
        return low - 1
    while low < high:
        mid = (low + high + 1) // 2
        if predicate(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _smallest(predicate: Callable[[int], bool], low: int, high: int) -> int:
    """Smallest n in [low, high] with predicate(n), predicate monotone false-then-true."""
    while low < high:
        mid = (low + high) // 2
        if predicate(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _candidate(dep: Deployment, request: RecommendRequest) -> Candidate | None:
    """Cheapest use of this deployment that meets the SLO and serves the traffic, or None."""
    slo_s = request.slo_ms / 1e3
    limit = dep.max_batch
    if limit < 1:
        return None

    def in_slo(batch: int) -> bool:
        return dep.step_time(batch).total_s <= slo_s

    best_batch = _largest(in_slo, 1, limit)
    probe = max(best_batch, 1)
    capacity = probe / dep.step_time(probe).total_s
    replicas = replicas_needed(request.tokens_per_s_needed, capacity)
    per_replica = request.tokens_per_s_needed / replicas
    batch = _smallest(lambda b: b / dep.step_time(b).total_s >= per_replica, 1, probe)
    cost = monthly_cost(dep.gpu, dep.tp, dep.assumptions) * replicas
    tokens_month = max(request.tokens_per_day, 1.0) * DAYS_PER_MONTH
    step = dep.step_time(batch)
    path = "weight-only dequantize" if dep.precision.weight_only else dep.matmul_path.value
    return Candidate(
        precision=dep.precision.id, precision_label=dep.precision.label, method="", gpu=dep.gpu.id,
        gpu_name=dep.gpu.name, gpus_per_replica=dep.tp, replicas=replicas, total_gpus=replicas * dep.tp,
        kv_dtype=dep.kv_dtype, batch=batch, max_batch_in_slo=max(best_batch, 0), max_batch_memory=limit,
        ms_per_token=step.total_s * 1e3, ms_per_token_batch1=dep.step_time(1).total_s * 1e3,
        tokens_per_s_capacity=capacity, usd_per_month=cost, usd_per_mtok=cost / tokens_month * 1e6,
        weights_gb=dep.weight_bytes / 1e9, capacity_gb=dep.usable_bytes / 1e9, bound=step.bound,
        matmul_path=path, quality=QualityEstimate(None, "none", "", None),
        price_unconfirmed="price_per_hour" in dep.gpu.unconfirmed)


def _with_method(candidate: Candidate, arch: ModelArch, precision: PlanPrecision,
                 budget: float | None) -> Candidate | None:
    """Attach the best-quality method within the budget; None if no method fits the budget."""
    options = [(m, estimate_quality(arch, precision.id, m)) for m in precision.methods]
    options.sort(key=lambda mq: (mq[1].loss_pct is None, mq[1].loss_pct or 0.0))
    allowed = [(m, q) for m, q in options if budget is None or (q.loss_pct is not None and q.loss_pct <= budget)]
    if not allowed:
        return None
    method, quality = allowed[0]
    others = tuple(f"{m} ({q.describe.split(',')[0]})" for m, q in allowed[1:])
    return _replace(candidate, method=method, quality=quality, alternatives=others)


def _replace(candidate: Candidate, **changes) -> Candidate:
    import dataclasses
    return dataclasses.replace(candidate, **changes)


def recommend(request: RecommendRequest, top: int = 10) -> Recommendation:
    feasible: list[Candidate] = []
    fastest: list[tuple[float, Deployment]] = []
    rejected = 0
    for gpu in request.gpus:
        for precision in request.precisions:
            for kv_dtype in request.kv_dtypes:
                best = None
                for tp in TP_DEGREES:
                    dep = Deployment(request.arch, gpu, precision, tp, request.context, kv_dtype,
                                     request.quantize_lm_head, request.assumptions)
                    if dep.max_batch < 1:
                        continue
                    fastest.append((dep.step_time(1).total_s, dep))
                    if dep.step_time(1).total_s * 1e3 > request.slo_ms:
                        continue
                    cand = _candidate(dep, request)
                    if cand and (best is None or cand.usd_per_month < best.usd_per_month):
                        best = cand
                if best is None:
                    continue
                with_method = _with_method(best, request.arch, precision, request.max_quality_loss_pct)
                if with_method is None:
                    rejected += 1
                    continue
                feasible.append(with_method)
    feasible.sort(key=lambda c: (c.usd_per_month, c.quality.loss_pct if c.quality.loss_pct is not None else 1e9,
                                 c.ms_per_token))
    ranked = [_replace(c, reasons=tuple(explain(c, request))) for c in feasible[:top]]
    best_per_gpu = list({c.gpu: c for c in reversed(feasible)}.values())
    best_per_gpu.sort(key=lambda c: c.usd_per_month)
    closest, needed = [], None
    if not ranked:
        fastest.sort(key=lambda pair: pair[0])
        for seconds, dep in fastest[:3]:
            cand = _candidate(dep, request)
            if cand:
                closest.append(_replace(cand, ms_per_token=seconds * 1e3, reasons=tuple(explain(cand, request))))
        needed = _what_would_be_needed(request, fastest, rejected)
    return Recommendation(request.arch.name, request.slo_ms, request.tokens_per_day, request.tokens_per_s_needed,
                          request.context, ranked, best_per_gpu, closest, needed, rejected)


def _what_would_be_needed(request: RecommendRequest, fastest: list[tuple[float, Deployment]],
                          rejected: int) -> str:
    if rejected and not fastest:
        return "no plan fits in memory"
    if not fastest:
        return ("the model does not fit on 8 of any listed GPU at this context; shorten the context, "
                "quantize further, or add larger GPUs")
    seconds, dep = fastest[0]
    if seconds * 1e3 <= request.slo_ms:
        return (f"plans meet the latency SLO but none is within the quality budget of "
                f"{request.max_quality_loss_pct}% perplexity increase; relax the budget or measure your model")
    step = dep.step_time(1)
    floor_ms = (step.comm_s + step.overhead_s) * 1e3
    if floor_ms >= request.slo_ms:
        return (f"even the fastest plan spends {floor_ms:.1f} ms per token on communication and per-step "
                f"overhead, above the {request.slo_ms:g} ms SLO")
    speedup = max(step.memory_s, step.compute_s) / (request.slo_ms / 1e3 - step.comm_s - step.overhead_s)
    return (f"the fastest plan ({dep.precision.label} on {dep.tp}x {dep.gpu.name}) needs {seconds * 1e3:.1f} ms "
            f"per token at batch 1; meeting {request.slo_ms:g} ms needs about {speedup:.1f}x its effective "
            f"{step.bound} throughput (more or faster GPUs, or fewer bits)")


def explain(c: Candidate, request: RecommendRequest) -> list[str]:
    """Plain sentences in the lesson's decision order: regime, compute path, memory, accuracy, cost."""
    reasons = []
    if c.bound == "memory":
        reasons.append(f"Decode at batch {c.batch} is memory-bound: every token streams {c.weights_gb:.1f} GB of "
                       f"weights plus KV cache, so fewer bits per weight ({c.precision_label}) is what buys speed: "
                       f"{c.ms_per_token:.1f} ms/token (batch 1: {c.ms_per_token_batch1:.1f} ms).")
    else:
        reasons.append(f"Decode at batch {c.batch} is compute-bound ({c.ms_per_token:.1f} ms/token): tensor-core "
                       f"throughput, not bandwidth, limits it.")
    if c.matmul_path == ComputePath.NATIVE.value:
        reasons.append(f"{c.gpu_name} multiplies {c.precision_label} natively on tensor cores.")
    elif c.matmul_path == "weight-only dequantize":
        reasons.append(f"{c.precision_label} weights are dequantized to FP16 inside the kernel: the bandwidth saving "
                       f"is real, but the dequantization costs compute as the batch grows.")
    else:
        reasons.append(f"{c.gpu_name} has no {c.precision} tensor cores: weights are dequantized to FP16, "
                       f"so only the bandwidth saving remains.")
    headroom = c.capacity_gb - c.weights_gb
    reasons.append(f"{c.gpus_per_replica}x {c.gpu_name} leave {headroom:.1f} GB beside the weights: KV cache for up to "
                   f"{c.max_batch_memory} sequences of {request.context} tokens ({c.kv_dtype} KV); "
                   f"{c.max_batch_in_slo} fit the {request.slo_ms:g} ms SLO.")
    if c.quality.loss_pct is None:
        reasons.append("Accuracy: no published prior; measure it with `quantwise eval`.")
    elif c.quality.loss_pct == 0:
        reasons.append("Accuracy: reference precision, no quantization loss.")
    else:
        reasons.append(f"Accuracy risk ({c.method}): {c.quality.describe}.")
    reasons.append(f"{c.replicas} replica(s) serve {request.tokens_per_s_needed:,.0f} tokens/s (capacity "
                   f"{c.tokens_per_s_capacity:,.0f} tokens/s each): ${c.usd_per_month:,.0f}/month, "
                   f"${c.usd_per_mtok:,.2f} per million tokens at this traffic"
                   + (" (the catalogue marks this GPU's price unconfirmed)." if c.price_unconfirmed else "."))
    return reasons
