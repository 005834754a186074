"""The current offset learned over relaxed rests: the pure arithmetic, the window's guards
(length, temperature, invalid cells, implausible size) and, on a simulated cell, that a real
standby load is not taken for an offset while a sensor offset is found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmsd.estimation import EstimationConfig, Estimator
from bmsd.estimation.rest_offset import (
    RestOffsetSample,
    RestOffsetWindow,
    combine_cells,
    offset_from_rest,
)
from bmsd.model.cell import CellModel
from bmsd.sim.cells import SimCellArray

CELLS_DIR = Path(__file__).resolve().parents[3] / "etc" / "cells"
Q_AH = 100.0
SLOPE_V = 0.5  # V per unit SOC


def dvdt_for(true_a: float) -> float:
    """Voltage slope a true current gives on a 100 Ah cell with a 0.5 V/SOC OCV."""
    return true_a / (Q_AH * 3600.0) * SLOPE_V


@pytest.mark.parametrize(
    ("measured_a", "bleed_a", "true_a", "offset_a"),
    [
        (0.2, 0.0, 0.0, 0.2),  # pure offset: counted charge, voltage flat
        (-0.5, 0.0, -0.5, 0.0),  # real standby load: the voltage confirms all of it
        (-0.3, 0.0, -0.5, 0.2),  # load plus offset: the unconfirmed part is the offset
        (0.0, 0.1, -0.1, 0.0),  # balancing bleed is the cell's own, not the sensor's
        (0.0, 0.0, 0.3, -0.3),  # negative offset (voltage rises, nothing counted)
    ],
)
def test_offset_is_the_part_the_voltage_does_not_confirm(
    measured_a: float, bleed_a: float, true_a: float, offset_a: float
) -> None:
    offset, std = offset_from_rest(
        measured_a,
        np.array([bleed_a]),
        np.array([dvdt_for(true_a)]),
        np.array([1e-9]),
        np.array([SLOPE_V]),
        np.array([Q_AH]),
    )
    assert offset[0] == pytest.approx(offset_a, abs=1e-9)
    assert std[0] == pytest.approx(1e-9 * Q_AH * 3600.0 / SLOPE_V)


@pytest.mark.parametrize(
    ("slope_v", "std_a"),
    [(0.5, 0.06), (0.05, 0.6), (0.0, 30.0)],  # flat OCV: the window says ~nothing
)
def test_a_flat_ocv_gives_a_wide_offset_uncertainty(slope_v: float, std_a: float) -> None:
    drift = 0.0003 / 3600.0  # 0.3 mV/h
    _, std = offset_from_rest(
        0.0, np.zeros(1), np.zeros(1), np.array([drift]), np.array([slope_v]), np.array([Q_AH])
    )
    assert std[0] == pytest.approx(std_a, rel=0.01)


def test_cells_combine_by_weight_and_keep_the_smallest_sigma() -> None:
    value_std = combine_cells(
        np.array([0.1, 0.3, 9.0]), np.array([0.1, 0.1, 1.0]), np.array([True, True, False])
    )
    assert value_std == pytest.approx((0.2, 0.1))
    assert combine_cells(np.zeros(2), np.ones(2), np.zeros(2, bool)) is None


def fill(
    window: RestOffsetWindow,
    seconds: int,
    measured_a: float,
    true_a: float,
    *,
    temp_step_c: float = 0.0,
    invalid_cell: int | None = None,
    noise_v: float = 0.002,
) -> None:
    rng = np.random.default_rng(5)
    n = window.cell_count
    for k in range(seconds):
        voltage = 3.7 + dvdt_for(true_a) * k + rng.normal(0.0, noise_v, n)
        valid = np.ones(n, bool)
        if invalid_cell is not None:
            voltage[invalid_cell] += 1e-5 * k  # a drifting reading, flagged invalid once
            valid[invalid_cell] = k != seconds // 2
        temp = np.full(n, 25.0 + (temp_step_c if k > seconds // 2 else 0.0))
        window.add(float(k), 1.0, measured_a, np.zeros(n), voltage, valid, temp)


def close(
    window: RestOffsetWindow, *, max_offset_a: float = 1.0, min_s: float = 3600.0
) -> RestOffsetSample | None:
    n = window.cell_count
    return window.close(
        min_duration_s=min_s,
        drift_v_per_h=0.0003,
        max_temp_change_c=2.0,
        max_offset_a=max_offset_a,
        ocv_slope_v=np.full(n, SLOPE_V),
        capacity_ah=np.full(n, Q_AH),
    )


def test_window_measures_the_offset_of_a_noisy_rest() -> None:
    window = RestOffsetWindow(3)
    fill(window, 4 * 3600, measured_a=-0.3, true_a=-0.5)
    sample = close(window)
    assert sample is not None
    assert sample.duration_s == pytest.approx(4 * 3600 - 1)
    assert sample.offset_a == pytest.approx(0.2, abs=3 * sample.offset_std_a)
    # The drift allowance (0.3 mV/h at 0.5 V/SOC on 100 Ah) bounds the confidence.
    assert 0.05 < sample.offset_std_a < 0.07
    assert window.start_s is None  # closing starts a new window


@pytest.mark.parametrize(
    ("seconds", "measured_a", "max_offset_a", "kept"),
    [
        (3599, 0.2, 1.0, False),  # one sample short of the minimum window
        (3601, 0.2, 1.0, True),
        (3601, 0.2, 0.19, False),  # larger than a sensor offset can be: dropped, not clipped
        (3601, 0.2, 0.21, True),
    ],
)
def test_window_length_and_size_edges(
    seconds: int, measured_a: float, max_offset_a: float, kept: bool
) -> None:
    window = RestOffsetWindow(1)
    fill(window, seconds + 1, measured_a, 0.0, noise_v=0.0)
    assert (close(window, max_offset_a=max_offset_a) is not None) is kept


@pytest.mark.parametrize(("temp_step_c", "kept"), [(2.0, True), (2.5, False)])
def test_cells_whose_temperature_moved_are_left_out(temp_step_c: float, kept: bool) -> None:
    window = RestOffsetWindow(2)
    fill(window, 3700, 0.2, 0.0, temp_step_c=temp_step_c)
    assert (close(window) is not None) is kept


def test_a_cell_invalid_during_the_window_is_left_out() -> None:
    window = RestOffsetWindow(2)
    fill(window, 3700, 0.2, 0.0, invalid_cell=1, noise_v=0.0)
    sample = close(window)
    assert sample is not None
    assert sample.offset_a == pytest.approx(0.2, abs=1e-6)


def rest(model: CellModel, true_a: float, sensor_offset_a: float, hours: float) -> Estimator:
    """Rest a simulated 100 Ah cell at a true current, the sensor reading it plus an offset."""
    estimator = Estimator(model, 2, 1, EstimationConfig())
    sim = SimCellArray(
        model,
        2,
        capacity_spread_pct=0.0,
        resistance_spread_pct=0.0,
        initial_soc=0.6,
        soc_spread_pct=0.0,
        ambient_temp_c=25.0,
        seed=1,
    )
    estimator.set_soc(0.6, 0.01)
    rng = np.random.default_rng(2)
    dt_s = 2.0
    for k in range(int(hours * 3600 / dt_s)):
        sim.step(dt_s, true_a)
        voltage = sim.terminal_voltage_v() + rng.normal(0.0, 0.002, 2)
        estimator.step(
            (k + 1) * dt_s, true_a + sensor_offset_a, voltage, np.ones(2, bool),
            np.full(2, 25.0), False,
        )  # fmt: skip
    # A step with current ends the rest: the last window is closed and used.
    estimator.step(hours * 3600 + dt_s, 30.0, sim.terminal_voltage_v(), np.ones(2, bool),
                   np.full(2, 25.0), False)  # fmt: skip
    return estimator


def test_sensor_offset_is_learned_over_a_long_rest_with_contactors_closed() -> None:
    model = CellModel.load(CELLS_DIR / "nmc_100ah.toml")
    estimator = rest(model, 0.0, 0.2, 6.0)  # 0.2 % of 1C
    assert estimator.rest_offset_samples >= 1
    assert estimator.export_state()["current_offset_a"] == pytest.approx(0.2, abs=0.05)


def test_real_standby_load_is_not_taken_for_an_offset() -> None:
    model = CellModel.load(CELLS_DIR / "nmc_100ah.toml")
    estimator = rest(model, -0.5, 0.0, 6.0)  # a 0.5 A standby load, read exactly
    assert estimator.rest_offset_samples >= 1
    assert estimator.export_state()["current_offset_a"] == pytest.approx(0.0, abs=0.05)
