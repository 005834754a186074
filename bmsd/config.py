"""The daemon's configuration: one TOML file parsed into frozen, validated dataclasses.

Relative paths in a config file are relative to the directory of that file. Every problem is
reported at once with file, dotted key and reason (see :mod:`bmsd.schema`). Command-line
overrides (``--set section.key=value``) are applied to the raw TOML before validation, so they
are checked exactly like the file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from bmsd.balancing.settings import BalancingConfig
from bmsd.errors import ConfigError, ConfigIssue
from bmsd.estimation.settings import EstimationConfig
from bmsd.model.faults import FaultLevel
from bmsd.protection.limits import LimitsConfig
from bmsd.protection.table import MAX_FATAL_SET_DELAY_S, FaultSpec
from bmsd.publish.inverter.profile import ForceChargeSpec
from bmsd.publish.modbus.config import ModbusConfig
from bmsd.schema import (
    check_nesting,
    deep_merge,
    doc,
    doc_factory,
    file_problem,
    has_dotted,
    must_be_positive,
    must_be_within,
    parse,
    parse_override,
    path_name_problem,
    read_toml,
    set_dotted,
)

Chemistry = Literal["LFP", "NMC"]


def _at_most(obj: object, limits: dict[str, float], unit: str) -> list[tuple[str, str]]:
    """For a ``check()``: (key, reason) for each number above its upper bound. A safety time
    set absurdly long (1e300) silently disables what it times, so each has one."""
    return [
        (key, f"must be at most {limit:g} {unit}")
        for key, limit in limits.items()
        if getattr(obj, key) > limit
    ]


# Upper bounds of the acquisition timeouts: past them a reading counts as valid though it no
# longer tracks the cell. Temperatures move slowly and are sent less often, so allow more.
_ACQUISITION_MAX_TIMEOUTS_S = {
    "module_timeout_s": 60.0,
    "temp_timeout_s": 300.0,
    "current_sensor_timeout_s": 10.0,
    "switchbox_timeout_s": 10.0,
}

# Upper bounds of the contactor sequence's times (shipped: 0.5, 3, 2, 10, 0.5 s).
_CONTACTOR_MAX_TIMES_S = {
    "feedback_timeout_s": 10.0,
    "precharge_timeout_s": 60.0,
    "open_wait_s": 10.0,
    "weld_check_delay_s": 600.0,
    "command_timeout_s": 10.0,
}

# Longest a fatal level may take to trip once its condition holds: debounce_samples ticks plus
# its set delay. The shipped tables need at most 50 ticks of 10 s (the slowest tick) + 30 s.
MAX_FATAL_REACTION_S = 600.0


# The cell file's capacity bound (bmsd.model.cell.CAPACITY_RANGE_AH; not imported from there:
# it loads numpy, which config loading avoids).
CELL_CAPACITY_RANGE_AH = (0.1, 10_000.0)


@dataclass(frozen=True, slots=True)
class PackConfig:
    """Pack topology: strings of modules of series cells, and the cells' chemistry."""

    chemistry: Chemistry = doc(
        "Cell chemistry; must match the cell file (pick the matching protection and limits "
        "tables in protection.defaults and limits.defaults)"
    )
    cell_file: str = doc("Cell parameter file (OCV, resistance, thermal), see docs/cells.md")
    modules_per_string: int = doc("Slave modules in series in each string")
    cells_per_module: int = doc("Series cells (cell groups) measured by each module")
    temps_per_module: int = doc("Temperature sensors read by each module")
    module_node_ids: tuple[int, ...] = doc(
        "CAN node id of each module, string by string, in series order from the negative end"
    )
    strings: int = doc("Parallel strings in the pack", default=1)
    cells_in_parallel: int = doc("Cells in parallel in each cell group (1 to 1000)", default=1)
    cell_capacity_ah: float = doc(
        "Nominal capacity of one cell (0.1 to 10000); 0 takes it from the cell file",
        unit="Ah",
        default=0.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for key in ("strings", "modules_per_string", "cells_per_module"):
            if getattr(self, key) < 1:
                problems.append((key, "must be at least 1"))
        # Capacity and currents scale by cells in parallel.
        problems += must_be_within(self, "cells_in_parallel", 1, 1000)
        problems += must_be_within(self, "temps_per_module", 0, 64)
        problems += must_be_within(self, "cells_per_module", 1, 255)
        low_ah, high_ah = CELL_CAPACITY_RANGE_AH
        if self.cell_capacity_ah != 0 and not low_ah <= self.cell_capacity_ah <= high_ah:
            # As the cell file's bound: 5e-324 Ah divided by zero in the control loop.
            problems.append(
                ("cell_capacity_ah", f"must be 0 (the cell file's) or {low_ah:g} to {high_ah:g}")
            )
        expected = self.strings * self.modules_per_string
        if len(self.module_node_ids) != expected:
            problems.append(
                (
                    "module_node_ids",
                    f"has {len(self.module_node_ids)} ids but the pack has {expected} modules "
                    f"({self.strings} strings x {self.modules_per_string} modules)",
                )
            )
        seen: set[int] = set()
        for index, node_id in enumerate(self.module_node_ids):
            if not 0 <= node_id <= 255:
                problems.append((f"module_node_ids[{index}]", "must be between 0 and 255"))
            if node_id in seen:
                problems.append((f"module_node_ids[{index}]", f"node id {node_id} used twice"))
            seen.add(node_id)
        return problems


@dataclass(frozen=True, slots=True)
class BusConfig:
    """One CAN bus, opened through python-can's ``can.Bus(interface=..., channel=...)``."""

    interface: str = doc("python-can interface: socketcan, virtual, serial, pcan, kvaser, ...")
    channel: str = doc("Channel of that interface, e.g. can0, a virtual bus name, /dev/ttyUSB0")
    bitrate: int = doc("Bit rate", unit="bit/s", default=500_000)
    record: str = doc(
        "Record every frame of this bus to this file (.asc, .blf, .log, .trc, .csv; .trc "
        "leaves out error, remote and CAN FD frames, .asc and .log keep an error frame but not "
        "its class, so only .blf and .csv replay a bus-off); empty: off. At each start, and "
        "when it "
        "reaches record_max_mb, the file is renamed <name>.<n>.<UTC time><suffix> and a new "
        "one begun; a file without a frame is deleted instead",
        default="",
    )
    record_max_mb: float = doc(
        "Begin a new recording file when the current one reaches this size (a .blf file: as "
        "python-can counts it, compressed data plus up to 128 KiB not compressed yet); "
        "0: only at start",
        unit="MB",
        default=100.0,
    )
    record_keep_files: int = doc(
        "Recording files kept, the current one included; the oldest beyond are deleted, so a "
        "recording takes at most about record_keep_files x record_max_mb of disk",
        default=10,
    )
    receive_own_messages: bool = doc("Also receive frames this process sends", default=False)
    reopen_delay_s: float = doc(
        "When the interface fails or disappears (a USB adapter unplugged, a SocketCAN link "
        "down), try to reopen it after this long, doubling after each failed try",
        unit="s",
        default=0.5,
    )
    reopen_max_delay_s: float = doc("Longest wait between two reopen tries", unit="s", default=30.0)
    rate_window_s: float = doc(
        "Window over which the error-frame and unknown-frame rates of this bus are averaged "
        "(faults can_error_frame_rate, can_unknown_frame_rate)",
        unit="s",
        default=10.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.interface:
            problems.append(("interface", "must not be empty"))
        if self.reopen_delay_s <= 0:
            problems.append(("reopen_delay_s", "must be positive"))
        if self.reopen_max_delay_s < self.reopen_delay_s:
            problems.append(("reopen_max_delay_s", "must not be below reopen_delay_s"))
        if self.reopen_max_delay_s > 3600:  # beyond it, a bus that came back is never reopened
            problems.append(("reopen_max_delay_s", "must be at most 3600 s"))
        problems += must_be_within(self, "rate_window_s", 0.5, 3600)
        problems += must_be_within(self, "bitrate", 10_000, 8_000_000)
        if self.record and Path(self.record).suffix.lower() not in RECORD_SUFFIXES:
            problems.append(
                ("record", f"unsupported log format; use one of {', '.join(RECORD_SUFFIXES)}")
            )
        problems += must_be_within(self, "record_max_mb", 0, 100_000)
        problems += must_be_within(self, "record_keep_files", 2, 10_000)
        return problems


RECORD_SUFFIXES = (".asc", ".blf", ".log", ".trc", ".csv")


@dataclass(frozen=True, slots=True)
class AcquisitionConfig:
    """How readings are acquired and when they stop being trusted."""

    bus: str = doc("Name of the bus (a key of [can]) the slaves and current sensor are on")
    protocol: str = doc("Slave protocol file: DBC files and message-to-reading mapping")
    module_timeout_s: float = doc(
        "A module's readings are stale after this long without a frame (at most 60: stale "
        "readings still count as valid until then)",
        unit="s",
        default=1.0,
    )
    temp_timeout_s: float = doc(
        "A temperature is stale after this long (slaves send them less often than voltages; "
        "at most 300)",
        unit="s",
        default=3.0,
    )
    current_sensor_timeout_s: float = doc(
        "Pack current and voltage are stale after this long (at most 10)", unit="s", default=0.5
    )
    switchbox_timeout_s: float = doc(
        "Contactor feedback is stale after this long (at most 10)", unit="s", default=0.5
    )
    current_rest_band_a: float = doc(
        "A current reading within ±this is 'at rest': an unchanged reading there is not "
        "judged frozen (many sensors clamp small currents to exactly 0); not negative, and "
        "below limits.max_charge_current_a and max_discharge_current_a",
        unit="A",
        default=1.0,
    )
    cell_voltage_range_v: tuple[float, float] = doc(
        "Physically possible cell voltage; outside it a reading is invalid",
        unit="V",
        default=(0.5, 5.0),
    )
    temp_range_c: tuple[float, float] = doc(
        "Physically possible temperature; outside it a reading is invalid",
        unit="°C",
        default=(-40.0, 125.0),
    )
    current_range_a: tuple[float, float] = doc(
        "Measuring range of the current sensor; outside it the reading is invalid",
        unit="A",
        default=(-2000.0, 2000.0),
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        problems += must_be_positive(
            self,
            "module_timeout_s",
            "temp_timeout_s",
            "current_sensor_timeout_s",
            "switchbox_timeout_s",
        )
        problems += _at_most(self, _ACQUISITION_MAX_TIMEOUTS_S, "s")
        if self.current_rest_band_a < 0:
            problems.append(("current_rest_band_a", "must not be negative"))
        for key in ("cell_voltage_range_v", "temp_range_c", "current_range_a"):
            low, high = getattr(self, key)
            if low >= high:
                problems.append((key, f"lower bound {low} must be below upper bound {high}"))
        return problems


@dataclass(frozen=True, slots=True)
class ContactorConfig:
    """The HV switch box and the contactor sequence (see docs/safety.md)."""

    auto_close: bool = doc(
        "Close the contactors by itself when healthy (else wait for a close request)",
        default=True,
    )
    feedback_timeout_s: float = doc(
        "A contactor must confirm a command within this time (at most 10; contactors "
        "switch in well under a second)",
        unit="s",
        default=0.5,
    )
    precharge_voltage_share: float = doc(
        "Precharge is done when the bus reaches this share of the pack voltage", default=0.95
    )
    precharge_timeout_s: float = doc(
        "Precharge must be done within this time (at most 60: a precharge resistor is rated "
        "for seconds, not minutes, of current into a short)",
        unit="s",
        default=3.0,
    )
    break_current_a: float = doc(
        "Highest current the contactors may break without waiting (0 to 1000; set it to the "
        "contactor's rated breaking current for repeated operation)",
        unit="A",
        default=5.0,
    )
    open_wait_s: float = doc(
        "Under load, wait at most this long for the current to fall before opening (at most "
        "10: it delays every fatal reaction under load)",
        unit="s",
        default=2.0,
    )
    weld_check_delay_s: float = doc(
        "After opening, judge weld (current, bus voltage) from this time on (at most 600)",
        unit="s",
        default=10.0,
    )
    command_timeout_s: float = doc(
        "Timeout sent to the switch box: it opens by itself without fresh commands (at most 10)",
        unit="s",
        default=0.5,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not 0.5 <= self.precharge_voltage_share < 1.0:
            problems.append(("precharge_voltage_share", "must be at least 0.5 and below 1"))
        problems += must_be_positive(
            self,
            "feedback_timeout_s",
            "precharge_timeout_s",
            "open_wait_s",
            "weld_check_delay_s",
            "command_timeout_s",
        )
        problems += _at_most(self, _CONTACTOR_MAX_TIMES_S, "s")
        problems += must_be_within(self, "break_current_a", 0, 1000, "A")
        return problems


# Protection bmsd refuses to run without: every config must have a fatal level on these.
_REQUIRED_FATAL_QUANTITIES = (
    "cell_voltage_max_v",
    "cell_voltage_min_v",
    "module_silence_s",
    "current_sensor_silence_s",
    "contactor_mismatch_s",
)

# Pairs of (high quantity, low quantity) whose limits must not cross.
_OPPOSITE_QUANTITIES = (
    ("cell_voltage_max_v", "cell_voltage_min_v"),
    ("pack_voltage_per_cell_max_v", "pack_voltage_per_cell_min_v"),
    ("cell_temp_max_charging_c", "cell_temp_min_charging_c"),
    ("cell_temp_max_discharging_c", "cell_temp_min_discharging_c"),
)


@dataclass(frozen=True, slots=True)
class ProtectionConfig:
    """Safe operating area and diagnostics: the fault table, and the contactor sequence."""

    faults: dict[str, FaultSpec] = doc_factory(
        "The fault table: shipped defaults merged with the overrides of this file", dict
    )
    defaults: tuple[str, ...] = doc(
        "Fault table files merged in order (etc/protection/*.toml); this file's "
        "[protection.faults.ID] tables override their keys",
        default=(),
    )
    charge_detect_a: float = doc(
        "Above this current the pack counts as charging (charge temperature window); below "
        "limits.max_charge_current_a",
        unit="A",
        default=1.0,
    )
    contactors: ContactorConfig = doc_factory("Contactor sequence", ContactorConfig)

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.charge_detect_a < 0:
            problems.append(("charge_detect_a", "must not be negative"))
        enabled = {fid: spec for fid, spec in self.faults.items() if spec.enabled}
        for quantity in _REQUIRED_FATAL_QUANTITIES:
            if not any(
                spec.quantity == quantity and spec.fatal is not None for spec in enabled.values()
            ):
                problems.append(
                    (
                        "faults",
                        f"no enabled fault with a fatal level watches {quantity}: bmsd will not "
                        "run without it (set protection.defaults to the shipped tables)",
                    )
                )
        for high_q, low_q in _OPPOSITE_QUANTITIES:
            for high_id, high in enabled.items():
                if high.quantity != high_q or not high.levels():
                    continue
                for low_id, low in enabled.items():
                    if low.quantity != low_q or not low.levels():
                        continue
                    lowest_high = min(spec.threshold for _, spec in high.levels())
                    highest_low = max(spec.threshold for _, spec in low.levels())
                    if lowest_high <= highest_low:
                        level = min(high.levels(), key=lambda pair: pair[1].threshold)[0]
                        problems.append(
                            (
                                f"faults.{high_id}.{level.label}.threshold",
                                f"{lowest_high:g} must lie above every limit of "
                                f"faults.{low_id} (up to {highest_low:g})",
                            )
                        )
        return problems


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The control loop."""

    tick_s: float = doc("Control tick period (10 ms to 10 s)", unit="s", default=0.1)
    summary_log_interval_s: float = doc(
        "Log a one-line pack summary this often; 0: never", unit="s", default=5.0
    )
    thread_switch_interval_s: float = doc(
        "Python's thread switch interval while the daemon runs. Frames are read by a receiver "
        "thread; a frame that arrives while the loop thread computes a tick waits up to this "
        "long for the interpreter lock (Python's own default, 5 ms, would eat half of a 10 ms "
        "reaction budget)",
        unit="s",
        default=0.001,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        problems += must_be_within(self, "tick_s", 0.01, 10.0)
        problems += must_be_within(self, "thread_switch_interval_s", 0.0001, 0.005)
        if self.summary_log_interval_s < 0:
            problems.append(("summary_log_interval_s", "must not be negative"))
        return problems


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where persistent state (latched faults, estimates, fault journal) lives."""

    directory: str = doc("State directory; created if missing", default="/var/lib/bmsd")


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Logging (changes apply on reload, SIGHUP)."""

    level: LogLevel = doc("Log level", default="info")
    format: Literal["text", "json"] = doc(
        "Log line format on stderr (journald gets structured fields either way)", default="text"
    )
    target: Literal["auto", "journal", "stderr"] = doc(
        "Where logs go: auto is the journal when started by systemd (JOURNAL_STREAM or "
        "INVOCATION_ID set), else stderr",
        default="auto",
    )
    loggers: dict[str, LogLevel] = doc_factory(
        'Level per logger, overriding level, e.g. {"bmsd.canbus" = "debug"}', dict
    )
    rate_limit_burst: int = doc(
        "Repeated messages (same logger and message template) let through per interval; "
        "0: no rate limiting",
        default=10,
    )
    rate_limit_interval_s: float = doc(
        "Rate-limit window; a summary line counts what was suppressed in it",
        unit="s",
        default=60.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.rate_limit_burst < 0:
            problems.append(("rate_limit_burst", "must not be negative"))
        problems += must_be_positive(self, "rate_limit_interval_s")
        for name in self.loggers:
            if not name or name != name.strip() or ".." in name:
                problems.append((f"loggers.{name}", "not a logger name"))
        return problems


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Running as a systemd service (sd_notify); changes apply on reload (SIGHUP)."""

    status_interval_s: float = doc(
        "Send the one-line pack summary to systemd (STATUS=, shown by systemctl status) this "
        "often; 0: only at start and reload",
        unit="s",
        default=2.0,
    )
    heap_trim_interval_s: float = doc(
        "Give the C heap's free pages back to the kernel (malloc_trim, in a worker thread) this "
        "often, so resident memory follows live data rather than creeping up as the heap "
        "fragments; also when bmsd_heap_* metrics are measured; 1 to 86400, 0: never (glibc "
        "only)",
        unit="s",
        default=60.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.status_interval_s < 0:
            problems.append(("status_interval_s", "must not be negative"))
        if self.heap_trim_interval_s != 0:  # a trim walks every arena: not back to back
            problems += must_be_within(self, "heap_trim_interval_s", 1, 86400, note=", or 0")
        return problems


@dataclass(frozen=True, slots=True)
class SimFault:
    """A fault injected into the simulated pack at a given time."""

    kind: Literal[
        "cell_drift",
        "stuck_sensor",
        "noisy_sensor",
        "silent_module",
        "contactor_stuck_closed",
        "stuck_current_sensor",
    ] = doc("What goes wrong")
    start_s: float = doc("Simulated time at which it starts", unit="s", default=0.0)
    module: int = doc("Module index (0-based, series order) it affects", default=0)
    cell: int = doc("Cell index within the module (cell faults)", default=0)
    value: float = doc(
        "cell_drift: leak current in A (positive drains, negative charges); "
        "noisy_sensor: noise standard deviation in V",
        default=0.0,
    )


@dataclass(frozen=True, slots=True)
class SimSocOffset:
    """An imbalance injected into the simulated pack: one cell starts above or below the rest."""

    module: int = doc("Module index (0-based, series order)")
    cell: int = doc("Cell index within the module")
    offset_pct: float = doc(
        "SOC added to the cell's initial SOC (percentage points; negative: below)", unit="%"
    )


@dataclass(frozen=True, slots=True)
class SimLoadConfig:
    """The load the simulated inverter draws or pushes (positive charges the battery)."""

    kind: Literal["constant", "day_cycle", "csv"] = doc("Profile kind", default="day_cycle")
    current_a: float = doc("constant: the current", unit="A", default=0.0)
    charge_current_a: float = doc("day_cycle: peak charge current", unit="A", default=50.0)
    discharge_current_a: float = doc("day_cycle: peak discharge current", unit="A", default=50.0)
    day_length_s: float = doc("day_cycle: length of one simulated day", unit="s", default=86400.0)
    start_hour: float = doc("day_cycle: hour of the day the simulation starts at", default=9.0)
    csv_file: str = doc("csv: a file with columns time_s,current_a", default="")

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.kind == "csv" and not self.csv_file:
            problems.append(("csv_file", "required when kind = 'csv'"))
        if self.day_length_s <= 0:
            problems.append(("day_length_s", "must be positive"))
        if not 0 <= self.start_hour < 24:
            problems.append(("start_hour", "must be at least 0 and below 24"))
        return problems


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The built-in simulated pack (cells, slave boards, current sensor, switch box, load)."""

    enabled: bool = doc("Run the simulated pack inside the daemon", default=False)
    bus: str = doc("Bus (a key of [can]) the simulated slaves talk on", default="slaves")
    seed: int = doc("Random seed for cell spread and sensor noise", default=1)
    initial_soc: float = doc("Mean initial state of charge (0..1)", default=0.5)
    soc_spread_pct: float = doc("Standard deviation of initial SOC", unit="%", default=1.0)
    capacity_spread_pct: float = doc("Standard deviation of capacity", unit="%", default=1.0)
    resistance_spread_pct: float = doc("Standard deviation of resistance", unit="%", default=5.0)
    ambient_temp_c: float = doc("Ambient temperature", unit="°C", default=25.0)
    physics_step_s: float = doc("Physics integration step", unit="s", default=0.01)
    cell_period_s: float = doc("Slave cell-voltage frame period", unit="s", default=0.1)
    temp_period_s: float = doc("Slave temperature frame period", unit="s", default=1.0)
    status_period_s: float = doc("Slave status frame period", unit="s", default=0.2)
    current_period_s: float = doc("Current sensor result period", unit="s", default=0.02)
    switchbox_period_s: float = doc("Switch box feedback period", unit="s", default=0.1)
    voltage_noise_v: float = doc(
        "Cell voltage measurement noise (1 sigma)", unit="V", default=0.001
    )
    current_noise_a: float = doc("Current measurement noise (1 sigma)", unit="A", default=0.05)
    bleed_resistor_ohm: float = doc("Balancing bleed resistor per cell", unit="Ω", default=33.0)
    precharge_resistor_ohm: float = doc("Precharge resistor", unit="Ω", default=20.0)
    link_capacitance_f: float = doc("Capacitance on the bus side", unit="F", default=0.002)
    load: SimLoadConfig = doc_factory("Load profile", SimLoadConfig)
    inverter: str = doc(
        "Simulate this inverter ([inverters.NAME]) on its bus: it sends keep-alives or "
        "requests, and draws the load profile within the limits it receives; empty: the load "
        "profile is drawn directly",
        default="",
    )
    inverter_ignores_limits: bool = doc(
        "The simulated inverter draws the load profile whatever the limits (misbehaving)",
        default=False,
    )
    inverter_silent: bool = doc(
        "The simulated inverter sends no keep-alives or requests (a dead inverter)",
        default=False,
    )
    faults: tuple[SimFault, ...] = doc("Faults to inject", default=())
    soc_offsets: tuple[SimSocOffset, ...] = doc(
        "Cells that start with an SOC offset (an imbalance for balancing to remove), on top of "
        "the random soc_spread_pct",
        default=(),
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for index, offset in enumerate(self.soc_offsets):
            if not -100.0 < offset.offset_pct < 100.0:
                problems.append((f"soc_offsets[{index}].offset_pct", "must be within ±100 %"))
        problems += must_be_within(self, "initial_soc", 0.0, 1.0)
        problems += must_be_positive(
            self,
            "physics_step_s",
            "cell_period_s",
            "temp_period_s",
            "status_period_s",
            "current_period_s",
            "switchbox_period_s",
            "bleed_resistor_ohm",
            "precharge_resistor_ohm",
            "link_capacitance_f",
        )
        for key in ("soc_spread_pct", "capacity_spread_pct", "resistance_spread_pct"):
            if not 0 <= getattr(self, key) < 30:
                problems.append((key, "must be at least 0 and below 30"))
        return problems


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus exporter: an HTTP endpoint serving /metrics from the newest pack state."""

    enabled: bool = doc("Serve Prometheus metrics", default=False)
    host: str = doc(
        "Address to listen on; 127.0.0.1 keeps it local, 0.0.0.0 or :: serves the network",
        default="127.0.0.1",
    )
    port: int = doc("TCP port; 0 picks a free port (logged at start)", default=9108)
    per_cell: bool = doc(
        "Export per-cell series (voltage, temperature, SOC, capacity, resistance, bleeding); "
        "switch off for very large packs to keep scrapes small",
        default=True,
    )
    workers: int = doc(
        "Threads serving scrapes; a connection that finds them all busy waits in a short queue, "
        "and beyond it is closed unanswered (bmsd_metrics_connections_rejected_total)",
        default=2,
    )
    request_timeout_s: float = doc(
        "Time a client has to send its whole request, and again to take the answer",
        unit="s",
        default=10.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        problems += must_be_within(self, "port", 0, 65535)
        if not self.host:
            problems.append(("host", "must not be empty"))
        problems += must_be_within(self, "workers", 1, 64)
        if not 0 < self.request_timeout_s <= 300:
            problems.append(("request_timeout_s", "must be above 0 and at most 300"))
        return problems


@dataclass(frozen=True, slots=True)
class InverterSupervisionConfig:
    """Supervision of one inverter: its keep-alive, and whether it obeys the sent limits."""

    keepalive: bool = doc("Supervise the profile's keep-alive frame", default=True)
    keepalive_timeout_s: float | None = doc(
        "Keep-alive lost after this age (at most 3600); default: the profile's timeout",
        unit="s",
        default=None,
    )
    keepalive_action: Literal["warn", "stop"] = doc(
        "warn: warning in the fault table only; stop: also send CCL = DCL = 0 once overdue "
        "for keepalive_grace_s",
        default="warn",
    )
    keepalive_grace_s: float = doc(
        "action stop: how long past the timeout before the currents go to 0 (at most 3600)",
        unit="s",
        default=30.0,
    )
    startup_grace_s: float = doc(
        "After start, not judged until the first keep-alive or this long (black start; at "
        "most 3600)",
        unit="s",
        default=300.0,
    )
    limit_check: bool = doc("Check that the inverter obeys the sent current limits", default=True)
    limit_margin_a: float = doc(
        "Measured current may exceed the sent limit by this much (not beyond the current "
        "sensor's range)",
        unit="A",
        default=5.0,
    )
    limit_response_s: float = doc(
        "Time the inverter has to follow a lowered limit (the SI needs about 10 s)",
        unit="s",
        default=10.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems = must_be_positive(self, "limit_response_s")
        if self.limit_response_s > 600:  # minutes, not hours: a unit slip would blind the check
            problems.append(("limit_response_s", "must be at most 600 s"))
        problems += [
            (key, "must not be negative")
            for key in ("keepalive_grace_s", "startup_grace_s", "limit_margin_a")
            if getattr(self, key) < 0
        ]
        if self.keepalive_timeout_s is not None and not self.keepalive_timeout_s > 0:
            problems.append(("keepalive_timeout_s", "must be positive"))
        # An hour at most: longer (1e300 was accepted) switches the supervision off unseen.
        problems += _at_most(
            self,
            {
                key: 3600.0
                for key in ("keepalive_grace_s", "startup_grace_s")
                + (("keepalive_timeout_s",) if self.keepalive_timeout_s is not None else ())
            },
            "s",
        )
        return problems


@dataclass(frozen=True, slots=True)
class InverterConfig:
    """One inverter on a CAN bus, speaking a profile (etc/inverters/*.toml, docs/can-profiles.md).

    The options below override the profile's own choices where the sources conflict (frame
    length, voltage scale, DCL sign, battery address, spacing); see each profile's comments."""

    profile: str = doc("Profile file, e.g. inverters/pylontech_lv.toml")
    bus: str = doc("Bus (a key of [can]) the inverter is on")
    enabled: bool = doc("Talk to this inverter", default=True)
    send_on: Literal["period", "state"] = doc(
        "period: each frame on its profile period; state: every frame on each new PackState "
        "(still spaced by min_spacing_s)",
        default="period",
    )
    stale_after_s: float | None = doc(
        "Fall silent when the newest PackState is older; default: the profile's",
        unit="s",
        default=None,
    )
    manufacturer: str | None = doc("Manufacturer string; default: the profile's", default=None)
    id_offset: int | None = doc(
        "Battery address added to sent ids; default: the profile's", default=None
    )
    current_sign: Literal["charge_positive", "discharge_positive"] | None = doc(
        "Sign of the current sent; default: the profile's", default=None
    )
    min_spacing_s: float | None = doc(
        "Minimum gap between frames; default: the profile's", unit="s", default=None
    )
    frames_disabled: tuple[str, ...] = doc("Profile frames not to send", default=())
    frames_enabled: tuple[str, ...] = doc("Optional profile frames to send", default=())
    frame_lengths: dict[str, int] = doc_factory(
        "Frame -> bytes sent (e.g. PYLON_LV_LIMITS = 6 for Pylon's 6-byte 0x351)", dict
    )
    frame_periods_s: dict[str, float] = doc_factory("Frame -> send period", dict, unit="s")
    signal_scales: dict[str, float] = doc_factory(
        "'FRAME.Signal' -> multiplier of its field (e.g. 0.1 for Sol-Ark's 0.1 V voltage)", dict
    )
    signal_fields: dict[str, str] = doc_factory(
        "'FRAME.Signal' -> battery field it carries instead (e.g. swap CCL and DCL for an "
        "inverter that reads them swapped); its scale and offset stay unless set too",
        dict,
    )
    force_charge: ForceChargeSpec | None = doc(
        "Force-charge SOC thresholds; default: the profile's", default=None
    )
    supervision: InverterSupervisionConfig = doc_factory(
        "Keep-alive and limits-obeyed supervision", InverterSupervisionConfig
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.stale_after_s is not None and not self.stale_after_s > 0:
            problems.append(("stale_after_s", "must be positive"))
        if self.min_spacing_s is not None and self.min_spacing_s < 0:
            problems.append(("min_spacing_s", "must not be negative"))
        for table in ("signal_scales", "signal_fields"):
            for key in getattr(self, table):
                if key.count(".") != 1:
                    problems.append((f"{table}.{key}", "use 'FRAME.Signal'"))
        return problems

    def profile_overrides(self) -> dict[str, Any]:
        """These options as a table merged over the profile file."""
        out: dict[str, Any] = {}
        for key in ("stale_after_s", "manufacturer", "id_offset", "current_sign", "min_spacing_s"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        frames: dict[str, dict[str, Any]] = {}
        for name in self.frames_disabled:
            frames.setdefault(name, {})["enabled"] = False
        for name in self.frames_enabled:
            frames.setdefault(name, {})["enabled"] = True
        for name, length in self.frame_lengths.items():
            frames.setdefault(name, {})["length"] = length
        for name, period in self.frame_periods_s.items():
            frames.setdefault(name, {})["period_s"] = period
        for key, battery_field in self.signal_fields.items():
            frame, _, signal = key.partition(".")
            signals = frames.setdefault(frame, {}).setdefault("signals", {})
            signals[signal] = {"field": battery_field}
        for key, scale in self.signal_scales.items():
            frame, _, signal = key.partition(".")
            signals = frames.setdefault(frame, {}).setdefault("signals", {})
            signals.setdefault(signal, {})["scale"] = scale
        if frames:
            out["frames"] = frames
        if self.force_charge is not None:
            fc = self.force_charge
            out["force_charge"] = {
                "level_1_on_pct": fc.level_1_on_pct,
                "level_1_off_pct": fc.level_1_off_pct,
                "level_2_on_pct": fc.level_2_on_pct,
                "level_2_off_pct": fc.level_2_off_pct,
            }
        return out


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    pack: PackConfig = doc("Pack topology")
    can: dict[str, BusConfig] = doc("CAN buses by name")
    acquisition: AcquisitionConfig = doc("Acquisition of slave and sensor readings")
    protection: ProtectionConfig = doc("Safe operating area and diagnostics")
    limits: LimitsConfig = doc_factory("Charge and discharge limits", LimitsConfig)
    estimation: EstimationConfig = doc_factory("SOC/SOH estimation", EstimationConfig)
    balancing: BalancingConfig = doc_factory("Cell balancing", BalancingConfig)
    control: ControlConfig = doc_factory("Control loop", ControlConfig)
    state: StateConfig = doc_factory("Persistent state", StateConfig)
    logging: LoggingConfig = doc_factory("Logging", LoggingConfig)
    service: ServiceConfig = doc_factory("systemd service integration", ServiceConfig)
    sim: SimConfig = doc_factory("Simulated pack", SimConfig)
    metrics: MetricsConfig = doc_factory("Prometheus metrics exporter", MetricsConfig)
    modbus: ModbusConfig = doc_factory("Modbus TCP server", ModbusConfig)
    inverters: dict[str, InverterConfig] = doc_factory(
        "Inverters on CAN buses by name (several at once, each on any bus)", dict
    )
    # Not a key of the file: the directory relative paths are resolved against.
    base_dir: str = field(default="", metadata={"internal": True})

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.can:
            problems.append(("can", "at least one bus is required"))
        if self.acquisition.bus not in self.can:
            problems.append(("acquisition.bus", f"no bus named {self.acquisition.bus!r} in [can]"))
        if self.sim.enabled and self.sim.bus not in self.can:
            problems.append(("sim.bus", f"no bus named {self.sim.bus!r} in [can]"))
        elif self.sim.enabled and self.can[self.sim.bus].interface != "virtual":
            problems.append(
                (
                    "sim.enabled",
                    "the embedded simulator needs a 'virtual' bus; for other interfaces run "
                    "'bmsd sim --config FILE' as its own process",
                )
            )
        recorded_by: dict[Path, str] = {}
        for name, bus in self.can.items():
            if bus.record:
                other = recorded_by.setdefault(self.path(bus.record), name)
                if other != name:
                    problems.append((f"can.{name}.record", f"the same file as can.{other}.record"))
        for name, inverter in self.inverters.items():
            if inverter.bus not in self.can:
                problems.append(
                    (f"inverters.{name}.bus", f"no bus named {inverter.bus!r} in [can]")
                )
        if self.sim.enabled and self.sim.inverter:
            simulated = self.inverters.get(self.sim.inverter)
            if simulated is None:
                problems.append(
                    ("sim.inverter", f"no inverter named {self.sim.inverter!r} in [inverters]")
                )
            elif simulated.bus in self.can and self.can[simulated.bus].interface != "virtual":
                problems.append(
                    (
                        "sim.inverter",
                        f"the simulated inverter needs a 'virtual' bus ({simulated.bus})",
                    )
                )
        n_modules = self.pack.strings * self.pack.modules_per_string
        for index, fault in enumerate(self.sim.faults):
            if not 0 <= fault.module < n_modules:
                problems.append((f"sim.faults[{index}].module", f"must be below {n_modules}"))
            if not 0 <= fault.cell < self.pack.cells_per_module:
                problems.append(
                    (f"sim.faults[{index}].cell", f"must be below {self.pack.cells_per_module}")
                )
        # Judged only on a valid pack shape (a broken one is reported under [pack]).
        pack_valid = n_modules >= 1 and self.pack.cells_per_module >= 1
        for index, offset in enumerate(self.sim.soc_offsets if pack_valid else ()):
            if not 0 <= offset.module < n_modules:
                problems.append((f"sim.soc_offsets[{index}].module", f"must be below {n_modules}"))
            if not 0 <= offset.cell < self.pack.cells_per_module:
                problems.append(
                    (
                        f"sim.soc_offsets[{index}].cell",
                        f"must be below {self.pack.cells_per_module}",
                    )
                )
        for fault_id, spec in self.protection.faults.items():
            fatal = spec.fatal
            if not spec.enabled or fatal is None or fatal.set_delay_s > MAX_FATAL_SET_DELAY_S:
                continue  # a set delay too long on its own is reported under the fault
            reaction_s = fatal.debounce_samples * self.control.tick_s + fatal.set_delay_s
            if reaction_s > MAX_FATAL_REACTION_S:
                problems.append(
                    (
                        f"protection.faults.{fault_id}.fatal.debounce_samples",
                        f"{fatal.debounce_samples} ticks of control.tick_s plus set_delay_s "
                        f"take {reaction_s:g} s to trip; at most {MAX_FATAL_REACTION_S:g} s",
                    )
                )
        # A current limit or margin beyond what the sensor can measure is never enforced.
        sensor_low_a, sensor_high_a = self.acquisition.current_range_a
        sensor_valid = sensor_low_a < sensor_high_a  # else reported under [acquisition]
        if sensor_valid and self.limits.max_charge_current_a > sensor_high_a:
            problems.append(
                (
                    "limits.max_charge_current_a",
                    f"must not exceed the current sensor's range (acquisition.current_range_a "
                    f"up to {sensor_high_a:g} A)",
                )
            )
        if sensor_valid and self.limits.max_discharge_current_a > -sensor_low_a:
            problems.append(
                (
                    "limits.max_discharge_current_a",
                    f"must not exceed the current sensor's range (acquisition.current_range_a "
                    f"down to {sensor_low_a:g} A)",
                )
            )
        # Thresholds at or above the largest allowed current would never be crossed: charging
        # never detected (no charge temperature window), every current 'at rest' (a frozen
        # current sensor never noticed).
        limits = self.limits
        if self.protection.charge_detect_a >= limits.max_charge_current_a:
            problems.append(
                (
                    "protection.charge_detect_a",
                    "must lie below limits.max_charge_current_a "
                    f"({limits.max_charge_current_a:g} A)",
                )
            )
        smaller_max_a = min(limits.max_charge_current_a, limits.max_discharge_current_a)
        if self.acquisition.current_rest_band_a >= smaller_max_a:
            problems.append(
                (
                    "acquisition.current_rest_band_a",
                    "must lie below limits.max_charge_current_a and max_discharge_current_a "
                    f"({smaller_max_a:g} A)",
                )
            )
        sensor_span_a = max(abs(sensor_low_a), abs(sensor_high_a))
        for name, inverter in self.inverters.items():
            if sensor_valid and inverter.supervision.limit_margin_a > sensor_span_a:
                problems.append(
                    (
                        f"inverters.{name}.supervision.limit_margin_a",
                        f"must not exceed the current sensor's range ({sensor_span_a:g} A): "
                        "the limits-obeyed check would never trip",
                    )
                )
        problems.extend(self._limits_inside_faults())
        problems.extend(self._balancing_reachable())
        low, high = self.acquisition.cell_voltage_range_v
        for fault_id, spec in self.protection.faults.items():
            if spec.quantity not in ("cell_voltage_max_v", "cell_voltage_min_v"):
                continue
            for level, level_spec in spec.levels():
                if not low < level_spec.threshold < high:
                    problems.append(
                        (
                            f"protection.faults.{fault_id}.{level.label}.threshold",
                            "must lie inside acquisition.cell_voltage_range_v "
                            f"({low:g} to {high:g} V)",
                        )
                    )
        return problems

    def _limits_inside_faults(self) -> list[tuple[str, str]]:
        """The charge and discharge voltages must lie inside every warning of the fault table:
        a CVL above the over-voltage warning would charge the pack into its own fault."""
        problems: list[tuple[str, str]] = []
        limits = self.limits
        for fault_id, spec in self.protection.faults.items():
            if not spec.enabled:
                continue
            levels = [
                level_spec for level, level_spec in spec.levels() if level is not FaultLevel.INFO
            ]
            if not levels:
                continue
            if spec.quantity == "cell_voltage_max_v":
                threshold = min(level_spec.threshold for level_spec in levels)
                if limits.cell_charge_voltage_v >= threshold:
                    problems.append(
                        (
                            "limits.cell_charge_voltage_v",
                            f"{limits.cell_charge_voltage_v:g} V must lie below "
                            f"protection.faults.{fault_id} ({threshold:g} V)",
                        )
                    )
            elif spec.quantity == "cell_voltage_min_v":
                threshold = max(level_spec.threshold for level_spec in levels)
                if limits.cell_discharge_voltage_v <= threshold:
                    problems.append(
                        (
                            "limits.cell_discharge_voltage_v",
                            f"{limits.cell_discharge_voltage_v:g} V must lie above "
                            f"protection.faults.{fault_id} ({threshold:g} V)",
                        )
                    )
        return problems

    def _balancing_reachable(self) -> list[tuple[str, str]]:
        """Balancing thresholds the dynamic CVL lets the cells reach: a threshold at or above
        the charge voltage would never be reached once CVL holds the highest cell there."""
        problems: list[tuple[str, str]] = []
        balancing, charge_v = self.balancing, self.limits.cell_charge_voltage_v
        uses_top = balancing.strategy == "top" or balancing.hold_charge_current_a > 0.0
        if uses_top and balancing.top_start_cell_v >= charge_v:
            problems.append(
                (
                    "balancing.top_start_cell_v",
                    f"{balancing.top_start_cell_v:g} V must lie below limits.cell_charge_voltage_v "
                    f"({charge_v:g} V), where the dynamic CVL holds the highest cell",
                )
            )
        if balancing.strategy == "voltage" and balancing.voltage_min_cell_v >= charge_v:
            problems.append(
                (
                    "balancing.voltage_min_cell_v",
                    f"{balancing.voltage_min_cell_v:g} V must lie below "
                    f"limits.cell_charge_voltage_v ({charge_v:g} V)",
                )
            )
        return problems

    def path(self, value: str) -> Path:
        """Resolve a path from the config file against the config file's directory."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


# Sections that may pull shipped defaults from data files: section -> the table the files fill.
_DEFAULTS_TARGETS = {"protection": "faults", "limits": ""}


def load_config(path: Path, overrides: tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError naming every problem.

    ``protection.defaults`` (fault tables) and ``limits.defaults`` (limit curves) name data
    files merged in order below what this file itself says. Each problem names the file its
    key came from.
    """
    raw = read_toml(path)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    check_nesting(raw, str(path))  # before deepcopy, which recurses
    raw_file = copy.deepcopy(raw)  # what this file itself says, for naming sources
    base_dir = path.resolve().parent
    layers: list[tuple[str, str, dict[str, Any]]] = []  # (file, key prefix, data)
    for section, target in _DEFAULTS_TARGETS.items():
        merged_section = _merge_defaults(raw, section, target, path, base_dir, layers)
        if merged_section is not None:
            raw = {**raw, section: merged_section}

    def source_of(key: str) -> str:
        if not has_dotted(raw_file, key):
            for layer_file, prefix, layer in reversed(layers):
                if key.startswith(prefix) and has_dotted(layer, key.removeprefix(prefix)):
                    return str(layer_file)
        return str(path)

    config = replace(
        parse(Config, raw, source=str(path), source_of=source_of), base_dir=str(base_dir)
    )
    _check_files(config, path)
    return config


def _merge_defaults(
    raw: dict[str, Any],
    section: str,
    target: str,
    path: Path,
    base_dir: Path,
    layers: list[tuple[str, str, dict[str, Any]]],
) -> dict[str, Any] | None:
    """The section with its ``defaults`` files merged under it, or None if nothing to do."""
    table = raw.get(section)
    if not isinstance(table, dict):
        return None
    defaults = table.get("defaults", ())
    if not isinstance(defaults, list):
        return None  # a type error the parser reports
    issues = []
    merged: dict[str, Any] = {}
    prefix = f"{section}.{target}." if target else f"{section}."
    for index, name in enumerate(defaults):
        if not isinstance(name, str):
            continue  # reported as a type error by the parser
        file_path = Path(name) if Path(name).is_absolute() else base_dir / name
        try:
            layer = read_toml(file_path)
        except ConfigError as exc:
            reason = f"{exc.issues[0].reason}: {_shown(file_path)}"
            issues.append(ConfigIssue(str(path), f"{section}.defaults[{index}]", reason))
            continue
        layers.append((str(file_path), prefix, layer))
        merged = deep_merge(merged, layer)
    if issues:
        raise ConfigError(issues)
    if target:
        own = table.get(target, {})
        if not isinstance(own, dict):
            return None  # a type error the parser reports
        return {**table, target: deep_merge(merged, own)}
    own_keys = {key: value for key, value in table.items()}
    if "defaults" in merged:
        merged.pop("defaults")
    return deep_merge(merged, own_keys)


def _check_files(config: Config, path: Path) -> None:
    """Referenced files must exist and load; reported like any other key."""
    issues = []
    for key, value in (
        ("pack.cell_file", config.pack.cell_file),
        ("acquisition.protocol", config.acquisition.protocol),
    ):
        problem = file_problem(config.path(value))
        if problem is not None:
            issues.append(ConfigIssue(str(path), key, f"{problem}: {_shown(config.path(value))}"))
    # Paths bmsd creates: a name the OS refuses would surface as a traceback at start.
    created = [("state.directory", config.state.directory)]
    created += [
        (f"can.{name}.record", bus.record) for name, bus in config.can.items() if bus.record
    ]
    for key, value in created:
        problem = path_name_problem(config.path(value))
        if problem is not None:
            issues.append(ConfigIssue(str(path), key, f"{problem}: {_shown(config.path(value))}"))
    cell_path = config.path(config.pack.cell_file)
    if file_problem(cell_path) is None:
        from bmsd.model.cell import load_cell_file  # the cell model imports numpy: load late

        cell = load_cell_file(cell_path)
        if cell.cell.chemistry != config.pack.chemistry:
            issues.append(
                ConfigIssue(
                    str(path),
                    "pack.chemistry",
                    f"is {config.pack.chemistry} but the cell file {cell_path.name} is "
                    f"{cell.cell.chemistry}",
                )
            )
    if config.sim.enabled and config.sim.load.kind == "csv":
        from bmsd.sim.load import CsvLoad

        csv_path = config.path(config.sim.load.csv_file)
        problem = file_problem(csv_path)
        if problem is not None:
            issues.append(
                ConfigIssue(str(path), "sim.load.csv_file", f"{problem}: {_shown(csv_path)}")
            )
        else:
            # Parsed here in full, as the simulator will (loop=True): a bad row must fail
            # check-config, not the running daemon.
            try:
                CsvLoad(csv_path, loop=True)
            except ConfigError as exc:
                issues.extend(exc.issues)
    issues += _check_inverter_profiles(config, path)
    if issues:
        raise ConfigError(issues)


def _shown(path: Path) -> str:
    """A path for a message, shortened if absurdly long (a 5000-character value)."""
    text = str(path)
    return text if len(text) <= 300 else f"{text[:150]}...{text[-100:]} ({len(text)} characters)"


def _check_inverter_profiles(config: Config, path: Path) -> list[ConfigIssue]:
    """Each inverter's profile loads, with the config's overrides, and matches its DBC."""
    from bmsd.publish.inverter.profile import load_profile

    issues: list[ConfigIssue] = []
    for name, inverter in config.inverters.items():
        profile_path = config.path(inverter.profile)
        problem = file_problem(profile_path)
        if problem is not None:
            issues.append(
                ConfigIssue(
                    str(path), f"inverters.{name}.profile", f"{problem}: {_shown(profile_path)}"
                )
            )
            continue
        try:
            load_profile(profile_path, inverter.profile_overrides())
        except ConfigError as exc:
            issues.extend(
                ConfigIssue(
                    str(path),
                    f"inverters.{name}.profile",
                    f"{issue.file}: {issue.key}: {issue.reason}",
                )
                for issue in exc.issues
            )
    return issues
