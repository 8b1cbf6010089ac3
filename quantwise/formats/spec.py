"""What a number format is: a frozen, validated description, independent of any tensor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class FormatKind(StrEnum):
    INT = "int"
    AFFINE = "affine"
    NF4 = "nf4"
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"
    FP16 = "fp16"
    BF16 = "bf16"


class Granularity(StrEnum):
    """Which elements share one scale (rows are output channels for weights, tokens for activations)."""

    TENSOR = "tensor"
    CHANNEL = "channel"
    TOKEN = "token"
    GROUP = "group"


# Bytes of each scale storage dtype; kept torch-free so the planner can import specs cheaply.
SCALE_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}

# Storage conventions of the formats' reference implementations: GPTQ/AWQ keep fp16 scales,
# bitsandbytes keeps fp32 NF4 absmax (0.5 bit/weight at block 64 without double quantization),
# FP8 checkpoints (vLLM, llm-compressor) keep fp32 scales.
_DEFAULT_SCALE_DTYPE = {
    FormatKind.INT: "float16",
    FormatKind.AFFINE: "float16",
    FormatKind.NF4: "float32",
    FormatKind.FP8_E4M3: "float32",
    FormatKind.FP8_E5M2: "float32",
}

_FIXED_BITS = {FormatKind.NF4: 4, FormatKind.FP8_E4M3: 8, FormatKind.FP8_E5M2: 8,
               FormatKind.FP16: 16, FormatKind.BF16: 16}


_INT_LIKE = (FormatKind.INT, FormatKind.AFFINE)  # names carry their bit width: int4, affine4

MAX_GROUP_SIZE = 1 << 17  # wider than the widest linear input of published LLMs (Llama-3.1-405B: 53,248)


@dataclass(frozen=True)
class QuantSpec:
    """A number format plus the granularity of its scales.

    kind: the element format. bits: width of INT and AFFINE elements (2..8; fixed for the others).
    symmetric: INT only; asymmetric stores a zero point per scale. AFFINE (x = q * scale + offset,
    q unsigned) stores a float offset per scale instead: GGUF's Q4_1 and Q4_K minima, which no
    integer zero point holds exactly.
    granularity / group_size: which elements share a scale; group_size counts elements along
    the last (input) dimension, and a row's last group may be shorter.
    scale_dtype: storage dtype of scales ("float16", "bfloat16", "float32"); None picks the
    format's customary one. double_quant / dq_block: NF4's 8-bit quantization of its absmax
    constants in blocks of dq_block (QLoRA, Dettmers et al. 2023).
    """

    kind: FormatKind
    bits: int = 0
    symmetric: bool = True
    granularity: Granularity = Granularity.TENSOR
    group_size: int | None = None
    scale_dtype: str | None = None
    double_quant: bool = False
    dq_block: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FormatKind(self.kind))
        object.__setattr__(self, "granularity", Granularity(self.granularity))
        if self.kind in _FIXED_BITS:
            if self.bits not in (0, _FIXED_BITS[self.kind]):
                raise ValueError(f"{self.kind.value} has {_FIXED_BITS[self.kind]} bits, got bits={self.bits}")
            object.__setattr__(self, "bits", _FIXED_BITS[self.kind])
        elif not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"integer formats support 2..8 bits, got bits={self.bits!r}")
        if self.granularity is Granularity.GROUP:
            if self.group_size is None or not isinstance(self.group_size, int) or self.group_size < 1:
                raise ValueError(f"group granularity needs an integer group_size >= 1, got {self.group_size!r}")
            if self.group_size > MAX_GROUP_SIZE:
                raise ValueError(f"group_size {self.group_size} is wider than any model's layers (at most "
                                 f"{MAX_GROUP_SIZE}); for one scale per row use channel granularity, e.g. int4-channel")
        elif self.group_size is not None:
            raise ValueError(f"group_size={self.group_size} given with {self.granularity.value} granularity")
        if not self.symmetric and self.kind is FormatKind.AFFINE:
            raise ValueError("affine formats hold a float offset per group already; drop -asym")
        if not self.symmetric and self.kind is not FormatKind.INT:
            raise ValueError(f"{self.kind.value} is symmetric by construction; asymmetric applies to int only")
        if self.double_quant and self.kind is not FormatKind.NF4:
            raise ValueError("double quantization of scales is defined for nf4 only")
        if self.dq_block < 1:
            raise ValueError(f"dq_block must be >= 1, got {self.dq_block}")
        if self.scale_dtype is not None and self.scale_dtype not in SCALE_DTYPE_BYTES:
            raise ValueError(f"scale_dtype must be one of {sorted(SCALE_DTYPE_BYTES)}, got {self.scale_dtype!r}")
        if self.is_float_cast:
            object.__setattr__(self, "granularity", Granularity.TENSOR)

    @property
    def is_float_cast(self) -> bool:
        """FP16/BF16: a plain cast, no scales."""
        return self.kind in (FormatKind.FP16, FormatKind.BF16)

    @property
    def scale_dtype_name(self) -> str:
        """The scale storage dtype, resolving None to the format's customary one."""
        return self.scale_dtype or _DEFAULT_SCALE_DTYPE[self.kind]

    @property
    def name(self) -> str:
        """Canonical short name, parseable by `parse_spec`: int4-g128-asym, nf4-g64-dq, fp8_e4m3-channel."""
        if self.is_float_cast:
            return self.kind.value
        head = f"{self.kind.value}{self.bits}" if self.kind in _INT_LIKE else self.kind.value
        gran = f"g{self.group_size}" if self.granularity is Granularity.GROUP else self.granularity.value
        parts = [head, gran]
        if not self.symmetric:
            parts.append("asym")
        if self.double_quant:
            parts.append("dq")
        return "-".join(parts)


_NAME_RE = re.compile(r"^(?P<head>int\d+|affine\d+|nf4|fp8_e4m3|fp8_e5m2|fp16|bf16)"
                      r"(?:-(?P<gran>tensor|channel|token|g\d+))?(?P<flags>(?:-(?:asym|sym|dq))*)$")


def parse_spec(text: str) -> QuantSpec:
    """Parse a short name such as `int4-g128-asym`, `int8-channel`, `affine4-g32`, `nf4-g64-dq`, `fp8_e4m3`.

    Defaults when the granularity is omitted: int8 and fp8 per-channel, int<8 and affine g128, nf4 g64.
    """
    match = _NAME_RE.match(text.strip().lower())
    if not match:
        raise ValueError(f"unknown format {text!r}; examples: int8-channel, int4-g128-asym, affine4-g32, "
                         "nf4-g64-dq, fp8_e4m3-tensor, fp16")
    head, gran, flags = match["head"], match["gran"], match["flags"].split("-")[1:]
    kind = next((k for k in _INT_LIKE if head.startswith(k.value)), None)
    if kind is not None:
        bits = int(head.removeprefix(kind.value))
        default_gran = "channel" if bits == 8 else "g128"
    else:
        kind, bits = FormatKind(head), 0
        default_gran = "g64" if kind is FormatKind.NF4 else "channel"
    gran = gran or default_gran
    if gran.startswith("g"):
        granularity, group_size = Granularity.GROUP, int(gran[1:])
    else:
        granularity, group_size = Granularity(gran), None
    return QuantSpec(kind=kind, bits=bits, symmetric="asym" not in flags, granularity=granularity,
                     group_size=group_size, double_quant="dq" in flags)
