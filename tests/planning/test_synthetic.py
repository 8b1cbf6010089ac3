import dataclasses

import pytest

from quantwise.models.arch import resolve_arch
from quantwise.models.synthetic import hf_config, synthetic_model


def test_synthetic_model_has_the_presets_shapes(tmp_path):
    out = synthetic_model("smollm2-135m", 1, tmp_path / "m")
    built, preset = resolve_arch(str(out)), resolve_arch("smollm2-135m")
    # everything but the block count and the provenance fields matches the preset
    ignore = {"name": None, "source": "", "layers": 0, "published_params_b": None, "published_active_b": None}
    assert dataclasses.replace(built, **ignore) == dataclasses.replace(preset, **ignore)
    assert built.layers == 1
    assert (out / "tokenizer.json").exists()


@pytest.mark.parametrize("preset", ["gemma-3-270m", "qwen2.5-7b", "mistral-7b"])
def test_synthetic_configs_for_other_families(preset):
    arch = resolve_arch(preset)
    config = hf_config(arch, 2)
    assert (config.hidden_size, config.intermediate_size, config.num_key_value_heads, config.vocab_size) == \
        (arch.hidden, arch.intermediate, arch.kv_heads, arch.vocab)
    assert config.num_hidden_layers == 2 and config.tie_word_embeddings == arch.tied


def test_synthetic_refuses_moe_and_bad_block_counts():
    with pytest.raises(ValueError, match="dense decoders only"):
        hf_config(resolve_arch("mixtral-8x7b"), 1)
    with pytest.raises(ValueError, match="must be 1..32"):
        hf_config(resolve_arch("llama-3-8b"), 33)
