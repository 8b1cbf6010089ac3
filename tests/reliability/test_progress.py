"""Signs of life: plain periodic lines with an ETA when output is redirected."""

from __future__ import annotations

import io
import subprocess
import sys

from quantwise.reporting.progress import Reporter, eta_seconds, format_duration


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_are_throttled_and_carry_an_eta():
    stream, clock = io.StringIO(), _Clock()
    with Reporter("eval", interval_s=10, stream=stream, live=False, clock=clock) as report:
        for done in range(1, 11):
            clock.now = 3.0 * done
            report.update(done, 10, f"window {done}")
    lines = stream.getvalue().splitlines()
    # a line at t=3 (the first: no rate yet), then one every >= 10 s (t=15, 27), and the last one
    assert lines == ["eval: window 1 [1/10, 3s elapsed]", "eval: window 5 [5/10, 15s elapsed, ETA 15s]",
                     "eval: window 9 [9/10, 27s elapsed, ETA 3s]", "eval: window 10 [10/10, 30s elapsed]"]


def test_a_resumed_run_estimates_from_the_work_done_since_it_started():
    stream, clock = io.StringIO(), _Clock()
    with Reporter("quantize", interval_s=0, stream=stream, live=False, clock=clock) as report:
        clock.now = 20.0
        report.update(15, 32, "resuming")  # 15 blocks written by an earlier process
        clock.now = 120.0
        report.update(16, 32, "block 15")
    # 100 s for one block, 16 to go: not 120 s / 16 blocks
    assert stream.getvalue().splitlines()[-1] == "quantize: block 15 [16/32, 2m00s elapsed, ETA 26m40s]"


def test_eta_and_durations():
    assert eta_seconds(0, 10, 5.0) is None
    assert eta_seconds(4, 10, 8.0) == 12.0
    assert format_duration(3725) == "1h02m" and format_duration(125) == "2m05s" and format_duration(9.4) == "9s"


def test_redirected_eval_prints_progress_lines(tiny_llama, calib_text):
    done = subprocess.run([sys.executable, "-m", "quantwise.cli", "eval", str(tiny_llama), "--text", str(calib_text),
                           "--max-tokens", "300", "--window", "64", "--stride", "32", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("eval: window")]
    assert progress and progress[-1].startswith("eval: window 9 of 9 [9/9,"), done.stderr
    assert done.stdout.lstrip().startswith("{")  # progress never mixes into --json
