"""Exporters: a quantwise checkpoint written in a format a serving engine loads.

Each exporter is one module with NAME, ENGINES and `write(ckpt, out, options)`, which refuses
what its engines cannot load (ExportError, one line: why and what to do) before anything is
written. Adding a format is one module plus one line in EXPORTERS.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import staged_directory
from ..native import NativeCheckpoint
from . import awq, compressed_tensors, gguf, gptq
from .base import ExportError, ExportOptions

EXPORTERS = {module.NAME: module for module in (compressed_tensors, gptq, awq, gguf)}


def export(checkpoint: str | Path, to: str, out: str | Path, options: ExportOptions | None = None,
           overwrite: bool = False) -> dict:
    """Write `checkpoint` (a quantwise checkpoint directory) as format `to` into `out`; the
    directory appears complete or not at all."""
    if to not in EXPORTERS:
        raise ExportError(f"unknown export format {to!r}; choose one of {', '.join(EXPORTERS)}")
    ckpt = NativeCheckpoint.open(checkpoint)
    with staged_directory(out, overwrite) as staging:
        result = EXPORTERS[to].write(ckpt, staging, options or ExportOptions())
    return {"format": to, "out": str(out), "engines": EXPORTERS[to].ENGINES, **(result or {})}


__all__ = ["EXPORTERS", "ExportError", "ExportOptions", "export"]
