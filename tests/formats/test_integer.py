import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantwise.formats import Granularity, QuantSpec, dequantize, quantize
from quantwise.formats.integer import unpacked_codes, zero_points
from quantwise.formats.layout import expand_to_elements

shapes = st.tuples(st.integers(1, 9), st.integers(1, 300))


def _int_spec(bits, symmetric, granularity, group_size):
    gran = Granularity(granularity)
    return QuantSpec(kind="int", bits=bits, symmetric=symmetric, granularity=gran,
                     group_size=group_size if gran is Granularity.GROUP else None)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, bits=st.integers(2, 8), symmetric=st.booleans(),
       granularity=st.sampled_from(["tensor", "channel", "token", "group"]),
       group_size=st.sampled_from([1, 3, 7, 32, 64, 128]), seed=st.integers(0, 2**31),
       magnitude=st.sampled_from([1e-3, 1.0, 300.0]))
def test_reconstruction_error_is_at_most_half_a_step(shape, bits, symmetric, granularity,
                                                     group_size, seed, magnitude):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * magnitude
    spec = _int_spec(bits, symmetric, granularity, group_size)
    qt = quantize(x, spec)
    err = (dequantize(qt) - x).abs()
    step = expand_to_elements(qt.scales.float(), spec, *shape)
    assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-12), float((err - step / 2).max())


def test_short_last_group_is_its_own_group():
    # 576 = 4 x 128 + 64, as SmolLM2's hidden size: the last 64 columns get their own scale.
    x = torch.randn(4, 576)
    x[:, 512:] *= 0.001
    spec = QuantSpec(kind="int", bits=4, granularity="group", group_size=128)
    qt = quantize(x, spec)
    assert qt.scales.shape == (4, 5)
    tail_scale = x[:, 512:].abs().amax(-1) / 7
    assert torch.allclose(qt.scales[:, 4].float(), tail_scale, rtol=1e-3)
    # packed: 576 four-bit values -> 288 bytes a row; fp16 scales 5 a row
    assert qt.nbytes == 4 * 288 + 4 * 5 * 2


@pytest.mark.parametrize("cols,group,expected_bpw", [
    (4096, 128, 4 + 16 / 128),          # GPTQ/AWQ symmetric: 4.125
    (576, 128, (288 + 10) * 8 / 576),   # five groups a row, last one short
    (4096, 32, 4 + 16 / 32),
])
def test_int4_symmetric_bits_per_weight_from_storage(cols, group, expected_bpw):
    qt = quantize(torch.randn(8, cols), QuantSpec(kind="int", bits=4, granularity="group", group_size=group))
    assert qt.bits_per_weight == pytest.approx(expected_bpw, rel=1e-12)


def test_asymmetric_zero_points_are_packed_at_element_width():
    qt = quantize(torch.randn(8, 4096), QuantSpec(kind="int", bits=4, symmetric=False,
                                                  granularity="group", group_size=128))
    assert qt.zeros.shape == (8, 16)  # 32 groups x 4 bits = 16 bytes a row
    assert qt.bits_per_weight == pytest.approx(4 + 16 / 128 + 4 / 128)


def test_int8_symmetric_is_stored_as_int8_and_matches_formula():
    x = torch.randn(16, 64)
    qt = quantize(x, QuantSpec(kind="int", bits=8, granularity="channel"))
    assert qt.data.dtype == torch.int8
    scale = qt.scales.float()
    expected = torch.round(x / scale).clamp(-128, 127)
    assert torch.equal(qt.data.to(torch.float32), expected)
    assert qt.bits_per_weight == pytest.approx(8 + 16 / 64)


def test_asymmetric_uses_full_range_for_positive_data():
    x = torch.rand(4, 256) + 1.0  # all positive
    spec = QuantSpec(kind="int", bits=4, symmetric=False, granularity="channel")
    qt = quantize(x, spec)
    codes = unpacked_codes(qt)
    assert int(codes.max()) == 15
    assert torch.all(zero_points(qt) == 0)


def test_all_zero_tensor_round_trips_exactly():
    x = torch.zeros(3, 10)
    for sym in (True, False):
        qt = quantize(x, QuantSpec(kind="int", bits=4, symmetric=sym, granularity="channel"))
        assert torch.equal(dequantize(qt), x)


def test_per_token_equals_per_channel_on_activations():
    acts = torch.randn(2, 5, 32)  # (batch, tokens, hidden): one scale per token
    qt = quantize(acts, QuantSpec(kind="int", bits=8, granularity="token"))
    assert qt.scales.shape == (10, 1)
    assert dequantize(qt).shape == acts.shape
    assert math.isclose(float(qt.scales[3, 0]), float(acts.reshape(10, 32)[3].abs().max() / 127), rel_tol=1e-3)
