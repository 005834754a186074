"""The asyncio control loop: runs the Controller every tick on the monotonic clock.

Ticks are scheduled on absolute times (no drift). A tick that starts more than one period
late counts the periods it missed and skips them rather than running a burst of stale ticks.
Commands (reset, close, open) arrive through one queue and are answered at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bmsd.control.controller import Command, Controller
from bmsd.control.export import summary_line
from bmsd.control.hub import StateHub
from bmsd.model.bms import Reply
from bmsd.model.faults import FaultEvent, FaultLevel
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.state import PackState, TickTiming
from bmsd.model.topology import Location
from bmsd.system.logs import RATE_LIMIT_EXEMPT

log = logging.getLogger(__name__)

TickHook = Callable[[PackState], None]


@dataclass(slots=True)
class LoopStats:
    """Counters of the control loop (read by metrics and benchmarks)."""

    ticks: int = 0
    missed_ticks: int = 0
    last_duration_s: float = 0.0
    max_duration_s: float = 0.0
    max_lateness_s: float = 0.0


class ControlLoop:
    """Calls ``Controller.step`` every ``tick_s`` and publishes the state."""

    def __init__(
        self,
        controller: Controller,
        hub: StateHub,
        tick_s: float,
        *,
        module_count: int,
        module_timeout_s: float,
        summary_interval_s: float,
        bus_health: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._controller = controller
        self._hub = hub
        self._tick_s = tick_s
        self._clock = clock
        self._module_count = module_count
        self._module_timeout_s = module_timeout_s
        self._summary_interval_s = summary_interval_s
        self._bus_health = bus_health
        self._commands: asyncio.Queue[tuple[Command, asyncio.Future[Reply]]] = asyncio.Queue()
        self.stats = LoopStats()
        self.on_tick: list[TickHook] = []
        self._wake = asyncio.Event()

    @property
    def summary_interval_s(self) -> float:
        return self._summary_interval_s

    @summary_interval_s.setter
    def summary_interval_s(self, value: float) -> None:
        """Change the summary log period at run time (configuration reload)."""
        self._summary_interval_s = value

    def wake_now(self) -> None:
        """Take the next sample now (an urgent reading); call on the loop thread."""
        self._wake.set()

    async def submit(self, command: Command) -> Reply:
        """Queue a command for the next tick and wait for its answer."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        await self._commands.put((command, future))
        return await future

    async def run(self, stop: asyncio.Event) -> None:
        tick_s = self._tick_s
        next_at = self._clock()
        last_summary = next_at  # the period may change at run time (reload)
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            delay = next_at - self._clock()
            urgent = False
            if delay > 0 and not self._wake.is_set():
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    (stopping, waking), timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
                waking.cancel()
                if stop.is_set():
                    break
            if self._wake.is_set():
                self._wake.clear()
                urgent = self._clock() < next_at
            started = self._clock()
            stall_s = max(0.0, started - next_at)
            missed = int((started - next_at) // tick_s)
            if missed > 0:
                self.stats.missed_ticks += missed
                next_at += missed * tick_s
                log.warning("control loop overran: %d tick(s) missed", missed)
            timing = TickTiming(
                next_at,
                started,
                self.stats.last_duration_s,
                self.stats.missed_ticks,
                max(missed, 0),
                stall_s,
            )
            pending = []
            while not self._commands.empty():
                pending.append(self._commands.get_nowait())
            state, events = self._controller.step(
                started,
                time.time(),
                timing=timing,
                commands=[command for command, _ in pending],
                bus_error_level=self._bus_health(),
            )
            self._hub.publish(state)
            for (command, future), reply in zip(pending, state.replies, strict=True):
                log.warning(
                    "request %s from %s: %s (%s)",
                    command.request.value,
                    command.origin,
                    reply.answer.value,
                    reply.reason,
                    extra={"fields": {"request": command.request.value, "origin": command.origin}},
                )
                if not future.done():
                    future.set_result(reply)
            for fault_event in state.fault_events:
                quantity = self._controller.fault_quantities.get(fault_event.fault_id, "")
                _log_fault_event(fault_event, state, quantity)
            for event in events:
                log.info(event.message, extra={"fields": {"event": event.kind, **event.fields}})
            for hook in self.on_tick:
                try:
                    hook(state)
                except Exception:  # an I/O hook must never stop the control loop
                    log.exception("tick hook %s failed", getattr(hook, "__qualname__", hook))
            finished = self._clock()
            duration = finished - started
            stats = self.stats
            stats.ticks += 1
            stats.last_duration_s = duration
            stats.max_duration_s = max(stats.max_duration_s, duration)
            stats.max_lateness_s = max(stats.max_lateness_s, started - next_at)
            interval_s = self._summary_interval_s
            if interval_s and finished >= last_summary + interval_s:
                last_summary = finished
                log.info(
                    "pack %s",
                    summary_line(state, self._module_count, self._module_timeout_s),
                    extra={RATE_LIMIT_EXEMPT: True},  # paced already
                )
            if not urgent:
                next_at += tick_s  # an urgent sample is extra: the schedule stays as it was
        stopping.cancel()


def fault_location(quantity: str, snapshot: PackSnapshot) -> Location | None:
    """The cell or sensor behind a cell-voltage or temperature fault (the extreme one)."""
    if quantity.startswith("cell_voltage_max") or quantity.startswith("cell_voltage_min"):
        extremes = snapshot.cell_voltage
    elif quantity.startswith("cell_temp_max") or quantity.startswith("cell_temp_min"):
        extremes = snapshot.temperature
    else:
        return None
    if extremes is None:
        return None
    return extremes.max_location if "_max" in quantity else extremes.min_location


def _log_fault_event(event: FaultEvent, state: PackState | None = None, quantity: str = "") -> None:
    if event.kind == "set":
        level = {FaultLevel.INFO: logging.INFO, FaultLevel.WARNING: logging.WARNING}.get(
            event.level, logging.ERROR
        )
    elif event.kind in ("reset", "reset_refused"):
        level = logging.WARNING  # resets are audited
    else:
        level = logging.INFO
    fields: dict[str, object] = {
        "fault": event.fault_id,
        "level": event.level.label,
        "change": event.kind,
        "value": event.value,
        "threshold": event.threshold,
    }
    if state is not None:
        fields["mode"] = state.mode.value
        where = fault_location(quantity, state.snapshot) if event.kind == "set" else None
        if where is not None:
            index_key = "sensor" if quantity.startswith("cell_temp") else "cell"
            fields.update({"string": where.string, "module": where.module, index_key: where.index})
    log.log(level, event.message, extra={"fields": fields})
