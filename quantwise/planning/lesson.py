"""The lesson's opening scenario (70B Llama-3, A100s) checked against the planner's own numbers."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import read_rows
from ..hardware.catalog import GPU
from ..hardware.support import SupportCell
from ..models import ModelArch
from .assumptions import PlannerAssumptions
from .plan import min_gpus, monthly_cost
from .precisions import PRECISIONS
from .roofline import Deployment


@dataclass(frozen=True)
class LessonCheck:
    claim: str
    lesson: str
    quantwise: str
    verdict: str          # agrees | differs | wrong
    why: str


def _deployment(arch, gpu, precision, tp, context, assumptions) -> Deployment:
    return Deployment(arch, gpu, PRECISIONS[precision], tp, context, "fp16", False, assumptions)


def check_lesson(arch: ModelArch, a100: GPU, context: int, assumptions: PlannerAssumptions,
                 support: list[SupportCell]) -> list[LessonCheck]:
    """Each claim of data/lesson_claims.csv recomputed; plus the support-matrix disagreements."""
    claims = {row["id"]: row for row in read_rows("lesson_claims.csv")}
    fp16_1 = _deployment(arch, a100, "fp16", 1, context, assumptions)
    fp16_2 = _deployment(arch, a100, "fp16", 2, context, assumptions)
    int8_1 = _deployment(arch, a100, "int8", 1, context, assumptions)
    int4_1 = _deployment(arch, a100, "int4", 1, context, assumptions)
    checks = []

    def add(claim_id: str, ours: str, verdict: str, why: str) -> None:
        row = claims[claim_id]
        lesson = f"{row['lesson_value']} {row['unit']}".strip()
        checks.append(LessonCheck(row["claim"], lesson, ours, verdict, why))

    def near(ours: float, claim_id: str, tolerance: float) -> str:
        lesson = float(claims[claim_id]["lesson_value"])
        return "agrees" if abs(ours / lesson - 1) <= tolerance else "differs"

    params_b = fp16_1.params.total / 1e9
    add("fp16_weights", f"{fp16_1.weight_bytes / 1e9:.1f} GB", near(fp16_1.weight_bytes / 1e9, "fp16_weights", 0.05),
        f"{params_b:.2f}B parameters x 2 bytes")
    add("int8_weights", f"{int8_1.weight_bytes / 1e9:.1f} GB", near(int8_1.weight_bytes / 1e9, "int8_weights", 0.05),
        "per-channel fp16 scales; embeddings and lm_head kept in FP16")
    add("int4_weights", f"{int4_1.weight_bytes / 1e9:.1f} GB", near(int4_1.weight_bytes / 1e9, "int4_weights", 0.05),
        "g128 fp16 scales add 0.125 bit/weight; embeddings and lm_head kept in FP16 add ~4 GB")
    stream_ms = fp16_1.weight_bytes / 2.0e12 * 1e3
    realistic = fp16_1.weight_bytes / (a100.bandwidth_bytes_per_s * assumptions.bandwidth_efficiency) * 1e3
    add("fp16_stream_ms", f"{stream_ms:.1f} ms", near(stream_ms, "fp16_stream_ms", 0.05),
        f"arithmetic right at 100% of 2 TB/s; at the measured ~{assumptions.bandwidth_efficiency:.0%} of "
        f"{a100.bandwidth_tbps} TB/s it is {realistic:.0f} ms")
    fits = fp16_2.max_batch >= 1
    needed_tp = min_gpus(arch, a100, PRECISIONS["fp16"], context, "fp16", assumptions)
    add("fp16_two_a100_fit", f"{'yes' if fits else 'no'}: {fp16_2.usable_bytes / 1e9:.0f} GB usable vs "
        f"{fp16_2.weight_bytes / 1e9:.0f} GB weights", "agrees" if fits else "wrong",
        f"KV cache for one {context}-token sequence needs {fp16_2.kv_bytes_per_token * context / 1e9:.2f} GB more; "
        f"{'room for ' + str(fp16_2.max_batch) + ' sequences' if fits else str(needed_tp) + ' A100s are needed'}")
    ms_b1 = fp16_2.step_time(1).total_s * 1e3
    batch_180 = next((b for b in range(1, 4097) if fp16_2.step_time(b).total_s * 1e3 >= 180), None)
    add("fp16_two_a100_ms", f"{ms_b1:.0f} ms at batch 1", "differs",
        f"180 ms would need batch {batch_180} of {context}-token sequences (KV reads dominate), far beyond what fits"
        if batch_180 else "180 ms is not reached at any batch up to 4096")
    cost2 = monthly_cost(a100, 2, assumptions)
    add("fp16_two_a100_cost", f"${cost2:,.0f}", near(cost2, "fp16_two_a100_cost", 0.1),
        f"at ${a100.price_per_hour}/GPU-hour ({a100.price_source}, {a100.price_date}) x 730 h; the lesson's figure "
        f"implies ${float(claims['fp16_two_a100_cost']['lesson_value']) / 2 / 730:.2f}/GPU-hour")
    int8_fits = int8_1.max_batch >= 1
    add("int8_one_a100_fit", f"{'yes' if int8_fits else 'no'}: {int8_1.usable_bytes / 1e9:.1f} GB usable vs "
        f"{int8_1.weight_bytes / 1e9:.1f} GB weights", "agrees" if int8_fits else "wrong",
        f"with {assumptions.gpu_memory_utilization:.0%} of 80 GB usable and {assumptions.runtime_overhead_gb} GB "
        f"runtime overhead, {params_b:.1f}B parameters in INT8 leave no room for KV cache")
    cost1 = monthly_cost(a100, 1, assumptions)
    add("int8_one_a100_cost", f"${cost1:,.0f}", "agrees" if cost1 < 1200 else "differs",
        f"at ${a100.price_per_hour}/GPU-hour; and the plan does not fit (above)" if not int8_fits else "")
    for cell in support:
        if cell.disagrees_with_lesson:
            rate = f": {cell.tensor_tflops:g} T/s" if cell.tensor_tflops else ": no rate listed"
            checks.append(LessonCheck(
                f"{cell.format.upper()} tensor cores on {cell.gpu}", cell.lesson_says, cell.path.value,
                "unconfirmed" if cell.unconfirmed else "wrong",
                f"from the catalogue's dense tensor-core rates{rate}"
                + (" (the catalogue marks this figure unconfirmed)" if cell.unconfirmed else "")))
    return checks
