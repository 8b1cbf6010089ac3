"""Time the planner: the decode grid, and the whole serving grid (every GPU x precision x KV dtype
x engine x TP degree, each with its binary search over concurrency).

Target: each under 1 second on a 2-core machine. Reported next to a baseline measured in the same
run (loading the catalogue and presets), since absolute times on shared machines are noisy.

    python3 benchmarks/bench_planner.py
"""

from __future__ import annotations

from quantwise.evaluation.throughput import median_time
from quantwise.hardware import load_catalog
from quantwise.models import resolve_arch
from quantwise.planning.engines import load_engines
from quantwise.planning.plan import PlanRequest, plan_grid
from quantwise.planning.precisions import PRECISIONS
from quantwise.planning.recommend import RecommendRequest, recommend
from quantwise.planning.serving import Workload

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
CONTEXTS = [1024, 4096, 16384]


def main() -> None:
    catalog, engines = load_catalog(), load_engines()
    arch = resolve_arch("llama-3-70b")
    request = PlanRequest(arch, list(catalog.values()), list(PRECISIONS.values()), BATCHES, CONTEXTS)
    rows = len(plan_grid(request))
    load_s = median_time(lambda: (load_catalog(), resolve_arch("llama-3-70b")), 5)[0]
    grid_s = median_time(lambda: plan_grid(request), 5)[0]
    serving = RecommendRequest(arch, list(catalog.values()), Workload(2000, 300, 5, ttft_ms=1000, tpot_ms=40),
                               list(engines.values()), list(PRECISIONS.values()), ("fp16", "fp8"))
    serving_s = median_time(lambda: recommend(serving), 5)[0]
    lesson = RecommendRequest(arch, list(catalog.values()), Workload.from_tokens_per_day(10e6, 3584, 512, tpot_ms=50),
                              [engines["vllm"]])
    rec_s = median_time(lambda: recommend(lesson), 5)[0]
    combos = len(catalog) * len(PRECISIONS) * 2 * len(engines) * 4
    print(f"decode grid: {rows} rows in {grid_s * 1e3:.0f} ms (target < 1000 ms); {grid_s / load_s:.0f}x loading")
    print(f"serving grid: {combos} GPU x precision x KV x engine x TP combinations with their concurrency "
          f"search in {serving_s * 1e3:.0f} ms (target < 1000 ms)")
    print(f"recommend (lesson scenario, vLLM, whole catalogue): {rec_s * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
