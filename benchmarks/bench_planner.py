"""Time planning the whole grid: every GPU x every precision x 10 batch sizes x 3 contexts.

Target: under 1 second on a 2-core machine. Reported next to a baseline measured in the same run
(loading the catalogue and presets), since absolute times on shared machines are noisy.

    python3 benchmarks/bench_planner.py
"""

from __future__ import annotations

from quantwise.evaluation.throughput import median_time
from quantwise.hardware import load_catalog
from quantwise.models import resolve_arch
from quantwise.planning.plan import PlanRequest, plan_grid
from quantwise.planning.precisions import PRECISIONS
from quantwise.planning.recommend import RecommendRequest, recommend

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
CONTEXTS = [1024, 4096, 16384]


def main() -> None:
    catalog = load_catalog()
    arch = resolve_arch("llama-3-70b")
    request = PlanRequest(arch, list(catalog.values()), list(PRECISIONS.values()), BATCHES, CONTEXTS)
    rows = len(plan_grid(request))
    load_s = median_time(lambda: (load_catalog(), resolve_arch("llama-3-70b")), 5)[0]
    grid_s = median_time(lambda: plan_grid(request), 5)[0]
    rec_s = median_time(lambda: recommend(RecommendRequest(arch, list(catalog.values()), 50, 10e6)), 5)[0]
    print(f"grid: {rows} rows in {grid_s * 1e3:.0f} ms (target < 1000 ms); {grid_s / load_s:.0f}x loading the data")
    print(f"recommend (lesson scenario, whole catalogue): {rec_s * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
