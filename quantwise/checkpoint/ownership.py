"""An output directory belongs to one run at a time, and only to runs of the same job.

Two runs writing one directory at once would interleave their layer files under one manifest; a
run started in a directory that holds another checkpoint would leave that checkpoint's stale
layers beside its own. So a run takes an exclusive lock (released by the kernel when the process
ends, however it ends) and accepts the directory only when it is empty, or holds this same job
(complete, or interrupted and resumable), or the user asked to `overwrite` it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .atomic import remove_interrupted_writes
from .layout import MANIFEST, WORK

LOCK = ".quantwise.lock"
PROGRESS = "progress.json"


class OutputDirError(ValueError):
    """The output directory is busy or holds something this run must not write over."""


def _take_lock(out: Path):
    handle = (out / LOCK).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OutputDirError(f"{out} is being written by another quantwise run (pid {holder}); wait for it to "
                             "finish or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _recorded_arguments(out: Path) -> dict | None:
    """The arguments of the job whose files are in `out` (complete or interrupted), if any."""
    for path in (out / MANIFEST, out / WORK / PROGRESS):
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8")).get("arguments") or {}
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                return {}
    return None


def _differences(old: dict, new: dict) -> str:
    changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return ", ".join(changed) if changed else "unknown arguments (written by an older quantwise)"


def _clear(out: Path) -> None:
    for entry in out.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def claim_output(out: str | Path, arguments: dict, overwrite: bool = False) -> Iterator[Path]:
    """Hold `out` for the duration of a run of the job described by `arguments` (JSON-able)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(out)
    try:
        others = [entry for entry in out.iterdir() if entry.name != LOCK]
        if overwrite:
            _clear(out)
        elif others:
            recorded = _recorded_arguments(out)
            if recorded is None:
                raise OutputDirError(f"{out} holds files that are not a quantwise run's ({others[0].name}, ...); "
                                     "choose an empty --out or pass --overwrite to clear it")
            if recorded != arguments:
                raise OutputDirError(f"{out} holds a run with different arguments ({_differences(recorded, arguments)}"
                                     "); repeat that run's command to resume it, or pass --overwrite to replace it")
            remove_interrupted_writes(out)  # the lock says their writer is dead
        yield out
    finally:
        lock.close()
