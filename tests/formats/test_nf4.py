import pytest
import torch

from quantwise.formats import NF4_CODEBOOK, DoubleQuantScales, QuantSpec, quantize, sqnr_db

BITSANDBYTES_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]


def test_codebook_is_bitsandbytes():
    assert NF4_CODEBOOK.tolist() == pytest.approx(BITSANDBYTES_NF4, abs=0)


def test_codebook_levels_are_normal_quantiles():
    # QLoRA: 8 positive levels from quantiles of N(0,1) over [0.5, offset], 7 negative likewise.
    offset = 0.9677083
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(offset, 0.5, 9)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8)[:-1])
    levels = torch.cat([pos, torch.zeros(1), neg]).sort().values
    levels = levels / levels.abs().max()
    assert torch.allclose(levels, NF4_CODEBOOK, atol=2e-6)


def test_nearest_level_and_exact_codebook_values_round_trip():
    x = NF4_CODEBOOK.repeat(4).reshape(1, 64) * 3.0  # block absmax 3
    qt = quantize(x, QuantSpec(kind="nf4", granularity="group", group_size=64))
    assert torch.allclose(qt.dequantize(), x, atol=1e-6)


def test_bits_per_weight_with_and_without_double_quant():
    x = torch.randn(256, 4096)
    plain = quantize(x, QuantSpec(kind="nf4", granularity="group", group_size=64))
    assert plain.bits_per_weight == pytest.approx(4 + 32 / 64)  # fp32 absmax: 4.5
    dq = quantize(x, QuantSpec(kind="nf4", granularity="group", group_size=64, double_quant=True))
    assert isinstance(dq.scales, DoubleQuantScales)
    # QLoRA's figure: 8/64 + 32/(64*256) = 0.127 bits of constants per weight (+ one fp32 offset)
    assert dq.bits_per_weight == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / x.numel())


def test_double_quant_costs_little_accuracy():
    x = torch.randn(128, 1024, generator=torch.Generator().manual_seed(1))
    plain = quantize(x, QuantSpec(kind="nf4", granularity="group", group_size=64))
    dq = quantize(x, QuantSpec(kind="nf4", granularity="group", group_size=64, double_quant=True))
    assert sqnr_db(x, dq.dequantize()) > sqnr_db(x, plain.dequantize()) - 0.1


def test_nf4_beats_uniform_int4_on_gaussian_weights():
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(2))
    nf4 = quantize(x, QuantSpec(kind="nf4", granularity="group", group_size=64))
    int4 = quantize(x, QuantSpec(kind="int", bits=4, granularity="group", group_size=64))
    assert sqnr_db(x, nf4.dequantize()) > sqnr_db(x, int4.dequantize()) + 1.0
