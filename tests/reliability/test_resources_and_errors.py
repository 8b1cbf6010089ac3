"""Disk full, absurd options, closed pipes and Ctrl-C: one line each, fitting the command."""

from __future__ import annotations

import subprocess
import sys
import time

from cli_checks import one_line_error, run

_CLI = [sys.executable, "-m", "quantwise.cli"]


def test_file_size_limit_during_save_is_one_line_naming_the_file(tiny_llama, calib_text, tmp_path):
    # RLIMIT_FSIZE makes writes fail with EFBIG like a full disk fails with ENOSPC, without filling one
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))\n"
            "from quantwise.cli.main import main\n"
            "sys.argv = ['quantwise'] + sys.argv[1:]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code, "quantize", str(tiny_llama), "--method", "rtn", "--format",
                           "int8", "--calib", str(calib_text), "--samples", "2", "--seq-len", "32", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and str(tmp_path / "out") in errors[0], done.stderr
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_absurd_group_size_is_refused_at_once(tiny_llama, calib_text, tmp_path):
    started = time.perf_counter()
    one_line_error(run("quantize", tiny_llama, "--method", "rtn", "--group-size", 100_000_000_000, "--calib",
                       calib_text, "--out", tmp_path / "a"), "100000000000", "channel")
    one_line_error(run("quantize", tiny_llama, "--method", "rtn", "--group-size", 1024, "--calib", calib_text,
                       "--samples", 2, "--seq-len", 32, "--out", tmp_path / "b"), "1024", "down_proj", "96 inputs")
    assert time.perf_counter() - started < 30


def test_closed_pipe_is_quiet():
    done = subprocess.run(" ".join(_CLI) + " hardware | head -1", shell=True, capture_output=True, text=True,
                          timeout=120, executable="/bin/bash")
    assert done.stdout.strip(), done.stderr
    assert done.stderr == ""


def test_interrupt_messages_fit_the_command(tiny_llama, calib_text, monkeypatch):
    import quantwise.cli.eval_cmd as eval_cmd
    import quantwise.pipeline.sequential as sequential

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cmd, "eval_tokens", interrupted)
    monkeypatch.setattr(sequential, "run_quantize", interrupted)
    evaluated = run("eval", tiny_llama, "--text", calib_text)
    assert evaluated.exit_code == 130 and "nothing to resume" in evaluated.output
    quantized = run("quantize", tiny_llama, "--method", "rtn", "--calib", calib_text, "--out", "unused")
    assert quantized.exit_code == 130 and "run the same command again to resume" in quantized.output


def test_non_finite_numbers_are_refused(tmp_path):
    for value in ("nan", "inf", "-inf"):
        result = run("recommend", "--slo-ms", value)
        assert result.exit_code == 2 and "not a finite number" in result.output, result.output
    gpus = tmp_path / "gpus.csv"
    gpus.write_text("id,price_per_hour\nh100-sxm,nan\n")
    one_line_error(run("recommend", "--gpu-file", gpus), "price_per_hour", "finite")
    one_line_error(run("recommend", "--assume", "bandwidth_efficiency=nan"), "bandwidth_efficiency")
    measured = tmp_path / "measured.csv"
    measured.write_text("model,gpu,engine,precision,batch,input_len,output_len,tpot_ms\n"
                        "llama-3-8b,h100-sxm,vllm,fp16,1,128,128,nan\n")
    one_line_error(run("calibrate", measured), "measured.csv")


def test_runs_that_would_not_fit_are_refused_before_work(tiny_llama, calib_text, tmp_path, monkeypatch):
    import quantwise.pipeline.sequential as sequential
    import quantwise.sysinfo as sysinfo
    from quantwise.models.arch import resolve_arch
    from quantwise.models.footprint import eval_footprint_mb, quantize_footprint_mb

    arch = resolve_arch(str(tiny_llama))
    needed = eval_footprint_mb(arch, 2, 64)
    monkeypatch.setattr(sysinfo, "available_memory_mb", lambda: needed - 1)
    ckpt_free = run("eval", tiny_llama, tiny_llama, "--text", calib_text, "--max-tokens", 64, "--window", 64,
                    "--stride", 32)
    one_line_error(ckpt_free, f"needs about {needed:,.0f} MiB", "available")
    monkeypatch.setattr(sysinfo, "available_memory_mb", lambda: needed + 1)
    assert run("eval", tiny_llama, tiny_llama, "--text", calib_text, "--max-tokens", 64,
               "--window", 64, "--stride", 32).exit_code == 0
    # quantize: the calibration activations dominate; --offload-activations makes the same run fit
    big = quantize_footprint_mb(arch, 4096, 256, 4, offload=False)
    small = quantize_footprint_mb(arch, 4096, 256, 4, offload=True)
    assert small < big
    monkeypatch.setattr(sequential, "available_memory_mb", lambda: (big + small) / 2)
    args = ("quantize", tiny_llama, "--method", "rtn", "--format", "int8", "--calib", calib_text, "--samples", 4096,
            "--seq-len", 256, "--out", tmp_path / "out")
    one_line_error(run(*args), "--offload-activations")
    assert not (tmp_path / "out" / "layers").exists()


def test_quantize_estimate_bounds_the_measured_peak(tiny_llama, calib_text, tmp_path):
    """The estimate is an upper bound of what a real run takes (in a fresh process)."""
    from quantwise.models.arch import resolve_arch
    from quantwise.models.footprint import quantize_footprint_mb

    code = ("import sys, json\nfrom quantwise.cli.main import main\n"
            "sys.argv = ['quantwise'] + sys.argv[1:]\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code, "quantize", str(tiny_llama), "--method", "gptq", "--format",
                           "int4-g32", "--calib", str(calib_text), "--samples", "8", "--seq-len", "64", "--out",
                           str(tmp_path / "q"), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json

    peak = json.loads(done.stdout)["peak_rss_mb"]
    estimate = quantize_footprint_mb(resolve_arch(str(tiny_llama)), 8, 64, 4, offload=False)
    assert peak < estimate < 3 * peak
