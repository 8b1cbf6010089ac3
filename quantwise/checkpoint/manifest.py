"""The manifest of a quantwise checkpoint: what was quantized, how, from what, into which formats.

Version 2 added `source_hash` (the weights quantized, so a later check can tell that the model
changed since calibration); version 3 `files`, the sha256 of every weight file, checked as each is
read, so a damaged, truncated or swapped layer file is refused instead of run. Versions 1 and 2
still load (without that check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..cache import cache_dir
from .atomic import atomic_write_json, atomic_write_text
from .layout import MANIFEST

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, damaged or from an unsupported version."""


@dataclass
class Manifest:
    model_type: str
    layers_path: str                        # e.g. "model.layers": block i's tensors are "{layers_path}.{i}.*"
    num_blocks: int
    method: dict                            # {"name": ..., "config": {...}}
    layers: dict[str, dict[str, dict]]      # block -> linear -> serialized QuantizedLinear description
    source_model: str = ""
    source_hash: str | None = None          # sha256 over the source's weight files
    format_overrides: dict[str, str] = field(default_factory=dict)
    high_precision: list[str] = field(default_factory=list)
    lm_head: dict | None = None             # description of a quantized lm_head, None when kept in FP
    calibration: dict = field(default_factory=dict)
    relative_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)   # weight file (relative path) -> sha256
    arguments: dict = field(default_factory=dict)          # what the run was asked to do (resume checks it)
    quantwise_version: str = __version__
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: not a quantwise manifest")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise CheckpointError(f"{where}: checkpoint format {version} is not supported "
                                  f"(this quantwise reads {', '.join(map(str, READABLE_VERSIONS))})")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise CheckpointError(f"{where}: manifest lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def full_name(self, block: int, name: str) -> str:
        return f"{self.layers_path}.{block}.{name}"

    def linear_formats(self) -> dict[str, str]:
        """Full linear name -> weight format name, for every quantized linear."""
        formats = {self.full_name(int(b), n): m["weight"]["name"] for b, layer in self.layers.items()
                   for n, m in layer.items()}
        if self.lm_head:
            formats["lm_head"] = self.lm_head["weight"]["name"]
        return formats


def read_manifest(out_dir: str | Path) -> Manifest:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{out_dir} is not a complete quantwise checkpoint (no {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None
    return Manifest.from_json(data, str(path))


def write_manifest(manifest: Manifest, out_dir: str | Path) -> None:
    atomic_write_json(manifest.to_json(), Path(out_dir) / MANIFEST)


def content_hashes(out_dir: str | Path) -> dict[str, str]:
    """sha256 of each weight file of a checkpoint directory, by path relative to it."""
    out_dir = Path(out_dir)
    hashes = {}
    for file in sorted(out_dir.rglob("*.safetensors")):
        relative = file.relative_to(out_dir)
        if relative.parts[0].startswith("."):
            continue  # resume state, not part of the checkpoint
        with file.open("rb") as handle:
            hashes[relative.as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return hashes


def weights_hash(model_dir: str | Path) -> str:
    """sha256 over a model directory's weight files (names and bytes), in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    for file in files:
        digest.update(file.name.encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(file)))
    return digest.hexdigest()


# Files from this size have their digest remembered: a 1 GB source cost 2.4 s of one core in every
# Gemma-3 run (beside the solve, on 2 cores), a 32 GB 8B one a minute on every run and resume.
REMEMBERED_DIGEST_BYTES = 64 * 2**20


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex). A large file's digest is remembered under the cache directory,
    keyed by its path, device, inode, size, mtime and ctime: rewriting or replacing the file changes
    the key (ctime cannot be set back, as mtime can), so a stale digest is never returned."""
    stat = path.stat()
    if stat.st_size < REMEMBERED_DIGEST_BYTES:
        return _sha256(path)
    identity = f"{path.resolve()}\0{stat.st_dev}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}"
    entry = cache_dir("digests") / hashlib.sha256(identity.encode()).hexdigest()[:32]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        remembered = entry.read_text(encoding="ascii").strip()
        if len(remembered) == 64 and all(c in "0123456789abcdef" for c in remembered):
            return remembered
    digest = _sha256(path)
    with contextlib.suppress(OSError):  # a read-only cache costs the next run a re-read, nothing else
        atomic_write_text(entry, digest)
    return digest


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
