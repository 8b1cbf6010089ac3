"""Random truncations and byte flips of a model's safetensors file, a GGUF file and a quantwise
checkpoint (manifest and layer file), fed to inspect, eval and quantize. Every run must end with
exit 0 and a sound result, or a non-zero exit and one 'error:' line: never a traceback or a hang.
A damaged quantwise checkpoint must always be refused (its files are hashed in the manifest).
QUANTWISE_FUZZ_CASES sets the cases per target (default 3, for the fast tier; run with 25 for a
longer search)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal

import pytest
from click.testing import CliRunner

from quantwise.checkpoint.exporters import export
from quantwise.cli.main import cli

CASES = int(os.environ.get("QUANTWISE_FUZZ_CASES", "3"))
SECONDS_PER_RUN = 120


def _damage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["truncate", "flip", "flip-header", "zero-run"])
    if kind == "truncate":
        cut = rng.randrange(0, len(data))
        return data[:cut], f"truncated at {cut}"
    damaged = bytearray(data)
    where = rng.randrange(0, min(len(data), 256) if kind == "flip-header" else len(data))
    if kind == "zero-run":
        damaged[where:where + 64] = bytes(len(damaged[where:where + 64]))
        return bytes(damaged), f"64 zero bytes at {where}"
    damaged[where] ^= 1 << rng.randrange(8)
    return bytes(damaged), f"bit flip at {where}"


class _Hang(Exception):
    pass


def _invoke(args):
    def alarm(*_):
        raise _Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(SECONDS_PER_RUN)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check(result, what: str, must_fail: bool = False):
    assert not isinstance(result.exception, _Hang), f"{what}: no answer in {SECONDS_PER_RUN} s"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{what}: {type(result.exception).__name__}: {result.exception}\n{result.output}"
    assert "Traceback" not in result.output, f"{what}:\n{result.output}"
    if result.exit_code == 0:
        assert not must_fail, f"{what}: accepted a damaged checkpoint\n{result.output}"
        for number in _numbers(result.stdout):
            assert math.isfinite(number), f"{what}: printed {number}"
        return
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{what}: exit {result.exit_code} with\n{result.output}"


def _numbers(stdout: str):
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return []
    found = []

    def walk(value):
        if isinstance(value, float):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(data)
    return found


@pytest.fixture(scope="module")
def targets(quantized, tmp_path_factory):
    ckpt = quantized("rtn", "int4-g32")
    gguf_dir = tmp_path_factory.mktemp("fuzz-gguf") / "g"
    export(ckpt, "gguf", gguf_dir)
    return ckpt, gguf_dir / "model.gguf"


def test_damaged_model_safetensors(tiny_llama, calib_text, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))
    rng = random.Random(1)
    original = (tiny_llama / "model.safetensors").read_bytes()
    for case in range(CASES):
        model = shutil.copytree(tiny_llama, tmp_path / f"m{case}")
        damaged, how = _damage(original, rng)
        (model / "model.safetensors").write_bytes(damaged)
        what = f"model.safetensors {how}"
        _check(_invoke(["inspect", model, "--no-rss", "--verify", "--json"]), f"inspect: {what}")
        _check(_invoke(["eval", model, "--text", calib_text, "--max-tokens", 64, "--window", 32, "--stride", 16,
                        "--json"]), f"eval: {what}")
        _check(_invoke(["quantize", model, "--method", "rtn", "--format", "int8", "--calib", calib_text, "--samples",
                        2, "--seq-len", 16, "--out", tmp_path / f"q{case}", "--json"]), f"quantize: {what}")


def test_damaged_gguf(targets, tiny_llama, calib_text, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))
    rng = random.Random(2)
    original = targets[1].read_bytes()
    for case in range(CASES):
        damaged, how = _damage(original, rng)
        path = tmp_path / f"c{case}" / "model.gguf"
        path.parent.mkdir()
        path.write_bytes(damaged)
        what = f"model.gguf {how}"
        _check(_invoke(["inspect", path, "--no-rss", "--json"]), f"inspect: {what}")
        _check(_invoke(["eval", tiny_llama, path, "--text", calib_text, "--max-tokens", 64, "--window", 32,
                        "--stride", 16, "--json"]), f"eval: {what}")
        _check(_invoke(["quantize", path, "--method", "rtn", "--format", "int8", "--calib", calib_text, "--samples",
                        2, "--seq-len", 16, "--out", tmp_path / f"q{case}", "--json"]), f"quantize: {what}")


@pytest.mark.parametrize("part", ["quantwise.json", "layers/layer_0001.safetensors", "rest.safetensors"])
def test_damaged_checkpoint_is_always_refused(targets, tiny_llama, calib_text, tmp_path, part):
    rng = random.Random(hash(part) % 1000)
    original = (targets[0] / part).read_bytes()
    for case in range(CASES):
        ckpt = shutil.copytree(targets[0], tmp_path / f"c{case}")
        damaged, how = _damage(original, rng)
        if damaged == original:
            continue
        (ckpt / part).write_bytes(damaged)
        what = f"{part} {how}"
        # a flip inside the manifest's JSON can leave it valid and meaning the same (whitespace,
        # an unused field): only the weight files are held to "always refused"
        must_fail = part != "quantwise.json"
        _check(_invoke(["inspect", ckpt, "--no-rss", "--verify", "--json"]), f"inspect: {what}", must_fail)
        _check(_invoke(["eval", tiny_llama, ckpt, "--text", calib_text, "--max-tokens", 64, "--window", 32,
                        "--stride", 16, "--json"]), f"eval: {what}", must_fail)
