"""The replay cache (pipeline/replay.py) skips recomputation without changing a single bit."""

import copy

import pytest
import torch
from torch.nn import functional
from torch.overrides import TorchFunctionMode

from quantwise.formats.integer import unpacked_codes
from quantwise.methods import build_method
from quantwise.models.source import TensorSource
from quantwise.pipeline.block_quant import quantize_block
from quantwise.pipeline.replay import ReplayCache, trace_block
from quantwise.pipeline.skeleton import build_block, build_skeleton


class LinearCalls(TorchFunctionMode):
    """Counts F.linear calls (every linear of the block, float or quantized, runs through it) and
    attention computations (F.scaled_dot_product_attention)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.attention = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is functional.linear:
            self.count += 1
        if func is functional.scaled_dot_product_attention:
            self.attention += 1
        return func(*args, **(kwargs or {}))


def first_block(model_dir, batches=3):
    """Block 0 of a tiny model with its real calibration inputs and keyword arguments."""
    source = TensorSource(model_dir)
    skeleton = build_skeleton(model_dir, source)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(batches):
            skeleton.inner(input_ids=torch.randint(0, 200, (2, 24), generator=gen), use_cache=False)
    block = build_block(skeleton, 0, source.with_prefix(f"{skeleton.layers_path}.0."))
    model_type = getattr(skeleton.config.get_text_config(), "model_type", skeleton.config.model_type)
    return block, skeleton.recorders[0].inputs, skeleton.recorders[0].calls, model_type


def quantize_with(block, inputs, kwargs, model_type, budget, compute_dtype="float32", asymmetric=True):
    block = copy.deepcopy(block)
    trace = trace_block(block, inputs[0], kwargs[0], compute_dtype)
    groups = trace.groups
    cache = ReplayCache(block, trace, len(inputs), budget, compute_dtype)
    with LinearCalls() as calls:
        quantized, _ = quantize_block(block, model_type, build_method("gptq", "int4-g32", asymmetric=asymmetric),
                                      inputs, kwargs,
                                      groups=groups, cache=cache, compute_dtype=compute_dtype)
        outputs = list(cache.outputs(inputs, kwargs))
    codes = {name: unpacked_codes(q.weight_q) for name, q in quantized.items()}
    return codes, outputs, calls, cache


@pytest.mark.parametrize("model,compute_dtype,asymmetric", [
    ("tiny_llama", "float32", True), ("tiny_gemma", "float32", True), ("tiny_gemma", "bfloat16", True),
    ("tiny_llama", "float32", False)])
def test_replay_is_bit_identical_and_skips_linears(model, compute_dtype, asymmetric, request):
    block, inputs, kwargs, model_type = first_block(request.getfixturevalue(model))
    plain_codes, plain_out, plain_calls, _ = quantize_with(block, inputs, kwargs, model_type, 0, compute_dtype,
                                                           asymmetric)
    codes, out, calls, cache = quantize_with(block, inputs, kwargs, model_type, 1 << 30, compute_dtype, asymmetric)
    assert cache.tail_linears == {"self_attn": "self_attn.o_proj", "mlp": "mlp.down_proj"}
    # attention per batch: in o_proj's, gate/up's, down's and the outputs' pass without the cache;
    # with it once, in o_proj's pass, which then keeps self_attn as a tail (o_proj's input); the
    # asymmetric target's pass through the float block adds one either way (and its 7 linears)
    extra = int(asymmetric)
    assert (plain_calls.attention, calls.attention) == ((4 + extra) * len(inputs), (1 + extra) * len(inputs))
    assert codes.keys() == plain_codes.keys()
    for name in codes:
        assert torch.equal(codes[name], plain_codes[name]), name
    for a, b in zip(out, plain_out, strict=True):
        assert torch.equal(a, b)
    # per batch: 3 + 4 + 6 + 7 = 20 linear calls recomputing, 3 + 1 + 2 + 1 = 7 replaying (q/k/v in
    # o_proj's pass, o_proj rebuilding self_attn from its tail in gate/up's, gate/up in down's, down
    # rebuilding the MLP from its tail for the outputs); plus the trace and each linear's float
    # reference for its error report: 7 + 7
    assert plain_calls.count == 14 + (20 + 7 * extra) * len(inputs)
    assert calls.count == 14 + (7 + 7 * extra) * len(inputs)
    assert cache.peak_bytes > 0


def test_over_budget_modules_are_recomputed(tiny_llama):
    block, inputs, kwargs, model_type = first_block(tiny_llama)
    plain_codes, plain_out, plain_calls, _ = quantize_with(block, inputs, kwargs, model_type, budget=0)
    codes, out, calls, cache = quantize_with(block, inputs, kwargs, model_type, budget=1)
    assert calls.count == plain_calls.count and cache.peak_bytes == 0
    assert all(torch.equal(a, b) for a, b in zip(out, plain_out, strict=True))


def test_output_modified_in_place_is_dropped_not_replayed(tiny_llama):
    """A block that writes into a recorded output afterwards would replay wrong values: the cache
    sees the version counter move and recomputes that module instead."""
    block, inputs, kwargs, model_type = first_block(tiny_llama)
    reference, _, _, _ = quantize_with(block, inputs, kwargs, model_type, budget=0)
    mutating = copy.deepcopy(block)

    def scale_in_place(_module, _args, out):
        out[0].mul_(1.0)  # in place, same values: only the version counter moves

    mutating.self_attn.register_forward_hook(scale_in_place)
    codes, _, _, cache = quantize_with(mutating, inputs, kwargs, model_type, budget=1 << 30)
    assert "self_attn" not in cache.recorded
    assert all(torch.equal(codes[n], reference[n]) for n in reference)


def test_trace_finds_the_linears_whose_output_enters_an_rms_norm(tiny_gemma, tiny_llama):
    block, inputs, kwargs, _ = first_block(tiny_gemma)
    trace = trace_block(block, inputs[0], kwargs[0])
    eps = block.post_attention_layernorm.eps
    assert trace.normalized == {"self_attn.o_proj": eps, "mlp.down_proj": eps}
    block, inputs, kwargs, _ = first_block(tiny_llama)
    assert trace_block(block, inputs[0], kwargs[0]).normalized == {}   # Llama adds o_proj's output as is
