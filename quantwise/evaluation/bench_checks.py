"""Measurement hygiene for `bench`: spread statistics, self-consistency checks, re-measurement.

Pure functions over samples and rows, so the rules are tested with synthetic timings; the
timing itself lives in `throughput`. A busy or noisy host makes single medians contradict each
other (a decode step of 34 ms, then 1,470 ms; linear layers slower than the whole step), so each
row carries its median and interquartile range, what the rest of the host was doing while it
ran, and the rules it breaks, instead of a bare number printed as fact.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

STABLE_IQR_PCT = 10.0   # an IQR wider than this share of the median makes a ratio untrustworthy
BUSY_SHARE = 0.25       # other processes using more than this share of the cores: host busy

T = TypeVar("T")


@dataclass(frozen=True)
class Summary:
    """Median and quartiles of timing samples (any unit); iqr_pct is (q3 - q1) / median in %."""

    median: float
    q1: float
    q3: float
    iqr_pct: float


def summarize(samples: Sequence[float]) -> Summary:
    """Median and interquartile range: robust to the one step a busy host stalls, unlike mean/std."""
    if not samples:
        raise ValueError("no samples to summarize")
    if len(samples) == 1:
        return Summary(samples[0], samples[0], samples[0], 0.0)
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Summary(median, q1, q3, (q3 - q1) / median * 100 if median > 0 else 0.0)


def pooled_until_stable(measure_round: Callable[[], list[float]], max_rounds: int,
                        target_iqr_pct: float = STABLE_IQR_PCT) -> tuple[list[float], int]:
    """Pool rounds of samples until their IQR is within `target_iqr_pct` or `max_rounds` ran.
    Returns (every sample, rounds run): more repetitions where the spread needs them, not everywhere."""
    samples, rounds = measure_round(), 1
    while rounds < max_rounds and summarize(samples).iqr_pct > target_iqr_pct:
        samples, rounds = samples + measure_round(), rounds + 1
    return samples, rounds


def accounting_violations(row: Any) -> list[str]:
    """The ways a bench row contradicts itself: its linear layers alone take longer than the
    whole decode step that runs them, or it moves weights faster than the bandwidth measured
    beside it. Either means the timings were disturbed (or the weights sat in cache)."""
    problems = []
    if row.linear_ms > row.decode_ms:
        problems.append(f"linear layers {row.linear_ms:.2f} ms > whole decode step {row.decode_ms:.2f} ms")
    for what, fraction in (("decode step", row.step_bw_fraction), ("linear layers", row.linear_bw_fraction)):
        if fraction > 1.0:
            problems.append(f"{what} at {fraction:.0%} of the measured bandwidth")
    return problems


def measure_checked(measure: Callable[[], T], check: Callable[[T], list[str]],
                    attempts: int) -> tuple[T, list[str], int]:
    """Measure, and measure again (up to `attempts` in all) while the result breaks `check`.
    Returns (last result, the problems it still has, attempts used): a row that stays broken is
    printed with its problems, never silently."""
    result = measure()
    problems, used = check(result), 1
    while problems and used < attempts:
        result = measure()
        problems, used = check(result), used + 1
    return result, problems, used


def host_busy(other_cores: float, cores: int) -> bool:
    """Whether other processes kept enough of the cores busy to distort a timing."""
    return other_cores > BUSY_SHARE * cores


def ratio_warning(row: Any, ref: Any, limit_pct: float = STABLE_IQR_PCT) -> str | None:
    """Why `row`'s speed-up over `ref` (same run, same batch) cannot be trusted, or None.
    Rows carry decode_ms (median), decode_q1_ms, decode_q3_ms and iqr_pct."""
    reasons = []
    wide = [f"{r.format} {r.iqr_pct:.0f}%" for r in (row, ref) if r.iqr_pct > limit_pct]
    if wide:
        reasons.append(f"decode IQR {', '.join(wide)} (over {limit_pct:.0f}%)")
    if row.decode_q1_ms <= ref.decode_q3_ms and ref.decode_q1_ms <= row.decode_q3_ms:
        reasons.append(f"the interquartile ranges overlap ({row.decode_q1_ms:.2f}-{row.decode_q3_ms:.2f} ms vs "
                       f"{ref.decode_q1_ms:.2f}-{ref.decode_q3_ms:.2f} ms)")
    if not reasons:
        return None
    return f"{row.speedup_vs_fp32:.2f}x vs {ref.format} is untrustworthy: {'; '.join(reasons)}"
