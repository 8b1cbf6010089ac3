"""Calibration hidden states between blocks, in memory or spilled to disk (`--offload-activations`).

On disk, each batch is one safetensors file in a directory named for the block it feeds
(`acts-<block>`), read back one batch at a time: memory holds one batch in and one out instead of
every batch twice. The directory is also the resume state: a run restarted after block i finds
`acts-<i+1>` complete (each file is written atomically, the directory is only used once the
progress file says block i is done).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint.atomic import atomic_save_tensors


class DiskActivations(Sequence):
    """Batches of hidden states (batch, seq, hidden) stored one file per batch, loaded on access."""

    def __init__(self, directory: Path, count: int):
        self.directory, self.count = Path(directory), count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return load_file(str(self.directory / f"batch_{index}.safetensors"))["hidden"]

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("batch_*.safetensors"))


def acts_dir(work: Path, block: int) -> Path:
    return work / f"acts-{block}"


def spill(batches: Iterable[torch.Tensor], directory: Path) -> DiskActivations:
    """Write each batch as it comes (a generator keeps only one in memory)."""
    shutil.rmtree(directory, ignore_errors=True)
    count = 0
    for i, hidden in enumerate(batches):
        atomic_save_tensors({"hidden": hidden.contiguous()}, directory / f"batch_{i}.safetensors")
        count = i + 1
    return DiskActivations(directory, count)


def batch_mb(inputs: Sequence[torch.Tensor]) -> float:
    first = inputs[0]
    return first.numel() * first.element_size() / 2**20
