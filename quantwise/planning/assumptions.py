"""Every efficiency factor and overhead the planner uses, named, with its default and reason.

Override any of them from the CLI with `--assume name=value`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


def _why(default, reason: str):
    """A field with its default and the reason for it (printed by `quantwise assumptions`)."""
    return field(default=default, metadata={"why": reason})


def reasons() -> dict[str, str]:
    return {f.name: f.metadata["why"] for f in dataclasses.fields(PlannerAssumptions)}


@dataclass(frozen=True)
class PlannerAssumptions:
    """Each field's reason is in its metadata (`why`): `quantwise assumptions` prints it."""

    bandwidth_efficiency: float = _why(0.70,
        "Fraction of spec memory bandwidth that 16-bit (and W8A8) decode reaches. Public measurement: gpt-"
        "fast Llama-2-7B fp16 batch 1 on A100-80GB streams 1,397 of 2,039 GB/s = 0.685.")
    weight_only_bandwidth_efficiency: float = _why(0.65,
        "Weight-only low-bit kernels (Marlin-class INT4/INT8/FP8 GEMV) stream packed weights about as well as"
        " FP16 GEMV at small batch. Assumption; measure with `quantwise bench`.")
    nf4_bandwidth_efficiency: float = _why(0.35,
        "bitsandbytes NF4 kernels are not Marlin-class: they reach a far smaller fraction of bandwidth. "
        "Assumption; measure with `quantwise bench`.")
    compute_efficiency: float = _why(0.60,
        "Fraction of dense tensor-core peak reached by serving-shape GEMMs. Assumption (large cuBLAS GEMMs "
        "reach 60-80%; decode shapes are skinnier).")
    dequant_compute_efficiency: float = _why(0.45,
        "Weight-only formats dequantize in registers before FP16 MMA: past small batches the dequantization "
        "work and tiling cost throughput. Fraction of FP16 peak kept. Assumption.")
    nf4_compute_efficiency: float = _why(0.20,
        "bitsandbytes NF4 (and any precision an engine runs without a fast kernel) dequantizes with generic "
        "kernels: far below Marlin-class throughput past batch 1. Assumption.")
    step_overhead_s: float = _why(0.001,
        "Per decode step: scheduling, sampling, launch gaps (with CUDA graphs). Assumption.")
    layer_overhead_s: float = _why(0.0,
        "Per decoder layer per step: Python dispatch and kernel launches of eager engines (no CUDA graphs). 0"
        " for graph-captured engines; the engines file sets it per engine.")
    kv_bandwidth_efficiency: float = _why(0.70,
        "Fraction of spec bandwidth paged-attention decode kernels reach reading the KV cache (scattered "
        "blocks, not one weight stream). Defaults to the weight-stream figure; fit with `quantwise calibrate`.")
    sequence_overhead_s: float = _why(0.0,
        "Per decoding sequence per step: sampling, stop checks, detokenisation and scheduler bookkeeping "
        "on the host, which grow with concurrency. 0 by default; engines and `quantwise calibrate` set it.")
    allreduce_latency_s: float = _why(1.0e-5,
        "Latency of one tensor-parallel all-reduce call over NVLink / Infinity Fabric (GPU to GPU through "
        "the switch). Assumption.")
    pcie_allreduce_latency_s: float = _why(3.0e-5,
        "Latency of one tensor-parallel all-reduce call over PCIe, where there is no peer switch and each "
        "call is a round trip through the host: about 3x NVLink's. Assumption.")
    interconnect_efficiency: float = _why(0.5,
        "Share of the catalogue's interconnect rate an all-reduce reaches. The catalogue lists NVLink's "
        "bidirectional aggregate (900 GB/s on H100); NCCL's all_reduce bus bandwidth on 8x H100 NVLink is "
        "about 450-480 GB/s, i.e. ~0.5 of it. Assumption for PCIe too.")
    gpu_memory_utilization: float = _why(0.90,
        "vLLM's default gpu_memory_utilization: the share of GPU memory the engine plans with.")
    runtime_overhead_gb: float = _why(1.5,
        "CUDA context, cuBLAS workspaces, CUDA graphs per GPU. Assumption.")
    prefill_chunk_tokens: int = _why(2048,
        "Token budget of one engine step (decode tokens + prefill chunks: vLLM max_num_batched_tokens); it "
        "also sizes the activation workspace. The engines file sets it per engine.")
    hours_per_month: float = _why(730.0,
        "Hours in a month for monthly cost (365 x 24 / 12 = 730).")

    def with_overrides(self, overrides: dict[str, str]) -> PlannerAssumptions:
        known = {f.name: f.type for f in dataclasses.fields(self)}
        changes = {}
        for key, text in overrides.items():
            if key not in known:
                raise ValueError(f"unknown assumption {key!r}; known: {', '.join(known)}")
            try:
                value = int(text) if known[key] in ("int", int) else float(text)
            except ValueError:
                raise ValueError(f"assumption {key} needs a number, got {text!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"assumption {key} needs a finite number, got {text!r}")
            positive = value > 0 or (value == 0 and key in ("layer_overhead_s", "sequence_overhead_s"))
            if not positive or (key.endswith("efficiency") or key == "gpu_memory_utilization") and value > 1:
                raise ValueError(f"assumption {key}={value} is out of range")
            changes[key] = value
        return dataclasses.replace(self, **changes)


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--assume takes name=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


DEFAULT_ASSUMPTIONS = PlannerAssumptions()  # frozen: safe to share as a default argument
