"""An output directory is owned by one run of one job: another job's checkpoint, unrelated files,
a concurrent run or a resume with other arguments are refused; --overwrite clears it first."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from cli_checks import one_line_error, run

from quantwise.calibration import CalibrationConfig
from quantwise.checkpoint.native import NativeCheckpoint
from quantwise.methods import build_method
from quantwise.pipeline.sequential import QuantizeJob, run_quantize


def _quantize(model, text, out, fmt, *extra):
    return run("quantize", model, "--method", "rtn", "--format", fmt, "--calib", text, "--samples", 2,
               "--seq-len", 32, "--out", out, *extra)


def test_another_jobs_checkpoint_is_not_overwritten(tiny_llama, calib_text, tmp_path):
    out = tmp_path / "out"
    assert _quantize(tiny_llama, calib_text, out, "int8").exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "layers").iterdir()}
    one_line_error(_quantize(tiny_llama, calib_text, out, "int4-g32"), "different arguments", "config",
                   "--overwrite")
    assert {p.name: p.read_bytes() for p in (out / "layers").iterdir()} == before
    again = _quantize(tiny_llama, calib_text, out, "int8")  # the same job may run again
    assert again.exit_code == 0, again.output
    replaced = _quantize(tiny_llama, calib_text, out, "int4-g32", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    ckpt = NativeCheckpoint.open(out)
    assert {m["weight"]["name"] for layer in ckpt.manifest.layers.values() for m in layer.values()} == {"int4-g32"}
    assert ckpt.verify() == 4


def test_unrelated_files_are_refused(tiny_llama, calib_text, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    one_line_error(_quantize(tiny_llama, calib_text, out, "int8"), "holiday.jpg", "--overwrite")
    assert (out / "holiday.jpg").exists()


def test_a_second_run_into_a_busy_directory_fails_at_once(tiny_llama, calib_text, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"h = open({str(out / '.quantwise.lock')!r}, 'a+'); fcntl.flock(h, fcntl.LOCK_EX)\n"
        "h.seek(0); h.truncate(); h.write(str(os.getpid())); h.flush(); print('held', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        one_line_error(_quantize(tiny_llama, calib_text, out, "int8"), f"pid {holder.pid}", "another quantwise run")
        assert time.perf_counter() - started < 10
    finally:
        holder.kill()
        holder.wait()
    assert _quantize(tiny_llama, calib_text, out, "int8").exit_code == 0  # the lock died with its holder


def test_resume_with_other_arguments_is_refused(tiny_llama, calib_text, tmp_path):
    out = tmp_path / "out"
    calibration = CalibrationConfig((str(calib_text),), samples=2, seq_len=32)
    job = QuantizeJob(str(tiny_llama), "rtn", build_method("rtn", "int8"), calibration, out)
    with pytest.raises(KeyboardInterrupt):
        run_quantize(job, stop_after=1)
    recorded = json.loads((out / ".work" / "progress.json").read_text())["arguments"]
    assert recorded["config"]["format"] == "int8"
    one_line_error(_quantize(tiny_llama, calib_text, out, "int4-g32"), "different arguments")
    assert json.loads((out / ".work" / "progress.json").read_text())["done"] == 1  # the interrupted work is kept


def test_plan_naming_a_layer_the_model_lacks(tiny_llama, calib_text, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"default": "int4-g32", "overrides": {"model.layers.7.mlp.down_proj": "int8"}}))
    one_line_error(run("quantize", tiny_llama, "--method", "rtn", "--plan", plan, "--calib", calib_text,
                       "--samples", 2, "--seq-len", 32, "--out", tmp_path / "out"), "model.layers.7.mlp.down_proj")


def test_resume_after_kill_9_is_byte_identical(tiny_llama, calib_text, tmp_path):
    """SIGKILL (no cleanup at all) after the first block, then the same job again: the checkpoint's
    bytes equal an uninterrupted run's, and the dead run's lock does not block the resume."""
    import os
    import signal

    code = ("import sys, time\n"
            "from quantwise.calibration import CalibrationConfig\n"
            "from quantwise.methods import build_method\n"
            "from quantwise.pipeline.sequential import QuantizeJob, run_quantize\n"
            "model, text, out, slow = sys.argv[1:5]\n"
            "job = QuantizeJob(model, 'gptq', build_method('gptq', 'int4-g32'),\n"
            "                  CalibrationConfig((text,), samples=4, seq_len=32, seed=3), out)\n"
            "def progress(done, total, message):\n"
            "    if slow == '1' and done >= 1:\n"
            "        print('block done', flush=True); time.sleep(120)\n"
            "run_quantize(job, progress)\n")

    def start(out, slow):
        return subprocess.Popen([sys.executable, "-c", code, str(tiny_llama), str(calib_text), str(out), slow],
                                stdout=subprocess.PIPE, text=True)

    whole = start(tmp_path / "whole", "0")
    assert whole.wait(timeout=300) == 0
    victim = start(tmp_path / "killed", "1")
    assert victim.stdout.readline().strip() == "block done"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "quantwise.json").exists()
    resumed = start(tmp_path / "killed", "0")
    assert resumed.wait(timeout=300) == 0

    def checkpoint_bytes(directory):
        return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
                if p.is_file() and p.name != ".quantwise.lock"}

    assert checkpoint_bytes(tmp_path / "killed") == checkpoint_bytes(tmp_path / "whole")


def test_checkpoint_files_get_the_users_umask(tiny_llama, calib_text, tmp_path):
    """Layer files used to be 0600 while the rest were 0644: a server under another user could
    not read them. Every file and directory now gets the mode the umask gives any other tool's."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        assert _quantize(tiny_llama, calib_text, tmp_path / "out", "int8").exit_code == 0
        export_result = run("export", tmp_path / "out", "--to", "gguf", "--out", tmp_path / "gguf")
        assert export_result.exit_code == 0, export_result.output
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in tmp_path.rglob("*") if p.name != ".quantwise.lock"}
    assert {path: mode for path, mode in modes.items() if mode not in (0o644, 0o755)} == {}
    assert modes["out/layers/layer_0000.safetensors"] == 0o644 and modes["gguf"] == 0o755
