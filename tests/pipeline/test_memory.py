import json
import os
import subprocess
import sys

import pytest

from quantwise.pipeline.memory import BUDGET_FACTOR

PARTS = ("interpreter_mb", "embeddings_mb", "block_mb", "statistics_mb", "activations_mb", "forward_mb")


@pytest.mark.parametrize("method,fmt", [("gptq", "int4-g32"), ("rtn", "int4-g32")])
def test_peak_rss_stays_within_budget(tiny_llama, calib_text, tmp_path, method, fmt):
    """A fresh process (its own VmHWM): the run's peak RSS is at most 1.5x the parts it reports."""
    cmd = [sys.executable, "-m", "quantwise.cli", "quantize", str(tiny_llama), "--method", method, "--format", fmt,
           "--calib", str(calib_text), "--samples", "16", "--seq-len", "64", "--out", str(tmp_path / "q"), "--json"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
    report = json.loads(done.stdout[done.stdout.index("{"):])
    memory = report["memory"]
    assert all(memory[part] > 0 for part in PARTS if part != "statistics_mb" or method == "gptq")
    assert memory["interpreter_mb"] > 100  # torch + transformers are in the count
    assert report["peak_rss_mb"] <= BUDGET_FACTOR * sum(memory[part] for part in PARTS)


def test_the_asymmetric_targets_float_view_is_a_part_of_the_budget():
    """Each group after the first keeps the narrower of its outputs and its input per token: for a
    Llama block o_proj's output (hidden), gate/up's input (hidden), down_proj's output (hidden)."""
    from test_block_quant import low_rank_v_block

    from quantwise.pipeline.block_quant import input_groups, linear_names
    from quantwise.pipeline.memory import block_parts

    block, xs, kwargs = low_rank_v_block(0)
    groups = input_groups(block, linear_names(block), xs[0], kwargs)
    hidden = block.self_attn.o_proj.out_features
    parts = block_parts(block, tuple(xs[0].shape), 4, groups, True, references_tokens=1000)
    assert parts.references_mb == pytest.approx(1000 * 3 * hidden * 4 / 2**20)
    assert block_parts(block, tuple(xs[0].shape), 4, groups, True).references_mb == 0
