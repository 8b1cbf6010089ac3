import pytest

from quantwise.errors import QuantwiseError
from quantwise.hardware import load_catalog, support_matrix
from quantwise.models import resolve_arch
from quantwise.planning.assumptions import PlannerAssumptions
from quantwise.planning.engines import load_engines
from quantwise.planning.lesson import check_lesson
from quantwise.planning.quality import estimate_quality
from quantwise.planning.recommend import RecommendRequest, recommend
from quantwise.planning.serving import Workload

CATALOG = load_catalog()
ENGINES = load_engines()
LLAMA70 = resolve_arch("llama-3-70b")
LESSON = Workload.from_tokens_per_day(10e6, 3584, 512, tpot_ms=50)
SERVING = Workload(2000, 300, 5, ttft_ms=1000, tpot_ms=40)


def request(workload=LESSON, gpus=None, engines=("vllm",), **kw):
    gpus = [CATALOG[g] for g in gpus] if gpus else list(CATALOG.values())
    return RecommendRequest(LLAMA70, gpus, workload, [ENGINES[e] for e in engines], **kw)


def test_lesson_scenario_plans_meet_targets_and_peak_traffic():
    result = recommend(request(max_quality_loss_pct=5))
    assert result.plans
    costs = [p.usd_per_month for p in result.plans]
    assert costs == sorted(costs)
    for plan in result.plans:
        assert plan.tpot_ms <= 50 and plan.gpu_class == "datacenter"
        assert plan.tokens_per_s_replica * plan.replicas >= LESSON.peak_output_tokens_per_s  # peak 2x
        assert plan.quality.loss_pct <= 5
        assert plan.reasons[0].startswith(("TPOT binds", "TTFT binds", "Memory binds", "The engine's step budget"))


def test_serving_scenario_reasons_name_the_binding_target():
    result = recommend(request(SERVING, max_quality_loss_pct=5))
    assert result.plans
    for plan in result.plans:
        assert plan.tpot_ms <= 40 and plan.ttft_ms <= 1000
        assert plan.ttft_ms >= plan.ttft_unloaded_ms  # waiting under load never shortens TTFT
        assert plan.binding in ("TPOT", "TTFT", "memory", "step budget")
        assert {"TPOT": "TPOT binds", "TTFT": "TTFT binds", "memory": "Memory binds",
                "step budget": "step budget binds"}[plan.binding] in plan.reasons[0]
    tight = recommend(request(Workload(2000, 300, 5, ttft_ms=250, tpot_ms=80), gpus=["h100-sxm"],
                              max_quality_loss_pct=5))
    assert tight.plans and "TTFT" in {p.binding for p in tight.plans}


def test_consumer_gpus_ranked_apart_with_caveat():
    small = Workload.from_tokens_per_day(1e6, 1000, 200, tpot_ms=50)
    result = RecommendRequest(resolve_arch("llama-3-8b"), list(CATALOG.values()), small, [ENGINES["vllm"]])
    rec = recommend(result)
    assert rec.plans and all(p.gpu_class == "datacenter" for p in rec.plans)
    assert rec.other_class_option is not None and rec.other_class_option.gpu_class == "consumer"
    assert rec.other_class_option.usd_per_month < rec.plans[0].usd_per_month


def test_quality_budget_filters():
    strict = recommend(request(max_quality_loss_pct=1))
    assert strict.plans and all(p.quality.loss_pct <= 1 for p in strict.plans)
    assert strict.rejected_for_quality > 0


def test_more_traffic_needs_more_replicas():
    low = recommend(request(Workload(2000, 300, 0.5, tpot_ms=50), gpus=["h100-sxm"]))
    high = recommend(request(Workload(2000, 300, 50, tpot_ms=50), gpus=["h100-sxm"]))
    assert high.plans[0].total_gpus > low.plans[0].total_gpus
    assert high.plans[0].usd_per_month > low.plans[0].usd_per_month


def test_peak_factor_sizes_replicas():
    flat = recommend(request(Workload(2000, 300, 20, peak_factor=1, tpot_ms=50), gpus=["h100-sxm"]))
    peaky = recommend(request(Workload(2000, 300, 20, peak_factor=3, tpot_ms=50), gpus=["h100-sxm"]))
    assert peaky.plans[0].total_gpus > flat.plans[0].total_gpus


def test_infeasible_tpot_gives_closest_and_what_is_needed():
    result = recommend(request(Workload(2000, 300, 1, tpot_ms=1.0), gpus=["a100-80gb"]))
    assert not result.plans
    assert result.closest and result.needed and "ms" in result.needed


def test_ttft_below_unloaded_prefill_is_refused_with_what_would_do():
    with pytest.raises(QuantwiseError, match=r"no plan can meet TTFT 30 ms: a 2,000-token prompt alone takes at "
                                             r"least \d+ ms .* or prompts of at most [\d,]+ tokens would"):
        recommend(request(Workload(2000, 300, 1, ttft_ms=30, tpot_ms=50), gpus=["h100-sxm", "a100-80gb"]))


def test_engine_that_runs_no_requested_format_is_refused():
    with pytest.raises(QuantwiseError, match="TensorRT-LLM has no kernel for fp16 on Instinct MI300X"):
        recommend(request(gpus=["mi300x"], engines=("tensorrt-llm",)))


@pytest.mark.parametrize("bad,needle", [(dict(input_len=0), "--input-len"), (dict(output_len=-3), "--output-len"),
                                        (dict(requests_per_s=-1), "traffic"), (dict(peak_factor=0.5), "peak"),
                                        (dict(tpot_ms=0), "--tpot-ms"), (dict(ttft_ms=-5), "--ttft-ms")])
def test_bad_workloads(bad, needle):
    args = dict(input_len=100, output_len=100, requests_per_s=1.0) | bad
    with pytest.raises(QuantwiseError, match=needle):
        Workload(**args)


def test_quality_priors():
    exact = estimate_quality(resolve_arch("llama-2-70b"), "int4", "awq")
    assert exact.loss_pct == pytest.approx((3.41 / 3.32 - 1) * 100, abs=0.01) and exact.proxy_model is None
    proxy = estimate_quality(LLAMA70, "int4", "gptq")
    assert proxy.proxy_model == "llama-2-70b"
    small = estimate_quality(resolve_arch("llama-3-8b"), "int4", "rtn")
    assert small.proxy_model == "llama-2-7b"
    assert estimate_quality(LLAMA70, "fp16", "none").loss_pct == 0


def test_lesson_checks_flag_the_wrong_claims():
    checks = check_lesson(LLAMA70, CATALOG["a100-80gb"], 4096, PlannerAssumptions(),
                          support_matrix(list(CATALOG.values())))
    verdicts = {c.claim: c.verdict for c in checks}
    assert verdicts["FP16 weights of the 70B model"] == "agrees"
    assert verdicts["Time to stream FP16 weights once at 2 TB/s (A100)"] == "agrees"
    assert verdicts["INT8 fits on one A100 80GB with room for KV cache"] == "wrong"
    assert verdicts["INT4 tensor cores on h100-sxm"] == "wrong"
    assert verdicts["FP8 tensor cores on l40s"] == "wrong"


def test_tensor_parallel_degrees_split_the_heads():
    from quantwise.planning.plan import tp_problem

    assert [tp for tp in range(1, 10) if tp_problem(LLAMA70, tp) is None] == [1, 2, 4, 8]
    small = resolve_arch("smollm2-135m")  # 9 attention heads, 3 KV heads
    assert [tp for tp in range(1, 10) if tp_problem(small, tp) is None] == [1, 3]
    rec = recommend(RecommendRequest(small, list(CATALOG.values()), SERVING, [ENGINES["vllm"]],
                                     max_quality_loss_pct=None))
    assert rec.plans and {p.gpus_per_replica for p in rec.plans + rec.best_per_gpu} == {1}


def test_static_engine_reasons_and_input_price():
    w = Workload(2000, 300, 5, ttft_ms=1000, tpot_ms=40)
    rec = recommend(request(w, engines=("gpt-fast",), max_quality_loss_pct=5))
    top = rec.plans[0]
    assert top.usd_per_m_input > 0  # a static cycle's prefill is priced
    assert top.binding == "TTFT"  # a static batch makes prompts wait for the running one
    assert "batches statically" in top.reasons[0] and "prefill budget" not in top.reasons[0]
