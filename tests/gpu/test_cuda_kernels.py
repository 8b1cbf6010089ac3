"""CUDA kernel paths (torch's tinygemm INT4 and INT8 weight-only matmuls): run where a GPU is
present, skipped otherwise. Each compares against the CPU dequantized reference."""

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from quantwise.cli.main import cli
from quantwise.formats import parse_spec, quantize
from quantwise.runtime import QuantizedLinear
from quantwise.runtime.kernels import PackedInt4Linear, PackedInt8Linear, int4_kernel_supports, int8_kernel_supports

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_model  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("fmt", ["int4-g128", "int4-g64-asym", "int4-g32"])
@pytest.mark.parametrize("cols", [512, 576])
def test_cuda_int4_kernel_matches_dequantized_reference(fmt, cols):
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(100, cols, generator=gen) * 0.05, torch.randn(100, generator=gen)
    qt = quantize(weight, parse_spec(fmt))
    assert int4_kernel_supports(qt, "cuda")
    x = torch.randn(3, 5, cols, generator=gen)
    expected = QuantizedLinear(qt, bias)(x)
    got = PackedInt4Linear(qt, bias, None, device="cuda")(x.cuda()).cpu()
    assert torch.allclose(got, expected, atol=2e-2 * expected.abs().max())


def test_cuda_int8_kernel_matches_dequantized_reference():
    gen = torch.Generator().manual_seed(2)
    qt = quantize(torch.randn(80, 200, generator=gen), parse_spec("int8-channel"))
    if not int8_kernel_supports(qt, "cuda"):
        pytest.skip("this torch build has no CUDA _weight_int8pack_mm")
    x = torch.randn(7, 200, generator=gen)
    expected = QuantizedLinear(qt)(x)
    got = PackedInt8Linear(qt, None, None, device="cuda")(x.cuda()).cpu()
    assert torch.allclose(got, expected, atol=2e-2 * expected.abs().max())


def test_bench_on_cuda(tmp_path):
    model_dir = make_tiny_model(tmp_path / "m")
    result = CliRunner().invoke(cli, ["bench", str(model_dir), "--device", "cuda", "--formats", "bf16,int4",
                                      "--batch", "1", "--steps", "2", "--prompt", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("{"):])["rows"]
    assert rows[1]["kernel"].startswith("PackedInt4Linear") and rows[1]["decode_tokens_per_s"] > 0
