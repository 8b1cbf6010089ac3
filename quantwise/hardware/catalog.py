"""The GPU catalogue: one dataclass per row of data/gpus.csv (or a user's file), validated.

A user's file may override packaged GPUs column by column (a row giving only `id,price_per_hour`
changes the price and keeps every other figure) and may add GPUs, which must give every column of
NEW_GPU_COLUMNS (rates may be `none`: no tensor-core path) so nothing is silently assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..data import read_rows
from ..data.lookup import pick
from ..errors import QuantwiseError

_REQUIRED = ("id", "name", "memory_gb", "bandwidth_tbps", "fp16_tflops", "price_per_hour")
_OPTIONAL_RATES = ("fp8_tflops", "int8_tops", "int4_tops", "fp4_tflops")
GPU_CLASSES = ("datacenter", "workstation", "consumer")
AVAILABILITY = ("broad", "limited", "marketplace")
NEW_GPU_COLUMNS = ("id", "name", "arch", "class", "availability", "memory_gb", "bandwidth_tbps", "fp16_tflops",
                   *_OPTIONAL_RATES, "interconnect", "interconnect_gbps", "price_per_hour", "price_source",
                   "spec_source")


@dataclass(frozen=True)
class GPU:
    """One accelerator. Throughputs are dense tensor-core peaks in TFLOP/s (TOP/s for ints);
    None means the chip has no tensor-core path for that type. gpu_class: datacenter /
    workstation / consumer (GeForce licences exclude datacenter deployment); availability: broad
    (several large clouds on demand), limited (few providers or reservations), marketplace
    (peer-to-peer clouds)."""

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
    fp4_tflops: float | None = None
    gpu_class: str = "datacenter"
    availability: str = "broad"
    fp16_acc_tflops: float | None = None  # GeForce: FP16 with FP16 accumulation (twice fp16_tflops)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_tbps * 1e12

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    @property
    def is_consumer(self) -> bool:
        return self.gpu_class == "consumer"


def _number(row: dict[str, str], key: str, where: str, optional: bool = False) -> float | None:
    text = (row.get(key) or "").strip()
    if not text or text.lower() == "none":
        if optional:
            return None
        raise QuantwiseError(f"{where}: missing value for '{key}'")
    try:
        value = float(text)
    except ValueError:
        raise QuantwiseError(f"{where}: '{key}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise QuantwiseError(f"{where}: '{key}' must be a finite number, got {text!r}")
    if value <= 0 and key != "tdp_w":
        raise QuantwiseError(f"{where}: '{key}' must be positive, got {value}")
    return value


def _choice(row: dict[str, str], key: str, allowed: tuple[str, ...], default: str, where: str) -> str:
    value = (row.get(key) or default).strip().lower()
    if value not in allowed:
        raise QuantwiseError(f"{where}: '{key}' must be one of {', '.join(allowed)}, got {value!r}")
    return value


def gpu_from_row(row: dict[str, str], where: str) -> GPU:
    missing = [key for key in _REQUIRED if not (row.get(key) or "").strip()]
    if missing:
        raise QuantwiseError(f"{where}: missing column(s) {', '.join(missing)}")
    unconfirmed = tuple(x for x in (row.get("unconfirmed") or "").split(";") if x)
    # Unconfirmed figures are used (the architecture has the path) but flagged wherever printed.
    rates = {k: _number(row, k, where, optional=True) for k in _OPTIONAL_RATES}
    return GPU(
        id=row["id"].strip().lower(), name=row["name"].strip(), arch=(row.get("arch") or "").strip().lower(),
        memory_gb=_number(row, "memory_gb", where), bandwidth_tbps=_number(row, "bandwidth_tbps", where),
        fp16_tflops=_number(row, "fp16_tflops", where), **rates,
        interconnect=(row.get("interconnect") or "PCIe").strip(),
        interconnect_gbps=_number(row, "interconnect_gbps", where, optional=True) or 32.0,
        tdp_w=_number(row, "tdp_w", where, optional=True), price_per_hour=_number(row, "price_per_hour", where),
        price_source=(row.get("price_source") or "user file").strip(), price_date=(row.get("price_date") or "").strip(),
        spec_source=(row.get("spec_source") or "user file").strip(), unconfirmed=unconfirmed,
        notes=(row.get("notes") or "").strip(),
        gpu_class=_choice(row, "class", GPU_CLASSES, "datacenter", where),
        availability=_choice(row, "availability", AVAILABILITY, "broad", where),
        fp16_acc_tflops=_number(row, "fp16_acc_tflops", where, optional=True))


def _owned(packaged: dict[str, str], given: dict[str, str], label: str) -> dict[str, str]:
    """What the user's figures change beyond their own cells: the catalogue's 'unconfirmed' mark
    no longer applies to a figure the user gave, and a price they gave is sourced to their file."""
    out = {}
    if "unconfirmed" not in given:
        out["unconfirmed"] = ";".join(x for x in (packaged.get("unconfirmed") or "").split(";")
                                      if x and x not in given)
    if "price_per_hour" in given and "price_source" not in given:
        out["price_source"], out["price_date"] = label, given.get("price_date", "")
    return out


def merge_rows(base: dict[str, dict[str, str]], extra: list[dict[str, str]], label: str) -> dict[str, dict[str, str]]:
    """Rows of a user's file merged into `base` (id -> raw row): known ids column by column (empty
    cells keep the packaged value), new ids only when every NEW_GPU_COLUMNS cell is given."""
    merged = dict(base)
    for line, row in enumerate(extra, start=2):
        key = (row.get("id") or "").strip().lower()
        if not key:
            raise QuantwiseError(f"{label} line {line}: missing column(s) id")
        given = {k: v for k, v in row.items() if k and v is not None and v.strip()}
        if key in merged:
            merged[key] = {**merged[key], **_owned(merged[key], given, label), **given, "id": key}
            continue
        missing = [c for c in NEW_GPU_COLUMNS if c not in given]
        if missing:
            raise QuantwiseError(f"{label} line {line}: new GPU {key!r} must give every column; missing "
                                 f"{', '.join(missing)} (write 'none' for a rate the chip lacks)")
        merged[key] = {**given, "id": key}
    return merged


def load_catalog(gpu_file: str | Path | None = None) -> dict[str, GPU]:
    """The packaged catalogue, merged with the rows of `gpu_file` (see merge_rows)."""
    raw = {row["id"].strip().lower(): row for row in read_rows("gpus.csv")}
    if gpu_file:
        raw = merge_rows(raw, read_rows(gpu_file), str(gpu_file))
    where = {key: f"gpus.csv ({key})" if not gpu_file else f"{gpu_file} ({key})" for key in raw}
    return {key: gpu_from_row(row, where[key]) for key, row in raw.items()}


def resolve_gpus(catalog: dict[str, GPU], names: list[str] | None) -> list[GPU]:
    """GPUs by id (case-insensitive); all of them when names is empty."""
    return pick(catalog, names, "GPU")
