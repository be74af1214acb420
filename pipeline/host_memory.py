"""Keep freed host memory in the process, so that a CPU training step reuses it instead of faulting it in again.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
unmaps it when it is freed. A training step on a CPU allocates and frees several such blocks: the gradient of
a student's word embeddings alone is 30,522 x 384 fp32 values, 47 MB, created and zeroed by every backward.
Each step then pays the kernel for new zeroed pages: a medium-profile student spent 10 of its 77 CPU-seconds
in the kernel. :func:`keep_freed_memory` turns ``mmap`` off for the allocator and stops it trimming the heap,
so freed blocks stay in the heap and the next step reuses them (the distillation went from 49 s to 40 s on
2 cores, with bit-for-bit the same student; ``benchmarks/host_memory.py`` measures it).

Only the allocator's bookkeeping changes, never a value. The process keeps its peak heap until it ends,
which a training process reaches in its first steps anyway. Where the C library is not glibc (macOS, musl),
nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from functools import cache

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest trim threshold mallopt takes (an int)


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version"):
        return None  # musl and other C libraries: no mallopt parameters to set
    return libc


@cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse, once per process; False where that is not possible."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


@dataclass(frozen=True)
class HeapUsage:
    """The main allocator's counters (glibc's ``mallinfo2``), in bytes."""

    arena: int  # taken from the OS with brk
    mapped: int  # taken with mmap, given back when freed
    free: int  # free in the heap, kept for reuse


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def heap_usage() -> HeapUsage | None:
    """The allocator's counters now; None where the C library has no ``mallinfo2`` (not glibc 2.33 or later)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return HeapUsage(info.arena, info.hblkhd, info.fordblks)
