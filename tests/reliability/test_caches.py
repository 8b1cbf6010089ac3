"""Caches are keyed by content: a file that shares another's name never gets its results, a
changed reference or text recomputes (and says so), a damaged cache is discarded with a warning."""

from __future__ import annotations

import shutil
import struct

import pytest
from cli_checks import one_line_error, run

from quantwise.checkpoint.exporters import export


@pytest.fixture
def gguf_file(quantized, tmp_path):
    export(quantized("rtn", "int8"), "gguf", tmp_path / "exported")
    return tmp_path / "exported" / "model.gguf"


def test_gguf_conversion_is_not_reused_for_another_file_of_the_same_name(gguf_file, tmp_path, calib_text,
                                                                          monkeypatch):
    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = shutil.copyfile(gguf_file, tmp_path / "a" / "tiny.gguf")
    first = run("quantize", good, "--method", "rtn", "--format", "int8", "--calib", calib_text, "--samples", 2,
                "--seq-len", 32, "--out", tmp_path / "q1")
    assert first.exit_code == 0, first.output
    data = good.read_bytes()
    (tmp_path / "b" / "tiny.gguf").write_bytes(data[: len(data) * 2 // 3])
    second = run("quantize", tmp_path / "b" / "tiny.gguf", "--method", "rtn", "--format", "int8", "--calib",
                 calib_text, "--samples", 2, "--seq-len", 32, "--out", tmp_path / "q2")
    one_line_error(second, "b/tiny.gguf", "damaged")
    assert not (tmp_path / "q2" / "quantwise.json").exists()


@pytest.mark.parametrize("field", ["tensors", "keys"])
def test_gguf_with_absurd_counts(gguf_file, tmp_path, field, calib_text, tiny_llama):
    data = bytearray(gguf_file.read_bytes())
    offset = 8 if field == "tensors" else 16
    data[offset:offset + 8] = struct.pack("<Q", 1 << 50)
    broken = tmp_path / "absurd.gguf"
    broken.write_bytes(bytes(data))
    for command in (("inspect", broken, "--no-rss"), ("eval", tiny_llama, broken, "--text", calib_text)):
        one_line_error(run(*command), "absurd.gguf", "damaged GGUF header")


def _eval(reference, text, cache, *extra):
    return run("eval", reference, "--text", text, "--max-tokens", 200, "--window", 64, "--stride", 32,
               "--cache", cache, "--json", *extra)


def _perplexity(result):
    import json

    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["quality"][0]["perplexity"]


def test_eval_cache_follows_the_weights_not_the_name(model_copy, calib_text, tmp_path):
    from safetensors.torch import load_file, save_file

    model, cache = model_copy(), tmp_path / "ref.safetensors"
    first = _perplexity(_eval(model, calib_text, cache))
    assert _perplexity(_eval(model, calib_text, cache)) == first
    state = load_file(str(model / "model.safetensors"))
    state["model.norm.weight"] *= 3
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})
    changed = _eval(model, calib_text, cache)
    assert "other weights" in changed.stderr and "recomputing" in changed.stderr
    assert abs(_perplexity(changed) - first) > 1e-3


def test_eval_cache_for_another_window_recomputes(tiny_llama, calib_text, tmp_path):
    cache = tmp_path / "ref.safetensors"
    _perplexity(_eval(tiny_llama, calib_text, cache))
    other = run("eval", tiny_llama, "--text", calib_text, "--max-tokens", 200, "--window", 48, "--stride", 32,
                "--cache", cache, "--json")
    assert "other window" in other.stderr
    _perplexity(other)


def test_damaged_eval_cache_is_discarded(tiny_llama, calib_text, tmp_path):
    cache = tmp_path / "ref.safetensors"
    first = _perplexity(_eval(tiny_llama, calib_text, cache))
    cache.write_bytes(cache.read_bytes()[:300])
    again = _eval(tiny_llama, calib_text, cache)
    assert "damaged" in again.stderr
    assert _perplexity(again) == first


def test_unwritable_cache_fails_before_the_work(tiny_llama, calib_text, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    one_line_error(_eval(tiny_llama, calib_text, blocker / "ref.safetensors"), "cannot write",
                   "a-file/ref.safetensors")


def test_a_remembered_file_digest_is_the_files_own_and_follows_its_changes(tmp_path, monkeypatch):
    import hashlib
    import os
    import time

    from quantwise.checkpoint import manifest

    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(manifest, "REMEMBERED_DIGEST_BYTES", 16)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    first = manifest.file_sha256(weights)
    assert first == hashlib.sha256(b"a" * 100).hexdigest()
    assert len(list((tmp_path / "cache" / "digests").iterdir())) == 1   # remembered
    assert manifest.file_sha256(weights) == first                      # and read back
    # same size, mtime set back to what it was: the ctime moved, so the new bytes are read
    before = weights.stat()
    weights.write_bytes(b"b" * 100)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    while weights.stat().st_ctime_ns == before.st_ctime_ns:   # ctime ticks coarsely on some filesystems
        time.sleep(0.01)
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_mtime_ns == before.st_mtime_ns and weights.stat().st_size == before.st_size
    assert manifest.file_sha256(weights) == hashlib.sha256(b"b" * 100).hexdigest()
    # a damaged entry is recomputed, not returned
    for entry in (tmp_path / "cache" / "digests").iterdir():
        entry.write_text("not a digest")
    assert manifest.file_sha256(weights) == hashlib.sha256(b"b" * 100).hexdigest()


def test_small_files_are_hashed_without_a_cache_entry(tmp_path, monkeypatch):
    import hashlib

    from quantwise.checkpoint import manifest

    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "config.json"
    config.write_text("{}")
    assert manifest.file_sha256(config) == hashlib.sha256(b"{}").hexdigest()
    assert not (tmp_path / "cache" / "digests").exists()
