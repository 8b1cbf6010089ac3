"""The quantized checkpoint on disk, written so that a crash never leaves something that looks complete.

  OUT/quantwise.json            written last: its presence means the checkpoint is complete
  OUT/config.json, tokenizer*   copied from the source model
  OUT/rest.safetensors          embeddings, final norm, lm_head (high precision)
  OUT/layers/layer_NNNN.safetensors   one decoder block: packed linears + its other tensors
  OUT/.work/                    resume state while running (removed at the end)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

MANIFEST = "quantwise.json"
FORMAT_VERSION = 1


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def atomic_write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def layer_file(out_dir: Path, index: int) -> Path:
    return out_dir / "layers" / f"layer_{index:04d}.safetensors"


def copy_model_files(model_dir: Path, out_dir: Path) -> None:
    """config.json and tokenizer files travel with the checkpoint so it loads on its own."""
    for file in Path(model_dir).iterdir():
        if file.is_file() and (file.name == "config.json" or file.name.startswith(("tokenizer", "special_tokens",
                                                                                   "generation_config"))):
            shutil.copyfile(file, out_dir / file.name)


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{out_dir} is not a complete quantwise checkpoint (no {MANIFEST})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{out_dir}: checkpoint format {manifest.get('format_version')} is not supported "
                         f"(this quantwise reads {FORMAT_VERSION})")
    return manifest
