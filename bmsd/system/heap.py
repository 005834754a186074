"""The C library's heap: its figures for the metrics, and giving its free pages back.

Python keeps its small objects in arenas of its own; larger ones, and whatever C libraries
allocate, come from the C library's ``malloc``. glibc keeps freed memory for reuse: a free
chunk inside its heap stays resident until something reuses it, and every thread that
allocates gets an arena of its own, with its own free chunks. ``malloc_trim(0)`` hands every
whole free page of every arena back to the kernel (inside the heap too, not only at its top,
since glibc 2.8). On the soak's load one trim gave back about 1 MiB. CPython's own object
arenas are out of its reach, so the systemd unit sets ``PYTHONMALLOC=malloc``: Python's
objects then come from ``malloc`` too, and the trim reaches them (docs/reliability.md,
section 5, "The heap trim").

:class:`HeapKeeper` does that at ``service.heap_trim_interval_s`` and keeps the allocator's
own figures (``mallinfo2``, measured just before each trim) for the metrics: memory in use
that grows is a leak; free memory that grows is fragmentation.

Only glibc has these calls. Elsewhere (musl, or a glibc before 2.33 without ``mallinfo2``)
:func:`find_glibc_heap` returns None and the daemon runs without them.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h), every field a size_t, summed over all arenas."""

    _fields_ = [
        ("arena", ctypes.c_size_t),  # bytes taken from the kernel for the heaps (brk/mmap)
        ("ordblks", ctypes.c_size_t),  # free chunks
        ("smblks", ctypes.c_size_t),  # free fastbin chunks
        ("hblks", ctypes.c_size_t),  # blocks mapped on their own (large allocations)
        ("hblkhd", ctypes.c_size_t),  # bytes in those blocks
        ("usmblks", ctypes.c_size_t),  # unused (always 0)
        ("fsmblks", ctypes.c_size_t),  # bytes in free fastbin chunks
        ("uordblks", ctypes.c_size_t),  # bytes allocated in the heaps
        ("fordblks", ctypes.c_size_t),  # bytes free in the heaps
        ("keepcost", ctypes.c_size_t),  # free bytes at the top of the main heap
    ]


class HeapUsage(NamedTuple):
    """The allocator's view of its memory, in bytes."""

    in_use_bytes: int  # allocated and not freed: in the heaps plus blocks mapped on their own
    free_bytes: int  # free chunks kept in the heaps for reuse
    heap_bytes: int  # taken from the kernel for the heaps (free chunks included)


class GlibcHeap:
    """glibc's ``mallinfo2`` and ``malloc_trim``, called through ctypes."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._mallinfo2 = libc.mallinfo2
        self._mallinfo2.argtypes = []
        self._mallinfo2.restype = _MallInfo2
        self._malloc_trim = libc.malloc_trim
        self._malloc_trim.argtypes = [ctypes.c_size_t]
        self._malloc_trim.restype = ctypes.c_int

    def usage(self) -> HeapUsage:
        info = self._mallinfo2()
        return HeapUsage(
            in_use_bytes=int(info.uordblks) + int(info.hblkhd),
            free_bytes=int(info.fordblks),
            heap_bytes=int(info.arena),
        )

    def trim(self) -> bool:
        """Give every whole free page back to the kernel; whether any was given back.

        ctypes lets go of the GIL for the call, so Python threads run meanwhile; one that
        allocates from an arena being walked waits until that arena's walk is done.
        """
        return bool(self._malloc_trim(0))


def find_glibc_heap(library: str | None = None) -> GlibcHeap | None:
    """The process's glibc allocator, or None when the C library is not a glibc ≥ 2.33.

    ``library``: a shared library to look the calls up in; None, the process itself.
    """
    try:
        return GlibcHeap(ctypes.CDLL(library))
    except (OSError, AttributeError):
        return None


@dataclass(slots=True)
class HeapFigures:
    """What the metrics serve: the newest figures and the trims so far."""

    usage: HeapUsage | None = None  # measured before the newest trim
    trims: int = 0
    trim_seconds_total: float = 0.0


class HeapKeeper:
    """Measures and trims the heap; called from a worker thread, not from the event loop.

    Both calls lock each arena in turn while they walk it. A tick that must allocate from the
    arena being walked waits for that walk (on the soak's heap a whole trim takes about
    0.2 ms), hence the interval of at least a second.
    """

    def __init__(self, heap: GlibcHeap) -> None:
        self._heap = heap
        self.figures = HeapFigures()

    def measure_and_trim(self) -> HeapUsage:
        usage = self._heap.usage()
        started_s = time.monotonic()
        self._heap.trim()
        took_s = time.monotonic() - started_s
        # Replaced whole: a scrape in another thread sees the old figures or the new, never a mix.
        self.figures = HeapFigures(
            usage, self.figures.trims + 1, self.figures.trim_seconds_total + took_s
        )
        log.debug(
            "heap: %d B in use, %d B free before trimming (%.1f ms)",
            usage.in_use_bytes,
            usage.free_bytes,
            took_s * 1000,
        )
        return usage
