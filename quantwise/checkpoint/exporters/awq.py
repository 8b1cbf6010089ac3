"""AWQ GEMM, the layout AutoAWQ wrote and vLLM, GPTQModel and transformers load.
Source: GPTQModel `nn_modules/qlinear/gemm_awq.py`, vLLM `awq.py`.

- `qweight` int32 (in, out/8), packed along the OUTPUT dimension: nibble j of word c holds output
  column 8c + order[j] with order = [0, 2, 4, 6, 1, 3, 5, 7]; `qzeros` int32 (groups, out/8) in the
  same order, true zero points (symmetric codes: 8); `scales` fp16 (groups, out); w = s * (q - z).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...formats import FormatKind, Granularity
from ...runtime.qlinear import QuantizedLinear
from ..int32_packing import pack_int32
from ..native import NativeCheckpoint
from .base import ExportError, ExportOptions, int_weight, write_hf_directory

NAME = "awq"
ENGINES = "vLLM, GPTQModel, transformers (with gptqmodel)"
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def awq_interleave(values: torch.Tensor) -> torch.Tensor:
    """(rows, out) -> columns reordered so that plain little-endian packing puts output column
    8c + AWQ_ORDER[j] into nibble j of word c."""
    rows, cols = values.shape
    return values.reshape(rows, cols // 8, 8)[:, :, list(AWQ_ORDER)].reshape(rows, cols)


def _spec_check(name: str, module: QuantizedLinear) -> int:
    spec = module.weight_q.spec
    if spec.kind is not FormatKind.INT or spec.bits != 4 or spec.granularity is not Granularity.GROUP \
            or module.act_spec is not None:
        raise ExportError(f"{name}: AWQ GEMM holds weight-only 4-bit groups, not {spec.name}")
    if module.in_features % spec.group_size:
        raise ExportError(f"{name}: group size {spec.group_size} does not divide the input width "
                          f"{module.in_features}; quantize with --for vllm, or a group size that divides it")
    if module.out_features % 8:
        raise ExportError(f"{name}: AWQ packs 8 output columns per word; {module.out_features} is not a multiple")
    return spec.group_size


def _tensors(name: str, module: QuantizedLinear) -> dict[str, torch.Tensor]:
    w = int_weight(module, name)
    out = {f"{name}.qweight": pack_int32(awq_interleave(w.codes.T.contiguous()), 4),
           f"{name}.qzeros": pack_int32(awq_interleave(w.zeros.T.contiguous()), 4),
           f"{name}.scales": w.scales.T.contiguous().to(torch.float16)}
    if module.bias is not None:
        out[f"{name}.bias"] = module.bias.to(torch.float16)
    return out


def check(ckpt: NativeCheckpoint) -> dict:
    groups = {_spec_check(ckpt.manifest.full_name(b.index, n), m) for b in ckpt.blocks() for n, m in b.linears.items()}
    if len(groups) != 1:
        raise ExportError(f"AWQ configs hold one group size; this checkpoint mixes {sorted(groups)}: export it to "
                          "compressed-tensors instead")
    return {"quant_method": "awq", "bits": 4, "group_size": groups.pop(), "zero_point": True, "version": "gemm"}


def write(ckpt: NativeCheckpoint, out: Path, options: ExportOptions) -> dict:
    return write_hf_directory(ckpt, out, _tensors, check(ckpt), options)
