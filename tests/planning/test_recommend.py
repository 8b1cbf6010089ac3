import pytest

from quantwise.hardware import load_catalog, support_matrix
from quantwise.models import resolve_arch
from quantwise.planning.assumptions import PlannerAssumptions
from quantwise.planning.lesson import check_lesson
from quantwise.planning.quality import estimate_quality
from quantwise.planning.recommend import RecommendRequest, recommend

CATALOG = load_catalog()
LLAMA70 = resolve_arch("llama-3-70b")


def test_lesson_scenario_plans_meet_slo_and_traffic():
    result = recommend(RecommendRequest(LLAMA70, list(CATALOG.values()), 50, 10e6, max_quality_loss_pct=5))
    assert result.plans
    costs = [p.usd_per_month for p in result.plans]
    assert costs == sorted(costs)
    for plan in result.plans:
        assert plan.ms_per_token <= 50
        assert plan.tokens_per_s_capacity * plan.replicas >= 10e6 / 86400
        assert plan.quality.loss_pct <= 5
        assert plan.reasons
    a100 = next(p for p in result.best_per_gpu if p.gpu == "a100-80gb")
    assert (a100.precision, a100.gpus_per_replica) == ("int4", 1)


def test_quality_budget_filters():
    strict = recommend(RecommendRequest(LLAMA70, list(CATALOG.values()), 50, 10e6, max_quality_loss_pct=1))
    assert strict.plans and all(p.quality.loss_pct <= 1 for p in strict.plans)
    assert strict.rejected_for_quality > 0


def test_more_traffic_needs_more_replicas():
    low = recommend(RecommendRequest(LLAMA70, [CATALOG["h100-sxm"]], 50, 1e6))
    high = recommend(RecommendRequest(LLAMA70, [CATALOG["h100-sxm"]], 50, 1e9))
    assert high.plans[0].total_gpus > low.plans[0].total_gpus
    assert high.plans[0].usd_per_month > low.plans[0].usd_per_month


def test_infeasible_slo_gives_closest_and_what_is_needed():
    result = recommend(RecommendRequest(LLAMA70, [CATALOG["a100-80gb"]], 1.0, 10e6))
    assert not result.plans
    assert result.closest and result.needed
    assert "ms" in result.needed


@pytest.mark.parametrize("bad", [dict(slo_ms=0), dict(tokens_per_day=-1), dict(peak_to_average=0.5)])
def test_bad_requests(bad):
    args = dict(arch=LLAMA70, gpus=[CATALOG["h100-sxm"]], slo_ms=50, tokens_per_day=1e6) | bad
    with pytest.raises(ValueError):
        RecommendRequest(**args)


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
