"""Format x GPU support, derived from the catalogue's tensor-core rates (never hand-written)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..data import read_rows
from .catalog import GPU


class ComputePath(StrEnum):
    NATIVE = "native"            # tensor cores multiply this type directly
    DEQUANTIZE = "dequantize"    # weights are expanded to FP16 in registers, then FP16 tensor cores


SUPPORT_FORMATS = ("fp16", "bf16", "fp8", "int8", "int4", "fp4")

_RATE_FIELD = {"fp16": "fp16_tflops", "bf16": "fp16_tflops", "fp8": "fp8_tflops", "int8": "int8_tops",
               "int4": "int4_tops", "fp4": "fp4_tflops"}


def compute_path(gpu: GPU, fmt: str) -> ComputePath:
    """How a matrix multiply with operands in `fmt` runs on `gpu`."""
    rate = getattr(gpu, _RATE_FIELD[fmt])
    return ComputePath.NATIVE if rate else ComputePath.DEQUANTIZE


@dataclass(frozen=True)
class SupportCell:
    format: str
    gpu: str
    path: ComputePath
    tensor_tflops: float | None
    lesson_says: str | None
    unconfirmed: bool = False

    @property
    def disagrees_with_lesson(self) -> bool:
        return self.lesson_says is not None and self.lesson_says != self.path.value


def support_matrix(gpus: list[GPU]) -> list[SupportCell]:
    lesson = {(r["format"], r["gpu"]): r["lesson_says"] for r in read_rows("lesson_support_matrix.csv")}
    cells = []
    for fmt in SUPPORT_FORMATS:
        for gpu in gpus:
            field = _RATE_FIELD[fmt]
            cells.append(SupportCell(fmt, gpu.id, compute_path(gpu, fmt), getattr(gpu, field),
                                     lesson.get((fmt, gpu.id)), field in gpu.unconfirmed))
    return cells
