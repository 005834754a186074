"""Prometheus collector of the C heap's figures (see :mod:`bmsd.system.heap`).

Read from the :class:`HeapKeeper` at scrape time: the figures it measured before its newest
trim, so a scrape never walks the allocator's lists itself. Absent until the first trim and on
a C library without the calls. Families declared once in :data:`FAMILIES` for docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bmsd.publish.family import FamilyDoc
from bmsd.system.heap import HeapKeeper

IN_USE = FamilyDoc(
    "bmsd_heap_in_use_bytes",
    "gauge",
    (),
    "C heap (glibc malloc, all arenas): bytes allocated, before the newest trim. Growth that "
    "goes on is a leak",
)
FREE = FamilyDoc(
    "bmsd_heap_free_bytes",
    "gauge",
    (),
    "C heap: free bytes kept for reuse, before the newest trim (fragmentation); the trim gives "
    "their whole pages back to the kernel",
)
HEAP = FamilyDoc(
    "bmsd_heap_bytes",
    "gauge",
    (),
    "C heap: bytes taken from the kernel for the heaps, free chunks included, before the "
    "newest trim",
)
TRIMS = FamilyDoc(
    "bmsd_heap_trims_total",
    "counter",
    (),
    "Trims of the C heap (malloc_trim, every service.heap_trim_interval_s)",
)
TRIM_SECONDS = FamilyDoc(
    "bmsd_heap_trim_seconds_total", "counter", (), "Time spent trimming the C heap"
)

FAMILIES: tuple[FamilyDoc, ...] = (IN_USE, FREE, HEAP, TRIMS, TRIM_SECONDS)


class HeapCollector(Collector):
    """Exposes one HeapKeeper's figures."""

    def __init__(self, keeper: HeapKeeper) -> None:
        self._keeper = keeper

    def collect(self) -> Iterator[Metric]:
        figures = self._keeper.figures
        if figures.usage is None:
            return
        yield IN_USE.single(float(figures.usage.in_use_bytes))
        yield FREE.single(float(figures.usage.free_bytes))
        yield HEAP.single(float(figures.usage.heap_bytes))
        yield TRIMS.single(float(figures.trims))
        yield TRIM_SECONDS.single(figures.trim_seconds_total)
