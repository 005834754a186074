"""One control tick as a synchronous step: snapshot -> decisions -> PackState (+ events).

Time is passed in, so the same step runs live (monotonic clock) and in replay (the log's
clock). Protection, balancing and estimation plug in here, in that order; the BMS state
machine runs last, to keep the time from reading to reacting short.
"""

from __future__ import annotations

import math

import numpy as np

from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.config import Config
from bmsd.model.events import Event
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.state import PackState, TickTiming
from bmsd.model.topology import Topology


class Controller:
    """Turns the reading store into one PackState per tick."""

    def __init__(self, config: Config, topology: Topology, store: ReadingStore) -> None:
        self._config = config
        self._topology = topology
        self._store = store
        self._builder = SnapshotBuilder(topology, config.acquisition)
        self._tick = 0
        self._module_fresh = np.zeros(topology.module_count, dtype=np.bool_)
        self._current_fresh = False
        self._contactors_fresh = False

    @property
    def tick(self) -> int:
        return self._tick

    def step(
        self, now: float, wall_time: float, timing: TickTiming | None = None
    ) -> tuple[PackState, list[Event]]:
        self._tick += 1
        snapshot = self._builder.build(self._store, self._tick, now)
        events = self._source_events(snapshot)
        state = PackState(
            tick=self._tick,
            time_s=now,
            wall_time=wall_time,
            snapshot=snapshot,
            timing=timing,
        )
        return state, events

    def _source_events(self, snapshot: PackSnapshot) -> list[Event]:
        """Report sources going silent or coming back (faults are protection's job)."""
        events: list[Event] = []
        now = snapshot.time_s
        fresh = snapshot.module_age_s <= self._config.acquisition.module_timeout_s
        for module in np.flatnonzero(fresh != self._module_fresh):
            module_index = int(module)
            node_id = self._topology.module_node_ids[module_index]
            if fresh[module_index]:
                events.append(
                    Event(
                        now,
                        "module_online",
                        f"module {module_index} (node {node_id}) reports",
                        {"module": module_index, "node_id": node_id},
                    )
                )
            else:
                age = float(snapshot.module_age_s[module_index])
                events.append(
                    Event(
                        now,
                        "module_silent",
                        f"module {module_index} (node {node_id}) silent"
                        + ("" if math.isinf(age) else f" for {age:.2f} s"),
                        {"module": module_index, "node_id": node_id},
                    )
                )
        self._module_fresh = fresh
        current_fresh = snapshot.pack_current_a is not None
        if current_fresh != self._current_fresh:
            kind = "current_sensor_online" if current_fresh else "current_sensor_lost"
            events.append(Event(now, kind, kind.replace("_", " ")))
            self._current_fresh = current_fresh
        contactors_fresh = snapshot.contactors is not None
        if contactors_fresh != self._contactors_fresh:
            kind = "switchbox_online" if contactors_fresh else "switchbox_lost"
            events.append(Event(now, kind, kind.replace("_", " ")))
            self._contactors_fresh = contactors_fresh
        return events
