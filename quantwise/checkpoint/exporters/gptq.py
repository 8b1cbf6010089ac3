"""GPTQ v1, the layout AutoGPTQ introduced and GPTQModel, vLLM and transformers (via gptqmodel)
load. Source: ModelCloud/GPTQModel `nn_modules/qlinear/__init__.py`, vLLM `gptq.py`.

- `qweight` int32 (in*bits/32, out), packed along the input: input row 8r+j of column n sits at
  bits 4j of word r (4-bit); `scales` fp16 (groups, out); `g_idx` int32 (in,), each input row's group.
- `qzeros` int32 (groups, out*bits/32), packed along the output, storing zero - 1 (v1's historical
  offset; readers add 1: symmetric 4-bit zeros are 0x77777777). A zero point of 0 cannot be stored
  that way, so asymmetric checkpoints are written as `gptq_v2`, which stores true zeros.
- act-order (`desc_act`): the codes are written back in the original input order and `g_idx` says
  which group each input row belongs to.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...formats import FormatKind, Granularity
from ...runtime.qlinear import QuantizedLinear
from ..int32_packing import pack_int32
from ..native import NativeCheckpoint
from .base import ExportError, ExportOptions, int_weight, write_hf_directory

NAME = "gptq"
ENGINES = "GPTQModel, vLLM (4/8-bit symmetric), transformers (with gptqmodel + optimum)"
_BITS = (2, 4, 8)


def _spec_check(name: str, module: QuantizedLinear) -> tuple[int, int, bool]:
    spec = module.weight_q.spec
    if spec.kind is not FormatKind.INT or spec.bits not in _BITS or module.act_spec is not None:
        raise ExportError(f"{name}: GPTQ checkpoints hold weight-only int{'/'.join(map(str, _BITS))}, "
                          f"not {spec.name}{' with quantized activations' if module.act_spec else ''}")
    if spec.granularity is Granularity.GROUP:
        group = spec.group_size
        if module.in_features % group:
            raise ExportError(f"{name}: group size {group} does not divide the input width {module.in_features}; "
                              "quantize with --for vllm, or a group size that divides it")
    elif spec.granularity is Granularity.CHANNEL:
        group = -1
    else:
        raise ExportError(f"{name}: GPTQ stores per-group or per-channel scales, not {spec.granularity.value}")
    return spec.bits, group, spec.symmetric


def _tensors(name: str, module: QuantizedLinear, v1: bool) -> dict[str, torch.Tensor]:
    perm = module.perm
    plain = QuantizedLinear(module.weight_q, module.bias) if perm is not None else module
    w = int_weight(plain, name)  # codes in stored order
    stored_group = torch.arange(module.in_features) // w.group_size
    if perm is None:
        codes, g_idx = w.codes, stored_group
    else:  # stored column j holds input feature perm[j]
        codes = torch.empty_like(w.codes)
        codes[:, perm] = w.codes
        g_idx = torch.empty_like(stored_group)
        g_idx[perm] = stored_group
    zeros = w.zeros - 1 if v1 else w.zeros
    out = {f"{name}.qweight": pack_int32(codes, w.bits).T.contiguous(),
           f"{name}.qzeros": pack_int32(zeros.T.contiguous() & (2**w.bits - 1), w.bits),
           f"{name}.scales": w.scales.T.contiguous().to(torch.float16),
           f"{name}.g_idx": g_idx.to(torch.int32)}
    if module.bias is not None:
        out[f"{name}.bias"] = module.bias.to(torch.float16)
    return out


def check(ckpt: NativeCheckpoint) -> dict:
    """The one (bits, group, sym, desc_act) every linear shares: GPTQ configs are global."""
    seen = set()
    for block in ckpt.blocks():
        for name, module in block.linears.items():
            seen.add((*_spec_check(ckpt.manifest.full_name(block.index, name), module), module.perm is not None))
    if len(seen) != 1:
        raise ExportError(f"GPTQ configs describe one format for all layers; this checkpoint mixes {sorted(seen)}: "
                          "export it to compressed-tensors, which allows one config group per format")
    bits, group, sym, desc_act = seen.pop()
    return {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": desc_act, "sym": sym,
            "static_groups": False, "true_sequential": False, "lm_head": False,
            "checkpoint_format": "gptq" if sym else "gptq_v2", "damp_percent": ckpt.manifest.method.get(
                "config", {}).get("damp", 0.01), "quantizer": ["quantwise"]}


def write(ckpt: NativeCheckpoint, out: Path, options: ExportOptions) -> dict:
    qconfig = check(ckpt)
    v1 = qconfig["checkpoint_format"] == "gptq"
    return write_hf_directory(ckpt, out, lambda name, module: _tensors(name, module, v1), qconfig, options,
                              extra_files={"quantize_config.json": qconfig})
