"""GPTQ (v1 and v2) checkpoints as GPTQModel / AutoGPTQ write them; layout in exporters/gptq.py.
act-order (`desc_act` with g_idx) becomes quantwise's stored permutation when each group holds
exactly group_size input rows, which is how GPTQ writes it."""

from __future__ import annotations

import torch

from ...runtime.qlinear import QuantizedLinear
from ..int32_packing import unpack_int32
from .base import ImportError_, SafetensorsDir, int_linear

NAME = "gptq"
MARKER = "qweight"


def detect(qconfig: dict) -> bool:
    return qconfig.get("quant_method") == "gptq"


def linear(prefix: str, tensors: SafetensorsDir, qconfig: dict) -> QuantizedLinear:
    bits = int(qconfig.get("bits", 4))
    qweight, qzeros = tensors.get(f"{prefix}.qweight"), tensors.get(f"{prefix}.qzeros")
    scales = tensors.get(f"{prefix}.scales")
    groups, out = scales.shape
    cols = qweight.shape[0] * 32 // bits
    codes = unpack_int32(qweight.T.contiguous(), bits, cols)             # (out, in)
    offset = 0 if qconfig.get("checkpoint_format", "gptq") == "gptq_v2" else 1
    zeros = (unpack_int32(qzeros, bits, out) + offset) & (2**bits - 1)   # (groups, out)
    group = qconfig.get("group_size", -1)
    group = cols if group in (-1, None) else int(group)
    natural = torch.arange(cols) // group
    g_idx = tensors.get(f"{prefix}.g_idx").long() if f"{prefix}.g_idx" in tensors.where else natural
    perm = None
    if not torch.equal(g_idx, natural):
        perm = torch.argsort(g_idx, stable=True)
        if not torch.equal(g_idx[perm], natural):
            raise ImportError_(f"{prefix}: g_idx groups are not of {group} rows each; quantwise stores act-order "
                               "as a permutation with contiguous groups")
        codes = codes[:, perm]
    bias = tensors.get(f"{prefix}.bias").float() if f"{prefix}.bias" in tensors.where else None
    return int_linear(codes, scales.T.contiguous(), zeros.T.contiguous(), bits, group, bias, perm)
