"""Importers: checkpoints made by other tools (llm-compressor, GPTQModel, AutoAWQ, llama.cpp)
read into quantwise checkpoints, keeping their integer codes packed (never a dequantized copy),
so eval, bench, inspect and sensitivity measure them on the same kernels as quantwise's own.

Each importer is one module with NAME, `detect(quantization_config)` (Hugging Face formats) and
`linear(prefix, tensors, quantization_config)`; GGUF has its own reader. Imported checkpoints are
cached by the content hash of the source, so a changed file is imported again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ...cache import cache_dir
from ..atomic import staged_directory
from ..layout import is_native_checkpoint
from ..manifest import file_sha256, weights_hash
from . import awq, compressed_tensors, gguf, gptq
from .base import ImportError_, NativeWriter, SafetensorsDir, check_linear, expected_shapes, read_config, split_by_block

HF_IMPORTERS = {module.NAME: module for module in (compressed_tensors, gptq, awq)}


def detect(path: str | Path) -> str | None:
    """The format of an external quantized checkpoint, or None for anything else."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return gguf.NAME if gguf.architecture(path) in gguf.ARCHITECTURES else None
    if is_native_checkpoint(path) or not (path / "config.json").is_file():
        return None
    qconfig = quantization_config(path)
    if not qconfig:
        return None
    for name, module in HF_IMPORTERS.items():
        if module.detect(qconfig):
            return name
    raise ImportError_(f"{path}: quantization_config method {qconfig.get('quant_method')!r} is not read by quantwise "
                       f"(it reads {', '.join([*HF_IMPORTERS, gguf.NAME])})")


def quantization_config(path: Path) -> dict | None:
    """config.json's quantization_config, or AutoGPTQ's separate quantize_config.json."""
    qconfig = read_config(path).get("quantization_config")
    if not qconfig and (path / "quantize_config.json").is_file():
        import json

        qconfig = {"quant_method": "gptq", **json.loads((path / "quantize_config.json").read_text(encoding="utf-8"))}
    return qconfig


def _import_hf(path: Path, out: Path, importer) -> None:
    config = read_config(path)
    qconfig = quantization_config(path)
    tensors = SafetensorsDir(path)
    layers, blocks, rest_names = split_by_block(tensors.names())
    text = config.get("text_config") or config
    expected = expected_shapes(path)
    writer = NativeWriter(out, layers, str(path), {"name": f"imported {importer.NAME}", "config": qconfig})
    for index in sorted(blocks):
        names = blocks[index]
        prefixes = sorted({n.rsplit(".", 1)[0] for n in names if n.endswith("." + importer.MARKER)})
        linears = {}
        for prefix in prefixes:
            full = f"{layers}.{index}.{prefix}"
            try:
                linears[prefix] = importer.linear(full, tensors, qconfig)
            except (RuntimeError, IndexError) as exc:  # tensors that do not unpack as the config says
                raise ImportError_(f"{path}: {full} does not read as {importer.NAME} ({exc})") from None
            check_linear(path, full, linears[prefix], expected)
        plain = {n: tensors.get(f"{layers}.{index}.{n}") for n in names if n.rsplit(".", 1)[0] not in linears}
        writer.block(index, linears, plain)
    rest = {}
    for name in rest_names:
        owner = name.rsplit(".", 1)[0]
        if f"{owner}.{importer.MARKER}" in tensors.where:  # a quantized lm_head: kept exact, in fp32
            if name.endswith("." + importer.MARKER):
                rest[f"{owner}.weight"] = importer.linear(owner, tensors, qconfig).dense_weight()
            continue
        rest[name] = tensors.get(name)
    writer.finish(rest, config, path, text.get("model_type", config.get("model_type")))


def import_checkpoint(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Read an external checkpoint into a quantwise checkpoint at `out`."""
    path = Path(path)
    fmt = detect(path)
    if fmt is None:
        raise ImportError_(f"{path} is not a compressed-tensors, GPTQ, AWQ or GGUF checkpoint")
    with staged_directory(out, overwrite) as staging:
        if fmt == gguf.NAME:
            gguf.import_gguf(path, staging)
        else:
            _import_hf(path, staging, HF_IMPORTERS[fmt])
    return Path(out)


def as_native(path: str | Path) -> Path:
    """A quantwise checkpoint for `path`: itself when native, else its import (cached by content)."""
    path = Path(path)
    if is_native_checkpoint(path):
        return path
    fmt = detect(path)
    if fmt is None:
        raise ImportError_(f"{path} is not a quantized checkpoint quantwise reads")
    # keyed by the weights and by what says how to read them
    parts = weights_hash(path) + file_sha256(path / "config.json") if path.is_dir() else file_sha256(path)
    digest = hashlib.sha256(parts.encode()).hexdigest()
    out = cache_dir("imported") / f"{fmt}-{path.name}-{digest[:16]}"
    if not is_native_checkpoint(out):
        import_checkpoint(path, out, overwrite=True)
    return out


__all__ = ["HF_IMPORTERS", "ImportError_", "as_native", "detect", "import_checkpoint"]
