"""Slave protocol files: which DBC message and signal feeds which reading.

A protocol file (TOML, see ``etc/protocols/bmsd-slave.toml`` and docs/slave-protocol.md) names
the DBC files and maps their messages to readings: multiplexed cell voltages and temperatures,
module status, balancing feedback and command, the pack current sensor and the HV switch box.
Supporting another vendor's slaves is a new DBC plus a new protocol file, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cantools
import cantools.database

from bmsd.canbus.units import Measured, unit_problem
from bmsd.errors import ConfigError, ConfigIssue
from bmsd.schema import doc, load_toml

# Unit conversions from a DBC's unit to SI span at most micro to mega; a scale of 0 would read
# every value as 0 (a current sensor that always says 0 A), 1e300 as overflow.
SCALE_RANGE = (1e-6, 1e6)
OFFSET_MAX = 1e6
# 256 node ids x 65536 reaches past 29 bits already; larger strides are typos.
MAX_NODE_ID_STRIDE = 65536


def _check_scale_offset(scale: float, offset: float) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    low, high = SCALE_RANGE
    if not low <= abs(scale) <= high:
        problems.append(("scale", f"must be between {low:g} and {high:g} in size (not 0)"))
    if not abs(offset) <= OFFSET_MAX:
        problems.append(("offset", f"must be within ±{OFFSET_MAX:g}"))
    return problems


@dataclass(frozen=True, slots=True)
class SignalRef:
    """One signal, converted to SI as ``value * scale + offset``."""

    message: str = doc("DBC message name")
    signal: str = doc("Signal name in that message")
    scale: float = doc(
        "Multiplier from the DBC's physical unit to SI; 1e-6 to 1e6 in size", default=1.0
    )
    offset: float = doc("Added after scaling; within ±1e6", default=0.0)

    def check(self) -> list[tuple[str, str]]:
        return _check_scale_offset(self.scale, self.offset)


@dataclass(frozen=True, slots=True)
class GroupedValues:
    """A module message carrying a group of consecutive per-cell (or per-sensor) values."""

    message: str = doc("DBC message name")
    group_signal: str = doc("Signal holding the group index (the multiplexer)")
    value_signals: tuple[str, ...] = doc("Signals of one group; index = group * count + k")
    scale: float = doc(
        "Multiplier from the DBC's physical unit to SI; 1e-6 to 1e6 in size", default=1.0
    )
    offset: float = doc("Added after scaling; within ±1e6", default=0.0)

    def check(self) -> list[tuple[str, str]]:
        problems = _check_scale_offset(self.scale, self.offset)
        if not self.value_signals:
            problems.append(("value_signals", "needs at least one signal"))
        if len(set(self.value_signals)) != len(self.value_signals):
            problems.append(("value_signals", "names a signal twice"))
        if self.group_signal in self.value_signals:
            problems.append(("value_signals", f"includes the group signal {self.group_signal!r}"))
        return problems


@dataclass(frozen=True, slots=True)
class ModuleStatusMap:
    """A module's status message."""

    message: str = doc("DBC message name")
    error_flags_signal: str = doc("Signal with the module's error bits; empty: none", default="")
    board_temp_signal: str = doc("Board temperature signal (°C); empty: none", default="")
    measurement_request_signal: str = doc(
        "Signal set when the module wants bleeding off to measure; empty: none", default=""
    )


@dataclass(frozen=True, slots=True)
class MaskMessage:
    """A per-cell bit mask spread over groups (balancing feedback or command)."""

    message: str = doc("DBC message name")
    group_signal: str = doc("Signal holding the group index")
    mask_signal: str = doc("Signal holding the bits; bit k is cell group * group_size + k")
    group_size: int = doc("Cells per group (bits of the mask signal used)")
    timeout_signal: str = doc("Command only: signal carrying the slave-side timeout", default="")

    def check(self) -> list[tuple[str, str]]:
        return [] if 1 <= self.group_size <= 64 else [("group_size", "must be 1 to 64")]


@dataclass(frozen=True, slots=True)
class ModuleMessages:
    """Messages every slave module sends (and receives), addressed by node id."""

    cell_voltages: GroupedValues = doc("Cell voltage message")
    temperatures: GroupedValues = doc("Temperature message")
    node_id_stride: int = doc(
        "Frame id = DBC message id + node id * stride; 1 to 65536 (every id must fit in 11 "
        "or 29 bits, checked with the pack's node ids)",
        default=1,
    )
    status: ModuleStatusMap | None = doc("Status message", default=None)
    balancing_feedback: MaskMessage | None = doc("Balancing feedback message", default=None)
    balancing_command: MaskMessage | None = doc("Balancing command message", default=None)

    def check(self) -> list[tuple[str, str]]:
        if not 1 <= self.node_id_stride <= MAX_NODE_ID_STRIDE:
            return [("node_id_stride", f"must be between 1 and {MAX_NODE_ID_STRIDE}")]
        return []


@dataclass(frozen=True, slots=True)
class CurrentSensorMap:
    """The pack current sensor's signals."""

    current: SignalRef = doc("Pack current (positive charges)")
    pack_voltage: SignalRef | None = doc("Pack voltage", default=None)
    temperature: SignalRef | None = doc("Sensor temperature", default=None)
    error_signals: tuple[SignalRef, ...] = doc(
        "Status signals; any non-zero value marks the sensor faulty", default=()
    )


@dataclass(frozen=True, slots=True)
class SwitchboxMap:
    """The HV switch box: contactor commands and feedback, bus voltage."""

    command_message: str = doc("DBC message the master sends")
    minus_command_signal: str = doc("Negative contactor command signal")
    plus_command_signal: str = doc("Positive contactor command signal")
    precharge_command_signal: str = doc("Precharge relay command signal")
    feedback_message: str = doc("DBC message with the feedback")
    minus_closed_signal: str = doc("Negative contactor closed feedback")
    plus_closed_signal: str = doc("Positive contactor closed feedback")
    precharge_closed_signal: str = doc("Precharge relay closed feedback")
    timeout_signal: str = doc("Command signal with the box's own timeout; empty: none", default="")
    counter_signal: str = doc("Command rolling counter signal; empty: none", default="")
    bus_voltage: SignalRef | None = doc("Bus-side (inverter-side) voltage", default=None)


@dataclass(frozen=True, slots=True)
class ProtocolFile:
    """A whole slave protocol file."""

    dbc: tuple[str, ...] = doc("DBC files, relative to this file")
    modules: ModuleMessages = doc("Slave module messages")
    current_sensor: CurrentSensorMap = doc("Pack current sensor")
    switchbox: SwitchboxMap | None = doc("HV switch box", default=None)


@dataclass(frozen=True, slots=True)
class Protocol:
    """A loaded protocol: the mapping and the DBC database it refers to."""

    path: Path
    mapping: ProtocolFile
    database: cantools.database.can.Database

    def message(self, name: str) -> Any:
        return self.database.get_message_by_name(name)


def load_protocol(path: Path) -> Protocol:
    """Load a protocol file and its DBCs, and check every name against the DBCs."""
    mapping = load_toml(ProtocolFile, path)
    source = str(path)
    database = cantools.database.can.Database(strict=True)
    issues: list[ConfigIssue] = []
    for index, dbc_name in enumerate(mapping.dbc):
        dbc_path = (path.parent / dbc_name).resolve()
        try:
            database.add_dbc_file(str(dbc_path))
        except FileNotFoundError:
            issues.append(ConfigIssue(source, f"dbc[{index}]", f"file not found: {dbc_path}"))
        except Exception as exc:  # cantools raises many parser error types
            issues.append(ConfigIssue(source, f"dbc[{index}]", f"cannot load DBC: {exc}"))
    if issues:
        raise ConfigError(issues)
    issues.extend(_check_names(mapping, database, source))
    if issues:
        raise ConfigError(issues)
    issues.extend(_check_units(mapping, database, source))
    if issues:
        raise ConfigError(issues)
    return Protocol(path=path, mapping=mapping, database=database)


def _check_units(
    mapping: ProtocolFile, database: cantools.database.can.Database, source: str
) -> list[ConfigIssue]:
    """Each measured signal's DBC unit against the quantity it feeds and its scale."""
    modules, sensor, box = mapping.modules, mapping.current_sensor, mapping.switchbox
    # (key, message, signal, quantity, scale, offset)
    checks: list[tuple[str, str, str, Measured, float, float]] = []
    grouped_maps: tuple[tuple[str, GroupedValues, Measured], ...] = (
        ("modules.cell_voltages", modules.cell_voltages, "voltage"),
        ("modules.temperatures", modules.temperatures, "temperature"),
    )
    for key, grouped, quantity in grouped_maps:
        checks += [
            (key, grouped.message, signal, quantity, grouped.scale, grouped.offset)
            for signal in grouped.value_signals
        ]
    if modules.status is not None and modules.status.board_temp_signal:
        status = modules.status
        checks.append(
            ("modules.status", status.message, status.board_temp_signal, "temperature", 1.0, 0.0)
        )
    refs: list[tuple[str, SignalRef | None, Measured]] = [
        ("current_sensor.current", sensor.current, "current"),
        ("current_sensor.pack_voltage", sensor.pack_voltage, "voltage"),
        ("current_sensor.temperature", sensor.temperature, "temperature"),
        ("switchbox.bus_voltage", box.bus_voltage if box is not None else None, "voltage"),
    ]
    checks += [
        (key, ref.message, ref.signal, quantity, ref.scale, ref.offset)
        for key, ref, quantity in refs
        if ref is not None
    ]
    issues: list[ConfigIssue] = []
    said: set[tuple[str, str]] = set()
    for key, message, signal, quantity, scale, offset in checks:
        unit = database.get_message_by_name(message).get_signal_by_name(signal).unit or ""
        problem = unit_problem(unit, quantity, scale, offset=offset)
        if problem is not None and (key, problem) not in said:  # a group's signals: once
            said.add((key, problem))
            issues.append(ConfigIssue(source, key, f"signal {signal!r} of {message!r} {problem}"))
    return issues


def _check_names(
    mapping: ProtocolFile, database: cantools.database.can.Database, source: str
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    names = {message.name: message for message in database.messages}

    def check(key: str, message: str, signals: tuple[str, ...]) -> None:
        found = names.get(message)
        if found is None:
            issues.append(ConfigIssue(source, key, f"no message {message!r} in the DBC files"))
            return
        known = {signal.name for signal in found.signals}
        for signal in signals:
            if signal and signal not in known:
                issues.append(
                    ConfigIssue(source, key, f"message {message!r} has no signal {signal!r}")
                )

    modules = mapping.modules
    for key, grouped in (
        ("modules.cell_voltages", modules.cell_voltages),
        ("modules.temperatures", modules.temperatures),
    ):
        check(key, grouped.message, (grouped.group_signal, *grouped.value_signals))
    if modules.status is not None:
        status = modules.status
        check(
            "modules.status",
            status.message,
            (
                status.error_flags_signal,
                status.board_temp_signal,
                status.measurement_request_signal,
            ),
        )
    for key, mask in (
        ("modules.balancing_feedback", modules.balancing_feedback),
        ("modules.balancing_command", modules.balancing_command),
    ):
        if mask is not None:
            check(key, mask.message, (mask.group_signal, mask.mask_signal, mask.timeout_signal))
    sensor = mapping.current_sensor
    refs = [("current_sensor.current", sensor.current)]
    if sensor.pack_voltage is not None:
        refs.append(("current_sensor.pack_voltage", sensor.pack_voltage))
    if sensor.temperature is not None:
        refs.append(("current_sensor.temperature", sensor.temperature))
    refs.extend(
        (f"current_sensor.error_signals[{i}]", ref) for i, ref in enumerate(sensor.error_signals)
    )
    box = mapping.switchbox
    if box is not None:
        check(
            "switchbox.command_message",
            box.command_message,
            (
                box.minus_command_signal,
                box.plus_command_signal,
                box.precharge_command_signal,
                box.timeout_signal,
                box.counter_signal,
            ),
        )
        check(
            "switchbox.feedback_message",
            box.feedback_message,
            (box.minus_closed_signal, box.plus_closed_signal, box.precharge_closed_signal),
        )
        if box.bus_voltage is not None:
            refs.append(("switchbox.bus_voltage", box.bus_voltage))
    for key, ref in refs:
        check(key, ref.message, (ref.signal,))
    return issues
