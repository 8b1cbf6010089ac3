"""Damaged or lying inputs to export and import end in one line naming the file, with nothing
half-written at the output."""

from __future__ import annotations

import json

from cli_checks import one_line_error, run

from quantwise.checkpoint.exporters import export


def test_truncated_gguf(quantized, tiny_llama, calib_text, tmp_path):
    export(quantized("rtn", "int4-g32"), "gguf", tmp_path / "g")
    data = (tmp_path / "g" / "model.gguf").read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: len(data) // 2])
    one_line_error(run("eval", tiny_llama, broken, "--text", calib_text, "--max-tokens", 64), "broken.gguf")


def test_truncated_layer_file_is_refused_by_export(quantized, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(quantized("rtn", "int4-g32"), ckpt)
    layer = ckpt / "layers" / "layer_0001.safetensors"
    layer.write_bytes(layer.read_bytes()[:1000])
    one_line_error(run("export", ckpt, "--to", "awq", "--out", tmp_path / "out"), "layer_0001")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_config_that_claims_another_format(quantized, tiny_llama, calib_text, tmp_path):
    export(quantized("rtn", "int4-g32"), "awq", tmp_path / "x")
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
    (tmp_path / "x" / "config.json").write_text(json.dumps(config))
    one_line_error(run("eval", tiny_llama, tmp_path / "x", "--text", calib_text, "--max-tokens", 64), "x")


def test_shapes_that_disagree_with_the_config(quantized, tiny_llama, calib_text, tmp_path):
    export(quantized("rtn", "int4-g32"), "gptq", tmp_path / "x")
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    config["intermediate_size"] = 128
    (tmp_path / "x" / "config.json").write_text(json.dumps(config))
    one_line_error(run("eval", tiny_llama, tmp_path / "x", "--text", calib_text, "--max-tokens", 64),
                   "config.json says")
