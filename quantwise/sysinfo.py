"""Process facts used in reports."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
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


def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX tiles), where
    torch's bf16 GEMMs run ~4x as fast as float32 (measured on an AVX512-BF16 EPYC, 2 threads: 790-810
    against 190-210 GFLOPS); without them nothing says bf16 would be faster, so float32 is kept."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS) in MiB; 0 where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _glibc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def return_freed_memory() -> None:
    """Serve allocations above 1 MiB with mmap so freed tensors go back to the OS at once: glibc
    otherwise keeps them in the heap and the process's RSS only ever grows. For loading, where
    each tensor is freed once; compute loops pay a page fault per 4 KiB of every new tensor this
    way (`reuse_freed_memory`)."""
    lib = _glibc()
    if lib is not None:
        lib.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def reuse_freed_memory() -> None:
    """Keep freed tensors up to 32 MiB (glibc's largest threshold) in the heap for the next ones:
    a forward pass allocates the same shapes again and again, and with mmap every one was zeroed
    and faulted in afresh (measured: 184 s of 652 s CPU in system time for SmolLM2 GPTQ). Call
    `trim_heap` between units of work to give the heap's free pages back."""
    lib = _glibc()
    if lib is not None:
        lib.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        lib.mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def heap_free_mb() -> float | None:
    """Free bytes glibc's heap holds (mallinfo2's fordblks) in MiB; None without glibc >= 2.33."""
    import ctypes

    lib = _glibc()
    if lib is None or not hasattr(lib, "mallinfo2"):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    lib.mallinfo2.restype = MallInfo2
    return lib.mallinfo2().fordblks / 2**20


def trim_heap(keep_mb: float = 0.0) -> None:
    """Return the heap's free pages to the OS (malloc_trim), e.g. after each decoder block, unless
    it holds no more than `keep_mb` free: those pages are reused by the next block, and trimming
    them only to fault them in again cost SmolLM2's GPTQ 6 s of its 101 s (9 s of system time)."""
    lib = _glibc()
    if lib is None:
        return
    free = heap_free_mb()
    if free is None or free > keep_mb:
        lib.malloc_trim(0)


@dataclass(frozen=True)
class CpuSnapshot:
    """Host CPU facts at one instant, for `other_cores` between two of them."""

    wall_s: float        # time.monotonic()
    busy_s: float        # CPU seconds every core has spent busy since boot (/proc/stat); -1 if unknown
    own_s: float         # CPU seconds this process has used (all its threads)
    load_1min: float     # the 1-minute load average (0 where the OS has none)


def cpu_snapshot() -> CpuSnapshot:
    """Now's CpuSnapshot. /proc/stat is read for busy time because the load average is damped
    over a minute and counts this process's own threads, so it cannot say who was busy during
    a few seconds of timing."""
    busy = -1.0
    stat = Path("/proc/stat")
    if stat.exists():
        fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        guest = sum(fields[8:10])  # already counted inside user and nice
        busy = (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")
    times = os.times()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return CpuSnapshot(time.monotonic(), busy, times.user + times.system, load)


def other_cores(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Cores other processes kept busy, on average, between two snapshots; without /proc/stat,
    the load average less this process's own share."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    own = (after.own_s - before.own_s) / wall
    if before.busy_s < 0 or after.busy_s < 0:
        return max(0.0, max(before.load_1min, after.load_1min) - own)
    return max(0.0, (after.busy_s - before.busy_s) / wall - own)


def available_memory_mb() -> float | None:
    """Memory the kernel could give this process without swapping (MemAvailable), in MiB; None
    where /proc/meminfo is missing (then nothing is refused for lack of memory)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return None
