"""Load a quantwise checkpoint back into a runnable transformers model with QuantizedLinear layers."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from ..models.source import TensorSource
from ..pipeline.checkpoint import layer_file, read_manifest
from ..pipeline.skeleton import build_block, build_skeleton
from .serialize import qlinear_from_tensors


class _RestSource(TensorSource):
    """The checkpoint's rest.safetensors, read like a model directory."""

    def __init__(self, out_dir: Path):
        self.model_dir = out_dir
        self._pickled = None
        self._where = dict.fromkeys(load_file(str(out_dir / "rest.safetensors")), out_dir / "rest.safetensors")


def load(checkpoint: str | Path) -> nn.Module:
    """A causal LM (eval mode) from a quantwise checkpoint directory."""
    out = Path(checkpoint)
    manifest = read_manifest(out)
    skeleton = build_skeleton(out, _RestSource(out), allow_missing=("lm_head.weight",))
    blocks = []
    for index in range(manifest["num_blocks"]):
        tensors = load_file(str(layer_file(out, index)))
        meta = manifest["layers"][str(index)]
        quantized = {name: qlinear_from_tensors(tensors, name, m) for name, m in meta.items()}
        plain = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[0] not in quantized}
        block = build_block(skeleton, index, {**plain, **_linear_placeholders(skeleton, index, quantized)})
        for name, module in quantized.items():
            parent, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, child, module)
        blocks.append(block)
    parent, child = skeleton.layers_path.rsplit(".", 1)
    setattr(skeleton.model.get_submodule(parent), child, nn.ModuleList(blocks))
    if manifest.get("lm_head"):
        rest = load_file(str(out / "rest.safetensors"))
        skeleton.model.set_output_embeddings(qlinear_from_tensors(rest, "lm_head", manifest["lm_head"]))
    return skeleton.model.eval()


def _linear_placeholders(skeleton, index: int, quantized: dict) -> dict:
    """Stand-in float tensors for the linears about to be replaced (load_state_dict wants them)."""
    import torch

    out = {}
    for name, module in quantized.items():
        out[f"{name}.weight"] = torch.empty(module.out_features, module.in_features)
        if module.bias is not None:
            out[f"{name}.bias"] = torch.empty(module.out_features)
    return out
