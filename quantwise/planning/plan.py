"""`plan`: the table of memory, fit, latency, throughput and cost over a grid of choices."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..hardware.catalog import GPU
from ..models import ModelArch
from .assumptions import PlannerAssumptions
from .precisions import PlanPrecision
from .roofline import Deployment

TP_DEGREES = (1, 2, 4, 8)  # tensor parallelism inside one 8-GPU node
SECONDS_PER_DAY = 86_400.0
DAYS_PER_MONTH = 365.0 / 12


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


def plan_grid(request: PlanRequest) -> list[PlanRow]:
    """One row per GPU x precision x context x batch; GPUs = request.tp or the fewest that fit."""
    if any(b < 1 for b in request.batches):
        raise ValueError("batch sizes must be >= 1")
    rows = []
    for gpu in request.gpus:
        for precision in request.precisions:
            for context in request.contexts:
                tp = request.tp or min_gpus(request.arch, gpu, precision, context, request.kv_dtype,
                                            request.assumptions, request.quantize_lm_head) or TP_DEGREES[-1]
                dep = Deployment(request.arch, gpu, precision, tp, context, request.kv_dtype,
                                 request.quantize_lm_head, request.assumptions)
                ridge = dep.ridge_batch()
                rows.extend(evaluate(dep, batch, ridge) for batch in request.batches)
    return rows


def replicas_needed(tokens_per_s_needed: float, tokens_per_s_per_replica: float) -> int:
    return max(1, math.ceil(tokens_per_s_needed / tokens_per_s_per_replica - 1e-9))
