"""PackState: the control loop's output for one tick, read-only for every publisher.

Protection, balancing and estimation add their results here as they land; publishers read the
newest PackState from the StateHub and never anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsd.model.snapshot import PackSnapshot


@dataclass(frozen=True, slots=True)
class TickTiming:
    """How the tick that made this state ran, for the daemon-health metrics."""

    scheduled_at: float
    started_at: float
    duration_s: float
    missed_ticks: int

    @property
    def lateness_s(self) -> float:
        return self.started_at - self.scheduled_at


@dataclass(frozen=True, slots=True)
class PackState:
    """The newest decision of the control loop and what it was based on."""

    tick: int
    time_s: float
    wall_time: float
    snapshot: PackSnapshot
    timing: TickTiming | None
