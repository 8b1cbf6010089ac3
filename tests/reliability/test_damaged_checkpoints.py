"""A quantwise checkpoint whose files were damaged, swapped or given NaN scales is refused by name
on load (hashes recorded per file in the manifest), and `inspect --verify` says so too."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_checks import one_line_error, run
from safetensors.torch import load_file, save_file

import quantwise
from quantwise.checkpoint.manifest import content_hashes
from quantwise.checkpoint.native import NativeCheckpoint


@pytest.fixture
def ckpt(quantized, tmp_path):
    return shutil.copytree(quantized("rtn", "int4-g32"), tmp_path / "ckpt")


def _flip_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


def test_intact_checkpoint_verifies(ckpt):
    assert NativeCheckpoint.open(ckpt).verify() == 4  # 3 layer files + rest
    result = run("inspect", ckpt, "--verify", "--no-rss")
    assert result.exit_code == 0 and "verified: 4 weight files" in result.output, result.output


def test_bit_flip_in_a_layer_file(ckpt, calib_text, tiny_llama):
    _flip_byte(ckpt / "layers" / "layer_0001.safetensors")
    one_line_error(run("eval", tiny_llama, ckpt, "--text", calib_text, "--max-tokens", 64), "layer_0001",
                   "differ from what the manifest recorded")
    one_line_error(run("inspect", ckpt, "--verify", "--no-rss"), "layer_0001")


def test_layer_files_swapped(ckpt):
    layers = ckpt / "layers"
    first, second = layers / "layer_0000.safetensors", layers / "layer_0002.safetensors"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    with pytest.raises(ValueError, match="layer_0000.*differ"):
        quantwise.load(ckpt)


def test_nan_scales_are_refused_even_when_the_hashes_agree(ckpt):
    path = ckpt / "layers" / "layer_0002.safetensors"
    tensors = load_file(str(path))
    scale = next(name for name in tensors if name.endswith("scales"))
    tensors[scale][0, 0] = float("nan")
    save_file(tensors, str(path))
    manifest = json.loads((ckpt / "quantwise.json").read_text())
    manifest["files"] = content_hashes(ckpt)  # as if written that way by a buggy tool
    (ckpt / "quantwise.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"{scale}.*NaN or Inf"):
        quantwise.load(ckpt)


def test_truncated_rest_file(ckpt, calib_text, tiny_llama):
    rest = ckpt / "rest.safetensors"
    rest.write_bytes(rest.read_bytes()[:500])
    for command in (("inspect", ckpt, "--no-rss"), ("eval", tiny_llama, ckpt, "--text", calib_text)):
        one_line_error(run(*command), "rest.safetensors")


def test_manifest_that_lies_about_a_shape(ckpt):
    manifest = json.loads((ckpt / "quantwise.json").read_text())
    linear = manifest["layers"]["0"]["mlp.down_proj"]
    linear["shape"] = [linear["shape"][0], linear["shape"][1] * 4]
    (ckpt / "quantwise.json").write_text(json.dumps(manifest))
    one_line_error(run("eval", ckpt, ckpt, "--text", __file__, "--max-tokens", 32), "quantwise.json")


def test_version_2_checkpoint_without_hashes_still_loads(ckpt):
    manifest = json.loads((ckpt / "quantwise.json").read_text())
    manifest["format_version"] = 2
    del manifest["files"]
    (ckpt / "quantwise.json").write_text(json.dumps(manifest))
    ids = torch.arange(20).unsqueeze(0)
    with torch.no_grad():
        assert torch.isfinite(quantwise.load(ckpt)(ids).logits).all()
