import pytest
import torch

from quantwise.formats import parse_spec
from quantwise.formats.integer import unpacked_codes
from quantwise.methods import GPTQOptions
from quantwise.methods.gptq_math import gptq_quantize
from quantwise.methods.scale_search import ScaleSearch, fake_quantize, search_scales

from .test_gptq import hessian, output_error


def test_full_grid_scale_and_the_lowest_code():
    spec = parse_spec("int4-g8")
    row = torch.tensor([[[-1.5, -0.75, 0.0, 0.2, 0.4, 0.75, 1.0, 1.4]]])
    scale, _ = search_scales(row, spec, ScaleSearch(full_grid=True, steps=0))
    assert float(scale) == pytest.approx(1.5 / 7.5, rel=1e-3)          # absmax / 7.5, rounded up to fp16
    deq = fake_quantize(row, scale, None, spec)
    assert (deq - row).abs().max() <= float(scale) / 2                 # +absmax at 7.5 rounds into 7: still s/2
    restricted, _ = search_scales(row, spec, ScaleSearch(full_grid=False, steps=0))
    assert float(restricted) == pytest.approx(1.5 / 7, rel=1e-3)


@pytest.mark.parametrize("fmt", ["int4-g32", "int3-g64-asym", "int4-channel"])
def test_clip_search_matches_brute_force(fmt):
    """Each group keeps the candidate with the least importance-weighted squared error."""
    spec = parse_spec(fmt)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, generator=gen) * torch.rand(16, 1, generator=gen)
    size = spec.group_size or 64
    grouped = w.reshape(16, -1, size)
    importance = torch.rand(grouped.shape[1], size, generator=gen)
    search = ScaleSearch(steps=10, max_shrink=0.3)
    scale, zero = search_scales(grouped, spec, search, importance)
    chosen = ((fake_quantize(grouped, scale, zero, spec) - grouped) ** 2 * importance).sum(-1)
    for i in range(search.steps + 1):  # every candidate, one at a time
        p = 1 - search.max_shrink * i / search.steps
        s, z = search_scales(grouped * p, spec, ScaleSearch(steps=0))  # the shrunk range's own scale
        err = ((fake_quantize(grouped, s, z, spec) - grouped) ** 2 * importance).sum(-1)
        assert torch.all(chosen <= err * (1 + 1e-6) + 1e-12)


def test_full_grid_and_clip_search_lower_gptq_output_error(correlated_inputs, weight):
    x, spec = correlated_inputs, parse_spec("int4-g64")
    h = hessian(x).hessian()
    errors = {}
    for name, options in {"absmax/7": GPTQOptions(full_grid=False, clip_steps=0),
                          "absmax/7.5": GPTQOptions(clip_steps=0), "searched": GPTQOptions(clip_steps=20)}.items():
        result = gptq_quantize(weight, h, spec, options)
        errors[name] = output_error(x, weight, result.weight().dequantize())
        if name != "absmax/7":
            assert (unpacked_codes(result.weight()) == -8).any()
    assert errors["absmax/7.5"] < 0.95 * errors["absmax/7"]
    assert errors["searched"] < errors["absmax/7.5"]
