"""Latched faults on disk: written the moment the latched set changes, read at start.

A latched fatal fault must survive a crash, a ``kill -9`` or a power cut: the daemon comes back
in FAULT with the same faults. The file is written atomically (bmsd.system.statefile) inside
the tick that latched or reset them. A damaged file is reported and, failing safe, the daemon
starts in FAULT with a synthetic ``state_file_damaged`` entry rather than silently without its
latches.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from bmsd.model.faults import FaultState
from bmsd.system.statefile import read_state, write_state

log = logging.getLogger(__name__)

KIND = "latched-faults"
VERSION = 1
FILE_NAME = "latched-faults.json"

Latched = dict[str, dict[str, float | int | None]]


def latched_payload(faults: FaultState) -> Latched:
    return {
        level.key: {
            "set_count": level.set_count,
            # JSON has no infinity: a value beyond every range (a silence) is stored as None.
            "value_at_set": _finite_or_none(level.value_at_set),
        }
        for level in faults.latched()
    }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class LatchedFaultStore:
    """Keeps the on-disk copy of the latched set equal to the controller's."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self._written: frozenset[str] | None = None

    def load(self) -> tuple[Latched, str]:
        """The persisted latched faults and a problem description ("" when fine)."""
        result = read_state(self.path, KIND, VERSION)
        if result.payload is not None:
            latched = result.payload.get("latched", {})
            if isinstance(latched, dict):
                self._written = frozenset(latched)
                return latched, ""
            return {}, "corrupt (no latched table)"
        if result.problem == "no state file yet":
            self._written = frozenset()
            return {}, ""
        return {}, result.problem

    def save_if_changed(self, faults: FaultState) -> bool:
        keys = frozenset(level.key for level in faults.latched())
        if keys == self._written:
            return False
        write_state(self.path, KIND, VERSION, {"latched": latched_payload(faults)})
        self._written = keys
        return True
