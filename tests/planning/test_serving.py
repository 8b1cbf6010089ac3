"""Acceptance tests of the serving model: each asserts an exact number or relation and can fail."""

import dataclasses
import math
import time

import pytest

from quantwise.errors import QuantwiseError
from quantwise.hardware import load_catalog
from quantwise.models import resolve_arch
from quantwise.planning.assumptions import PlannerAssumptions
from quantwise.planning.engines import load_engines
from quantwise.planning.plan import ServingRequest, serving_grid
from quantwise.planning.precisions import PRECISIONS
from quantwise.planning.recommend import RecommendRequest, recommend
from quantwise.planning.roofline import Deployment
from quantwise.planning.serving import Workload, best_concurrency, budget_concurrency, serving_point

CATALOG = load_catalog()
ENGINES = load_engines()
VLLM = ENGINES["vllm"].apply(PlannerAssumptions())
LLAMA8, LLAMA70 = resolve_arch("llama-3-8b"), resolve_arch("llama-3-70b")


def dep(arch=LLAMA70, gpu="h200", precision="fp8", tp=1, assumptions=VLLM, **kw):
    return Deployment(arch, CATALOG[gpu], PRECISIONS[precision], tp, 4096, assumptions=assumptions, **kw)


def test_kv_capacity_caps_concurrency_exactly():
    d, w = dep(), Workload(2048, 2048, 1.0)   # no targets: the memory-limited concurrency
    limit = best_concurrency(d, w, use_targets=False)
    usable = 141e9 * 0.90 - 1.5e9                       # 90% of HBM minus runtime overhead
    free = usable - d.weight_bytes - d.workspace_bytes
    per_sequence = 80 * 8 * 128 * 2 * 2 * (2048 + 2048 / 2)  # K and V, 80 layers, 8 KV heads, fp16, mean length
    assert d.kv_bytes_per_token * (2048 + 1024) == per_sequence
    assert limit.binding == "memory"
    assert limit.point.concurrency == math.floor(free / per_sequence) == limit.kv_limit
    assert (limit.point.concurrency + 1) * per_sequence > free >= limit.point.concurrency * per_sequence
    half = best_concurrency(dataclasses.replace(d, kv_dtype="fp8"), w, use_targets=False)
    assert half.point.concurrency == math.floor(free / (per_sequence / 2))  # FP8 KV doubles the room


def test_70b_fp8_one_h100_vs_one_h200_is_a_kv_space_effect():
    w = Workload(2048, 2048, 1.0)
    h100, h200 = dep(gpu="h100-sxm"), dep(gpu="h200")
    assert best_concurrency(h100, w, use_targets=False).point is None  # 70 GB of FP8 weights leave no room
    h100x2 = best_concurrency(dep(gpu="h100-sxm", tp=2), w, use_targets=False).point
    one = best_concurrency(h200, w, use_targets=False).point
    assert one.tpot_s > 0 and h100x2.concurrency > one.concurrency


def test_ttft_linear_in_prompt_length_when_compute_bound():
    d = dep(LLAMA8, "h100-sxm", "fp16")
    rate = d.tp * CATALOG["h100-sxm"].fp16_tflops * 1e12 * VLLM.compute_efficiency
    quadratic = 2.0 * LLAMA8.layers * LLAMA8.heads * LLAMA8.head_dim / rate  # causal attention, s per token^2
    lengths = [1024, 2048, 3072, 4096, 5120]
    for length in lengths:
        assert d.mixed_step(0, 0, length, length / 2, logits=1).bound == "compute"
    linear = [d.prefill_time_s(n) - quadratic * n * n for n in lengths]
    steps = [b - a for a, b in zip(linear, linear[1:], strict=False)]
    assert steps == pytest.approx([steps[0]] * len(steps), rel=1e-9)
    assert steps[0] / 1024 == pytest.approx(2 * d.linear_params_active / rate, rel=1e-9)
    assert quadratic * 4096 ** 2 / d.prefill_time_s(4096) < 0.15  # attention a small share at 4k


def test_prefill_chunks_slow_decode():
    d = dep()
    short, long = Workload(200, 300, 1), Workload(4000, 300, 1)
    a, b = serving_point(d, short, 32), serving_point(d, long, 32)
    assert a.tpot_s > a.decode_only_s and b.tpot_s - b.decode_only_s > a.tpot_s - a.decode_only_s
    assert b.prefill_tokens_per_step == pytest.approx(32 * 4000 / 300)
    assert a.ttft_s >= a.ttft_unloaded_s


def test_step_budget_caps_concurrency():
    d = dep(LLAMA8, "h200", "fp8")
    w = Workload(6000, 100, 1.0)
    limit = best_concurrency(d, w, use_targets=False)
    assert limit.binding == "step budget"
    assert limit.point.concurrency == budget_concurrency(d, w, False) == int(8192 / (1 + 60))


def test_targets_bind_monotonically():
    d = dep()
    w = Workload(2000, 300, 5, tpot_ms=40)
    limit = best_concurrency(d, w)
    assert limit.binding == "TPOT" and limit.point.tpot_s * 1e3 <= 40
    assert serving_point(d, w, limit.point.concurrency + 1).tpot_s * 1e3 > 40


def test_tensor_parallel_per_gpu_throughput_falls_with_degree():
    w = Workload(1024, 256, 1.0)
    per_gpu_max, per_gpu_fixed = [], []
    for tp in (1, 2, 4, 8):
        d = dep(LLAMA8, "h100-sxm", "fp16", tp=tp)
        per_gpu_max.append(best_concurrency(d, w, use_targets=False).point.output_tokens_per_s / tp)
        per_gpu_fixed.append(serving_point(d, w, 64).output_tokens_per_s / tp)
    assert per_gpu_max == sorted(per_gpu_max, reverse=True) and len(set(per_gpu_max)) == 4
    assert per_gpu_fixed == sorted(per_gpu_fixed, reverse=True) and len(set(per_gpu_fixed)) == 4
    pcie = [serving_point(dep(LLAMA8, "l40s", "fp16", tp=tp), w, 64).output_tokens_per_s / tp for tp in (1, 2, 4)]
    assert pcie[1] / pcie[0] < per_gpu_fixed[1] / per_gpu_fixed[0]  # PCIe all-reduces cost more than NVLink


def test_static_batching_is_slower_than_continuous():
    w = Workload(1000, 200, 1.0)
    cont = serving_point(dep(LLAMA8, "a100-80gb", "fp16"), w, 16)
    static = serving_point(dep(LLAMA8, "a100-80gb", "fp16", assumptions=ENGINES["transformers"].apply(
        PlannerAssumptions())), w, 16, static=True)
    assert static.output_tokens_per_s < cont.output_tokens_per_s and static.ttft_s > cont.ttft_s


def test_fp4_native_on_blackwell_dequantized_on_hopper():
    b200, h100 = dep(LLAMA70, "b200", "nvfp4"), dep(LLAMA70, "h100-sxm", "nvfp4")
    assert b200.matmul_path.value == "native" and h100.matmul_path.value == "dequantize"
    assert b200.linear_flops_per_s() == pytest.approx(9000e12 * VLLM.compute_efficiency)
    linear = sum(s.out_features * s.in_features * s.count for s in __import__(
        "quantwise.models", fromlist=["linear_shapes"]).linear_shapes(LLAMA70))
    assert b200._linear_bytes[0] == pytest.approx(linear * 4.5 / 8)


def test_engine_refuses_formats_it_cannot_run():
    request = ServingRequest(LLAMA8, [CATALOG["h100-sxm"]], [PRECISIONS["fp8"], PRECISIONS["int4"]],
                             [ENGINES["llama.cpp"]], Workload(100, 100, 1.0))
    rows, refused = serving_grid(request)
    assert [r.precision for r in rows] == ["int4"]
    assert refused == ["llama.cpp (llama-server) has no kernel for fp8 on H100 SXM5 80GB (hopper); on hopper GPUs "
                       "it runs bf16, fp16, int3, int4, int8-wo, mxfp4 (source: llama.cpp README and ggml CUDA/HIP "
                       "backends: GGUF types F16/BF16/Q8_0)"]


def test_slow_kernels_are_slower():
    fast = serving_point(dep(LLAMA8, "h100-sxm", "int4"), Workload(500, 200, 1), 32)
    slow = serving_point(dep(LLAMA8, "h100-sxm", "int4", slow_kernel=True), Workload(500, 200, 1), 32)
    assert slow.tpot_s > fast.tpot_s


def test_whole_grid_under_a_second():
    """GPUs x precisions x engines x TP x concurrency (binary search), two KV dtypes."""
    req = RecommendRequest(LLAMA70, list(CATALOG.values()), Workload(2000, 300, 5, ttft_ms=1000, tpot_ms=40),
                           list(ENGINES.values()), list(PRECISIONS.values()), ("fp16", "fp8"))
    recommend(req)  # warm the memoized sizes
    best = min(_timed(lambda: recommend(req)) for _ in range(3))
    assert best < 1.0, f"{best:.2f} s"


def _timed(fn) -> float:
    """CPU seconds of this process: the development machines are shared, wall time is noisy."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def test_zero_lengths_refused():
    with pytest.raises(QuantwiseError, match="--input-len must be a positive number of tokens, got 0"):
        Workload(0, 10, 1.0)


def test_user_assumptions_win_over_engine_and_profile():
    from quantwise.planning.engines import effective_assumptions

    gpu, engine = CATALOG["h100-sxm"], ENGINES["vllm"]
    plain = effective_assumptions(PlannerAssumptions(), engine, gpu, None)
    assert plain.compute_efficiency == engine.compute_efficiency
    profile = {("*", "vllm"): {"compute_efficiency": 0.5, "bandwidth_efficiency": 0.6}}
    fitted = effective_assumptions(PlannerAssumptions(), engine, gpu, profile)
    assert (fitted.compute_efficiency, fitted.bandwidth_efficiency) == (0.5, 0.6)
    mine = PlannerAssumptions().with_overrides({"compute_efficiency": "0.9"})
    both = effective_assumptions(mine, engine, gpu, profile)
    assert (both.compute_efficiency, both.bandwidth_efficiency) == (0.9, 0.6)


def test_static_batch_prices_its_prefill():
    # A static batch spends its prefill inside the cycle: input tokens cost that share (they were free).
    w = Workload(1000, 200, 1.0)
    d = dep(LLAMA8, "a100-80gb", "fp16", assumptions=ENGINES["transformers"].apply(PlannerAssumptions()))
    point = serving_point(d, w, 16, static=True)
    prefill_all = d.mixed_step(0.0, 0.0, 16 * 1000.0, 500.0, logits=16.0).total_s
    assert point.prefill_share == pytest.approx(prefill_all / (prefill_all + 200 * point.decode_only_s), rel=1e-12)
    assert 0.01 < point.prefill_share < 0.5
