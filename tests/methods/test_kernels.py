import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from quantwise.cli.main import cli
from quantwise.evaluation.throughput import _CACHE_ARG, _cache_of
from quantwise.formats import parse_spec, quantize
from quantwise.runtime import QuantizedLinear
from quantwise.runtime.kernels import (
    FusedSlice,
    PackedInt4Linear,
    PackedInt8Linear,
    PackedW8A8Linear,
    _SharedCall,
    has_cpu_int4_kernel,
    int4_kernel_supports,
    packed_module,
    tinygemm_nibbles,
    use_packed_kernels,
)
from quantwise.runtime.qlinear import PER_TOKEN_INT8

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_model  # noqa: E402

pytestmark = pytest.mark.skipif(not has_cpu_int4_kernel(), reason="no CPU int4 kernel in this torch")


@pytest.mark.parametrize("fmt", ["int4-g128", "int4-g128-asym", "int4-g32", "int4-g64-asym", "affine4-g32"])
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


def test_int4_kernel_takes_affine_offsets_shifted_by_eight_steps():
    """GGUF Q4_K / Q4_1 imports (affine4: q * s + offset) on the kernel's (q - 8) * s + zero."""
    gen = torch.Generator().manual_seed(4)
    qt = quantize(torch.randn(64, 256, generator=gen) * 0.05 + 0.02, parse_spec("affine4-g32"))
    x = torch.randn(4, 256, generator=gen)
    expected = QuantizedLinear(qt)(x)
    assert torch.allclose(PackedInt4Linear(qt, None, None)(x), expected, atol=2e-2 * expected.abs().max())
    unshifted = dataclasses.replace(qt, offsets=qt.offsets - 8 * qt.scales)  # negative control: the +8 s left out
    assert not torch.allclose(PackedInt4Linear(unshifted, None, None)(x), expected, atol=2e-2 * expected.abs().max())


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


def test_int8_kernel_takes_weights_at_unaligned_offsets():
    # Regression: safetensors hands out tensors at any byte offset of the file; the AVX-512 INT8
    # kernel segfaulted on such a weight. The packed module must hold its own aligned copy.
    gen = torch.Generator().manual_seed(4)
    qt = quantize(torch.randn(64, 96, generator=gen), parse_spec("int8-channel"))
    buffer = bytearray(qt.data.numel() + 1)
    unaligned = torch.frombuffer(buffer, dtype=torch.int8, offset=1, count=qt.data.numel()).reshape(qt.data.shape)
    unaligned.copy_(qt.data)
    assert unaligned.data_ptr() % 64 != 0
    moved = dataclasses.replace(qt, data=unaligned)
    kernel = PackedInt8Linear(moved, None, None)
    assert kernel.weight.data_ptr() % 64 == 0
    x = torch.randn(3, 96, generator=gen)
    expected = QuantizedLinear(qt)(x)
    assert torch.allclose(kernel(x), expected, atol=2e-2 * expected.abs().max())


@pytest.mark.parametrize("fmt", ["int4-g64", "int4-g128-asym", "int8-channel"])
def test_stacked_weights_equal_separate_kernels(fmt):
    gen = torch.Generator().manual_seed(5)
    parts = [quantize(torch.randn(rows, 192, generator=gen) * 0.05, parse_spec(fmt)) for rows in (64, 32, 32)]
    biases = [torch.randn(64, generator=gen), None, torch.randn(32, generator=gen)]
    kernel_type = PackedInt8Linear if fmt.startswith("int8") else PackedInt4Linear
    stacked = kernel_type(parts, biases, None)
    x = torch.randn(5, 192, generator=gen)
    separate = torch.cat([kernel_type(qt, b, None)(x) for qt, b in zip(parts, biases, strict=True)], -1)
    assert stacked.out_features == 128
    assert torch.allclose(stacked(x), separate, atol=1e-5 * separate.abs().max())


def test_stacking_refuses_mixed_formats():
    a = quantize(torch.randn(16, 64), parse_spec("int4-g64"))
    b = quantize(torch.randn(16, 64), parse_spec("int4-g32"))
    with pytest.raises(ValueError, match="one format"):
        PackedInt4Linear([a, b], None, None)


def _tiny_quantized(tmp_path, fmt: str, arch: str = "llama"):
    from transformers import AutoModelForCausalLM

    from quantwise.evaluation.throughput import quantize_linears

    model = AutoModelForCausalLM.from_pretrained(str(make_tiny_model(tmp_path / arch, arch=arch)), dtype="float32")
    quantize_linears(model, fmt)
    return model.eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("fmt", ["int4-g64", "int8-channel"])
def test_fused_projections_give_the_unfused_logits(tmp_path, arch, fmt):
    fused, separate = _tiny_quantized(tmp_path, fmt, arch), _tiny_quantized(tmp_path, fmt, arch)
    used = use_packed_kernels(fused, fuse=True)
    use_packed_kernels(separate, fuse=False)
    assert sum("fused" in label for label in used.values()) == 5 * 2  # q/k/v + gate/up in each of 2 blocks
    attn = fused.model.layers[0].self_attn
    assert isinstance(attn.q_proj, FusedSlice) and attn.q_proj.kernel is attn.v_proj.kernel
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a, b = fused(ids).logits, separate(ids).logits
        # decode with a cache: one new token per call, siblings called with a new input each step
        out = fused(ids[:, :8], use_cache=True)
        cached = fused(ids[:, 8:9], **{_CACHE_ARG: _cache_of(out)}, use_cache=True).logits
    assert torch.allclose(a, b, atol=1e-4 * b.abs().max())
    assert torch.allclose(cached[:, -1], b[:, 8], atol=2e-2 * b.abs().max())  # bf16 kernels, other shapes


def test_fused_slice_reruns_on_a_new_input():
    gen = torch.Generator().manual_seed(7)
    parts = [quantize(torch.randn(32, 64, generator=gen), parse_spec("int4-g64")) for _ in range(2)]
    kernel = PackedInt4Linear(parts, None, None)
    shared = _SharedCall(2)
    first, second = FusedSlice(kernel, 0, 0, 32, shared), FusedSlice(kernel, 1, 32, 64, shared)
    x1, x2 = torch.randn(1, 64, generator=gen), torch.randn(1, 64, generator=gen)
    first(x1)
    # the sibling sees another input than the cached one: it must not return x1's slice
    assert torch.equal(second(x2), kernel(x2)[..., 32:])
    assert torch.equal(first(x1), kernel(x1)[..., :32])


def test_tinygemm_nibbles_put_the_even_column_high():
    codes = torch.tensor([[1, 2, 15, 0], [7, 8, 9, 10]])
    packed = tinygemm_nibbles(codes)
    assert packed.dtype == torch.uint8 and packed.tolist() == [[0x12, 0xF0], [0x78, 0x9A]]


def test_packed_layout_refuses_to_move_devices():
    kernel = PackedInt4Linear(quantize(torch.randn(16, 64), parse_spec("int4-g64")), None, None)
    with pytest.raises(ValueError, match="packed for cpu"):
        kernel.to("meta")


def test_cuda_kernels_are_not_claimed_without_cuda():
    qt = quantize(torch.randn(16, 64), parse_spec("int4-g64"))
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert not int4_kernel_supports(qt, "cuda")
    assert CliRunner().invoke(cli, ["bench", "x", "--device", "cuda"]).exit_code == 2


def _w8a8_layer(rows: int, cols: int, seed: int, bias: bool = True) -> QuantizedLinear:
    gen = torch.Generator().manual_seed(seed)
    qt = quantize(torch.randn(rows, cols, generator=gen) * 0.05, parse_spec("int8-channel"))
    return QuantizedLinear(qt, torch.randn(rows, generator=gen) if bias else None, act_spec=PER_TOKEN_INT8)


@pytest.mark.parametrize("shape", [(80, 200), (576, 576)])
def test_w8a8_kernel_matches_fake_quant_reference(shape):
    layer = _w8a8_layer(*shape, seed=8)
    x = torch.randn(2, 3, shape[1], generator=torch.Generator().manual_seed(9))
    expected = layer(x)  # fake-quant activations and weights, fp32 matmul
    kernel = packed_module(layer)
    assert isinstance(kernel, PackedW8A8Linear)
    # the same INT8 codes but at rounding ties (fp32 vs fp16-rounded activation scales): a wrong
    # scale, code or layout gives errors of the order of the outputs
    relative = (kernel(x) - expected).norm() / expected.norm()
    assert relative < 1e-2


def test_w8a8_fused_stack_and_refusals():
    layers = [_w8a8_layer(64, 96, seed=s, bias=s == 10) for s in (10, 11)]
    x = torch.randn(4, 96, generator=torch.Generator().manual_seed(12))
    stacked = packed_module(layers)
    separate = torch.cat([packed_module(m)(x) for m in layers], -1)
    assert torch.allclose(stacked(x), separate, rtol=1e-5, atol=1e-5 * separate.abs().max())
    mixed = [_w8a8_layer(64, 96, seed=13), _w8a8_layer(64, 96, seed=14)]
    mixed[1].outlier_threshold = 6.0
    assert packed_module(mixed) is None  # one fused call cannot treat its members' inputs differently


def test_llm_int8_kernel_keeps_outlier_columns_in_floating_point():
    layer = _w8a8_layer(48, 128, seed=15)
    layer.outlier_threshold = 6.0
    gen = torch.Generator().manual_seed(16)
    x = torch.randn(5, 128, generator=gen)
    x[:, [3, 70]] *= 40.0  # two outlier channels, as LLM.int8() sees in large models
    expected = layer(x)
    kernel = packed_module(layer)
    assert isinstance(kernel, PackedW8A8Linear)
    relative = (kernel(x) - expected).norm() / expected.norm()
    assert relative < 1e-2
    # without the decomposition, the outliers' scale crushes every other column to a few codes
    kernel.outlier_threshold = None
    assert (kernel(x) - expected).norm() / expected.norm() > 5 * relative


def test_unpacked_fallback_caches_one_copy_in_the_input_dtype():
    layer = QuantizedLinear(quantize(torch.randn(32, 64), parse_spec("nf4-g64")))
    x = torch.randn(2, 64)
    fp32 = layer(x)
    low = layer(x.bfloat16())
    assert layer._cast.dtype == torch.bfloat16 and layer._dense is None
    assert torch.allclose(low.float(), fp32, atol=0.05 * fp32.abs().max())
    assert torch.equal(layer(x), fp32)  # fp32 again: the exact dequantized weights, not the bf16 copy


def test_kernel_scales_survive_a_model_cast_to_bf16():
    # .to(bfloat16) on the model must not round the kernels' fp32 (W8A8) or bf16 (INT4) scales
    w8a8 = packed_module(_w8a8_layer(64, 96, seed=17))
    int4 = PackedInt4Linear(quantize(torch.randn(32, 64), parse_spec("int4-g64")), None, None)
    before = w8a8.scales.clone(), int4.scales_and_zeros.clone()
    w8a8.to(torch.bfloat16)
    int4.to(torch.float16)
    assert w8a8.scales.dtype == torch.float32 and torch.equal(w8a8.scales, before[0])
    assert int4.scales_and_zeros.dtype == torch.bfloat16 and torch.equal(int4.scales_and_zeros, before[1])
