"""The native Modbus register map: one table of registers, and its encoding into words.

Every register is a row of :data:`REGISTERS` (address, name, type, scale, unit, description,
input or holding, and the function that takes its value from the pack view); the per-module
cell voltages and temperatures are the repeating blocks of :data:`MODULE_ARRAYS`. The server,
the generated docs/modbus.md and the tests all read these tables, nothing else.

Conventions (the same as SunSpec's): big-endian words, 32-bit values high word first; a scaled
integer is ``raw = round(value / scale)``; a value bmsd does not have (no valid reading, no
estimate yet) is the "not available" marker of its type (:data:`NOT_AVAILABLE`); a value
outside the type's range is clamped to the largest value that is not the marker.
Locations (string, module, cell, sensor) are 0-based, as in bmsd's logs (``s0/m2/c7``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultLevel, FaultState
from bmsd.model.snapshot import Extremes
from bmsd.model.state import PackState
from bmsd.model.topology import Topology

RegType = Literal["u16", "s16", "u32", "s32", "float32"]
Space = Literal["input", "holding"]

MAP_VERSION = 1
"""Raised whenever an address or meaning in the native map changes."""

WORDS: dict[RegType, int] = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "float32": 2}

NOT_AVAILABLE: dict[RegType, int] = {
    "u16": 0xFFFF,
    "s16": 0x8000,
    "u32": 0xFFFF_FFFF,
    "s32": 0x8000_0000,
    "float32": 0x7FC0_0000,  # quiet NaN
}
"""The raw "not available" marker of each type (as an unsigned number)."""

_RANGE: dict[RegType, tuple[int, int]] = {
    "u16": (0, 0xFFFE),
    "s16": (-0x7FFF, 0x7FFF),
    "u32": (0, 0xFFFF_FFFE),
    "s32": (-0x7FFF_FFFF, 0x7FFF_FFFF),
}

BMS_MODE_CODES: dict[BmsMode, int] = {
    BmsMode.INIT: 0,
    BmsMode.STANDBY: 1,
    BmsMode.PRECHARGE: 2,
    BmsMode.CLOSED: 3,
    BmsMode.OPENING: 4,
    BmsMode.FAULT: 5,
}

# Fault categories of the alarm/warning/latched bitfields, by watched quantity. A quantity not
# listed (added later) lands in the "other" bit, so no active fault is ever invisible.
FAULT_BITS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "cell over-voltage", ("cell_voltage_max_v", "pack_voltage_per_cell_max_v")),
    (1, "cell under-voltage", ("cell_voltage_min_v", "pack_voltage_per_cell_min_v")),
    (2, "over-temperature", ("cell_temp_max_charging_c", "cell_temp_max_discharging_c")),
    (3, "under-temperature", ("cell_temp_min_charging_c", "cell_temp_min_discharging_c")),
    (4, "charge over-current", ("charge_current_c",)),
    (5, "discharge over-current", ("discharge_current_c",)),
    (6, "cell voltage imbalance", ("cell_voltage_spread_v",)),
    (7, "temperature imbalance", ("temp_spread_c",)),
    (
        8,
        "communication (modules, current sensor, switch box, CAN bus)",
        (
            "module_silence_s",
            "current_sensor_silence_s",
            "switchbox_silence_s",
            "can_bus_error_level",
            "unexpected_module_count",
        ),
    ),
    (
        9,
        "measurement plausibility (implausible, frozen, sensor or module errors)",
        (
            "implausible_recent_ticks",
            "cell_voltage_frozen_swing_v",
            "current_frozen_s",
            "pack_voltage_deviation_pct",
            "module_error_count",
            "current_sensor_error",
        ),
    ),
    (
        10,
        "contactors and precharge",
        (
            "contactor_mismatch_s",
            "open_current_a",
            "open_bus_voltage_ratio",
            "precharge_current_a",
            "precharge_failure",
        ),
    ),
    (
        11,
        "daemon (control loop overrun, damaged state file)",
        ("control_stall_s", "state_file_damaged"),
    ),
    (12, "external supervision (EMS heartbeat)", ("ems_heartbeat_timeout",)),
    (15, "other", ()),
)
OTHER_FAULT_BIT = 15


def fault_bit_of(quantity: str) -> int:
    """The bitfield bit a fault watching ``quantity`` sets."""
    for bit, _label, quantities in FAULT_BITS:
        if quantity in quantities:
            return bit
    return OTHER_FAULT_BIT


@dataclass(frozen=True, slots=True)
class FaultFlags:
    """The fault bitfields of one state: bit n set when a fault of category n is in it."""

    info: int
    warning: int
    alarm: int  # an active fatal level
    latched: int

    @classmethod
    def of(cls, faults: FaultState, bit_of_fault: Mapping[str, int]) -> FaultFlags:
        info = warning = alarm = latched = 0
        for level in faults.levels:
            mask = 1 << bit_of_fault.get(level.fault_id, OTHER_FAULT_BIT)
            if level.active:
                if level.level is FaultLevel.INFO:
                    info |= mask
                elif level.level is FaultLevel.WARNING:
                    warning |= mask
                else:
                    alarm |= mask
            if level.latched:
                latched |= mask
        return cls(info, warning, alarm, latched)


@dataclass(frozen=True, slots=True)
class PackInfo:
    """What the map needs beyond the PackState: fixed facts of the pack and the daemon."""

    topology: Topology
    nominal_capacity_ah: float
    bit_of_fault: Mapping[str, int]  # fault id -> bitfield bit


@dataclass(slots=True)
class MapView:
    """One PackState as the register functions see it (built once per new state)."""

    state: PackState
    info: PackInfo
    flags: FaultFlags
    ems_heartbeat_value: int
    ems_heartbeat_age_s: float | None
    balancing_enabled: bool | None


ValueFn = Callable[[MapView], float | None]


@dataclass(frozen=True, slots=True)
class Register:
    """One row of the native map."""

    address: int
    name: str
    type: RegType
    scale: float
    unit: str
    description: str
    space: Space
    value: ValueFn
    writable: bool = False

    @property
    def words(self) -> int:
        return WORDS[self.type]


@dataclass(frozen=True, slots=True)
class ModuleArray:
    """A per-module block repeated for every module: ``address(m, i) = base + stride*m + i``."""

    name: str
    offset: int  # from the module's block start
    capacity: int  # most entries a module block has room for
    type: RegType
    scale: float
    unit: str
    description: str
    count: Callable[[Topology], int]
    values: Callable[[MapView], tuple[NDArray[np.float64], NDArray[np.bool_]]]


MODULE_BASE = 1000
"""Input register of module 0's block."""
MODULE_STRIDE = 320
"""Registers between two module blocks (cells at +0..+255, temperatures at +256..+319)."""


# -- value functions -------------------------------------------------------------------------


def _extreme(which: str) -> ValueFn:
    """A field of the cell-voltage or temperature extremes: ``voltage.max_value`` etc."""
    source, attribute = which.split(".")

    def value(view: MapView) -> float | None:
        snapshot = view.state.snapshot
        extremes: Extremes | None = (
            snapshot.cell_voltage if source == "voltage" else snapshot.temperature
        )
        if extremes is None:
            return None
        result: float = getattr(extremes, attribute)
        return result

    return value


def _location(which: str, part: str) -> ValueFn:
    source, attribute = which.split(".")

    def value(view: MapView) -> float | None:
        snapshot = view.state.snapshot
        extremes = snapshot.cell_voltage if source == "voltage" else snapshot.temperature
        if extremes is None:
            return None
        location = getattr(extremes, attribute)
        return float(getattr(location, part))

    return value


def _estimate(attribute: str, factor: float = 1.0) -> ValueFn:
    def value(view: MapView) -> float | None:
        estimates = view.state.estimates
        return None if estimates is None else float(getattr(estimates, attribute)) * factor

    return value


def _power_w(view: MapView) -> float | None:
    snapshot = view.state.snapshot
    if snapshot.pack_voltage_v is None or snapshot.pack_current_a is None:
        return None
    return snapshot.pack_voltage_v * snapshot.pack_current_a


def _contactor_bits(minus: bool, plus: bool, precharge: bool) -> float:
    return float(int(minus) | int(plus) << 1 | int(precharge) << 2)


def _feedback(view: MapView) -> float | None:
    feedback = view.state.snapshot.contactors
    if feedback is None:
        return None
    return _contactor_bits(feedback.minus_closed, feedback.plus_closed, feedback.precharge_closed)


def _command(view: MapView) -> float:
    command = view.state.contactor_command
    return _contactor_bits(command.minus, command.plus, command.precharge)


def _balancing(view: MapView) -> float | None:
    balancing = view.state.balancing
    if balancing is None:
        return None
    return float(int(balancing.enabled) | int(balancing.active) << 1)


def _bleeding_cells(view: MapView) -> float | None:
    balancing = view.state.balancing
    return None if balancing is None else float(np.count_nonzero(balancing.bleeding))


def _cell_voltages(view: MapView) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    snapshot = view.state.snapshot
    return snapshot.cell_voltage_v, snapshot.cell_voltage_valid


def _temperatures(view: MapView) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    snapshot = view.state.snapshot
    return snapshot.temp_c, snapshot.temp_valid


def _topology(attribute: str) -> ValueFn:
    def value(view: MapView) -> float:
        return float(getattr(view.info.topology, attribute))

    return value


# -- the table ---------------------------------------------------------------------------------


def _rows() -> tuple[Register, ...]:
    rows: list[Register] = []
    address = 0

    def add(
        name: str,
        type_: RegType,
        scale: float,
        unit: str,
        description: str,
        value: ValueFn,
        *,
        at: int | None = None,
    ) -> None:
        nonlocal address
        if at is not None:
            address = at
        rows.append(Register(address, name, type_, scale, unit, description, "input", value))
        address += WORDS[type_]

    add(
        "map_version",
        "u16",
        1,
        "",
        f"Version of this register map ({MAP_VERSION})",
        lambda v: float(MAP_VERSION),
    )
    add(
        "heartbeat",
        "u16",
        1,
        "",
        "Control tick counter modulo 65536: changes every tick",
        lambda v: float(v.state.tick % 65536),
    )
    add(
        "bms_state",
        "u16",
        1,
        "",
        "BMS state: 0 init, 1 standby, 2 precharge, 3 closed, 4 opening, 5 fault",
        lambda v: float(BMS_MODE_CODES[v.state.mode]),
    )
    add(
        "contactor_command",
        "u16",
        1,
        "",
        "Contactors commanded closed: bit 0 minus, bit 1 plus, bit 2 precharge",
        _command,
    )
    add(
        "contactor_feedback",
        "u16",
        1,
        "",
        "Contactors reported closed (same bits); not available without fresh feedback",
        _feedback,
    )
    add(
        "data_ok",
        "u16",
        1,
        "",
        "1 when every cell, temperature, current and contactor reading is valid",
        lambda v: float(v.state.data_ok),
    )
    add(
        "info_flags",
        "u16",
        1,
        "",
        "Fault categories with an active info level (bits below)",
        lambda v: float(v.flags.info),
    )
    add(
        "warning_flags",
        "u16",
        1,
        "",
        "Fault categories with an active warning level (currents derated)",
        lambda v: float(v.flags.warning),
    )
    add(
        "alarm_flags",
        "u16",
        1,
        "",
        "Fault categories with an active fatal level (currents 0, contactors open)",
        lambda v: float(v.flags.alarm),
    )
    add(
        "latched_flags",
        "u16",
        1,
        "",
        "Fault categories with a latched fault (a fault reset is needed to run again)",
        lambda v: float(v.flags.latched),
    )
    add(
        "pack_voltage",
        "u16",
        0.1,
        "V",
        "Pack voltage (current sensor)",
        lambda v: v.state.snapshot.pack_voltage_v,
        at=10,
    )
    add(
        "pack_current",
        "s16",
        0.1,
        "A",
        "Pack current, positive when charging",
        lambda v: v.state.snapshot.pack_current_a,
    )
    add("pack_power", "s32", 1, "W", "Pack power, positive when charging", _power_w)
    add("soc", "u16", 0.01, "%", "State of charge", _estimate("pack_soc", 100.0))
    add(
        "soc_uncertainty",
        "u16",
        0.01,
        "%",
        "State of charge uncertainty (one sigma)",
        _estimate("pack_soc_std", 100.0),
    )
    add(
        "soh",
        "u16",
        0.01,
        "%",
        "State of health: capacity over nominal capacity",
        _estimate("soh_capacity", 100.0),
    )
    add(
        "charge_voltage_limit",
        "u16",
        0.1,
        "V",
        "Charge voltage limit (CVL)",
        lambda v: v.state.limits.charge_voltage_v,
    )
    add(
        "charge_current_limit",
        "u16",
        0.1,
        "A",
        "Charge current limit (CCL), a magnitude",
        lambda v: v.state.limits.charge_current_a,
    )
    add(
        "discharge_current_limit",
        "u16",
        0.1,
        "A",
        "Discharge current limit (DCL), a magnitude",
        lambda v: v.state.limits.discharge_current_a,
    )
    add(
        "discharge_voltage_limit",
        "u16",
        0.1,
        "V",
        "Discharge voltage limit",
        lambda v: v.state.limits.discharge_voltage_v,
    )
    extremes: tuple[tuple[str, str, str, float, RegType], ...] = (
        ("voltage", "cell_voltage", "V", 0.001, "u16"),
        ("temp", "temperature", "°C", 0.1, "s16"),
    )
    for kind, label, unit, scale, type_ in extremes:
        what = "cell voltage" if kind == "voltage" else "temperature"
        last = "cell" if kind == "voltage" else "sensor"
        for end in ("max", "min"):
            word = "Highest" if end == "max" else "Lowest"
            add(
                f"{label}_{end}",
                type_,
                scale,
                unit,
                f"{word} valid {what}",
                _extreme(f"{kind}.{end}_value"),
            )
            add(
                f"{label}_{end}_string",
                "u16",
                1,
                "",
                f"String of the {word.lower()} {what}",
                _location(f"{kind}.{end}_location", "string"),
            )
            add(
                f"{label}_{end}_module",
                "u16",
                1,
                "",
                f"Module (in its string) of the {word.lower()} {what}",
                _location(f"{kind}.{end}_location", "module"),
            )
            add(
                f"{label}_{end}_{last}",
                "u16",
                1,
                "",
                f"{last.capitalize()} (in its module) of the {word.lower()} {what}",
                _location(f"{kind}.{end}_location", "index"),
            )
        add(
            f"{label}_average",
            type_,
            scale,
            unit,
            f"Mean of the valid {what}s",
            _extreme(f"{kind}.mean"),
        )
    add("strings", "u16", 1, "", "Parallel strings", _topology("strings"))
    add(
        "modules_per_string",
        "u16",
        1,
        "",
        "Modules in series per string",
        _topology("modules_per_string"),
    )
    add("cells_per_module", "u16", 1, "", "Series cells per module", _topology("cells_per_module"))
    add(
        "temps_per_module",
        "u16",
        1,
        "",
        "Temperature sensors per module",
        _topology("temps_per_module"),
    )
    add(
        "cell_count",
        "u16",
        1,
        "",
        "Series cells in the pack (all strings)",
        _topology("cell_count"),
    )
    add(
        "invalid_cell_count",
        "u16",
        1,
        "",
        "Cell voltages not valid this tick",
        lambda v: float(v.state.snapshot.invalid_cell_count),
    )
    add(
        "nominal_capacity",
        "u32",
        0.1,
        "Ah",
        "Nominal pack capacity",
        lambda v: v.info.nominal_capacity_ah,
    )
    add(
        "estimated_capacity",
        "u32",
        0.1,
        "Ah",
        "Estimated pack capacity (weakest cell group times parallel strings)",
        _estimate("pack_capacity_ah"),
    )
    add(
        "charge_energy",
        "u32",
        1,
        "Wh",
        "Energy charged into the pack since counting began",
        _estimate("charge_energy_wh"),
    )
    add(
        "discharge_energy",
        "u32",
        1,
        "Wh",
        "Energy discharged from the pack",
        _estimate("discharge_energy_wh"),
    )
    add(
        "charge_throughput",
        "u32",
        0.1,
        "Ah",
        "Charge put into the pack",
        _estimate("charge_throughput_ah"),
    )
    add(
        "discharge_throughput",
        "u32",
        0.1,
        "Ah",
        "Charge taken out of the pack",
        _estimate("discharge_throughput_ah"),
    )
    add(
        "equivalent_full_cycles",
        "u32",
        0.01,
        "",
        "Discharge throughput over the nominal capacity",
        _estimate("equivalent_full_cycles"),
    )
    add(
        "balancing",
        "u16",
        1,
        "",
        "Balancing: bit 0 enabled, bit 1 bleeding now; not available when not configured",
        _balancing,
    )
    add("balancing_cells", "u16", 1, "", "Cells bleeding now", _bleeding_cells)
    add(
        "ems_heartbeat_age",
        "u16",
        0.1,
        "s",
        "Time since the EMS last changed its heartbeat; not available when not supervised "
        "or before its first write",
        lambda v: v.ems_heartbeat_age_s,
    )
    add(
        "unix_time",
        "u32",
        1,
        "s",
        "Wall-clock time of the tick (seconds since 1970)",
        lambda v: float(int(v.state.wall_time)),
    )
    add("tick", "u32", 1, "", "Control tick number since start", lambda v: float(v.state.tick))
    for name, unit, description, fn in (
        ("pack_voltage_f", "V", "Pack voltage", lambda v: v.state.snapshot.pack_voltage_v),
        (
            "pack_current_f",
            "A",
            "Pack current, positive when charging",
            lambda v: v.state.snapshot.pack_current_a,
        ),
        ("pack_power_f", "W", "Pack power, positive when charging", _power_w),
        ("soc_f", "%", "State of charge", _estimate("pack_soc", 100.0)),
        (
            "charge_voltage_limit_f",
            "V",
            "Charge voltage limit (CVL)",
            lambda v: v.state.limits.charge_voltage_v,
        ),
        (
            "charge_current_limit_f",
            "A",
            "Charge current limit (CCL)",
            lambda v: v.state.limits.charge_current_a,
        ),
        (
            "discharge_current_limit_f",
            "A",
            "Discharge current limit (DCL)",
            lambda v: v.state.limits.discharge_current_a,
        ),
        (
            "discharge_voltage_limit_f",
            "V",
            "Discharge voltage limit",
            lambda v: v.state.limits.discharge_voltage_v,
        ),
    ):
        add(
            name,
            "float32",
            1,
            unit,
            f"{description} (IEEE 754, unscaled)",
            fn,
            at=100 if name == "pack_voltage_f" else None,
        )
    return tuple(rows)


def _holding_rows() -> tuple[Register, ...]:
    return (
        Register(
            0,
            "fault_reset",
            "u16",
            1,
            "",
            "Write 1: reset latched faults (refused while a cause is present); reads 0",
            "holding",
            lambda v: 0.0,
            writable=True,
        ),
        Register(
            1,
            "contactor_request",
            "u16",
            1,
            "",
            "Write 1: request closing the contactors, 2: request opening; reads 0",
            "holding",
            lambda v: 0.0,
            writable=True,
        ),
        Register(
            2,
            "balancing_enable",
            "u16",
            1,
            "",
            "Write 1: allow balancing, 0: stop it; reads the present setting, not "
            "available when no balancing is configured",
            "holding",
            lambda v: None if v.balancing_enabled is None else float(v.balancing_enabled),
            writable=True,
        ),
        Register(
            3,
            "ems_heartbeat",
            "u16",
            1,
            "",
            "EMS heartbeat: write a new value (a counter) within the configured timeout; "
            "reads the last value written",
            "holding",
            lambda v: float(v.ems_heartbeat_value),
            writable=True,
        ),
    )


REGISTERS: tuple[Register, ...] = _rows() + _holding_rows()
"""The native map: input registers (FC 04) and holding registers (FC 03, 06, 16)."""

REGISTER_BY_NAME: dict[str, Register] = {r.name: r for r in REGISTERS}

MODULE_ARRAYS: tuple[ModuleArray, ...] = (
    ModuleArray(
        "cell_voltage",
        0,
        256,
        "u16",
        0.001,
        "V",
        "Cell voltage of cell i of module m; not available when invalid",
        lambda t: t.cells_per_module,
        _cell_voltages,
    ),
    ModuleArray(
        "temperature",
        256,
        64,
        "s16",
        0.1,
        "°C",
        "Temperature of sensor i of module m; not available when invalid",
        lambda t: t.temps_per_module,
        _temperatures,
    ),
)
"""Per-module input-register blocks; module m is the m-th in series order over all strings."""


# -- encoding --------------------------------------------------------------------------------


def encode_value(type_: RegType, scale: float, value: float | None) -> list[int]:
    """The words of one register value (the not-available marker for None or NaN)."""
    words = WORDS[type_]
    if value is None or math.isnan(value):
        raw = NOT_AVAILABLE[type_]
    elif type_ == "float32":
        raw = struct.unpack(">I", struct.pack(">f", value))[0]
    else:
        low, high = _RANGE[type_]
        number = value / scale
        scaled = high if number >= high else low if number <= low else round(number)
        raw = scaled & (0xFFFF if words == 1 else 0xFFFF_FFFF)
    if words == 1:
        return [raw]
    return [raw >> 16, raw & 0xFFFF]


def decode_value(type_: RegType, scale: float, words: list[int]) -> float | None:
    """The inverse of :func:`encode_value` (for clients and tests)."""
    raw = words[0] if len(words) == 1 else words[0] << 16 | words[1]
    if raw == NOT_AVAILABLE[type_]:
        return None
    if type_ == "float32":
        result: float = struct.unpack(">f", struct.pack(">I", raw))[0]
        return result
    if type_ in ("s16", "s32"):
        bits = 16 * WORDS[type_]
        if raw >= 1 << (bits - 1):
            raw -= 1 << bits
    return raw * scale


def module_array_address(array: ModuleArray, module: int, index: int) -> int:
    return MODULE_BASE + MODULE_STRIDE * module + array.offset + index


def check_fits(topology: Topology) -> str | None:
    """Why the pack does not fit the map's module blocks, or None."""
    for array in MODULE_ARRAYS:
        if array.count(topology) > array.capacity:
            count = array.count(topology)
            return f"{count} {array.name} values per module (room for {array.capacity})"
    last = MODULE_BASE + MODULE_STRIDE * topology.module_count
    if last > 40000:
        return f"{topology.module_count} modules (the module blocks would reach {last})"
    return None


def mapped_addresses(space: Space, topology: Topology) -> list[int]:
    """Every address the native map serves in a register space, ascending."""
    addresses = [r.address + k for r in REGISTERS if r.space == space for k in range(r.words)]
    if space == "input":
        for array in MODULE_ARRAYS:
            for module in range(topology.module_count):
                base = module_array_address(array, module, 0)
                addresses.extend(range(base, base + array.count(topology)))
    return sorted(addresses)


class NativeEncoder:
    """Writes one MapView into the register images of the input and holding spaces."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._arrays = []
        for array in MODULE_ARRAYS:
            per_module = array.count(topology)
            index = np.arange(topology.module_count * per_module)
            module, within = np.divmod(index, per_module) if per_module else (index, index)
            addresses = MODULE_BASE + MODULE_STRIDE * module + array.offset + within
            self._arrays.append((array, addresses.astype(np.int64)))

    def encode(
        self, view: MapView, input_image: NDArray[np.int64], holding: NDArray[np.int64]
    ) -> None:
        for register in REGISTERS:
            image = input_image if register.space == "input" else holding
            words = encode_value(register.type, register.scale, register.value(view))
            image[register.address : register.address + len(words)] = words
        for array, addresses in self._arrays:
            if addresses.size == 0:
                continue
            values, valid = array.values(view)
            input_image[addresses] = encode_array(array.type, array.scale, values, valid)


def encode_array(
    type_: RegType, scale: float, values: NDArray[np.float64], valid: NDArray[np.bool_]
) -> NDArray[np.int64]:
    """Vectorised :func:`encode_value` for 16-bit types."""
    if type_ not in ("u16", "s16"):
        raise ValueError("module arrays are 16-bit")
    low, high = _RANGE[type_]
    with np.errstate(invalid="ignore"):
        raw = np.clip(np.rint(values / scale), low, high)
    ok = valid & np.isfinite(values)
    encoded = np.where(ok, raw, NOT_AVAILABLE[type_]).astype(np.int64) & 0xFFFF
    return encoded
