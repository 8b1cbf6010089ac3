"""What a model costs in memory: parameters and bytes per dtype, bits per weight, size on disk,
and measured peak RSS of loading and of running (in a fresh process, so the numbers are its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..checkpoint.layout import MANIFEST, layer_file
from ..checkpoint.manifest import read_manifest


@dataclass
class MemoryReport:
    path: str
    disk_bytes: int
    tensor_bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    linear_weights: int = 0             # elements of quantized (or plain) decoder linears
    linear_bytes: int = 0               # their stored bytes: packed data + scales + zeros (+ perm)
    linear_bits_per_weight: float = 0.0
    peak_rss_load_mb: float | None = None
    peak_rss_run_mb: float | None = None
    verified_files: int | None = None   # weight files read in full by `inspect --verify`


def inspect_checkpoint(path: Path) -> MemoryReport:
    """Bytes on disk and per dtype; for a quantwise checkpoint, bits per weight of its linears."""
    try:
        return _inspect(Path(path))
    except (SafetensorError, KeyError, TypeError) as exc:  # a damaged header, or a manifest that lies
        raise ValueError(f"{path}: damaged checkpoint ({exc})") from None


def _inspect(path: Path) -> MemoryReport:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    report = MemoryReport(str(path), sum(p.stat().st_size for p in files))
    by_dtype: dict[str, int] = defaultdict(int)
    manifest = read_manifest(path) if (path / MANIFEST).exists() else None
    for file in files:
        if file.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118
                    piece = handle.get_slice(name)
                    count, size = _count_and_bytes(piece)
                    by_dtype[piece.get_dtype()] += size
                    if manifest is None and name.endswith("proj.weight") and ".layers." in name:
                        report.linear_weights += count
                        report.linear_bytes += size
        except SafetensorError as exc:
            raise ValueError(f"{file}: not a readable safetensors file ({exc})") from None
    if manifest is not None:
        for block, linears in manifest.layers.items():
            with safe_open(str(layer_file(path, int(block))), framework="pt") as handle:
                for name, meta in linears.items():
                    report.linear_weights += meta["shape"][0] * meta["shape"][1]
                    for key in handle.keys():  # noqa: SIM118
                        if key.startswith(name + ".") and not key.endswith(".bias"):
                            report.linear_bytes += _count_and_bytes(handle.get_slice(key))[1]
    report.tensor_bytes_by_dtype = dict(by_dtype)
    if report.linear_weights:
        report.linear_bits_per_weight = 8 * report.linear_bytes / report.linear_weights
    return report


def _count_and_bytes(piece) -> tuple[int, int]:
    count = 1
    for dim in piece.get_shape():
        count *= dim
    return count, count * _DTYPE_BYTES.get(piece.get_dtype(), 4)


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}


def measure_rss(model: str, tokens: int = 64, allow_pickle: bool = False) -> tuple[float, float]:
    """Peak RSS (MB) after loading `model` and after one forward of `tokens`, in a fresh process;
    checkpoints as they are served (packed kernels, no dequantized copies)."""
    code = (
        "import json, sys, torch\n"
        "from quantwise.evaluation.memory import load_any\n"
        "from quantwise.sysinfo import peak_rss_mb\n"
        "m = load_any(sys.argv[1], kernels=True, allow_pickle=sys.argv[3] == '1'); a = peak_rss_mb()\n"
        "with torch.no_grad(): m(torch.zeros(1, int(sys.argv[2]), dtype=torch.long))\n"
        "print(json.dumps([a, peak_rss_mb()]))\n")
    done = subprocess.run([sys.executable, "-c", code, str(model), str(tokens), str(int(allow_pickle))],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"could not load {model}: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    load_mb, run_mb = json.loads(done.stdout.strip().splitlines()[-1])
    return load_mb, run_mb


def load_any(model: str, kernels: bool = False, allow_pickle: bool = False):
    """A quantwise checkpoint, another tool's quantized checkpoint (compressed-tensors, GPTQ, AWQ,
    GGUF), or a reference model by directory / short name."""
    from ..checkpoint import is_native_checkpoint, load
    from ..checkpoint.importers import as_native, detect
    from ..models.source import resolve_model_dir

    if is_native_checkpoint(model) or detect(model):  # other tools' checkpoints are read with their codes
        return load(as_native(model), kernels=kernels)
    from ..models.loading import load_model

    return load_model(resolve_model_dir(model), allow_pickle)
