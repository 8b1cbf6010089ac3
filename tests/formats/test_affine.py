"""Group-affine INT (x = q * scale + offset, float offset): reconstruction bound, storage, and the
offset that integer zero points cannot hold."""

import dataclasses

import pytest
import torch

from quantwise.formats import parse_spec, quantize, storage_bytes
from quantwise.formats.affine import codes, from_codes


@pytest.mark.parametrize("name", ["affine4-g32", "affine3-g64", "affine8-channel"])
def test_error_is_at_most_half_a_step(name):
    spec = parse_spec(name)
    x = torch.randn(16, 200) * 3 + 1
    qt = quantize(x, spec)
    step = qt.scales.float().repeat_interleave(spec.group_size or 200, dim=1)[:, :200]
    # the offset is the group minimum rounded to fp16: at most one fp16 ulp of |min| away
    slack = qt.offsets.float().abs().repeat_interleave(spec.group_size or 200, dim=1)[:, :200] * 2**-10
    assert ((qt.dequantize() - x).abs() <= step / 2 + slack + 1e-6).all()


def test_offset_that_is_no_multiple_of_the_scale_is_exact():
    """Q4_1-shaped values d * q + m with m off the d grid: affine holds them exactly, asymmetric INT
    (integer zero point) cannot."""
    codes_in = torch.arange(32, dtype=torch.uint8).reshape(1, 32) % 16
    d, m = torch.tensor([[0.25]]), torch.tensor([[-1.1]])
    x = codes_in.float() * d + m
    spec = parse_spec("affine4-g32")
    qt = from_codes(codes_in, d, m, spec, (1, 32))
    assert torch.equal(qt.dequantize(), x) and torch.equal(codes(qt), codes_in)
    fp32 = dataclasses.replace(spec, scale_dtype="float32")
    assert (quantize(x, fp32).dequantize() - x).abs().max() < 1e-6
    int_asym = dataclasses.replace(parse_spec("int4-g32-asym"), scale_dtype="float32")
    assert (quantize(x, int_asym).dequantize() - x).abs().max() > 0.01  # negative control: zero point on the grid


def test_storage_counts_offsets_in_the_scale_dtype():
    spec = parse_spec("affine4-g32")
    assert storage_bytes(spec, 2, 64) == 2 * 32 + 2 * 2 * 2 + 2 * 2 * 2  # nibbles + fp16 scales + fp16 offsets
    assert quantize(torch.randn(2, 64), spec).bits_per_weight == 5.0


def test_asym_flag_is_refused_in_one_line():
    with pytest.raises(ValueError, match="drop -asym"):
        parse_spec("affine4-g32-asym")
