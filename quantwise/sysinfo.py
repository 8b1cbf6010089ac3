"""Process facts used in reports."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    Linux's VmHWM belongs to the process image; ru_maxrss can carry the parent's peak into a
    child started with fork + exec, so a subprocess would report its parent's memory."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS) in MiB; 0 where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def return_freed_memory() -> None:
    """Serve allocations above 1 MiB with mmap so freed activations go back to the OS at once:
    glibc otherwise keeps them in the heap and the process's RSS only ever grows."""
    import contextlib
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
            ctypes.CDLL(name).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def available_memory_mb() -> float | None:
    """Memory the kernel could give this process without swapping (MemAvailable), in MiB; None
    where /proc/meminfo is missing (then nothing is refused for lack of memory)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return None
