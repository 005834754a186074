"""Fault state: pure data describing every (fault id, level) pair at one tick."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class FaultLevel(IntEnum):
    """The three levels of a limit (foxBMS MOL/RSL/MSL); ordered by severity."""

    INFO = 1  # maximum operating limit: reported only
    WARNING = 2  # recommended safety limit: the blocked direction is derated
    FATAL = 3  # maximum safety limit: currents 0, contactors open, latched

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class LevelState:
    """The evaluation state of one level of one fault."""

    fault_id: str
    level: FaultLevel
    counter: int = 0  # debounce up/down counter, 0..debounce_samples
    tripped: bool = False  # debounced condition
    tripped_since: float | None = None
    active: bool = False
    clear_since: float | None = None  # debounced condition gone while active
    latched: bool = False
    set_count: int = 0
    first_set_at: float | None = None
    last_set_at: float | None = None
    value_at_set: float | None = None

    @property
    def key(self) -> str:
        return f"{self.fault_id}.{self.level.label}"


@dataclass(frozen=True, slots=True)
class FaultState:
    """All levels of all enabled faults, in fault-table order."""

    levels: tuple[LevelState, ...]

    def active(self) -> tuple[LevelState, ...]:
        return tuple(level for level in self.levels if level.active)

    def latched(self) -> tuple[LevelState, ...]:
        return tuple(level for level in self.levels if level.latched)

    def worst_level(self) -> FaultLevel | None:
        active = [level.level for level in self.levels if level.active]
        return max(active) if active else None

    @property
    def has_fatal(self) -> bool:
        return any(level.active and level.level is FaultLevel.FATAL for level in self.levels)


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault level was set, cleared or reset (for the journal, the log and publishers)."""

    time_s: float
    kind: str  # "set", "clear", "reset", "reset_refused"
    fault_id: str
    level: FaultLevel
    value: float | None
    threshold: float
    message: str
