"""`quantwise calibrate`: fit the planner's efficiency parameters for a GPU x engine to measurements.

Regularised least squares in log space: minimise
    sum_i log(predicted_i / measured_i)^2 + ridge x sum_j log(theta_j / prior_j)^2
over theta = FIT_PARAMETERS (bandwidth, packed-weight and KV-read efficiencies, dense and
dequantizing compute efficiencies, per-step and per-sequence overheads), by Levenberg-Marquardt
with numerical derivatives.
Parameters no measurement depends on (doubling one moves no prediction by IDENTIFIED_ELASTICITY x
log 2) are not fitted at all: a weak ridge alone let them wander, e.g. three batch-1 points drove
the KV-read efficiency from 0.7 to 0.06 (batch 1 reads almost no KV) and the per-sequence overhead
50-fold (at batch 1 it is the per-step overhead by another name), and every plan at real concurrency
with that profile was 4x too slow. The ridge term then settles what the rest leave open, so three
batch-1 points fit bandwidth and overhead and leave compute alone. Efficiencies stay in (0, 1].

Measurements: the rows of a CSV (model, gpu, engine, precision, [tp], [batch], input_len,
output_len and one of tokens_per_s, tpot_ms, ttft_ms), or the JSON of `quantwise bench --json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..data import read_rows
from ..errors import QuantwiseError
from ..hardware.catalog import GPU
from ..models import resolve_arch
from .assumptions import DEFAULT_ASSUMPTIONS, PlannerAssumptions
from .engines import EngineProfile
from .plan import tp_problem
from .precisions import PRECISIONS
from .validate import Measurement, deployment_for, predict

FIT_PARAMETERS = ("bandwidth_efficiency", "weight_only_bandwidth_efficiency", "kv_bandwidth_efficiency",
                  "compute_efficiency", "dequant_compute_efficiency", "step_overhead_s", "sequence_overhead_s")
_FLOOR = 1e-6     # a zero prior (no per-sequence overhead) starts the log-space fit here
RIDGE = 1e-5      # pull toward the prior, in log units: decides only what the measurements leave open
# A parameter counts as measured when some prediction's log moves by at least this share of the
# parameter's log change (1% per 2x: below that, the data's own noise decides it).
IDENTIFIED_ELASTICITY = 0.015
# Where sensitivity is probed for a parameter whose prior is ~0 (an overhead an engine leaves at 0):
# typical magnitudes (vLLM's priors), so "could this parameter matter here" gets an honest answer.
_PROBE = {"step_overhead_s": 1e-3, "sequence_overhead_s": 3e-5}
_UPPER = {name: 1.0 for name in FIT_PARAMETERS if name.endswith("efficiency")}
# `quantwise bench` format names -> planner precisions
BENCH_FORMATS = {"bf16": "bf16", "fp16": "fp16", "int8": "int8-wo", "int4": "int4", "int4-asym": "int4",
                 "nf4": "nf4", "fp8": "fp8", "w8a8": "int8"}


@dataclass(frozen=True)
class FitResult:
    gpu: str
    engine: str
    prior: dict[str, float]
    fitted: dict[str, float]
    measured: list[float]
    before: list[float | None]
    after: list[float | None]
    labels: list[str]

    @property
    def rms_log_error_before(self) -> float:
        return _rms(self.measured, self.before)

    @property
    def rms_log_error_after(self) -> float:
        return _rms(self.measured, self.after)


def _rms(measured, predicted) -> float:
    logs = [math.log(p / m) for m, p in zip(measured, predicted, strict=True) if p]
    return math.sqrt(sum(x * x for x in logs) / len(logs)) if logs else float("nan")


def _measurement(row: dict[str, str], where: str, defaults: dict[str, str]) -> Measurement:
    row = {**defaults, **{k: v for k, v in row.items() if v not in (None, "")}}
    missing = [k for k in ("model", "gpu", "engine", "precision", "input_len", "output_len") if not row.get(k)]
    if missing:
        raise QuantwiseError(f"{where}: missing {', '.join(missing)} (give them as columns or options)")
    metrics = [k for k in ("tokens_per_s", "tpot_ms", "ttft_ms") if row.get(k)]
    if len(metrics) != 1:
        raise QuantwiseError(f"{where}: give exactly one of tokens_per_s, tpot_ms, ttft_ms")
    metric = metrics[0]
    if row["precision"] not in PRECISIONS:
        raise QuantwiseError(f"{where}: unknown precision {row['precision']!r}; known: {', '.join(PRECISIONS)}")
    try:
        batch, tp = (int(row["batch"]) if row.get("batch") else None), int(row.get("tp") or 1)
    except ValueError as exc:
        raise QuantwiseError(f"{where}: batch and tp must be whole numbers ({exc})") from None
    if batch is not None and batch < 1:
        raise QuantwiseError(f"{where}: batch must be >= 1, got {batch}")
    problem = tp_problem(resolve_arch(row["model"]), tp)
    if problem:
        raise QuantwiseError(f"{where}: {problem}")
    if metric == "ttft_ms":
        kind = "ttft"
    elif metric == "tpot_ms":
        kind, batch = "decode_tpot", batch or 1
    else:
        kind = "max_throughput" if batch is None else ("batch1_decode" if batch == 1 else "static_batch")
    try:
        value, lengths = float(row[metric]), (int(row["input_len"]), int(row["output_len"]))
    except ValueError as exc:
        raise QuantwiseError(f"{where}: {exc}") from None
    if not math.isfinite(value) or value <= 0 or min(lengths) < 1:
        raise QuantwiseError(f"{where}: lengths and the measured value must be positive")
    return Measurement(f"{where}", kind, row["model"], row["gpu"].lower(), row["engine"].lower(),
                       row["precision"], row.get("kv_dtype", "fp16"), tp, batch,
                       lengths[0], lengths[1], "output_tokens_per_s" if metric == "tokens_per_s" else metric,
                       value, "user measurement", "", "")


def load_results(paths: list[str], defaults: dict[str, str]) -> list[Measurement]:
    """Measurements from CSV files and `quantwise bench --json` files; `defaults` fill missing
    columns (model, gpu, engine, input_len, output_len from the command's options)."""
    out = []
    for path in paths:
        if Path(path).suffix == ".json":
            out.extend(_bench_rows(path, defaults))
        else:
            out.extend(_measurement(row, f"{path} line {i}", defaults) for i, row in enumerate(read_rows(path), 2))
    if not out:
        raise QuantwiseError("no measurements in " + ", ".join(paths))
    return out


def _bench_rows(path: str, defaults: dict[str, str]) -> list[Measurement]:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QuantwiseError(f"{path}: not a readable `quantwise bench --json` file ({exc})") from None
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise QuantwiseError(f"{path}: expected the JSON of `quantwise bench --json` (a 'rows' list)")
    out = []
    for i, row in enumerate(rows):
        fmt = str(row.get("format", "")).split(":")[0]
        if fmt not in BENCH_FORMATS:
            continue  # fp32 and checkpoint paths have no planner precision
        out.append(_measurement({"model": row.get("model", ""), "precision": BENCH_FORMATS[fmt],
                                 "batch": str(row["batch"]), "tpot_ms": str(row["decode_ms"])},
                                f"{path} row {i}", defaults))
    return out


def _predictions(measurements: list[Measurement], catalog: dict[str, GPU], engine: EngineProfile,
                 assumptions: PlannerAssumptions) -> list[float | None]:
    values = {k: getattr(assumptions, k) for k in FIT_PARAMETERS}
    static = engine.scheduler == "static"
    return [predict(m, deployment_for(m, catalog[m.gpu], engine, assumptions, {("*", engine.id): values}), static)
            for m in measurements]


def fit(measurements: list[Measurement], catalog: dict[str, GPU], engine: EngineProfile, gpu: str = "*",
        base: PlannerAssumptions = DEFAULT_ASSUMPTIONS, parameters: tuple[str, ...] = FIT_PARAMETERS,
        iterations: int = 60) -> FitResult:
    """Fitted `parameters` (a subset of FIT_PARAMETERS; the rest keep their priors) for one engine
    on `gpu` ("*": one set for every GPU measured); priors: the engine's profile over `base`."""
    import numpy as np  # calibrate only: the planner's own modules stay numpy-free

    unknown = [p for p in parameters if p not in FIT_PARAMETERS]
    if unknown or not parameters:
        raise QuantwiseError(f"cannot fit {', '.join(unknown) or 'nothing'}; fittable: {', '.join(FIT_PARAMETERS)}")
    prior = engine.apply(base)
    parameters = identified(measurements, catalog, engine, prior, parameters) or parameters
    theta0 = np.log([max(getattr(prior, k), _FLOOR) for k in parameters])
    ceiling = np.array([math.log(_UPPER.get(k, 1e9)) for k in parameters])
    measured = np.array([m.value for m in measurements])

    def assumptions_at(theta) -> PlannerAssumptions:
        return dataclasses.replace(prior, **{k: float(math.exp(t)) for k, t in zip(parameters, theta, strict=True)})

    def residuals(theta) -> np.ndarray:
        predicted = _predictions(measurements, catalog, engine, assumptions_at(theta))
        fits = np.array([math.log(p / m) if p else 5.0 for p, m in zip(predicted, measured, strict=True)])
        return np.concatenate([fits, math.sqrt(RIDGE) * (theta - theta0)])

    theta, damping = theta0.copy(), 1e-2
    current = residuals(theta)
    for _ in range(iterations):
        jacobian = np.empty((current.size, theta.size))
        for j in range(theta.size):
            step = np.zeros_like(theta)
            step[j] = 1e-4
            jacobian[:, j] = (residuals(theta + step) - current) / 1e-4
        normal = jacobian.T @ jacobian
        delta = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -(jacobian.T @ current))
        candidate = np.minimum(theta + delta, ceiling)
        trial = residuals(candidate)
        if trial @ trial < current @ current:
            theta, current, damping = candidate, trial, damping / 3
            if np.abs(delta).max() < 1e-7:
                break
        else:
            damping *= 5
    fitted = assumptions_at(theta)
    return FitResult(gpu, engine.id, {k: getattr(prior, k) for k in FIT_PARAMETERS},
                     {k: getattr(fitted, k) for k in FIT_PARAMETERS}, list(measured),
                     _predictions(measurements, catalog, engine, prior),
                     _predictions(measurements, catalog, engine, fitted),
                     [f"{m.kind} {m.model} {m.precision} {m.tp}x {m.gpu} b{m.batch or '-'} {m.input_len}/{m.output_len}"
                      for m in measurements])


def identified(measurements: list[Measurement], catalog: dict[str, GPU], engine: EngineProfile,
               prior: PlannerAssumptions, parameters: tuple[str, ...]) -> tuple[str, ...]:
    """The `parameters` some measurement depends on: doubling one (from its prior, or its _PROBE
    value if larger) moves some prediction by IDENTIFIED_ELASTICITY x log 2 or more; the
    per-sequence overhead only when some measurement runs more than one sequence."""
    at = dataclasses.replace(prior, **{k: max(getattr(prior, k), _PROBE.get(k, 0.0)) for k in parameters})
    base = _predictions(measurements, catalog, engine, at)
    keep = []
    for name in parameters:
        if name == "sequence_overhead_s" and all(m.batch == 1 for m in measurements):
            continue  # one sequence per step: indistinguishable from the per-step overhead
        value = getattr(at, name)
        moved = dataclasses.replace(at, **{name: min(2 * value, _UPPER.get(name, math.inf)) if value < 0.5
                                          or name not in _UPPER else value / 2})
        after = _predictions(measurements, catalog, engine, moved)
        if any(a and b and abs(math.log(b / a)) >= IDENTIFIED_ELASTICITY * math.log(2)
               for a, b in zip(base, after, strict=True)):
            keep.append(name)
    return tuple(keep)


def _check_fits(m: Measurement, gpu: GPU, engine: EngineProfile, base: PlannerAssumptions) -> None:
    """Refuse a measurement whose KV cache the planner says cannot fit: no efficiency explains it,
    and fitting to it drove efficiencies to their bounds (a typo in batch, lengths or tp)."""
    dep = deployment_for(m, gpu, engine, base)
    sequences = m.batch or 1
    need, room = sequences * (m.input_len + m.output_len) * dep.kv_bytes_per_token, dep.kv_capacity_bytes
    if need > room:
        raise QuantwiseError(
            f"{m.id}: {sequences} sequence(s) of {m.input_len:,}+{m.output_len:,} tokens need {need / 1e9:,.1f} GB "
            f"of KV cache; {m.model} {m.precision} on {m.tp}x {gpu.id} leaves {max(room, 0) / 1e9:,.1f} GB beside "
            "the weights; check batch, lengths and tp")


def fit_all(measurements: list[Measurement], catalog: dict[str, GPU], engines: dict[str, EngineProfile],
            base: PlannerAssumptions = DEFAULT_ASSUMPTIONS, pool_gpus: bool = False,
            parameters: tuple[str, ...] = FIT_PARAMETERS) -> list[FitResult]:
    """One fit per GPU x engine found in the measurements (pool_gpus: one per engine, every GPU)."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        if m.gpu not in catalog:
            raise QuantwiseError(f"{m.id}: unknown GPU {m.gpu!r}")
        if m.engine not in engines:
            raise QuantwiseError(f"{m.id}: unknown engine {m.engine!r}; known: {', '.join(engines)}")
        _check_fits(m, catalog[m.gpu], engines[m.engine], base)
        groups.setdefault(("*" if pool_gpus else m.gpu, m.engine), []).append(m)
    return [fit(ms, catalog, engines[e], g, base, parameters) for (g, e), ms in groups.items()]


def profile_entries(results: list[FitResult]) -> list[dict]:
    return [{"gpu": r.gpu, "engine": r.engine, "assumptions": r.fitted, "prior": r.prior,
             "points": len(r.measured), "rms_log_error_before": r.rms_log_error_before,
             "rms_log_error_after": r.rms_log_error_after} for r in results]
