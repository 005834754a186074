"""One control tick as a synchronous step: snapshot -> protection -> state machine -> PackState.

Time is passed in, so the same step runs live (monotonic clock) and in replay (the log's
clock). Order within a tick: requests (reset, close, open) are answered first; then the fault
table is evaluated on the fresh snapshot; then the BMS state machine runs last, to keep the
time from reading to reacting short.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.balancing.coordinator import Balancer
from bmsd.canbus.protocol import load_protocol
from bmsd.config import Config
from bmsd.control.supervision import ExternalInputs
from bmsd.estimation.estimator import Estimator
from bmsd.model.balancing import BalancingState
from bmsd.model.bms import Answer, BmsMode, ContactorCommand, Reply, Request
from bmsd.model.cell import CellModel
from bmsd.model.estimates import Estimates
from bmsd.model.events import Event
from bmsd.model.faults import FaultEvent, FaultLevel, FaultState
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.state import PackState, TickTiming
from bmsd.model.topology import Topology
from bmsd.protection.faults import evaluate, initial_state, reset_latched, restore_latched
from bmsd.protection.limits import LimitCalculator, inputs_from_snapshot
from bmsd.protection.quantities import IMPLAUSIBLE_WINDOW_S, ProtectionInputs
from bmsd.protection.reactions import fault_reaction
from bmsd.protection.statemachine import (
    MachineInputs,
    answer_request,
    initial_machine,
    step_machine,
)


@dataclass(frozen=True, slots=True)
class Command:
    """A request to the control loop, with who asked (for the audit trail)."""

    request: Request
    origin: str


class Controller:
    """Turns the reading store into one PackState per tick."""

    def __init__(
        self,
        config: Config,
        topology: Topology,
        store: ReadingStore,
        cell_capacity_ah: float,
        start_s: float,
        cell: CellModel | None = None,
        external: ExternalInputs | None = None,
        *,
        balancing_feedback: bool = True,
    ) -> None:
        """``cell``: the cell model; with it the SOC/SOH estimator runs in every tick.
        ``external``: supervision inputs from the publishers (EMS heartbeat, inverter).
        ``balancing_feedback``: the slaves report which cells bleed (protocol file)."""
        self.external = external if external is not None else ExternalInputs()
        self.cell = cell
        self.cell_capacity_ah = cell_capacity_ah
        self._config = config
        self._topology = topology
        self._store = store
        self._builder = SnapshotBuilder(topology, config.acquisition, start_s)
        self._table = config.protection.faults
        # Read-only view for the log (which quantity a fault watches, to name the cell).
        self.fault_quantities = {fault_id: spec.quantity for fault_id, spec in self._table.items()}
        self._faults: FaultState = initial_state(self._table)
        self._machine = initial_machine(start_s)
        self._limits = LimitCalculator(config.limits)
        self.estimator: Estimator | None = None
        self.estimator_ready = False  # restored from disk, or initialised from OCV
        if cell is not None:
            self.estimator = Estimator(
                cell,
                topology.cell_count,
                topology.cells_in_parallel,
                config.estimation,
                cell_capacity_ah,
                strings=topology.strings,
            )
        self._estimates: Estimates | None = None
        self.balancer: Balancer | None = None
        if config.balancing.strategy != "none":
            self.balancer = Balancer(
                config.balancing,
                topology,
                config.acquisition.module_timeout_s,
                feedback_available=balancing_feedback,
            )
        # Warnings that do not stop bleeding (config); a fatal level always does.
        self._balancing_ignored = frozenset(config.balancing.ignore_faults) | frozenset(
            fault_id
            for fault_id, spec in self._table.items()
            if spec.quantity == "balancing_mismatch_modules"
        )
        self._balancing_mismatch = 0
        self._pack_capacity_ah = cell_capacity_ah * topology.cells_in_parallel * topology.strings
        self._tick = 0
        self._mismatch_since: float | None = None
        self._state_file_damaged = False
        self._recorded_opened_at: float | None = None
        self._implausible_ticks: deque[float] = deque()
        self._module_fresh = np.zeros(topology.module_count, dtype=np.bool_)
        self._current_fresh = False
        self._contactors_fresh = False

    @classmethod
    def from_config(
        cls, config: Config, topology: Topology, store: ReadingStore, start_s: float
    ) -> Controller:
        """The controller of a config: its cell file, capacity and estimator (daemon, replay,
        closed loop all build it this way)."""
        cell = CellModel.load(config.path(config.pack.cell_file))
        capacity_ah = config.pack.cell_capacity_ah or cell.info.capacity_ah
        protocol = load_protocol(config.path(config.acquisition.protocol))
        feedback = protocol.mapping.modules.balancing_feedback is not None
        return cls(config, topology, store, capacity_ah, start_s, cell, balancing_feedback=feedback)

    @property
    def tick(self) -> int:
        return self._tick

    @property
    def faults(self) -> FaultState:
        return self._faults

    def restore_latched(
        self, latched: dict[str, dict[str, float | int | None]], now: float, *, damaged: bool
    ) -> None:
        """Re-latch faults persisted before a restart; the machine will start in FAULT.

        ``damaged``: the file could not be read, so what was latched is unknown; the first
        tick latches ``latched_faults_lost`` (fail safe: a reset is needed to run).
        """
        self._faults = restore_latched(self._faults, latched, now, self._table)
        self._state_file_damaged = damaged

    def step(
        self,
        now: float,
        wall_time: float,
        *,
        timing: TickTiming | None = None,
        commands: Sequence[Command] = (),
        bus_error_level: int = 0,
        recorded_command: ContactorCommand | None = None,
    ) -> tuple[PackState, list[Event]]:
        """One tick at ``now``.

        ``recorded_command``: in a replay of a recording made by a running daemon, the contactor
        command that daemon sent; the contactor diagnostics (feedback mismatch, welds) are then
        judged against what was really commanded rather than against this replay's own machine.
        """
        self._tick += 1
        snapshot = self._builder.build(self._store, self._tick, now)
        data_ok = _data_ok(snapshot)
        fault_events: list[FaultEvent] = []
        mode_changes: list[Event] = []
        replies = []
        for command in commands:
            mode_before = self._machine.mode
            replies.append(self._answer(command, snapshot, data_ok, now, fault_events))
            _note_mode_change(
                mode_changes, mode_before, self._machine.mode, self._machine.reason, now
            )

        inputs = self._protection_inputs(snapshot, now, timing, bus_error_level, recorded_command)
        self._faults, evaluated = evaluate(self._faults, inputs, self._table, now)
        fault_events.extend(evaluated)
        before = self._machine
        self._machine = step_machine(
            before, self._machine_inputs(snapshot, data_ok, now), self._config.protection.contactors
        )
        machine = self._machine
        self._estimates = self._estimate(snapshot, now)
        balancing = self._balance(snapshot, now, machine.mode, data_ok)
        reaction = fault_reaction(self._faults, self._table, self._config.limits)
        limit_inputs = inputs_from_snapshot(
            snapshot,
            series_cells=self._topology.cells_per_string,
            contactors_closed=machine.mode is BmsMode.CLOSED,
            charge_fault_factor=reaction.charge_factor,
            discharge_fault_factor=reaction.discharge_factor,
            fault_reason=reaction.reason,
            data_ok=data_ok,
            soc=None if self._estimates is None else self._estimates.pack_soc,
        )
        if balancing is not None and balancing.charge_hold_a is not None:
            limit_inputs = replace(
                limit_inputs,
                balancing_charge_a=balancing.charge_hold_a,
                balancing_reason="balancing near the top of charge: held so bleeding can finish",
            )
        limits = self._limits.step(limit_inputs)
        events = self._source_events(snapshot)
        _note_mode_change(mode_changes, before.mode, machine.mode, machine.reason, now)
        events.extend(mode_changes)
        state = PackState(
            tick=self._tick,
            time_s=now,
            wall_time=wall_time,
            snapshot=snapshot,
            timing=timing,
            mode=machine.mode,
            mode_reason=machine.reason,
            contactor_command=machine.command,
            faults=self._faults,
            fault_events=tuple(fault_events),
            replies=tuple(replies),
            data_ok=data_ok,
            limits=limits,
            estimates=self._estimates,
            balancing=balancing,
        )
        return state, events

    # -- pieces of the tick ------------------------------------------------------------------

    def _balance(
        self, snapshot: PackSnapshot, now: float, mode: BmsMode, data_ok: bool
    ) -> BalancingState | None:
        """One balancing step (after estimation, before limits: the hold feeds the CCL)."""
        if self.balancer is None:
            return None
        blocking = tuple(
            level.key
            for level in self._faults.active()
            if level.level is FaultLevel.FATAL
            or (level.level is FaultLevel.WARNING and level.fault_id not in self._balancing_ignored)
        )
        state = self.balancer.step(
            now,
            snapshot,
            self._estimates,
            mode=mode,
            blocking_faults=blocking,
            data_ok=data_ok,
        )
        self._balancing_mismatch = state.feedback_mismatch_modules
        return state

    def _estimate(self, snapshot: PackSnapshot, now: float) -> Estimates | None:
        """One estimator step; until it has a starting point, start it from OCV when it can."""
        estimator = self.estimator
        if estimator is None:
            return None
        if not self.estimator_ready:
            if not (snapshot.all_cells_valid and snapshot.all_temps_valid):
                return None
            estimator.initialise_from_ocv(snapshot.cell_voltage_v, snapshot.cell_temp_c)
            self.estimator_ready = True
        contactors = snapshot.contactors
        current_is_zero = contactors is not None and not (
            contactors.minus_closed or contactors.plus_closed or contactors.precharge_closed
        )
        return estimator.step(
            now,
            snapshot.pack_current_a,
            snapshot.cell_voltage_v,
            snapshot.cell_voltage_valid,
            snapshot.cell_temp_c,
            current_is_zero,
            # Bleed currents bypass the pack current sensor; the estimator adds them per cell.
            None if self.balancer is None else self.balancer.bleed_current_a(snapshot),
        )

    def _answer(
        self,
        command: Command,
        snapshot: PackSnapshot,
        data_ok: bool,
        now: float,
        fault_events: list[FaultEvent],
    ) -> Reply:
        if command.request in (Request.BALANCING_ON, Request.BALANCING_OFF):
            if self.balancer is None:
                return Reply(command.request, Answer.ILLEGAL, "no balancing configured")
            return self.balancer.answer(command.request)
        reset_cleared = False
        if command.request is Request.RESET:
            before = len(self._faults.latched())
            self._faults, events = reset_latched(self._faults, self._table, now, command.origin)
            fault_events.extend(events)
            reset_cleared = before > 0 and not self._faults.latched()
        self._machine, reply = answer_request(
            self._machine,
            command.request,
            self._machine_inputs(snapshot, data_ok, now),
            reset_cleared,
            latched_left=bool(self._faults.latched()),
        )
        return reply

    def _machine_inputs(self, snapshot: PackSnapshot, data_ok: bool, now: float) -> MachineInputs:
        return MachineInputs(
            now=now,
            has_fatal=self._faults.has_fatal,
            data_ok=data_ok,
            feedback=snapshot.contactors,
            pack_voltage_v=snapshot.pack_voltage_v,
            bus_voltage_v=snapshot.bus_voltage_v,
            current_a=snapshot.pack_current_a,
        )

    def _protection_inputs(
        self,
        snapshot: PackSnapshot,
        now: float,
        timing: TickTiming | None,
        bus_error_level: int,
        recorded_command: ContactorCommand | None = None,
    ) -> ProtectionInputs:
        machine = self._machine
        command = machine.command if recorded_command is None else recorded_command
        opened_at = machine.opened_at
        if recorded_command is not None:
            if not recorded_command.all_open:
                self._recorded_opened_at = None
            elif self._recorded_opened_at is None:
                self._recorded_opened_at = now
            opened_at = self._recorded_opened_at
        feedback = snapshot.contactors
        if feedback is None or command.matches(feedback):
            self._mismatch_since = None
        elif self._mismatch_since is None:
            self._mismatch_since = now
        contactors = self._config.protection.contactors
        current = snapshot.pack_current_a
        window = self._implausible_ticks
        if snapshot.cell_voltage_out_of_range or snapshot.temp_out_of_range:
            window.append(now)
        while window and now - window[0] >= IMPLAUSIBLE_WINDOW_S:
            window.popleft()
        return ProtectionInputs(
            snapshot=snapshot,
            series_cells=self._topology.cells_per_string,
            pack_capacity_ah=self._pack_capacity_ah,
            charging=current is not None and current > self._config.protection.charge_detect_a,
            contactor_mismatch_s=0.0
            if self._mismatch_since is None
            else now - self._mismatch_since,
            open_settled=command.all_open
            and opened_at is not None
            and now - opened_at >= contactors.weld_check_delay_s,
            precharging=machine.mode is BmsMode.PRECHARGE and machine.step == "precharge",
            precharge_failed=machine.precharge_failed,
            bus_error_level=bus_error_level,
            control_stall_s=0.0 if timing is None else timing.stall_s,
            state_file_damaged=self._consume_damage_flag(),
            implausible_recent_ticks=len(window),
            external=self.external.values(now),
            balancing_mismatch_modules=self._balancing_mismatch,
        )

    def _consume_damage_flag(self) -> bool:
        damaged, self._state_file_damaged = self._state_file_damaged, False
        return damaged

    def _source_events(self, snapshot: PackSnapshot) -> list[Event]:
        """Report sources going silent or coming back (the faults judge what that means)."""
        events: list[Event] = []
        now = snapshot.time_s
        fresh = snapshot.module_age_s <= self._config.acquisition.module_timeout_s
        for module in np.flatnonzero(fresh != self._module_fresh):
            module_index = int(module)
            node_id = self._topology.module_node_ids[module_index]
            fields: dict[str, str | int | float | bool] = {
                "module": module_index,
                "node_id": node_id,
            }
            if fresh[module_index]:
                events.append(
                    Event(
                        now,
                        "module_online",
                        f"module {module_index} (node {node_id}) reports",
                        fields,
                    )
                )
            else:
                age = float(snapshot.module_age_s[module_index])
                since = "" if math.isinf(age) else f" for {age:.2f} s"
                events.append(
                    Event(
                        now,
                        "module_silent",
                        f"module {module_index} (node {node_id}) silent{since}",
                        fields,
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


def _note_mode_change(
    events: list[Event], old: BmsMode, new: BmsMode, reason: str, now: float
) -> None:
    if old is not new:
        events.append(
            Event(
                now,
                "mode",
                f"mode {old.value} -> {new.value}: {reason}",
                {"mode": new.value, "previous": old.value},
            )
        )


def _data_ok(snapshot: PackSnapshot) -> bool:
    """Every reading the protection relies on is present and valid: otherwise fail safe."""
    return (
        snapshot.all_cells_valid
        and snapshot.all_temps_valid
        and snapshot.pack_current_a is not None
        and snapshot.pack_voltage_v is not None
        and snapshot.contactors is not None
    )
