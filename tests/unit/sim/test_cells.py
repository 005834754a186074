"""The simulated cells behave like the physics the daemon is tested against: charge moves by
I·t, voltages show IR drop, RC relaxation and over-charge, temperature follows I²R."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bmsd.model.cell import CellModel, load_cell_file
from bmsd.sim.cells import SimCellArray

CELLS_DIR = Path(__file__).resolve().parents[3] / "etc" / "cells"


def model(
    name: str = "lfp_280ah", *, self_discharge_pct_per_month: float | None = None
) -> CellModel:
    """A shipped cell, optionally without self-discharge so charge balances are exact."""
    file = load_cell_file(CELLS_DIR / f"{name}.toml")
    if self_discharge_pct_per_month is not None:
        info = dataclasses.replace(
            file.cell, self_discharge_pct_per_month=self_discharge_pct_per_month
        )
        file = dataclasses.replace(file, cell=info)
    return CellModel(file)


def cells(
    cell: CellModel | None = None,
    count: int = 8,
    *,
    soc: float = 0.5,
    capacity_spread_pct: float = 0.0,
    resistance_spread_pct: float = 0.0,
    ambient_temp_c: float = 25.0,
) -> SimCellArray:
    return SimCellArray(
        cell or model(self_discharge_pct_per_month=0.0),
        count,
        capacity_spread_pct=capacity_spread_pct,
        resistance_spread_pct=resistance_spread_pct,
        initial_soc=soc,
        soc_spread_pct=0.0,
        ambient_temp_c=ambient_temp_c,
        seed=7,
    )


def run(sim: SimCellArray, current_a: float | np.ndarray, duration_s: float, dt_s: float) -> None:
    for _ in range(round(duration_s / dt_s)):
        sim.step(dt_s, current_a)


def test_charge_moves_by_current_times_time_with_efficiency_on_charge() -> None:
    sim = cells(capacity_spread_pct=5.0)
    assert np.ptp(sim.capacity_ah) > 1.0  # the cells really differ
    efficiency = sim.cell.info.coulombic_efficiency
    start = sim.charge_ah.copy()
    run(sim, 100.0, 1800.0, 1.0)  # 100 A for 0.5 h
    assert sim.charge_ah - start == pytest.approx(np.full(8, 50.0 * efficiency), rel=1e-9)
    # The same charge is a different SOC change on each cell.
    assert np.ptp(sim.soc) > 0.005
    start = sim.charge_ah.copy()
    run(sim, -100.0, 1800.0, 1.0)
    assert sim.charge_ah - start == pytest.approx(np.full(8, -50.0), rel=1e-9)


def test_a_bleed_current_lowers_only_that_cell() -> None:
    sim = cells()
    start = sim.charge_ah.copy()
    current = np.full(8, -20.0)
    current[3] -= 0.1  # 100 mA bleed on cell 3, subtracted from its terminal current
    run(sim, current, 3600.0, 10.0)
    delta = sim.charge_ah - start
    assert delta[3] == pytest.approx(-20.1)
    assert np.delete(delta, 3) == pytest.approx(np.full(7, -20.0))


def test_an_injected_leak_drifts_one_cell_low_and_another_high() -> None:
    sim = cells()
    start = sim.charge_ah.copy()
    sim.set_leakage_a(2, 0.5)
    sim.set_leakage_a([5], -0.25)
    before = sim.terminal_voltage_v().copy()
    sim.step(1e-3, 0.0)
    # A leak is internal: no IR drop at the terminals.
    assert sim.terminal_voltage_v() == pytest.approx(before, abs=1e-6)
    run(sim, 0.0, 10 * 3600.0, 60.0)
    delta = sim.charge_ah - start
    assert delta[2] == pytest.approx(-5.0, rel=1e-6)
    assert delta[5] == pytest.approx(2.5, rel=1e-6)
    assert np.delete(delta, [2, 5]) == pytest.approx(np.zeros(6), abs=1e-6)


def test_long_rest_with_huge_steps_stays_finite_and_only_self_discharges() -> None:
    sim = cells(model(), soc=0.9)  # shipped self-discharge (3 %/month)
    start = sim.charge_ah.copy()
    run(sim, 0.0, 30 * 86400.0, 3600.0)
    for values in (sim.charge_ah, sim.temp_c, sim.terminal_voltage_v(), sim.rc_voltage_v):
        assert np.all(np.isfinite(values))
    assert sim.charge_ah - start == pytest.approx(np.full(8, -0.03 * 280.0), rel=1e-9)
    assert sim.temp_c == pytest.approx(np.full(8, 25.0))


def test_large_and_small_steps_agree() -> None:
    coarse, fine = cells(count=2), cells(count=2)
    run(coarse, 150.0, 300.0, 10.0)
    run(fine, 150.0, 300.0, 0.05)
    assert coarse.charge_ah == pytest.approx(fine.charge_ah, rel=1e-9)
    assert coarse.terminal_voltage_v() == pytest.approx(fine.terminal_voltage_v(), abs=2e-4)
    assert coarse.temp_c == pytest.approx(fine.temp_c, abs=0.02)


def test_voltage_is_ocv_at_rest_after_relaxation() -> None:
    sim = cells(model("nmc_100ah", self_discharge_pct_per_month=0.0))
    run(sim, 50.0, 1800.0, 1.0)
    assert np.all(sim.terminal_voltage_v() - sim.ocv_v() > 0.02)  # polarised while charging
    run(sim, 0.0, 3 * 3600.0, 5.0)  # rest: > 100 τ1, and heat gone
    expected = sim.cell.ocv_v(sim.soc, sim.temp_c)
    assert sim.terminal_voltage_v() == pytest.approx(expected, abs=1e-6)


def test_current_step_gives_an_instant_ir_drop() -> None:
    sim = cells()
    rest_v = sim.terminal_voltage_v().copy()
    sim.step(1e-3, -200.0)
    r0 = sim.cell.r0_ohm(0.5, 25.0)
    assert sim.terminal_voltage_v() - rest_v == pytest.approx(np.full(8, -200.0 * r0), rel=0.01)


def test_rc_voltage_relaxes_with_the_cell_time_constant() -> None:
    sim = cells(count=1)
    run(sim, 100.0, 1200.0, 1.0)  # 20 τ: RC branch at steady state
    r1 = float(sim.cell.r1_ohm(sim.soc, sim.temp_c)[0])
    assert sim.rc_voltage_v[0] == pytest.approx(100.0 * r1, rel=0.01)
    tau_s = float(sim.cell.tau1_s(sim.soc, sim.temp_c)[0])
    v0 = sim.terminal_voltage_v()[0] - sim.ocv_v()[0]  # last current was 100 A: IR + RC
    sim.step(tau_s, 0.0)
    v1 = sim.terminal_voltage_v()[0] - sim.ocv_v()[0]  # now 0 A: RC only
    v0_rc = v0 - 100.0 * float(sim.cell.r0_ohm(sim.soc, sim.temp_c)[0])
    assert v1 == pytest.approx(v0_rc * math.exp(-1.0), rel=0.02)


def test_temperature_rises_under_current_and_relaxes_to_ambient() -> None:
    sim = cells(count=2)
    run(sim, 140.0, 3600.0, 5.0)
    assert np.all(sim.temp_c > 27.0)
    run(sim, 0.0, 48 * 3600.0, 60.0)
    assert sim.temp_c == pytest.approx(np.full(2, 25.0), abs=1e-3)


def test_joule_heating_steady_state_is_i_squared_r0_times_r_th() -> None:
    sim = cells(count=1)
    for _ in range(12 * 180):  # ±140 A square wave, 20 s period, 12 h ≫ τ_th: SOC stays put
        sim.step(10.0, 140.0)
        sim.step(10.0, -140.0)
    r0 = float(sim.cell.r0_ohm(sim.soc, sim.temp_c)[0])
    r_th = sim.cell.file.thermal.thermal_resistance_k_per_w
    # The RC branch barely charges in 10 s half-periods, so R0 dominates the loss.
    assert sim.temp_c[0] - 25.0 == pytest.approx(140.0**2 * r0 * r_th, rel=0.05)


def test_heat_steady_state_matches_the_lumped_model() -> None:
    sim = cells(count=3)
    thermal = sim.cell.file.thermal
    for _ in range(600):  # 600 × 300 s = 50 h ≫ τ_th = 2.25 h
        sim.add_heat_w(np.array([0.0, 2.0, 4.0]))
        sim.step(300.0, 0.0)
    rise = sim.temp_c - 25.0
    expected = np.array([0.0, 2.0, 4.0]) * thermal.thermal_resistance_k_per_w
    assert rise == pytest.approx(expected, abs=1e-3)
    run(sim, 0.0, 20 * 3600.0, 600.0)
    assert sim.temp_c == pytest.approx(np.full(3, 25.0), abs=1e-3)


def test_ambient_change_is_followed() -> None:
    sim = cells(count=2)
    sim.set_ambient_temp_c(5.0)
    run(sim, 0.0, 24 * 3600.0, 60.0)
    assert sim.temp_c == pytest.approx(np.full(2, 5.0), abs=1e-3)
    assert np.all(sim.cell.r0_ohm(sim.soc, sim.temp_c) > 2.0 * sim.cell.r0_ohm(0.5, 25.0))


def test_over_charge_drives_the_voltage_above_the_cut_off() -> None:
    sim = cells(count=2, soc=0.97)
    max_v = sim.cell.info.max_voltage_v
    assert np.all(sim.terminal_voltage_v() < max_v)
    run(sim, 140.0, 0.08 * 3600.0 * 2, 1.0)  # 0.5C for 0.16 h: about +8 %SOC
    assert np.all(sim.soc > 1.0)
    assert np.all(sim.ocv_v() > max_v)
    assert np.all(sim.terminal_voltage_v() > max_v)


def test_over_discharge_drives_the_voltage_below_the_cut_off() -> None:
    sim = cells(count=2, soc=0.02)
    run(sim, -140.0, 0.1 * 3600.0, 1.0)
    assert np.all(sim.terminal_voltage_v() < sim.cell.info.min_voltage_v)
    assert np.all(np.isfinite(sim.terminal_voltage_v()))


def test_runaway_charge_stays_finite() -> None:
    sim = cells(count=1, soc=0.9)
    run(sim, 280.0, 10 * 3600.0, 10.0)
    assert np.isfinite(sim.terminal_voltage_v()[0])
    assert sim.soc[0] == pytest.approx(1.1)


def test_set_soc_and_age() -> None:
    sim = cells(count=4, resistance_spread_pct=0.0)
    sim.set_soc(None, 0.3)
    sim.set_soc(1, 0.8)
    assert sim.soc == pytest.approx([0.3, 0.8, 0.3, 0.3])
    sim.age(0.8, 1.5, index=[2])
    assert sim.capacity_ah == pytest.approx([280.0, 280.0, 224.0, 280.0])
    assert sim.soc[2] == pytest.approx(0.3)  # SOC kept, charge scaled
    rest_v = sim.terminal_voltage_v().copy()
    sim.step(1e-3, 100.0)
    jump = sim.terminal_voltage_v() - rest_v
    assert jump[2] == pytest.approx(1.5 * jump[0], rel=0.01)


def test_spreads_are_repeatable_per_seed_and_state_is_read_only() -> None:
    def make(seed: int) -> SimCellArray:
        return SimCellArray(
            model(),
            16,
            capacity_spread_pct=2.0,
            resistance_spread_pct=5.0,
            initial_soc=0.5,
            soc_spread_pct=1.0,
            ambient_temp_c=25.0,
            seed=seed,
        )

    a, b, c = make(1), make(1), make(2)
    assert np.array_equal(a.capacity_ah, b.capacity_ah)
    assert np.array_equal(a.soc, b.soc)
    assert not np.array_equal(a.capacity_ah, c.capacity_ah)
    assert np.all(np.abs(a.capacity_ah / 280.0 - 1.0) <= 0.06)  # truncated at 3 σ
    assert np.all((a.soc >= 0.0) & (a.soc <= 1.0))
    for values in (a.soc, a.charge_ah, a.capacity_ah, a.temp_c):
        with pytest.raises(ValueError):
            values[0] = 0.0


def test_initial_soc_per_cell_and_bad_arguments() -> None:
    sim = SimCellArray(
        model(),
        3,
        capacity_spread_pct=0.0,
        resistance_spread_pct=0.0,
        initial_soc=np.array([0.1, 0.5, 0.9]),
        soc_spread_pct=0.0,
        ambient_temp_c=25.0,
        seed=0,
    )
    assert sim.soc == pytest.approx([0.1, 0.5, 0.9])
    with pytest.raises(ValueError):
        sim.step(0.0, 1.0)
    with pytest.raises(ValueError):
        sim.step(1.0, np.array([1.0, np.nan, 1.0]))
    with pytest.raises(IndexError):
        sim.set_leakage_a(3, 1.0)
