import dataclasses

import pytest

from quantwise.hardware import load_catalog
from quantwise.models import resolve_arch
from quantwise.planning.assumptions import PlannerAssumptions
from quantwise.planning.plan import PlanRequest, min_gpus, plan_grid
from quantwise.planning.precisions import PRECISIONS
from quantwise.planning.roofline import Deployment, ridge_intensity

CATALOG = load_catalog()
LLAMA70 = resolve_arch("llama-3-70b")
IDEAL = dataclasses.replace(PlannerAssumptions(), bandwidth_efficiency=1.0, weight_only_bandwidth_efficiency=1.0,
                            compute_efficiency=1.0, step_overhead_s=0.0)


DEFAULT = PlannerAssumptions()


def dep(precision, gpu="a100-80gb", tp=1, context=4096, assumptions=DEFAULT, **kw):
    return Deployment(LLAMA70, CATALOG[gpu], PRECISIONS[precision], tp, context, assumptions=assumptions, **kw)


def test_lesson_weight_sizes():
    # The lesson: FP16 140 GB, INT8 70 GB, INT4 35 GB for "70B" parameters (Llama-3-70B has 70.55B).
    everything = dict(quantize_lm_head=True)
    assert dep("fp16").weight_bytes / 1e9 == pytest.approx(141.1, abs=0.1)
    embeddings = LLAMA70.vocab * LLAMA70.hidden  # the input embedding table stays FP16
    quantized = 70.55e9 - embeddings
    int8 = dep("int8", **everything).weight_bytes - embeddings * 2
    assert int8 == pytest.approx(quantized * (8 + 16 / 8192) / 8, rel=0.002)  # + per-channel fp16 scales
    int4 = dep("int4", **everything).weight_bytes - embeddings * 2
    assert int4 == pytest.approx(quantized * 4.125 / 8, rel=0.002)  # 4 bits + g128 fp16 scales


def test_lesson_stream_time_at_full_bandwidth():
    # 140 GB at 2 TB/s = 70 ms: with 100% efficiency, no overhead, batch 1, tiny context.
    d = dep("fp16", context=1, assumptions=IDEAL)
    two_tbps = dataclasses.replace(CATALOG["a100-80gb"], bandwidth_tbps=2.0)
    d = dataclasses.replace(d, gpu=two_tbps)
    # Every weight but the input embedding table (of which a step reads only its batch's rows).
    streamed = d.weight_bytes - LLAMA70.vocab * LLAMA70.hidden * 2
    assert d.step_time(1).memory_s == pytest.approx(streamed / 2e12, rel=1e-3)
    assert d.step_time(1).memory_s * 1e3 == pytest.approx(70, abs=1)


def test_kv_bytes_per_token():
    assert dep("fp16").kv_bytes_per_token == 327_680
    assert dep("fp16", kv_dtype="fp8").kv_bytes_per_token == 163_840


@pytest.mark.parametrize("gpu", list(CATALOG))
def test_fewer_bits_never_slower_when_memory_bound(gpu):
    chains = [["fp16", "int8", "int4"], ["int8-wo", "int4", "int3"], ["fp16", "fp8"]]
    for chain in chains:
        steps = [Deployment(LLAMA70, CATALOG[gpu], PRECISIONS[p], 8, 1024).step_time(1) for p in chain]
        assert all(s.bound == "memory" for s in steps)
        totals = [s.total_s for s in steps]
        assert totals == sorted(totals, reverse=True), (gpu, chain, totals)


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4", "nf4"])
def test_more_gpus_never_less_memory(precision):
    deps = [dep(precision, tp=tp) for tp in (1, 2, 4, 8)]
    usable = [d.usable_bytes for d in deps]
    batches = [d.max_batch for d in deps]
    assert usable == sorted(usable) and len(set(usable)) == 4
    assert batches == sorted(batches)


def test_ridge_intensity_units():
    h100 = CATALOG["h100-sxm"]
    assert ridge_intensity(h100, h100.fp16_tflops) == pytest.approx(989 / 3.35)  # FLOP per byte


def test_ridge_batch_equals_peak_over_bandwidth_for_fp16():
    # FP16 decode does 2 FLOP per 2-byte weight per sequence: intensity = batch. At ideal
    # efficiency with a 1-token context the ridge batch is peak FLOP/s / bandwidth (bytes/s).
    h100 = CATALOG["h100-sxm"]
    d = Deployment(LLAMA70, h100, PRECISIONS["fp16"], 4, 1, assumptions=IDEAL)
    assert d.ridge_batch() == pytest.approx(ridge_intensity(h100, h100.fp16_tflops), rel=0.02)


def test_dequant_formats_turn_compute_bound_sooner_than_native():
    a100 = CATALOG["a100-80gb"]
    native = Deployment(LLAMA70, a100, PRECISIONS["int8"], 4, 1)
    dequant = Deployment(LLAMA70, a100, PRECISIONS["nf4"], 4, 1)
    assert dequant.ridge_batch() < native.ridge_batch()


def test_fp8_falls_back_on_ampere():
    assert dep("fp8", gpu="a100-80gb").matmul_path.value == "dequantize"
    assert dep("fp8", gpu="h100-sxm").matmul_path.value == "native"
    assert dep("fp8", gpu="l40s").matmul_path.value == "native"


def test_min_gpus_lesson_scenario():
    a100 = CATALOG["a100-80gb"]
    assert min_gpus(LLAMA70, a100, PRECISIONS["fp16"], 4096, "fp16", PlannerAssumptions()) == 4
    assert min_gpus(LLAMA70, a100, PRECISIONS["int8"], 4096, "fp16", PlannerAssumptions()) == 2
    assert min_gpus(LLAMA70, a100, PRECISIONS["int4"], 4096, "fp16", PlannerAssumptions()) == 1


def test_moe_reads_only_routed_experts_at_batch_one():
    mixtral = resolve_arch("mixtral-8x7b")
    d = Deployment(mixtral, CATALOG["h100-sxm"], PRECISIONS["fp16"], 2, 1)
    read_b1, read_big = d.weight_bytes_read(1), d.weight_bytes_read(256)
    assert read_b1 / 2 / 1e9 == pytest.approx(12.9, rel=0.03)  # active parameters x 2 bytes
    assert read_big == pytest.approx(d.weight_bytes - mixtral.vocab * mixtral.hidden * 2, rel=0.01)


def test_plan_grid_rows_and_bad_batch():
    request = PlanRequest(LLAMA70, [CATALOG["h100-sxm"]], [PRECISIONS["fp16"]], [1, 8], [1024, 4096])
    rows = plan_grid(request)
    assert len(rows) == 4
    assert all(r.tokens_per_s == pytest.approx(r.batch / r.ms_per_token * 1e3) for r in rows)
    with pytest.raises(ValueError):
        plan_grid(dataclasses.replace(request, batches=[0]))


def test_assumption_overrides():
    a = PlannerAssumptions().with_overrides({"bandwidth_efficiency": "0.8"})
    assert a.bandwidth_efficiency == 0.8
    with pytest.raises(ValueError, match="unknown assumption"):
        PlannerAssumptions().with_overrides({"warp_speed": "1"})
    with pytest.raises(ValueError, match="out of range"):
        PlannerAssumptions().with_overrides({"compute_efficiency": "1.5"})
