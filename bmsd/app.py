"""Composition root: builds every part from the config and runs them in one TaskGroup.

Nothing else wires parts together. The daemon stops cleanly on SIGTERM or SIGINT: the stop
event ends every task, then the buses are closed. Under systemd it reports through sd_notify
(:mod:`bmsd.system.notify`): READY once everything is up, a watchdog ping only from completed
ticks, STATUS, STOPPING. SIGHUP reloads the config file (:mod:`bmsd.system.reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import can

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.acquisition.urgent import UrgentCheck
from bmsd.balancing.commands import BalancingSender
from bmsd.balancing.coordinator import STATE_FILE as BALANCING_FILE
from bmsd.canbus.bus import CanInterface
from bmsd.canbus.codec import FrameDecoder, FrameEncoder, check_sendable
from bmsd.canbus.errorframes import CAN_ERROR_FRAME_RATE, CAN_UNKNOWN_FRAME_RATE
from bmsd.canbus.protocol import Protocol, load_protocol
from bmsd.config import Config, load_config
from bmsd.control.controller import Controller
from bmsd.control.export import explain_text, summary_line
from bmsd.control.hub import StateHub
from bmsd.control.loop import ControlLoop
from bmsd.control.socket import ControlServer, socket_path
from bmsd.errors import BmsdError
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.protection.journal import FaultJournal
from bmsd.protection.persistence import LatchedFaultStore
from bmsd.publish.heap import HeapCollector
from bmsd.publish.inverter.metrics import InverterCollector
from bmsd.publish.inverter.service import InverterService, pack_info
from bmsd.publish.metrics import MetricsExporter, Sources
from bmsd.publish.modbus.metrics import ModbusCollector
from bmsd.publish.modbus.server import build_server as build_modbus_server
from bmsd.sim.runner import build_simulated_inverter, build_simulated_pack, run_simulator
from bmsd.system.heap import HeapKeeper, find_glibc_heap
from bmsd.system.logs import LogSetup
from bmsd.system.notify import ServiceNotifier
from bmsd.system.reload import plan_reload
from bmsd.system.statewriter import StateWriter

log = logging.getLogger(__name__)

ESTIMATES_FILE = "estimates.json"

# Test hook, never set by the shipped unit: with BMSD_DEBUG_STALL_S=<seconds>, SIGUSR2 blocks
# the next control tick that long (as a hung write would), to prove the watchdog pings stop.
DEBUG_STALL_ENV = "BMSD_DEBUG_STALL_S"


class Daemon:
    """The whole daemon, built from one config."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        overrides: Sequence[str] = (),
        log_setup: LogSetup | None = None,
    ) -> None:
        self.config = config
        # Reload (SIGHUP) reads the same file with the same --set overrides.
        self.config_path = config_path
        self.overrides = tuple(overrides)
        self.log_setup = log_setup
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
        check_sendable(config, self.encoder, str(config_path or "<config>"))
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
        # Periodic snapshots (SOC/SOH, balancing) are written by a thread: their fsyncs wait
        # for the disk, which must never delay a tick.
        self.state_writer = StateWriter()
        self.loop.on_tick += [self._send_contactor_command, self._persist]
        self._register_bus_rates()
        self._balancing_hook()
        self.inverters = self._build_inverters()
        self.notifier = ServiceNotifier(config.service.status_interval_s)
        self._reload_task: asyncio.Task[bool] | None = None
        self._debug_stall_s = _debug_stall_s()
        self._stall_next_tick = False
        self.control_server = ControlServer(
            socket_path(self.state_dir), self.loop.submit, self._explain
        )
        self._command_counter = 0
        self.metrics = self._build_metrics() if config.metrics.enabled else None
        self.modbus = build_modbus_server(
            config,
            self.topology,
            pack_capacity_ah,
            lambda: self.hub.latest,
            self.loop.submit,
            self.controller.external,
        )
        heap = find_glibc_heap()
        self.heap_keeper = HeapKeeper(heap) if heap is not None else None
        if self.metrics is not None:
            self.metrics.add_collector(InverterCollector(lambda: self.inverters.links))
            if self.modbus is not None:
                self.metrics.add_collector(ModbusCollector(self.modbus))
            if self.heap_keeper is not None:
                self.metrics.add_collector(HeapCollector(self.heap_keeper))
        # Last hook: the watchdog ping proves a whole tick, with every hook above, completed.
        self.loop.on_tick.append(self._service_tick)
        self.stop_event: asyncio.Event | None = None

    def _build_metrics(self) -> MetricsExporter:
        sources = Sources(
            topology=self.topology,
            latest=lambda: self.hub.latest,
            buses=self.buses,
            tick_s=self.config.control.tick_s,
            chemistry=self.config.pack.chemistry,
        )
        fault_keys = [
            (level.fault_id, level.level.label) for level in self.controller.faults.levels
        ]
        exporter = MetricsExporter(self.config.metrics, sources, fault_keys=fault_keys)
        self.loop.on_tick.append(exporter.on_tick)
        # Publishers add their own collectors once they are built (see __init__).
        return exporter

    def _build_inverters(self) -> InverterService:
        """Inverter CAN profiles: sent on each tick's state, supervised by the fault table."""
        cell = self.controller.cell  # loaded once, by Controller.from_config
        if cell is None:
            raise BmsdError("the daemon's controller has no cell model")
        info = pack_info(self.config, self.cell_capacity_ah, cell.info.nominal_voltage_v)
        service = InverterService(self.config, info, time.monotonic())
        service.register_supervision(self.controller.external)
        self.loop.on_tick.append(service.on_state)
        return service

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
        if latched:
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
        """Worst bus: 0 error-active, 1 error-passive, 2 bus-off or receiver dead (a dead
        receiver reads as bus-off in the bus's own level)."""
        return max((bus.error_level() for bus in self.buses.values() if bus.is_open), default=0)

    def _register_bus_rates(self) -> None:
        """The worst bus's error-frame and unknown-frame rates, judged by the fault table."""

        def worst(rate: Callable[[CanInterface, float], float]) -> Callable[[float], float | None]:
            def provider(now_s: float) -> float | None:
                values = [rate(bus, now_s) for bus in self.buses.values() if bus.is_open]
                return max(values) if values else None

            return provider

        external = self.controller.external
        external.register(CAN_ERROR_FRAME_RATE, worst(CanInterface.error_frame_rate))
        external.register(CAN_UNKNOWN_FRAME_RATE, worst(CanInterface.unknown_frame_rate))

    def _explain(self) -> str:
        state = self.hub.latest
        return "no tick yet" if state is None else explain_text(state)

    def _persist(self, state: PackState) -> None:
        self.latched_store.save_if_changed(state.faults)
        self.journal.append(state.fault_events, state)
        estimator = self.controller.estimator
        ready = estimator is not None and self.controller.estimator_ready
        if ready and estimator is not None and estimator.save_due(state.time_s):
            self.state_writer.submit(estimator.state_job(self.estimates_path))

    def save_estimates(self) -> None:
        """Write the SOC/SOH state now (at shutdown)."""
        estimator = self.controller.estimator
        if estimator is not None and self.controller.estimator_ready:
            try:
                estimator.save(self.estimates_path)
            except (OSError, ValueError) as exc:
                # ValueError: a non-finite value (allow_nan=False); the last good file stays,
                # and the rest of the shutdown must still run.
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

    def _status(self, state: PackState) -> str:
        return summary_line(
            state, self.topology.module_count, self.config.acquisition.module_timeout_s
        )

    def _service_tick(self, state: PackState) -> None:
        if self._stall_next_tick:
            self._stall_next_tick = False
            log.warning("debug: blocking the control loop for %.1f s", self._debug_stall_s)
            time.sleep(self._debug_stall_s)
        # Paced on the time the hooks ran, not the tick's start: a tick delayed inside (a slow
        # fsync) must not make the next ping follow this one closely.
        now_s = time.monotonic()
        self.notifier.tick(now_s, lambda: self._status(state))
        if self.log_setup is not None:
            self.log_setup.housekeeping(now_s)

    def _ready(self) -> None:
        """Tell systemd the daemon is up. Keep this the last step of start-up: every bus,
        restored state and server must be up before it (servers bind before this call)."""
        if self.notifier.enabled:
            log.info(
                "telling systemd we are ready (watchdog %s)",
                f"{self.notifier.watchdog_s:g} s" if self.notifier.watchdog_s else "off",
            )
        self.notifier.ready("running, waiting for the first tick")

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
                self.state_writer.submit(balancer.state_job(path))

        self.loop.on_tick.append(on_tick)

    def _save_balancing(self, path: Path) -> None:
        balancer = self.controller.balancer
        if balancer is None:
            return
        try:
            balancer.save(path)
        except (OSError, ValueError) as exc:  # ValueError: as in save_estimates
            log.error("cannot save the balancing state to %s: %s", path, exc)

    def request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    async def reload(self) -> bool:
        """Re-read the config file; apply what may change at run time, keep the rest.

        A config that does not validate is rejected whole (its errors logged) and the running
        one kept. Returns whether the new file was accepted.
        """
        self.notifier.reloading()
        accepted = False
        try:
            if self.config_path is None:
                raise BmsdError("the daemon was not started from a config file")
            loaded = await asyncio.to_thread(load_config, self.config_path, self.overrides)
        except (BmsdError, OSError) as exc:
            log.error(
                "reload rejected, still running on the previous configuration:\n%s",
                exc,
                extra={"fields": {"reload": "rejected"}},
            )
            status = "reload rejected (see log); running on the previous configuration"
        except Exception:  # a reload must never take the battery's protection down
            log.exception("reload failed, still running on the previous configuration")
            status = "reload failed (see log); running on the previous configuration"
        else:
            accepted = True
            plan = plan_reload(self.config, loaded)
            self.config = plan.config
            if self.log_setup is not None:
                self.log_setup.apply(plan.config.logging)
            self.loop.summary_interval_s = plan.config.control.summary_log_interval_s
            self.notifier.set_status_interval(plan.config.service.status_interval_s)
            log.info(
                "reloaded %s: %s",
                self.config_path,
                ", ".join(plan.applied) if plan.applied else "nothing changed that applies now",
                extra={"fields": {"reload": "accepted"}},
            )
            status = "reloaded"
            if plan.restart_needed:
                log.warning(
                    "changed in %s but only applied after a restart: %s",
                    self.config_path,
                    ", ".join(plan.restart_needed),
                    extra={"fields": {"restart_needed": len(plan.restart_needed)}},
                )
                status = f"reloaded; {len(plan.restart_needed)} change(s) need a restart"
        state = self.hub.latest
        self.notifier.ready(status if state is None else f"{status}; {self._status(state)}")
        return accepted

    def _on_reload(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            log.warning("SIGHUP while a reload is running: ignored")
            return
        log.info("received SIGHUP, reloading %s", self.config_path)
        self._reload_task = asyncio.get_running_loop().create_task(self.reload(), name="reload")

    def _on_debug_stall(self) -> None:
        self._stall_next_tick = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        if self._debug_stall_s:
            log.warning("debug: SIGUSR2 blocks one tick for %.1f s", self._debug_stall_s)
            loop.add_signal_handler(signal.SIGUSR2, self._on_debug_stall)
        sim_bus: can.BusABC | None = None
        previous_switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(self.config.control.thread_switch_interval_s)
        sim_buses: list[can.BusABC] = []
        self.restore()
        try:
            self._open_buses(loop)
            await self.control_server.start()
            if self.metrics is not None:
                self.metrics.start()
            if self.modbus is not None:
                await self.modbus.start()
            # Everything built so far lives as long as the daemon: keep it out of the cyclic
            # garbage collector's scans, whose full passes would otherwise stall a tick.
            gc.collect()
            gc.freeze()
            self._ready()  # last step of start-up
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.loop.run(stop), name="control")
                tasks.create_task(self.inverters.run(self.buses, stop), name="inverters")
                if self.heap_keeper is not None:
                    tasks.create_task(self._keep_heap(self.heap_keeper, stop), name="heap")
                if self.config.sim.enabled:
                    sim_bus = self._open_sim_bus()
                    sim_inverter = build_simulated_inverter(self.config)
                    inverter_link = None
                    if sim_inverter is not None:
                        bus_name = self.config.inverters[self.config.sim.inverter].bus
                        inverter_bus = self._open_sim_bus(bus_name)
                        sim_buses.append(inverter_bus)
                        inverter_link = (sim_inverter, inverter_bus)
                    pack = build_simulated_pack(
                        self.config, self.protocol, self.topology, sim_inverter
                    )
                    tasks.create_task(
                        run_simulator(
                            pack,
                            sim_bus,
                            self.config.sim.physics_step_s,
                            stop,
                            inverter=inverter_link,
                        ),
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
            self.notifier.stopping()
            if self._reload_task is not None:
                self._reload_task.cancel()
            # Drain the writer first: the final saves below are newer and must land last.
            await asyncio.to_thread(self.state_writer.close)
            self.save_estimates()
            sys.setswitchinterval(previous_switch_interval_s)
            if self.metrics is not None:
                self.metrics.stop()
            if self.modbus is not None:
                await self.modbus.close()
            if self.controller.balancer is not None:
                self._save_balancing(self.state_dir / BALANCING_FILE)
            await self.control_server.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
                loop.remove_signal_handler(signum)
            if sim_bus is not None:
                sim_bus.shutdown()
            for extra in sim_buses:
                extra.shutdown()
            for bus in self.buses.values():
                bus.close()
            log.info("bmsd stopped")

    async def _keep_heap(self, keeper: HeapKeeper, stop: asyncio.Event) -> None:
        """Trim the C heap once start-up is done, then every service.heap_trim_interval_s.

        The interval is read anew each time, so a reload applies it. A worker thread does the
        trim, so the event loop runs meanwhile; it waits only if it allocates from the arena
        being walked at that moment (see HeapKeeper).
        """
        while not stop.is_set():
            interval_s = self.config.service.heap_trim_interval_s
            if interval_s > 0:
                try:
                    await asyncio.to_thread(keeper.measure_and_trim)
                except Exception:  # memory housekeeping must never take protection down
                    log.exception("trimming the C heap failed; not trying again")
                    return
            # Off (0): look again now and then, in case a reload switches it on.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s if interval_s > 0 else 60.0)

    def _on_signal(self, signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.notifier.stopping()
        self.request_stop()

    def _open_buses(self, loop: asyncio.AbstractEventLoop) -> None:
        inverter_buses = self.inverters.buses()
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
                on_frame: Callable[[can.Message, float], None] = ingest.on_frame
                if name in inverter_buses:  # an inverter on the slaves' bus sees every frame too
                    on_frame = _both(on_frame, self.inverters.receiver(name, bus, count=False))
                bus.start_receiving(loop, on_frame)
            elif name in inverter_buses:
                bus.start_receiving(loop, self.inverters.receiver(name, bus))
            else:
                bus.start_receiving(loop, _count_only(bus))

    def _open_sim_bus(self, name: str = "") -> can.BusABC:
        bus_config = self.config.can[name or self.config.sim.bus]
        try:
            return can.Bus(interface=bus_config.interface, channel=bus_config.channel)
        except (can.CanError, OSError, ValueError) as exc:
            raise BmsdError(f"cannot open the simulator's bus: {exc}") from exc


def _both(
    first: Callable[[can.Message, float], None], second: Callable[[can.Message, float], None]
) -> Callable[[can.Message, float], None]:
    def on_frame(message: can.Message, received_at: float) -> None:
        first(message, received_at)
        second(message, received_at)

    return on_frame


def _count_only(bus: CanInterface) -> Callable[[can.Message, float], None]:
    """Frames on a bus nobody decodes (a bus only recorded)."""

    def on_frame(message: can.Message, received_at: float) -> None:
        bus.stats.unknown_frames += 1

    return on_frame


def _debug_stall_s() -> float:
    text = os.environ.get(DEBUG_STALL_ENV, "")
    try:
        return max(float(text), 0.0) if text else 0.0
    except ValueError:
        return 0.0


def run_daemon(config: Config) -> None:
    """Build and run the daemon until it is stopped."""
    Path(config.state.directory).expanduser().mkdir(parents=True, exist_ok=True)
    asyncio.run(Daemon(config).run())
