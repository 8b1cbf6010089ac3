"""Calibration forward passes in bfloat16 (`--compute-dtype`): the matrix products run in bf16,
everything the solve reads stays float32, and a run records, resumes and refuses by its dtype."""

import dataclasses
import json

import pytest
import torch
from test_pipeline import files_bytes, job
from test_replay import first_block

from quantwise.checkpoint.ownership import OutputDirError
from quantwise.pipeline import skeleton
from quantwise.pipeline.block_quant import BlockTimes, observe
from quantwise.pipeline.replay import trace_block
from quantwise.pipeline.sequential import run_quantize


def test_a_bfloat16_pass_multiplies_in_bf16_and_returns_float32(tiny_gemma):
    block, inputs, kwargs, _ = first_block(tiny_gemma)
    seen = []
    block.mlp.down_proj.register_forward_hook(lambda _m, _a, out: seen.append(out.dtype))
    exact = skeleton.run_block(block, inputs[0], kwargs[0])
    lower = skeleton.run_block(block, inputs[0], kwargs[0], "bfloat16")
    assert seen == [torch.float32, torch.bfloat16]
    assert lower.dtype == torch.float32
    # bf16 keeps 8 significant bits: the block's output moves by about 2^-8 of its size, no more
    assert 1e-4 < float((lower - exact).norm() / exact.norm()) < 2e-2
    assert block.mlp.down_proj.weight.dtype == torch.float32   # the weights the solve reads are untouched


def test_statistics_stay_float32_under_a_bfloat16_pass(tiny_gemma):
    """X^T X is accumulated in float32 from the inputs the bf16 pass produced: equal to a float64
    product of those same inputs to float32 rounding, where a bf16 product would be off by ~1e-3."""
    block, inputs, kwargs, _ = first_block(tiny_gemma)
    groups = trace_block(block, inputs[0], kwargs[0], "bfloat16").groups
    down = [g for g in groups if g == ["mlp.down_proj"]]
    captured = []
    block.mlp.down_proj.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().clone()))
    stats = observe(block, down, inputs, kwargs, True, 64, None, BlockTimes(), compute_dtype="bfloat16")
    x = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).double()
    assert {c.dtype for c in captured} == {torch.bfloat16}     # the down projection's input came from bf16 products
    gram = stats["mlp.down_proj"].xtx
    assert gram.dtype == torch.float32
    expected = x.T @ x
    assert float((gram.double() - expected).abs().max() / expected.abs().max()) < 1e-6


def test_auto_is_bfloat16_only_where_the_cpu_multiplies_bf16(monkeypatch):
    monkeypatch.setattr(skeleton, "native_bf16_matmul", lambda: True)
    assert skeleton.resolve_compute_dtype("auto") == "bfloat16"
    monkeypatch.setattr(skeleton, "native_bf16_matmul", lambda: False)
    assert skeleton.resolve_compute_dtype("auto") == "float32"
    assert skeleton.resolve_compute_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="compute dtype"):
        skeleton.resolve_compute_dtype("float16")


def test_a_bfloat16_run_resumes_byte_identical_records_its_dtype_and_refuses_another(tiny_llama, calib_text,
                                                                                   tmp_path):
    def bf16_job(out, dtype="bfloat16"):
        return dataclasses.replace(job(tiny_llama, calib_text, out), compute_dtype=dtype)

    whole = run_quantize(bf16_job(tmp_path / "whole"))
    assert whole.compute_dtype == "bfloat16"
    recorded = json.loads((tmp_path / "whole" / "quantwise.json").read_text())
    assert recorded["arguments"]["compute_dtype"] == "bfloat16"
    with pytest.raises(KeyboardInterrupt):
        run_quantize(bf16_job(tmp_path / "parted"), stop_after=1)
    with pytest.raises(OutputDirError, match="compute_dtype"):
        run_quantize(bf16_job(tmp_path / "parted", "float32"))
    assert run_quantize(bf16_job(tmp_path / "parted")).resumed_from == 1
    assert files_bytes(tmp_path / "whole") == files_bytes(tmp_path / "parted")
    # the same job in float32 quantizes to other codes, with output errors within a few percent
    exact = run_quantize(bf16_job(tmp_path / "exact", "float32"))
    assert files_bytes(tmp_path / "exact") != files_bytes(tmp_path / "whole")
    changes = [ours.relative_error / theirs.relative_error - 1
               for ours, theirs in zip(whole.layers, exact.layers, strict=True)]
    assert max(map(abs, changes)) < 0.1 and abs(sum(changes) / len(changes)) < 0.03


def test_cli_compute_dtype_reaches_the_run_and_its_record(tiny_llama, calib_text, tmp_path):
    from click.testing import CliRunner

    from quantwise.cli.main import cli

    result = CliRunner().invoke(cli, ["quantize", str(tiny_llama), "--method", "gptq", "--format", "int4-g32",
                                      "--calib", str(calib_text), "--samples", "4", "--seq-len", "32",
                                      "--compute-dtype", "bfloat16", "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert "forward" in result.output and "(bfloat16)" in result.output
    recorded = json.loads((tmp_path / "q" / "quantwise.json").read_text())
    assert recorded["arguments"]["compute_dtype"] == "bfloat16"
