import pytest
import torch

from quantwise.formats import parse_spec, quantize
from quantwise.runtime import QuantizedLinear
from quantwise.runtime.kernels import PackedInt4Linear, PackedInt8Linear, has_cpu_int4_kernel

pytestmark = pytest.mark.skipif(not has_cpu_int4_kernel(), reason="no CPU int4 kernel in this torch")


@pytest.mark.parametrize("fmt", ["int4-g128", "int4-g128-asym", "int4-g32", "int4-g64-asym"])
@pytest.mark.parametrize("cols", [512, 576])  # 576 = 4 x 128 + 64: padded for the kernel
def test_int4_kernel_matches_dequantized_reference(fmt, cols):
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(100, cols, generator=gen) * 0.05, torch.randn(100, generator=gen)  # 100 rows: padded
    qt = quantize(weight, parse_spec(fmt))
    reference = QuantizedLinear(qt, bias)
    kernel = PackedInt4Linear(qt, bias, None)
    x = torch.randn(3, 5, cols, generator=gen)
    expected = reference(x)
    assert torch.allclose(kernel(x), expected, atol=2e-2 * expected.abs().max())


def test_int4_kernel_with_act_order_permutation():
    gen = torch.Generator().manual_seed(1)
    qt = quantize(torch.randn(64, 256, generator=gen), parse_spec("int4-g64"))
    perm = torch.randperm(256, generator=gen)
    x = torch.randn(4, 256, generator=gen)
    expected = QuantizedLinear(qt, perm=perm)(x)
    assert torch.allclose(PackedInt4Linear(qt, None, perm)(x), expected, atol=2e-2 * expected.abs().max())


def test_int8_kernel_matches_dequantized_reference():
    gen = torch.Generator().manual_seed(2)
    qt = quantize(torch.randn(80, 200, generator=gen), parse_spec("int8-channel"))  # 200: padded to 224
    x = torch.randn(7, 200, generator=gen)
    expected = QuantizedLinear(qt)(x)
    assert torch.allclose(PackedInt8Linear(qt, None, None)(x), expected, atol=2e-2 * expected.abs().max())


def test_kernel_error_is_bf16_rounding_not_layout():
    # a wrong layout would give errors of the order of the outputs; bf16 inputs give ~0.4%
    gen = torch.Generator().manual_seed(3)
    qt = quantize(torch.randn(128, 576, generator=gen) * 0.05, parse_spec("int4-g128-asym"))
    x = torch.randn(16, 576, generator=gen)
    expected = QuantizedLinear(qt)(x)
    relative = (PackedInt4Linear(qt, None, None)(x) - expected).norm() / expected.norm()
    assert relative < 1e-2


def test_unsupported_formats_are_refused():
    with pytest.raises(ValueError, match="INT4 kernel"):
        PackedInt4Linear(quantize(torch.randn(8, 64), parse_spec("int4-g16")), None, None)
    with pytest.raises(ValueError, match="INT8 kernel"):
        PackedInt8Linear(quantize(torch.randn(8, 64), parse_spec("int8-channel-asym")), None, None)
