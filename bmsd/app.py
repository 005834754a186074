"""Composition root: builds every part from the config and runs them in one TaskGroup.

Nothing else wires parts together. The daemon stops cleanly on SIGTERM or SIGINT: the stop
event ends every task, then the buses are closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import can

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import CanInterface
from bmsd.canbus.codec import FrameDecoder
from bmsd.canbus.protocol import Protocol, load_protocol
from bmsd.config import Config
from bmsd.control.controller import Controller
from bmsd.control.hub import StateHub
from bmsd.control.loop import ControlLoop
from bmsd.errors import BmsdError
from bmsd.model.topology import Topology
from bmsd.sim.runner import build_simulated_pack, run_simulator

log = logging.getLogger(__name__)


class Daemon:
    """The whole daemon, built from one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topology = Topology.from_config(config.pack)
        self.protocol: Protocol = load_protocol(config.path(config.acquisition.protocol))
        self.decoder = FrameDecoder(self.protocol, self.topology)
        self.store = ReadingStore(self.topology)
        self.controller = Controller(config, self.topology, self.store)
        self.hub = StateHub()
        self.buses = {
            name: CanInterface(name, bus, config.path(bus.record) if bus.record else None)
            for name, bus in config.can.items()
        }
        self.loop = ControlLoop(
            self.controller,
            self.hub,
            config.control.tick_s,
            module_count=self.topology.module_count,
            module_timeout_s=config.acquisition.module_timeout_s,
            summary_interval_s=config.control.summary_log_interval_s,
        )
        self.stop_event: asyncio.Event | None = None

    def request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        sim_bus: can.BusABC | None = None
        try:
            self._open_buses(loop)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.loop.run(stop), name="control")
                if self.config.sim.enabled:
                    sim_bus = self._open_sim_bus()
                    pack = build_simulated_pack(self.config, self.protocol, self.topology)
                    tasks.create_task(
                        run_simulator(pack, sim_bus, self.config.sim.physics_step_s, stop),
                        name="simulator",
                    )
                log.info(
                    "bmsd running: %d modules x %d cells, tick %.0f ms%s",
                    self.topology.module_count,
                    self.topology.cells_per_module,
                    self.config.control.tick_s * 1000,
                    ", simulated pack" if self.config.sim.enabled else "",
                )
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if sim_bus is not None:
                sim_bus.shutdown()
            for bus in self.buses.values():
                bus.close()
            log.info("bmsd stopped")

    def _on_signal(self, signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.request_stop()

    def _open_buses(self, loop: asyncio.AbstractEventLoop) -> None:
        for name, bus in self.buses.items():
            bus.open()
            if name == self.config.acquisition.bus:
                ingest = Ingest(self.decoder, self.store, bus.stats)
                bus.start_receiving(loop, ingest.on_frame)
            else:
                bus.start_receiving(loop, _count_only(bus))

    def _open_sim_bus(self) -> can.BusABC:
        bus_config = self.config.can[self.config.sim.bus]
        try:
            return can.Bus(interface=bus_config.interface, channel=bus_config.channel)
        except (can.CanError, OSError, ValueError) as exc:
            raise BmsdError(f"cannot open the simulator's bus: {exc}") from exc


def _count_only(bus: CanInterface) -> Callable[[can.Message, float], None]:
    """Frames on a bus nobody decodes yet (inverter buses get their own handlers later)."""

    def on_frame(message: can.Message, received_at: float) -> None:
        bus.stats.unknown_frames += 1

    return on_frame


def run_daemon(config: Config) -> None:
    """Build and run the daemon until it is stopped."""
    Path(config.state.directory).expanduser().mkdir(parents=True, exist_ok=True)
    asyncio.run(Daemon(config).run())
