"""The GPU catalogue: one dataclass per row of data/gpus.csv (or a user's file), validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data import read_rows
from ..data.lookup import pick

_REQUIRED = ("id", "name", "memory_gb", "bandwidth_tbps", "fp16_tflops", "price_per_hour")
_OPTIONAL_RATES = ("fp8_tflops", "int8_tops", "int4_tops")


@dataclass(frozen=True)
class GPU:
    """One accelerator. Throughputs are dense tensor-core peaks in TFLOP/s (TOP/s for ints);
    None means the chip has no tensor-core path for that type."""

    id: str
    name: str
    arch: str
    memory_gb: float
    bandwidth_tbps: float
    fp16_tflops: float
    fp8_tflops: float | None
    int8_tops: float | None
    int4_tops: float | None
    interconnect: str
    interconnect_gbps: float
    tdp_w: float | None
    price_per_hour: float
    price_source: str
    price_date: str
    spec_source: str
    unconfirmed: tuple[str, ...] = field(default=())
    notes: str = ""

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_tbps * 1e12

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


def _number(row: dict[str, str], key: str, where: str, optional: bool = False) -> float | None:
    text = (row.get(key) or "").strip()
    if not text:
        if optional:
            return None
        raise ValueError(f"{where}: missing value for '{key}'")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: '{key}' is not a number: {text!r}") from None
    if value <= 0 and key != "tdp_w":
        raise ValueError(f"{where}: '{key}' must be positive, got {value}")
    return value


def gpu_from_row(row: dict[str, str], where: str) -> GPU:
    missing = [key for key in _REQUIRED if not (row.get(key) or "").strip()]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
    unconfirmed = tuple(x for x in (row.get("unconfirmed") or "").split(";") if x)
    # Unconfirmed figures are used (the architecture has the path) but flagged wherever printed.
    rates = {k: _number(row, k, where, optional=True) for k in _OPTIONAL_RATES}
    return GPU(
        id=row["id"].strip().lower(), name=row["name"].strip(), arch=(row.get("arch") or "").strip(),
        memory_gb=_number(row, "memory_gb", where), bandwidth_tbps=_number(row, "bandwidth_tbps", where),
        fp16_tflops=_number(row, "fp16_tflops", where), **rates,
        interconnect=(row.get("interconnect") or "PCIe").strip(),
        interconnect_gbps=_number(row, "interconnect_gbps", where, optional=True) or 32.0,
        tdp_w=_number(row, "tdp_w", where, optional=True), price_per_hour=_number(row, "price_per_hour", where),
        price_source=(row.get("price_source") or "user file").strip(), price_date=(row.get("price_date") or "").strip(),
        spec_source=(row.get("spec_source") or "user file").strip(), unconfirmed=unconfirmed,
        notes=(row.get("notes") or "").strip())


def load_catalog(gpu_file: str | Path | None = None) -> dict[str, GPU]:
    """The packaged catalogue, with rows of `gpu_file` (same columns) added or overriding by id."""
    catalog = {}
    sources = [("gpus.csv", "gpus.csv")] + ([(gpu_file, str(gpu_file))] if gpu_file else [])
    for source, label in sources:
        for line, row in enumerate(read_rows(source), start=2):
            gpu = gpu_from_row(row, f"{label} line {line}")
            catalog[gpu.id] = gpu
    return catalog


def resolve_gpus(catalog: dict[str, GPU], names: list[str] | None) -> list[GPU]:
    """GPUs by id (case-insensitive); all of them when names is empty."""
    return pick(catalog, names, "GPU")
