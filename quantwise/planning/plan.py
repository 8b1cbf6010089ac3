"""`plan`: the table of memory, fit, latency, throughput and cost over a grid of choices."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import QuantwiseError
from ..hardware.catalog import GPU
from ..models import ModelArch
from .assumptions import PlannerAssumptions
from .engines import EngineProfile, effective_assumptions
from .precisions import PlanPrecision
from .profile import Profile
from .roofline import Deployment
from .serving import SECONDS_PER_DAY, Workload, best_concurrency

TP_DEGREES = (1, 2, 4, 8)  # tensor parallelism inside one 8-GPU node
# The catalogue's interconnect (NVLink, PCIe) joins the GPUs of one server, at most 8 (HGX/DGX).
MAX_TP = 8
DAYS_PER_MONTH = 365.0 / 12


def _heads_split(arch: ModelArch, tp: int) -> bool:
    """vLLM and TensorRT-LLM shard attention heads evenly over the GPUs, and KV heads evenly or
    replicated (tp a multiple of them)."""
    return arch.heads % tp == 0 and (arch.kv_heads % tp == 0 or tp % arch.kv_heads == 0)


def tp_problem(arch: ModelArch, tp: int) -> str | None:
    """Why `tp` GPUs per replica cannot serve this model (None: they can)."""
    if not 1 <= tp <= MAX_TP:
        return (f"--tp {tp}: tensor parallelism here spans one server of at most {MAX_TP} GPUs (the catalogue's "
                f"NVLink/PCIe figures are within a server); use 1-{MAX_TP} GPUs per replica and more replicas")
    if not _heads_split(arch, tp):
        fits = [str(d) for d in range(1, MAX_TP + 1) if _heads_split(arch, d)]
        return (f"--tp {tp} does not split {arch.name}'s {arch.heads} attention heads and {arch.kv_heads} KV heads "
                f"evenly (engines shard heads across GPUs); degrees that do: {', '.join(fits)}")
    return None


@dataclass(frozen=True)
class PlanRow:
    model: str
    gpu: str
    precision: str
    gpus: int
    batch: int
    context: int
    kv_dtype: str
    weights_gb: float
    kv_cache_gb: float
    memory_gb: float          # weights + KV + workspace, all GPUs
    capacity_gb: float        # usable memory, all GPUs
    fits: bool
    max_batch: int
    ms_per_token: float
    tokens_per_s: float
    bound: str
    memory_ms: float
    compute_ms: float
    comm_ms: float
    ttft_ms: float
    matmul_path: str
    ridge_batch: int | None
    usd_per_month: float
    usd_per_mtok_at_capacity: float


def monthly_cost(gpu: GPU, gpus: int, assumptions: PlannerAssumptions) -> float:
    return gpu.price_per_hour * gpus * assumptions.hours_per_month


def min_gpus(arch: ModelArch, gpu: GPU, precision: PlanPrecision, context: int, kv_dtype: str,
             assumptions: PlannerAssumptions, quantize_lm_head: bool = False) -> int | None:
    """Fewest GPUs (a tensor-parallel degree) that hold the weights and one sequence of KV cache."""
    for tp in TP_DEGREES:
        if tp_problem(arch, tp):
            continue
        dep = Deployment(arch, gpu, precision, tp, context, kv_dtype, quantize_lm_head, assumptions)
        if dep.max_batch >= 1:
            return tp
    return None


_UNSET = object()


def evaluate(dep: Deployment, batch: int, ridge_batch=_UNSET) -> PlanRow:
    """ridge_batch: pass `dep.ridge_batch()` when evaluating many batches of one deployment."""
    step = dep.step_time(batch)
    total = step.total_s
    tokens_per_s = batch / total
    cost = monthly_cost(dep.gpu, dep.tp, dep.assumptions)
    tokens_month = tokens_per_s * SECONDS_PER_DAY * DAYS_PER_MONTH
    return PlanRow(
        model=dep.arch.name, gpu=dep.gpu.id, precision=dep.precision.id, gpus=dep.tp, batch=batch,
        context=dep.context, kv_dtype=dep.kv_dtype,
        weights_gb=dep.weight_bytes / 1e9, kv_cache_gb=batch * dep.context * dep.kv_bytes_per_token / 1e9,
        memory_gb=dep.memory_total_bytes(batch) / 1e9, capacity_gb=dep.usable_bytes / 1e9,
        fits=dep.max_batch >= batch, max_batch=dep.max_batch, ms_per_token=total * 1e3,
        tokens_per_s=tokens_per_s, bound=step.bound, memory_ms=step.memory_s * 1e3, compute_ms=step.compute_s * 1e3,
        comm_ms=step.comm_s * 1e3, ttft_ms=dep.prefill_time_s(dep.context) * 1e3,
        matmul_path="weight-only dequantize" if dep.precision.weight_only else dep.matmul_path.value,
        ridge_batch=dep.ridge_batch() if ridge_batch is _UNSET else ridge_batch, usd_per_month=cost,
        usd_per_mtok_at_capacity=cost / tokens_month * 1e6)


@dataclass(frozen=True)
class PlanRequest:
    arch: ModelArch
    gpus: list[GPU]
    precisions: list[PlanPrecision]
    batches: list[int]
    contexts: list[int]
    kv_dtype: str = "fp16"
    tp: int | None = None               # None: the fewest GPUs that fit
    quantize_lm_head: bool = False
    assumptions: PlannerAssumptions = PlannerAssumptions()
    engine: EngineProfile | None = None  # its efficiencies and kernels; None: the bare assumptions
    profile: Profile | None = None

    def __post_init__(self) -> None:
        problem = tp_problem(self.arch, self.tp) if self.tp is not None else None
        if problem:
            raise QuantwiseError(problem)


def plan_grid(request: PlanRequest) -> list[PlanRow]:
    """One row per GPU x precision x context x batch; GPUs = request.tp or the fewest that fit.
    With an engine, combinations it has no kernel for are left out (see engine.refusal)."""
    if any(b < 1 for b in request.batches):
        raise ValueError("batch sizes must be >= 1")
    rows = []
    for gpu in request.gpus:
        engine = request.engine
        assumptions = effective_assumptions(request.assumptions, engine, gpu, request.profile) if engine \
            else request.assumptions
        for precision in request.precisions:
            kernel = engine.kernel(precision.id, gpu) if engine else "fast"
            if kernel is None:
                continue
            for context in request.contexts:
                tp = request.tp or min_gpus(request.arch, gpu, precision, context, request.kv_dtype,
                                            assumptions, request.quantize_lm_head) or TP_DEGREES[-1]
                dep = Deployment(request.arch, gpu, precision, tp, context, request.kv_dtype,
                                 request.quantize_lm_head, assumptions, slow_kernel=kernel == "slow",
                                 fp16_accumulate=bool(engine and engine.fp16_accumulate))
                ridge = dep.ridge_batch()
                rows.extend(evaluate(dep, batch, ridge) for batch in request.batches)
    return rows


def replicas_needed(tokens_per_s_needed: float, tokens_per_s_per_replica: float) -> int:
    return max(1, math.ceil(tokens_per_s_needed / tokens_per_s_per_replica - 1e-9))


@dataclass(frozen=True)
class ServingRow:
    """One replica of one GPU x precision x engine x TP x KV dtype serving a workload."""

    model: str
    gpu: str
    precision: str
    engine: str
    kernel: str
    gpus: int
    kv_dtype: str
    input_len: int
    output_len: int
    concurrency: int | None       # None: no concurrency meets the targets (see `why`)
    binding: str
    kv_limit: int
    tpot_ms: float | None
    ttft_ms: float | None
    ttft_unloaded_ms: float
    tokens_per_s: float | None    # output tokens/s per replica
    tokens_per_s_per_gpu: float | None
    bound: str
    usd_per_month: float          # one replica
    usd_per_m_output: float | None  # one replica fully used at this concurrency
    why: str


@dataclass(frozen=True)
class ServingRequest:
    arch: ModelArch
    gpus: list[GPU]
    precisions: list[PlanPrecision]
    engines: list[EngineProfile]
    workload: Workload
    kv_dtypes: tuple[str, ...] = ("fp16",)
    tp: int | None = None               # None: the fewest GPUs that hold one sequence
    max_throughput: bool = False        # ignore the latency targets (memory-limited concurrency)
    quantize_lm_head: bool = False
    assumptions: PlannerAssumptions = PlannerAssumptions()
    profile: Profile | None = None  # from `quantwise calibrate`

    def __post_init__(self) -> None:
        problem = tp_problem(self.arch, self.tp) if self.tp is not None else None
        if problem:
            raise QuantwiseError(problem)


def serving_row(dep: Deployment, engine: EngineProfile, kernel: str, workload: Workload,
                use_targets: bool) -> ServingRow:
    limit = best_concurrency(dep, workload, engine.scheduler == "static", use_targets)
    point = limit.point
    cost = monthly_cost(dep.gpu, dep.tp, dep.assumptions)
    tokens = point.output_tokens_per_s if point else None
    per_m = cost / (tokens * SECONDS_PER_DAY * DAYS_PER_MONTH) * 1e6 if tokens else None
    return ServingRow(
        model=dep.arch.name, gpu=dep.gpu.id, precision=dep.precision.id, engine=engine.id, kernel=kernel, gpus=dep.tp,
        kv_dtype=dep.kv_dtype, input_len=workload.input_len, output_len=workload.output_len,
        concurrency=point.concurrency if point else None, binding=limit.binding, kv_limit=limit.kv_limit,
        tpot_ms=point.tpot_s * 1e3 if point else None, ttft_ms=point.ttft_s * 1e3 if point else None,
        ttft_unloaded_ms=dep.prefill_time_s(workload.input_len) * 1e3, tokens_per_s=tokens,
        tokens_per_s_per_gpu=tokens / dep.tp if tokens else None, bound=point.bound if point else "-",
        usd_per_month=cost, usd_per_m_output=per_m, why=limit.why)


@dataclass(frozen=True)
class Combination:
    """One GPU x engine x precision an engine runs, with the assumptions in force for it."""

    gpu: GPU
    engine: EngineProfile
    precision: PlanPrecision
    kernel: str                 # the engine's kernel class for it: "fast" or "slow"
    assumptions: PlannerAssumptions


def supported_combinations(request, refused: list[str]):
    """Every GPU x engine x precision of `request` (gpus, engines, precisions, assumptions,
    profile) the engine runs; one line per one it does not is appended to `refused`."""
    for gpu in request.gpus:
        for engine in request.engines:
            assumptions = effective_assumptions(request.assumptions, engine, gpu, request.profile)
            for precision in request.precisions:
                kernel = engine.kernel(precision.id, gpu)
                if kernel is None:
                    refused.append(engine.refusal(precision.id, gpu))
                    continue
                yield Combination(gpu, engine, precision, kernel, assumptions)


def serving_grid(request: ServingRequest) -> tuple[list[ServingRow], list[str]]:
    """Rows for every supported combination, and one refusal line per unsupported one."""
    rows, refused = [], []
    context = max(1, round(request.workload.mean_context))
    for combo in supported_combinations(request, refused):
        gpu, engine, precision, kernel, assumptions = (combo.gpu, combo.engine, combo.precision, combo.kernel,
                                                       combo.assumptions)
        for kv_dtype in request.kv_dtypes:
            tp = request.tp or min_gpus(request.arch, gpu, precision, context, kv_dtype, assumptions,
                                        request.quantize_lm_head) or TP_DEGREES[-1]
            dep = Deployment(request.arch, gpu, precision, tp, context, kv_dtype, request.quantize_lm_head,
                             assumptions, slow_kernel=kernel == "slow",
                             fp16_accumulate=engine.fp16_accumulate)
            rows.append(serving_row(dep, engine, kernel, request.workload, not request.max_throughput))
    return rows, refused
