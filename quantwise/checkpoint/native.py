"""quantwise's own checkpoint format: read it block by block, or load it as a runnable model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from torch import nn

from ..models.source import require_finite
from ..runtime.qlinear import QuantizedLinear
from .layout import MANIFEST, layer_file, rest_file
from .manifest import CheckpointError, Manifest, read_manifest
from .serialize import qlinear_from_tensors


def load_verified(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors, hashed as they are read and compared with the manifest's
    record, and refused when a floating-point tensor (weights, scales) holds NaN or Inf."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CheckpointError(f"{path}: contents differ from what the manifest recorded (damaged, truncated or "
                              "replaced since it was written); quantize again")
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    for name, tensor in tensors.items():
        try:
            require_finite(tensor, name, path)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
    return tensors


@dataclass
class Block:
    index: int
    linears: dict[str, QuantizedLinear]     # block-relative name -> quantized linear
    tensors: dict[str, torch.Tensor]        # block-relative name -> the block's other tensors


@dataclass
class NativeCheckpoint:
    """A complete quantwise checkpoint, read lazily: one block's tensors in memory at a time."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path) -> NativeCheckpoint:
        return cls(Path(path), read_manifest(path))

    def config(self) -> dict:
        try:
            return json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.path}/config.json: {exc}") from None

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        return load_verified(path, self.manifest.files.get(path.relative_to(self.path).as_posix()))

    def verify(self) -> int:
        """Read every weight file, checking its hash and values; returns how many were checked."""
        recorded = set(self.manifest.files)
        present = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*.safetensors")
                   if not p.relative_to(self.path).parts[0].startswith(".")}
        if recorded and recorded != present:
            missing, extra = sorted(recorded - present), sorted(present - recorded)
            raise CheckpointError(f"{self.path}: files differ from the manifest (missing {missing[:3]}, "
                                  f"not in it {extra[:3]})")
        for index in range(self.manifest.num_blocks):
            self.block(index)
        self.rest()
        return len(present)

    def block(self, index: int) -> Block:
        tensors = self._load(layer_file(self.path, index))
        meta = self.manifest.layers.get(str(index))
        if meta is None:
            raise CheckpointError(f"{self.path}: the manifest does not describe block {index}")
        try:
            linears = {name: qlinear_from_tensors(tensors, name, m) for name, m in meta.items()}
        except KeyError as exc:
            raise CheckpointError(f"{layer_file(self.path, index)} lacks tensor {exc}") from None
        except ValueError as exc:
            raise CheckpointError(f"{self.path / MANIFEST} disagrees with {layer_file(self.path, index).name}: "
                                  f"{exc}") from None
        plain = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[0] not in linears}
        return Block(index, linears, plain)

    def blocks(self) -> Iterator[Block]:
        for index in range(self.manifest.num_blocks):
            yield self.block(index)

    def rest(self) -> tuple[dict[str, torch.Tensor], QuantizedLinear | None]:
        """Tensors outside the blocks (full names), and the quantized lm_head if there is one."""
        tensors = self._load(rest_file(self.path))
        if not self.manifest.lm_head:
            return tensors, None
        head = qlinear_from_tensors(tensors, "lm_head", self.manifest.lm_head)
        return {k: v for k, v in tensors.items() if not k.startswith("lm_head.")}, head


class _RestSource:
    """The checkpoint's rest tensors, read like a model directory by build_skeleton."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._tensors = tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]


def load(checkpoint: str | Path, kernels: bool = True, dtype: torch.dtype | None = None) -> nn.Module:
    """A causal LM (eval mode) from a quantwise checkpoint directory.

    kernels: run quantized linears on the packed low-bit kernels they are served with (the
    default: fast, and no dequantized copy is held); False keeps QuantizedLinear modules that
    compute from a dequantized float32 copy, for debugging and bit-level comparisons.
    dtype: cast the model's floating-point tensors (embeddings, norms), e.g. torch.bfloat16.
    """
    from ..pipeline.skeleton import build_block, build_skeleton
    from ..sysinfo import return_freed_memory, reuse_freed_memory, trim_heap

    return_freed_memory()  # each block's float placeholders are freed as it loads: give them back to the OS
    ckpt = NativeCheckpoint.open(checkpoint)
    rest, head = ckpt.rest()
    skeleton = build_skeleton(ckpt.path, _RestSource(rest), allow_missing=("lm_head.weight",))
    blocks = []
    for block in ckpt.blocks():
        placeholders = {}
        for name, module in block.linears.items():  # load_state_dict wants tensors for the linears
            placeholders[f"{name}.weight"] = torch.empty(module.out_features, module.in_features)
            if module.bias is not None:
                placeholders[f"{name}.bias"] = torch.empty(module.out_features)
        built = build_block(skeleton, block.index, {**block.tensors, **placeholders})
        for name, module in block.linears.items():
            parent, _, child = name.rpartition(".")
            setattr(built.get_submodule(parent) if parent else built, child, module)
        blocks.append(built)
    parent, child = skeleton.layers_path.rsplit(".", 1)
    setattr(skeleton.model.get_submodule(parent), child, nn.ModuleList(blocks))
    if head is not None:
        skeleton.model.set_output_embeddings(head)
    model = skeleton.model.eval()
    if dtype is not None:
        model.to(dtype)
    if kernels:
        from ..runtime.kernels import use_packed_kernels

        use_packed_kernels(model)
    trim_heap()
    reuse_freed_memory()  # what runs the model next allocates the same shapes over and over
    return model
