"""The rules of bench's measurement hygiene, on synthetic timings (nothing here reads a clock)."""

from types import SimpleNamespace

import pytest

from quantwise.evaluation.bench_checks import (
    accounting_violations,
    host_busy,
    measure_checked,
    pooled_until_stable,
    ratio_warning,
    summarize,
)
from quantwise.sysinfo import CpuSnapshot, other_cores


def test_summarize_is_robust_to_one_stalled_step():
    # one step stalled 10x by another process: the mean would be 23.7, the median stays at 11
    s = summarize([10, 10, 11, 11, 12, 12, 100])
    assert s.median == 11 and s.q1 == 10.5 and s.q3 == 12
    assert s.iqr_pct == pytest.approx(1.5 / 11 * 100)
    assert summarize([5.0]).iqr_pct == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_rounds_are_pooled_until_the_spread_is_bounded():
    rounds = iter([[1.0, 2.0, 3.0, 4.0], [2.5] * 8, [9.0] * 4])
    samples, used = pooled_until_stable(lambda: next(rounds), max_rounds=5)
    assert used == 2 and len(samples) == 12  # 60% IQR after one round, 0% after the second: stop
    assert summarize(samples).iqr_pct <= 10
    steady, used = pooled_until_stable(lambda: [10.0] * 4, max_rounds=5)
    assert used == 1 and len(steady) == 4
    noisy, used = pooled_until_stable(lambda: [1.0, 5.0, 9.0], max_rounds=3)
    assert used == 3 and len(noisy) == 9  # never stable: stops at the limit


def _row(decode_ms=10.0, linear_ms=5.0, step_bw=0.5, linear_bw=0.8):
    return SimpleNamespace(decode_ms=decode_ms, linear_ms=linear_ms, step_bw_fraction=step_bw,
                           linear_bw_fraction=linear_bw)


def test_accounting_violations_name_each_contradiction():
    assert accounting_violations(_row()) == []
    part = accounting_violations(_row(decode_ms=620.68, linear_ms=1505.91))
    assert part == ["linear layers 1505.91 ms > whole decode step 620.68 ms"]
    over = accounting_violations(_row(linear_bw=1.11))
    assert over == ["linear layers at 111% of the measured bandwidth"]
    assert len(accounting_violations(_row(linear_ms=20.0, step_bw=1.2, linear_bw=1.5))) == 3


def test_a_contradicting_measurement_is_repeated_then_kept_with_its_problems():
    results = iter([_row(linear_ms=30.0), _row(linear_ms=4.0), _row(linear_ms=99.0)])
    row, problems, used = measure_checked(lambda: next(results), accounting_violations, attempts=3)
    assert used == 2 and problems == [] and row.linear_ms == 4.0
    row, problems, used = measure_checked(lambda: _row(linear_ms=30.0), accounting_violations, attempts=3)
    assert used == 3 and len(problems) == 1 and "30.00 ms > whole decode step" in problems[0]
    _, _, used = measure_checked(_row, accounting_violations, attempts=3)
    assert used == 1


def test_other_processes_cpu_use_between_snapshots():
    before = CpuSnapshot(wall_s=100.0, busy_s=1000.0, own_s=50.0, load_1min=1.0)
    after = CpuSnapshot(wall_s=110.0, busy_s=1015.0, own_s=55.0, load_1min=3.0)
    # 15 core-seconds busy in 10 s, 5 of them ours: others kept 1 core busy
    assert other_cores(before, after) == pytest.approx(1.0)
    blind = CpuSnapshot(100.0, -1, 50.0, 1.0), CpuSnapshot(110.0, -1, 55.0, 3.0)
    assert other_cores(*blind) == pytest.approx(2.5)  # no /proc/stat: load average less our 0.5 cores
    assert other_cores(after, after) == 0.0
    assert host_busy(1.4, 2) and host_busy(0.6, 2) and not host_busy(0.2, 2) and not host_busy(1.4, 16)


def _timed(fmt, q1, median, q3, speedup=None):
    return SimpleNamespace(format=fmt, decode_ms=median, decode_q1_ms=q1, decode_q3_ms=q3,
                           iqr_pct=(q3 - q1) / median * 100, speedup_vs_fp32=speedup)


def test_ratio_warning_when_spread_or_overlap_makes_it_untrustworthy():
    fp32 = _timed("fp32", 99, 100, 101)
    assert ratio_warning(_timed("int4", 24.5, 25, 25.5, 4.0), fp32) is None
    overlap = ratio_warning(_timed("int8", 97, 98, 99.5, 100 / 98), fp32)
    assert overlap.startswith("1.02x vs fp32 is untrustworthy") and "ranges overlap" in overlap
    assert "IQR" not in overlap  # both spreads are tight: only the overlap is the reason
    # the "23.30x": an fp32 median inflated by a busy host, with a 140% spread
    wide = ratio_warning(_timed("int4", 58, 60, 63, 23.3), _timed("fp32", 500, 1400, 2460))
    assert "fp32 140%" in wide and "overlap" not in wide
