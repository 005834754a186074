"""Battery values for inverter profiles: the fields a profile maps to signals, from a PackState.

:data:`FIELDS` is the table of every value a profile may name (unit, meaning); one pure
function, :func:`battery_values`, computes all of them for one PackState. The inverter
semantics are applied here, once, for every profile:

- the charge voltage limit (CVL) is never 0 (an inverter reads CVL 0 as over-voltage; the
  limits guarantee CVL > 0, and this module re-checks it);
- charging stops with CCL 0 and the charge-enable flag cleared, discharging likewise;
- in fault (BMS mode fault or any fatal fault active) CCL = DCL = 0, both enable flags are
  clear and the protection flags are set (at least the general / system-error flag);
- with the contactors not closed, CCL = DCL = 0 (the inverter must not draw current);
- a supervision stop (keep-alive lost, action "stop") also sends CCL = DCL = 0.

A value that cannot be known (no valid cell voltage, no SOC yet) is NaN; the encoder sends the
signal's ``invalid_raw`` for it (SMA's 0xFFFF/0x8000) or 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultLevel
from bmsd.model.state import PackState

NAN = math.nan

# Alarm conditions reported to inverters, and which fault-table quantities raise them.
CONDITIONS: dict[str, str] = {
    "general": "Any of the conditions below (and any other fault) at this level",
    "high_voltage": "Cell or pack voltage high",
    "low_voltage": "Cell or pack voltage low",
    "high_temp": "Cell temperature high (charging or discharging)",
    "low_temp": "Cell temperature low (charging or discharging)",
    "charge_high_temp": "Cell temperature high while charging",
    "charge_low_temp": "Cell temperature low while charging",
    "discharge_high_temp": "Cell temperature high while discharging",
    "discharge_low_temp": "Cell temperature low while discharging",
    "charge_overcurrent": "Charge current high",
    "discharge_overcurrent": "Discharge current high",
    "imbalance": "Cell voltage spread high",
    "contactor": "Contactor or precharge fault",
    "internal_comm": "Internal communication lost (slaves, current sensor, switch box, CAN bus)",
    "system": "Any other BMS fault (plausibility, control loop, state file, inverter supervision)",
}

QUANTITY_CONDITIONS: dict[str, tuple[str, ...]] = {
    "cell_voltage_max_v": ("high_voltage",),
    "pack_voltage_per_cell_max_v": ("high_voltage",),
    "cell_voltage_min_v": ("low_voltage",),
    "pack_voltage_per_cell_min_v": ("low_voltage",),
    "charge_current_c": ("charge_overcurrent",),
    "discharge_current_c": ("discharge_overcurrent",),
    "cell_temp_max_charging_c": ("high_temp", "charge_high_temp"),
    "cell_temp_min_charging_c": ("low_temp", "charge_low_temp"),
    "cell_temp_max_discharging_c": ("high_temp", "discharge_high_temp"),
    "cell_temp_min_discharging_c": ("low_temp", "discharge_low_temp"),
    "cell_voltage_spread_v": ("imbalance",),
    "contactor_mismatch_s": ("contactor",),
    "open_current_a": ("contactor",),
    "open_bus_voltage_ratio": ("contactor",),
    "precharge_current_a": ("contactor",),
    "precharge_failure": ("contactor",),
    "module_silence_s": ("internal_comm",),
    "current_sensor_silence_s": ("internal_comm",),
    "switchbox_silence_s": ("internal_comm",),
    "can_bus_error_level": ("internal_comm",),
}


@dataclass(frozen=True, slots=True)
class Field:
    """One battery value a profile can send."""

    name: str
    unit: str
    description: str
    flag: bool = False


def _fields() -> dict[str, Field]:
    rows = [
        Field("charge_voltage_v", "V", "Charge voltage limit (CVL), never 0"),
        Field("charge_current_a", "A", "Charge current limit (CCL), magnitude; 0 stops charging"),
        Field("discharge_current_a", "A", "Discharge current limit (DCL), magnitude"),
        Field("discharge_voltage_v", "V", "Discharge voltage limit (DVL)"),
        Field("soc_pct", "%", "Pack SOC for inverters (NaN until estimated)"),
        Field("soh_pct", "%", "State of health (capacity) (NaN until estimated)"),
        Field("voltage_v", "V", "Pack voltage (measured, else sum of cells)"),
        Field("current_a", "A", "Pack current, sign per the profile's current_sign"),
        Field("temp_c", "°C", "Mean cell temperature"),
        Field("cell_voltage_min_v", "V", "Lowest cell voltage"),
        Field("cell_voltage_max_v", "V", "Highest cell voltage"),
        Field("cell_voltage_min_no", "", "Number (1-based) of the lowest cell"),
        Field("cell_voltage_max_no", "", "Number (1-based) of the highest cell"),
        Field("cell_temp_min_c", "°C", "Lowest cell temperature"),
        Field("cell_temp_max_c", "°C", "Highest cell temperature"),
        Field("cell_temp_min_k", "K", "Lowest cell temperature in kelvin"),
        Field("cell_temp_max_k", "K", "Highest cell temperature in kelvin"),
        Field("cell_temp_min_no", "", "Number (1-based) of the coldest sensor"),
        Field("cell_temp_max_no", "", "Number (1-based) of the hottest sensor"),
        Field("module_voltage_min_v", "V", "Lowest module voltage (sum of its cells)"),
        Field("module_voltage_max_v", "V", "Highest module voltage"),
        Field("module_voltage_min_no", "", "Number (1-based) of the lowest module"),
        Field("module_voltage_max_no", "", "Number (1-based) of the highest module"),
        Field("module_temp_min_c", "°C", "Lowest module mean temperature"),
        Field("module_temp_max_c", "°C", "Highest module mean temperature"),
        Field("module_temp_min_no", "", "Number (1-based) of the coldest module"),
        Field("module_temp_max_no", "", "Number (1-based) of the hottest module"),
        Field("module_count", "", "Modules configured"),
        Field("modules_online", "", "Modules with all cell voltages valid"),
        Field("modules_offline", "", "Modules with an invalid cell voltage"),
        Field(
            "modules_blocking_charge", "", "Modules blocking charge (all, when charge is stopped)"
        ),
        Field("modules_blocking_discharge", "", "Modules blocking discharge (likewise)"),
        Field("modules_in_series", "", "Modules in series per string"),
        Field("cells_per_module", "", "Series cells per module"),
        Field("series_cells", "", "Cells in series per string"),
        Field("capacity_ah", "Ah", "Pack capacity (estimated, else nominal)"),
        Field("nominal_capacity_ah", "Ah", "Nominal pack capacity"),
        Field("nominal_voltage_v", "V", "Nominal pack voltage"),
        Field("cycle_count", "", "Equivalent full cycles"),
        Field("basic_status", "", "0 sleep, 1 charging, 2 discharging, 3 idle (Pylontech HV)"),
        Field("charge_enable", "", "Charging allowed (CCL > 0)", flag=True),
        Field("discharge_enable", "", "Discharging allowed (DCL > 0)", flag=True),
        Field("charge_forbidden", "", "Charging not allowed", flag=True),
        Field("discharge_forbidden", "", "Discharging not allowed", flag=True),
        Field("force_charge_1", "", "Force-charge request I (SOC hysteresis)", flag=True),
        Field("force_charge_2", "", "Force-charge request II (SOC hysteresis)", flag=True),
        Field("full_charge_request", "", "Full-charge request (not raised by bmsd: 0)", flag=True),
        Field("fault", "", "BMS in fault: no charge, no discharge", flag=True),
    ]
    for condition, text in CONDITIONS.items():
        rows.append(Field(f"alarm.{condition}", "", f"Fatal fault (protection): {text}", True))
        rows.append(Field(f"warning.{condition}", "", f"Warning: {text}", True))
    return {row.name: row for row in rows}


FIELDS: dict[str, Field] = _fields()


@dataclass(frozen=True, slots=True)
class PackInfo:
    """What does not change while the daemon runs."""

    modules_per_string: int
    strings: int
    cells_per_module: int
    temps_per_module: int
    nominal_capacity_ah: float
    nominal_voltage_v: float
    fault_quantities: Mapping[str, str]  # fault id -> quantity it watches

    @property
    def module_count(self) -> int:
        return self.modules_per_string * self.strings


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The limits and enables after the inverter semantics."""

    charge_voltage_v: float
    charge_current_a: float
    discharge_current_a: float
    discharge_voltage_v: float
    charge_enable: bool
    discharge_enable: bool
    fault: bool
    reason: str


def outgoing_limits(state: PackState, stop_reason: str = "") -> Outgoing:
    """Apply the inverter semantics to the state's limits (pure)."""
    limits = state.limits
    cvl = limits.charge_voltage_v
    if not cvl > 0.0:  # Limits forbids it; an inverter reads CVL 0 as over-voltage
        cvl = limits.discharge_voltage_v
    ccl, dcl = limits.charge_current_a, limits.discharge_current_a
    fault = state.mode is BmsMode.FAULT or state.faults.has_fatal
    reason = ""
    if fault:
        ccl = dcl = 0.0
        reason = "fault"
    elif state.mode is not BmsMode.CLOSED:
        ccl = dcl = 0.0
        reason = f"contactors not closed ({state.mode.value})"
    elif stop_reason:
        ccl = dcl = 0.0
        reason = stop_reason
    return Outgoing(
        charge_voltage_v=cvl,
        charge_current_a=max(0.0, ccl),
        discharge_current_a=max(0.0, dcl),
        discharge_voltage_v=limits.discharge_voltage_v,
        charge_enable=ccl > 0.0,
        discharge_enable=dcl > 0.0,
        fault=fault,
        reason=reason,
    )


def force_charge_step(soc_pct: float, active: bool, on_pct: float, off_pct: float) -> bool:
    """Hysteresis: set at or below ``on_pct``, clear at or above ``off_pct``, else hold.

    An unknown SOC (NaN) clears the request: a request is an action, never a default."""
    if math.isnan(soc_pct):
        return False
    if soc_pct <= on_pct:
        return True
    if soc_pct >= off_pct:
        return False
    return active


def active_conditions(state: PackState, info: PackInfo) -> tuple[set[str], set[str]]:
    """(conditions at fatal level, conditions at warning level) of the active faults."""
    alarms: set[str] = set()
    warnings: set[str] = set()
    for level in state.faults.active():
        if level.level is FaultLevel.INFO:
            continue
        quantity = info.fault_quantities.get(level.fault_id, "")
        conditions = QUANTITY_CONDITIONS.get(quantity, ("system",))
        target = alarms if level.level is FaultLevel.FATAL else warnings
        target.update(conditions)
        target.add("general")
    if state.mode is BmsMode.FAULT and not alarms:
        alarms.update(("general", "system"))
    return alarms, warnings


def _number(index: int) -> float:
    return float(index + 1)


def battery_values(
    state: PackState,
    info: PackInfo,
    *,
    discharge_positive: bool = False,
    force_charge: tuple[bool, bool] = (False, False),
    stop_reason: str = "",
) -> dict[str, float]:
    """Every field of :data:`FIELDS` for one state; flags are 1.0 or 0.0, unknowns NaN."""
    out = outgoing_limits(state, stop_reason)
    snap = state.snapshot
    est = state.estimates
    values: dict[str, float] = {
        "charge_voltage_v": out.charge_voltage_v,
        "charge_current_a": out.charge_current_a,
        "discharge_current_a": out.discharge_current_a,
        "discharge_voltage_v": out.discharge_voltage_v,
        "charge_enable": float(out.charge_enable),
        "discharge_enable": float(out.discharge_enable),
        "charge_forbidden": float(not out.charge_enable),
        "discharge_forbidden": float(not out.discharge_enable),
        "fault": float(out.fault),
        "force_charge_1": float(force_charge[0]),
        "force_charge_2": float(force_charge[1]),
        "full_charge_request": 0.0,
        "soc_pct": NAN if est is None else 100.0 * est.pack_soc,
        "soh_pct": NAN if est is None else 100.0 * est.soh_capacity,
        "capacity_ah": info.nominal_capacity_ah if est is None else est.pack_capacity_ah,
        "nominal_capacity_ah": info.nominal_capacity_ah,
        "nominal_voltage_v": info.nominal_voltage_v,
        "cycle_count": 0.0 if est is None else est.equivalent_full_cycles,
        "module_count": float(info.module_count),
        "modules_in_series": float(info.modules_per_string),
        "cells_per_module": float(info.cells_per_module),
        "series_cells": float(info.modules_per_string * info.cells_per_module),
    }
    current = snap.pack_current_a
    values["current_a"] = NAN if current is None else (-current if discharge_positive else current)
    cells = snap.cell_voltage
    voltage = snap.pack_voltage_v
    if voltage is None and cells is not None and snap.all_cells_valid:
        voltage = float(snap.cell_voltage_v.sum()) / info.strings
    values["voltage_v"] = NAN if voltage is None else voltage
    if cells is None:
        for key in ("min_v", "max_v", "min_no", "max_no"):
            values[f"cell_voltage_{key}"] = NAN
    else:
        per_module = info.cells_per_module
        values["cell_voltage_min_v"] = cells.min_value
        values["cell_voltage_max_v"] = cells.max_value
        values["cell_voltage_min_no"] = _number(
            cells.min_location.module * per_module + cells.min_location.index
        )
        values["cell_voltage_max_no"] = _number(
            cells.max_location.module * per_module + cells.max_location.index
        )
    temps = snap.temperature
    if temps is None:
        for key in ("min_c", "max_c", "min_k", "max_k", "min_no", "max_no"):
            values[f"cell_temp_{key}"] = NAN
        values["temp_c"] = NAN
    else:
        per_module = info.temps_per_module
        values["temp_c"] = temps.mean
        values["cell_temp_min_c"] = temps.min_value
        values["cell_temp_max_c"] = temps.max_value
        values["cell_temp_min_k"] = temps.min_value + 273.15
        values["cell_temp_max_k"] = temps.max_value + 273.15
        values["cell_temp_min_no"] = _number(
            temps.min_location.module * per_module + temps.min_location.index
        )
        values["cell_temp_max_no"] = _number(
            temps.max_location.module * per_module + temps.max_location.index
        )
    values.update(_module_values(state, info, out))
    mode_current = 0.0 if current is None else current
    if state.mode is not BmsMode.CLOSED:
        status = 0.0
    elif mode_current > 1.0:
        status = 1.0
    elif mode_current < -1.0:
        status = 2.0
    else:
        status = 3.0
    values["basic_status"] = status
    alarms, warnings = active_conditions(state, info)
    for condition in CONDITIONS:
        values[f"alarm.{condition}"] = float(condition in alarms)
        values[f"warning.{condition}"] = float(condition in warnings)
    return values


def _module_values(state: PackState, info: PackInfo, out: Outgoing) -> dict[str, float]:
    snap = state.snapshot
    modules = info.module_count
    cell_v = np.asarray(snap.cell_voltage_v, dtype=np.float64).reshape(modules, -1)
    cell_ok = np.asarray(snap.cell_voltage_valid, dtype=np.bool_).reshape(modules, -1)
    module_ok = cell_ok.all(axis=1)
    online = int(module_ok.sum())
    values: dict[str, float] = {
        "modules_online": float(online),
        "modules_offline": float(modules - online),
        "modules_blocking_charge": 0.0 if out.charge_enable else float(modules),
        "modules_blocking_discharge": 0.0 if out.discharge_enable else float(modules),
    }
    if online:
        sums = np.where(module_ok, cell_v.sum(axis=1), np.nan)
        values["module_voltage_min_v"] = float(np.nanmin(sums))
        values["module_voltage_max_v"] = float(np.nanmax(sums))
        values["module_voltage_min_no"] = _number(int(np.nanargmin(sums)))
        values["module_voltage_max_no"] = _number(int(np.nanargmax(sums)))
    else:
        for key in ("min_v", "max_v", "min_no", "max_no"):
            values[f"module_voltage_{key}"] = NAN
    temps = np.asarray(snap.temp_c, dtype=np.float64)
    temp_ok = np.asarray(snap.temp_valid, dtype=np.bool_)
    if info.temps_per_module and temp_ok.any():
        grid = np.where(temp_ok, temps, np.nan).reshape(modules, -1)
        counts = (~np.isnan(grid)).sum(axis=1)
        means = np.where(counts > 0, np.nansum(grid, axis=1) / np.maximum(counts, 1), np.nan)
        values["module_temp_min_c"] = float(np.nanmin(means))
        values["module_temp_max_c"] = float(np.nanmax(means))
        values["module_temp_min_no"] = _number(int(np.nanargmin(means)))
        values["module_temp_max_no"] = _number(int(np.nanargmax(means)))
    else:
        for key in ("min_c", "max_c", "min_no", "max_no"):
            values[f"module_temp_{key}"] = NAN
    return values
