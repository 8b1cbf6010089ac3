"""What importers share: the external checkpoint's tensors by block, integer codes turned into
quantwise's packed QuantizedTensors, and the native checkpoint they are written into."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ... import __version__
from ...formats import Granularity, QuantSpec, affine
from ...formats.integer import from_codes
from ...formats.spec import FormatKind
from ...runtime.qlinear import QuantizedLinear
from ..atomic import atomic_save_tensors, atomic_write_json
from ..layout import copy_model_files, layer_file, rest_file
from ..manifest import CheckpointError, Manifest, content_hashes, weights_hash, write_manifest
from ..serialize import qlinear_to_tensors


class ImportError_(CheckpointError):
    """An external checkpoint quantwise cannot read: the message names the file and the problem."""


def int_linear(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int, group: int | None,
               bias: torch.Tensor | None = None, perm: torch.Tensor | None = None,
               act_spec: QuantSpec | None = None) -> QuantizedLinear:
    """A QuantizedLinear from unsigned codes (out, in), scales (out, groups) and unsigned zero
    points (out, groups); zeros all equal to 2^(bits-1) (or None) make it symmetric."""
    rows, cols = codes.shape
    half = 2 ** (bits - 1)
    symmetric = zeros is None or bool((zeros == half).all())
    granularity = Granularity.CHANNEL if group is None or group >= cols else Granularity.GROUP
    spec = QuantSpec(kind=FormatKind.INT, bits=bits, symmetric=symmetric, granularity=granularity,
                     group_size=group if granularity is Granularity.GROUP else None,
                     scale_dtype=str(scales.dtype).replace("torch.", ""))
    if int(codes.min()) < 0 or int(codes.max()) >= 2**bits:
        raise ImportError_(f"codes outside 0..{2**bits - 1} for {bits}-bit weights")
    qt = from_codes(codes.to(torch.uint8), scales.contiguous(), None if symmetric else zeros.float(), spec,
                    (rows, cols))
    return QuantizedLinear(qt, bias, perm, act_spec)


def affine_linear(codes: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, bits: int, group: int,
                  bias: torch.Tensor | None = None) -> QuantizedLinear:
    """A QuantizedLinear from unsigned codes (out, in) with value = code * scale + offset per group."""
    rows, cols = codes.shape
    spec = QuantSpec(kind=FormatKind.AFFINE, bits=bits, granularity=Granularity.GROUP, group_size=group,
                     scale_dtype=str(scales.dtype).replace("torch.", ""))
    if int(codes.min()) < 0 or int(codes.max()) >= 2**bits:
        raise ImportError_(f"codes outside 0..{2**bits - 1} for {bits}-bit weights")
    qt = affine.from_codes(codes.to(torch.uint8), scales.contiguous(), offsets.contiguous(), spec, (rows, cols))
    return QuantizedLinear(qt, bias)


class SafetensorsDir:
    """Every tensor of a Hugging Face directory's safetensors files, by name, loaded on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.where: dict[str, Path] = {}
        for file in sorted(path.glob("*.safetensors")):
            try:
                with safe_open(str(file), framework="pt") as handle:
                    self.where.update(dict.fromkeys(handle.keys(), file))  # noqa: SIM118
            except (SafetensorError, OSError) as exc:
                raise ImportError_(f"{file}: unreadable safetensors ({exc})") from None
        if not self.where:
            raise ImportError_(f"{path} has no safetensors weights")

    def get(self, name: str) -> torch.Tensor:
        if name not in self.where:
            raise ImportError_(f"{self.path}: tensor {name} is missing")
        with safe_open(str(self.where[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    def names(self) -> list[str]:
        return list(self.where)


_BLOCK = re.compile(r"^(?P<layers>.+\.layers)\.(?P<index>\d+)\.(?P<rest>.+)$")


def split_by_block(names: list[str]) -> tuple[str, dict[int, list[str]], list[str]]:
    """(layers path, {block: [block-relative names]}, names outside the blocks)."""
    blocks: dict[int, list[str]] = {}
    rest, layers = [], None
    for name in names:
        match = _BLOCK.match(name)
        if match:
            layers = match["layers"]
            blocks.setdefault(int(match["index"]), []).append(match["rest"])
        else:
            rest.append(name)
    if layers is None:
        raise ImportError_("no decoder blocks (tensors named *.layers.N.*) in the checkpoint")
    return layers, blocks, rest


@dataclass
class NativeWriter:
    """Writes a quantwise checkpoint block by block (what importers produce)."""

    out: Path
    layers_path: str
    source: str
    method: dict
    source_hash: str | None = None

    def __post_init__(self):
        self.layers: dict[str, dict] = {}

    def block(self, index: int, linears: dict[str, QuantizedLinear], tensors: dict[str, torch.Tensor]) -> None:
        saved, meta = {}, {}
        for name, module in linears.items():
            t, m = qlinear_to_tensors(module, name)
            saved.update(t)
            meta[name] = m
        saved.update({k: v.float() for k, v in tensors.items()})
        atomic_save_tensors(saved, layer_file(self.out, index))
        self.layers[str(index)] = meta

    def finish(self, rest: dict[str, torch.Tensor], config: dict, model_dir: Path, model_type: str) -> Manifest:
        atomic_save_tensors({k: v.float() for k, v in rest.items()}, rest_file(self.out))
        if model_dir.resolve() != self.out.resolve():
            copy_model_files(model_dir, self.out, skip=("config.json",))
        config = {k: v for k, v in config.items() if k != "quantization_config"}
        atomic_write_json(config, self.out / "config.json")
        manifest = Manifest(model_type=model_type, layers_path=self.layers_path, num_blocks=len(self.layers),
                            method=self.method, layers=self.layers, source_model=self.source,
                            source_hash=self.source_hash or weights_hash(model_dir),
                            high_precision=["embeddings", "norms", "lm_head"], quantwise_version=__version__,
                            files=content_hashes(self.out))
        write_manifest(manifest, self.out)
        return manifest


def expected_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape as config.json describes the model (built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, OSError) as exc:
        raise ImportError_(f"{path}/config.json: not a causal LM transformers can build ({exc})") from None
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def check_linear(path: Path, name: str, module: QuantizedLinear, expected: dict[str, tuple[int, ...]]) -> None:
    want = expected.get(f"{name}.weight")
    got = (module.out_features, module.in_features)
    if want is None:
        raise ImportError_(f"{path}: {name} is not a layer of the model config.json describes")
    if tuple(want) != got:
        raise ImportError_(f"{path}: {name} reads as {got[0]}x{got[1]} but config.json says {want[0]}x{want[1]} "
                           "(does quantization_config describe these tensors?)")


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ImportError_(f"{path}/config.json: {exc}") from None
