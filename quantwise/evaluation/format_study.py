"""The lesson's first claims made visible: bits per weight and SQNR of every format on synthetic
weight matrices (Gaussian, heavy-tailed Student-t, Gaussian with outlier input channels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..formats import QuantSpec, parse_spec, quantize, sqnr_db

# Formats and granularities compared by `quantwise formats`, in table order.
STUDY_FORMATS = [
    "fp16", "bf16",
    "int8-tensor", "int8-channel", "int8-channel-asym",
    "fp8_e4m3-tensor", "fp8_e4m3-channel", "fp8_e5m2-tensor", "fp8_e5m2-channel",
    "int4-tensor", "int4-channel", "int4-g128", "int4-g128-asym", "int4-g64", "int4-g32-asym",
    "nf4-g64", "nf4-g64-dq",
    "int3-g128", "int3-g64-asym", "int2-g64-asym",
]


def gaussian(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen) * 0.02


def student_t(gen: torch.Generator, rows: int, cols: int, dof: float = 3.0) -> torch.Tensor:
    """t(dof) = N(0,1) / sqrt(chi2(dof)/dof); chi2 drawn as a sum of squared normals."""
    normal = torch.randn(rows, cols, generator=gen)
    chi2 = torch.randn(rows, cols, int(dof), generator=gen).pow(2).sum(-1)
    return normal / torch.sqrt(chi2 / dof) * 0.02


def outlier_channels(gen: torch.Generator, rows: int, cols: int, fraction: float = 0.005,
                     magnitude: float = 20.0) -> torch.Tensor:
    """Gaussian with a few input columns scaled up, as weights facing outlier activation channels."""
    weights = gaussian(gen, rows, cols)
    count = max(1, int(cols * fraction))
    picked = torch.randperm(cols, generator=gen)[:count]
    weights[:, picked] *= magnitude
    return weights


DISTRIBUTIONS: dict[str, Callable[[torch.Generator, int, int], torch.Tensor]] = {
    "gaussian": gaussian,
    "student_t": student_t,
    "outliers": outlier_channels,
}


@dataclass(frozen=True)
class FormatStudyRow:
    format: str
    kind: str
    granularity: str
    group_size: int | None
    symmetric: bool
    bits_per_weight: float
    sqnr_gaussian_db: float
    sqnr_student_t_db: float
    sqnr_outliers_db: float


def run_format_study(formats: list[str] | None = None, rows: int = 1024, cols: int = 1024,
                     seed: int = 0, progress=None) -> list[FormatStudyRow]:
    """Quantize each synthetic matrix in each format; deterministic for a given seed.
    `progress(done, total, format)` is called after each format."""
    specs = [parse_spec(name) for name in (formats or STUDY_FORMATS)]
    matrices = {}
    for offset, (name, make) in enumerate(DISTRIBUTIONS.items()):
        gen = torch.Generator().manual_seed(seed * 1000 + offset)
        matrices[name] = make(gen, rows, cols)
    results = []
    for spec in specs:
        results.append(_study_one(spec, matrices))
        if progress:
            progress(len(results), len(specs), spec.name)
    return results


def _study_one(spec: QuantSpec, matrices: dict[str, torch.Tensor]) -> FormatStudyRow:
    sqnr = {}
    bits = 0.0
    for name, weights in matrices.items():
        packed = quantize(weights, spec)
        bits = packed.bits_per_weight
        sqnr[name] = round(sqnr_db(weights, packed.dequantize()), 2)
    return FormatStudyRow(
        format=spec.name, kind=spec.kind.value, granularity=spec.granularity.value,
        group_size=spec.group_size, symmetric=spec.symmetric, bits_per_weight=round(bits, 4),
        sqnr_gaussian_db=sqnr["gaussian"], sqnr_student_t_db=sqnr["student_t"],
        sqnr_outliers_db=sqnr["outliers"])
