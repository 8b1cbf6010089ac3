"""Calibration statistics: the blocked X^T X against a float64 product, and rescaled statistics."""

from __future__ import annotations

import torch

from quantwise.methods import LinearStats, rescale_stats


def _batches(width: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 50, width, generator=gen) * torch.linspace(0.1, 4.0, width) for _ in range(3)]


def test_gram_matches_a_float64_product_across_block_edges_and_later_batches():
    width = 600  # 256 + 256 + 88: a ragged last block
    batches = _batches(width)
    stats = LinearStats(width, need_hessian=True)
    stats.observe(batches[0])
    first = stats.xtx.clone()  # read (mirrored) between batches, then accumulation goes on
    for x in batches[1:]:
        stats.observe(x)
    for seen, upto in ((first, 1), (stats.xtx, 3)):
        x = torch.cat([b.reshape(-1, width) for b in batches[:upto]]).double()
        exact = x.T @ x
        assert torch.equal(seen, seen.T)
        assert (seen.double() - exact).abs().max() <= 1e-5 * exact.abs().max()
    assert stats.tokens == 300
    assert torch.allclose(stats.hessian(), 2 * stats.xtx / 300)


def test_rescaled_statistics_are_those_of_the_scaled_inputs():
    width = 40
    batches = _batches(width, seed=1)
    scales = torch.linspace(0.5, 2.0, width)
    stats, direct = LinearStats(width, need_hessian=True), LinearStats(width, need_hessian=True)
    for x in batches:
        stats.observe(x)
        direct.observe(x / scales)
    rescaled = rescale_stats(stats, scales)
    assert rescaled.tokens == direct.tokens == 300 and rescaled.need_magnitudes
    torch.testing.assert_close(rescaled.hessian(), direct.hessian(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(rescaled.abs_max, direct.abs_max, rtol=1e-6, atol=0)


def test_weighted_tokens_scale_only_the_gram_matrix():
    from quantwise.methods.stats import LinearStats

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 24, generator=gen)
    weights = torch.rand(120, generator=gen) * 5
    stats = LinearStats(24, need_hessian=True, need_magnitudes=True)
    stats.observe(x, weights)
    flat = x.reshape(-1, 24).double()
    expected = flat.T @ (flat * weights.double().unsqueeze(1))
    assert torch.allclose(stats.xtx.double(), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(stats.abs_max, flat.abs().amax(0).float())   # magnitudes and sample unweighted
    assert torch.equal(stats.sample, x.reshape(-1, 24))
    assert stats.tokens == 120


def test_norm_token_weights_are_exact_for_few_outputs_and_unbiased_sketched():
    from quantwise.methods.stats import norm_token_weights, output_sketch

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 48, generator=gen) * torch.rand(4096, 1, generator=gen) * 3
    narrow = torch.randn(32, 48, generator=gen)
    exact = ((x @ narrow.T).pow(2).mean(1) + 1e-6).rsqrt()
    assert torch.allclose(norm_token_weights(x, output_sketch(narrow, rows=64), 1e-6), exact, rtol=1e-4)
    wide = torch.randn(640, 48, generator=gen)
    mean_square = (x @ wide.T).pow(2).mean(1)
    estimate = norm_token_weights(x, output_sketch(wide, rows=64), 0.0).pow(-2)
    ratio = estimate / mean_square
    assert abs(float(ratio.mean()) - 1) < 0.05              # unbiased
    assert 0.1 < float(ratio.std()) < 0.25                   # sqrt(2 / 64) = 0.18 per token
    # seeded: the same weights on every run
    assert torch.equal(output_sketch(wide), output_sketch(wide))
