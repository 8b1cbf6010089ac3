"""GGUF K-quant super-blocks (Q4_K, Q6_K) <-> quantwise codes, scales and offsets.

Source: ggml-org/llama.cpp `ggml/src/ggml-common.h` (block_q4_K, block_q6_K) and
`ggml-quants.c` (dequantize_row_q4_K / q6_K); gguf-py's `quants.py` reads them the same way.
Each super-block holds 256 values of one row:
- Q6_K (210 B): ql[128] low nibbles, qh[64] high 2 bits, int8 sc[16], fp16 d;
  x = d * sc[i] * (q - 32) over 16 sub-blocks of 16: symmetric INT6 g16 with scale d * sc.
- Q4_K (144 B): fp16 d, fp16 dmin, 12 bytes of 6-bit sc[8] and m[8], qs[128] nibbles;
  x = d * sc[i] * q - dmin * m[i] over 8 sub-blocks of 32: AFFINE4 g32, scale d * sc, offset -dmin * m.
The products of an fp16 and a 6- or 8-bit integer are exact in float32, so float32 scales and
offsets hold every K-quant value exactly, and `factor` recovers (d, sc) from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...formats import FormatKind, affine
from ...runtime.qlinear import QuantizedLinear
from .base import int_weight

QK = 256  # values per super-block
Q6_K_BYTES, Q4_K_BYTES = 210, 144


@dataclass(frozen=True)
class SubScales:
    """Sub-block scales as a super-block scale times small integers: value = d * q."""

    d: np.ndarray   # (blocks,) float16
    q: np.ndarray   # (blocks, sub) int16


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    return np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, block_bytes)


# ---- Q6_K -----------------------------------------------------------------------------------------

def q6_k_unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) unsigned codes 0..63 (q, stored q - 32 is the signed value) and (rows, cols/16)
    float32 scales d * sc."""
    b = _blocks(raw, Q6_K_BYTES)
    n = b.shape[0]
    ql, qh = b[:, :128].reshape(n, 2, 1, 64), b[:, 128:192].reshape(n, 2, 1, 32)
    low = (ql >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0xF        # value h*128 + s*64 + j
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3   # value h*128 + k*32 + j
    codes = low.reshape(n, QK) | (high.reshape(n, QK) << 4)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = b[:, 208:210].copy().view(np.float16).astype(np.float32)
    return (torch.from_numpy(codes.reshape(rows, cols)),
            torch.from_numpy((d * sc).reshape(rows, cols // 16)))


def q6_k_pack(codes: torch.Tensor, scales: SubScales) -> np.ndarray:
    """Unsigned codes (rows, cols) 0..63 and sub-scales (rows*cols/256 blocks of 16) -> (rows, bytes)."""
    rows = codes.shape[0]
    c = codes.to(torch.uint8).numpy().reshape(-1, 2, 2, 64)                # [h, s, j]
    ql = (c[:, :, 0] & 0xF) | ((c[:, :, 1] & 0xF) << 4)
    hi = (codes.to(torch.uint8).numpy().reshape(-1, 2, 4, 32) >> 4)         # [h, k, j]
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)
    n = c.shape[0]
    parts = [ql.reshape(n, 128), qh.reshape(n, 64), scales.q.astype(np.int8).view(np.uint8),
             scales.d.astype(np.float16).reshape(n, 1).view(np.uint8)]
    return np.concatenate(parts, axis=1).reshape(rows, -1)


# ---- Q4_K -----------------------------------------------------------------------------------------

def _unpack_6bit(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes -> sc[8], m[8]: bytes 0-3 / 4-7 hold sc/m 0-3 in their low 6 bits and the top 2 bits
    of sc/m 4-7; bytes 8-11 hold the low nibbles of sc 4-7 (low) and m 4-7 (high)."""
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = np.concatenate([a & 63, (c & 0xF) | ((a >> 6) << 4)], axis=1)
    m = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, m


def _pack_6bit(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    a = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    b = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    c = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    return np.concatenate([a, b, c], axis=1)


def q4_k_unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols) codes 0..15, (rows, cols/32) float32 scales d * sc and offsets -dmin * m."""
    b = _blocks(raw, Q4_K_BYTES)
    n = b.shape[0]
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = b[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = _unpack_6bit(b[:, 4:16])
    qs = b[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)  # value c*64+s*32+j
    codes = (qs & 0xF).reshape(rows, cols)
    scales = (d * sc.astype(np.float32)).reshape(rows, cols // 32)
    offsets = -(dmin * m.astype(np.float32)).reshape(rows, cols // 32)
    return torch.from_numpy(codes), torch.from_numpy(scales), torch.from_numpy(offsets)


def q4_k_pack(codes: torch.Tensor, scales: SubScales, mins: SubScales) -> np.ndarray:
    """Codes (rows, cols) 0..15, sub-scales d*sc and sub-minima dmin*m (8 per block) -> (rows, bytes)."""
    rows = codes.shape[0]
    c = codes.to(torch.uint8).numpy().reshape(-1, 4, 2, 32)
    n = c.shape[0]
    qs = (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(n, 128)
    parts = [scales.d.astype(np.float16).reshape(n, 1).view(np.uint8),
             mins.d.astype(np.float16).reshape(n, 1).view(np.uint8), _pack_6bit(scales.q, mins.q), qs]
    return np.concatenate(parts, axis=1).reshape(rows, -1)


# ---- scales as d * integer ------------------------------------------------------------------------

def factor(values: np.ndarray, low: int, high: int) -> SubScales | None:
    """(blocks, sub) float32 -> d (fp16) and integers in low..high with float32(d) * q == value exactly
    in every block, or None when some block has no such d (the values did not come from this grid).
    Tries d = v / t for the block's largest |v| and each integer t of the range, widest first: the
    grid llama.cpp picks (peak on 63, or on -128 for Q6_K), so transcoding gives its bytes back and
    nearly every block is settled by the first trial."""
    values = np.asarray(values, dtype=np.float32)
    trials = np.array(sorted((t for t in range(low, high + 1) if t), key=abs, reverse=True), dtype=np.float32)
    peak = np.take_along_axis(values, np.abs(values).argmax(1)[:, None], 1)[:, 0]
    d = np.zeros(len(values), dtype=np.float16)
    q = np.zeros(values.shape, dtype=np.int16)
    todo = np.flatnonzero(peak != 0)                                  # all-zero blocks: d = 0, q = 0
    for t in trials:
        if todo.size == 0:
            return SubScales(d, q)
        v = values[todo]
        trial = (peak[todo] / t).astype(np.float16)
        t32 = trial.astype(np.float32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            ints = np.rint(v / t32)
        ok = ((t32 * ints == v) & (ints >= low) & (ints <= high)).all(1) & (t32[:, 0] != 0)
        d[todo[ok]], q[todo[ok]] = trial[ok], ints[ok].astype(np.int16)
        todo = todo[~ok]
    return SubScales(d, q) if todo.size == 0 else None


def _to_grid(values: np.ndarray, low: int, high: int) -> SubScales:
    """Round sub-block scales onto d * q in fp16 d, the largest |value| on the widest integer: `high`
    (0..63 grids), or -128 for int8 as llama.cpp's quantize_row_q6_K does (d's sign opposite the peak's)."""
    peak = np.take_along_axis(values, np.abs(values).argmax(1)[:, None], 1)[:, 0]
    d = (peak / (low if low < 0 else high)).astype(np.float16)
    d32 = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d32 != 0, np.rint(values / d32), 0)
    return SubScales(d, np.clip(q, low, high).astype(np.int16))


# ---- quantizing float weights into super-blocks ---------------------------------------------------

def _least_squares(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Scale s minimizing |x - s q|^2 per sub-block (last dim)."""
    qq = (q * q).sum(-1)
    return torch.where(qq > 0, (x * q).sum(-1) / qq.clamp(min=1e-30), torch.zeros_like(qq))


def q6_k_quantize(w: torch.Tensor) -> tuple[torch.Tensor, SubScales]:
    """Float (rows, cols) -> unsigned codes and sub-scales. Per sub-block of 16, the scale is the
    least-squares fit over 19 trial roundings around max|x| -> -32 (llama.cpp's make_qx_quants search,
    unweighted); the 16 scales are then put on d * int8, and the codes re-rounded against them."""
    rows, cols = w.shape
    x = w.float().reshape(-1, 16)
    peak = x.gather(1, x.abs().argmax(1, keepdim=True))                          # signed largest |x|
    steps = torch.arange(-9, 10, dtype=torch.float32) * 0.1
    inv = torch.where(peak != 0, (-32 + steps) / peak, torch.zeros_like(peak + steps))   # (n, 19)
    q = torch.round(inv[:, :, None] * x[:, None, :]).clamp(-32, 31)
    s = _least_squares(x[:, None, :], q)
    err = ((x[:, None, :] - s[:, :, None] * q) ** 2).sum(-1)
    best = s.gather(1, err.argmin(1, keepdim=True)).reshape(-1, 16)              # (blocks, 16)
    sub = _to_grid(best.numpy(), -128, 127)
    scale = torch.from_numpy(sub.d.astype(np.float32)[:, None] * sub.q.astype(np.float32)).reshape(-1, 1)
    codes = torch.where(scale != 0, torch.round(x / scale), torch.zeros_like(x)).clamp(-32, 31) + 32
    return codes.to(torch.uint8).reshape(rows, cols), sub


def q4_k_quantize(w: torch.Tensor) -> tuple[torch.Tensor, SubScales, SubScales]:
    """Float (rows, cols) -> codes, sub-scales and sub-minima. Per sub-block of 32, (scale, min) is the
    least-squares line through trial roundings of [min(x, 0), max] onto 0..15 (llama.cpp's
    make_qkx2_quants search, unweighted), the minimum kept <= 0 as Q4_K stores -dmin * m with m >= 0;
    both are then put on 6-bit grids against fp16 d and dmin, and the codes re-rounded."""
    rows, cols = w.shape
    x = w.float().reshape(-1, 32)
    low = x.amin(1, keepdim=True).clamp(max=0)
    span = x.amax(1, keepdim=True) - low
    trials = 15 + torch.arange(-1, 1.05, 0.1, dtype=torch.float32)[:21]           # iscale numerators
    inv = torch.where(span > 0, trials / span, torch.zeros_like(span + trials))  # (n, T)
    q = torch.round(inv[:, :, None] * (x - low)[:, None, :]).clamp(0, 15)
    xs = x[:, None, :].expand_as(q)
    n = 32.0
    sq, sx, sqq, sqx = q.sum(-1), xs.sum(-1), (q * q).sum(-1), (q * xs).sum(-1)
    det = n * sqq - sq * sq
    scale = torch.where(det > 0, (n * sqx - sq * sx) / det.clamp(min=1e-30), torch.zeros_like(det))
    offset = torch.where(det > 0, (sqq * sx - sq * sqx) / det.clamp(min=1e-30), low.expand_as(det))
    positive = offset > 0                                                         # refit through 0
    scale = torch.where(positive, _least_squares(xs, q), scale)
    offset = torch.where(positive, torch.zeros_like(offset), offset)
    err = ((xs - scale[:, :, None] * q - offset[:, :, None]) ** 2).sum(-1)
    pick = err.argmin(1, keepdim=True)
    scale = scale.gather(1, pick).clamp(min=0).reshape(-1, 8)
    minimum = (-offset.gather(1, pick)).reshape(-1, 8)
    scales, mins = _to_grid(scale.numpy(), 0, 63), _to_grid(minimum.numpy(), 0, 63)
    s = torch.from_numpy(scales.d.astype(np.float32)[:, None] * scales.q.astype(np.float32)).reshape(-1, 1)
    m = torch.from_numpy(mins.d.astype(np.float32)[:, None] * mins.q.astype(np.float32)).reshape(-1, 1)
    codes = torch.where(s != 0, torch.round((x + m) / s), torch.zeros_like(x)).clamp(0, 15)
    return codes.to(torch.uint8).reshape(rows, cols), scales, mins


# ---- a quantized linear as K-quant blocks ---------------------------------------------------------

def _per_sub(params: torch.Tensor, group: int, cols: int, sub: int) -> torch.Tensor:
    """(rows, groups) -> (rows, cols/sub): each sub-block takes its group's value (group % sub == 0)."""
    return params[:, torch.arange(0, cols, sub) // group]


def _int_or_affine(module: QuantizedLinear, sub: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Unsigned codes, per-sub-block float32 scales and offsets (value = code * scale + offset) of an
    INT or AFFINE weight whose groups hold whole sub-blocks, else None."""
    qt, cols = module.weight_q, module.in_features
    if module.perm is not None:
        return None
    if qt.spec.kind is FormatKind.AFFINE:
        if qt.spec.group_size % sub:
            return None
        group = qt.spec.group_size
        return (affine.codes(qt), _per_sub(qt.scales.float(), group, cols, sub),
                _per_sub(qt.offsets.float(), group, cols, sub))
    if qt.spec.kind is not FormatKind.INT:
        return None
    w = int_weight(module, "")
    if w.group_size % sub:
        return None
    scales = _per_sub(w.scales, w.group_size, cols, sub)
    return w.codes, scales, -scales * _per_sub(w.zeros.float(), w.group_size, cols, sub)  # s*z: exact in fp32


def q6_k_transcode(module: QuantizedLinear) -> np.ndarray | None:
    """Q6_K blocks holding the module's own codes exactly (symmetric INT of <= 6 bits whose
    per-16 scales are fp16 d times int8, as in a checkpoint imported from Q6_K), else None."""
    spec = module.weight_q.spec
    parts = _int_or_affine(module, 16) if spec.kind is FormatKind.INT and spec.symmetric and spec.bits <= 6 else None
    if parts is None:
        return None
    codes, scales, _ = parts
    sub = factor(scales.numpy().reshape(-1, 16), -128, 127)
    signed = codes.to(torch.int16) - 2 ** (spec.bits - 1)
    return None if sub is None else q6_k_pack((signed + 32).to(torch.uint8), sub)


def q4_k_transcode(module: QuantizedLinear) -> np.ndarray | None:
    """Q4_K blocks holding the module's own codes exactly (4-bit INT or AFFINE whose per-32 scales
    and offsets are fp16 d times 0..63 and -fp16 dmin times 0..63, as in a checkpoint imported from
    Q4_K), else None."""
    parts = _int_or_affine(module, 32) if module.weight_q.spec.bits == 4 else None
    if parts is None:
        return None
    codes, scales, offsets = parts
    sub = factor(scales.numpy().reshape(-1, 8), 0, 63)
    mins = None if sub is None else factor(-offsets.numpy().reshape(-1, 8), 0, 63)
    return None if mins is None else q4_k_pack(codes, sub, mins)


def kquant_blocks(module: QuantizedLinear, kind: str) -> tuple[np.ndarray, bool]:
    """(rows, bytes) blocks of "Q4_K" or "Q6_K" and whether they are lossless: the module's own
    codes when they fit the super-block grid, else its dequantized weights quantized anew."""
    exact = {"Q4_K": q4_k_transcode, "Q6_K": q6_k_transcode}[kind](module)
    if exact is not None:
        return exact, True
    return kquant_float(module.dense_weight(), kind), False


def kquant_float(weight: torch.Tensor, kind: str) -> np.ndarray:
    """Float weights (rows, cols) quantized into "Q4_K" or "Q6_K" blocks (rows, bytes)."""
    if kind == "Q4_K":
        return q4_k_pack(*q4_k_quantize(weight))
    return q6_k_pack(*q6_k_quantize(weight))
