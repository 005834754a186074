"""The simulated pack: cells, slave boards, current sensor and HV switch box speaking CAN.

A plant model stepped in simulated time. It encodes its frames through the same protocol file
and DBCs the daemon decodes with, so the simulator exercises the real acquisition path, and it
obeys the master's switch box and balancing commands. It knows nothing of the daemon.

Sign convention: positive current charges the battery.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import can
import numpy as np

from bmsd.canbus.protocol import GroupedValues, Protocol
from bmsd.config import Config, SimFault
from bmsd.model.cell import CellModel
from bmsd.model.topology import Topology
from bmsd.sim.cells import SimCellArray
from bmsd.sim.load import LoadProfile

log = logging.getLogger(__name__)

# Board thermal model of one slave: lumped, heated by its bleed resistors.
BOARD_HEAT_CAPACITY_J_PER_K = 60.0
BOARD_THERMAL_RESISTANCE_K_PER_W = 4.0
# Share of a bleed resistor's heat that reaches the cells next to it.
BLEED_HEAT_TO_CELL = 0.3
# The inverter's DC link bleeds down through its own resistors when disconnected.
LINK_DISCHARGE_TAU_S = 5.0
DEFAULT_BOX_TIMEOUT_S = 0.5
DEFAULT_BALANCING_TIMEOUT_S = 2.0


@dataclass(slots=True)
class _Schedule:
    period_s: float
    next_due_s: float

    def due(self, now_s: float) -> bool:
        if now_s + 1e-9 < self.next_due_s:
            return False
        # Keep the phase; after a long stall send once, not a burst of catch-up frames.
        self.next_due_s += self.period_s * max(
            1, math.floor((now_s - self.next_due_s) / self.period_s) + 1
        )
        return True


class _Encoder:
    """Encodes a DBC message from a partial dict: other signals 0, counters rolling."""

    def __init__(self, message: Any, frame_id: int) -> None:
        self.message = message
        self.frame_id = frame_id
        self.counters = [s.name for s in message.signals if "count" in s.name.lower()]
        self.count = 0
        # A measurement beyond a signal's range saturates, as a real ADC or field does.
        self.ranges = {
            s.name: (s.minimum, s.maximum)
            for s in message.signals
            if s.minimum is not None and s.maximum is not None
        }

    def encode(self, values: dict[str, float]) -> can.Message:
        full: dict[str, float] = {signal.name: 0 for signal in self.message.signals}
        self.count = (self.count + 1) % 16
        for name in self.counters:
            full[name] = self.count
        for name, value in values.items():
            bounds = self.ranges.get(name)
            full[name] = value if bounds is None else min(max(value, bounds[0]), bounds[1])
        data = self.message.encode(full, scaling=True, strict=False)
        return can.Message(
            arbitration_id=self.frame_id,
            is_extended_id=self.message.is_extended_frame,
            data=data,
        )


class SimulatedPack:
    """Cells, boards, sensor and switch box; ``advance`` returns the frames due."""

    def __init__(
        self,
        config: Config,
        protocol: Protocol,
        cell_model: CellModel,
        topology: Topology,
        load: LoadProfile,
    ) -> None:
        sim = config.sim
        self._sim = sim
        self._protocol = protocol
        self._topology = topology
        self._load = load
        self._rng = np.random.default_rng(sim.seed + 1)
        self.cells = SimCellArray(
            cell_model,
            topology.cell_count,
            capacity_spread_pct=sim.capacity_spread_pct,
            resistance_spread_pct=sim.resistance_spread_pct,
            initial_soc=sim.initial_soc,
            soc_spread_pct=sim.soc_spread_pct,
            ambient_temp_c=sim.ambient_temp_c,
            seed=sim.seed,
        )
        for offset in sim.soc_offsets:
            index = offset.module * topology.cells_per_module + offset.cell
            soc = float(self.cells.soc[index]) + offset.offset_pct / 100.0
            self.cells.set_soc(index, min(1.0, max(0.0, soc)))
        self.time_s = 0.0
        modules = topology.module_count
        self.true_current_a = 0.0
        self.bus_voltage_v = 0.0
        self.minus_closed = False
        self.plus_closed = False
        self.precharge_closed = False
        self._box_command = (False, False, False)
        self._box_deadline_s = -math.inf
        self.bleeding = np.zeros(topology.cell_count, dtype=np.bool_)
        self._bleed_deadline_s = np.full(modules, -math.inf)
        self.board_temp_c = np.full(modules, sim.ambient_temp_c)
        self.bled_ah = np.zeros(topology.cell_count)
        # Fault state
        self._pending_faults = sorted(sim.faults, key=lambda fault: fault.start_s)
        self.silent_modules: set[int] = set()
        self._stuck_cells: dict[int, float] = {}
        self._noisy_cells: dict[int, float] = {}
        self._stuck_current_a: float | None = None
        self._welded = False
        self._build_encoders()
        self._build_schedules()

    # -- set-up -----------------------------------------------------------------------------

    def _build_encoders(self) -> None:
        mapping = self._protocol.mapping
        stride = mapping.modules.node_id_stride

        def per_module(name: str) -> list[_Encoder]:
            message = self._protocol.message(name)
            return [
                _Encoder(message, message.frame_id + node * stride)
                for node in self._topology.module_node_ids
            ]

        modules = mapping.modules
        self._cell_enc = per_module(modules.cell_voltages.message)
        self._temp_enc = per_module(modules.temperatures.message)
        self._status_enc = per_module(modules.status.message) if modules.status else None
        feedback = modules.balancing_feedback
        self._feedback_enc = per_module(feedback.message) if feedback else None
        self._sensor_enc: dict[str, _Encoder] = {}
        sensor = mapping.current_sensor
        refs = [sensor.current, sensor.pack_voltage, sensor.temperature]
        for ref in refs:
            if ref is not None and ref.message not in self._sensor_enc:
                message = self._protocol.message(ref.message)
                self._sensor_enc[ref.message] = _Encoder(message, message.frame_id)
        box = mapping.switchbox
        self._box_enc = None
        if box is not None:
            message = self._protocol.message(box.feedback_message)
            self._box_enc = _Encoder(message, message.frame_id)
        # Commands we obey, by frame id.
        self._box_command_id = (
            self._protocol.message(box.command_message).frame_id if box is not None else -1
        )
        command = modules.balancing_command
        self._balancing_ids: dict[int, int] = {}
        if command is not None:
            base = self._protocol.message(command.message).frame_id
            for module, node in enumerate(self._topology.module_node_ids):
                self._balancing_ids[base + node * stride] = module

    def _build_schedules(self) -> None:
        sim, modules = self._sim, self._topology.module_count

        # Stagger modules across the period, as real slaves are not synchronised.
        def staggered(period_s: float) -> list[_Schedule]:
            return [_Schedule(period_s, period_s * m / modules) for m in range(modules)]

        self._cell_sched = staggered(sim.cell_period_s)
        self._temp_sched = staggered(sim.temp_period_s)
        self._status_sched = staggered(sim.status_period_s)
        self._current_sched = _Schedule(sim.current_period_s, 0.0)
        self._box_sched = _Schedule(sim.switchbox_period_s, 0.0)

    # -- physics ----------------------------------------------------------------------------

    @property
    def pack_voltage_v(self) -> float:
        """Open-terminal pack voltage: the mean of the string voltages (strings in parallel)."""
        strings = self._topology.strings
        voltages = self.cells.terminal_voltage_v().reshape(strings, -1).sum(axis=1)
        return float(voltages.mean())

    def advance(self, dt_s: float) -> list[can.Message]:
        """Step the physics by ``dt_s`` and return the frames due at the new time."""
        self.time_s += dt_s
        self._apply_faults()
        self._step_switchbox(dt_s)
        self._step_cells(dt_s)
        return self._due_frames()

    def _step_cells(self, dt_s: float) -> None:
        topology = self._topology
        pack_v = self.pack_voltage_v
        # The load (the inverter) can only draw or push current through closed contactors.
        connected = self.minus_closed and self.plus_closed
        current_a = self._load.current_a(self.time_s) if connected else 0.0
        if self.precharge_closed and self.minus_closed and not self.plus_closed:
            # The link capacitor charges through the precharge resistor: a discharge current.
            current_a = -(pack_v - self.bus_voltage_v) / self._sim.precharge_resistor_ohm
        self.true_current_a = current_a
        cell_current = current_a / topology.strings / topology.cells_in_parallel
        # Expire balancing commands that were not refreshed: the slave's own timeout.
        expired = np.repeat(self._bleed_deadline_s < self.time_s, topology.cells_per_module)
        self.bleeding &= ~expired
        bleed_a = np.where(
            self.bleeding, self.cells.terminal_voltage_v() / self._sim.bleed_resistor_ohm, 0.0
        )
        bleed_w = bleed_a * bleed_a * self._sim.bleed_resistor_ohm
        self.bled_ah += bleed_a * dt_s / 3600.0
        self.cells.add_heat_w(bleed_w * BLEED_HEAT_TO_CELL)
        self.cells.step(dt_s, cell_current - bleed_a)
        board_w = bleed_w.reshape(topology.module_count, -1).sum(axis=1)
        target = self._sim.ambient_temp_c + board_w * BOARD_THERMAL_RESISTANCE_K_PER_W
        decay = math.exp(-dt_s / (BOARD_THERMAL_RESISTANCE_K_PER_W * BOARD_HEAT_CAPACITY_J_PER_K))
        self.board_temp_c = target + (self.board_temp_c - target) * decay

    def _step_switchbox(self, dt_s: float) -> None:
        minus, plus, precharge = self._box_command
        if self.time_s > self._box_deadline_s:
            minus = plus = precharge = False  # the box's own timeout: a dead master opens all
        if self._welded:
            minus = minus or self.minus_closed
            plus = plus or self.plus_closed
        self.minus_closed, self.plus_closed, self.precharge_closed = minus, plus, precharge
        pack_v = self.pack_voltage_v
        if self.minus_closed and self.plus_closed:
            self.bus_voltage_v = pack_v
        elif self.minus_closed and self.precharge_closed:
            tau = self._sim.precharge_resistor_ohm * self._sim.link_capacitance_f
            self.bus_voltage_v += (pack_v - self.bus_voltage_v) * (1 - math.exp(-dt_s / tau))
        else:
            self.bus_voltage_v *= math.exp(-dt_s / LINK_DISCHARGE_TAU_S)

    # -- faults -----------------------------------------------------------------------------

    def _apply_faults(self) -> None:
        while self._pending_faults and self._pending_faults[0].start_s <= self.time_s:
            fault = self._pending_faults.pop(0)
            self._inject(fault)

    def _inject(self, fault: SimFault) -> None:
        index = fault.module * self._topology.cells_per_module + fault.cell
        log.warning("simulator: injecting %s at t=%.1f s", fault.kind, self.time_s)
        if fault.kind == "cell_drift":
            self.cells.set_leakage_a(index, fault.value)
        elif fault.kind == "stuck_sensor":
            self._stuck_cells[index] = float(self.cells.terminal_voltage_v()[index])
        elif fault.kind == "noisy_sensor":
            self._noisy_cells[index] = fault.value
        elif fault.kind == "silent_module":
            self.silent_modules.add(fault.module)
        elif fault.kind == "contactor_stuck_closed":
            self._welded = True
        elif fault.kind == "stuck_current_sensor":
            self._stuck_current_a = self.true_current_a

    def override_cell_voltage(self, index: int, voltage_v: float | None) -> None:
        """Report ``voltage_v`` for flat cell ``index`` from now on (None: measure again).

        For tests and benchmarks that need a measured value to stay put, e.g. an over-voltage.
        """
        if voltage_v is None:
            self._stuck_cells.pop(index, None)
        else:
            self._stuck_cells[index] = voltage_v

    # -- commands from the master -----------------------------------------------------------

    def handle_frame(self, message: can.Message) -> None:
        """Obey a command frame from the master; anything else is ignored, as a slave would."""
        frame_id = message.arbitration_id
        try:
            if frame_id == self._box_command_id:
                self._on_box_command(message)
            elif frame_id in self._balancing_ids:
                self._on_balancing_command(self._balancing_ids[frame_id], message)
        except Exception as exc:  # a malformed command is dropped, as the hardware would
            log.debug("simulator ignored a malformed command 0x%X: %s", frame_id, exc)

    def _on_box_command(self, message: can.Message) -> None:
        box = self._protocol.mapping.switchbox
        assert box is not None
        decoded = self._protocol.message(box.command_message).decode(
            bytes(message.data), decode_choices=False
        )
        self._box_command = (
            bool(decoded[box.minus_command_signal]),
            bool(decoded[box.plus_command_signal]),
            bool(decoded[box.precharge_command_signal]),
        )
        timeout_s = float(decoded[box.timeout_signal]) if box.timeout_signal else 0.0
        self._box_deadline_s = self.time_s + (timeout_s or DEFAULT_BOX_TIMEOUT_S)

    def _on_balancing_command(self, module: int, message: can.Message) -> None:
        command = self._protocol.mapping.modules.balancing_command
        assert command is not None
        decoded = self._protocol.message(command.message).decode(
            bytes(message.data), decode_choices=False
        )
        cells = self._topology.cells_per_module
        first = int(decoded[command.group_signal]) * command.group_size
        mask = int(decoded[command.mask_signal])
        base = module * cells
        for k in range(min(command.group_size, cells - first)):
            self.bleeding[base + first + k] = bool((mask >> k) & 1)
        timeout_s = float(decoded[command.timeout_signal]) if command.timeout_signal else 0.0
        self._bleed_deadline_s[module] = self.time_s + (timeout_s or DEFAULT_BALANCING_TIMEOUT_S)

    # -- frames -----------------------------------------------------------------------------

    def measured_cell_voltage_v(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        voltage = self.cells.terminal_voltage_v()
        noise = self._rng.normal(0.0, self._sim.voltage_noise_v, voltage.size)
        measured = voltage + noise
        for index, value in self._stuck_cells.items():
            measured[index] = value
        for index, sigma in self._noisy_cells.items():
            measured[index] += self._rng.normal(0.0, sigma)
        return measured

    def _due_frames(self) -> list[can.Message]:
        now = self.time_s
        frames: list[can.Message] = []
        modules = self._protocol.mapping.modules
        cells_per_module = self._topology.cells_per_module
        cell_v: np.ndarray[Any, np.dtype[np.float64]] | None = None
        for module in range(self._topology.module_count):
            silent = module in self.silent_modules
            if self._cell_sched[module].due(now) and not silent:
                if cell_v is None:
                    cell_v = self.measured_cell_voltage_v()
                values = cell_v[module * cells_per_module : (module + 1) * cells_per_module]
                frames.extend(_grouped(self._cell_enc[module], modules.cell_voltages, values))
                if self._feedback_enc is not None and modules.balancing_feedback is not None:
                    frames.extend(self._feedback_frames(module))
            if self._temp_sched[module].due(now) and not silent:
                frames.extend(
                    _grouped(
                        self._temp_enc[module], modules.temperatures, self._sensor_temps(module)
                    )
                )
            if self._status_sched[module].due(now) and not silent and self._status_enc:
                frames.append(self._status_frame(module))
        if self._current_sched.due(now):
            frames.extend(self._sensor_frames())
        if self._box_sched.due(now) and self._box_enc is not None:
            frames.append(self._box_frame())
        return frames

    def _sensor_temps(self, module: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        topology = self._topology
        temps = self.cells.temp_c[
            module * topology.cells_per_module : (module + 1) * topology.cells_per_module
        ]
        sensors = np.empty(topology.temps_per_module)
        for sensor in range(topology.temps_per_module):
            near = [
                c
                for c in range(topology.cells_per_module)
                if topology.cell_temp_sensor(c) == sensor
            ]
            sensors[sensor] = temps[near].mean() if near else self._sim.ambient_temp_c
        return sensors + self._rng.normal(0.0, 0.1, sensors.size)

    def _status_frame(self, module: int) -> can.Message:
        status = self._protocol.mapping.modules.status
        assert status is not None and self._status_enc is not None
        cells = self._topology.cells_per_module
        values: dict[str, float] = {}
        if status.board_temp_signal:
            values[status.board_temp_signal] = round(float(self.board_temp_c[module]), 1)
        bleeding = int(self.bleeding[module * cells : (module + 1) * cells].sum())
        message = self._status_enc[module].message
        if "BalancingCount" in {signal.name for signal in message.signals}:
            values["BalancingCount"] = bleeding
        return self._status_enc[module].encode(values)

    def _feedback_frames(self, module: int) -> list[can.Message]:
        feedback = self._protocol.mapping.modules.balancing_feedback
        assert feedback is not None and self._feedback_enc is not None
        cells = self._topology.cells_per_module
        flags = self.bleeding[module * cells : (module + 1) * cells]
        frames = []
        for group, first in enumerate(range(0, cells, feedback.group_size)):
            mask = 0
            for k, flag in enumerate(flags[first : first + feedback.group_size]):
                if flag:
                    mask |= 1 << k
            frames.append(
                self._feedback_enc[module].encode(
                    {feedback.group_signal: group, feedback.mask_signal: mask}
                )
            )
        return frames

    def _sensor_frames(self) -> list[can.Message]:
        sensor = self._protocol.mapping.current_sensor
        current = self._stuck_current_a
        if current is None:
            current = self.true_current_a + self._rng.normal(0.0, self._sim.current_noise_a)
        values: dict[str, dict[str, float]] = {}

        def put(ref: Any, value: float) -> None:
            values.setdefault(ref.message, {})[ref.signal] = round((value - ref.offset) / ref.scale)

        put(sensor.current, current)
        if sensor.pack_voltage is not None:
            put(sensor.pack_voltage, self.pack_voltage_v)
        if sensor.temperature is not None:
            values.setdefault(sensor.temperature.message, {})[sensor.temperature.signal] = round(
                self._sim.ambient_temp_c, 1
            )
        return [self._sensor_enc[name].encode(signals) for name, signals in values.items()]

    def _box_frame(self) -> can.Message:
        box = self._protocol.mapping.switchbox
        assert box is not None and self._box_enc is not None
        values: dict[str, float] = {
            box.minus_closed_signal: int(self.minus_closed),
            box.plus_closed_signal: int(self.plus_closed),
            box.precharge_closed_signal: int(self.precharge_closed),
        }
        if box.bus_voltage is not None:
            values[box.bus_voltage.signal] = round(self.bus_voltage_v, 1)
        return self._box_enc.encode(values)


def _grouped(encoder: _Encoder, grouped: GroupedValues, values: Any) -> list[can.Message]:
    per_group = len(grouped.value_signals)
    frames = []
    for group, first in enumerate(range(0, len(values), per_group)):
        signals: dict[str, float] = {grouped.group_signal: group}
        for name, value in zip(
            grouped.value_signals, values[first : first + per_group], strict=False
        ):
            signals[name] = (float(value) - grouped.offset) / grouped.scale
        frames.append(encoder.encode(signals))
    return frames
