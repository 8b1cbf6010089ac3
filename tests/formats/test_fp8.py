import pytest
import torch

from quantwise.formats import QuantSpec, quantize
from quantwise.formats.fp8 import FP8_DTYPES, fp8_max

KINDS = list(FP8_DTYPES)


@pytest.mark.parametrize("kind", KINDS)
def test_maxima(kind):
    assert fp8_max(kind) == {"fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}[kind.value]


@pytest.mark.parametrize("kind", KINDS)
def test_unit_scale_bits_equal_torch_cast(kind):
    limit = fp8_max(kind)
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)) * limit / 6
    x[0, 0] = limit  # absmax == fp8 max, so the per-tensor scale is exactly 1
    qt = quantize(x, QuantSpec(kind=kind, granularity="tensor"))
    assert float(qt.scales) == 1.0
    expected = x.clamp(-limit, limit).to(FP8_DTYPES[kind])
    assert torch.equal(qt.data.view(torch.uint8), expected.view(torch.uint8))


@pytest.mark.parametrize("kind", KINDS)
def test_every_finite_code_round_trips_bit_exactly(kind):
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(FP8_DTYPES[kind])
    values = codes.float()
    finite = torch.isfinite(values) & (values != 0)  # +-0 share a value
    values = values[finite]
    assert values.abs().max() == fp8_max(kind)  # so the per-tensor scale is 1
    qt = quantize(values, QuantSpec(kind=kind, granularity="tensor"))
    assert float(qt.scales) == 1.0
    assert torch.equal(qt.data.view(torch.uint8).reshape(-1), codes[finite].view(torch.uint8))
    assert torch.equal(qt.dequantize(), values)


@pytest.mark.parametrize("kind", KINDS)
def test_saturates_instead_of_overflowing(kind):
    limit = fp8_max(kind)
    x = torch.tensor([[1.0, -2.0]])
    qt = quantize(x, QuantSpec(kind=kind, granularity="tensor"))
    assert qt.data.float().abs().max() == limit
    from quantwise.formats.fp8 import cast_saturating
    assert cast_saturating(torch.tensor([limit * 10, -limit * 10]), kind).float().tolist() == [limit, -limit]


def test_per_channel_scale_and_storage():
    x = torch.randn(32, 256)
    qt = quantize(x, QuantSpec(kind="fp8_e4m3", granularity="channel"))
    assert qt.data.dtype == torch.float8_e4m3fn
    assert qt.scales.shape == (32, 1)
    assert qt.bits_per_weight == pytest.approx(8 + 32 / 256)
    assert torch.allclose(qt.scales.squeeze(1), x.abs().amax(1) / 448)


def test_e4m3_beats_per_tensor_int8_on_heavy_tails():
    from quantwise.evaluation.format_study import student_t
    from quantwise.formats import sqnr_db

    x = student_t(torch.Generator().manual_seed(3), 512, 512)
    fp8 = quantize(x, QuantSpec(kind="fp8_e4m3", granularity="tensor"))
    int8 = quantize(x, QuantSpec(kind="int", bits=8, granularity="tensor"))
    assert sqnr_db(x, fp8.dequantize()) > sqnr_db(x, int8.dequantize()) + 6.0
