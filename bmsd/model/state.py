"""PackState: the control loop's output for one tick, read-only for every publisher.

Protection, balancing and estimation add their results here as they land; publishers read the
newest PackState from the StateHub and never anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsd.model.balancing import BalancingState
from bmsd.model.bms import BmsMode, ContactorCommand, Reply
from bmsd.model.estimates import Estimates
from bmsd.model.faults import FaultEvent, FaultState
from bmsd.model.limits import Limits
from bmsd.model.snapshot import PackSnapshot


@dataclass(frozen=True, slots=True)
class TickTiming:
    """How the tick that made this state ran, for the daemon-health metrics."""

    scheduled_at: float
    started_at: float
    duration_s: float  # of the previous tick (this one is still running)
    missed_ticks: int  # since start
    missed_this_tick: int = 0  # periods skipped just before this tick
    stall_s: float = 0.0  # how late this tick started against its original schedule

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
    mode: BmsMode
    mode_reason: str
    contactor_command: ContactorCommand
    faults: FaultState
    fault_events: tuple[FaultEvent, ...]
    replies: tuple[Reply, ...]
    data_ok: bool  # every cell, temperature, current and contactor reading valid
    limits: Limits  # what the inverter may do now, each with its contributors
    estimates: Estimates | None = None  # None until the estimator has a starting point
    balancing: BalancingState | None = None  # None when no balancing is configured
