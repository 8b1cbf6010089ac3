import json

import pytest

from quantwise.models import load_presets, param_breakdown, resolve_arch
from quantwise.models.arch import arch_from_config


@pytest.mark.parametrize("name", list(load_presets()))
def test_preset_totals_match_published(name):
    arch = load_presets()[name]
    total = param_breakdown(arch).total / 1e9
    assert total == pytest.approx(arch.published_params_b, rel=2e-3)


def test_mixtral_active_parameters():
    arch = resolve_arch("mixtral-8x7b")
    assert param_breakdown(arch).active / 1e9 == pytest.approx(arch.published_active_b, rel=5e-3)


def test_kv_bytes_per_token_llama_3_70b():
    assert resolve_arch("llama-3-70b").kv_values_per_token * 2 == 327_680


def test_config_json_llama_3_8b(tmp_path):
    config = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch = resolve_arch(str(tmp_path))
    assert param_breakdown(arch).total == param_breakdown(resolve_arch("llama-3-8b")).total


def test_gpt2_small_and_opt_125m_totals():
    gpt2 = arch_from_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
                             "n_positions": 1024})
    assert param_breakdown(gpt2).total == 124_439_808  # transformers' GPT2LMHeadModel (tied)
    opt = arch_from_config({"model_type": "opt", "hidden_size": 768, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "ffn_dim": 3072, "vocab_size": 50272,
                            "max_position_embeddings": 2048, "word_embed_proj_dim": 768})
    assert param_breakdown(opt).total == 125_239_296  # facebook/opt-125m


def test_qwen3_has_head_norms():
    base = {"hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16, "num_key_value_heads": 8,
            "head_dim": 128, "intermediate_size": 3072, "vocab_size": 1000, "tie_word_embeddings": True}
    q3 = param_breakdown(arch_from_config({**base, "model_type": "qwen3"}))
    llama = param_breakdown(arch_from_config({**base, "model_type": "llama"}))
    assert q3.total - llama.total == 2 * 2 * 128


@pytest.mark.parametrize("config,needle", [
    ({"model_type": "llama", "hidden_size": 64}, "num_attention_heads"),
    ({"model_type": "bert", "hidden_size": 64}, "unsupported model_type"),
    ({"model_type": "llama", "hidden_size": -1, "num_attention_heads": 2}, "positive"),
])
def test_bad_configs(tmp_path, config, needle):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=needle):
        resolve_arch(str(tmp_path))


def test_unknown_model_and_missing_config(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        resolve_arch("llama-9-1t")
    with pytest.raises(FileNotFoundError):
        resolve_arch(str(tmp_path))
