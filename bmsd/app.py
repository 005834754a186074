"""Composition root: builds every part from the config and runs them in one TaskGroup.

Nothing else wires parts together. The daemon stops cleanly on SIGTERM or SIGINT: the stop
event ends every task, then the buses are closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import can

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.acquisition.urgent import UrgentCheck
from bmsd.balancing.commands import BalancingSender
from bmsd.balancing.coordinator import STATE_FILE as BALANCING_FILE
from bmsd.canbus.bus import CanInterface
from bmsd.canbus.codec import FrameDecoder, FrameEncoder
from bmsd.canbus.protocol import Protocol, load_protocol
from bmsd.config import Config
from bmsd.control.controller import Controller
from bmsd.control.export import explain_text
from bmsd.control.hub import StateHub
from bmsd.control.loop import ControlLoop
from bmsd.control.socket import ControlServer, socket_path
from bmsd.errors import BmsdError
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.protection.journal import FaultJournal
from bmsd.protection.persistence import LatchedFaultStore
from bmsd.sim.runner import build_simulated_pack, run_simulator

log = logging.getLogger(__name__)

ESTIMATES_FILE = "estimates.json"


class Daemon:
    """The whole daemon, built from one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topology = Topology.from_config(config.pack)
        self.protocol: Protocol = load_protocol(config.path(config.acquisition.protocol))
        self.decoder = FrameDecoder(self.protocol, self.topology)
        self.store = ReadingStore(self.topology)
        self.controller = Controller.from_config(
            config, self.topology, self.store, time.monotonic()
        )
        self.cell_capacity_ah = self.controller.cell_capacity_ah
        self.estimates_path = config.path(config.state.directory) / ESTIMATES_FILE
        self.state_dir = config.path(config.state.directory)
        self.latched_store = LatchedFaultStore(self.state_dir)
        self.journal = FaultJournal(self.state_dir)
        self.encoder = FrameEncoder(self.protocol, self.topology)
        pack_capacity_ah = (
            self.cell_capacity_ah * self.topology.cells_in_parallel * self.topology.strings
        )
        self.urgent = UrgentCheck.from_config(config, pack_capacity_ah)
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
            bus_health=self.bus_error_level,
        )
        # Act first: the contactor command leaves before the (fsync-ing) persistence of the
        # same tick, so writing the latch never delays opening.
        self.loop.on_tick += [self._send_contactor_command, self._persist]
        self._balancing_hook()
        self.control_server = ControlServer(
            socket_path(self.state_dir), self.loop.submit, self._explain
        )
        self._command_counter = 0
        self.stop_event: asyncio.Event | None = None

    def restore(self) -> None:
        """Bring back latched faults from the state directory (before the first tick)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        latched, problem = self.latched_store.load()
        if problem:
            log.error(
                "latched-fault file %s unusable: %s; starting in fault (reset needed)",
                self.latched_store.path,
                problem,
            )
        elif latched:
            log.warning(
                "restored %d latched fault(s): %s", len(latched), ", ".join(sorted(latched))
            )
            known = {level.key for level in self.controller.faults.levels}
            for key in sorted(set(latched) - known):
                log.warning(
                    "latched fault %s is no longer in the enabled fault table: dropped", key
                )
        self.controller.restore_latched(latched, time.monotonic(), damaged=bool(problem))
        estimator = self.controller.estimator
        if estimator is not None:
            reason = estimator.load(self.estimates_path)
            if reason:
                # Never a silently wrong value: start from OCV with a wide uncertainty.
                log.warning(
                    "SOC/SOH state %s not used (%s): starting from OCV", self.estimates_path, reason
                )
            else:
                self.controller.estimator_ready = True
                log.info("restored SOC/SOH state from %s", self.estimates_path)

    def bus_error_level(self) -> int:
        """Worst bus: 0 error-active, 1 error-passive, 2 bus-off or receiver dead."""
        worst = 0
        for bus in self.buses.values():
            if not bus.is_open:
                continue
            if bus.receiver_failed() is not None:
                return 2
            state = bus.bus_state()
            if state is can.BusState.ERROR:
                return 2
            if state is can.BusState.PASSIVE:
                worst = 1
        return worst

    def _explain(self) -> str:
        state = self.hub.latest
        return "no tick yet" if state is None else explain_text(state)

    def _persist(self, state: PackState) -> None:
        self.latched_store.save_if_changed(state.faults)
        self.journal.append(state.fault_events, state)
        estimator = self.controller.estimator
        ready = estimator is not None and self.controller.estimator_ready
        if ready and estimator is not None and estimator.save_due(state.time_s):
            estimator.save(self.estimates_path)

    def save_estimates(self) -> None:
        """Write the SOC/SOH state now (at shutdown)."""
        estimator = self.controller.estimator
        if estimator is not None and self.controller.estimator_ready:
            try:
                estimator.save(self.estimates_path)
            except OSError as exc:
                log.error("cannot save the SOC/SOH state to %s: %s", self.estimates_path, exc)

    def _send_contactor_command(self, state: PackState) -> None:
        if self.protocol.mapping.switchbox is None:
            return
        self._command_counter += 1
        frame = self.encoder.contactor_command(
            state.contactor_command,
            self._command_counter,
            self.config.protection.contactors.command_timeout_s,
        )
        self.buses[self.config.acquisition.bus].send(frame)

    # -- balancing (commands to the slaves, bled Ah persisted) ------------------------------

    def _balancing_hook(self) -> None:
        """Send balancing commands after each tick and keep the bled Ah across restarts."""
        balancer = self.controller.balancer
        if balancer is None:
            return
        path = self.state_dir / BALANCING_FILE
        reason = balancer.load(path)
        if reason and reason != "no state file yet":
            log.warning("balancing state %s not used (%s): counters start at 0", path, reason)
        has_command = self.protocol.mapping.modules.balancing_command is not None
        sender = BalancingSender(balancer.config, self.topology, self.encoder)
        if not has_command:
            log.warning("the slave protocol has no balancing command: balancing only plans")

        def on_tick(state: PackState) -> None:
            if has_command:
                bus = self.buses[self.config.acquisition.bus]
                for frame in sender.frames(state.balancing, state.time_s):
                    bus.send(frame)
            if balancer.save_due(state.time_s):
                self._save_balancing(path)

        self.loop.on_tick.append(on_tick)

    def _save_balancing(self, path: Path) -> None:
        balancer = self.controller.balancer
        if balancer is None:
            return
        try:
            balancer.save(path)
        except OSError as exc:
            log.error("cannot save the balancing state to %s: %s", path, exc)

    def request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        sim_bus: can.BusABC | None = None
        self.restore()
        try:
            self._open_buses(loop)
            await self.control_server.start()
            # Everything built so far lives as long as the daemon: keep it out of the cyclic
            # garbage collector's scans, whose full passes would otherwise stall a tick.
            gc.collect()
            gc.freeze()
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
            self.save_estimates()
            if self.controller.balancer is not None:
                self._save_balancing(self.state_dir / BALANCING_FILE)
            await self.control_server.close()
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
                ingest = Ingest(
                    self.decoder,
                    self.store,
                    bus.stats,
                    urgent=self.urgent,
                    on_urgent=self.loop.wake_now,
                )
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
