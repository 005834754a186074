"""The simulated pack end to end through the real codec, in simulated time.

Every frame the SimulatedPack emits goes through FrameDecoder and Ingest into a ReadingStore,
and the SnapshotBuilder's view must match the simulated physics. Commands reach the pack as
frames built by FrameEncoder, as they would from the daemon. Time is ``pack.advance(dt)``
only; nothing here waits on a real clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import can
import numpy as np
import pytest

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder, FrameEncoder
from bmsd.canbus.protocol import Protocol, load_protocol
from bmsd.config import Config, load_config
from bmsd.model.readings import Quantity
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.topology import Topology
from bmsd.sim.pack import SimulatedPack
from bmsd.sim.runner import build_simulated_pack

ROOT = Path(__file__).resolve().parents[3]
SIM_CONFIG = ROOT / "etc" / "sim.toml"
QUIET = ("sim.load.kind='constant'", "sim.load.current_a=0.0", "sim.voltage_noise_v=0.0")


class Rig:
    """A simulated pack wired to the daemon's acquisition path."""

    def __init__(self, *overrides: str) -> None:
        self.config: Config = load_config(SIM_CONFIG, overrides)
        self.topology = Topology.from_config(self.config.pack)
        self.protocol: Protocol = load_protocol(self.config.path(self.config.acquisition.protocol))
        self.pack: SimulatedPack = build_simulated_pack(self.config, self.protocol, self.topology)
        self.decoder = FrameDecoder(self.protocol, self.topology)
        self.encoder = FrameEncoder(self.protocol, self.topology)
        self.store = ReadingStore(self.topology)
        self.stats = BusStats()
        self.ingest = Ingest(self.decoder, self.store, self.stats)
        self.builder = SnapshotBuilder(self.topology, self.config.acquisition)
        self.frames: list[tuple[float, can.Message]] = []
        self.ticks = 0

    def run(
        self,
        seconds: float,
        dt_s: float = 0.01,
        before_step: Callable[[Rig], None] | None = None,
    ) -> None:
        """Advance ``seconds`` of simulated time, feeding every frame into the store."""
        for _ in range(round(seconds / dt_s)):
            if before_step is not None:
                before_step(self)
            for message in self.pack.advance(dt_s):
                self.frames.append((self.pack.time_s, message))
                self.ingest.on_frame(message, self.pack.time_s)

    def snapshot(self) -> PackSnapshot:
        self.ticks += 1
        return self.builder.build(self.store, self.ticks, self.pack.time_s)

    def command_box(self, *, minus: bool, plus: bool, precharge: bool, timeout_s: float) -> None:
        self.pack.handle_frame(
            self.encoder.switchbox_command(
                minus=minus, plus=plus, precharge=precharge, counter=self.ticks, timeout_s=timeout_s
            )
        )

    def command_bleed(self, module: int, cells: list[int], timeout_s: float) -> None:
        wanted = [k in cells for k in range(self.topology.cells_per_module)]
        for message in self.encoder.balancing_command(module, wanted, timeout_s):
            self.pack.handle_frame(message)

    def run_closed(self, seconds: float) -> None:
        """Run with the contactors held closed, as the daemon's state machine would."""

        def refresh(rig: Rig) -> None:
            if round(rig.pack.time_s / 0.01) % 10 == 0:
                rig.command_box(minus=True, plus=True, precharge=False, timeout_s=0.5)

        self.run(seconds, before_step=refresh)

    def module_frame_ids(self, module: int) -> set[int]:
        node = self.topology.module_node_ids[module]
        stride = self.protocol.mapping.modules.node_id_stride
        modules = self.protocol.mapping.modules
        names = [modules.cell_voltages.message, modules.temperatures.message]
        names += [m.message for m in (modules.status, modules.balancing_feedback) if m]
        return {self.protocol.message(name).frame_id + node * stride for name in names}


def test_frames_decode_into_the_simulated_state() -> None:
    rig = Rig("sim.load.kind='constant'", "sim.load.current_a=100.0")
    rig.run_closed(2.0)
    assert rig.stats.unknown_frames == 0
    assert rig.stats.decode_errors == 0
    assert set(rig.stats.frames_by_message) == set(rig.decoder.message_names)
    snapshot = rig.snapshot()
    assert snapshot.all_cells_valid
    assert snapshot.all_temps_valid
    true_v = rig.pack.cells.terminal_voltage_v()
    # Noise is 1 mV (1 sigma) plus 1 mV quantisation; 6 mV is far beyond any honest draw.
    assert np.abs(snapshot.cell_voltage_v - true_v).max() < 0.006
    assert np.abs(snapshot.cell_voltage_v - true_v).mean() < 0.002
    assert snapshot.pack_current_a == pytest.approx(100.0, abs=0.3)
    assert rig.pack.true_current_a == 100.0
    assert snapshot.pack_voltage_v == pytest.approx(rig.pack.pack_voltage_v, abs=0.01)
    assert snapshot.temperature is not None
    assert snapshot.temperature.mean == pytest.approx(25.0, abs=0.5)
    assert snapshot.sensor_error_flags == 0
    assert not snapshot.balancing_feedback.any()


def test_cell_voltages_exact_without_noise() -> None:
    rig = Rig(*QUIET)
    rig.run(0.5)
    snapshot = rig.snapshot()
    # With no noise only the 1 mV raster of the frame remains (cells barely move at 0 A).
    assert np.abs(snapshot.cell_voltage_v - rig.pack.cells.terminal_voltage_v()).max() <= 0.0006
    assert snapshot.cell_voltage is not None
    assert snapshot.cell_voltage.spread > 0.0  # the cells' SOC spread shows


def _bleeding_pair(refresh_until_s: float, total_s: float) -> tuple[Rig, Rig, float]:
    """Two identical packs; one bleeds module 1 cell 3. Returns (bled, reference, expected Ah)."""
    bled, reference = Rig(*QUIET), Rig(*QUIET)
    cell = 1 * bled.topology.cells_per_module + 3
    resistor = bled.config.sim.bleed_resistor_ohm
    dt = 0.05
    expected_ah = 0.0
    for step in range(round(total_s / dt)):
        if step % 20 == 0 and bled.pack.time_s < refresh_until_s - 1e-9:
            bled.command_bleed(1, [3], timeout_s=2.0)
        if bled.pack.bleeding[cell]:
            expected_ah += float(bled.pack.cells.terminal_voltage_v()[cell]) / resistor * dt / 3600
        bled.run(dt, dt)
        reference.run(dt, dt)
    return bled, reference, expected_ah


def test_bleeding_drains_only_the_commanded_cell() -> None:
    bled, reference, expected_ah = _bleeding_pair(refresh_until_s=10.0, total_s=10.0)
    cell = 1 * bled.topology.cells_per_module + 3
    lost_ah = reference.pack.cells.charge_ah - bled.pack.cells.charge_ah
    # V/R·t: about 3.3 V / 33 Ω for 10 s.
    voltage = float(bled.pack.cells.terminal_voltage_v()[cell])
    assert lost_ah[cell] == pytest.approx(voltage / 33.0 * 10.0 / 3600.0, rel=0.02)
    assert lost_ah[cell] == pytest.approx(expected_ah, rel=1e-3)
    others = np.delete(lost_ah, cell)
    assert np.abs(others).max() < 1e-12
    snapshot = bled.snapshot()
    expected = np.zeros(bled.topology.cell_count, dtype=bool)
    expected[cell] = True
    assert snapshot.balancing_feedback.tolist() == expected.tolist()
    assert not reference.snapshot().balancing_feedback.any()


def test_bleeding_stops_when_the_command_is_not_refreshed() -> None:
    # Last command at t = 1 s with a 2 s timeout: bleeding until t = 3 s, then nothing.
    bled, reference, _ = _bleeding_pair(refresh_until_s=1.5, total_s=2.9)
    cell = 1 * bled.topology.cells_per_module + 3
    assert bled.pack.bleeding[cell]
    assert bled.snapshot().balancing_feedback[cell]
    bled.run(0.3, 0.05)
    reference.run(0.3, 0.05)
    assert not bled.pack.bleeding.any()
    assert not bled.snapshot().balancing_feedback.any()
    lost_then = (reference.pack.cells.charge_ah - bled.pack.cells.charge_ah)[cell]
    assert lost_then == pytest.approx(3.3 / 33.0 * 3.0 / 3600.0, rel=0.05)
    bled.run(5.0, 0.05)
    reference.run(5.0, 0.05)
    lost_later = (reference.pack.cells.charge_ah - bled.pack.cells.charge_ah)[cell]
    assert lost_later == pytest.approx(lost_then, abs=1e-12)


def test_silent_module_falls_silent_and_goes_stale() -> None:
    rig = Rig(*QUIET, "sim.faults=[{kind='silent_module', module=1, start_s=1.0}]")
    rig.run(3.0, 0.02)
    silent_ids = rig.module_frame_ids(1)
    before = [t for t, m in rig.frames if m.arbitration_id in silent_ids and t < 1.0]
    after = [t for t, m in rig.frames if m.arbitration_id in silent_ids and t >= 1.0]
    assert len(before) > 10
    assert after == []
    other_ids = rig.module_frame_ids(0)
    assert any(t >= 2.5 for t, m in rig.frames if m.arbitration_id in other_ids)
    snapshot = rig.snapshot()
    cells = rig.topology.cells_per_module
    valid = snapshot.cell_voltage_valid.reshape(-1, cells).all(axis=1)
    assert valid.tolist() == [True, False, True, True]
    assert snapshot.module_age_s[1] > rig.config.acquisition.module_timeout_s
    assert snapshot.invalid_cell_count == cells


def test_precharge_charges_the_link_like_an_rc() -> None:
    rig = Rig(*QUIET)
    sim = rig.config.sim
    tau_s = sim.precharge_resistor_ohm * sim.link_capacitance_f
    dt = tau_s / 100
    rig.command_box(minus=True, plus=False, precharge=True, timeout_s=1.0)
    pack_v = rig.pack.pack_voltage_v
    assert rig.pack.bus_voltage_v == 0.0
    rig.run(tau_s, dt)
    assert rig.pack.bus_voltage_v / pack_v == pytest.approx(1 - math.exp(-1), abs=0.01)
    # The precharge current is the RC current, seen by the current sensor as a discharge.
    expected_a = -(rig.pack.pack_voltage_v - rig.pack.bus_voltage_v) / sim.precharge_resistor_ohm
    assert rig.pack.true_current_a == pytest.approx(expected_a, rel=0.05)
    rig.run(4 * tau_s, dt)
    assert rig.pack.bus_voltage_v / pack_v == pytest.approx(1 - math.exp(-5), abs=0.01)
    # Through the codec: feedback frames show minus and precharge closed, and the bus voltage.
    rig.run(0.2, dt)
    snapshot = rig.snapshot()
    assert snapshot.contactors is not None
    closed = (
        snapshot.contactors.minus_closed,
        snapshot.contactors.plus_closed,
        snapshot.contactors.precharge_closed,
    )
    assert closed == (True, False, True)
    assert snapshot.bus_voltage_v == pytest.approx(rig.pack.bus_voltage_v, abs=0.2)
    assert snapshot.bus_voltage_v == pytest.approx(snapshot.pack_voltage_v, rel=0.01)


def test_switchbox_opens_everything_when_commands_stop() -> None:
    rig = Rig(*QUIET)
    rig.command_box(minus=True, plus=True, precharge=False, timeout_s=0.5)
    rig.run(0.4)
    assert (rig.pack.minus_closed, rig.pack.plus_closed) == (True, True)
    snapshot = rig.snapshot()
    assert snapshot.contactors is not None
    assert (snapshot.contactors.minus_closed, snapshot.contactors.plus_closed) == (True, True)
    assert snapshot.bus_voltage_v == pytest.approx(rig.pack.pack_voltage_v, abs=0.1)
    rig.run(0.3)  # t = 0.7 s: 0.2 s past the box's own timeout, no new command
    assert (rig.pack.minus_closed, rig.pack.plus_closed, rig.pack.precharge_closed) == (
        False,
        False,
        False,
    )
    rig.run(0.2)
    snapshot = rig.snapshot()
    assert snapshot.contactors is not None
    assert not (
        snapshot.contactors.minus_closed
        or snapshot.contactors.plus_closed
        or snapshot.contactors.precharge_closed
    )


def test_switchbox_stays_closed_while_commands_are_refreshed() -> None:
    rig = Rig(*QUIET)

    def refresh(rig: Rig) -> None:
        if round(rig.pack.time_s / 0.01) % 10 == 0:
            rig.command_box(minus=True, plus=True, precharge=False, timeout_s=0.5)

    rig.run(3.0, 0.01, before_step=refresh)
    assert (rig.pack.minus_closed, rig.pack.plus_closed) == (True, True)


@pytest.mark.parametrize("welded", [False, True])
def test_contactor_stuck_closed_ignores_the_open_command(welded: bool) -> None:
    faults = "sim.faults=[{kind='contactor_stuck_closed', start_s=0.5}]"
    rig = Rig(*QUIET, *((faults,) if welded else ()))
    rig.command_box(minus=True, plus=True, precharge=False, timeout_s=2.0)
    rig.run(1.0)
    rig.command_box(minus=False, plus=False, precharge=False, timeout_s=2.0)
    rig.run(0.5)
    snapshot = rig.snapshot()
    assert snapshot.contactors is not None
    feedback = (snapshot.contactors.minus_closed, snapshot.contactors.plus_closed)
    assert feedback == ((True, True) if welded else (False, False))
    rig.run(3.0)  # and past the box's own timeout
    assert (rig.pack.minus_closed, rig.pack.plus_closed) == (welded, welded)


def test_current_sensor_follows_the_load() -> None:
    rig = Rig("sim.load.kind='constant'", "sim.load.current_a=-250.0", "sim.current_noise_a=0.0")
    rig.run_closed(0.5)
    snapshot = rig.snapshot()
    assert snapshot.pack_current_a == pytest.approx(-250.0, abs=0.001)
    _value, received_at = rig.store.scalars[Quantity.PACK_CURRENT_A]
    assert rig.pack.time_s - received_at <= rig.config.sim.current_period_s + 1e-9


def test_no_current_flows_with_contactors_open() -> None:
    rig = Rig("sim.load.kind='constant'", "sim.load.current_a=-250.0", "sim.current_noise_a=0.0")
    rig.run(0.5)
    assert rig.pack.true_current_a == 0.0
    assert rig.snapshot().pack_current_a == pytest.approx(0.0, abs=0.001)
    charge_before = rig.pack.cells.charge_ah.copy()
    rig.run(1.0)
    # Only self-discharge moves the charge while the load is disconnected.
    # (3 %/month on 280 Ah is 12 mA: 3 µAh in a second, against 69 mAh had 250 A flowed).
    assert np.abs(rig.pack.cells.charge_ah - charge_before).max() < 1e-5
