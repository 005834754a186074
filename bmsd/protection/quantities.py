"""The table of quantities a fault can watch, each with its direction and unit.

A fault in the fault table names one of these; the quantity decides what "beyond the
threshold" means (above or below), so a table entry cannot get the direction wrong. A value of
``None`` means "cannot be judged this tick" (no valid data): the fault's debounce counter then
holds, it neither trips nor clears. Missing data is caught by its own diagnostic quantities
(silence, implausible readings) and by the limits, which go to zero.

Quantities that only apply in one situation (temperature while charging, current after the
contactors opened) return a passing value (−inf for "above", +inf for "below") outside it, so
the fault clears normally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bmsd.model.snapshot import PackSnapshot

Direction = Literal["above", "below"]
IMPLAUSIBLE_WINDOW_S = 10.0
PASS_ABOVE = -math.inf
PASS_BELOW = math.inf


@dataclass(frozen=True, slots=True)
class ProtectionInputs:
    """Everything the fault checks look at in one tick."""

    snapshot: PackSnapshot
    series_cells: int  # cells in series per string: normalises pack voltage
    pack_capacity_ah: float  # normalises current to C-rate
    charging: bool  # current above the charge-detection threshold
    contactor_mismatch_s: float  # how long commanded and feedback contactor states differ
    open_settled: bool  # contactors commanded open long enough for weld checks
    precharging: bool
    precharge_failed: bool
    bus_error_level: int  # worst bus: 0 active, 1 error-passive, 2 bus-off or receiver dead
    control_stall_s: float  # how late this tick started (a stalled or overloaded loop)
    state_file_damaged: bool = False  # latched faults could not be restored at start
    # Ticks within the last IMPLAUSIBLE_WINDOW_S with any implausible reading: an intermittent
    # fault (a loose sense wire) makes a symmetric debounce random-walk; a window catches it.
    implausible_recent_ticks: int = 0
    # Supervision values from outside the pack (EMS heartbeat age, inverter keep-alive age,
    # ...), by name; see bmsd.control.supervision. A missing name reads as "cannot judge".
    external: Mapping[str, float | None] = field(default_factory=dict)
    # Modules whose balancing feedback disagreed with the command (previous tick's judgement).
    balancing_mismatch_modules: int = 0


@dataclass(frozen=True, slots=True)
class Quantity:
    """One watchable quantity."""

    name: str
    direction: Direction
    unit: str
    description: str
    value: Callable[[ProtectionInputs], float | None]


def _cell_v_max(i: ProtectionInputs) -> float | None:
    return None if i.snapshot.cell_voltage is None else i.snapshot.cell_voltage.max_value


def _cell_v_min(i: ProtectionInputs) -> float | None:
    return None if i.snapshot.cell_voltage is None else i.snapshot.cell_voltage.min_value


def _pack_voltages(i: ProtectionInputs) -> list[float]:
    values = [float(v) for v in i.snapshot.string_voltage_sum_v if not math.isnan(v)]
    if i.snapshot.pack_voltage_v is not None:
        values.append(i.snapshot.pack_voltage_v)
    return values


def _pack_v_max(i: ProtectionInputs) -> float | None:
    values = _pack_voltages(i)
    return max(values) / i.series_cells if values else None


def _pack_v_min(i: ProtectionInputs) -> float | None:
    values = _pack_voltages(i)
    return min(values) / i.series_cells if values else None


def _charge_c(i: ProtectionInputs) -> float | None:
    # The measured value even beyond the sensor's range: a saturated shunt means "a lot".
    current = i.snapshot.pack_current_measured_a
    return None if current is None else max(current, 0.0) / i.pack_capacity_ah


def _discharge_c(i: ProtectionInputs) -> float | None:
    current = i.snapshot.pack_current_measured_a
    return None if current is None else max(-current, 0.0) / i.pack_capacity_ah


def _temp_max(i: ProtectionInputs) -> float | None:
    return None if i.snapshot.temperature is None else i.snapshot.temperature.max_value


def _temp_min(i: ProtectionInputs) -> float | None:
    return None if i.snapshot.temperature is None else i.snapshot.temperature.min_value


def _when(
    condition: Callable[[ProtectionInputs], bool],
    value: Callable[[ProtectionInputs], float | None],
    passing: float,
) -> Callable[[ProtectionInputs], float | None]:
    def judged(i: ProtectionInputs) -> float | None:
        return value(i) if condition(i) else passing

    return judged


def _charging(i: ProtectionInputs) -> bool:
    return i.charging


def _not_charging(i: ProtectionInputs) -> bool:
    return not i.charging


def _spread_v(i: ProtectionInputs) -> float | None:
    return None if i.snapshot.cell_voltage is None else i.snapshot.cell_voltage.spread


def _spread_c(i: ProtectionInputs) -> float | None:
    return None if i.snapshot.temperature is None else i.snapshot.temperature.spread


def _module_silence(i: ProtectionInputs) -> float:
    return float(i.snapshot.module_age_s.max()) if i.snapshot.module_age_s.size else 0.0


def _deviation_pct(i: ProtectionInputs) -> float | None:
    deviation, pack = i.snapshot.pack_voltage_deviation_v, i.snapshot.pack_voltage_v
    if deviation is None or pack is None or pack <= 0:
        return None
    return 100.0 * abs(deviation) / pack


def _weld_current(i: ProtectionInputs) -> float | None:
    if not i.open_settled:
        return PASS_ABOVE
    current = i.snapshot.pack_current_a
    return None if current is None else abs(current)


def _weld_bus_ratio(i: ProtectionInputs) -> float | None:
    if not i.open_settled:
        return PASS_ABOVE
    bus, pack = i.snapshot.bus_voltage_v, i.snapshot.pack_voltage_v
    if bus is None or pack is None or pack <= 0:
        return None
    return bus / pack


def _precharge_current(i: ProtectionInputs) -> float | None:
    if not i.precharging:
        return PASS_ABOVE
    current = i.snapshot.pack_current_a
    return None if current is None else abs(current)


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("cell_voltage_max_v", "above", "V", "Highest valid cell voltage", _cell_v_max),
    Quantity("cell_voltage_min_v", "below", "V", "Lowest valid cell voltage", _cell_v_min),
    Quantity(
        "pack_voltage_per_cell_max_v",
        "above",
        "V",
        "Highest of the measured pack voltage and the string sums, per series cell",
        _pack_v_max,
    ),
    Quantity(
        "pack_voltage_per_cell_min_v",
        "below",
        "V",
        "Lowest of the measured pack voltage and the string sums, per series cell",
        _pack_v_min,
    ),
    Quantity(
        "charge_current_c", "above", "C", "Charge current over pack capacity (C-rate)", _charge_c
    ),
    Quantity(
        "discharge_current_c",
        "above",
        "C",
        "Discharge current over pack capacity (C-rate)",
        _discharge_c,
    ),
    Quantity(
        "cell_temp_max_charging_c",
        "above",
        "°C",
        "Highest cell temperature, judged while charging",
        _when(_charging, _temp_max, PASS_ABOVE),
    ),
    Quantity(
        "cell_temp_min_charging_c",
        "below",
        "°C",
        "Lowest cell temperature, judged while charging",
        _when(_charging, _temp_min, PASS_BELOW),
    ),
    Quantity(
        "cell_temp_max_discharging_c",
        "above",
        "°C",
        "Highest cell temperature, judged while not charging (discharge or rest)",
        _when(_not_charging, _temp_max, PASS_ABOVE),
    ),
    Quantity(
        "cell_temp_min_discharging_c",
        "below",
        "°C",
        "Lowest cell temperature, judged while not charging (discharge or rest)",
        _when(_not_charging, _temp_min, PASS_BELOW),
    ),
    Quantity("cell_voltage_spread_v", "above", "V", "Highest minus lowest cell voltage", _spread_v),
    Quantity("temp_spread_c", "above", "°C", "Highest minus lowest temperature", _spread_c),
    Quantity(
        "module_silence_s",
        "above",
        "s",
        "Longest time any module has not sent a frame (module comm loss)",
        _module_silence,
    ),
    Quantity(
        "current_sensor_silence_s",
        "above",
        "s",
        "Age of the pack current reading (current sensor comm loss)",
        lambda i: i.snapshot.pack_current_age_s,
    ),
    Quantity(
        "switchbox_silence_s",
        "above",
        "s",
        "Age of the contactor feedback (switch box comm loss)",
        lambda i: i.snapshot.contactors_age_s,
    ),
    Quantity(
        "implausible_recent_ticks",
        "above",
        "",
        f"Ticks in the last {IMPLAUSIBLE_WINDOW_S:g} s with any implausible reading "
        "(intermittent faults)",
        lambda i: float(i.implausible_recent_ticks),
    ),
    Quantity(
        "cell_voltage_frozen_swing_v",
        "above",
        "V",
        "How far the pack's mean cell voltage moved while a fresh cell voltage did not change "
        "at all (frozen sensor: it no longer follows the pack; nothing is judged at rest)",
        lambda i: i.snapshot.cell_voltage_frozen_swing_v,
    ),
    Quantity(
        "current_frozen_s",
        "above",
        "s",
        "How long the fresh current reading has not changed at all, outside the rest band "
        "(frozen current sensor)",
        lambda i: i.snapshot.pack_current_frozen_s,
    ),
    Quantity(
        "pack_voltage_deviation_pct",
        "above",
        "%",
        "Measured pack voltage against the sum of cell voltages, in % of the pack voltage",
        _deviation_pct,
    ),
    Quantity(
        "unexpected_module_count",
        "above",
        "",
        "Node ids sending module frames that the configuration does not list",
        lambda i: float(i.snapshot.unexpected_modules),
    ),
    Quantity(
        "module_error_count",
        "above",
        "",
        "Modules reporting error flags in their status",
        lambda i: float((i.snapshot.module_error_flags != 0).sum()),
    ),
    Quantity(
        "current_sensor_error",
        "above",
        "",
        "1 when the current sensor reports an error bit",
        lambda i: 1.0 if i.snapshot.sensor_error_flags else 0.0,
    ),
    Quantity(
        "contactor_mismatch_s",
        "above",
        "s",
        "How long contactor feedback has disagreed with the command",
        lambda i: i.contactor_mismatch_s,
    ),
    Quantity(
        "open_current_a",
        "above",
        "A",
        "Current flowing although the contactors are open (welded contactor)",
        _weld_current,
    ),
    Quantity(
        "open_bus_voltage_ratio",
        "above",
        "",
        "Bus voltage over pack voltage although the contactors are open (welded contactor)",
        _weld_bus_ratio,
    ),
    Quantity(
        "precharge_current_a",
        "above",
        "A",
        "Current through the precharge path while precharging",
        _precharge_current,
    ),
    Quantity(
        "precharge_failure",
        "above",
        "",
        "1 when the bus voltage did not reach its share of the pack voltage in time",
        lambda i: 1.0 if i.precharge_failed else 0.0,
    ),
    Quantity(
        "can_bus_error_level",
        "above",
        "",
        "Worst CAN bus state: 0 error-active, 1 error-passive, 2 bus-off or receiver dead",
        lambda i: float(i.bus_error_level),
    ),
    Quantity(
        "can_error_frames_per_s",
        "above",
        "1/s",
        "Error frames per second on the worst CAN bus, averaged over its rate_window_s "
        "(a noisy bus: wiring, termination, a failing node)",
        lambda i: i.external.get("can_error_frames_per_s"),
    ),
    Quantity(
        "can_unknown_frames_per_s",
        "above",
        "1/s",
        "Frames per second with an unknown id or an undecodable payload on the worst CAN bus, "
        "averaged over its rate_window_s (a babbling or misconfigured node)",
        lambda i: i.external.get("can_unknown_frames_per_s"),
    ),
    Quantity(
        "state_file_damaged",
        "above",
        "",
        "1 on the first tick when the latched-fault file was damaged (latches may be lost)",
        lambda i: 1.0 if i.state_file_damaged else 0.0,
    ),
    Quantity(
        "control_stall_s",
        "above",
        "s",
        "How late this control tick started against its schedule (control loop overrun)",
        lambda i: i.control_stall_s,
    ),
    Quantity(
        "ems_heartbeat_timeout",
        "above",
        "",
        "EMS heartbeat (Modbus) late: 0 on time, 1 late with action derate, 2 late with "
        "action fault; not judged until the EMS first writes or without supervision",
        lambda i: i.external.get("ems_heartbeat_timeout"),
    ),
    Quantity(
        "inverter_keepalive_overdue_s",
        "above",
        "s",
        "How far the most overdue inverter keep-alive is past its timeout (negative while on "
        "time; not judged before the first keep-alive within the start-up grace)",
        lambda i: i.external.get("inverter_keepalive_overdue_s"),
    ),
    Quantity(
        "inverter_limit_excess_a",
        "above",
        "A",
        "Measured current beyond the limits sent to the inverters, past the margin (the "
        "inverter ignores the battery)",
        lambda i: i.external.get("inverter_limit_excess_a"),
    ),
    Quantity(
        "balancing_mismatch_modules",
        "above",
        "",
        "Modules whose reported bleeding differs from the balancing command (after a grace time)",
        lambda i: float(i.balancing_mismatch_modules),
    ),
)

QUANTITY_BY_NAME: dict[str, Quantity] = {q.name: q for q in QUANTITIES}

# The thresholds a fault on each quantity may have: what the quantity can reach on a real
# pack, with room for any lithium chemistry and any sane setting. A threshold beyond it would
# never trip (a fatal cell voltage of 1e300 V, a comm-loss after a day): the table refuses
# it rather than let a level be switched off by a typo. Flags and levels (0/1, 0..2) must
# trip at a value they take.
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
    # Cell voltages: sodium-ion and LTO go down to 1.5 V, no lithium cell reaches 5 V.
    "cell_voltage_max_v": (0.5, 6.0),
    "cell_voltage_min_v": (0.5, 6.0),
    "pack_voltage_per_cell_max_v": (0.5, 6.0),
    "pack_voltage_per_cell_min_v": (0.5, 6.0),
    "charge_current_c": (0.01, 20.0),
    "discharge_current_c": (0.01, 20.0),
    "cell_temp_max_charging_c": (-60.0, 150.0),
    "cell_temp_min_charging_c": (-60.0, 150.0),
    "cell_temp_max_discharging_c": (-60.0, 150.0),
    "cell_temp_min_discharging_c": (-60.0, 150.0),
    "cell_voltage_spread_v": (0.001, 2.0),
    "temp_spread_c": (0.1, 100.0),
    # Comm loss: the acquisition timeouts are at most 60 s, so is a silence worth a fault.
    "module_silence_s": (0.01, 60.0),
    "current_sensor_silence_s": (0.01, 60.0),
    "switchbox_silence_s": (0.01, 60.0),
    "implausible_recent_ticks": (1.0, 10_000.0),
    "cell_voltage_frozen_swing_v": (0.001, 1.0),
    "current_frozen_s": (1.0, 3600.0),
    "pack_voltage_deviation_pct": (0.1, 100.0),
    "unexpected_module_count": (1.0, 10_000.0),
    "module_error_count": (1.0, 10_000.0),
    "current_sensor_error": (0.001, 1.0),
    "contactor_mismatch_s": (0.01, 10.0),
    "open_current_a": (0.01, 1000.0),
    "open_bus_voltage_ratio": (0.05, 1.5),
    "precharge_current_a": (0.01, 10_000.0),
    "precharge_failure": (0.001, 1.0),
    "can_bus_error_level": (0.001, 2.0),
    "can_error_frames_per_s": (0.01, 100_000.0),
    "can_unknown_frames_per_s": (0.01, 100_000.0),
    "state_file_damaged": (0.001, 1.0),
    "control_stall_s": (0.001, 10.0),
    "ems_heartbeat_timeout": (0.001, 2.0),
    "inverter_keepalive_overdue_s": (0.0, 3600.0),
    "inverter_limit_excess_a": (0.0, 1000.0),
    "balancing_mismatch_modules": (1.0, 10_000.0),
}
