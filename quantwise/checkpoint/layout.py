"""Where things are in a quantwise checkpoint directory.

  OUT/quantwise.json                  the manifest, written last: its presence means complete
  OUT/config.json, tokenizer*         copied from the source model
  OUT/rest.safetensors                embeddings, final norm, lm_head
  OUT/layers/layer_NNNN.safetensors   one decoder block: packed linears + its other tensors
  OUT/.work/                          resume state while running (removed at the end)
"""

from __future__ import annotations

import shutil
from pathlib import Path

MANIFEST = "quantwise.json"
REST = "rest.safetensors"
WORK = ".work"
_MODEL_FILE_PREFIXES = ("tokenizer", "special_tokens", "generation_config", "vocab", "merges", "added_tokens")


def layer_file(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / "layers" / f"layer_{index:04d}.safetensors"


def rest_file(out_dir: Path) -> Path:
    return Path(out_dir) / REST


def is_native_checkpoint(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def model_files(model_dir: Path) -> list[Path]:
    """config.json and the tokenizer files: what a checkpoint needs besides weights to load alone."""
    return sorted(file for file in Path(model_dir).iterdir()
                  if file.is_file() and (file.name == "config.json" or file.name.startswith(_MODEL_FILE_PREFIXES)))


def copy_model_files(model_dir: Path, out_dir: Path, skip: tuple[str, ...] = ()) -> None:
    for file in model_files(model_dir):
        if file.name not in skip:
            shutil.copyfile(file, Path(out_dir) / file.name)
