"""The fault journal: every set, clear and reset, with a freeze frame, in a bounded file.

One JSON line per event, appended to ``fault-journal.jsonl`` in the state directory and
flushed at once. When the file passes ``max_bytes`` it is rotated (``.1`` … ``.N``), so the
journal never fills the disk. ``read_journal`` returns the events oldest first, across the
rotated files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bmsd.model.faults import FaultEvent
from bmsd.model.state import PackState

FILE_NAME = "fault-journal.jsonl"
MAX_BYTES = 1_000_000
KEEP_FILES = 5


def freeze_frame(state: PackState) -> dict[str, Any]:
    """The snapshot summary stored with each event (what the pack looked like then)."""
    snap = state.snapshot
    cells, temps = snap.cell_voltage, snap.temperature
    return {
        "mode": state.mode.value,
        "pack_voltage_v": snap.pack_voltage_v,
        "pack_current_a": snap.pack_current_a,
        "bus_voltage_v": snap.bus_voltage_v,
        "cell_voltage_min_v": None if cells is None else round(cells.min_value, 4),
        "cell_voltage_min_at": None if cells is None else str(cells.min_location),
        "cell_voltage_max_v": None if cells is None else round(cells.max_value, 4),
        "cell_voltage_max_at": None if cells is None else str(cells.max_location),
        "temp_min_c": None if temps is None else round(temps.min_value, 2),
        "temp_max_c": None if temps is None else round(temps.max_value, 2),
        "invalid_cells": snap.invalid_cell_count,
        "contactors": None
        if snap.contactors is None
        else [
            snap.contactors.minus_closed,
            snap.contactors.precharge_closed,
            snap.contactors.plus_closed,
        ],
    }


class FaultJournal:
    """Appends fault events to the bounded, rotated journal."""

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP_FILES) -> None:
        self.path = directory / FILE_NAME
        self._max_bytes = max_bytes
        self._keep = keep

    def append(self, events: tuple[FaultEvent, ...], state: PackState) -> None:
        if not events:
            return
        frame = freeze_frame(state)
        lines = []
        for event in events:
            record = {
                "wall_time": time.time(),
                "time_s": event.time_s,
                "change": event.kind,
                "fault": event.fault_id,
                "level": event.level.label,
                "value": event.value,
                "threshold": event.threshold,
                "message": event.message,
                "freeze_frame": frame,
            }
            lines.append(json.dumps(record, default=str) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _ends_torn(self.path):
            lines.insert(0, "\n")  # a crash mid-line: never glue a new event onto the fragment
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        if self.path.stat().st_size > self._max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        for index in range(self._keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        last = self.path.with_name(f"{self.path.name}.{self._keep + 1}")
        if last.exists():
            last.unlink()


def _ends_torn(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def read_journal(directory: Path, keep: int = KEEP_FILES) -> list[dict[str, Any]]:
    """All journal entries, oldest first; unreadable lines are skipped (a torn last write)."""
    path = directory / FILE_NAME
    files = [path.with_name(f"{path.name}.{index}") for index in range(keep, 0, -1)] + [path]
    records: list[dict[str, Any]] = []
    for file in files:
        if not file.exists():
            continue
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records
