"""Models whose weights do not match their config, pickles, NaN: refused by name, never scored."""

from __future__ import annotations

import json

import pytest
import torch
from cli_checks import one_line_error, run
from safetensors.torch import load_file, save_file

from quantwise.models.loading import load_model


def _edit_config(model_dir, **changes):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gemma"])
def test_strict_load_equals_transformers(arch, request):
    from transformers import AutoModelForCausalLM

    path = request.getfixturevalue(arch)
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(0))
    ours = load_model(path)
    theirs = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)


def test_config_of_another_architecture(model_copy, calib_text):
    model = model_copy()
    _edit_config(model, model_type="mamba", architectures=["MambaForCausalLM"])
    one_line_error(run("eval", model, "--text", calib_text, "--max-tokens", 64), "mamba", "lack")


def test_config_without_block_count(model_copy, calib_text):
    model = model_copy()
    _edit_config(model, num_hidden_layers=None)
    one_line_error(run("eval", model, "--text", calib_text, "--max-tokens", 64), "num_hidden_layers")


@pytest.mark.parametrize("layers", [2, 4])
def test_config_block_count_differs_from_weights(model_copy, calib_text, layers):
    model = model_copy()
    _edit_config(model, num_hidden_layers=layers)
    one_line_error(run("eval", model, "--text", calib_text, "--max-tokens", 64), f"says {layers} decoder blocks",
                   "0-2")


def test_leftover_tensor_is_refused(model_copy):
    model = model_copy()
    state = load_file(str(model / "model.safetensors"))
    state["model.extra_projection.weight"] = torch.zeros(4, 4)
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.extra_projection.weight"):
        load_model(model)


def test_pickle_needs_opt_in(model_copy, calib_text):
    model = model_copy()
    state = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    torch.save(state, model / "pytorch_model.bin")
    one_line_error(run("eval", model, "--text", calib_text, "--max-tokens", 64), "--allow-pickle")
    allowed = run("eval", model, "--text", calib_text, "--max-tokens", 64, "--allow-pickle", "--json")
    assert allowed.exit_code == 0, allowed.output


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_is_named(model_copy, calib_text, value):
    model = model_copy()
    state = load_file(str(model / "model.safetensors"))
    state["model.layers.1.mlp.down_proj.weight"][3, 5] = value
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})
    for command in (["eval", model, "--text", calib_text, "--max-tokens", 64],
                    ["quantize", model, "--method", "rtn", "--format", "int8", "--calib", calib_text,
                     "--samples", 2, "--seq-len", 32, "--out", model.parent / "q"]):
        one_line_error(run(*command), "model.layers.1.mlp.down_proj.weight", "NaN or Inf")
