"""Limits: every contributor, the ramp rule, CVL never 0, config checks, and properties.

Table-driven: each curve at and between its points; each contributor wins when it is the
smallest; missing data and open contactors give 0; fault factors apply. Hypothesis: a limit never
exceeds any contributor, never rises faster than its ramp, and falls at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsd.errors import ConfigError
from bmsd.model.limits import LIMIT_KINDS, Contributor, LimitKind, Limits
from bmsd.model.snapshot import Extremes, PackSnapshot
from bmsd.model.topology import Location
from bmsd.protection.limits import (
    DynamicCvl,
    LimitCalculator,
    LimitInputs,
    LimitsConfig,
    curve_fraction,
    inputs_from_snapshot,
)
from bmsd.schema import parse

N = 16
CONFIG = LimitsConfig()
MAX_A = CONFIG.max_charge_current_a
CEILING_V = N * CONFIG.cell_charge_voltage_v


def inputs(**changes: Any) -> LimitInputs:
    """A healthy mid-SOC pack at 25 °C, with ``changes`` applied."""
    base: dict[str, Any] = {
        "now_s": 0.0,
        "series_cells": N,
        "cell_voltage_max_v": 3.25,
        "cell_voltage_min_v": 3.24,
        "cell_temp_min_c": 25.0,
        "cell_temp_max_c": 26.0,
        "pack_voltage_v": 52.0,
        "soc": None,
        "charge_fault_factor": 1.0,
        "discharge_fault_factor": 1.0,
        "data_ok": True,
        "contactors_closed": True,
    }
    base.update(changes)
    return LimitInputs(**base)


def settled(config: LimitsConfig = CONFIG, **changes: Any) -> Limits:
    """Limits once the ramps have had all the time they need (two steps, 10^4 s apart)."""
    calculator = LimitCalculator(config)
    calculator.step(inputs(now_s=0.0, **changes))
    return calculator.step(inputs(now_s=10_000.0, **changes))


# --- curves ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("curve", "x", "expected"),
    [
        # charge vs highest cell voltage (dbus-serialbattery LFP), at and between the points
        (CONFIG.ccl_curve_cell_voltage_v, 3.00, 1.0),
        (CONFIG.ccl_curve_cell_voltage_v, 3.30, 1.0),
        (CONFIG.ccl_curve_cell_voltage_v, 3.375, 0.75),
        (CONFIG.ccl_curve_cell_voltage_v, 3.45, 0.5),
        (CONFIG.ccl_curve_cell_voltage_v, 3.475, 0.275),
        (CONFIG.ccl_curve_cell_voltage_v, 3.50, 0.05),
        (CONFIG.ccl_curve_cell_voltage_v, 3.525, 0.025),
        (CONFIG.ccl_curve_cell_voltage_v, 3.55, 0.0),
        (CONFIG.ccl_curve_cell_voltage_v, 4.00, 0.0),
        # discharge vs lowest cell voltage
        (CONFIG.dcl_curve_cell_voltage_v, 2.50, 0.0),
        (CONFIG.dcl_curve_cell_voltage_v, 2.70, 0.0),
        (CONFIG.dcl_curve_cell_voltage_v, 2.75, 0.05),
        (CONFIG.dcl_curve_cell_voltage_v, 2.80, 0.1),
        (CONFIG.dcl_curve_cell_voltage_v, 2.85, 0.3),
        (CONFIG.dcl_curve_cell_voltage_v, 2.90, 0.5),
        (CONFIG.dcl_curve_cell_voltage_v, 3.00, 0.75),
        (CONFIG.dcl_curve_cell_voltage_v, 3.10, 1.0),
        (CONFIG.dcl_curve_cell_voltage_v, 3.40, 1.0),
        # charge vs temperature
        (CONFIG.ccl_curve_temp_c, -10.0, 0.0),
        (CONFIG.ccl_curve_temp_c, 0.0, 0.0),
        (CONFIG.ccl_curve_temp_c, 1.0, 0.05),
        (CONFIG.ccl_curve_temp_c, 2.0, 0.1),
        (CONFIG.ccl_curve_temp_c, 5.0, 0.2),
        (CONFIG.ccl_curve_temp_c, 7.5, 0.3),
        (CONFIG.ccl_curve_temp_c, 10.0, 0.4),
        (CONFIG.ccl_curve_temp_c, 12.5, 0.6),
        (CONFIG.ccl_curve_temp_c, 15.0, 0.8),
        (CONFIG.ccl_curve_temp_c, 20.0, 1.0),
        (CONFIG.ccl_curve_temp_c, 35.0, 1.0),
        (CONFIG.ccl_curve_temp_c, 37.5, 0.7),
        (CONFIG.ccl_curve_temp_c, 40.0, 0.4),
        (CONFIG.ccl_curve_temp_c, 47.5, 0.2),
        (CONFIG.ccl_curve_temp_c, 55.0, 0.0),
        (CONFIG.ccl_curve_temp_c, 70.0, 0.0),
        # discharge vs temperature
        (CONFIG.dcl_curve_temp_c, -30.0, 0.0),
        (CONFIG.dcl_curve_temp_c, -20.0, 0.0),
        (CONFIG.dcl_curve_temp_c, -10.0, 0.1),
        (CONFIG.dcl_curve_temp_c, 0.0, 0.2),
        (CONFIG.dcl_curve_temp_c, 5.0, 0.3),
        (CONFIG.dcl_curve_temp_c, 10.0, 0.4),
        (CONFIG.dcl_curve_temp_c, 12.5, 0.7),
        (CONFIG.dcl_curve_temp_c, 15.0, 1.0),
        (CONFIG.dcl_curve_temp_c, 45.0, 1.0),
        (CONFIG.dcl_curve_temp_c, 50.0, 0.5),
        (CONFIG.dcl_curve_temp_c, 55.0, 0.0),
        # a one-point curve is a constant
        (((0.5, 0.3),), 0.0, 0.3),
        (((0.5, 0.3),), 1.0, 0.3),
    ],
)
def test_curve_at_and_between_points(
    curve: tuple[tuple[float, float], ...], x: float, expected: float
) -> None:
    assert curve_fraction(curve, x) == pytest.approx(expected, abs=1e-12)


# --- each contributor wins when it is the smallest ----------------------------------------

SOC_CONFIG = LimitsConfig(
    ccl_curve_soc=((0.9, 1.0), (1.0, 0.2)), dcl_curve_soc=((0.0, 0.2), (0.1, 1.0))
)


@pytest.mark.parametrize(
    ("config", "changes", "kind", "name", "value", "reason_part"),
    [
        (CONFIG, {}, "ccl", "configured", MAX_A, "configured maximum"),
        (CONFIG, {}, "dcl", "configured", MAX_A, "configured maximum"),
        (CONFIG, {"contactors_closed": False}, "ccl", "contactors", 0.0, "contactors open"),
        (CONFIG, {"contactors_closed": False}, "dcl", "contactors", 0.0, "contactors open"),
        (CONFIG, {"data_ok": False}, "ccl", "data_health", 0.0, "missing or stale"),
        (CONFIG, {"data_ok": False}, "dcl", "data_health", 0.0, "missing or stale"),
        (
            CONFIG,
            {"charge_fault_factor": 0.5, "fault_reason": "cell over-voltage warning"},
            "ccl",
            "fault",
            0.5 * MAX_A,
            "cell over-voltage warning",
        ),
        (CONFIG, {"discharge_fault_factor": 0.0}, "dcl", "fault", 0.0, "0%"),
        (CONFIG, {"charge_fault_factor": 0.0}, "ccl", "fault", 0.0, "0%"),
        (CONFIG, {"cell_voltage_max_v": 3.475}, "ccl", "cell_voltage", 0.275 * MAX_A, "3.475"),
        (CONFIG, {"cell_voltage_max_v": 3.60}, "ccl", "cell_voltage", 0.0, "highest cell"),
        (CONFIG, {"cell_voltage_min_v": 2.85}, "dcl", "cell_voltage", 0.3 * MAX_A, "2.850"),
        (CONFIG, {"cell_voltage_max_v": None}, "ccl", "cell_voltage", 0.0, "unknown"),
        (CONFIG, {"cell_voltage_min_v": None}, "dcl", "cell_voltage", 0.0, "unknown"),
        (CONFIG, {"cell_voltage_max_v": math.nan}, "ccl", "cell_voltage", 0.0, "unknown"),
        (CONFIG, {"cell_temp_min_c": 7.5}, "ccl", "temperature", 0.3 * MAX_A, "lowest cell"),
        (CONFIG, {"cell_temp_max_c": 37.5}, "ccl", "temperature", 0.7 * MAX_A, "highest cell"),
        # both ends matter: the lower of the two fractions wins
        (
            CONFIG,
            {"cell_temp_min_c": 12.5, "cell_temp_max_c": 40.0},
            "ccl",
            "temperature",
            0.4 * MAX_A,
            "highest cell 40.0",
        ),
        (
            CONFIG,
            {"cell_temp_min_c": 5.0, "cell_temp_max_c": 40.0},
            "ccl",
            "temperature",
            0.2 * MAX_A,
            "lowest cell 5.0",
        ),
        (CONFIG, {"cell_temp_min_c": -10.0}, "dcl", "temperature", 0.1 * MAX_A, "-10.0"),
        (CONFIG, {"cell_temp_min_c": -5.0}, "ccl", "temperature", 0.0, "lowest cell"),
        (CONFIG, {"cell_temp_max_c": None}, "ccl", "temperature", 0.0, "unknown"),
        (CONFIG, {"cell_temp_min_c": None}, "dcl", "temperature", 0.0, "unknown"),
        (SOC_CONFIG, {"soc": 0.95}, "ccl", "soc", 0.6 * MAX_A, "SOC 95.0%"),
        (SOC_CONFIG, {"soc": 0.05}, "dcl", "soc", 0.6 * MAX_A, "SOC 5.0%"),
        (CONFIG, {"pack_voltage_v": None}, "ccl", "pack_voltage", 0.0, "pack voltage unknown"),
    ],
)
def test_each_contributor_wins_when_smallest(
    config: LimitsConfig,
    changes: dict[str, Any],
    kind: LimitKind,
    name: str,
    value: float,
    reason_part: str,
) -> None:
    limits = settled(config, **changes)
    top = limits.limiting(kind)
    assert top.name == name
    assert top.value == pytest.approx(value)
    assert limits.value(kind) == pytest.approx(value)
    assert reason_part in top.reason
    assert name in limits.explain(kind)


def test_soc_is_ignored_when_not_given() -> None:
    limits = settled(SOC_CONFIG, soc=None)
    assert "soc" not in {c.name for c in limits.ccl_contributors}
    assert limits.charge_current_a == MAX_A


def test_every_contributor_is_kept() -> None:
    limits = settled(SOC_CONFIG, soc=0.5)
    names = [c.name for c in limits.ccl_contributors]
    assert names == [
        "configured",
        "contactors",
        "data_health",
        "fault",
        "cell_voltage",
        "temperature",
        "soc",
    ]
    assert [c.name for c in limits.cvl_contributors] == ["configured", "dynamic_cvl"]
    assert [c.name for c in limits.dvl_contributors] == ["configured"]


def test_locations_appear_in_the_reasons() -> None:
    limits = settled(
        cell_voltage_max_v=3.50,
        cell_voltage_max_at="s0/m2/c5",
        cell_temp_min_c=3.0,
        cell_temp_min_at="s0/m1/t0",
    )
    reasons = " ".join(c.reason for c in limits.ccl_contributors)
    assert "3.500 V at s0/m2/c5" in reasons
    assert "3.0 °C at s0/m1/t0" in reasons


def test_fault_factors_apply_to_each_direction_alone() -> None:
    limits = settled(charge_fault_factor=0.5, discharge_fault_factor=1.0)
    assert limits.charge_current_a == pytest.approx(0.5 * MAX_A)
    assert limits.discharge_current_a == MAX_A
    limits = settled(charge_fault_factor=1.0, discharge_fault_factor=0.25)
    assert limits.charge_current_a == MAX_A
    assert limits.discharge_current_a == pytest.approx(0.25 * MAX_A)
    # out-of-range and NaN factors never allow more than the maximum or read as "no fault"
    assert settled(charge_fault_factor=7.0).charge_current_a == MAX_A
    assert settled(charge_fault_factor=math.nan).charge_current_a == 0.0


def test_config_fault_factor() -> None:
    assert CONFIG.fault_factor(warning=False, fatal=False) == 1.0
    assert CONFIG.fault_factor(warning=True, fatal=False) == CONFIG.warning_derate_factor
    assert CONFIG.fault_factor(warning=True, fatal=True) == 0.0


def test_dvl_is_series_cells_times_cell_discharge_voltage() -> None:
    limits = settled()
    assert limits.discharge_voltage_v == pytest.approx(N * CONFIG.cell_discharge_voltage_v)
    assert limits.limiting("dvl").name == "configured"


# --- ramps -------------------------------------------------------------------------------


def test_currents_start_at_zero_and_ramp_up() -> None:
    calculator = LimitCalculator(CONFIG)
    first = calculator.step(inputs(now_s=100.0))
    assert first.charge_current_a == 0.0
    assert first.discharge_current_a == 0.0
    second = calculator.step(inputs(now_s=102.0))
    assert second.charge_current_a == pytest.approx(2.0 * CONFIG.ccl_ramp_a_per_s)
    assert second.limiting("ccl").name == "ramp"
    assert "A/s" in second.limiting("ccl").reason


def test_decreases_are_immediate_and_increases_ramped() -> None:
    calculator = LimitCalculator(CONFIG)
    calculator.step(inputs(now_s=0.0))
    full = calculator.step(inputs(now_s=1000.0))
    assert full.charge_current_a == MAX_A
    cut = calculator.step(inputs(now_s=1000.1, cell_voltage_max_v=3.45))
    assert cut.charge_current_a == pytest.approx(0.5 * MAX_A)
    assert cut.limiting("ccl").name == "cell_voltage"
    back = calculator.step(inputs(now_s=1001.1))
    assert back.charge_current_a == pytest.approx(0.5 * MAX_A + CONFIG.ccl_ramp_a_per_s)
    assert back.limiting("ccl").name == "ramp"
    stopped = calculator.step(inputs(now_s=1001.2, contactors_closed=False))
    assert stopped.charge_current_a == 0.0
    assert stopped.discharge_current_a == 0.0


def test_time_going_backwards_allows_no_rise() -> None:
    calculator = LimitCalculator(CONFIG)
    calculator.step(inputs(now_s=10.0))
    calculator.step(inputs(now_s=11.0))
    earlier = calculator.step(inputs(now_s=5.0))
    assert earlier.charge_current_a == pytest.approx(CONFIG.ccl_ramp_a_per_s)


# --- CVL ---------------------------------------------------------------------------------


def test_cvl_is_never_zero_without_data() -> None:
    calculator = LimitCalculator(CONFIG)
    limits = calculator.step(
        inputs(
            cell_voltage_max_v=None,
            cell_voltage_min_v=None,
            cell_temp_min_c=None,
            cell_temp_max_c=None,
            pack_voltage_v=None,
            data_ok=False,
            contactors_closed=False,
        )
    )
    assert limits.charge_voltage_v == pytest.approx(CEILING_V)
    assert limits.charge_current_a == 0.0
    assert limits.discharge_current_a == 0.0
    assert limits.discharge_voltage_v > 0.0
    dynamic = limits.cvl_contributors[1]
    assert "missing" in dynamic.reason and "CCL = 0" in dynamic.reason


def test_cvl_holds_its_last_value_when_data_go_missing() -> None:
    calculator = LimitCalculator(CONFIG)
    calculator.step(inputs(now_s=0.0, cell_voltage_max_v=3.44, pack_voltage_v=53.5))
    regulating = calculator.step(inputs(now_s=1.0, cell_voltage_max_v=3.46, pack_voltage_v=53.6))
    assert regulating.charge_voltage_v < CEILING_V
    for now_s, changes in (
        (100.0, {"data_ok": False}),
        (200.0, {"cell_voltage_max_v": None}),
        (300.0, {"pack_voltage_v": None}),
    ):
        held = calculator.step(inputs(now_s=now_s, **changes))
        assert held.charge_voltage_v == regulating.charge_voltage_v
        assert held.charge_current_a == 0.0
        assert "held" in held.limiting("cvl").reason


def test_cvl_falls_at_once_when_the_highest_cell_passes_its_target() -> None:
    cvl = DynamicCvl(dataclasses.replace(CONFIG, cvl_trim_s=0.0))
    calm = cvl.step(0.0, N, 3.30, 53.0)
    assert calm.value == pytest.approx(CEILING_V)
    # 20 mV over: CVL = pack − 16 × 20 mV, at once
    over = cvl.step(0.1, N, CONFIG.cell_charge_voltage_v + 0.020, 54.0)
    assert over.value == pytest.approx(54.0 - N * 0.020)
    # headroom back: CVL rises no faster than the ramp
    back = cvl.step(10.1, N, 3.40, 53.5)
    assert back.value <= over.value + N * CONFIG.cvl_ramp_cell_v_per_s * 10.0 + 1e-9


def test_cvl_trim_winds_down_on_a_lasting_overshoot_and_unwinds_on_headroom() -> None:
    cvl = DynamicCvl(CONFIG)
    over_v = CONFIG.cell_charge_voltage_v + 0.010
    for second in range(30):  # 8 mV beyond the deadband for 30 s: −16 × 8 mV × 30/60
        cvl.step(float(second), N, over_v, 54.0)
    assert cvl.trim_v == pytest.approx(-N * 0.008 * 29.0 / CONFIG.cvl_trim_s)
    inside = cvl.trim_v
    cvl.step(30.0, N, CONFIG.cell_charge_voltage_v + 0.001, 54.0)  # inside the deadband
    assert cvl.trim_v == inside
    for second in range(31, 2000):
        cvl.step(float(second), N, over_v + 0.1, 54.0)
    assert cvl.trim_v == pytest.approx(-N * CONFIG.cvl_trim_max_cell_v)
    for second in range(2000, 2100):
        cvl.step(float(second), N, 3.35, 53.0)
    assert cvl.trim_v == 0.0


def test_cvl_floor_and_ceiling() -> None:
    cvl = DynamicCvl(CONFIG)
    wild = cvl.step(0.0, N, 3.90, 50.0)
    assert wild.value == pytest.approx(N * CONFIG.cvl_floor_cell_v)
    assert "floor" in wild.reason
    low = DynamicCvl(CONFIG).step(0.0, N, 3.00, 48.0)
    assert low.value == pytest.approx(CEILING_V)


def test_static_cvl_when_dynamic_is_disabled() -> None:
    config = LimitsConfig(dynamic_cvl=False)
    limits = settled(config, cell_voltage_max_v=3.50, pack_voltage_v=55.0)
    assert limits.charge_voltage_v == pytest.approx(CEILING_V)


# --- the Limits value object ---------------------------------------------------------------


def test_limits_reject_a_value_that_is_not_the_minimum() -> None:
    good = settled()
    with pytest.raises(ValueError, match="lowest contributor"):
        dataclasses.replace(good, charge_current_a=good.charge_current_a + 1.0)
    with pytest.raises(ValueError, match="no contributors"):
        dataclasses.replace(good, dcl_contributors=())


def test_limits_reject_cvl_zero() -> None:
    zero = (Contributor("x", 0.0, "zero"),)
    good = settled()
    with pytest.raises(ValueError, match="CVL and DVL must be positive"):
        dataclasses.replace(good, charge_voltage_v=0.0, cvl_contributors=zero)


def test_limiting_prefers_the_first_listed_on_a_tie() -> None:
    limits = settled(contactors_closed=False, data_ok=False)
    assert limits.limiting("ccl").name == "contactors"
    assert settled().limiting("ccl").name == "configured"


# --- config --------------------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    assert CONFIG.check() == []


def test_config_parses_curves_from_toml_arrays() -> None:
    config = parse(
        LimitsConfig,
        {"ccl_curve_temp_c": [[0, 0], [10, 1], [45, 1], [50, 0]], "max_charge_current_a": 100},
        source="test.toml",
        prefix="limits",
    )
    assert config.ccl_curve_temp_c == ((0.0, 0.0), (10.0, 1.0), (45.0, 1.0), (50.0, 0.0))
    assert config.max_charge_current_a == 100.0


@pytest.mark.parametrize(
    ("changes", "key", "reason_part"),
    [
        ({"max_charge_current_a": 0.0}, "max_charge_current_a", "positive"),
        ({"ccl_ramp_a_per_s": -1.0}, "ccl_ramp_a_per_s", "positive"),
        ({"cvl_floor_cell_v": 3.5}, "cvl_floor_cell_v", "between"),
        ({"cvl_floor_cell_v": 2.8}, "cvl_floor_cell_v", "between"),
        ({"cell_charge_voltage_v": 3.6}, "cell_charge_voltage_v", "last"),
        ({"cell_discharge_voltage_v": 2.6}, "cell_discharge_voltage_v", "first"),
        ({"warning_derate_factor": 1.5}, "warning_derate_factor", "between 0 and 1"),
        ({"cvl_release_s": -1.0}, "cvl_release_s", "negative"),
        (
            {"ccl_curve_cell_voltage_v": ((3.3, 1.0), (3.2, 0.0))},
            "ccl_curve_cell_voltage_v",
            "strictly increasing",
        ),
        (
            {"ccl_curve_cell_voltage_v": ((3.3, 1.0), (3.6, 0.1))},
            "ccl_curve_cell_voltage_v",
            "end at a fraction of 0",
        ),
        ({"dcl_curve_cell_voltage_v": ((2.7, 0.1), (3.1, 1.0))}, "dcl_curve", "start at"),
        ({"ccl_curve_temp_c": ((0.0, 0.0), (20.0, 1.0))}, "ccl_curve_temp_c", "end at"),
        ({"dcl_curve_temp_c": ((-20.0, 0.5), (55.0, 0.0))}, "dcl_curve_temp_c", "start at"),
        ({"ccl_curve_soc": ((0.0, 1.0), (1.0, 1.2))}, "ccl_curve_soc[1]", "outside 0..1"),
        ({"dcl_curve_soc": ((0.0, 1.0), (1.5, 1.0))}, "dcl_curve_soc[1]", "outside"),
        ({"ccl_curve_soc": ()}, "ccl_curve_soc", "at least one point"),
    ],
)
def test_config_check_names_the_problem(
    changes: dict[str, Any], key: str, reason_part: str
) -> None:
    problems = dataclasses.replace(CONFIG, **changes).check()
    assert any(k.startswith(key) and reason_part in r for k, r in problems), problems


def test_bad_config_from_toml_is_reported_with_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(LimitsConfig, {"cvl_floor_cell_v": 3.6}, source="x.toml", prefix="limits")
    assert "limits.cvl_floor_cell_v" in str(caught.value)


def test_inputs_reject_no_cells() -> None:
    with pytest.raises(ValueError, match="series_cells"):
        inputs(series_cells=0)


# --- from a snapshot -----------------------------------------------------------------------


def snapshot(*, cell_valid: bool = True, time_s: float = 5.0) -> PackSnapshot:
    cells = np.array([3.30, 3.35, 3.32, 3.31])
    temps = np.array([20.0, 24.0])
    count = 2
    return PackSnapshot(
        tick=1,
        time_s=time_s,
        cell_voltage_v=cells,
        cell_voltage_valid=np.array([True, cell_valid, True, True]),
        temp_c=temps,
        temp_valid=np.ones(2, dtype=bool),
        cell_temp_c=np.array([20.0, 20.0, 24.0, 24.0]),
        cell_voltage=Extremes(3.30, Location(0, 0, 0), 3.35, Location(0, 0, 1), 3.32, 4),
        temperature=Extremes(20.0, Location(0, 0, 0), 24.0, Location(0, 1, 0), 22.0, 2),
        module_age_s=np.zeros(count),
        module_error_flags=np.zeros(count, dtype=np.int64),
        module_board_temp_c=np.zeros(count),
        module_measurement_request=np.zeros(count, dtype=bool),
        balancing_feedback=np.zeros(4, dtype=bool),
        pack_current_a=10.0,
        pack_current_age_s=0.0,
        pack_voltage_v=13.28,
        pack_voltage_age_s=0.0,
        bus_voltage_v=13.2,
        string_voltage_sum_v=np.array([13.28]),
        pack_voltage_deviation_v=0.0,
        contactors=None,
        contactors_age_s=0.0,
        sensor_error_flags=0,
    )


def test_inputs_from_snapshot() -> None:
    made = inputs_from_snapshot(
        snapshot(),
        series_cells=4,
        contactors_closed=True,
        charge_fault_factor=1.0,
        discharge_fault_factor=0.5,
        fault_reason="x",
        soc=0.4,
    )
    assert made.now_s == 5.0
    assert made.cell_voltage_max_v == 3.35 and made.cell_voltage_max_at == "s0/m0/c1"
    assert made.cell_voltage_min_v == 3.30
    assert made.cell_temp_min_c == 20.0 and made.cell_temp_max_c == 24.0
    assert made.cell_temp_max_at == "s0/m1/c0"
    assert made.pack_voltage_v == 13.28
    assert made.data_ok and made.soc == 0.4 and made.discharge_fault_factor == 0.5


def test_inputs_from_snapshot_with_an_invalid_cell_are_not_healthy() -> None:
    made = inputs_from_snapshot(
        snapshot(cell_valid=False),
        series_cells=4,
        contactors_closed=True,
        charge_fault_factor=1.0,
        discharge_fault_factor=1.0,
    )
    assert not made.data_ok
    assert settled(CONFIG, data_ok=made.data_ok).charge_current_a == 0.0


# --- properties ----------------------------------------------------------------------------


def mostly(strategy: st.SearchStrategy[Any], *rare: Any) -> st.SearchStrategy[Any]:
    """``strategy`` four times out of five, else one of the ``rare`` values."""
    return st.one_of(strategy, strategy, strategy, strategy, st.sampled_from(rare))


step_strategy = st.fixed_dictionaries(
    {
        "dt_s": st.one_of(st.just(0.0), st.floats(0.0, 2.0), st.floats(0.0, 600.0)),
        "cell_voltage_max_v": mostly(st.floats(3.2, 3.7), None, math.nan),
        "cell_voltage_min_v": mostly(st.floats(2.5, 3.3), None, math.nan),
        "cell_temp_min_c": mostly(st.floats(-25.0, 30.0), None),
        "cell_temp_max_c": mostly(st.floats(10.0, 60.0), None),
        "pack_voltage_v": mostly(st.floats(N * 3.0, N * 3.6), None),
        "soc": st.one_of(st.none(), st.floats(0.0, 1.0)),
        "charge_fault_factor": st.sampled_from([0.0, 0.5, 1.0, 1.0]),
        "discharge_fault_factor": st.sampled_from([0.0, 0.5, 1.0, 1.0]),
        "data_ok": mostly(st.just(True), False),
        "contactors_closed": mostly(st.just(True), False),
    }
)
PROPERTY_CONFIG = LimitsConfig(
    ccl_curve_soc=((0.8, 1.0), (1.0, 0.1)), dcl_curve_soc=((0.0, 0.1), (0.2, 1.0))
)
RAMPS = {
    "ccl": PROPERTY_CONFIG.ccl_ramp_a_per_s,
    "dcl": PROPERTY_CONFIG.dcl_ramp_a_per_s,
    "cvl": N * PROPERTY_CONFIG.cvl_ramp_cell_v_per_s,
}


def run_sequence(steps: list[dict[str, Any]]) -> list[tuple[float, Limits]]:
    calculator = LimitCalculator(PROPERTY_CONFIG)
    now_s, out = 1000.0, []
    for step in steps:
        changes = dict(step)
        now_s += changes.pop("dt_s")
        out.append((now_s, calculator.step(inputs(now_s=now_s, **changes))))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(step_strategy, min_size=1, max_size=40))
def test_a_limit_never_exceeds_any_contributor(steps: list[dict[str, Any]]) -> None:
    for _, limits in run_sequence(steps):
        for kind in LIMIT_KINDS:
            value = limits.value(kind)
            assert all(value <= c.value for c in limits.contributors(kind))
            assert value == min(c.value for c in limits.contributors(kind))
        assert limits.charge_current_a >= 0.0 and limits.discharge_current_a >= 0.0
        assert N * PROPERTY_CONFIG.cvl_floor_cell_v <= limits.charge_voltage_v <= CEILING_V
        assert limits.charge_current_a <= PROPERTY_CONFIG.max_charge_current_a


@settings(max_examples=300, deadline=None)
@given(st.lists(step_strategy, min_size=2, max_size=40))
def test_a_limit_never_rises_faster_than_its_ramp(steps: list[dict[str, Any]]) -> None:
    results = run_sequence(steps)
    for (t0, before), (t1, after) in itertools.pairwise(results):
        kinds: tuple[LimitKind, ...] = ("ccl", "dcl", "cvl")
        for kind in kinds:
            allowed = before.value(kind) + RAMPS[kind] * (t1 - t0)
            assert after.value(kind) <= allowed + 1e-9, (kind, before.value(kind), t1 - t0)


@settings(max_examples=300, deadline=None)
@given(st.lists(step_strategy, min_size=2, max_size=40))
def test_current_decreases_are_immediate(steps: list[dict[str, Any]]) -> None:
    results = run_sequence(steps)
    for (t0, before), (t1, after) in itertools.pairwise(results):
        kinds: tuple[LimitKind, ...] = ("ccl", "dcl")
        for kind in kinds:
            target = min(c.value for c in after.contributors(kind) if c.name != "ramp")
            expected = min(target, before.value(kind) + RAMPS[kind] * (t1 - t0))
            if target <= before.value(kind):
                assert after.value(kind) == target
            assert after.value(kind) == pytest.approx(expected, abs=1e-9)
