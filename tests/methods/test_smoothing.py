import pytest
import torch
from torch import nn
from transformers import Gemma3TextConfig, LlamaConfig
from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer, Gemma3RotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from quantwise.methods import AWQ, RTN, LinearStats, LLMInt8, SmoothQuant

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")


def tiny_block(kind: str, kv_heads: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=kv_heads,
                  num_hidden_layers=1, vocab_size=100, head_dim=16)
    if kind == "llama":
        config = LlamaConfig(**common)
        block, rotary = LlamaDecoderLayer(config, 0), LlamaRotaryEmbedding(config)
    else:
        config = Gemma3TextConfig(**common, layer_types=["full_attention"], sliding_window=16)
        block, rotary = Gemma3DecoderLayer(config, 0), Gemma3RotaryEmbedding(config)
        with torch.no_grad():
            for name, p in block.named_parameters():
                if "norm" in name:
                    p.normal_(0, 0.3)
    block.eval()
    return config, block, rotary


def run_block(kind, block, rotary, hidden):
    positions = torch.arange(hidden.shape[1]).unsqueeze(0)
    emb = rotary(hidden, positions) if kind == "llama" else rotary(hidden, positions, "full_attention")
    with torch.no_grad():
        out = block(hidden, attention_mask=None, position_embeddings=emb, position_ids=positions)
    return out[0] if isinstance(out, tuple) else out


def collect_stats(kind, block, rotary, hidden, need_hessian=False):
    stats = {name: LinearStats(block.get_submodule(name).in_features, need_hessian) for name in LINEARS}
    hooks = [block.get_submodule(name).register_forward_pre_hook(
        lambda mod, args, name=name: stats[name].observe(args[0])) for name in LINEARS]
    run_block(kind, block, rotary, hidden)
    for h in hooks:
        h.remove()
    return stats


def quantize_block(kind, block, stats, method):
    method.prepare_block(block, "llama" if kind == "llama" else "gemma3_text", stats)
    for name in LINEARS:
        parent, child = name.rsplit(".", 1)
        setattr(block.get_submodule(parent), child, method.quantize_linear(block.get_submodule(name), stats[name]))
    return block


def with_outlier_channels(hidden):
    hidden = hidden.clone()
    hidden[..., :3] *= 40.0
    return hidden


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_smoothing_transform_alone_leaves_outputs_unchanged(kind):
    config, block, rotary = tiny_block(kind)
    hidden = with_outlier_channels(torch.randn(2, 24, 64))
    before = run_block(kind, block, rotary, hidden)
    stats = collect_stats(kind, block, rotary, hidden)
    SmoothQuant(alpha=0.8).prepare_block(block, "llama" if kind == "llama" else "gemma3_text", stats)
    after = run_block(kind, block, rotary, hidden)
    assert (after - before).norm() / before.norm() < 1e-5
    # AWQ's scales (including the v_proj -> o_proj and up -> down folds) are output-preserving too
    config, block, rotary = tiny_block(kind)
    stats = collect_stats(kind, block, rotary, hidden)
    AWQ().prepare_block(block, "llama" if kind == "llama" else "gemma3_text", stats)
    assert (run_block(kind, block, rotary, hidden) - before).norm() / before.norm() < 1e-5


def block_error(kind, method, hidden, seed=0):
    _, block, rotary = tiny_block(kind, seed=seed)
    reference = run_block(kind, block, rotary, hidden)
    stats = collect_stats(kind, block, rotary, hidden, need_hessian=getattr(method, "needs_hessian", False))
    quantize_block(kind, block, stats, method)
    out = run_block(kind, block, rotary, hidden)
    return float((out - reference).norm() / reference.norm())


def test_smoothquant_lowers_w8a8_error_with_outliers():
    hidden = with_outlier_channels(torch.randn(2, 32, 64))
    naive = block_error("llama", SmoothQuant(alpha=0.0), hidden)  # alpha 0: no migration to weights
    smoothed = block_error("llama", SmoothQuant(alpha=0.8), hidden)
    assert smoothed < 0.7 * naive


def test_llm_int8_beats_naive_int8_with_outliers():
    hidden = with_outlier_channels(torch.randn(2, 32, 64))
    naive = block_error("llama", LLMInt8(threshold=1e9), hidden)  # nothing counts as an outlier
    decomposed = block_error("llama", LLMInt8(threshold=6.0), hidden)
    assert decomposed < 0.5 * naive


def test_awq_beats_rtn_with_salient_channels():
    hidden = with_outlier_channels(torch.randn(2, 64, 64))
    errors = {name: block_error("llama", method, hidden) for name, method in
              [("rtn", RTN("int3-g32")), ("awq", AWQ("int3-g32", clip=False)), ("awq+clip", AWQ("int3-g32"))]}
    assert errors["awq"] < errors["rtn"]
    assert errors["awq+clip"] < errors["rtn"]


def test_gqa_skips_v_to_o_fold():
    _, block, rotary = tiny_block("llama", kv_heads=2)
    hidden = torch.randn(1, 8, 64)
    before = run_block("llama", block, rotary, hidden)
    v_before = block.self_attn.v_proj.weight.clone()
    stats = collect_stats("llama", block, rotary, hidden)
    AWQ().prepare_block(block, "llama", stats)
    assert (run_block("llama", block, rotary, hidden) - before).norm() / before.norm() < 1e-5
    # v_proj was scaled as a consumer of input_layernorm only (columns), never by rows for o_proj
    ratio = block.self_attn.v_proj.weight / v_before
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-4)


def test_bad_method_options():
    with pytest.raises(ValueError):
        SmoothQuant(alpha=1.5)
    with pytest.raises(ValueError):
        AWQ(then="magic")
    with pytest.raises(ValueError):
        LLMInt8(threshold=0)
    from quantwise.methods import build_method
    with pytest.raises(ValueError, match="unknown method"):
        build_method("squeezellm")
    with pytest.raises(ValueError, match="GPTQ only"):
        build_method("rtn", act_order=True)
    _ = nn  # keep import for readers: blocks are torch modules
