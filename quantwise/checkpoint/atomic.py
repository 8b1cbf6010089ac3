"""Writing so that a crash never leaves a file or directory that looks complete.

Every writer in quantwise goes through these: the bytes land in a temporary sibling first and are
renamed over the target (a rename within one filesystem is atomic on POSIX), so a reader sees the
old content or the new, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Temporary siblings: ".NAME.RANDOM.tmp" while a file is written, ".NAME.RANDOM.probe" while a
# directory is tried for writing.
_TEMP_PREFIX, _TEMP_SUFFIXES = ".", (".tmp", ".probe")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to produce the file, then rename it to `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIXES[0], dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        # mkstemp creates 0600; give the file the mode any other tool's file would get
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":  # disk full, permissions
            raise OSError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(data: dict, path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def atomic_save_tensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    contiguous = {name: tensor.contiguous() for name, tensor in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


def ensure_writable(path: Path) -> None:
    """Refuse a file that could not be written, by trying: a read-only directory, a missing
    permission or a path under a file fail now, in one line naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f"{_TEMP_PREFIX}{path.name}.",
                                         suffix=_TEMP_SUFFIXES[1]):
            pass
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None


def remove_interrupted_writes(directory: Path) -> list[Path]:
    """Delete the temporary siblings a killed writer left under `directory` (SIGKILL skips the
    cleanup above): a resumed run would otherwise finish with a half-written stray in its checkpoint.
    Only for a directory this process holds (no other writer can be mid-write). Returns them."""
    stale = [p for p in directory.rglob(f"{_TEMP_PREFIX}*") if p.is_file() and p.name.endswith(_TEMP_SUFFIXES)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def staged_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; on success it replaces `out` in one rename.

    On any error the staging directory is removed and `out` is untouched. An existing `out` is
    refused unless `overwrite`, so nobody's files are lost by a mistyped path.
    """
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
