"""Serving engines (data/engines.csv): their efficiencies, scheduler, and which precisions they run
with fast kernels on which GPU generations. Adding an engine is one CSV row.

Kernel cells read `precision|precision=arch|arch;...`; `all` means every architecture listed in
ARCHITECTURES. A precision in `slow_kernels` runs, but at the slow-kernel (NF4-class) efficiencies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..data import read_rows
from ..data.lookup import pick
from ..errors import QuantwiseError
from ..hardware.catalog import GPU
from .assumptions import DEFAULT_ASSUMPTIONS, PlannerAssumptions
from .profile import Profile

ARCHITECTURES = ("ampere", "ada", "hopper", "blackwell", "cdna3")
SCHEDULERS = ("continuous", "static")


@dataclass(frozen=True)
class EngineProfile:
    """bandwidth/compute efficiencies: shares of the GPU's peaks its kernels reach (weights, packed
    weights, KV cache reads; dense and dequantizing matmuls); step_overhead_s per engine step plus
    layer_overhead_s per decoder layer (eager Python) plus sequence_overhead_s per decoding sequence;
    max_batched_tokens: the token budget of one step (decode + prefill chunks), 0 for static;
    fast/slow: precision -> architectures."""

    id: str
    name: str
    scheduler: str
    bandwidth_efficiency: float
    weight_only_bandwidth_efficiency: float
    kv_bandwidth_efficiency: float
    compute_efficiency: float
    dequant_compute_efficiency: float
    step_overhead_s: float
    layer_overhead_s: float
    sequence_overhead_s: float
    max_batched_tokens: int
    fast: dict[str, tuple[str, ...]]
    slow: dict[str, tuple[str, ...]]
    efficiency_source: str
    kernel_source: str
    fp16_accumulate: bool = False   # FP16 GEMMs accumulate in FP16 (llama.cpp's cuBLAS path)

    def kernel(self, precision: str, gpu: GPU) -> str | None:
        """'fast', 'slow' or None (this engine cannot run the precision on this GPU)."""
        if gpu.arch in self.fast.get(precision, ()):
            return "fast"
        if gpu.arch in self.slow.get(precision, ()):
            return "slow"
        return None

    def refusal(self, precision: str, gpu: GPU) -> str:
        """One line saying why the combination is refused, and what this engine does run there."""
        runs = sorted(p for p in {**self.fast, **self.slow} if self.kernel(p, gpu))
        there = f"on {gpu.arch or 'this'} GPUs it runs {', '.join(runs)}" if runs else \
            f"it does not run on {gpu.arch or 'this architecture'} at all"
        return (f"{self.name} has no kernel for {precision} on {gpu.name} ({gpu.arch}); {there} "
                f"(source: {self.kernel_source.split('(')[0].strip()})")

    def apply(self, base: PlannerAssumptions) -> PlannerAssumptions:
        """The planner assumptions with this engine's efficiencies and overheads."""
        return dataclasses.replace(
            base, bandwidth_efficiency=self.bandwidth_efficiency,
            weight_only_bandwidth_efficiency=self.weight_only_bandwidth_efficiency,
            kv_bandwidth_efficiency=self.kv_bandwidth_efficiency, sequence_overhead_s=self.sequence_overhead_s,
            compute_efficiency=self.compute_efficiency, dequant_compute_efficiency=self.dequant_compute_efficiency,
            step_overhead_s=self.step_overhead_s, layer_overhead_s=self.layer_overhead_s,
            prefill_chunk_tokens=self.max_batched_tokens or base.prefill_chunk_tokens)


def effective_assumptions(base: PlannerAssumptions, engine: EngineProfile, gpu: GPU,
                          profile: Profile | None) -> PlannerAssumptions:
    """The engine's efficiencies over `base`, then values fitted by `quantwise calibrate` (a
    profile) for this GPU x engine, or for this engine on every GPU ("*"), if any; values the user
    set in `base` away from the defaults (`--assume`) win over both."""
    assumptions = engine.apply(base)
    fitted = (profile or {}).get((gpu.id, engine.id)) or (profile or {}).get(("*", engine.id))
    if fitted:
        assumptions = dataclasses.replace(assumptions, **fitted)
    user = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)
            if getattr(base, f.name) != getattr(DEFAULT_ASSUMPTIONS, f.name)}
    return dataclasses.replace(assumptions, **user) if user else assumptions


def _kernels(text: str, where: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        if "=" not in entry:
            raise QuantwiseError(f"{where}: kernel entry {entry!r} needs precision=architectures")
        precisions, archs = entry.split("=", 1)
        arch_list = ARCHITECTURES if archs.strip() == "all" else tuple(a.strip() for a in archs.split("|"))
        unknown = [a for a in arch_list if a not in ARCHITECTURES]
        if unknown:
            raise QuantwiseError(f"{where}: unknown architecture(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(ARCHITECTURES)}")
        for precision in precisions.split("|"):
            out[precision.strip()] = out.get(precision.strip(), ()) + arch_list
    return out


def _fraction(row: dict[str, str], key: str, where: str) -> float:
    try:
        value = float(row[key])
    except (KeyError, ValueError):
        raise QuantwiseError(f"{where}: '{key}' must be a number, got {row.get(key)!r}") from None
    if not 0 < value <= 1:
        raise QuantwiseError(f"{where}: '{key}' must be in (0, 1], got {value}")
    return value


def _yes(row: dict[str, str], key: str, where: str) -> bool:
    value = (row.get(key) or "no").strip().lower()
    if value not in ("yes", "no"):
        raise QuantwiseError(f"{where}: '{key}' must be yes or no, got {value!r}")
    return value == "yes"


def engine_from_row(row: dict[str, str], where: str) -> EngineProfile:
    scheduler = (row.get("scheduler") or "").strip()
    if scheduler not in SCHEDULERS:
        raise QuantwiseError(f"{where}: scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    return EngineProfile(
        id=row["id"].strip().lower(), name=row["name"].strip(), scheduler=scheduler,
        bandwidth_efficiency=_fraction(row, "bandwidth_efficiency", where),
        weight_only_bandwidth_efficiency=_fraction(row, "weight_only_bandwidth_efficiency", where),
        kv_bandwidth_efficiency=_fraction(row, "kv_bandwidth_efficiency", where),
        compute_efficiency=_fraction(row, "compute_efficiency", where),
        dequant_compute_efficiency=_fraction(row, "dequant_compute_efficiency", where),
        step_overhead_s=float(row["step_overhead_ms"]) / 1e3, layer_overhead_s=float(row["layer_overhead_us"]) / 1e6,
        sequence_overhead_s=float(row["sequence_overhead_us"]) / 1e6,
        max_batched_tokens=int(row["max_batched_tokens"]), fast=_kernels(row["fast_kernels"], where),
        slow=_kernels(row.get("slow_kernels") or "", where), efficiency_source=row["efficiency_source"].strip(),
        kernel_source=row["kernel_source"].strip(), fp16_accumulate=_yes(row, "fp16_accumulate", where))


def load_engines() -> dict[str, EngineProfile]:
    return {e.id: e for e in (engine_from_row(r, f"engines.csv ({r['id']})") for r in read_rows("engines.csv"))}


def resolve_engines(engines: dict[str, EngineProfile], names: list[str] | None) -> list[EngineProfile]:
    """Engines by id; all of them when names is empty."""
    return pick(engines, names, "engine")
