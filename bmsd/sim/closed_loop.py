"""The simulated pack and the daemon's pipeline in lockstep, on simulated time.

Frames from the simulated pack go through the real decoder, store and Controller; the
Controller's contactor commands go back to the simulated switch box as real encoded frames.
No bus, no threads, no wall clock: a run is deterministic and as fast as the machine allows,
which is what end-to-end tests of faults and limits, and offline analyses, need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.balancing.commands import BalancingSender
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder, FrameEncoder
from bmsd.canbus.protocol import load_protocol
from bmsd.config import Config
from bmsd.control.controller import Command, Controller
from bmsd.model.events import Event
from bmsd.model.faults import FaultEvent
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.sim.runner import build_simulated_pack


@dataclass(slots=True)
class Trace:
    """What a closed-loop run produced."""

    states: list[PackState] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    fault_events: list[FaultEvent] = field(default_factory=list)


class ClosedLoop:
    """A simulated pack managed by the real pipeline, stepped in simulated time."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topology = Topology.from_config(config.pack)
        self.protocol = load_protocol(config.path(config.acquisition.protocol))
        self.pack = build_simulated_pack(config, self.protocol, self.topology)
        self.store = ReadingStore(self.topology)
        self.stats = BusStats()
        self.ingest = Ingest(FrameDecoder(self.protocol, self.topology), self.store, self.stats)
        self.encoder = FrameEncoder(self.protocol, self.topology)
        self.controller = Controller.from_config(config, self.topology, self.store, 0.0)
        self.balancing_sender = BalancingSender(config.balancing, self.topology, self.encoder)
        self.keep_trace = True
        self.trace = Trace()
        self._pending: list[Command] = []
        self._next_tick_s = config.control.tick_s
        self._counter = 0
        self.state: PackState | None = None

    @property
    def time_s(self) -> float:
        return self.pack.time_s

    def submit(self, command: Command) -> None:
        """Queue a command for the next tick (its reply is in that tick's state)."""
        self._pending.append(command)

    def run(
        self, seconds: float, on_tick: Callable[[ClosedLoop, PackState], None] | None = None
    ) -> PackState:
        """Advance ``seconds`` of simulated time; returns the last state."""
        step_s = self.config.sim.physics_step_s
        tick_s = self.config.control.tick_s
        end = self.pack.time_s + seconds
        while self.pack.time_s < end - 1e-9:
            for message in self.pack.advance(step_s):
                self.ingest.on_frame(message, self.pack.time_s)
            while self.pack.time_s >= self._next_tick_s - 1e-9:
                self._tick(self._next_tick_s)
                if on_tick is not None and self.state is not None:
                    on_tick(self, self.state)
                self._next_tick_s += tick_s
        assert self.state is not None, "run at least one tick"
        return self.state

    def _tick(self, now: float) -> None:
        commands, self._pending = self._pending, []
        state, events = self.controller.step(now, now, commands=commands)
        self.state = state
        if self.keep_trace:
            self.trace.states.append(state)
            self.trace.events.extend(events)
            self.trace.fault_events.extend(state.fault_events)
        if self.protocol.mapping.switchbox is not None:
            self._counter += 1
            self.pack.handle_frame(
                self.encoder.contactor_command(
                    state.contactor_command,
                    self._counter,
                    self.config.protection.contactors.command_timeout_s,
                )
            )
        if self.protocol.mapping.modules.balancing_command is not None:
            for frame in self.balancing_sender.frames(state.balancing, now):
                self.pack.handle_frame(frame)
