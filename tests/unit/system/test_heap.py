"""The C heap's figures and trim, on this machine's real glibc."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.registry import CollectorRegistry

from bmsd.publish.heap import FAMILIES, HeapCollector
from bmsd.system.heap import GlibcHeap, HeapKeeper, find_glibc_heap

BLOCK_BYTES = 64 * 1024  # below glibc's mmap threshold: served from the heap itself
BLOCKS = 1_500  # about 94 MiB


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def heap() -> GlibcHeap:
    found = find_glibc_heap()
    assert found is not None, "Debian's glibc has mallinfo2 and malloc_trim"
    return found


def test_a_library_that_cannot_be_loaded_means_no_heap_calls() -> None:
    assert find_glibc_heap("/nonexistent/libc.so.6") is None


def test_usage_follows_what_is_allocated_and_freed(heap: GlibcHeap) -> None:
    before = heap.usage()
    blocks = [bytearray(BLOCK_BYTES) for _ in range(BLOCKS)]
    allocated = heap.usage()
    assert allocated.in_use_bytes - before.in_use_bytes >= BLOCKS * BLOCK_BYTES
    assert allocated.heap_bytes >= allocated.in_use_bytes - 64 * 1024 * 1024
    del blocks
    freed = heap.usage()
    assert allocated.in_use_bytes - freed.in_use_bytes >= BLOCKS * BLOCK_BYTES


def test_trim_gives_free_pages_inside_the_heap_back(heap: GlibcHeap) -> None:
    blocks = [bytearray(BLOCK_BYTES) for _ in range(BLOCKS)]
    # Allocated after them, it stays above the freed blocks: glibc's own trimming only ever
    # shrinks the heap's top, so without malloc_trim their pages would stay resident.
    pin = bytearray(BLOCK_BYTES)
    del blocks
    free_before_trim = heap.usage().free_bytes
    assert free_before_trim >= BLOCKS * BLOCK_BYTES
    resident_before_trim = _rss_bytes()
    assert heap.trim()
    released = resident_before_trim - _rss_bytes()
    assert released >= 0.8 * BLOCKS * BLOCK_BYTES, f"only {released} B given back"
    del pin


def test_keeper_measures_before_each_trim_and_counts_trims(heap: GlibcHeap) -> None:
    keeper = HeapKeeper(heap)
    assert keeper.figures.usage is None and keeper.figures.trims == 0
    blocks = [bytearray(BLOCK_BYTES) for _ in range(BLOCKS)]
    pin = bytearray(BLOCK_BYTES)
    del blocks
    usage = keeper.measure_and_trim()
    assert usage.free_bytes >= BLOCKS * BLOCK_BYTES  # measured before the trim
    keeper.measure_and_trim()
    assert keeper.figures.trims == 2
    assert keeper.figures.trim_seconds_total > 0
    del pin


def test_collector_serves_nothing_until_the_first_trim(heap: GlibcHeap) -> None:
    keeper = HeapKeeper(heap)
    registry = CollectorRegistry()
    registry.register(HeapCollector(keeper))
    assert registry.get_sample_value("bmsd_heap_in_use_bytes") is None
    usage = keeper.measure_and_trim()
    assert registry.get_sample_value("bmsd_heap_in_use_bytes") == usage.in_use_bytes
    assert registry.get_sample_value("bmsd_heap_free_bytes") == usage.free_bytes
    assert registry.get_sample_value("bmsd_heap_bytes") == usage.heap_bytes
    assert registry.get_sample_value("bmsd_heap_trims_total") == 1
    served = {metric.name for metric in registry.collect()}
    assert served == {family.name.removesuffix("_total") for family in FAMILIES}
