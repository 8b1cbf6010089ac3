"""`quantize --for ENGINE`: choose from the start what the serving engine loads, so the export
never has to refuse: group sizes that divide each layer's input width (per layer: g128 where it
divides, g64 or g32 where it does not), static groups instead of act-order permutations, and a
refusal up front for formats the engine has no kernel for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..formats import FormatKind, Granularity, QuantSpec, parse_spec

TARGETS = {
    "vllm": "compressed-tensors",          # also gptq / awq where one format fits every layer
    "transformers": "compressed-tensors",
    "llama.cpp": "gguf",
}
_FALLBACK_GROUPS = (128, 64, 32)


class TargetError(ValueError):
    """A format the chosen engine cannot serve."""


@dataclass(frozen=True)
class TargetPlan:
    export_format: str
    overrides: dict[str, str]     # full linear name -> format, where the default does not fit
    static_groups: bool           # act-order must keep groups contiguous in the original order
    notes: list[str]


def _divisible_group(spec: QuantSpec, width: int, multiple_of: int) -> QuantSpec | None:
    for group in _FALLBACK_GROUPS:
        if group <= spec.group_size and width % group == 0 and group % multiple_of == 0:
            return dataclasses.replace(spec, group_size=group)
    return None


def plan_for(target: str, fmt: str, linear_shapes: dict[str, tuple[int, int]], act_order: bool) -> TargetPlan:
    """What quantize changes so that `target` loads the result; linear_shapes: name -> (out, in)."""
    if target not in TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    spec = parse_spec(fmt)
    engine_format = TARGETS[target]
    if spec.kind is FormatKind.NF4:
        raise TargetError(f"{target} has no NF4 kernel outside bitsandbytes; use int4-g128 (or int4-g64)")
    if spec.kind is FormatKind.FP8_E5M2 or (spec.kind is FormatKind.FP8_E4M3 and target == "llama.cpp"):
        raise TargetError(f"{target} does not serve {spec.name}; use fp8_e4m3-channel for vLLM or int8 for llama.cpp")
    if target == "llama.cpp" and (spec.kind is not FormatKind.INT or spec.bits not in (4, 8)):
        raise TargetError(f"llama.cpp export transcodes INT4 and INT8; {spec.name} has no GGUF block type here")
    notes, overrides = [], {}
    if spec.granularity is Granularity.GROUP:
        for name, (_, width) in sorted(linear_shapes.items()):
            fits = width % spec.group_size == 0 if target != "llama.cpp" else spec.group_size % 32 == 0
            if fits:
                continue
            chosen = _divisible_group(spec, width, 32 if target == "llama.cpp" else 1)
            if chosen is None:
                raise TargetError(f"{name}: no group size of {_FALLBACK_GROUPS} divides its input width {width}")
            overrides[name] = chosen.name
        if overrides:
            widths = sorted({linear_shapes[n][1] for n in overrides})
            notes.append(f"{len(overrides)} layers with input width {', '.join(map(str, widths))} use "
                         f"{', '.join(sorted(set(overrides.values())))} ({spec.group_size} does not divide them)")
    if act_order:
        notes.append("act-order keeps static groups (engines reject non-contiguous groups)")
    return TargetPlan(engine_format, overrides, act_order, notes)
