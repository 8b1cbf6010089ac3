"""Opening a GGUF file safely: gguf's reader trusts the header's counts and lengths, so a damaged
file fails deep inside it (struct/numpy errors, huge allocations) or, worse, yields tensors cut
short by the end of the file. Here the header is checked against the file's size first, every
tensor's bytes must lie inside the file, and any reader failure becomes one line naming the file.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

_MAGIC = b"GGUF"
_MIN_KV_BYTES = 8 + 1 + 4 + 1          # key length, 1-char key, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, 1-char name, dims, 1 dim, type, offset


class GGUFFileError(ValueError):
    """A file that is not a GGUF file, or a damaged one."""


def check_header(path: Path) -> tuple[int, int]:
    """(tensor count, key count) from the header, refused when they cannot fit in the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:4] != _MAGIC:
        raise GGUFFileError(f"{path}: not a GGUF file (no GGUF header)")
    version, tensors, keys = struct.unpack("<IQQ", head[4:])
    if version not in (2, 3):
        raise GGUFFileError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    if tensors * _MIN_TENSOR_INFO_BYTES + keys * _MIN_KV_BYTES > size:
        raise GGUFFileError(f"{path}: damaged GGUF header ({tensors} tensors and {keys} keys cannot fit in "
                            f"{size} bytes)")
    return tensors, keys


def open_gguf(path: str | Path):
    """gguf.GGUFReader over a checked file: every tensor's data within the file."""
    import gguf

    path = Path(path)
    check_header(path)
    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError, TypeError, OverflowError, MemoryError, UnicodeDecodeError,
            struct.error) as exc:
        raise GGUFFileError(f"{path}: damaged GGUF file ({type(exc).__name__}: {exc})") from None
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size or tensor.data.nbytes != int(tensor.n_bytes):
            raise GGUFFileError(f"{path}: tensor {tensor.name} ends at byte {end} but the file has {size} "
                                "(truncated or damaged)")
    return reader


def gguf_fingerprint(path: Path) -> str:
    """Size, modification time and a hash of the first MiB (header and tensor table): a cache made
    for one file is never used for another that merely shares its name."""
    stat = path.stat()
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:".encode() + head)
    return digest.hexdigest()[:16]
