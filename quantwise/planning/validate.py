"""The planner against published measurements (data/published_measurements.csv): each row's exact
conditions are re-run through the same model `plan` and `recommend` use, and the error reported.

Kinds and what is predicted:
  batch1_decode       tokens/s of one sequence = 1 / TPOT at concurrency 1, context prompt + answer/2
  max_throughput      output tokens/s of one replica at the memory-limited concurrency (no targets)
  tp_sweep            the same (or batch-1 decode when the row has batch 1) at the row's TP degree
  static_batch        output tokens/s of a static batch of `batch` (prefill all, then decode)
  ttft                unloaded time to first token of an `input_len` prompt, ms
  prefill_throughput  prompt tokens/s of one `input_len` prompt
  decode_tpot         ms of one decode step of `batch` sequences at context prompt + answer/2
  concurrency_*       a closed loop of `batch` concurrent requests (continuous batching, chunked
                      prefill): mean TPOT, mean TTFT at that load, output tokens/s =
                      batch x output_len / (TTFT + output_len x TPOT)
  request_latency     ms for a batch of `batch` requests started together: their prompts in one
                      prefill, then output_len - 1 decode steps
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..data import read_rows
from ..errors import QuantwiseError
from ..hardware.catalog import GPU
from ..models import resolve_arch
from .assumptions import DEFAULT_ASSUMPTIONS, PlannerAssumptions
from .engines import EngineProfile, effective_assumptions
from .precisions import PRECISIONS
from .profile import Profile
from .roofline import Deployment
from .serving import Workload, best_concurrency, serving_point

KINDS = ("batch1_decode", "max_throughput", "tp_sweep", "static_batch", "ttft", "prefill_throughput", "decode_tpot",
         "concurrency_tpot", "concurrency_ttft", "concurrency_throughput", "request_latency")


@dataclass(frozen=True)
class Measurement:
    """One published figure and its exact conditions (batch None: not a fixed batch)."""

    id: str
    kind: str
    model: str
    gpu: str
    engine: str
    precision: str
    kv_dtype: str
    tp: int
    batch: int | None
    input_len: int
    output_len: int
    metric: str
    value: float
    source_title: str
    source_url: str
    conditions: str
    split: str = "holdout"    # fit: an engine's efficiencies were fitted to this row; holdout: not


@dataclass(frozen=True)
class Validation:
    id: str
    kind: str
    label: str
    metric: str
    published: float
    predicted: float | None   # None: the planner says the configuration does not fit
    error_pct: float | None   # predicted / published - 1, in percent
    source: str
    split: str


def load_measurements(path: str | None = None) -> list[Measurement]:
    """The packaged table (or a user's CSV with the same columns), validated."""
    rows = read_rows(path or "published_measurements.csv")
    out = []
    for line, row in enumerate(rows, start=2):
        where = f"{path or 'published_measurements.csv'} line {line}"
        if (row.get("split") or "holdout") not in ("fit", "holdout"):
            raise QuantwiseError(f"{where}: split must be fit or holdout")
        if row.get("kind") not in KINDS:
            raise QuantwiseError(f"{where}: kind must be one of {', '.join(KINDS)}, got {row.get('kind')!r}")
        if not (row.get("source_url") or "").strip():
            raise QuantwiseError(f"{where}: every measurement needs its source_url")
        try:
            out.append(Measurement(
                id=row["id"], kind=row["kind"], model=row["model"], gpu=row["gpu"], engine=row["engine"],
                precision=row["precision"], kv_dtype=row["kv_dtype"], tp=int(row["tp"]),
                batch=int(row["batch"]) if row.get("batch") else None, input_len=int(row["input_len"]),
                output_len=int(row["output_len"]), metric=row["metric"], value=float(row["value"]),
                source_title=row["source_title"], source_url=row["source_url"], conditions=row["conditions"],
                split=row.get("split") or "holdout"))
        except (KeyError, ValueError) as exc:
            raise QuantwiseError(f"{where}: {exc}") from None
    return out


def deployment_for(m: Measurement, gpu: GPU, engine: EngineProfile, base: PlannerAssumptions,
                   profile: Profile | None = None) -> Deployment:
    precision = PRECISIONS[m.precision]
    kernel = engine.kernel(precision.id, gpu)
    if kernel is None:
        raise QuantwiseError(f"{m.id}: {engine.refusal(precision.id, gpu)}")
    assumptions = effective_assumptions(base, engine, gpu, profile)
    return Deployment(resolve_arch(m.model), gpu, precision, m.tp, max(1, m.input_len + m.output_len // 2),
                      m.kv_dtype, False, assumptions, slow_kernel=kernel == "slow",
                      fp16_accumulate=engine.fp16_accumulate)


def predict(m: Measurement, dep: Deployment, static: bool) -> float | None:
    """The planner's figure for the measurement's metric under its conditions (None: no fit)."""
    workload = Workload(m.input_len, m.output_len, 1.0)
    if m.kind == "ttft":
        return dep.prefill_time_s(m.input_len) * 1e3
    if m.kind.startswith("concurrency_"):
        if m.batch > best_concurrency(dep, workload, static, use_targets=False).kv_limit:
            return None
        point = serving_point(dep, workload, m.batch, static)
        if m.kind == "concurrency_tpot":
            return point.tpot_s * 1e3
        if m.kind == "concurrency_ttft":
            return point.ttft_s * 1e3
        return m.batch * m.output_len / (point.ttft_s + m.output_len * point.tpot_s)
    if m.kind == "request_latency":
        prefill = dep.mixed_step(0.0, 0.0, float(m.batch * m.input_len), m.input_len / 2, logits=float(m.batch))
        step = dep.mixed_step(m.batch, workload.mean_context, 0.0, 0.0)
        return (prefill.total_s + (m.output_len - 1) * step.total_s) * 1e3
    if m.kind == "decode_tpot":
        return dep.mixed_step(m.batch or 1, workload.mean_context, 0.0, 0.0).total_s * 1e3
    if m.kind == "prefill_throughput":
        return m.input_len / dep.prefill_time_s(m.input_len)
    if m.kind == "batch1_decode" or (m.kind == "tp_sweep" and m.batch == 1):
        if dep.kv_capacity_bytes <= 0:
            return None
        return 1.0 / dep.mixed_step(1, workload.mean_context, 0.0, 0.0).total_s
    if m.kind == "static_batch":
        if m.batch * (m.input_len + m.output_len) * dep.kv_bytes_per_token > dep.kv_capacity_bytes:
            return None
        tokens = serving_point(dep, workload, m.batch, static=True).output_tokens_per_s
        return tokens / dep.tp if m.metric.endswith("per_gpu") else tokens
    limit = best_concurrency(dep, workload, static, use_targets=False)
    return limit.point.output_tokens_per_s if limit.point else None


def validate(measurements: list[Measurement], catalog: dict[str, GPU], engines: dict[str, EngineProfile],
             base: PlannerAssumptions = DEFAULT_ASSUMPTIONS, profile: Profile | None = None) -> list[Validation]:
    out = []
    for m in measurements:
        if m.gpu not in catalog or m.engine not in engines:
            raise QuantwiseError(f"{m.id}: unknown GPU {m.gpu!r} or engine {m.engine!r}")
        engine = engines[m.engine]
        dep = deployment_for(m, catalog[m.gpu], engine, base, profile)
        predicted = predict(m, dep, engine.scheduler == "static")
        error = None if predicted is None else (predicted / m.value - 1) * 100
        at = f"c{m.batch} " if m.kind.startswith("concurrency_") else (
            f"b{m.batch} " if m.batch and m.batch > 1 else "")
        label = f"{m.model} {m.precision} {m.tp}x {m.gpu} {engine.id} {at}{m.input_len}/{m.output_len}"
        out.append(Validation(m.id, m.kind, label, m.metric, m.value, predicted, error, m.source_title, m.split))
    return out


def median_abs_error(results: list[Validation]) -> float:
    """Median |error| in percent over the rows the planner could predict; a row it says does not
    fit counts as 100% wrong (the configuration was measured, so it does fit)."""
    errors = [abs(r.error_pct) if r.error_pct is not None else 100.0 for r in results]
    return statistics.median(errors) if errors else 0.0
