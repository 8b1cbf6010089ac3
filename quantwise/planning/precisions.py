"""Serving precisions the planner compares: weight format, matmul type and quantization methods."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.lookup import pick
from ..formats import QuantSpec, parse_spec


@dataclass(frozen=True)
class PlanPrecision:
    """id: planner name; weight_format: formats spec name of the linear weights ("" when the
    formats package has no such format: storage_bits then gives the size);
    matmul: operand type of the tensor-core multiply when the GPU has that path (fp16/fp8/int8/fp4);
    weight_only: activations stay 16-bit, weights are dequantized in the kernel;
    methods: quantization methods that produce it, best-quality first;
    storage_bits: bits per weight including scales, for formats sized here rather than in formats/."""

    id: str
    label: str
    weight_format: str
    matmul: str
    weight_only: bool
    methods: tuple[str, ...]
    storage_bits: float | None = None

    @property
    def weight_spec(self) -> QuantSpec | None:
        return parse_spec(self.weight_format) if self.weight_format else None

    @property
    def is_float_cast(self) -> bool:
        return self.weight_format in ("fp16", "bf16")

    @property
    def is_nf4(self) -> bool:
        return self.weight_format.startswith("nf4")


PRECISIONS: dict[str, PlanPrecision] = {p.id: p for p in [
    PlanPrecision("fp16", "FP16", "fp16", "fp16", False, ("none",)),
    PlanPrecision("bf16", "BF16", "bf16", "fp16", False, ("none",)),
    PlanPrecision("fp8", "FP8 E4M3 W8A8", "fp8_e4m3-channel", "fp8", False, ("fp8-dynamic",)),
    PlanPrecision("int8", "INT8 W8A8", "int8-channel", "int8", False, ("smoothquant",)),
    PlanPrecision("int8-wo", "INT8 weight-only W8A16", "int8-channel", "fp16", True, ("rtn",)),
    PlanPrecision("int4", "INT4 g128 W4A16", "int4-g128", "fp16", True, ("awq", "gptq", "rtn")),
    PlanPrecision("int3", "INT3 g128 W3A16", "int3-g128", "fp16", True, ("awq", "gptq")),
    PlanPrecision("nf4", "NF4 g64 double-quant", "nf4-g64-dq", "fp16", True, ("bnb-nf4",)),
    # FP4 E2M1 elements. NVFP4: one FP8 E4M3 scale per 16 elements (4 + 8/16 = 4.5 bits/weight);
    # MXFP4 (OCP Microscaling spec v1.0): one E8M0 scale per 32 (4 + 8/32 = 4.25). W4A4 on
    # Blackwell's FP4 tensor cores; elsewhere the weights are dequantized (weight-only kernels).
    PlanPrecision("nvfp4", "NVFP4 W4A4", "", "fp4", False, ("nvfp4-ptq",), storage_bits=4.5),
    PlanPrecision("mxfp4", "MXFP4 W4A4", "", "fp4", False, ("mxfp4-ptq",), storage_bits=4.25),
]}

KV_DTYPE_BYTES = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0}


def resolve_precisions(names: list[str] | None) -> list[PlanPrecision]:
    return pick(PRECISIONS, names, "precision")
