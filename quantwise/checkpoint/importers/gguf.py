"""GGUF files (llama.cpp's llama-quantize, or our own export): linears keep GGUF's own codes and
scales (exact, bit for bit against gguf's dequantizer):
  Q4_0 -> INT4 g32, Q8_0 -> INT8 g32 (fp16 scales); Q4_1 -> AFFINE4 g32 (fp16 scale and offset);
  Q6_K -> INT6 g16 with float32 scales d*sc; Q4_K -> AFFINE4 g32 with float32 scales d*sc and
  offsets -dmin*m (layouts in exporters/gguf_kquants.py).
K-quants' two-level scales are held flat in float32: 8.0 bits per weight for Q6_K (GGUF: 6.56) and
6.0 for Q4_K (GGUF: 4.5). Other tensor types (Q5_0, Q5_K, F16, ...) are dequantized by gguf's own
dequantizer and kept as float weights, so they are measured but not stored in our low-bit formats.
Layout facts in exporters/gguf.py, per-architecture ones (names, norm offsets, q/k permutation) in
exporters/gguf_arch.py; architectures not in that table load through transformers' GGUF reader as
plain models (`quantwise.models.gguf_import`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ...runtime.qlinear import QuantizedLinear
from ..exporters.gguf_arch import ARCHES, REST_NAMES, GGUFArch
from ..exporters.gguf_kquants import q4_k_unpack, q6_k_unpack
from .base import ImportError_, NativeWriter, affine_linear, int_linear

NAME = "gguf"
_HF_REST = {gguf_name: hf for hf, gguf_name in REST_NAMES.items()}


def unpermute_qk(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of llama.cpp's q/k row permutation."""
    shape = rows.shape
    return rows.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _linear(raw: np.ndarray, kind, rows: int, cols: int) -> QuantizedLinear | None:
    """The tensor as a QuantizedLinear holding GGUF's own codes, or None for types kept as floats."""
    import gguf

    Q = gguf.GGMLQuantizationType
    readers = {Q.Q4_0: _q4_0, Q.Q8_0: _q8_0, Q.Q4_1: _q4_1, Q.Q4_K: _q4_k, Q.Q6_K: _q6_k}
    if kind not in readers:
        return None
    block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    if cols % block or raw.size != rows * cols // block * block_bytes:
        raise ImportError_(f"tensor of {rows}x{cols} {kind.name} holds {raw.size} bytes, not "
                           f"{rows * cols // block * block_bytes} (truncated or damaged file)")
    return readers[kind](np.ascontiguousarray(raw), rows, cols)


def _blocks32(raw: np.ndarray, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32-value blocks (rows, cols/32, bytes) and their leading fp16 d (rows, cols/32)."""
    blocks = torch.from_numpy(raw.reshape(rows, cols // 32, -1).copy())
    return blocks, blocks[:, :, :2].contiguous().view(torch.float16).reshape(rows, cols // 32)


def _nibbles(packed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """16 bytes per block: value j in the low nibble of byte j, value j + 16 in its high nibble."""
    packed = packed.to(torch.int64)
    return torch.cat([packed & 0xF, packed >> 4], dim=2).reshape(rows, cols)


def _q4_0(raw, rows, cols):
    blocks, d = _blocks32(raw, rows, cols)
    return int_linear(_nibbles(blocks[:, :, 2:], rows, cols), d, None, 4, 32)


def _q8_0(raw, rows, cols):
    blocks, d = _blocks32(raw, rows, cols)
    values = blocks[:, :, 2:].contiguous().view(torch.int8).reshape(rows, cols).to(torch.int64)
    return int_linear(values + 128, d, None, 8, 32)


def _q4_1(raw, rows, cols):
    """x = d * nibble + m: AFFINE4 g32 with fp16 scales and offsets (exact)."""
    blocks, d = _blocks32(raw, rows, cols)
    m = blocks[:, :, 2:4].contiguous().view(torch.float16).reshape(rows, cols // 32)
    return affine_linear(_nibbles(blocks[:, :, 4:], rows, cols), d, m, 4, 32)


def _q4_k(raw, rows, cols):
    """AFFINE4 g32, float32 scale d*sc and offset -dmin*m (both exact products)."""
    return affine_linear(*q4_k_unpack(raw, rows, cols), 4, 32)


def _q6_k(raw, rows, cols):
    """Symmetric INT6 g16, float32 scale d*sc; the stored q is our unsigned code (value q - 32)."""
    codes, scales = q6_k_unpack(raw, rows, cols)
    return int_linear(codes.to(torch.int64), scales, None, 6, 16)


ARCHITECTURES = tuple(ARCHES)


def _reader(path: Path):
    from ...models.gguf_file import GGUFFileError, open_gguf

    try:
        return open_gguf(path)
    except GGUFFileError as exc:
        raise ImportError_(str(exc)) from None


def architecture(path: Path, reader=None) -> str:
    field = (reader or _reader(path)).fields.get("general.architecture")
    if field is None:
        raise ImportError_(f"{path}: GGUF file without general.architecture")
    return bytes(field.parts[-1]).decode()


def import_gguf(path: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    reader = _reader(path)
    arch = architecture(path, reader)
    if arch not in ARCHITECTURES:
        raise ImportError_(f"{path}: GGUF architecture {arch!r} is read as a plain model, not imported with its codes")
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    config.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained(out)
    table = ARCHES[arch]
    hf_block = {gguf_name: hf for hf, gguf_name in table.block_names.items()}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    if not table.permute_qk:
        heads = kv_heads = None  # rows are stored as Hugging Face orders them
    blocks: dict[int, tuple[dict, dict]] = {}
    rest = {}
    for tensor in reader.tensors:
        name = tensor.name
        shape = [int(v) for v in reversed(tensor.shape.tolist())]    # GGUF lists dimensions fastest first
        if name.startswith("blk."):
            _, index, local = name.split(".", 2)
            base = local.removesuffix(".weight")
            if local in hf_block:       # norms
                blocks.setdefault(int(index), ({}, {}))[1][hf_block[local]] = _dense(tensor, shape, table)
                continue
            if base not in hf_block:
                raise ImportError_(f"{path}: tensor {name} has no Hugging Face name in quantwise's map")
            hf = hf_block[base]
            try:
                module = _linear(tensor.data, tensor.tensor_type, *shape) if len(shape) == 2 else None
            except ImportError_ as exc:
                raise ImportError_(f"{path}: {name}: {exc}") from None
            linears, plain = blocks.setdefault(int(index), ({}, {}))
            heads_here = heads if hf.endswith("q_proj") else kv_heads if hf.endswith("k_proj") else None
            if module is not None:
                if heads_here:
                    module = _unpermute_module(module, heads_here)
                linears[hf] = module
            else:
                weight = _dense(tensor, shape)
                plain[f"{hf}.weight"] = unpermute_qk(weight, heads_here) if heads_here else weight
        elif name in _HF_REST:
            rest[_HF_REST[name]] = _dense(tensor, shape, table)
        else:
            raise ImportError_(f"{path}: tensor {name} has no Hugging Face name in quantwise's map")
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    writer = NativeWriter(out, "model.layers", str(path), {"name": "imported gguf", "config": {}}, digest)
    for index in sorted(blocks):
        writer.block(index, *blocks[index])
    writer.finish(rest, config.to_dict(), out, config.model_type)


def _dense(tensor, shape: list[int], table: GGUFArch | None = None) -> torch.Tensor:
    """The tensor in float32, its norm offset undone (Gemma's norms are stored as 1 + w)."""
    import gguf

    values = np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if values.size != int(np.prod(shape)):
        raise ImportError_(f"{tensor.name}: holds {values.size} values, not {shape} (truncated or damaged file)")
    if table is not None and table.norm_offset and tensor.name.endswith("norm.weight"):
        values = values - np.float32(table.norm_offset)
    return torch.from_numpy(values).reshape(shape)


def _unpermute_module(module: QuantizedLinear, heads: int) -> QuantizedLinear:
    """Undo the q/k row permutation on packed rows and their scales (rows are whole in both)."""
    from dataclasses import replace

    qt = module.weight_q
    offsets = None if qt.offsets is None else unpermute_qk(qt.offsets, heads).contiguous()
    return QuantizedLinear(replace(qt, data=unpermute_qk(qt.data, heads).contiguous(),
                                   scales=unpermute_qk(qt.scales, heads).contiguous(), offsets=offsets), module.bias)
