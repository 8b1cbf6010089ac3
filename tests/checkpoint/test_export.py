"""Exports read back by the field's own readers: transformers + compressed-tensors, gguf's reader
and dequantizer, transformers' GGUF loader; each with a negative control that must fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import quantwise
from quantwise.checkpoint.exporters import ExportError, ExportOptions, export, gguf_arch
from quantwise.checkpoint.exporters import gguf as gguf_exporter
from quantwise.runtime import QuantizedLinear

from .spec_readers import awq_weight, gptq_v1_weight

IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def ours(ckpt):
    return logits(quantwise.load(ckpt, kernels=False))


def hf_logits(path, **kwargs):
    from transformers import AutoModelForCausalLM

    return logits(AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kwargs).eval())


def rel_max(got, want):
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("method,fmt", [("rtn", "int4-g32"), ("rtn", "int8-channel"),
                                        ("smoothquant", "int8-channel"), ("rtn", "fp8_e4m3-channel"),
                                        ("rtn", "int3-g32")])
def test_compressed_tensors_loads_in_transformers(quantized, method, fmt, tmp_path):
    """Every decompressed weight equals ours exactly, and so do the logits (W8A8: compressed-tensors
    quantizes activations with absmax / 127.5 where quantwise uses absmax / 127, so a looser bound)."""
    pytest.importorskip("compressed_tensors")
    from transformers import AutoModelForCausalLM

    ckpt = quantized(method, fmt)
    export(ckpt, "compressed-tensors", tmp_path / "ct")
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ct"), dtype=torch.float32).eval()
    model = quantwise.load(ckpt, kernels=False)
    bound = 2e-2 if method == "smoothquant" else 1e-3
    assert rel_max(logits(theirs), logits(model)) < bound  # the first forward decompresses their weights
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    for name, module in linears:
        assert torch.equal(theirs.get_submodule(name).weight.float(), module.dense_weight()), name
    assert len(linears) == 21


@pytest.mark.parametrize("fmt", ["int4-g32-asym", "int8-channel-asym"])
def test_compressed_tensors_asymmetric_read_by_its_decompressor(quantized, tmp_path, fmt):
    """Asymmetric pack-quantized through compressed-tensors' own decompressor, layer by layer.
    (transformers 5.24 + compressed-tensors 0.20 build the model with unpacked zero-point shapes and
    re-initialise the packed ones llm-compressor and quantwise write, so the end-to-end load is not
    the check here; vLLM reads them packed.)"""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme

    ckpt = quantized("gptq", fmt)
    export(ckpt, "compressed-tensors", tmp_path / "ct")
    group = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    scheme = QuantizationScheme(targets=group["targets"], weights=group["weights"])
    names, shards = _dense(tmp_path / "ct", "model.layers.", ".weight_packed")
    model = quantwise.load(ckpt, kernels=False)
    for name in names:
        local = {key[len(name) + 1:]: value for key, value in shards.items() if key.startswith(name + ".")}
        weight = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
        assert torch.equal(weight.float(), model.get_submodule(name).dense_weight())
    assert len(names) == 21


def test_compressed_tensors_negative_control_offset(quantized, tmp_path):
    """Codes stored without the +8 offset (nibble top bit flipped) must give other logits."""
    pytest.importorskip("compressed_tensors")
    ckpt = quantized("rtn", "int4-g32")
    export(ckpt, "compressed-tensors", tmp_path / "ct")
    shard = sorted((tmp_path / "ct").glob("model-00001-*.safetensors"))[0]
    tensors = load_file(shard)
    for name in [n for n in tensors if n.endswith("weight_packed")]:
        tensors[name] = tensors[name] ^ torch.tensor(0x88888888 - 2**32, dtype=torch.int32)
    save_file(tensors, shard, metadata={"format": "pt"})
    assert rel_max(hf_logits(tmp_path / "ct"), ours(ckpt)) > 1e-2


def _gguf_weights(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type, gguf.quants.dequantize(t.data, t.tensor_type)) for t in reader.tensors}


@pytest.mark.parametrize("method,fmt,kind", [("rtn", "int4-g32", "Q4_0"), ("gptq", "int4-g64", "Q4_0"),
                                             ("rtn", "int8-channel", "Q8_0"), ("rtn", "int4-g32-asym", "Q4_1")])
def test_gguf_blocks_hold_our_codes(quantized, method, fmt, kind, tmp_path):
    """gguf's own dequantizer gives back our dequantized weights (Q4_1: m rounded to fp16)."""
    ckpt = quantized(method, fmt)
    export(ckpt, "gguf", tmp_path / "g")
    tensors = _gguf_weights(tmp_path / "g" / "model.gguf")
    model = quantwise.load(ckpt, kernels=False)
    config = json.loads((ckpt / "config.json").read_text())
    checked = 0
    for name, module in model.named_modules():
        if not isinstance(module, QuantizedLinear):
            continue
        index, proj = name.split(".")[2], name.split(".")[-1]
        gguf_name = f"blk.{index}.{gguf_arch.LLAMA_BLOCK_NAMES['.'.join(name.split('.')[3:])]}.weight"
        kind_read, values = tensors[gguf_name]
        assert kind_read.name == kind
        want = module.dense_weight().numpy()
        if proj in ("q_proj", "k_proj"):
            heads = config["num_attention_heads"] if proj == "q_proj" else config["num_key_value_heads"]
            want = gguf_exporter.permute_qk(want, heads)
        if kind == "Q4_1":
            np.testing.assert_allclose(values, want, rtol=0, atol=float(np.abs(want).max()) * 2**-10)
        else:
            assert np.array_equal(values, want)
        checked += 1
    assert checked == 3 * 7


def test_gguf_loads_in_transformers_and_needs_the_qk_permutation(quantized, tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    def load_gguf(path):
        return AutoModelForCausalLM.from_pretrained(str(path), gguf_file="model.gguf", dtype=torch.float32).eval()

    ckpt = quantized("gptq", "int4-g32")
    model = quantwise.load(ckpt, kernels=False)
    f32 = ExportOptions(gguf_embeddings="f32")  # exact: the embeddings as our checkpoint holds them
    export(ckpt, "gguf", tmp_path / "g", f32)
    theirs = load_gguf(tmp_path / "g")
    assert rel_max(logits(theirs), logits(model)) < 1e-5
    q_name = "model.layers.0.self_attn.q_proj"
    assert torch.equal(theirs.get_submodule(q_name).weight, model.get_submodule(q_name).dense_weight())
    monkeypatch.setattr(gguf_exporter, "permute_qk", lambda rows, heads: rows)  # negative control
    export(ckpt, "gguf", tmp_path / "g-unpermuted", f32)
    unpermuted = load_gguf(tmp_path / "g-unpermuted")
    for proj in ("q_proj", "k_proj"):
        name = f"model.layers.0.self_attn.{proj}"
        assert not torch.equal(unpermuted.get_submodule(name).weight, model.get_submodule(name).dense_weight())


def test_gguf_embeddings_are_stored_as_llama_quantize_stores_them(quantized, tmp_path):
    """Token embeddings and output as Q8_0 blocks (the tiny model's 64-wide rows are no K-quant
    super-block) that gguf's dequantizer reads within ~half a step of the float weights; transformers'
    GGUF loader runs them; the file is smaller by what F32 cost."""
    from transformers import AutoModelForCausalLM

    ckpt = quantized("gptq", "int4-g32")
    small = export(ckpt, "gguf", tmp_path / "q")
    full = export(ckpt, "gguf", tmp_path / "f", ExportOptions(gguf_embeddings="f32"))
    assert small["embedding_types"] == {"token_embd.weight": "Q8_0", "output.weight": "Q8_0"}
    assert full["embedding_types"] == {} and small["tensor_types"] == full["tensor_types"]
    tensors = _gguf_weights(tmp_path / "q" / "model.gguf")
    model = quantwise.load(ckpt, kernels=False)
    for gguf_name, module in (("token_embd.weight", model.model.embed_tokens), ("output.weight", model.lm_head)):
        want = module.weight.detach().float().numpy().reshape(256, -1, 32)
        step = np.abs(want).max(-1, keepdims=True) / 127
        error = np.abs(tensors[gguf_name][1].reshape(want.shape) - want)
        # codes round against absmax / 127, dequantized with it in fp16: 1/2 step + 127 * 2^-11 steps
        assert (error <= 0.563 * step).all() and error.max() > 0.3 * step.max(), gguf_name
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(tensors[gguf_name][1]))
    f32_bytes, q8_bytes = 2 * 256 * 64 * 4, 2 * 256 * 64 // 32 * 34
    assert abs((full["bytes"] - small["bytes"]) - (f32_bytes - q8_bytes)) <= 2 * 32  # GGUF's 32-byte alignment
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path / "q"), gguf_file="model.gguf",
                                                  dtype=torch.float32).eval()
    assert rel_max(logits(theirs), logits(model)) < 1e-5  # ours, given the embeddings as stored


def _dense(path, prefix, marker=".qweight"):
    """{linear name: its marker tensor's key} and every tensor of an exported directory."""
    shards = {}
    for file in path.glob("model-*.safetensors"):
        shards.update(load_file(file))
    return {k[: -len(marker)]: k for k in shards if k.startswith(prefix) and k.endswith(marker)}, shards


@pytest.mark.parametrize("options,desc_act", [({}, False), ({"act_order": False}, False),
                                              ({"static_groups": False}, True)])
def test_gptq_v1_layout_read_from_its_description(quantized, tmp_path, options, desc_act):
    """Defaults (act-order with static groups) keep the natural order; dynamic groups need g_idx."""
    ckpt = quantized("gptq", "int4-g32", **options)
    export(ckpt, "gptq", tmp_path / "gptq")
    config = json.loads((tmp_path / "gptq" / "config.json").read_text())["quantization_config"]
    assert config["desc_act"] is desc_act and config["checkpoint_format"] == "gptq"
    names, shards = _dense(tmp_path / "gptq", "model.layers.")
    model = quantwise.load(ckpt, kernels=False)
    for name in names:
        args = [shards[f"{name}.{t}"] for t in ("qweight", "qzeros", "scales", "g_idx")]
        want = model.get_submodule(name).dense_weight()
        assert torch.allclose(gptq_v1_weight(*args, bits=4), want, rtol=0, atol=1e-6)
        # negative control: a reader that forgets v1's zero - 1 is off by one step everywhere
        assert not torch.allclose(gptq_v1_weight(*args, bits=4, zero_offset=0), want, rtol=0, atol=1e-3)
    assert (shards[f"{next(iter(names))}.qzeros"] == 0x77777777).all()  # symmetric 4-bit: zero 8 stored as 7


def test_awq_gemm_layout_read_from_its_description(quantized, tmp_path):
    ckpt = quantized("awq", "int4-g32")
    export(ckpt, "awq", tmp_path / "awq")
    names, shards = _dense(tmp_path / "awq", "model.layers.")
    model = quantwise.load(ckpt, kernels=False)
    for name in names:
        args = [shards[f"{name}.{t}"] for t in ("qweight", "qzeros", "scales")]
        want = model.get_submodule(name).dense_weight()
        assert torch.allclose(awq_weight(*args, group_size=32), want, rtol=0, atol=1e-6)
        assert not torch.allclose(awq_weight(*args, group_size=32, order=list(range(8))), want, atol=1e-3)


@pytest.mark.parametrize("to,method,fmt,options,message", [
    ("compressed-tensors", "rtn", "int4-g64", {}, "does not divide the input width 96"),
    ("gptq", "rtn", "int4-g64", {}, "does not divide the input width 96"),
    ("compressed-tensors", "rtn", "nf4-g64", {}, "bitsandbytes"),
    ("compressed-tensors", "gptq", "int4-g32", {"static_groups": False}, "--static-groups"),
    ("gguf", "rtn", "int3-g32", {}, "INT4 and INT8"),
    ("awq", "rtn", "int8-channel", {}, "4-bit groups"),
])
def test_unloadable_exports_are_refused_before_writing(quantized, tmp_path, to, method, fmt, options, message):
    ckpt = quantized(method, fmt, **options)
    with pytest.raises(ExportError, match=message):
        export(ckpt, to, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # no staging left behind


def test_export_refuses_to_overwrite(quantized, tmp_path):
    ckpt = quantized("rtn", "int4-g32")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        export(ckpt, "awq", tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
    export(ckpt, "awq", tmp_path / "out", ExportOptions(), overwrite=True)
    assert not (tmp_path / "out" / "mine.txt").exists()


def test_load_serves_packed_kernels_by_default(quantized):
    ckpt = quantized("gptq", "int4-g32")
    served = quantwise.load(ckpt)
    assert not any(isinstance(m, QuantizedLinear) for m in served.modules())  # no dequantized copies
    got, want = logits(served), ours(ckpt)
    assert rel_max(got, want) < 2e-2  # bf16 activations inside the kernels
    assert float((got.argmax(-1) == want.argmax(-1)).float().mean()) > 0.9


def test_quantize_for_vllm_picks_what_the_export_needs(tiny_llama, calib_text, tmp_path):
    """int4-g64 on a model whose MLP is 96 wide: --for vllm quantizes down_proj at g32 and keeps
    act-order groups static, so the compressed-tensors export loads (without it, it is refused)."""
    pytest.importorskip("compressed_tensors")
    from click.testing import CliRunner

    from quantwise.cli.main import cli

    out = tmp_path / "q"
    args = ["quantize", str(tiny_llama), "--method", "gptq", "--format", "int4-g64", "--act-order", "--calib",
            str(calib_text), "--samples", "4", "--seq-len", "32", "--out", str(out), "--for", "vllm"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    exported = tmp_path / "q-compressed-tensors"
    groups = json.loads((exported / "config.json").read_text())["quantization_config"]["config_groups"]
    sizes = {g["weights"]["group_size"]: g["targets"] for g in groups.values()}
    assert sorted(sizes) == [32, 64] and all(t.endswith("down_proj") for t in sizes[32])
    assert rel_max(hf_logits(exported), ours(out)) < 1e-3
    refused = CliRunner().invoke(cli, ["export", str(out), "--to", "gguf", "--out", str(tmp_path / "g")])
    assert refused.exit_code == 0  # groups of 32k transcode to Q4_0 too
    plain = CliRunner().invoke(cli, args[:-4] + ["--no-static-groups", "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0
    refused = CliRunner().invoke(cli, ["export", str(tmp_path / "plain"), "--to", "compressed-tensors", "--out",
                                       str(tmp_path / "ct")])
    assert refused.exit_code == 2 and "--static-groups" in refused.output


def test_quantize_for_refuses_what_the_engine_cannot_serve(tiny_llama, calib_text, tmp_path):
    from click.testing import CliRunner

    from quantwise.cli.main import cli

    result = CliRunner().invoke(cli, ["quantize", str(tiny_llama), "--method", "rtn", "--format", "nf4-g64",
                                      "--calib", str(calib_text), "--out", str(tmp_path / "q"), "--for", "vllm"])
    assert result.exit_code == 2 and "NF4" in result.output
    assert not (tmp_path / "q").exists()
