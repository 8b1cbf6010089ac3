"""Other tools' formats read back into packed quantwise checkpoints: every code, scale and zero
point survives export -> import, so eval and bench measure the file a user downloaded."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import quantwise
from quantwise.checkpoint.exporters import ExportOptions, export
from quantwise.checkpoint.importers import ImportError_, as_native, detect, import_checkpoint
from quantwise.cli.main import cli
from quantwise.formats.integer import unpacked_codes, zero_points
from quantwise.runtime import QuantizedLinear

from .test_export import logits


def linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}


def natural_order_weight(module):
    return module.dense_weight()


def natural_order_codes(module):
    """Codes by original input column (act-order checkpoints store them permuted)."""
    codes = unpacked_codes(module.weight_q)
    return codes if module.perm is None else codes[:, torch.argsort(module.perm)]


@pytest.mark.parametrize("to,method,fmt,options", [
    ("compressed-tensors", "rtn", "int4-g32", {}), ("compressed-tensors", "gptq", "int4-g32-asym", {}),
    ("compressed-tensors", "smoothquant", "int8-channel", {}), ("compressed-tensors", "rtn", "fp8_e4m3-channel", {}),
    ("gptq", "gptq", "int4-g32", {}), ("gptq", "gptq", "int4-g32", {"static_groups": False}),
    ("awq", "awq", "int4-g32", {}), ("gguf", "gptq", "int4-g32", {}), ("gguf", "rtn", "int8-channel", {}),
])
def test_export_then_import_keeps_every_code(quantized, tmp_path, to, method, fmt, options):
    ckpt = quantized(method, fmt, **options)
    # GGUF in F32 embeddings: the logits below are compared bit for bit
    export(ckpt, to, tmp_path / "x", ExportOptions(gguf_embeddings="f32") if to == "gguf" else None)
    source = tmp_path / "x" / "model.gguf" if to == "gguf" else tmp_path / "x"
    assert detect(source) == to
    back = import_checkpoint(source, tmp_path / "back")
    ours, theirs = linears(quantwise.load(ckpt, kernels=False)), linears(quantwise.load(back, kernels=False))
    assert ours.keys() == theirs.keys() and len(ours) == 21
    for name, module in ours.items():
        other = theirs[name]
        assert torch.equal(natural_order_weight(other), natural_order_weight(module)), name
        if to != "gguf" and module.weight_q.spec.kind.value == "int":  # same codes, not just the same values
            assert other.weight_q.spec.bits == module.weight_q.spec.bits
            assert torch.equal(natural_order_codes(other), natural_order_codes(module))
            ours_z, theirs_z = zero_points(module.weight_q), zero_points(other.weight_q)
            assert (ours_z is None) == (theirs_z is None)
        assert (other.act_spec is None) == (module.act_spec is None)
    with torch.no_grad():
        assert torch.equal(logits(quantwise.load(back, kernels=False)), logits(quantwise.load(ckpt, kernels=False)))


def test_imports_are_cached_by_content(quantized, tmp_path):
    export(quantized("rtn", "int4-g32"), "gptq", tmp_path / "x")
    first = as_native(tmp_path / "x")
    assert as_native(tmp_path / "x") == first
    export(quantized("rtn", "int8-channel"), "gptq", tmp_path / "x", overwrite=True)
    second = as_native(tmp_path / "x")
    assert second != first  # changed weights under the same path: imported again
    assert next(iter(linears(quantwise.load(second, kernels=False)).values())).weight_q.spec.bits == 8


def test_unknown_quantization_method_is_refused(quantized, tmp_path):
    import json

    export(quantized("rtn", "int4-g32"), "gptq", tmp_path / "x")
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "exl3"
    (tmp_path / "x" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ImportError_, match="exl3"):
        detect(tmp_path / "x")


def test_eval_measures_an_exported_checkpoint_like_the_native_one(quantized, tiny_llama, calib_text,
                                                                  tmp_path):
    ckpt = quantized("gptq", "int4-g32")
    export(ckpt, "awq", tmp_path / "awq")
    result = CliRunner().invoke(cli, ["eval", str(tiny_llama), str(ckpt), str(tmp_path / "awq"), "--text",
                                      str(calib_text), "--max-tokens", "200", "--window", "64", "--stride", "32",
                                      "--json"])
    assert result.exit_code == 0, result.output
    import json

    rows = {row["name"]: row for row in json.loads(result.output[result.output.index("{"):])["quality"]}
    assert rows[str(ckpt)]["perplexity"] == rows[str(tmp_path / "awq")]["perplexity"]
