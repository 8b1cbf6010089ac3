"""QuantizedLinear <-> named tensors + a small JSON description (the checkpoint's building block)."""

from __future__ import annotations

import dataclasses

import torch

from ..formats import QuantSpec, parse_spec
from ..formats.container import DoubleQuantScales, QuantizedTensor
from ..formats.packing import packed_cols
from ..runtime.qlinear import QuantizedLinear


def spec_to_json(spec: QuantSpec) -> dict:
    return {"name": spec.name, "scale_dtype": spec.scale_dtype_name, "dq_block": spec.dq_block}


def spec_from_json(data: dict) -> QuantSpec:
    spec = parse_spec(data["name"])
    return dataclasses.replace(spec, scale_dtype=data.get("scale_dtype"), dq_block=data.get("dq_block", 256))


def qlinear_to_tensors(module: QuantizedLinear, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    qt = module.weight_q
    tensors = {f"{prefix}.qweight": qt.data.contiguous()}
    if isinstance(qt.scales, DoubleQuantScales):
        tensors[f"{prefix}.scale_codes"] = qt.scales.codes
        tensors[f"{prefix}.scale_block_scales"] = qt.scales.block_scales
        tensors[f"{prefix}.scale_offset"] = qt.scales.offset.reshape(1)
    elif qt.scales is not None:
        tensors[f"{prefix}.scales"] = qt.scales.contiguous()
    if qt.zeros is not None:
        tensors[f"{prefix}.zeros"] = qt.zeros.contiguous()
    if qt.offsets is not None:
        tensors[f"{prefix}.offsets"] = qt.offsets.contiguous()
    if module.perm is not None:
        tensors[f"{prefix}.perm"] = module.perm.to(torch.int32)
    if module.bias is not None:
        tensors[f"{prefix}.bias"] = module.bias.contiguous()
    meta = {"weight": spec_to_json(qt.spec), "shape": list(qt.shape),
            "act": None if module.act_spec is None else spec_to_json(module.act_spec),
            "outlier_threshold": module.outlier_threshold,
            "scale_shape": list(qt.scales.shape) if isinstance(qt.scales, DoubleQuantScales) else None}
    return tensors, meta


def qlinear_from_tensors(tensors: dict[str, torch.Tensor], prefix: str, meta: dict) -> QuantizedLinear:
    spec = spec_from_json(meta["weight"])
    if f"{prefix}.scale_codes" in tensors:
        scales = DoubleQuantScales(tensors[f"{prefix}.scale_codes"], tensors[f"{prefix}.scale_block_scales"],
                                   tensors[f"{prefix}.scale_offset"].reshape(()), tuple(meta["scale_shape"]),
                                   spec.dq_block)
    else:
        scales = tensors.get(f"{prefix}.scales")
    weight = QuantizedTensor(spec, tuple(meta["shape"]), tensors[f"{prefix}.qweight"], scales,
                             tensors.get(f"{prefix}.zeros"), tensors.get(f"{prefix}.offsets"))
    rows, cols = weight.rows_cols
    stored = (rows, packed_cols(cols, spec.bits) if spec.bits < 8 else cols)
    if tuple(weight.data.shape) != stored:
        raise ValueError(f"{prefix}: the description says {rows}x{cols} in {spec.name} ({stored[0]}x{stored[1]} "
                         f"stored) but the file holds {tuple(weight.data.shape)}")
    perm = tensors.get(f"{prefix}.perm")
    act = None if meta["act"] is None else spec_from_json(meta["act"])
    return QuantizedLinear(weight, tensors.get(f"{prefix}.bias"), None if perm is None else perm.long(), act,
                           meta["outlier_threshold"])
