"""GPTQ (Frantar et al. 2022, arXiv:2210.17323): quantize columns one at a time and push each
column's error onto the not-yet-quantized columns through the inverse Hessian's Cholesky factor.

Lazy batch updates (block of columns; the rest of the matrix is updated once per block by one
GEMM), dampening, act-order (columns by decreasing Hessian diagonal) and group scales chosen by
`scale_search` (full symmetric grid, Hessian-weighted clip search). With act-order and dynamic
groups, groups are contiguous in the permuted order: the matrix is stored permuted together with
`perm`, and inputs are permuted at run time (x[:, perm] @ Wp^T). Static groups compute every
group's scale from the original weights first, so storage keeps the natural column order (what
engines load). Rows are independent given H, so linears that share an input (q/k/v, gate/up) are
solved as one stacked matrix: one factorisation, one column loop.

Example:
    result = gptq_quantize(w, 2 * x.T @ x / len(x), parse_spec("int4-g64"), GPTQOptions())
    qt = result.weight()          # QuantizedTensor of all rows
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..formats import FormatKind, Granularity, QuantSpec
from ..formats.container import QuantizedTensor
from ..formats.integer import from_codes
from .scale_search import ScaleSearch, search_scales


@dataclass(frozen=True)
class GPTQOptions:
    """block_size: columns per lazy batch. damp: dampening as a fraction of mean(diag H).
    act_order: columns by decreasing Hessian diagonal. static_groups: group scales from the
    original weights (natural storage order). true_sequential: each linear's Hessian from inputs
    that carry the quantization of the linears before it in the block; sequential_stages: "groups"
    (each input group after the ones before it) or "sublayers" (attention's linears together, then the
    MLP's, `block_quant.sequential_stages`). full_grid / clip_steps /
    max_shrink: the scale search (see scale_search.py). refit_scales: after the solve, each row's
    group scales are refitted to its codes by least squares under H (`refit_group_scales`).
    refit_rounds: with scales fixed before the solve (static groups, per-channel), the column loop
    is run again from the original weights on the refitted scales and those refitted again, this
    many times in all (1: one solve, one refit). norm_weighting: a linear whose output enters an
    RMSNorm (Gemma's o_proj and down_proj) weighs each calibration token in H by 1 / its output's
    root mean square, as the norm scales that token's error (`stats.norm_token_weights`)."""

    block_size: int = 128
    damp: float = 0.01
    act_order: bool = True
    static_groups: bool = True
    true_sequential: bool = True
    sequential_stages: str = "groups"
    full_grid: bool = True
    # The clip search is off by default: it lowered SmolLM2's perplexity (22.64 vs 23.17, int4-g64) but
    # raised Gemma-3-270M's 6% (39.08 vs 36.81), where min-max scales beat llm-compressor's too.
    clip_steps: int = 0
    max_shrink: float = 0.2
    refit_scales: bool = True
    refit_rounds: int = 1
    # Off by default: on Gemma-3 it lowered g64 perplexity on three calibration seeds (0.3-0.7%) and
    # raised g128's on three (0.2-1%), no gain across group sizes
    # (benchmarks/results/2026-11-29-gptq-norm-weighting-gemma-3-270m.txt).
    norm_weighting: bool = False
    # GPTAQ's asymmetric target (`asymmetric_target`): with true-sequential order, each linear after the
    # first group fits the float block's outputs on the quantized block's inputs. On by default: Gemma-3
    # int4-g64 perplexity 3.2% lower over five calibration seeds than without (g128 4.8%), for
    # 54% more wall time side by side (README, "GPTQ's asymmetric target").
    asymmetric: bool = True

    def __post_init__(self) -> None:
        if self.refit_rounds < 1:
            raise ValueError(f"GPTQ refit rounds must be >= 1, got {self.refit_rounds}")
        if self.sequential_stages not in ("groups", "sublayers"):
            raise ValueError(f"GPTQ sequential stages must be groups or sublayers, got {self.sequential_stages!r}")
        if self.block_size < 1:
            raise ValueError("GPTQ block size must be >= 1")
        if not 0 < self.damp < 1:
            raise ValueError(f"GPTQ dampening must be in (0, 1), got {self.damp}")
        ScaleSearch(self.full_grid, self.clip_steps, self.max_shrink)  # validates the search fields

    @property
    def scale_search(self) -> ScaleSearch:
        return ScaleSearch(self.full_grid, self.clip_steps, self.max_shrink)


@dataclass(frozen=True)
class GPTQResult:
    codes: torch.Tensor           # (rows, cols) uint8 unsigned codes, in stored column order
    scales: torch.Tensor          # (rows, groups) in the spec's scale dtype; (1, 1) per-tensor
    zeros: torch.Tensor | None    # (rows, groups) float zero points, None when symmetric
    spec: QuantSpec
    perm: torch.Tensor | None     # stored column j holds original column perm[j]; None = natural order

    def weight(self, rows: slice = slice(None)) -> QuantizedTensor:
        """The packed weight of a range of rows (one linear of a stacked solve)."""
        codes = self.codes[rows]
        per_row = self.scales.shape[0] > 1 or self.codes.shape[0] == 1
        scales = self.scales[rows] if per_row else self.scales
        zeros = None if self.zeros is None else (self.zeros[rows] if per_row else self.zeros)
        return from_codes(codes, scales, zeros, self.spec, tuple(codes.shape))


# From this many columns the factorisation is a large share of the solve (one thread,
# `benchmarks/gptq_parts.py`: 576 columns 0.010 s in float64, 0.005 s in float32; 1536 columns 0.161
# vs 0.073 s, factors within 1e-7; 8B shapes' 4096 and 14336 cost as much as the column loop):
# float32, as GPTQ's reference; below, float64 is cheap and safe.
LARGE_HESSIAN = 512


def asymmetric_target(weight: torch.Tensor, product: torch.Tensor, hessian: torch.Tensor, damp: float,
                      act_order: bool = True) -> torch.Tensor:
    """The weights W* whose outputs on the quantized block's inputs X come closest to the float
    block's outputs W X_ref (GPTAQ's asymmetric calibration, Li et al. 2025): with `product` = W
    X_ref^T X and `hessian` = X^T X on one scale, W* = (product + l W) (H + l I)^-1, regularised
    towards W by GPTQ's own dampening l = damp * mean(diag H). GPTQ on W* under H then minimises
    ||W_q X - W X_ref||: the least-squares residual is orthogonal to every W' X. W* = W where
    X_ref = X. The GPTQ solve computes it from its own factor of H (`_target_weights`)."""
    h = hessian.double()
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if act_order else None
    ordered = h if perm is None else h.index_select(0, perm).index_select(1, perm)
    upper = inverse_hessian_factor(ordered, damp)
    return _target_weights(weight.float(), product, upper, perm, damp * float(torch.diag(h).mean()))


def _target_weights(weight: torch.Tensor, product: torch.Tensor, upper: torch.Tensor, perm: torch.Tensor | None,
                    shift: float) -> torch.Tensor:
    """(product + shift W) (H + shift I)^-1 from U (U^T U = the damped inverse in solve order,
    `perm`): two GEMMs instead of another factorisation."""
    rhs = product.float() + shift * weight
    if perm is not None:
        rhs = rhs.index_select(1, perm)
    solved = (rhs @ upper.T) @ upper
    if perm is None:
        return solved
    target = torch.empty_like(solved)
    target[:, perm] = solved
    return target


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, returned in float32. Factorised in
    float64 below LARGE_HESSIAN columns; above, in float32, retried in float64 when float32 fails
    (an ill-conditioned H)."""
    with single_thread():  # two-thread LAPACK stalls on a busy host (8B block 0: 10+ min at load 7.5)
        factor = _inverse_factor(hessian, damp, torch.float32) if hessian.shape[0] >= LARGE_HESSIAN else None
        if factor is None:
            factor = _inverse_factor(hessian, damp, torch.float64)
    if factor is None:
        raise ValueError("the damped Hessian is not positive definite even in float64; raise the dampening")
    return factor


def _inverse_factor(hessian: torch.Tensor, damp: float, dtype: torch.dtype) -> torch.Tensor | None:
    """U upper with U^T U = H^-1, from one Cholesky factorisation and one triangular solve: with P
    the order reversal and P H P = L L^T, U = P L^-1 P (upper, positive diagonal: the Cholesky
    factor). Cholesky, cholesky_inverse, Cholesky again took 4.4x as long at 4096 columns (measured:
    10.0 s against 2.3 s in float32) and was no more accurate against float64."""
    h = hessian.flip(0, 1).to(dtype)  # flip copies: the in-place damping never touches the caller's H
    h.diagonal().add_(damp * torch.mean(torch.diag(h)))
    lower, info = torch.linalg.cholesky_ex(h)
    del h
    if info.item():
        return None
    upper = _lower_triangular_inverse(lower).flip(0, 1)
    if not torch.isfinite(upper.diagonal()).all():
        return None
    return upper.float()


def _lower_triangular_inverse(lower: torch.Tensor, leaf: int = 256) -> torch.Tensor:
    """L^-1 by halves: [[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]]. Two thirds of the
    flops of a triangular solve against the identity, and those in GEMMs: 2.2x faster at 4096
    columns in float32 (0.74 s against 1.63 s, same error against float64)."""
    n = lower.shape[0]
    if n <= leaf:
        return torch.linalg.solve_triangular(lower, torch.eye(n, dtype=lower.dtype), upper=False)
    half = n // 2
    out = torch.zeros_like(lower)
    top = out[:half, :half]
    top.copy_(_lower_triangular_inverse(lower[:half, :half], leaf))
    bottom = out[half:, half:]
    bottom.copy_(_lower_triangular_inverse(lower[half:, half:], leaf))
    torch.mm(bottom, lower[half:, :half] @ top, out=out[half:, :half])
    out[half:, :half].neg_()
    return out


def _grouped(w: torch.Tensor, size: int) -> torch.Tensor:
    """(rows, cols) -> (rows, groups, size), the last group padded with its row's last value."""
    rows, cols = w.shape
    groups = -(-cols // size)
    pad = groups * size - cols
    if pad:
        w = torch.cat([w, w[:, -1:].expand(rows, pad)], 1)
    return w.reshape(rows, groups, size)


def _importance(diag: torch.Tensor, size: int) -> torch.Tensor:
    """(cols,) Hessian diagonal -> (groups, size) weights; padding columns weigh nothing."""
    groups = -(-diag.numel() // size)
    out = torch.zeros(groups * size)
    out[: diag.numel()] = diag.float()
    return out.reshape(groups, size)


def _fixed_params(w: torch.Tensor, diag: torch.Tensor, spec: QuantSpec, search: ScaleSearch
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (and zeros) chosen before the solve, from the original weights in natural order:
    per-tensor (1, 1), per-channel (rows, 1) or static groups (rows, groups)."""
    if spec.granularity is Granularity.TENSOR:
        return search_scales(w.reshape(1, 1, -1), spec, search, diag.repeat(w.shape[0]).reshape(1, -1))
    size = spec.group_size if spec.granularity is Granularity.GROUP else w.shape[1]
    return search_scales(_grouped(w, size), spec, search, _importance(diag, size))


def _column_params(scales, zeros, group_of_col: torch.Tensor, rows: int):
    """Per-column scale and zero, transposed (cols, rows), from per-group parameters (per-tensor:
    (1, 1), expanded without a copy)."""
    s = scales.float().T.contiguous().index_select(0, group_of_col).expand(-1, rows)
    z = None if zeros is None else zeros.float().T.contiguous().index_select(0, group_of_col).expand(-1, rows)
    return s, z


def _dynamic_params(w_t, block, i, i2, col, size, diag, spec, search):
    """Parameters of the group starting at `col` from its columns as updated so far (transposed
    inputs: block (columns, rows), w_t (cols, rows))."""
    span = torch.cat([block[i:], w_t[i2:col + size]], 0)[:size].T
    importance = diag[col:col + span.shape[1]].float().unsqueeze(0)
    return search_scales(span.unsqueeze(1), spec, search, importance)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec,
                  options: GPTQOptions = GPTQOptions(), target_product: torch.Tensor | None = None) -> GPTQResult:
    """weight (rows, cols); hessian (cols, cols) = 2 X^T X / n of the layer's inputs. The column loop,
    the scale search and the factorisation run on one thread (`single_thread`). `target_product`
    (rows, cols) = 2 W X_ref^T X / n: quantize the asymmetric target (`asymmetric_target`) instead
    of W."""
    return _gptq(weight, hessian, spec, options, target_product)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, options: GPTQOptions,
          target_product: torch.Tensor | None = None) -> GPTQResult:
    if spec.kind is not FormatKind.INT:
        raise ValueError(f"GPTQ quantizes to integer formats, not {spec.kind.value}")
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian shape {tuple(hessian.shape)} does not match {cols} input features")
    search = options.scale_search
    w = weight.detach().float()   # may be the caller's tensor: only read, never written
    # H in the dtype it will be factorised in: at 14336 columns a float64 copy is 1.6 GB, and the
    # act-order gather makes another
    h = hessian.to(torch.float32 if cols >= LARGE_HESSIAN else torch.float64, copy=True)
    dead = torch.diag(h) == 0
    if dead.any():
        h[dead, dead] = 1.0
        w = w.masked_fill(dead, 0.0)
    grouped = spec.granularity is Granularity.GROUP
    size = spec.group_size if grouped else cols
    n_groups = -(-cols // size)
    natural_diag = torch.diag(h).clone()
    perm = torch.argsort(natural_diag, descending=True, stable=True) if options.act_order else None
    # The loop runs on transposed (cols, rows) copies in solve order: a column is then one
    # contiguous vector and the rank-1 update inside a lazy batch one contiguous slab. On (rows,
    # cols) every column op is a strided walk over `rows` cache lines (3072 x 576 g64 solve: 0.56 s
    # against 0.11 s). index_select permutes and transposes in one copy, and is 4x faster than
    # advanced indexing (`benchmarks/gptq_parts.py`, H at 1536 columns: 4.4 vs 18.1 ms).
    if perm is not None:
        h = h.index_select(0, perm).index_select(1, perm)
    diag = torch.diag(h)
    upper = inverse_hessian_factor(h, options.damp)
    del h
    if target_product is not None:
        # what is quantized from here on, the scales and the refit included
        weight = w = _target_weights(w, target_product, upper, perm, options.damp * float(diag.mean()))
    with single_thread():
        fixed = None if grouped and not options.static_groups else _fixed_params(w, natural_diag, spec, search)
    w_t = w.T.index_select(0, perm) if perm is not None else w.T.clone(memory_format=torch.contiguous_format)
    del w
    natural = torch.arange(cols) if perm is None else perm
    if fixed is not None:  # group of each solve-order column
        group_of_col = natural // size if spec.granularity is not Granularity.TENSOR else torch.zeros_like(natural)
        col_s, col_z = _column_params(*fixed, group_of_col, rows)
    else:
        col_s = torch.empty(cols, rows)
        col_z = None if spec.symmetric else torch.empty(cols, rows)
        dyn_s = torch.empty(rows, n_groups, dtype=getattr(torch, spec.scale_dtype_name))
        dyn_z = None if spec.symmetric else torch.empty(rows, n_groups)
    refit = options.refit_scales and spec.granularity in (Granularity.GROUP, Granularity.CHANNEL)
    rounds = options.refit_rounds if refit and fixed is not None else 1
    original = w_t.clone() if rounds > 1 else None   # the loop updates w_t in place
    stored_perm = None if fixed is not None else perm
    refitter = _Refitter(weight, hessian, spec, size, stored_perm) if refit else None
    scales, zeros = fixed if fixed is not None else (dyn_s, dyn_z)   # dyn_*: filled in place by the loop
    natural_order = perm if fixed is not None else None   # static groups: codes go back to natural order
    dynamic = None if fixed is not None else (dyn_s, dyn_z, size, diag, search)
    codes = _solve_codes(w_t, upper, col_s, col_z, spec, options.block_size, natural_order, dynamic)
    if refitter is not None:
        scales, errors = refitter(codes, scales, zeros)
        for _ in range(rounds - 1):   # the refitted scales fixed, the codes solved again from the original weights
            w_t.copy_(original)
            col_s, col_z = _column_params(scales, zeros, group_of_col, rows)
            again = _solve_codes(w_t, upper, col_s, col_z, spec, options.block_size, natural_order, None)
            again_scales, again_errors = refitter(again, scales, zeros)
            better = (again_errors < errors).unsqueeze(1)   # a row keeps its earlier round unless this one is better
            codes, scales = torch.where(better, again, codes), torch.where(better, again_scales, scales)
            errors = torch.minimum(errors, again_errors)
    return GPTQResult(codes, scales, zeros, spec, stored_perm)


def _solve_codes(w_t, upper, col_s, col_z, spec, block_size, perm, dynamic) -> torch.Tensor:
    """The column loop's unsigned codes (rows, cols): natural column order when `perm` is given
    (static groups), else solve order."""
    grid = torch.empty_like(w_t)   # (cols, rows) solve order: integer grid points
    with single_thread():
        _column_loop(w_t, upper, grid, col_s, col_z, spec, block_size, dynamic)
        if spec.symmetric:
            grid.add_(2 ** (spec.bits - 1))   # unsigned codes
        codes_t = grid.to(torch.uint8)
        if perm is not None:
            codes_t = codes_t.index_select(0, torch.argsort(perm))   # back to natural order: groups are static
        return codes_t.T.contiguous()


class _Refitter:
    """Stored scales refitted to a solve's codes (`refit_group_scales`), in stored column order.
    Holds W H, which every round of `GPTQOptions.refit_rounds` shares; calls return the scales and
    each row's error (less its constant w^T H w, so rounds compare)."""

    def __init__(self, weight, hessian, spec: QuantSpec, size: int, perm) -> None:
        w, h = weight.detach().float(), hessian.float()
        if perm is not None:
            w = w.index_select(1, perm)
            h = h.index_select(0, perm).index_select(1, perm)
        self.spec, self.size, self.cols = spec, size, w.shape[1]
        self.h, self.wh = _padded_products(w, h, size)

    def __call__(self, codes, scales, zeros) -> tuple[torch.Tensor, torch.Tensor]:
        centred = codes.float()
        if zeros is None:
            centred -= 2 ** (self.spec.bits - 1)
        else:
            centred -= zeros.float().repeat_interleave(self.size, 1)[:, :self.cols]
        return _refit_rows(self.wh, self.h, centred, scales, self.size)


def _padded_products(w: torch.Tensor, h: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """H and W H padded to whole groups: a short last group's zero columns add nothing to A, b or
    the error. The GEMM runs on both threads (10-300 MFLOP per linear)."""
    pad = -w.shape[1] % size
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
        h = torch.nn.functional.pad(h, (0, pad, 0, pad))
    return h, w @ h


def refit_group_scales(w: torch.Tensor, h: torch.Tensor, centred: torch.Tensor, scales: torch.Tensor,
                       size: int) -> torch.Tensor:
    """Group scales s minimising each row's output error (w - s * c)^T H (w - s * c) for fixed
    integer codes c (centred: q - zero), groups of `size` contiguous columns.

    GPTQ picks the codes with the scales fixed before the solve (min-max of the original weights),
    and its error feedback moves the weights away from what those scales fitted; with the codes
    fixed, the best scales are a least-squares problem per row, groups x groups:
    A[g, k] = c_g^T H_gk c_k, b[g] = c_g^T (H w)_g. A row keeps its old scales unless the new ones
    are finite, positive and, rounded to the scales' dtype, lower its error (never worse on the
    calibration inputs). Returns scales in their given dtype."""
    h, wh = _padded_products(w, h, size)
    return _refit_rows(wh, h, centred, scales, size)[0]


def _refit_rows(wh: torch.Tensor, h: torch.Tensor, centred: torch.Tensor, scales: torch.Tensor, size: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """`refit_group_scales` on padded H and W H (`_padded_products`); also returns each row's error
    less its constant w^T H w, for the scales returned."""
    dtype, scales = scales.dtype, scales.float()
    rows, groups = scales.shape
    pad = groups * size - centred.shape[1]
    if pad:
        centred = torch.nn.functional.pad(centred, (0, pad))
    b = (centred * wh).reshape(rows, groups, size).sum(-1).double()
    a = torch.empty(rows, groups, groups)
    for k in range(groups):  # A is symmetric: its upper triangle, column by column
        span, upto = slice(k * size, (k + 1) * size), (k + 1) * size
        column = (centred[:, :upto] * (centred[:, span] @ h[span, :upto])).reshape(rows, k + 1, size).sum(-1)
        a[:, :k + 1, k] = column
        a[:, k, :k + 1] = column
    a64 = a.double()
    # a group whose codes are all zero has a zero row and column: its scale is free; pin it
    empty = a64.diagonal(dim1=1, dim2=2) <= 0
    pinned = a64 + torch.diag_embed(empty.double())
    fitted, info = torch.linalg.solve_ex(pinned, b.unsqueeze(-1))
    fitted = torch.where(empty, scales.double(), fitted.squeeze(-1)).to(dtype).float()

    def row_error(s: torch.Tensor) -> torch.Tensor:
        """Each row's error less its constant w^T H w: s^T A s - 2 s^T b (no GEMM over H)."""
        s = s.double().unsqueeze(-1)
        return (s.transpose(1, 2) @ a64 @ s).squeeze((1, 2)) - 2 * (s.squeeze(-1) * b).sum(1)

    ok = (info == 0) & torch.isfinite(fitted).all(1) & (fitted > 0).all(1)
    candidate_error, old_error = row_error(torch.where(ok.unsqueeze(1), fitted, scales)), row_error(scales)
    ok &= candidate_error < old_error
    return torch.where(ok.unsqueeze(1), fitted, scales).to(dtype), torch.where(ok, candidate_error, old_error)


@contextlib.contextmanager
def single_thread():
    """The solve is thousands of small vector ops and GEMMs of a few MFLOP: a thread pool's
    wake-ups cost more than they save, and on a busy host (more runnable threads than cores) they
    cost 3-23x (measured: 3072 x 576 INT4 g64 solve, 0.64-0.74 s on one thread, 2.2-16.8 s on two).
    The factorisation too: cholesky_inverse of 576 x 576 took 1.4 s on two threads at load 5, 0.06 s
    on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _column_loop(w_t, upper, grid, col_s, col_z, spec, block_size, dynamic) -> None:
    """Quantize columns in solve order, in place, on transposed (cols, rows) tensors: `grid` gets
    each column's integer grid points (signed q for symmetric formats, unsigned codes for
    asymmetric ones), `w_t` the propagated updates; `dynamic` = (scales, zeros, size, diag, search)
    fills group parameters as each group starts (None: col_s/col_z are fixed).

    Each column costs a few small tensor operations and a rank-1 update of the rest of its lazy
    batch, so the loop adds none it can avoid: the factor's rows are divided by their diagonal once
    (the error is then column - q * s, one fused operation, no division per column), and rows are
    taken by one `unbind` per lazy batch rather than by indexing.
    """
    cols, rows = w_t.shape
    scaled = upper / upper.diagonal().unsqueeze(1)   # row j of U over U[j, j]
    half = 2 ** (spec.bits - 1)
    low, high = (-half, half - 1) if spec.symmetric else (0, 2**spec.bits - 1)
    centred = None if col_z is None else torch.empty(rows)   # q - z of an asymmetric column
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        block = w_t[i1:i2].clone()
        errors = torch.empty_like(block)
        factor_rows = scaled[i1:i2, i1:i2].unbind(0)
        for i, (column, q, err, factor_row) in enumerate(zip(
                block.unbind(0), grid[i1:i2].unbind(0), errors.unbind(0), factor_rows, strict=True)):
            col = i1 + i
            if dynamic is not None and col % dynamic[2] == 0:
                dyn_s, dyn_z, size, diag, search = dynamic
                s, z = _dynamic_params(w_t, block, i, i2, col, size, diag, spec, search)
                dyn_s[:, col // size] = s[:, 0]
                col_s[col:col + size] = s.float().T
                if z is not None:
                    dyn_z[:, col // size] = z[:, 0]
                    col_z[col:col + size] = z.T
            s = col_s[col]
            torch.div(column, s, out=q).round_()
            if col_z is None:
                torch.addcmul(column, q.clamp_(low, high), s, value=-1, out=err)
            else:
                z = col_z[col]
                q.add_(z).clamp_(low, high)
                torch.addcmul(column, torch.sub(q, z, out=centred), s, value=-1, out=err)
            if i + 1 < i2 - i1:
                block[i + 1:].addr_(factor_row[i + 1:], err, alpha=-1)
        if i2 < cols:
            w_t[i2:].addmm_(scaled[i1:i2, i2:].T, errors, alpha=-1)
