"""The asyncio control loop: runs the Controller every tick on the monotonic clock.

Ticks are scheduled on absolute times (no drift). A tick that starts more than one period
late counts the periods it missed and skips them rather than running a burst of stale ticks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bmsd.control.controller import Controller
from bmsd.control.export import summary_line
from bmsd.control.hub import StateHub
from bmsd.model.state import TickTiming

log = logging.getLogger(__name__)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._controller = controller
        self._hub = hub
        self._tick_s = tick_s
        self._clock = clock
        self._module_count = module_count
        self._module_timeout_s = module_timeout_s
        self._summary_interval_s = summary_interval_s
        self.stats = LoopStats()
        self.on_tick: list[Callable[[], None]] = []

    async def run(self, stop: asyncio.Event) -> None:
        tick_s = self._tick_s
        next_at = self._clock()
        next_summary = next_at + self._summary_interval_s
        while not stop.is_set():
            delay = next_at - self._clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    break
                except TimeoutError:
                    pass
            started = self._clock()
            missed = int((started - next_at) // tick_s)
            if missed > 0:
                self.stats.missed_ticks += missed
                next_at += missed * tick_s
                log.warning("control loop overran: %d tick(s) missed", missed)
            timing = TickTiming(
                next_at, started, self.stats.last_duration_s, self.stats.missed_ticks
            )
            state, events = self._controller.step(started, time.time(), timing)
            self._hub.publish(state)
            for event in events:
                log.info(event.message, extra={"fields": {"event": event.kind, **event.fields}})
            for callback in self.on_tick:
                callback()
            finished = self._clock()
            duration = finished - started
            stats = self.stats
            stats.ticks += 1
            stats.last_duration_s = duration
            stats.max_duration_s = max(stats.max_duration_s, duration)
            stats.max_lateness_s = max(stats.max_lateness_s, started - next_at)
            if self._summary_interval_s and finished >= next_summary:
                next_summary = finished + self._summary_interval_s
                log.info("pack %s", summary_line(state, self._module_count, self._module_timeout_s))
            next_at += tick_s
