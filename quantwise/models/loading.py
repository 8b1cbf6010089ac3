"""The one strict way a full-precision model is loaded for evaluation, benchmarks and sensitivity.

transformers' `from_pretrained` fills whatever the weights lack with fresh random values and only
warns, and loads pickle files without asking; a score of such a model looks like any other. Here
the model is assembled from its config block by block (the path the quantize pipeline and the
checkpoint loader take), so every tensor the architecture expects must be present with its shape,
none may be left over, none may hold NaN/Inf, and pickle needs the caller's opt-in.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .source import TensorSource, resolve_model_dir


def load_model(model: str | Path, allow_pickle: bool = False) -> nn.Module:
    """A causal LM in float32, eval mode, from a model directory, .gguf file or short name."""
    from ..pipeline.skeleton import build_block, build_skeleton

    model_dir = resolve_model_dir(model)
    source = TensorSource(model_dir, allow_pickle)
    skeleton = build_skeleton(model_dir, source)
    prefix = skeleton.layers_path + "."
    blocks = [build_block(skeleton, index, source.with_prefix(f"{prefix}{index}."))
              for index in range(len(skeleton.recorders))]
    parent, child = skeleton.layers_path.rsplit(".", 1)
    setattr(skeleton.model.get_submodule(parent), child, nn.ModuleList(blocks))
    return skeleton.model.eval()
