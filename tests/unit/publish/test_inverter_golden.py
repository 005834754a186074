"""Golden traces: each profile's scripted scenario (normal, charge taper, alarm, fault, stale;
see tests/inverter_golden.py) gives exactly the stored candump trace in tests/data/, and every
value of every frame in the stored trace, decoded by tests/inverter_decoder.py (written from
protocols.md, not from bmsd's DBCs), is what the state in force says.

After an intended change: ``python tests/inverter_golden.py`` rewrites the traces; review
the diff.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any

import pytest
from inverter_decoder import decode
from inverter_golden import (
    PHASES,
    PROFILES,
    base_state,
    parse_line,
    phase_of,
    render,
    run_scenario,
    trace_path,
)

from bmsd.model.faults import FaultLevel, FaultState, LevelState
from bmsd.model.state import PackState
from bmsd.publish.inverter.link import ProfileEncoder
from bmsd.publish.inverter.profile import load_profile
from bmsd.publish.inverter.values import PackInfo, battery_values

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def base() -> tuple[PackState, PackInfo]:
    return base_state()


@pytest.mark.parametrize("profile", PROFILES)
def test_scenario_gives_the_stored_trace(profile: str, base: tuple[PackState, PackInfo]) -> None:
    stored = trace_path(profile).read_text(encoding="ascii")
    rendered = render(profile, *base)
    diff = "".join(
        difflib.unified_diff(
            stored.splitlines(keepends=True), rendered.splitlines(keepends=True), "stored", "now"
        )
    )
    assert rendered == stored, diff[:4000]


# Decoded key -> (battery field, tolerance); a flag field compares as a bool. SMA pairs:
# ("pair", field) means 1 when the flag is set, 2 when clear.
LIMITS = {
    "cvl_v": ("charge_voltage_v", 0.051),
    "ccl_a": ("charge_current_a", 0.051),
    "dcl_a": ("discharge_current_a", 0.051),
    "dvl_v": ("discharge_voltage_v", 0.051),
}
MEASUREMENTS = {
    "voltage_v": ("voltage_v", 0.0051),
    "current_a": ("current_a", 0.051),
    "temp_c": ("temp_c", 0.051),
}
SMA_CONDITIONS = {
    "general": "general",
    "high_voltage": "high_voltage",
    "low_voltage": "low_voltage",
    "high_temp": "high_temp",
    "low_temp": "low_temp",
    "charge_high_temp": "charge_high_temp",
    "charge_low_temp": "charge_low_temp",
    "high_current": "discharge_overcurrent",
    "high_charge_current": "charge_overcurrent",
    "contactor": "contactor",
    "bms_internal": "system",
    "cell_imbalance": "imbalance",
}
SMA: dict[int, dict[str, Any]] = {
    0x351: LIMITS,
    0x355: {
        "soc_pct": ("soc_pct", 0.51),
        "soh_pct": ("soh_pct", 0.51),
        "soc_hires_pct": ("soc_pct", 0.0051),
        "soc_raw": None,
    },
    0x356: MEASUREMENTS,
    0x35A: {
        **{f"alarm.{k}": ("pair", f"alarm.{v}") for k, v in SMA_CONDITIONS.items()},
        **{f"warning.{k}": ("pair", f"warning.{v}") for k, v in SMA_CONDITIONS.items()},
        "alarm.short_circuit": ("const", 2),
        "warning.short_circuit": ("const", 2),
    },
    0x35E: {"name": ("const", "BMSD")},
    0x35F: {
        "battery_type": ("const", 0xFFFF),
        "bms_version": ("const", 0xFFFF),
        "capacity_ah": ("nominal_capacity_ah", 0.51),
        "manufacturer_id": ("const", 0xFFFF),
    },
}
EXPECTED: dict[str, dict[int, dict[str, Any]]] = {
    "pylontech_lv": {
        0x351: LIMITS,
        0x355: {"soc_pct": ("soc_pct", 0.51), "soh_pct": ("soh_pct", 0.51)},
        0x356: MEASUREMENTS,
        0x359: {
            "protection.over_voltage": "alarm.high_voltage",
            "protection.under_voltage": "alarm.low_voltage",
            "protection.over_temp": "alarm.high_temp",
            "protection.under_temp": "alarm.low_temp",
            "protection.discharge_over_current": "alarm.discharge_overcurrent",
            "protection.charge_over_current": "alarm.charge_overcurrent",
            "protection.system_error": "alarm.general",
            "alarm.high_voltage": "warning.high_voltage",
            "alarm.low_voltage": "warning.low_voltage",
            "alarm.high_temp": "warning.high_temp",
            "alarm.low_temp": "warning.low_temp",
            "alarm.discharge_high_current": "warning.discharge_overcurrent",
            "alarm.charge_high_current": "warning.charge_overcurrent",
            "alarm.internal_comm_fail": "warning.internal_comm",
            "module_count": ("module_count", 0),
            "pn": ("const", "PN"),
            "unused_bits": ("const", 0),
        },
        0x35C: {
            "charge_enable": "charge_enable",
            "discharge_enable": "discharge_enable",
            "force_charge_1": "force_charge_1",
            "force_charge_2": "force_charge_2",
            "full_charge": "full_charge_request",
            "reserved": ("const", 0),
        },
        0x35E: {"name": ("const", "PYLON   ")},
    },
    "sma_si": SMA,
    "victron": {
        **SMA,
        0x35F: {
            "product_id": ("const", 0),
            "firmware": ("const", (1, 0)),
            "capacity_ah": ("capacity_ah", 0.51),
            "hardware_version": ("const", 0),
        },
        0x370: {"bms_name": ("const", "bmsd BMS")},
        0x371: {"bms_name": ("const", "gateway")},
        0x372: {
            "modules_online": ("modules_online", 0),
            "modules_blocking_charge": ("modules_blocking_charge", 0),
            "modules_blocking_discharge": ("modules_blocking_discharge", 0),
            "modules_offline": ("modules_offline", 0),
        },
        0x373: {
            "cell_voltage_min_v": ("cell_voltage_min_v", 0.00051),
            "cell_voltage_max_v": ("cell_voltage_max_v", 0.00051),
            "cell_temp_min_c": ("cell_temp_min_c", 0.51),
            "cell_temp_max_c": ("cell_temp_max_c", 0.51),
        },
    },
    "pylontech_hv": {
        0x4210: {
            "voltage_v": ("voltage_v", 0.051),
            "current_a": ("current_a", 0.051),
            "temp_c": ("temp_c", 0.051),
            "soc_pct": ("soc_pct", 0.51),
            "soh_pct": ("soh_pct", 0.51),
        },
        0x4220: LIMITS,
        0x4230: {
            "cell_voltage_max_v": ("cell_voltage_max_v", 0.00051),
            "cell_voltage_min_v": ("cell_voltage_min_v", 0.00051),
            "cell_voltage_max_no": ("cell_voltage_max_no", 0),
            "cell_voltage_min_no": ("cell_voltage_min_no", 0),
        },
        0x4240: {
            "cell_temp_max_c": ("cell_temp_max_c", 0.051),
            "cell_temp_min_c": ("cell_temp_min_c", 0.051),
            "cell_temp_max_no": ("cell_temp_max_no", 0),
            "cell_temp_min_no": ("cell_temp_min_no", 0),
        },
        0x4250: {
            "basic_status": ("basic_status", 0),
            "force_charge": "force_charge_1",
            "balance_charge": ("const", False),
            "cycles": ("cycle_count", 0.51),
            "error.internal_comm": "alarm.internal_comm",
            "error.relay_check": "alarm.contactor",
            "error.other": "alarm.system",
            **{
                f"{word}.{bit}": f"{level}.{condition}"
                for word, level in (("alarm", "warning"), ("protection", "alarm"))
                for bit, condition in (
                    ("cell_low_voltage", "low_voltage"),
                    ("cell_high_voltage", "high_voltage"),
                    ("pile_low_voltage", "low_voltage"),
                    ("pile_high_voltage", "high_voltage"),
                    ("charge_low_temp", "charge_low_temp"),
                    ("charge_high_temp", "charge_high_temp"),
                    ("discharge_low_temp", "discharge_low_temp"),
                    ("discharge_high_temp", "discharge_high_temp"),
                    ("charge_over_current", "charge_overcurrent"),
                    ("discharge_over_current", "discharge_overcurrent"),
                    ("module_low_voltage", "low_voltage"),
                    ("module_high_voltage", "high_voltage"),
                )
            },
        },
        0x4260: {
            "module_voltage_max_v": ("module_voltage_max_v", 0.00051),
            "module_voltage_min_v": ("module_voltage_min_v", 0.00051),
            "module_voltage_max_no": ("module_voltage_max_no", 0),
            "module_voltage_min_no": ("module_voltage_min_no", 0),
        },
        0x4270: {
            "module_temp_max_c": ("module_temp_max_c", 0.051),
            "module_temp_min_c": ("module_temp_min_c", 0.051),
            "module_temp_max_no": ("module_temp_max_no", 0),
            "module_temp_min_no": ("module_temp_min_no", 0),
        },
        0x4280: {
            "charge_forbidden": "charge_forbidden",
            "discharge_forbidden": "discharge_forbidden",
        },
        0x4290: {"fault_extension": ("const", 0)},
        0x7310: {"hardware_version": ("const", 1), "software": ("const", (1, 0))},
        0x7320: {
            "module_quantity": ("module_count", 0),
            "modules_in_series": ("modules_in_series", 0),
            "cells_per_module": ("cells_per_module", 0),
            "voltage_level_v": ("nominal_voltage_v", 0.51),
            "capacity_ah": ("nominal_capacity_ah", 0.51),
        },
        0x7330: {"name_part": ("const", "PYLONTEC")},
        0x7340: {"name_part": ("const", "H")},
    },
}


def _check(profile: str, frame_id: int, got: dict[str, Any], values: dict[str, float]) -> None:
    expected = EXPECTED[profile][frame_id]
    assert set(got) == set(expected), f"{frame_id:#x}: decoded {sorted(got)}"
    for key, rule in expected.items():
        if rule is None:
            continue
        where = f"{profile} {frame_id:#x} {key}"
        if isinstance(rule, str):  # a flag
            assert bool(got[key]) is (values[rule] >= 0.5), where
        elif rule[0] == "const":
            assert got[key] == rule[1], where
        elif rule[0] == "pair":
            assert got[key] == (1 if values[rule[1]] >= 0.5 else 2), where
        else:
            field, tolerance = rule
            assert not math.isnan(values[field]), where
            assert abs(got[key] - values[field]) <= tolerance, (where, got[key], values[field])


@pytest.mark.parametrize("profile", PROFILES)
def test_every_value_of_the_stored_trace_decodes_to_the_state(
    profile: str, base: tuple[PackState, PackInfo]
) -> None:
    state, info = base
    lines = trace_path(profile).read_text(encoding="ascii").splitlines()
    in_force = {round(t, 6): s for t, _, s in run_scenario(profile, state, info)}
    seen_phases: set[str] = set()
    checked: dict[int, int] = {}
    for line in lines:
        t, frame_id, extended, data = parse_line(line)
        assert extended is (profile == "pylontech_hv")
        if frame_id == 0x4200:
            continue  # the inverter's request
        scripted = in_force[round(t, 6)]
        assert scripted is not None
        values = battery_values(scripted, info)
        _check(
            profile,
            frame_id & ~0xF if extended else frame_id,
            decode(profile, frame_id, data),
            values,
        )
        checked[frame_id] = checked.get(frame_id, 0) + 1
        seen_phases.add(phase_of(t))
    assert set(checked) == {i for i in EXPECTED[profile]}, "every frame of the profile appears"
    assert seen_phases == {p for p, _ in PHASES}


@pytest.mark.parametrize("profile", PROFILES)
def test_stored_trace_shows_each_phase(profile: str, base: tuple[PackState, PackInfo]) -> None:
    """Phase by phase, straight from the stored bytes: taper lowers CCL, alarm stops charge
    with a warning, fault zeroes both currents, stale falls silent within stale_after_s."""
    lines = [parse_line(line) for line in trace_path(profile).read_text().splitlines()]
    limit_id = 0x4220 if profile == "pylontech_hv" else 0x351
    by_phase: dict[str, list[dict[str, Any]]] = {p: [] for p, _ in PHASES}
    for t, frame_id, _, data in lines:
        if frame_id == limit_id:
            by_phase[phase_of(t)].append(decode(profile, frame_id, data))
    normal, taper = by_phase["normal"], by_phase["taper"]
    assert normal and all(f["ccl_a"] > 0 and f["dcl_a"] > 0 for f in normal)
    assert taper and [f["ccl_a"] for f in taper] == sorted(
        (f["ccl_a"] for f in taper), reverse=True
    )
    assert taper[-1]["ccl_a"] < taper[0]["ccl_a"] <= 40.0
    assert all(f["ccl_a"] == 0 and f["dcl_a"] > 0 for f in by_phase["alarm"])
    assert all(f["ccl_a"] == 0 and f["dcl_a"] == 0 for f in by_phase["fault"])
    assert all(f["cvl_v"] > 0 for frames in by_phase.values() for f in frames)
    last_battery_frame = max(t for t, frame_id, _, _ in lines if frame_id != 0x4200)
    assert 12.0 <= last_battery_frame <= 11.9 + 1.0 + 1e-6  # last state 11.9 s, stale after 1 s


ALARM_FRAMES = {
    "pylontech_lv": ("PYLON_LV_ALARMS", 0x359),
    "sma_si": ("SMA_ALARMS", 0x35A),
    "victron": ("VICTRON_ALARMS", 0x35A),
    "pylontech_hv": ("PYLON_HV_STATUS", 0x4250),
}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("level", [FaultLevel.WARNING, FaultLevel.FATAL])
def test_every_fault_reaches_its_alarm_bits(
    profile: str, level: FaultLevel, base: tuple[PackState, PackInfo]
) -> None:
    """Each shipped fault at each level, encoded by the profile and decoded independently:
    every alarm/protection bit of the frame is what the fault's condition says."""
    state, info = base
    encoder = ProfileEncoder(load_profile(ROOT / "etc" / "inverters" / f"{profile}.toml"))
    frame, frame_id = ALARM_FRAMES[profile]
    for fault_id in info.fault_quantities:
        faults = FaultState((LevelState(fault_id, level, active=True, tripped=True),))
        values = battery_values(dataclasses.replace(state, faults=faults), info)
        message = encoder.encode(frame, values)
        got = decode(profile, message.arbitration_id, bytes(message.data))
        _check(profile, frame_id, got, values)
        raised = [k for k, v in got.items() if v is True or v == 1]
        # SMA/Victron have a general field at both levels, Pylon LV a system-error protection
        # bit (its alarm bytes have no general bit); Pylon HV reports other faults as Error*.
        if profile in ("sma_si", "victron") or (
            level is FaultLevel.FATAL and profile != "pylontech_hv"
        ):
            assert raised, f"{fault_id} raises nothing in {profile}"
