"""Checkpoints: quantwise's own format (layout, manifest, reader, loader), atomic writes, and the
registries of exporters to and importers from the formats serving engines load."""

from .layout import MANIFEST, is_native_checkpoint, layer_file
from .manifest import FORMAT_VERSION, CheckpointError, Manifest, read_manifest, write_manifest
from .native import NativeCheckpoint, load

__all__ = ["MANIFEST", "FORMAT_VERSION", "CheckpointError", "Manifest", "NativeCheckpoint", "is_native_checkpoint",
           "layer_file", "load", "read_manifest", "write_manifest"]
