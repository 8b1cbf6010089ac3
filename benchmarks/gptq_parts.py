"""Three parts of quantwise's GPTQ timed on one thread, each against the alternative it replaced:
X^T X of one 2048-token calibration batch as one addmm vs the upper block triangle in GRAM_BLOCK-wide
row GEMMs (what LinearStats does), the inverse-Hessian factor in float64 vs float32 (with the
largest difference between the two factors), and act-order's gather of H by advanced indexing vs
index_select.

    python3 benchmarks/gptq_parts.py
"""

from __future__ import annotations

import time
from functools import partial

import torch

from quantwise.methods.gptq_math import _inverse_factor
from quantwise.methods.stats import LinearStats


def best_of(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| inputs | X^T X, one addmm | X^T X, row blocks (LinearStats) |\n|---|---|---|")
    for width in (576, 1536, 4096):
        x = torch.randn(2048, width)
        full = torch.zeros(width, width)
        stats = LinearStats(width, need_hessian=True, need_magnitudes=False)
        one = best_of(partial(full.addmm_, x.T, x))
        blocked = best_of(partial(stats.observe, x))
        print(f"| {width} | {one * 1e3:.0f} ms | {blocked * 1e3:.0f} ms |", flush=True)
    print("\n| columns | factor float64 | factor float32 | relative difference (Frobenius) |\n|---|---|---|---|")
    for width in (576, 1536):
        x = torch.randn(8192, width) * torch.rand(width) * 3
        hessian = 2 * x.T @ x / len(x)
        f64 = best_of(partial(_inverse_factor, hessian, 0.01, torch.float64), 3)
        f32 = best_of(partial(_inverse_factor, hessian, 0.01, torch.float32), 3)
        a, b = (_inverse_factor(hessian, 0.01, dtype).double() for dtype in (torch.float64, torch.float32))
        print(f"| {width} | {f64:.3f} s | {f32:.3f} s | {float((a - b).norm() / a.norm()):.1e} |", flush=True)
    print("\n| columns | act-order gather of H, h[perm[:, None], perm] | two index_select |\n|---|---|---|")
    for width in (576, 1536):
        h = torch.randn(width, width)
        perm = torch.randperm(width)
        fancy = best_of(lambda h=h, perm=perm: h[perm[:, None], perm])
        selects = best_of(lambda h=h, perm=perm: h.index_select(0, perm).index_select(1, perm))
        print(f"| {width} | {fancy * 1e3:.1f} ms | {selects * 1e3:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
