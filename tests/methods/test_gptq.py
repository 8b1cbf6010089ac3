import pytest
import torch
from torch import nn

from quantwise.formats import parse_spec, quantize
from quantwise.formats.integer import from_codes, unpacked_codes, zero_points
from quantwise.formats.layout import expand_to_elements
from quantwise.methods import GPTQ, RTN, GPTQOptions, LinearStats
from quantwise.methods.gptq_math import gptq_quantize, refit_group_scales


def output_error(x, reference, approx):
    return float(((x @ (approx - reference).T) ** 2).mean())


def hessian(x, reference=None, outputs=False):
    """X^T X of x in chunks, with the float model's view `reference` of the same rows beside it."""
    stats = LinearStats(x.shape[1], need_hessian=True)
    for i, chunk in enumerate(x.split(512)):
        stats.observe(chunk, None, None if reference is None else reference.split(512)[i], outputs)
    return stats


@pytest.mark.parametrize("fmt", ["int4-g128", "int4-g64-asym", "int3-g128", "int3-channel-asym"])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn(correlated_inputs, weight, fmt, act_order):
    x = correlated_inputs
    linear = nn.Linear(256, 96, bias=False)
    linear.weight.data = weight.clone()
    stats = hessian(x)
    rtn = RTN(fmt).quantize_linear(linear, stats).dense_weight()
    gptq = GPTQ(fmt, GPTQOptions(act_order=act_order, static_groups=act_order)).quantize_linear(linear, stats)
    gptq = gptq.dense_weight()
    assert output_error(x, weight, gptq) < 0.75 * output_error(x, weight, rtn)


def test_hessian_accumulation_matches_direct(correlated_inputs):
    stats = hessian(correlated_inputs)
    direct = 2 * correlated_inputs.double().T @ correlated_inputs.double() / correlated_inputs.shape[0]
    assert torch.allclose(stats.hessian().double(), direct, rtol=1e-4, atol=1e-6)


def _assert_on_grid(qt):
    """Every stored value is (code - zero) x its group's scale, codes in range."""
    rows, cols = qt.rows_cols
    codes = unpacked_codes(qt).float()
    zeros = zero_points(qt)
    if zeros is not None:
        codes = codes - expand_to_elements(zeros, qt.spec, rows, cols)
    rebuilt = codes * expand_to_elements(qt.scales.float(), qt.spec, rows, cols)
    assert torch.equal(rebuilt, qt.dequantize())


@pytest.mark.parametrize("fmt", ["int4-g32", "int4-g32-asym", "int3-g48"])  # 48 does not divide 256: short tail
def test_act_order_group_bookkeeping(correlated_inputs, weight, fmt):
    x = correlated_inputs * torch.linspace(0.1, 3, 256)  # distinct Hessian diagonal -> real permutation
    result = gptq_quantize(weight, hessian(x).hessian(), parse_spec(fmt), GPTQOptions(static_groups=False))
    assert result.perm is not None and not torch.equal(result.perm, torch.arange(256))
    assert torch.equal(result.perm, torch.argsort(torch.diag(hessian(x).hessian()), descending=True, stable=True))
    _assert_on_grid(result.weight())
    # a group holds the permuted columns [g*size, (g+1)*size): its scale covers exactly their values
    size = parse_spec(fmt).group_size
    deq = result.weight().dequantize()
    for g in range(0, 256, size):
        span = deq[:, g:g + size].abs().amax(1)
        spec = parse_spec(fmt)
        levels = 2 ** (spec.bits - 1) if spec.symmetric else 2**spec.bits - 1
        assert torch.all(span <= result.weight().scales[:, g // size].float() * levels + 1e-6)
    # the module undoes the permutation: forward equals x @ W_natural^T
    from quantwise.runtime import QuantizedLinear
    module = QuantizedLinear(result.weight(), perm=result.perm)
    natural = deq[:, torch.argsort(result.perm)]
    assert torch.allclose(module(x[:8]), x[:8] @ natural.T, atol=1e-4)


def test_static_groups_use_original_order_scales(correlated_inputs, weight):
    x = correlated_inputs * torch.linspace(0.1, 3, 256)
    spec = parse_spec("int4-g64")
    # the formats package's absmax / 7 scales, kept as chosen before the solve
    options = GPTQOptions(full_grid=False, clip_steps=0, refit_scales=False)
    result = gptq_quantize(weight, hessian(x).hessian(), spec, options)
    assert result.perm is None
    assert torch.equal(result.scales, quantize(weight, spec).scales)
    _assert_on_grid(result.weight())


def test_gptq_rejects_bad_input(weight):
    with pytest.raises(ValueError, match="integer formats"):
        gptq_quantize(weight, torch.eye(256), parse_spec("nf4"))
    with pytest.raises(ValueError, match="does not match"):
        gptq_quantize(weight, torch.eye(10), parse_spec("int4"))
    with pytest.raises(ValueError, match="no calibration"):
        LinearStats(256, need_hessian=True).hessian()
    with pytest.raises(ValueError, match="NaN"):
        LinearStats(2).observe(torch.tensor([[1.0, float("nan")]]))


def test_large_hessians_factorise_in_float32_and_fall_back_to_float64():
    """From LARGE_HESSIAN columns the factor is computed in float32; it must agree with float64's,
    and an H that float32 cannot factorise (rank-deficient, tiny damping) still gets float64's."""
    from quantwise.methods.gptq_math import LARGE_HESSIAN, _inverse_factor, inverse_hessian_factor

    n = LARGE_HESSIAN
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4 * n, n, generator=gen) * torch.logspace(0, 2, n)
    h = (2 * x.T @ x / len(x)).double()
    reference = _inverse_factor(h, 0.01, torch.float64)
    factor = inverse_hessian_factor(h, 0.01)
    assert factor.dtype == torch.float32
    assert float((factor - reference.float()).norm() / reference.norm()) < 1e-4
    # rank 8 with almost no damping: float32's Cholesky breaks down, float64's does not
    low = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    singular = low @ low.T
    assert _inverse_factor(singular, 1e-9, torch.float32) is None
    fallback = inverse_hessian_factor(singular, 1e-9)
    assert torch.isfinite(fallback).all()


def test_triangular_inverse_by_halves_matches_lapack_and_defines_the_factor():
    """The recursive L^-1 (odd sizes split unevenly, several levels) equals LAPACK's triangular
    solve, and the factor it gives satisfies U^T U (H + damp) = I."""
    from quantwise.methods.gptq_math import _inverse_factor, _lower_triangular_inverse

    gen = torch.Generator().manual_seed(1)
    n = 777
    x = torch.randn(2 * n, n, generator=gen, dtype=torch.float64)
    h = x.T @ x / len(x)
    lower = torch.linalg.cholesky(h)
    expected = torch.linalg.solve_triangular(lower, torch.eye(n, dtype=torch.float64), upper=False)
    ours = _lower_triangular_inverse(lower, leaf=64)
    assert torch.equal(ours, ours.tril())
    assert float((ours - expected).abs().max() / expected.abs().max()) < 1e-12
    upper = _inverse_factor(h, 0.01, torch.float64).double()
    damped = h + 0.01 * torch.diag(h).mean() * torch.eye(n, dtype=torch.float64)
    assert float((upper.T @ upper @ damped - torch.eye(n, dtype=torch.float64)).abs().max()) < 1e-5


def _textbook_gptq(weight, hessian, scales, zeros, spec, damp=0.01):
    """GPTQ as the paper's Algorithm 1 states it, in float64 on (rows, cols), one column at a time
    with the whole remaining matrix updated after each (no lazy batches), the factor from
    cholesky_inverse then an upper Cholesky; fixed per-group scales (and zeros). Returns codes."""
    w = weight.double().clone()
    h = hessian.double().clone()
    h.diagonal().add_(damp * h.diagonal().mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    rows, cols = w.shape
    codes = torch.empty(rows, cols, dtype=torch.uint8)
    size = spec.group_size
    for j in range(cols):
        s = scales[:, j // size].double()
        if spec.symmetric:
            q = torch.clamp(torch.round(w[:, j] / s), -(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1)
            codes[:, j] = (q + 2 ** (spec.bits - 1)).to(torch.uint8)
            value = q * s
        else:
            z = zeros[:, j // size].double()
            q = torch.clamp(torch.round(w[:, j] / s) + z, 0, 2**spec.bits - 1)
            codes[:, j] = q.to(torch.uint8)
            value = (q - z) * s
        err = (w[:, j] - value) / u[j, j]
        w[:, j:] -= torch.outer(err, u[j, j:])
    return codes


@pytest.mark.parametrize("fmt", ["int4-g64", "int3-g32-asym"])
def test_gptq_agrees_with_the_textbook_algorithm(correlated_inputs, weight, fmt):
    """The lazy-batch, transposed, scaled-factor column loop against a float64 textbook GPTQ given
    the same group scales: codes equal except where float32 and float64 round a value that sits on
    a rounding boundary differently, and the same layer output error."""
    spec = parse_spec(fmt)
    h = hessian(correlated_inputs).hessian()
    result = gptq_quantize(weight, h, spec, GPTQOptions(act_order=False, block_size=32, refit_scales=False))
    expected = _textbook_gptq(weight, h, result.scales.float(), result.zeros, spec)
    assert float((result.codes != expected).float().mean()) < 0.002
    ours = output_error(correlated_inputs, weight, result.weight().dequantize())
    dequantized = from_codes(expected, result.scales, result.zeros, spec, tuple(expected.shape)).dequantize()
    textbook = output_error(correlated_inputs, weight, dequantized)
    assert abs(ours - textbook) / textbook < 0.005


def _outlier_inputs(gen: torch.Generator, rows: int = 1024) -> torch.Tensor:
    """Correlated channels of uneven scale and a few 20x outlier channels, as LLM activations have."""
    x = torch.randn(rows, 256, generator=gen) @ (torch.randn(256, 256, generator=gen) * 0.3 + torch.eye(256))
    x = x * torch.rand(256, generator=gen) * 3
    x[:, :5] *= 20
    return x


def _refit_case(fmt="int4-g48"):
    """A GPTQ solve's natural-order codes, centred, with its scales (48 does not divide 256: the
    last group is short)."""
    gen = torch.Generator().manual_seed(2)
    x = _outlier_inputs(gen)
    w = torch.randn(40, 256, generator=gen) * 0.05
    spec = parse_spec(fmt)
    result = gptq_quantize(w, hessian(x).hessian(), spec, GPTQOptions(refit_scales=False))  # min-max scales
    centred = result.codes.float() - 2 ** (spec.bits - 1)
    return x, w, centred, result.scales, spec.group_size


def test_refit_scales_are_the_least_squares_solution():
    """Against an independent solve: per row, least squares of X w on the columns X c_g (the
    output of each group's codes at unit scale), by LAPACK's lstsq in float64."""
    x, w, centred, scales, size = _refit_case()
    h = 2 * x.T @ x / len(x)
    fitted = refit_group_scales(w, h, centred, scales.float(), size)
    groups = scales.shape[1]
    for row in range(w.shape[0]):
        design = torch.stack([x.double()[:, g * size:(g + 1) * size] @ centred[row, g * size:(g + 1) * size].double()
                              for g in range(groups)], 1)
        expected = torch.linalg.lstsq(design, (x.double() @ w[row].double()).unsqueeze(1)).solution.squeeze(1)
        assert torch.allclose(fitted[row].double(), expected, rtol=2e-3), row


def test_refit_scales_lower_the_output_error_and_never_raise_it():
    x, w, centred, scales, size = _refit_case()
    h = 2 * x.T @ x / len(x)

    def row_errors(s):
        dense = (centred.reshape(40, -1) * s.float().repeat_interleave(size, 1)[:, :256])
        return ((x @ (w - dense).T) ** 2).sum(0)

    fitted = refit_group_scales(w, h, centred, scales, size)
    assert fitted.dtype == scales.dtype
    assert (row_errors(fitted) <= row_errors(scales) * (1 + 1e-6)).all()
    assert row_errors(fitted).sum() < 0.9 * row_errors(scales).sum()


def test_refit_keeps_the_scale_of_a_group_without_codes():
    x, w, centred, scales, size = _refit_case()
    centred[3, :size] = 0  # group 0 of row 3 rounds to zero everywhere: its scale is undetermined
    fitted = refit_group_scales(w, 2 * x.T @ x / len(x), centred, scales, size)
    assert fitted[3, 0] == scales[3, 0]


@pytest.mark.parametrize("fmt", ["int4-g64", "int4-g64-asym", "int3-g48", "int4-channel"])
@pytest.mark.parametrize("static_groups", [True, False])
def test_gptq_with_refitted_scales_has_lower_output_error(weight, fmt, static_groups):
    x = _outlier_inputs(torch.Generator().manual_seed(3), 2048)
    h = hessian(x).hessian()
    spec = parse_spec(fmt)
    plain, refit = (gptq_quantize(weight, h, spec, GPTQOptions(static_groups=static_groups, refit_scales=r))
                    for r in (False, True))
    assert torch.equal(plain.codes, refit.codes) and (plain.perm is None) == (refit.perm is None)
    _assert_on_grid(refit.weight())

    def dense(result):
        d = result.weight().dequantize().float()
        return d if result.perm is None else d[:, torch.argsort(result.perm)]

    assert output_error(x, weight, dense(refit)) < 0.97 * output_error(x, weight, dense(plain))


@pytest.mark.parametrize("fmt", ["int4-g64", "int3-g48", "int4-g64-asym"])
def test_a_second_refit_round_never_raises_a_row_error(weight, fmt):
    """Round two solves the codes again on the refitted scales and refits those; a row keeps round
    one's codes and scales unless round two lowers its output error, computed here directly from the
    dequantized weights."""
    x = _outlier_inputs(torch.Generator().manual_seed(3), 2048)
    h = hessian(x).hessian()
    spec = parse_spec(fmt)
    one, two = (gptq_quantize(weight, h, spec, GPTQOptions(refit_rounds=r)) for r in (1, 2))
    _assert_on_grid(two.weight())

    def row_errors(result):
        return ((x.double() @ (weight.double() - result.weight().dequantize().double()).T) ** 2).sum(0)

    first, second = row_errors(one), row_errors(two)
    assert (second <= first * (1 + 1e-5)).all()
    assert second.sum() < 0.995 * first.sum()
    assert (second < first * (1 - 1e-4)).sum() >= weight.shape[0] // 4   # not only a few rows moved


def test_refit_rounds_are_validated():
    with pytest.raises(ValueError, match="refit rounds"):
        GPTQOptions(refit_rounds=0)


def test_asymmetric_target_is_the_least_squares_fit_to_the_float_outputs(correlated_inputs, weight):
    """W* = argmin ||X W'^T - X_ref W^T|| (plus GPTQ's dampening towards W): numpy's least squares
    on the stacked, dampened system gives the same weights, from the float model's inputs or from
    its outputs, in either column order; with X_ref = X it is W itself."""
    import numpy as np

    from quantwise.methods.gptq_math import asymmetric_target

    x = correlated_inputs
    x_ref = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))  # the float model's
    by_input, by_output = hessian(x, x_ref), hessian(x, x_ref @ weight.T, outputs=True)
    damp = 0.01
    shift = damp * float(torch.diag(x.double().T @ x.double()).mean())
    # min ||X W'^T - X_ref W^T||^2 + shift ||W' - W||^2 as one least-squares problem
    a = np.vstack([x.double().numpy(), np.sqrt(shift) * np.eye(x.shape[1])])
    b = np.vstack([(x_ref.double() @ weight.double().T).numpy(), np.sqrt(shift) * weight.double().T.numpy()])
    expected = torch.from_numpy(np.linalg.lstsq(a, b, rcond=None)[0].T).float()
    for stats in (by_input, by_output):
        for act_order in (False, True):
            ours = asymmetric_target(weight, stats.target_product(weight), stats.hessian(), damp, act_order)
            assert float((ours - expected).norm() / expected.norm()) < 1e-4, (stats.reference_outputs, act_order)
    assert float((expected - weight).norm() / weight.norm()) > 0.01      # the target moved (3% here)
    same = hessian(x, x)
    assert float((asymmetric_target(weight, same.target_product(weight), same.hessian(), damp) - weight
                  ).abs().max()) < 1e-5


def test_gptq_quantizes_the_asymmetric_target(correlated_inputs, weight):
    """With a target product, GPTQ gives the codes it gives for the target weights themselves."""
    from quantwise.methods.gptq_math import asymmetric_target

    x = correlated_inputs
    stats = hessian(x, x + 0.1)
    spec, options = parse_spec("int4-g64"), GPTQOptions()
    product = stats.target_product(weight)
    direct = gptq_quantize(weight, stats.hessian(), spec, options, product)
    target = asymmetric_target(weight, product, stats.hessian(), options.damp)
    via_target = gptq_quantize(target, stats.hessian(), spec, options)
    assert (direct.codes == via_target.codes).float().mean() > 0.999   # float order may flip a rare tie
    assert torch.allclose(direct.scales, via_target.scales, rtol=1e-4)
