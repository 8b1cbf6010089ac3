import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from quantwise.cli.main import cli
from quantwise.evaluation.memory import inspect_checkpoint
from quantwise.evaluation.throughput import BenchRow, BenchSettings, MachineProbe, annotate, bench_model, probe_machine
from quantwise.runtime.kernels import has_cpu_int4_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_model, write_text  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return make_tiny_model(root / "m", layers=2), write_text(root / "t.txt"), root


@pytest.mark.skipif(not has_cpu_int4_kernel(), reason="no CPU int4 kernel")
def test_bench_byte_accounting_matches_checkpoint(tiny):
    model_dir, text, root = tiny
    out = root / "q8"
    result = CliRunner().invoke(cli, ["quantize", str(model_dir), "--method", "rtn", "--format", "int8-channel",
                                      "--calib", str(text), "--samples", "2", "--seq-len", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import quantwise
    model = quantwise.load(out, kernels=False)
    probe = MachineProbe(10.0, 10.0, 1)
    rows = bench_model(model, "tiny", str(out), [1], probe,
                       BenchSettings(steps=2, prompt=4, prefill_tokens=8, rounds=1, attempts=1))
    info = inspect_checkpoint(out)
    # the checkpoint's int8 weights and fp16 per-row scales stream as they are (scales as bf16)
    lm_head = model.lm_head.weight.numel() * 4  # tiny model: untied fp32 lm_head, not quantized here
    assert rows[0].weight_mb_per_step * 2**20 == info.linear_bytes + lm_head
    assert rows[0].decode_tokens_per_s > 0 and rows[0].kernel.startswith("PackedInt8Linear")


def test_bench_cli_on_the_fly_formats(tiny):
    model_dir, _, _ = tiny
    formats = ("fp32", "bf16", "int8", "int4", "int4:unfused", "w8a8", "nf4")
    result = CliRunner().invoke(cli, ["bench", str(model_dir), "--formats", ",".join(formats),
                                      "--batch", "1,2", "--rounds", "1",
                                      "--steps", "2", "--prompt", "4", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    rows = payload["rows"]
    expected = [(f, b) for f in formats for b in (1, 2)]
    assert [(r["format"], r["batch"]) for r in rows] == expected
    kernels = {r["format"]: r["kernel"] for r in rows}
    # 2 blocks x (q/k/v, o, gate/up, down) + lm_head fused; 2 x 7 + 1 unfused
    assert "9 linear calls/step with q/k/v and gate/up fused" in kernels["int4"]
    assert "15 linear calls/step" in kernels["int4:unfused"] and "fused" not in kernels["int4:unfused"]
    assert kernels["w8a8"].startswith("PackedW8A8Linear") and "bfloat16 act." in kernels["w8a8"]
    assert kernels["nf4"].startswith("dequantized copy")
    # the unpacked NF4 run streams its bf16 copy: as many bytes as the bf16 model
    mb = {(r["format"], r["batch"]): r["weight_mb_per_step"] for r in rows}
    assert mb[("nf4", 1)] == mb[("bf16", 1)]
    fp32 = {r["batch"]: r["weight_mb_per_step"] for r in rows if r["format"] == "fp32"}
    int4 = {r["batch"]: r["weight_mb_per_step"] for r in rows if r["format"] == "int4"}
    # every linear including lm_head packed at 4 bits + bf16 scale and offset per group; the tiny
    # model's 64-wide inputs are padded to one 128 group, so the saving is below the full 8x
    assert int4[1] < fp32[1] / 3
    assert payload["machine"]["read_gb_per_s"] > 0
    for r in rows:  # every row carries its spread, its host check and its raw samples
        assert r["decode_q1_ms"] <= r["decode_ms"] <= r["decode_q3_ms"] and r["iqr_pct"] >= 0
        assert len(r["decode_samples_ms"]) == 2 and r["rounds"] == 1 and 1 <= r["attempts"] <= 3
        assert r["other_cores"] >= 0 and r["load_before"] >= 0 and isinstance(r["flags"], list)
        assert ("part>whole" in r["flags"]) == (r["linear_ms"] > r["decode_ms"])


def test_annotate_flags_formats_slower_than_fp32():
    def row(fmt, ms):
        return BenchRow("m", fmt, "k", 1, 1, ms, 1 / ms, 0, 1, 1, 0.5, ms, 1, 0.5, 1)
    rows = [row("fp32", 10.0), row("int8", 20.0), row("int4", 4.0)]
    annotate(rows)
    assert rows[1].speedup_vs_fp32 == pytest.approx(0.5) and "slower than FP32" in rows[1].note
    assert rows[2].speedup_vs_fp32 == pytest.approx(2.5)


def test_probe_reports_positive_rates():
    probe = probe_machine(megabytes=16)
    assert probe.read_gb_per_s > 0 and probe.matmul_gflops > 0


def test_bench_refuses_an_unknown_format_before_timing(tiny):
    model_dir, _, _ = tiny
    result = CliRunner().invoke(cli, ["bench", str(model_dir), "--formats", "fp32,int5"])
    assert result.exit_code == 2 and "unknown format or checkpoint 'int5'" in result.output


def _fake_measurements(monkeypatch, linear_ms: list[float]):
    """bench_model with _measure replaced: 10 ms decode steps, linear passes as given per attempt."""
    from quantwise.evaluation import throughput
    from quantwise.sysinfo import CpuSnapshot

    calls = iter(linear_ms)
    idle = CpuSnapshot(0.0, 0.0, 0.0, 0.5), CpuSnapshot(1.0, 1.0, 1.0, 0.5)  # only our own core busy

    def fake(model, step, batch, settings, activations, device):
        return throughput._Measurement([0.010] * 4, [next(calls) / 1e3] * 4, 0.1, 1000.0, 1, *idle)
    monkeypatch.setattr(throughput, "_measure", fake)


def test_a_row_whose_linear_time_exceeds_the_step_is_measured_again(tiny, monkeypatch):
    from quantwise.models.loading import load_model

    model_dir, _, _ = tiny
    _fake_measurements(monkeypatch, [25.0, 4.0])
    probe = MachineProbe(10.0, 10.0, 2)
    row, = bench_model(load_model(model_dir), "tiny", "fp32", [1], probe, BenchSettings(attempts=3))
    assert row.attempts == 2 and row.linear_ms == pytest.approx(4.0) and row.flags == [] and row.warnings == []
    assert row.decode_ms == pytest.approx(10.0) and row.iqr_pct == 0 and row.other_cores == 0


def test_a_row_that_stays_contradictory_is_kept_with_its_flag(tiny, monkeypatch):
    from quantwise.models.loading import load_model

    model_dir, _, _ = tiny
    _fake_measurements(monkeypatch, [25.0, 30.0, 15.0])
    row, = bench_model(load_model(model_dir), "tiny", "fp32", [1], MachineProbe(10.0, 10.0, 2),
                       BenchSettings(attempts=3))
    assert row.attempts == 3 and row.linear_ms == pytest.approx(15.0) and row.flags == ["part>whole"]
    assert row.warnings == ["linear layers 15.00 ms > whole decode step 10.00 ms after 3 measurements: "
                            "the timings were disturbed (or the weights sat in a cache)"]


def test_bench_refuses_a_batch_that_would_not_fit_in_memory(tiny, monkeypatch):
    import quantwise.sysinfo

    model_dir, _, _ = tiny
    monkeypatch.setattr(quantwise.sysinfo, "available_memory_mb", lambda: 1024.0)
    result = CliRunner().invoke(cli, ["bench", str(model_dir), "--batch", "1,60000"])
    assert result.exit_code == 2
    assert "bench --batch 60000 would need about" in result.output and "only 1.0 GiB is available" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--batch", "100000"], "--batch 100000 is above the 65536"),
    (["--steps", "5000"], "5000 is not in the range 2<=x<=4096"),
    (["--prompt", "300"], "need 318 positions; this model has 256"),
])
def test_bench_bounds_numeric_options(tiny, args, message):
    model_dir, _, _ = tiny
    result = CliRunner().invoke(cli, ["bench", str(model_dir), *args])
    assert result.exit_code == 2 and message in result.output
