"""`recommend`: from a workload (prompt and answer lengths, traffic, TTFT and TPOT targets), an
accuracy budget, engines and candidate GPUs, a ranked list of serving plans with the reasons.

Every GPU x precision x KV dtype x engine x tensor-parallel degree is tried; each gets its largest
concurrency meeting the targets (serving.best_concurrency), replicas for the peak traffic, and cost.
Datacenter GPUs are ranked by default; the cheapest plan on other classes is shown apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import QuantwiseError
from ..hardware.catalog import GPU, GPU_CLASSES
from ..hardware.support import ComputePath
from ..models import ModelArch
from .assumptions import PlannerAssumptions
from .engines import EngineProfile
from .plan import DAYS_PER_MONTH, TP_DEGREES, monthly_cost, replicas_needed, supported_combinations, tp_problem
from .precisions import PRECISIONS, PlanPrecision
from .profile import Profile
from .quality import QualityEstimate, estimate_quality
from .roofline import Deployment
from .serving import SECONDS_PER_DAY, ServingLimit, ServingPoint, Workload, best_concurrency, serving_point

# More GPUs than any one deployment holds: the largest publicly reported clusters (xAI's Colossus,
# Meta's two 24k-GPU clusters) hold ~10^5 GPUs, so a plan past this is a typo in the traffic.
MAX_DEPLOYMENT_GPUS = 100_000

DEFAULT_RECOMMEND_PRECISIONS = ("fp16", "fp8", "int8", "int8-wo", "int4", "int3", "nf4", "nvfp4")


@dataclass(frozen=True)
class RecommendRequest:
    arch: ModelArch
    gpus: list[GPU]
    workload: Workload
    engines: list[EngineProfile]
    precisions: list[PlanPrecision] = field(default_factory=lambda: [PRECISIONS[p] for p in
                                                                     DEFAULT_RECOMMEND_PRECISIONS])
    kv_dtypes: tuple[str, ...] = ("fp16",)
    max_quality_loss_pct: float | None = None
    quantize_lm_head: bool = False
    assumptions: PlannerAssumptions = PlannerAssumptions()
    rank_classes: tuple[str, ...] = ("datacenter",)   # GPU classes ranked; the others shown apart
    tp_degrees: tuple[int, ...] = TP_DEGREES
    # (gpu id, engine id) -> assumptions fitted by `quantwise calibrate`; None: engine defaults
    profile: Profile | None = None

    def __post_init__(self) -> None:
        if self.max_quality_loss_pct is not None and self.max_quality_loss_pct < 0:
            raise QuantwiseError("the quality-loss budget must be >= 0 percent")
        if not self.gpus:
            raise QuantwiseError("no GPUs to plan on")
        if not self.engines:
            raise QuantwiseError("no engines to plan with")
        unknown = [c for c in self.rank_classes if c not in GPU_CLASSES]
        if unknown:
            raise QuantwiseError(f"unknown GPU class {unknown[0]!r}; known: {', '.join(GPU_CLASSES)}")
        if self.workload.requests_per_s <= 0:
            raise QuantwiseError("recommend needs traffic above zero (--requests-per-s or --tokens-per-day) to size "
                                 "replicas and price tokens; `quantwise plan` answers per replica without it")


@dataclass(frozen=True)
class Candidate:
    precision: str
    precision_label: str
    method: str
    gpu: str
    gpu_name: str
    gpu_class: str
    availability: str
    engine: str
    engine_name: str
    kernel: str                 # fast | slow
    gpus_per_replica: int
    replicas: int
    total_gpus: int
    kv_dtype: str
    concurrency: int            # largest concurrency per replica meeting the targets
    concurrency_memory: int     # KV cache limit
    binding: str                # memory | step budget | TPOT | TTFT
    tpot_ms: float              # at that concurrency, prefill interference included
    tpot_decode_only_ms: float
    ttft_ms: float              # at that concurrency
    ttft_unloaded_ms: float
    prefill_utilisation: float
    tokens_per_s_replica: float
    usd_per_month: float
    usd_per_m_output: float     # at the average traffic, decode's share of the cost
    usd_per_m_input: float      # prefill's share of the cost per million prompt tokens
    weights_gb: float
    kv_free_gb: float
    bound: str
    matmul_path: str
    quality: QualityEstimate
    price_unconfirmed: bool = False
    alternatives: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    model: str
    workload: Workload
    plans: list[Candidate]
    best_per_gpu: list[Candidate]       # cheapest ranked plan on each GPU type, cheapest first
    other_class_option: Candidate | None  # cheapest plan on an unranked class, when cheaper
    closest: list[Candidate]            # when nothing meets the targets: the nearest misses
    needed: str | None
    rejected_for_quality: int
    refused: tuple[str, ...]            # engine x precision x GPU combinations no engine kernel runs


def _candidate(dep: Deployment, limit: ServingLimit, engine: EngineProfile, kernel: str,
               workload: Workload) -> Candidate:
    point = limit.point
    replicas = replicas_needed(workload.peak_output_tokens_per_s, point.output_tokens_per_s)
    cost = monthly_cost(dep.gpu, dep.tp, dep.assumptions) * replicas
    seconds_month = SECONDS_PER_DAY * DAYS_PER_MONTH
    out_month = max(workload.output_tokens_per_s * seconds_month, 1.0)
    in_month = max(workload.requests_per_s * workload.input_len * seconds_month, 1.0)
    share_in = point.prefill_share
    path = "weight-only dequantize" if dep.precision.weight_only else dep.matmul_path.value
    return Candidate(
        precision=dep.precision.id, precision_label=dep.precision.label, method="", gpu=dep.gpu.id,
        gpu_name=dep.gpu.name, gpu_class=dep.gpu.gpu_class, availability=dep.gpu.availability, engine=engine.id,
        engine_name=engine.name,
        kernel=kernel, gpus_per_replica=dep.tp, replicas=replicas, total_gpus=replicas * dep.tp,
        kv_dtype=dep.kv_dtype, concurrency=point.concurrency, concurrency_memory=limit.kv_limit,
        binding=limit.binding, tpot_ms=point.tpot_s * 1e3, tpot_decode_only_ms=point.decode_only_s * 1e3,
        ttft_ms=point.ttft_s * 1e3, ttft_unloaded_ms=point.ttft_unloaded_s * 1e3,
        prefill_utilisation=point.prefill_utilisation, tokens_per_s_replica=point.output_tokens_per_s,
        usd_per_month=cost, usd_per_m_output=cost * (1 - share_in) / out_month * 1e6,
        usd_per_m_input=cost * share_in / in_month * 1e6, weights_gb=dep.weight_bytes / 1e9,
        kv_free_gb=max(dep.kv_capacity_bytes, 0) / 1e9, bound=point.bound, matmul_path=path,
        quality=QualityEstimate(None, "none", "", None),
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
    return dataclasses.replace(candidate, method=method, quality=quality, alternatives=others)


@dataclass
class _Search:
    """What one pass over the grid collects."""

    feasible: list[Candidate] = field(default_factory=list)
    misses: list[tuple[float, Deployment, ServingLimit, EngineProfile, str]] = field(default_factory=list)
    fitting: list[Deployment] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    rejected: int = 0
    tried: int = 0      # GPU x engine x precision combinations an engine runs


def _search(request: RecommendRequest) -> _Search:
    found, workload = _Search(), request.workload
    context = max(1, round(workload.mean_context))
    for combo in supported_combinations(request, found.refused):
        found.tried += 1
        gpu, engine, precision, kernel, assumptions = (combo.gpu, combo.engine, combo.precision, combo.kernel,
                                                       combo.assumptions)
        for kv_dtype in request.kv_dtypes:
            best = None
            for tp in sorted(request.tp_degrees):
                if tp_problem(request.arch, tp):
                    continue  # the model's heads do not split over tp GPUs
                if best is not None and monthly_cost(gpu, tp, assumptions) >= best.usd_per_month:
                    break  # one replica of this degree already costs more than the best plan
                dep = Deployment(request.arch, gpu, precision, tp, context, kv_dtype, request.quantize_lm_head,
                                 assumptions, slow_kernel=kernel == "slow",
                                 fp16_accumulate=engine.fp16_accumulate)
                limit = best_concurrency(dep, workload, engine.scheduler == "static")
                if limit.kv_limit >= 1:
                    found.fitting.append(dep)
                if limit.point is None:
                    if limit.kv_limit >= 1:
                        found.misses.append((dep.step_time(1).total_s, dep, limit, engine, kernel))
                    continue
                cand = _candidate(dep, limit, engine, kernel, workload)
                if best is None or cand.usd_per_month < best.usd_per_month:
                    best = cand
            if best is None:
                continue
            with_method = _with_method(best, request.arch, precision, request.max_quality_loss_pct)
            if with_method is None:
                found.rejected += 1
            else:
                found.feasible.append(with_method)
    return found


def _sort_key(c: Candidate):
    return (c.usd_per_month, c.quality.loss_pct if c.quality.loss_pct is not None else 1e9, c.tpot_ms)


def recommend(request: RecommendRequest, top: int = 10) -> Recommendation:
    found = _search(request)
    if not found.feasible and not found.misses and not found.fitting:
        # nothing holds one request: bad input (a refused format, or a length no GPU set can hold)
        raise QuantwiseError(found.refused[0] if not found.tried else _what_would_be_needed(request, found))
    _check_ttft_reachable(request, found.fitting)
    feasible = sorted(found.feasible, key=_sort_key)
    if feasible and min(c.total_gpus for c in feasible) > MAX_DEPLOYMENT_GPUS:
        c = min(feasible, key=lambda c: c.total_gpus)
        raise QuantwiseError(
            f"{request.workload.requests_per_s:,.4g} requests/s needs at least {c.total_gpus:,} GPUs "
            f"({c.replicas:,} replicas of {c.gpus_per_replica} {c.gpu}), more than any deployment "
            f"(~{MAX_DEPLOYMENT_GPUS:,}); check the traffic figure")
    ranked_pool = [c for c in feasible if c.gpu_class in request.rank_classes]
    others = [c for c in feasible if c.gpu_class not in request.rank_classes]
    ranked = [dataclasses.replace(c, reasons=tuple(explain(c, request))) for c in ranked_pool[:top]]
    best_per_gpu = sorted({c.gpu: c for c in reversed(ranked_pool)}.values(), key=lambda c: c.usd_per_month)
    other = None
    if others and (not ranked_pool or others[0].usd_per_month < ranked_pool[0].usd_per_month):
        other = dataclasses.replace(others[0], reasons=tuple(explain(others[0], request)))
    closest, needed = [], None
    if not ranked:
        found.misses.sort(key=lambda m: m[0])
        for _, dep, limit, engine, kernel in found.misses[:3]:
            point = dataclasses.replace(limit, point=_first_point(dep, request.workload, engine))
            cand = _with_method(_candidate(dep, point, engine, kernel, request.workload), request.arch,
                                dep.precision, None)  # never a blank method: the best-quality one
            closest.append(dataclasses.replace(cand, binding=limit.binding, reasons=(limit.why,)))
        needed = _what_would_be_needed(request, found)
    return Recommendation(request.arch.name, request.workload, ranked, best_per_gpu, other, closest, needed,
                          found.rejected, tuple(dict.fromkeys(found.refused)))


def _first_point(dep: Deployment, workload: Workload, engine: EngineProfile) -> ServingPoint:
    return serving_point(dep, workload, 1, engine.scheduler == "static")


def _check_ttft_reachable(request: RecommendRequest, fitting: list[Deployment]) -> None:
    """Refuse, in one line, a TTFT target below every plan's unloaded prefill time, saying what would do."""
    workload = request.workload
    if workload.ttft_ms is None or not fitting:
        return
    fastest = min(fitting, key=lambda d: d.prefill_time_s(workload.input_len))
    floor_ms = fastest.prefill_time_s(workload.input_len) * 1e3
    if floor_ms <= workload.ttft_ms:
        return
    longest = _longest_prompt(fastest, workload.ttft_ms / 1e3)
    prompt = f"prompts of at most {longest:,} tokens" if longest else "no prompt length"
    raise QuantwiseError(
        f"no plan can meet TTFT {workload.ttft_ms:g} ms: a {workload.input_len:,}-token prompt alone takes at least "
        f"{floor_ms:,.0f} ms to prefill (fastest: {fastest.precision.label} on {fastest.tp}x {fastest.gpu.name}); "
        f"a TTFT target >= {floor_ms:,.0f} ms or {prompt} would")


def _longest_prompt(dep: Deployment, seconds: float) -> int:
    low, high = 0, 1 << 20
    while low < high:
        mid = (low + high + 1) // 2
        if dep.prefill_time_s(mid) <= seconds:
            low = mid
        else:
            high = mid - 1
    return low


def _what_would_be_needed(request: RecommendRequest, found: _Search) -> str:
    if found.rejected and not found.misses:
        return (f"plans meet the targets but none is within the quality budget of "
                f"{request.max_quality_loss_pct}% perplexity increase; relax the budget or measure your model")
    if not found.fitting:
        return (f"{request.arch.name} with the KV cache of one {request.workload.mean_context:,.0f}-token sequence "
                f"(prompt + half the answer) fits no listed GPU, even {max(request.tp_degrees)} per replica; shorten "
                "the requests, quantize further, or add larger GPUs")
    seconds, dep, limit, _, _ = found.misses[0]
    workload = request.workload
    if limit.binding == "TPOT":
        step = dep.step_time(1)
        floor_ms = (step.comm_s + step.overhead_s) * 1e3
        if floor_ms >= workload.tpot_ms:
            return (f"even the fastest plan spends {floor_ms:.1f} ms per step on communication and per-step "
                    f"overhead, above the {workload.tpot_ms:g} ms TPOT target")
        speedup = max(step.memory_s, step.compute_s) / (workload.tpot_ms / 1e3 - step.comm_s - step.overhead_s)
        return (f"the fastest plan ({dep.precision.label} on {dep.tp}x {dep.gpu.name}) needs {seconds * 1e3:.1f} ms "
                f"per token at concurrency 1; meeting {workload.tpot_ms:g} ms needs about {speedup:.1f}x its "
                f"effective {step.bound} throughput (more or faster GPUs, or fewer bits)")
    return f"the nearest plan ({dep.precision.label} on {dep.tp}x {dep.gpu.name}): {limit.why}"


def _binding_sentence(c: Candidate, request: RecommendRequest) -> str:
    w = request.workload
    if c.binding == "memory":
        return (f"Memory binds: the KV cache of {c.concurrency_memory} sequences of {w.mean_context:,.0f} tokens "
                f"(prompt + half the answer) fills the {c.kv_free_gb:.1f} GB beside the weights; at that "
                f"concurrency TPOT is {c.tpot_ms:.1f} ms and TTFT {c.ttft_ms:,.0f} ms, inside the targets.")
    if c.binding == "step budget":
        return (f"The engine's step budget binds: {c.concurrency} decode tokens plus "
                f"{c.concurrency * w.input_len / w.output_len:,.0f} prompt tokens per step fill its batched-token "
                f"limit ({c.prefill_utilisation:.0%} of the prefill room in use).")
    if c.binding == "TPOT":
        return (f"TPOT binds: at {_sequences(c.concurrency)} a step takes {c.tpot_ms:.1f} ms "
                f"(≤ {w.tpot_ms:g} ms; {c.tpot_decode_only_ms:.1f} ms without the prefill chunks it carries); "
                f"one more sequence would exceed the target. Memory would allow {c.concurrency_memory}.")
    if _static(c, request):
        return (f"TTFT binds: {c.engine_name} batches statically, so a {w.input_len:,}-token prompt waits on average "
                f"half the running batch's cycle (its prefill and all {w.output_len:,} answer tokens of "
                f"{_count(c.concurrency, 'sequence')}), then its own batch's prefill: first token in "
                f"{c.ttft_ms:,.0f} ms (≤ {w.ttft_ms:g} ms; {c.ttft_unloaded_ms:,.0f} ms unloaded); a larger batch "
                "would exceed it.")
    return (f"TTFT binds: at {_sequences(c.concurrency)} a {w.input_len:,}-token prompt waits for the "
            f"prefill budget ({c.prefill_utilisation:.0%} busy) and reaches its first token in {c.ttft_ms:,.0f} ms "
            f"(≤ {w.ttft_ms:g} ms; {c.ttft_unloaded_ms:,.0f} ms unloaded); one more sequence would exceed it.")


def _sequences(n: int) -> str:
    return f"{n} concurrent sequence" + ("" if n == 1 else "s")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _static(c: Candidate, request: RecommendRequest) -> bool:
    return any(e.id == c.engine and e.scheduler == "static" for e in request.engines)


def explain(c: Candidate, request: RecommendRequest) -> list[str]:
    """Plain sentences: what binds, regime and compute path, engine, accuracy, cost."""
    reasons = [_binding_sentence(c, request)]
    if c.bound == "memory":
        reasons.append(f"Steps are memory-bound: each streams {c.weights_gb:.1f} GB of weights plus KV cache, so "
                       f"fewer bits per weight ({c.precision_label}) buys speed.")
    else:
        reasons.append("Steps are compute-bound (prefill chunks and the batch make tensor-core throughput, "
                       "not bandwidth, the limit).")
    if c.matmul_path == ComputePath.NATIVE.value:
        reasons.append(f"{c.gpu_name} multiplies {c.precision_label} natively on tensor cores.")
    elif c.matmul_path == "weight-only dequantize":
        reasons.append(f"{c.precision_label} weights are dequantized inside the kernel: the bandwidth saving is "
                       f"real, the dequantization costs compute as batches grow.")
    else:
        reasons.append(f"{c.gpu_name} has no {c.precision} tensor cores: weights are dequantized to FP16, so only "
                       f"the bandwidth saving remains.")
    if c.kernel == "slow":
        reasons.append(f"{c.engine_name} runs {c.precision} without a fast kernel: slow-kernel efficiencies apply.")
    if c.quality.loss_pct is None:
        reasons.append("Accuracy: no published prior; measure it with `quantwise eval`.")
    elif c.quality.loss_pct == 0:
        reasons.append("Accuracy: reference precision, no quantization loss.")
    else:
        reasons.append(f"Accuracy risk ({c.method}): {c.quality.describe}.")
    w = request.workload
    reasons.append(f"{_count(c.replicas, 'replica')} of {_count(c.gpus_per_replica, 'GPU')} serve the peak of "
                   f"{w.peak_output_tokens_per_s:,.0f} output tokens/s ({w.peak_factor:g}x the average; "
                   f"{c.tokens_per_s_replica:,.0f} each): ${c.usd_per_month:,.0f}/month, ${c.usd_per_m_output:,.2f} "
                   f"per million output and ${c.usd_per_m_input:,.2f} per million input tokens at the average traffic"
                   + (" (the catalogue marks this GPU's price unconfirmed)." if c.price_unconfirmed else "."))
    return reasons
