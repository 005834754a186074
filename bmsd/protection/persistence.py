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
from bmsd.system.statefile import read_state, set_aside, write_state

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


# Far beyond any real count; bounds what a damaged file can put in metrics and reports.
_MAX_SET_COUNT = 2**31 - 1


def _record(value: object) -> dict[str, float | int | None] | None:
    """A latched entry as :func:`latched_payload` writes it, or None if it is not one."""
    if not isinstance(value, dict) or set(value) != {"set_count", "value_at_set"}:
        return None
    set_count = value["set_count"]
    if isinstance(set_count, bool) or not isinstance(set_count, int):
        return None
    if not 1 <= set_count <= _MAX_SET_COUNT:
        return None
    value_at_set = value["value_at_set"]
    if value_at_set is None:
        return {"set_count": set_count, "value_at_set": None}
    if isinstance(value_at_set, bool) or not isinstance(value_at_set, (int, float)):
        return None
    try:
        number = float(value_at_set)
    except OverflowError:  # a 400-digit int
        return None
    if not math.isfinite(number):
        return None
    return {"set_count": set_count, "value_at_set": number}


class LatchedFaultStore:
    """Keeps the on-disk copy of the latched set equal to the controller's."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self._written: frozenset[str] | None = None

    def load(self) -> tuple[Latched, str]:
        """The persisted latched faults and a problem description ("" when fine)."""
        # Kept in place: until the daemon's first tick writes the latched set (with
        # latched_faults_lost), a restart must find the file damaged again, not missing.
        result = read_state(self.path, KIND, VERSION, keep_bad_in_place=True)
        if result.payload is not None:
            # No table at all is damage too: our writer always writes one, if empty.
            latched = result.payload.get("latched")
            if not isinstance(latched, dict):
                set_aside(self.path, copy=True)
                return {}, "corrupt (no latched table)"
            good = {key: record for key, value in latched.items() if (record := _record(value))}
            bad = sorted(set(latched) - set(good))
            if bad:
                # A checksum proves the bytes, not their sense: an entry we cannot read may
                # have been a latched fatal fault. Keep the readable ones latched, report the
                # file damaged (start in FAULT) and keep it for the post-mortem.
                set_aside(self.path, copy=True)
                shown = ", ".join(repr(key)[:60] for key in bad[:5])
                more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
                return good, f"corrupt (unreadable latched entries: {shown}{more})"
            self._written = frozenset(good)
            return good, ""
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
