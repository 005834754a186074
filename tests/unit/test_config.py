"""Configuration validation: every error a user can make is reported with file, key and reason.

The configs under test are etc/sim.toml, loaded and modified case by case, written to a
temporary directory and read back through :func:`bmsd.config.load_config` (the path the daemon
uses), so the tests follow the shipped example as it changes. Cell and protocol files are
referenced by absolute path so the written copy resolves them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from bmsd.config import (
    RECORD_SUFFIXES,
    AcquisitionConfig,
    BusConfig,
    Config,
    ContactorConfig,
    ControlConfig,
    PackConfig,
    SimConfig,
    SimFault,
    SimLoadConfig,
    load_config,
)
from bmsd.errors import ConfigError, ConfigIssue
from bmsd.protection.table import FaultSpec, LevelSpec
from bmsd.schema import (
    doc,
    doc_factory,
    must_be_within,
    parse,
    parse_override,
    read_toml,
    set_dotted,
)

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc"
SIM_TOML = ETC / "sim.toml"
LFP = str(ETC / "protection" / "lfp.toml")

DELETE = object()
"""Marker in a change set: remove this key from the config."""


# --- building configs -------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # inf and -inf are spelled the same in TOML
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + pairs + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """Write nested dicts as TOML dotted keys (``"pack"."strings" = 1``)."""
    lines: list[str] = []

    def emit(path: list[str], value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                emit([*path, key], item)
        else:
            lines.append(f"{'.'.join(_toml_key(p) for p in path)} = {_toml_value(value)}")

    for key, value in data.items():
        emit([key], value)
    return "\n".join(lines) + "\n"


def sim_config_data() -> dict[str, Any]:
    """etc/sim.toml as a dict, with its cell, protocol and fault table files made absolute."""
    data = tomllib.loads(SIM_TOML.read_text(encoding="utf-8"))
    data["pack"]["cell_file"] = str(ETC / data["pack"]["cell_file"])
    data["acquisition"]["protocol"] = str(ETC / data["acquisition"]["protocol"])
    for section in ("protection", "limits"):
        data[section]["defaults"] = [str(ETC / name) for name in data[section]["defaults"]]
    for inverter in data.get("inverters", {}).values():
        inverter["profile"] = str(ETC / inverter["profile"])
    return data


def apply(data: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set (or with DELETE, remove) dotted keys; tables on the way are created."""
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def write_config(directory: Path, changes: Mapping[str, Any] = {}) -> Path:
    path = directory / "bmsd.toml"
    path.write_text(to_toml(apply(sim_config_data(), changes)), encoding="utf-8")
    return path


def issues_of(path: Path, overrides: Sequence[str] = ()) -> tuple[ConfigIssue, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, tuple(overrides))
    return caught.value.issues


def assert_issues(
    issues: Sequence[ConfigIssue], path: Path, expected: Sequence[tuple[str, ...]]
) -> None:
    """Exactly the expected keys, each with a reason containing the expected fragment.

    An expected entry is (key, fragment) or (key, fragment, file); the file defaults to the
    config file itself.
    """
    assert sorted(i.key for i in issues) == sorted(e[0] for e in expected), issues
    remaining = list(issues)
    for key, fragment, *file in expected:
        source = file[0] if file else str(path)
        match = next(
            (
                i
                for i in remaining
                if i.key == key and fragment in i.reason and i.file == source and i.reason
            ),
            None,
        )
        assert match is not None, f"no issue {source}: {key}: ...{fragment}... in {issues}"
        remaining.remove(match)


# --- the shipped example is the baseline ------------------------------------------------------


def test_sim_example_loads_with_file_values_and_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.pack.module_node_ids == (1, 2, 3, 4)
    assert config.can["slaves"].interface == "virtual"
    lfp = tomllib.loads(Path(LFP).read_text(encoding="utf-8"))
    high = config.protection.faults["cell_voltage_high"]
    assert high.fatal == LevelSpec(**lfp["cell_voltage_high"]["fatal"])
    assert "module_comm_loss" in config.protection.faults  # from diagnostics.toml
    assert config.protection.contactors == ContactorConfig()
    defaults = {f.name: f.default for f in dataclasses.fields(AcquisitionConfig)}
    assert config.acquisition.switchbox_timeout_s == defaults["switchbox_timeout_s"]  # not in file
    assert config.sim.faults == ()
    assert config.base_dir == str(tmp_path.resolve())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pack.strings = 2  # type: ignore[misc]


def test_optional_tables_take_their_defaults(tmp_path: Path) -> None:
    changes = {key: DELETE for key in ("control", "state", "logging", "sim")}
    config = load_config(write_config(tmp_path, changes))
    assert config.control == ControlConfig()
    assert config.sim == SimConfig()
    assert config.logging.level == "info"


def test_an_integer_is_accepted_for_a_number(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {"control.tick_s": 1}))
    assert config.control.tick_s == 1.0
    assert isinstance(config.control.tick_s, float)


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ETC / "cells", tmp_path / "conf" / "cells")
    shutil.copytree(ETC / "protocols", tmp_path / "conf" / "protocols")
    shutil.copytree(ETC / "protection", tmp_path / "conf" / "protection")
    shutil.copytree(ETC / "limits", tmp_path / "conf" / "limits")
    shutil.copytree(ETC / "inverters", tmp_path / "conf" / "inverters")
    shutil.copytree(ETC.parent / "dbc", tmp_path / "dbc")  # profiles name ../../dbc/...
    (tmp_path / "conf" / "load.csv").write_text("time_s,current_a\n0,10\n60,10\n", encoding="utf-8")
    path = tmp_path / "conf" / "bmsd.toml"
    data = tomllib.loads(SIM_TOML.read_text(encoding="utf-8"))  # relative paths, as shipped
    apply(data, {"sim.load.kind": "csv", "sim.load.csv_file": "load.csv"})
    path.write_text(to_toml(data), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "conf" / "bmsd.toml")
    conf = (tmp_path / "conf").resolve()
    assert config.path(config.pack.cell_file) == conf / "cells" / "lfp_280ah.toml"
    assert config.path(config.sim.load.csv_file) == conf / "load.csv"
    assert config.path("/abs/file") == Path("/abs/file")


# --- every way a single value can be wrong ----------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    changes: Mapping[str, Any]
    expected: Sequence[tuple[str, ...]]  # (dotted key, fragment of the reason[, file])


def case(id: str, changes: Mapping[str, Any], *expected: tuple[str, ...]) -> Any:
    return pytest.param(Case(id, changes, expected), id=id)


FAULT = {"kind": "cell_drift", "start_s": 10.0, "module": 0, "cell": 0, "value": 0.5}

HUGE_INT = 10**400  # beyond float's range: float() raises OverflowError

CASES = [
    # numbers beyond range: an integer too big for a float, or for 64 bits
    case("huge-int-for-a-number", {"control.tick_s": HUGE_INT}, ("control.tick_s", "out of range")),
    case("huge-negative-int", {"sim.load.current_a": -HUGE_INT}, ("sim.load.current_a", "range")),
    case("int-beyond-64-bits", {"pack.strings": 2**64}, ("pack.strings", "out of range")),
    case(
        "huge-int-in-fault-level",
        {"protection.faults.cell_voltage_high.fatal.threshold": HUGE_INT},
        ("protection.faults.cell_voltage_high.fatal.threshold", "out of range"),
    ),
    # thresholds a quantity cannot reach would switch a level off
    case(
        "comm-loss-fatal-never-trips",
        {"protection.faults.module_comm_loss.fatal.threshold": 1e300},
        (
            "protection.faults.module_comm_loss.fatal.threshold",
            "must be between 0.01 and 60 s: module_silence_s cannot reach 1e+300",
        ),
    ),
    case(
        "bus-off-level-never-reached",
        {"protection.faults.can_bus_error.fatal.threshold": 3.0},
        ("protection.faults.can_bus_error.fatal.threshold", "must be between 0.001 and 2"),
    ),
    # unknown keys, at every level of nesting
    case("unknown-top-level", {"colour": "red"}, ("colour", "unknown key")),
    case("unknown-in-table", {"pack.cell_count": 64}, ("pack.cell_count", "unknown key")),
    case("unknown-in-bus", {"can.slaves.baud": 250000}, ("can.slaves.baud", "unknown key")),
    case(
        "unknown-in-fault-table",
        {"protection.faults.cell_voltage_high.severity": 3},
        ("protection.faults.cell_voltage_high.severity", "unknown key"),
    ),
    case(
        "unknown-in-fault-level",
        {"protection.faults.cell_voltage_high.fatal.threshold_v": 3.8},
        ("protection.faults.cell_voltage_high.fatal.threshold_v", "unknown key"),
    ),
    case(
        "unknown-in-contactors",
        {"protection.contactors.close": True},
        ("protection.contactors.close", "unknown key"),
    ),
    case("unknown-in-sim-load", {"sim.load.amps": 3.0}, ("sim.load.amps", "unknown key")),
    case(
        "unknown-in-fault",
        {"sim.faults": [{"kind": "cell_drift", "when_s": 3.0}]},
        ("sim.faults[0].when_s", "unknown key"),
    ),
    # wrong types, one per supported field type
    case(
        "bool-as-string",
        {"sim.enabled": "yes"},
        ("sim.enabled", "expected a boolean, got a string"),
    ),
    case(
        "int-as-float", {"pack.strings": 1.0}, ("pack.strings", "expected an integer, got a number")
    ),
    case(
        "bool-is-not-int",
        {"pack.strings": True},
        ("pack.strings", "expected an integer, got a boolean"),
    ),
    case(
        "float-as-string",
        {"control.tick_s": "fast"},
        ("control.tick_s", "expected a number, got a string"),
    ),
    case(
        "bool-is-not-float",
        {"control.tick_s": True},
        ("control.tick_s", "expected a number, got a boolean"),
    ),
    case(
        "float-infinite",
        {"control.tick_s": math.inf},
        ("control.tick_s", "expected a finite number"),
    ),
    case(
        "float-minus-infinite", {"sim.ambient_temp_c": -math.inf}, ("sim.ambient_temp_c", "finite")
    ),
    case(
        "float-nan", {"sim.initial_soc": math.nan}, ("sim.initial_soc", "expected a finite number")
    ),
    case(
        "float-nan-in-array",
        {"acquisition.temp_range_c": [-40.0, math.nan]},
        ("acquisition.temp_range_c[1]", "expected a finite number"),
    ),
    case(
        "string-as-int",
        {"can.slaves.channel": 5},
        ("can.slaves.channel", "expected a string, got an integer"),
    ),
    case(
        "literal-unknown",
        {"pack.chemistry": "LiPo"},
        ("pack.chemistry", "expected one of 'LFP', 'NMC', got 'LiPo'"),
    ),
    case("literal-case", {"logging.level": "DEBUG"}, ("logging.level", "expected one of 'debug'")),
    case(
        "literal-wrong-type",
        {"logging.format": 1},
        ("logging.format", "expected one of 'text', 'json', got 1"),
    ),
    case(
        "fault-kind-unknown",
        {"sim.faults": [{"kind": "fire"}]},
        ("sim.faults[0].kind", "expected one of"),
    ),
    case(
        "array-as-string",
        {"pack.module_node_ids": "1,2,3,4"},
        ("pack.module_node_ids", "expected an array, got a string"),
    ),
    case(
        "array-item-type",
        {"pack.module_node_ids": [1, 2, "3", 4]},
        ("pack.module_node_ids[2]", "expected an integer, got a string"),
    ),
    case(
        "pair-too-short",
        {"acquisition.cell_voltage_range_v": [0.5]},
        ("acquisition.cell_voltage_range_v", "expected 2 items, got 1"),
    ),
    case(
        "pair-too-long",
        {"acquisition.current_range_a": [-1.0, 0.0, 1.0]},
        ("acquisition.current_range_a", "expected 2 items, got 3"),
    ),
    case(
        "pair-item-type",
        {"acquisition.cell_voltage_range_v": ["low", 5.0]},
        ("acquisition.cell_voltage_range_v[0]", "expected a number, got a string"),
    ),
    case(
        "table-as-string",
        {"acquisition": "slaves"},
        ("acquisition", "expected a table, got a string"),
    ),
    case(
        "nested-table-as-number",
        {"protection.contactors": 3.65},
        ("protection.contactors", "expected a table, got a number"),
    ),
    case(
        "optional-table-as-number",
        {"protection.faults.cell_voltage_high.info": 3.5},
        ("protection.faults.cell_voltage_high.info", "expected a table, got a number"),
    ),
    case(
        "fault-table-as-array",
        {"protection.faults": [1]},
        ("protection.faults", "expected a table, got an array"),
    ),
    case(
        "literal-in-fault-file",
        {"protection.faults.cell_voltage_high.blocks": "charging"},
        ("protection.faults.cell_voltage_high.blocks", "expected one of 'charge'"),
    ),
    case(
        "optional-table-as-array", {"sim.load": [1]}, ("sim.load", "expected a table, got an array")
    ),
    case("dict-as-string", {"can": "slaves"}, ("can", "expected a table, got a string")),
    case(
        "dict-entry-as-string",
        {"can.slaves": "virtual"},
        ("can.slaves", "expected a table, got a string"),
    ),
    case(
        "tables-as-table", {"sim.faults": FAULT}, ("sim.faults", "expected an array, got a table")
    ),
    case(
        "tables-item-type",
        {"sim.faults": ["cell_drift"]},
        ("sim.faults[0]", "expected a table, got a string"),
    ),
    # missing required values
    case(
        "missing-literal",
        {"pack.chemistry": DELETE},
        ("pack.chemistry", 'missing required value (one of "LFP", "NMC")'),
    ),
    case(
        "missing-string",
        {"acquisition.bus": DELETE},
        ("acquisition.bus", "missing required value (a string)"),
    ),
    case(
        "missing-int",
        {"pack.cells_per_module": DELETE},
        ("pack.cells_per_module", "missing required value (an integer)"),
    ),
    case(
        "missing-array",
        {"pack.module_node_ids": DELETE},
        ("pack.module_node_ids", "missing required value (an array of integers)"),
    ),
    case(
        "missing-number",
        {"protection.faults.extra": {"quantity": "cell_voltage_spread_v", "info": {}}},
        ("protection.faults.extra.info.threshold", "missing required value (a number)"),
    ),
    case(
        "missing-in-new-fault",
        {"protection.faults.extra": {"info": {"threshold": 1.0}}},
        ("protection.faults.extra.quantity", "missing required value (a string)"),
    ),
    case(
        "missing-table",
        {"protection": DELETE},
        ("protection", "missing required value (a table)"),
    ),
    case(
        "missing-dict",
        {"can": DELETE},
        ("can", "missing required value (a table of tables by name)"),
    ),
    case(
        "missing-in-bus",
        {"can.slaves.channel": DELETE},
        ("can.slaves.channel", "missing required value"),
    ),
    case(
        "missing-in-fault",
        {"sim.faults": [{"module": 1}]},
        ("sim.faults[0].kind", "missing required value"),
    ),
    # a table's own rules only run once its fields parsed: no follow-up noise
    case(
        "no-check-after-type-error",
        {"pack.strings": "two", "pack.module_node_ids": [1]},
        ("pack.strings", "expected an integer"),
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_value_errors(tmp_path: Path, c: Case) -> None:
    path = write_config(tmp_path, c.changes)
    assert_issues(issues_of(path), path, c.expected)


# --- the rules of each table (check()) --------------------------------------------------------

RULES = [
    # PackConfig
    case(
        "pack-strings-zero",
        {"pack.strings": 0},
        ("pack.strings", "must be at least 1"),
        ("pack.module_node_ids", "has 4 ids but the pack has 0 modules"),
    ),
    case(
        "pack-modules-zero",
        {"pack.modules_per_string": 0},
        ("pack.modules_per_string", "must be at least 1"),
        ("pack.module_node_ids", "has 4 ids but the pack has 0 modules"),
    ),
    case(
        "pack-cells-zero",
        {"pack.cells_per_module": 0},
        ("pack.cells_per_module", "must be at least 1"),
        ("pack.cells_per_module", "must be between 1 and 255"),
    ),
    case(
        "pack-cells-too-many",
        {"pack.cells_per_module": 256},
        ("pack.cells_per_module", "must be between 1 and 255"),
    ),
    case(
        "pack-parallel-zero",
        {"pack.cells_in_parallel": 0},
        ("pack.cells_in_parallel", "must be between 1 and 1000"),
    ),
    case(
        "pack-capacity-denormal",  # divided by zero in the control loop
        {"pack.cell_capacity_ah": 5e-324},
        ("pack.cell_capacity_ah", "must be 0 (the cell file's) or 0.1 to 10000"),
    ),
    case(
        "pack-capacity-huge",
        {"pack.cell_capacity_ah": 1e300},
        ("pack.cell_capacity_ah", "must be 0 (the cell file's) or 0.1 to 10000"),
    ),
    case(
        "pack-parallel-huge",
        {"pack.cells_in_parallel": 2**63 - 1},
        ("pack.cells_in_parallel", "must be between 1 and 1000"),
    ),
    case(
        "pack-temps-negative",
        {"pack.temps_per_module": -1},
        ("pack.temps_per_module", "must be between 0 and 64"),
    ),
    case(
        "pack-temps-too-many",
        {"pack.temps_per_module": 65},
        ("pack.temps_per_module", "must be between 0 and 64"),
    ),
    case(
        "pack-capacity-negative",
        {"pack.cell_capacity_ah": -1.0},
        ("pack.cell_capacity_ah", "must be 0 (the cell file's) or 0.1 to 10000"),
    ),
    case(
        "pack-node-ids-too-few",
        {"pack.module_node_ids": [1, 2, 3]},
        ("pack.module_node_ids", "has 3 ids but the pack has 4 modules (1 strings x 4 modules)"),
    ),
    case(
        "pack-node-ids-for-two-strings",
        {"pack.strings": 2},
        ("pack.module_node_ids", "has 4 ids but the pack has 8 modules (2 strings x 4 modules)"),
    ),
    case(
        "pack-node-id-duplicate",
        {"pack.module_node_ids": [1, 2, 2, 4]},
        ("pack.module_node_ids[2]", "node id 2 used twice"),
    ),
    case(
        "pack-node-id-too-big",
        {"pack.module_node_ids": [1, 2, 3, 256]},
        ("pack.module_node_ids[3]", "must be between 0 and 255"),
    ),
    case(
        "pack-node-id-negative",
        {"pack.module_node_ids": [-1, 2, 3, 4]},
        ("pack.module_node_ids[0]", "must be between 0 and 255"),
    ),
    # BusConfig
    case(
        "bus-interface-empty",
        {"can.slaves.interface": "", "sim.enabled": False},
        ("can.slaves.interface", "must not be empty"),
    ),
    case(
        "bus-bitrate-low",
        {"can.slaves.bitrate": 9_999},
        ("can.slaves.bitrate", "must be between 10000 and 8000000"),
    ),
    case(
        "bus-bitrate-high",
        {"can.slaves.bitrate": 8_000_001},
        ("can.slaves.bitrate", "must be between 10000 and 8000000"),
    ),
    case(
        "bus-record-suffix",
        {"can.slaves.record": "/tmp/frames.txt"},
        ("can.slaves.record", "unsupported log format; use one of " + ", ".join(RECORD_SUFFIXES)),
    ),
    case(
        "bus-record-no-suffix",
        {"can.slaves.record": "/tmp/frames"},
        ("can.slaves.record", "unsupported log format"),
    ),
    case(
        "bus-record-max-negative",
        {"can.slaves.record_max_mb": -1.0},
        ("can.slaves.record_max_mb", "must be between 0 and 100000"),
    ),
    case(
        "bus-record-max-huge",
        {"can.slaves.record_max_mb": 100_001.0},
        ("can.slaves.record_max_mb", "must be between 0 and 100000"),
    ),
    case(
        "bus-record-keep-zero",
        {"can.slaves.record_keep_files": 0},
        ("can.slaves.record_keep_files", "must be between 2 and 10000"),
    ),
    case(
        "bus-record-same-file",
        {"can.slaves.record": "/tmp/frames.asc", "can.inverter.record": "/tmp/frames.asc"},
        ("can.inverter.record", "the same file as can.slaves.record"),
    ),
    case(
        "bus-record-keep-one",
        {"can.slaves.record_keep_files": 1},
        ("can.slaves.record_keep_files", "must be between 2 and 10000"),
    ),
    # ServiceConfig
    case(
        "heap-trim-negative",
        {"service.heap_trim_interval_s": -1.0},
        ("service.heap_trim_interval_s", "must be between 1 and 86400, or 0"),
    ),
    case(
        "heap-trim-back-to-back",  # a busy core and the arenas' locks taken all the time
        {"service.heap_trim_interval_s": 1e-6},
        ("service.heap_trim_interval_s", "must be between 1 and 86400, or 0"),
    ),
    case(
        "heap-trim-beyond-a-day",
        {"service.heap_trim_interval_s": 86_401.0},
        ("service.heap_trim_interval_s", "must be between 1 and 86400, or 0"),
    ),
    # ModbusConfig
    case(
        "modbus-per-address-negative",
        {"modbus.max_connections_per_address": -1},
        ("modbus.max_connections_per_address", "must be between 0 and 1000"),
    ),
    case(
        "modbus-per-address-huge",
        {"modbus.max_connections_per_address": 1001},
        ("modbus.max_connections_per_address", "must be between 0 and 1000"),
    ),
    case(
        "bus-reopen-max-huge",
        {"can.slaves.reopen_max_delay_s": 1e300},
        ("can.slaves.reopen_max_delay_s", "must be at most 3600 s"),
    ),
    case(
        "estimation-save-interval-huge",  # a crash would lose every SOC update since start
        {"estimation.state_save_interval_s": 3601.0},
        ("estimation.state_save_interval_s", "must be at most 3600 s"),
    ),
    case(
        "estimation-rest-time-huge",  # a rest never long enough: no OCV correction, ever
        {"estimation.rest_time_s": 1e300},
        ("estimation.rest_time_s", "must be at most 86400 s"),
    ),
    case(
        "estimation-state-age-huge",
        {"estimation.max_state_age_s": 366 * 86400.0},
        ("estimation.max_state_age_s", "must be at most 31536000 s"),
    ),
    case(
        "modbus-state-age-huge",
        {"modbus.max_state_age_s": 1e300},
        ("modbus.max_state_age_s", "must be at most 3600 s"),
    ),
    case(
        "ems-heartbeat-timeout-huge",
        {"modbus.ems_heartbeat.timeout_s": 1e300},
        ("modbus.ems_heartbeat.timeout_s", "must be at most 3600 s"),
    ),
    # safety values beyond what they can mean
    case(
        "limits-max-charge-beyond-sensor",  # default sensor range ±2000 A
        {"limits.max_charge_current_a": 1e300},
        ("limits.max_charge_current_a", "must not exceed the current sensor's range"),
    ),
    case(
        "limits-max-discharge-beyond-sensor",
        {"acquisition.current_range_a": [-100.0, 2000.0], "limits.max_discharge_current_a": 101.0},
        ("limits.max_discharge_current_a", "down to -100 A"),
    ),
    case(
        "charge-detect-above-max-charge",  # charging never detected: no charge temp window
        {"protection.charge_detect_a": 1e300},
        ("protection.charge_detect_a", "must lie below limits.max_charge_current_a"),
    ),
    case(
        "rest-band-above-max-current",  # every current 'at rest': a frozen sensor unnoticed
        {"acquisition.current_rest_band_a": 1e300},
        ("acquisition.current_rest_band_a", "must lie below limits.max_charge_current_a"),
    ),
    case(
        "rest-band-negative",
        {"acquisition.current_rest_band_a": -1e300},
        ("acquisition.current_rest_band_a", "must not be negative"),
    ),
    case(
        "inverter-limit-margin-beyond-sensor",
        {"inverters.hybrid.supervision.limit_margin_a": 1e300},
        ("inverters.hybrid.supervision.limit_margin_a", "would never trip"),
    ),
    *(
        case(
            f"inverter-{key}-huge",
            {f"inverters.hybrid.supervision.{key}": 1e300},
            (f"inverters.hybrid.supervision.{key}", "must be at most 3600 s"),
        )
        for key in ("keepalive_timeout_s", "keepalive_grace_s", "startup_grace_s")
    ),
    case(
        "balancing-board-temp-limit-huge",
        {"balancing.board_temp_limit_c": 1e300},
        ("balancing.board_temp_limit_c", "must be between 0 and 125 °C"),
    ),
    case(
        "balancing-board-temp-limit-negative-huge",
        {"balancing.board_temp_limit_c": -1e300},
        ("balancing.board_temp_limit_c", "must be between 0 and 125 °C"),
    ),
    # AcquisitionConfig
    case(
        "acq-module-timeout-zero",
        {"acquisition.module_timeout_s": 0.0},
        ("acquisition.module_timeout_s", "must be positive"),
    ),
    case(
        "acq-sensor-timeout-negative",
        {"acquisition.current_sensor_timeout_s": -0.5},
        ("acquisition.current_sensor_timeout_s", "must be positive"),
    ),
    case(
        "acq-switchbox-timeout-zero",
        {"acquisition.switchbox_timeout_s": 0},
        ("acquisition.switchbox_timeout_s", "must be positive"),
    ),
    case(
        "acq-temp-range-empty",
        {"acquisition.temp_range_c": [10.0, 10.0]},
        ("acquisition.temp_range_c", "lower bound 10.0 must be below upper bound 10.0"),
    ),
    case(
        "acq-current-range-reversed",
        {"acquisition.current_range_a": [100, -100]},
        ("acquisition.current_range_a", "lower bound 100.0 must be below upper bound -100.0"),
    ),
    case(
        "acq-voltage-range-reversed",
        {"acquisition.cell_voltage_range_v": [5.0, 0.5]},
        ("acquisition.cell_voltage_range_v", "lower bound 5.0 must be below upper bound 0.5"),
        # then no cell voltage limit can lie inside it either (they come from lfp.toml)
        *(
            (
                f"protection.faults.{fault}.{level}.threshold",
                "must lie inside acquisition.cell_voltage_range_v (5 to 0.5 V)",
                LFP,
            )
            for fault in ("cell_voltage_high", "cell_voltage_low")
            for level in ("info", "warning", "fatal")
        ),
    ),
    # LevelSpec
    case(
        "level-hysteresis-negative",
        {"protection.faults.cell_voltage_high.info.hysteresis": -0.01},
        ("protection.faults.cell_voltage_high.info.hysteresis", "must not be negative"),
    ),
    case(
        "level-debounce-zero",
        {"protection.faults.cell_voltage_high.fatal.debounce_samples": 0},
        ("protection.faults.cell_voltage_high.fatal.debounce_samples", "between 1 and 10000"),
    ),
    case(
        "level-debounce-too-many",
        {"protection.faults.temp_spread.info.debounce_samples": 10_001},
        ("protection.faults.temp_spread.info.debounce_samples", "between 1 and 10000"),
    ),
    case(
        "level-set-delay-negative",
        {"protection.faults.module_comm_loss.fatal.set_delay_s": -1.0},
        ("protection.faults.module_comm_loss.fatal.set_delay_s", "between 0 and 3600 s"),
    ),
    case(
        "level-set-delay-huge",  # 1e300 s would disable the level
        {"protection.faults.temp_spread.warning.set_delay_s": 1e300},
        ("protection.faults.temp_spread.warning.set_delay_s", "between 0 and 3600 s"),
    ),
    case(
        "level-clear-delay-huge",
        {"protection.faults.temp_spread.warning.clear_delay_s": 3600.5},
        ("protection.faults.temp_spread.warning.clear_delay_s", "between 0 and 3600 s"),
    ),
    case(
        "fatal-set-delay-over-60",
        {"protection.faults.module_comm_loss.fatal.set_delay_s": 60.5},
        ("protection.faults.module_comm_loss.fatal.set_delay_s", "at most 60 s on a fatal"),
    ),
    case(
        "fatal-set-delay-1e300",
        {"protection.faults.cell_voltage_high.fatal.set_delay_s": 1e300},
        ("protection.faults.cell_voltage_high.fatal.set_delay_s", "between 0 and 3600 s"),
    ),
    case(
        "fatal-reaction-too-slow",  # 10000 ticks of 0.1 s: 1000 s before the level trips
        {"protection.faults.cell_voltage_high.fatal.debounce_samples": 10_000},
        ("protection.faults.cell_voltage_high.fatal.debounce_samples", "to trip; at most 600 s"),
    ),
    case(
        "level-clear-delay-negative",
        {"protection.faults.module_comm_loss.warning.clear_delay_s": -1.0},
        ("protection.faults.module_comm_loss.warning.clear_delay_s", "between 0 and 3600 s"),
    ),
    # FaultSpec
    case(
        "fault-unknown-quantity",
        {"protection.faults.temp_spread.quantity": "cell_voltage_v"},
        ("protection.faults.temp_spread.quantity", "unknown quantity; use one of "),
    ),
    case(
        "over-voltage-protection-removed",
        {"protection.faults.cell_voltage_high.enabled": False},
        ("protection.faults", "no enabled fault with a fatal level watches cell_voltage_max_v"),
    ),
    case(
        "comm-loss-protection-removed",
        {"protection.faults.module_comm_loss.enabled": False},
        ("protection.faults", "no enabled fault with a fatal level watches module_silence_s"),
    ),
    case(
        "fault-without-levels",
        {"protection.faults.extra": {"quantity": "temp_spread_c"}},
        ("protection.faults.extra", "needs at least one of info, warning, fatal"),
    ),
    case(
        "cell-voltage-fault-without-levels",
        {"protection.faults.extra": {"quantity": "cell_voltage_max_v"}},
        ("protection.faults.extra", "needs at least one of info, warning, fatal"),
    ),
    case(
        "high-warning-beyond-fatal",  # the fatal threshold comes from lfp.toml
        {"protection.faults.cell_voltage_high.warning.threshold": 3.70},
        (
            "protection.faults.cell_voltage_high.fatal.threshold",
            "must lie beyond warning (warning 3.7 must be below 3.65)",
            LFP,
        ),
    ),
    case(
        "low-warning-above-info",
        {"protection.faults.cell_voltage_low.warning.threshold": 2.95},
        (
            "protection.faults.cell_voltage_low.warning.threshold",
            "must lie beyond info (info 2.9 must be above 2.95)",
        ),
        # The discharge voltage limit (2.9 V per cell) now sits inside the warning too.
        (
            "limits.cell_discharge_voltage_v",
            "must lie above protection.faults.cell_voltage_low",
            str(ETC / "limits" / "lfp.toml"),
        ),
    ),
    # ProtectionConfig
    case(
        "over-voltage-below-under-voltage",
        {"protection.faults.cell_voltage_high.info.threshold": 2.85},
        (
            "protection.faults.cell_voltage_high.info.threshold",
            "2.85 must lie above every limit of faults.cell_voltage_low (up to 2.9)",
        ),
    ),
    case(
        "pack-over-voltage-below-under-voltage",
        {"protection.faults.pack_voltage_low.info.threshold": 3.5},
        (
            "protection.faults.pack_voltage_high.info.threshold",
            "3.45 must lie above every limit of faults.pack_voltage_low (up to 3.5)",
            LFP,
        ),
    ),
    case(
        "charge-temp-window-empty",
        {"protection.faults.charge_temp_low.info.threshold": 46.0},
        (
            "protection.faults.charge_temp_high.info.threshold",
            "45 must lie above every limit of faults.charge_temp_low (up to 46)",
            LFP,
        ),
    ),
    case(
        "derate-factor-above-one",
        {"limits.warning_derate_factor": 1.5},
        ("limits.warning_derate_factor", "must be between 0 and 1"),
    ),
    case(
        "derate-factor-negative",
        {"limits.warning_derate_factor": -0.1},
        ("limits.warning_derate_factor", "must be between 0 and 1"),
    ),
    case(
        "charge-detect-negative",
        {"protection.charge_detect_a": -1.0},
        ("protection.charge_detect_a", "must not be negative"),
    ),
    # ContactorConfig
    *(
        case(
            f"contactor-precharge-share-{value}",
            {"protection.contactors.precharge_voltage_share": value},
            ("protection.contactors.precharge_voltage_share", "must be at least 0.5 and below 1"),
        )
        for value in (0.49, 1.0)
    ),
    *(
        case(
            f"contactor-{key}-zero",
            {f"protection.contactors.{key}": 0.0},
            (f"protection.contactors.{key}", "must be positive"),
        )
        for key in (
            "feedback_timeout_s",
            "precharge_timeout_s",
            "open_wait_s",
            "weld_check_delay_s",
            "command_timeout_s",
        )
    ),
    case(
        "contactor-break-current-negative",
        {"protection.contactors.break_current_a": -1.0},
        ("protection.contactors.break_current_a", "must be between 0 and 1000 A"),
    ),
    case(
        "contactor-break-current-huge",
        {"protection.contactors.break_current_a": 1e300},
        ("protection.contactors.break_current_a", "must be between 0 and 1000 A"),
    ),
    *(
        case(
            f"contactor-{key}-too-long",
            {f"protection.contactors.{key}": limit * 1.01},
            (f"protection.contactors.{key}", f"must be at most {limit:g} s"),
        )
        for key, limit in [
            ("feedback_timeout_s", 10),
            ("precharge_timeout_s", 60),
            ("open_wait_s", 10),
            ("weld_check_delay_s", 600),
        ]
    ),
    *(
        case(
            f"acquisition-{key}-too-long",
            {f"acquisition.{key}": 1e300},
            (f"acquisition.{key}", f"must be at most {limit:g} s"),
        )
        for key, limit in [
            ("module_timeout_s", 60),
            ("temp_timeout_s", 300),
            ("current_sensor_timeout_s", 10),
            ("switchbox_timeout_s", 10),
        ]
    ),
    # ControlConfig
    case(
        "tick-too-short",
        {"control.tick_s": 0.005},
        ("control.tick_s", "must be between 0.01 and 10"),
    ),
    case(
        "tick-too-long", {"control.tick_s": 10.5}, ("control.tick_s", "must be between 0.01 and 10")
    ),
    case(
        "summary-negative",
        {"control.summary_log_interval_s": -1.0},
        ("control.summary_log_interval_s", "must not be negative"),
    ),
    # SimConfig
    case(
        "sim-soc-above-one",
        {"sim.initial_soc": 1.01},
        ("sim.initial_soc", "must be between 0 and 1"),
    ),
    case(
        "sim-soc-negative",
        {"sim.initial_soc": -0.1},
        ("sim.initial_soc", "must be between 0 and 1"),
    ),
    *(
        case(f"sim-{key}-not-positive", {f"sim.{key}": 0.0}, (f"sim.{key}", "must be positive"))
        for key in (
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
    ),
    *(
        case(
            f"sim-{key}-{value}",
            {f"sim.{key}": value},
            (f"sim.{key}", "must be at least 0 and below 30"),
        )
        for key in ("soc_spread_pct", "capacity_spread_pct", "resistance_spread_pct")
        for value in (-0.1, 30.0)
    ),
    # SimLoadConfig
    case(
        "load-csv-without-file",
        {"sim.load.kind": "csv"},
        ("sim.load.csv_file", "required when kind = 'csv'"),
    ),
    case(
        "load-day-length-zero",
        {"sim.load.day_length_s": 0.0},
        ("sim.load.day_length_s", "must be positive"),
    ),
    case(
        "load-start-hour-24",
        {"sim.load.start_hour": 24.0},
        ("sim.load.start_hour", "must be at least 0 and below 24"),
    ),
    case(
        "load-start-hour-negative",
        {"sim.load.start_hour": -1.0},
        ("sim.load.start_hour", "must be at least 0 and below 24"),
    ),
    # Config cross-checks
    case(
        "no-bus-at-all",
        {"can": {}},
        ("can", "at least one bus is required"),
        ("acquisition.bus", "no bus named 'slaves' in [can]"),
        ("sim.bus", "no bus named 'slaves' in [can]"),
        ("inverters.hybrid.bus", "no bus named 'inverter' in [can]"),
    ),
    case(
        "inverter-bus-unknown",
        {"inverters.hybrid.bus": "inverterr"},
        ("inverters.hybrid.bus", "no bus named 'inverterr' in [can]"),
    ),
    case(
        "inverter-override-names-the-profile-problem",
        {"inverters.hybrid.frame_lengths": {"PYLON_HV_NOPE": 6}},
        ("inverters.hybrid.profile", "frames.PYLON_HV_NOPE: no message"),
    ),
    case(
        "inverter-signal-scale-key",
        {"inverters.hybrid.signal_scales": {"Voltage": 0.1}},
        ("inverters.hybrid.signal_scales.Voltage", "use 'FRAME.Signal'"),
    ),
    case(
        "inverter-keepalive-action",
        {"inverters.hybrid.supervision.keepalive_action": "explode"},
        ("inverters.hybrid.supervision.keepalive_action", "expected one of"),
    ),
    case(
        "inverter-limit-response-hours",
        {"inverters.hybrid.supervision.limit_response_s": 3600.0},
        ("inverters.hybrid.supervision.limit_response_s", "must be at most 600 s"),
    ),
    case(
        "metrics-workers",
        {"metrics.workers": 0},
        ("metrics.workers", "must be between 1 and 64"),
    ),
    case(
        "metrics-request-timeout",
        {"metrics.request_timeout_s": 0.0},
        ("metrics.request_timeout_s", "must be above 0 and at most 300"),
    ),
    case(
        "sim-inverter-unknown",
        {"sim.inverter": "hybird"},
        ("sim.inverter", "no inverter named 'hybird'"),
    ),
    case(
        "acquisition-bus-unknown",
        {"acquisition.bus": "slavs"},
        ("acquisition.bus", "no bus named 'slavs' in [can]"),
    ),
    case("sim-bus-unknown", {"sim.bus": "sim"}, ("sim.bus", "no bus named 'sim' in [can]")),
    case(
        "sim-on-real-bus",
        {"can.slaves.interface": "socketcan"},
        ("sim.enabled", "the embedded simulator needs a 'virtual' bus"),
    ),
    case(
        "fault-module-too-big",
        {"sim.faults": [FAULT, {**FAULT, "module": 4}]},
        ("sim.faults[1].module", "must be below 4"),
    ),
    case(
        "fault-module-negative",
        {"sim.faults": [{**FAULT, "module": -1}]},
        ("sim.faults[0].module", "must be below 4"),
    ),
    case(
        "fault-cell-too-big",
        {"sim.faults": [{**FAULT, "cell": 16}]},
        ("sim.faults[0].cell", "must be below 16"),
    ),
    case(
        "fault-cell-negative",
        {"sim.faults": [{**FAULT, "cell": -1}]},
        ("sim.faults[0].cell", "must be below 16"),
    ),
    case(
        "low-fatal-outside-physical-range",
        {"acquisition.cell_voltage_range_v": [2.6, 5.0]},
        (
            "protection.faults.cell_voltage_low.fatal.threshold",
            "must lie inside acquisition.cell_voltage_range_v (2.6 to 5 V)",
            LFP,
        ),
    ),
    case(
        "high-fatal-outside-physical-range",  # the range is open: 3.65 itself is outside
        {"acquisition.cell_voltage_range_v": [0.5, 3.65]},
        (
            "protection.faults.cell_voltage_high.fatal.threshold",
            "must lie inside acquisition.cell_voltage_range_v (0.5 to 3.65 V)",
            LFP,
        ),
    ),
    case(
        "overridden-limit-outside-physical-range",
        {"protection.faults.cell_voltage_high.fatal.threshold": 5.5},
        (
            "protection.faults.cell_voltage_high.fatal.threshold",
            "must lie inside acquisition.cell_voltage_range_v (0.5 to 5 V)",
        ),
    ),
]


@pytest.mark.parametrize("c", RULES)
def test_rules(tmp_path: Path, c: Case) -> None:
    path = write_config(tmp_path, c.changes)
    assert_issues(issues_of(path), path, c.expected)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"can.slaves.bitrate": 10_000}, id="bitrate-min"),
        pytest.param({"can.slaves.bitrate": 8_000_000}, id="bitrate-max"),
        pytest.param({"can.slaves.record": "/tmp/frames.BLF"}, id="record-suffix-any-case"),
        pytest.param({"control.tick_s": 0.01}, id="tick-min"),
        pytest.param({"control.tick_s": 10.0}, id="tick-max"),
        pytest.param({"control.summary_log_interval_s": 0.0}, id="summary-off"),
        pytest.param({"pack.temps_per_module": 0}, id="no-temps"),
        pytest.param({"pack.module_node_ids": [0, 255, 7, 8]}, id="node-id-bounds"),
        pytest.param({"sim.initial_soc": 1.0}, id="soc-full"),
        pytest.param(
            {"sim.enabled": False, "sim.bus": "elsewhere"}, id="disabled-sim-bus-unchecked"
        ),
        pytest.param(
            {"sim.enabled": False, "can.slaves.interface": "socketcan"}, id="real-bus-no-sim"
        ),
        pytest.param({"sim.faults": [{**FAULT, "module": 3, "cell": 15}]}, id="fault-last-cell"),
        pytest.param(
            {"sim.enabled": False, "sim.load.kind": "csv", "sim.load.csv_file": "gone.csv"},
            id="disabled-sim-csv-unchecked",
        ),
    ],
)
def test_edge_values_are_accepted(tmp_path: Path, changes: Mapping[str, Any]) -> None:
    load_config(write_config(tmp_path, changes))


# --- unknown keys name the keys that are allowed ---------------------------------------------


def known_keys(cls: type[Any]) -> str:
    return ", ".join(sorted(f.name for f in dataclasses.fields(cls) if f.name != "base_dir"))


@pytest.mark.parametrize(
    ("changes", "key", "cls"),
    [
        pytest.param({"colour": "red"}, "colour", Config, id="top-level"),
        ({"pack.cell_count": 64}, "pack.cell_count", PackConfig),
        ({"can.slaves.baud": 1}, "can.slaves.baud", BusConfig),
        ({"acquisition.timeout_s": 1}, "acquisition.timeout_s", AcquisitionConfig),
        (
            {"protection.faults.cell_voltage_low.min": 1},
            "protection.faults.cell_voltage_low.min",
            FaultSpec,
        ),
        (
            {"protection.faults.cell_voltage_low.info.min": 1},
            "protection.faults.cell_voltage_low.info.min",
            LevelSpec,
        ),
        ({"protection.contactors.x": 1}, "protection.contactors.x", ContactorConfig),
        ({"control.tick_ms": 100}, "control.tick_ms", ControlConfig),
        ({"sim.load.amps": 3.0}, "sim.load.amps", SimLoadConfig),
        ({"sim.faults": [{"kind": "cell_drift", "x": 1}]}, "sim.faults[0].x", SimFault),
    ],
)
def test_unknown_key_lists_the_known_keys(
    tmp_path: Path, changes: Mapping[str, Any], key: str, cls: type[Any]
) -> None:
    path = write_config(tmp_path, changes)
    (issue,) = issues_of(path)
    assert issue.key == key
    assert issue.reason == f"unknown key (known keys here: {known_keys(cls)})"


# --- several problems are reported at once ----------------------------------------------------

THREE_PROBLEMS = {
    "pack.cell_count": 64,  # unknown key
    "control.tick_s": "fast",  # wrong type
    # over-voltage info level below the under-voltage info level (2.90 V in lfp.toml)
    "protection.faults.cell_voltage_high.info.threshold": 2.85,
}


def test_three_problems_are_reported_together(tmp_path: Path) -> None:
    path = write_config(tmp_path, THREE_PROBLEMS)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert_issues(
        caught.value.issues,
        path,
        [
            ("pack.cell_count", "unknown key"),
            ("control.tick_s", "expected a number, got a string"),
            (
                "protection.faults.cell_voltage_high.info.threshold",
                "must lie above every limit of faults.cell_voltage_low",
            ),
        ],
    )
    message = str(caught.value)
    for key in THREE_PROBLEMS:
        assert f"{path}: {key}: " in message


def test_problems_in_different_tables_and_rules_are_all_reported(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "pack.module_node_ids": [1, 1, 3, 4],
            "can.slaves.bitrate": 1,
            "sim.faults": [{"kind": "fire"}],
            "logging.level": "loud",
        },
    )
    assert_issues(
        issues_of(path),
        path,
        [
            ("pack.module_node_ids[1]", "used twice"),
            ("can.slaves.bitrate", "between"),
            ("sim.faults[0].kind", "expected one of"),
            ("logging.level", "expected one of"),
        ],
    )


def test_issue_text_names_file_key_and_reason() -> None:
    assert str(ConfigIssue("a.toml", "pack.strings", "must be at least 1")) == (
        "a.toml: pack.strings: must be at least 1"
    )
    assert str(ConfigIssue("a.toml", "", "file not found")) == "a.toml: <top level>: file not found"


def test_base_dir_in_the_file_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"base_dir": "/"})
    (issue,) = issues_of(path)
    assert (issue.file, issue.key) == (str(path), "base_dir")
    assert "unknown key" in issue.reason


def test_base_dir_in_the_file_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"base_dir": "/", "control.tick_s": "fast"})
    assert sorted(i.key for i in issues_of(path)) == ["base_dir", "control.tick_s"]


# --- referenced files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key", "missing"),
    [
        ({"pack.cell_file": "cells/none.toml"}, "pack.cell_file", "cells/none.toml"),
        ({"acquisition.protocol": "proto.toml"}, "acquisition.protocol", "proto.toml"),
        (
            {"sim.load.kind": "csv", "sim.load.csv_file": "day.csv"},
            "sim.load.csv_file",
            "day.csv",
        ),
    ],
)
def test_missing_referenced_file(
    tmp_path: Path, changes: Mapping[str, Any], key: str, missing: str
) -> None:
    path = write_config(tmp_path, changes)
    (issue,) = issues_of(path)
    assert (issue.file, issue.key) == (str(path), key)
    assert issue.reason == f"file not found: {tmp_path.resolve() / missing}"


def test_missing_files_are_reported_together(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"pack.cell_file": "a.toml", "acquisition.protocol": "/nonexistent/b.toml"}
    )
    assert_issues(
        issues_of(path),
        path,
        [("pack.cell_file", "file not found"), ("acquisition.protocol", "/nonexistent/b.toml")],
    )


def test_a_directory_is_not_a_cell_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"pack.cell_file": str(tmp_path)})
    (issue,) = issues_of(path)
    assert issue.key == "pack.cell_file"


@pytest.mark.parametrize(
    "key", ["pack.cell_file", "acquisition.protocol", "sim.load.csv_file", "inverters.x.profile"]
)
def test_a_path_too_long_for_the_os_is_a_clear_error(tmp_path: Path, key: str) -> None:
    changes: dict[str, Any] = {key: "a" * 5000}
    if key.startswith("sim."):
        changes["sim.load.kind"] = "csv"
    if key.startswith("inverters."):
        changes["inverters.x.bus"] = "slaves"
    path = write_config(tmp_path, changes)
    (issue,) = issues_of(path)
    assert issue.key == key
    assert issue.reason.startswith("cannot read: File name too long")
    assert len(issue.reason) < 500  # the 5000 characters are not repeated


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("state.directory", "a" * 5000, "path longer than 4095 bytes"),
        ("state.directory", "state/" + "b" * 256, "a path component is longer than 255 bytes"),
        ("can.slaves.record", "r" * 300 + ".asc", "a path component is longer than 255"),
        ("state.directory", "st\x00ate", "contains a NUL character"),
    ],
)
def test_a_path_bmsd_creates_must_be_a_name_the_os_takes(
    tmp_path: Path, key: str, value: str, reason: str
) -> None:
    (issue,) = issues_of(write_config(tmp_path, {key: value}))
    assert issue.key == key
    assert issue.reason.startswith(reason)


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would block for ever
    path = write_config(tmp_path, {"limits.defaults": [str(fifo)]})
    (issue,) = issues_of(path)
    assert issue.key == "limits.defaults[0]"
    assert "not a regular file" in issue.reason


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("time_s,current_a\n0,abc\n60,1\n", "'abc' is not a number"),
        ("time_s,current_a\n", "no data rows"),
        ("time_s,current_a\n0,1\n60,1\n30,1\n", "not after the previous"),
        ("time_s,current_a\n0,1\n", "loop needs at least two rows"),  # as the simulator loops
    ],
)
def test_the_csv_load_file_is_checked_in_full(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "load.csv").write_text(text, encoding="utf-8")
    path = write_config(tmp_path, {"sim.load.kind": "csv", "sim.load.csv_file": "load.csv"})
    issues = issues_of(path)
    assert {issue.file for issue in issues} == {str(tmp_path.resolve() / "load.csv")}
    assert any(fragment in issue.reason for issue in issues)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 500 + "1" + "]" * 500,
        "x = " + "{a = " * 500 + "1" + "}" * 500,
        "[" + ".".join(["t"] * 3000) + "]\nx = 1\n",
        ".".join(["t"] * 3000) + " = 1\n",
    ],
    ids=["arrays", "inline-tables", "table-header", "dotted-key"],
)
def test_deep_nesting_in_a_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(text, encoding="utf-8")
    (issue,) = issues_of(path)
    assert (issue.file, issue.key) == (str(path), "")
    assert "nested too deeply" in issue.reason


@pytest.mark.parametrize(
    "override",
    ["x=" + "[" * 500 + "1" + "]" * 500, ".".join(["t"] * 3000) + "=1"],
    ids=["value", "key"],
)
def test_deep_nesting_in_an_override_is_a_clear_error(tmp_path: Path, override: str) -> None:
    (issue,) = issues_of(write_config(tmp_path), [override])
    assert "nested too deeply" in issue.reason


def test_deep_nesting_in_a_defaults_file_names_that_file(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 500 + "1" + "]" * 500, encoding="utf-8")
    path = write_config(tmp_path, {"limits.defaults": [str(deep)]})
    (issue,) = issues_of(path)
    assert issue.key == "limits.defaults[0]"
    assert "nested too deeply" in issue.reason and str(deep) in issue.reason


# --- the fault table: protection.defaults files merged, then this file's overrides ----------


def test_fault_override_keeps_the_other_keys_of_the_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"protection.faults.cell_voltage_high.fatal.threshold": 3.62})
    fatal = load_config(path).protection.faults["cell_voltage_high"].fatal
    lfp = tomllib.loads(Path(LFP).read_text(encoding="utf-8"))["cell_voltage_high"]["fatal"]
    assert fatal == LevelSpec(**{**lfp, "threshold": 3.62})


def test_later_defaults_files_override_earlier_ones(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("[temp_spread]\nenabled = false\n", encoding="utf-8")
    path = write_config(tmp_path)
    data = sim_config_data()
    data["protection"]["defaults"].append(str(site))
    path.write_text(to_toml(data), encoding="utf-8")
    faults = load_config(path).protection.faults
    assert not faults["temp_spread"].enabled
    assert faults["temp_spread"].quantity == "temp_spread_c"  # rest from lfp.toml


def test_disabled_faults_are_not_cross_checked(tmp_path: Path) -> None:
    changes = {
        "protection.faults.pack_voltage_high.info.threshold": 2.55,
        "protection.faults.pack_voltage_low.enabled": False,
    }
    load_config(write_config(tmp_path, changes))


def test_an_error_in_a_defaults_file_names_that_file(tmp_path: Path) -> None:
    table = tmp_path / "table.toml"
    table.write_text(
        '[hot]\nquantity = "temp_spread_c"\ninfo = { threshold = "high" }\n', encoding="utf-8"
    )
    path = write_config(tmp_path, {"protection.defaults": [str(table)]})
    assert_issues(
        issues_of(path),
        path,
        [("protection.faults.hot.info.threshold", "expected a number", str(table))],
    )


@pytest.mark.parametrize(
    ("defaults", "key", "reason"),
    [
        (["absent.toml"], "protection.defaults[0]", "file not found: {tmp}/absent.toml"),
        (["broken.toml"], "protection.defaults[0]", "TOML syntax error: "),
        ([LFP, "absent.toml"], "protection.defaults[1]", "file not found: {tmp}/absent.toml"),
        ("lfp.toml", "protection.defaults", "expected an array, got a string"),
        ([1], "protection.defaults[0]", "expected a string, got an integer"),
    ],
)
def test_bad_defaults(tmp_path: Path, defaults: Any, key: str, reason: str) -> None:
    (tmp_path / "broken.toml").write_text("[fault\n", encoding="utf-8")
    path = write_config(tmp_path, {"protection.defaults": defaults})
    (issue,) = issues_of(path)
    assert (issue.file, issue.key) == (str(path), key)
    assert reason.format(tmp=tmp_path.resolve()) in issue.reason


# --- reading the file -------------------------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bmsd.toml"
    path.write_text(SIM_TOML.read_text(encoding="utf-8") + "\n[pack\nstrings = 2\n")
    (issue,) = issues_of(path)
    assert (issue.file, issue.key) == (str(path), "")
    assert issue.reason.startswith("TOML syntax error:")
    assert "line" in issue.reason  # the parser's position tells the user where


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bmsd.toml"
    path.write_text(SIM_TOML.read_text(encoding="utf-8") + "\n[control]\ntick_s = 0.2\n")
    (issue,) = issues_of(path)
    assert issue.reason.startswith("TOML syntax error:")


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    (issue,) = issues_of(path)
    assert issue == ConfigIssue(str(path), "", "file not found")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[state]\ndirectory = "/var/lib/bmsd-é"\n'.encode("latin-1"))
    (issue,) = issues_of(path)
    assert issue == ConfigIssue(str(path), "", "not UTF-8 text")


def test_unreadable_path(tmp_path: Path) -> None:
    (issue,) = issues_of(tmp_path)  # a directory
    assert (issue.file, issue.key) == (str(tmp_path), "")
    assert issue.reason.startswith("cannot read: ")


def test_read_toml_returns_the_document() -> None:
    assert read_toml(SIM_TOML)["pack"]["module_node_ids"] == [1, 2, 3, 4]


# --- --set overrides --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "read", "expected"),
    [
        (["control.tick_s=0.05"], lambda c: c.control.tick_s, 0.05),
        (["control.tick_s = 0.05"], lambda c: c.control.tick_s, 0.05),
        (  # a bare word is a string
            ["pack.chemistry=NMC", f"pack.cell_file='{ETC / 'cells' / 'nmc_100ah.toml'}'"],
            lambda c: c.pack.chemistry,
            "NMC",
        ),
        (['logging.level="debug"'], lambda c: c.logging.level, "debug"),
        (["sim.enabled=false"], lambda c: c.sim.enabled, False),
        (["can.slaves.bitrate=250000"], lambda c: c.can["slaves"].bitrate, 250_000),
        (["can.slaves.record=/tmp/x.asc"], lambda c: c.can["slaves"].record, "/tmp/x.asc"),
        (["state.directory=a=b"], lambda c: c.state.directory, "a=b"),
        (
            ["pack.modules_per_string=2", "pack.module_node_ids=[7, 9]"],
            lambda c: (c.pack.modules_per_string, c.pack.module_node_ids),
            (2, (7, 9)),
        ),
        (["control.tick_s=0.2", "control.tick_s=0.3"], lambda c: c.control.tick_s, 0.3),
        (
            ["can.inverter.interface=virtual", "can.inverter.channel=inv"],
            lambda c: (sorted(c.can), c.can["inverter"].channel),
            (["inverter", "slaves"], "inv"),
        ),
        (["sim.load.kind=constant"], lambda c: c.sim.load.kind, "constant"),
    ],
)
def test_override_changes_the_value(
    tmp_path: Path, overrides: list[str], read: Any, expected: Any
) -> None:
    config = load_config(write_config(tmp_path), tuple(overrides))
    assert read(config) == expected


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        (
            "control.tick_ms=50",
            "control.tick_ms",
            f"unknown key (known keys here: {known_keys(ControlConfig)})",
        ),
        ("colour=red", "colour", "unknown key"),
        ("control.tick_s=fast", "control.tick_s", "expected a number, got a string"),
        ("control.tick_s=0.001", "control.tick_s", "must be between 0.01 and 10"),
        ("pack.strings=true", "pack.strings", "expected an integer, got a boolean"),
        ("sim.bus=nowhere", "sim.bus", "no bus named 'nowhere'"),
        ("pack.cell_file=gone.toml", "pack.cell_file", "file not found"),
    ],
)
def test_override_is_validated_like_the_file(
    tmp_path: Path, override: str, key: str, reason: str
) -> None:
    path = write_config(tmp_path)
    (issue,) = issues_of(path, [override])
    assert (issue.file, issue.key) == (str(path), key)
    assert reason in issue.reason


def test_override_and_file_problems_are_reported_together(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"control.tick_s": "fast"})
    issues = issues_of(path, ["pack.strings=0", "control.tick_s=fast"])
    assert sorted(i.key for i in issues) == [
        "control.tick_s",
        "pack.module_node_ids",
        "pack.strings",
    ]


def test_override_can_fix_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"control.tick_s": "fast"})
    assert load_config(path, ("control.tick_s=0.5",)).control.tick_s == 0.5


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ("control.tick_s", "control.tick_s", "expected section.key=value"),
        ("=0.05", "=0.05", "expected section.key=value"),
        ("", "", "expected section.key=value"),
        ("pack.chemistry.x=1", "pack.chemistry.x", "chemistry is not a table"),
        ("sim.faults.kind=cell_drift", "sim.faults.kind", "faults is not a table"),
    ],
)
def test_bad_override_syntax(tmp_path: Path, override: str, key: str, reason: str) -> None:
    path = write_config(tmp_path, {"sim.faults": [FAULT]})  # an array of tables to step into
    (issue,) = issues_of(path, [override])
    assert issue == ConfigIssue("--set", key, reason)


def test_override_of_base_dir_is_rejected(tmp_path: Path) -> None:
    (issue,) = issues_of(write_config(tmp_path), ["base_dir=/"])
    assert issue.key == "base_dir"


def test_parse_override_and_set_dotted() -> None:
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b = two words") == ("a.b", "two words")
    data: dict[str, Any] = {"a": {"x": 1}}
    set_dotted(data, "a.b.c", 3)
    assert data == {"a": {"x": 1, "b": {"c": 3}}}


# --- the schema engine on its own (field types no config table uses yet) ----------------------


@dataclass(frozen=True)
class Probe:
    """A dataclass exercising the schema's less common field types."""

    maybe: int | None = doc("Optional integer", default=None)
    pair: tuple[str, int] = doc("Fixed pair", default=("a", 1))
    weights: dict[str, float] = doc_factory("Numbers by name", dict)
    level: Literal[1, 2] = doc("A numeric literal", default=1)
    even: int = doc("Must be even (checked in __post_init__)", default=0)

    def __post_init__(self) -> None:
        if self.even % 2:
            raise ValueError("even must be even")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"maybe": "x"}, [("probe.maybe", "expected an integer, got a string")]),
        ({"pair": ["a", "b"]}, [("probe.pair[1]", "expected an integer, got a string")]),
        ({"pair": ["a"]}, [("probe.pair", "expected 2 items, got 1")]),
        ({"weights": {"a": 1, "b": "x"}}, [("probe.weights.b", "expected a number, got a string")]),
        ({"weights": [1.0]}, [("probe.weights", "expected a table, got an array")]),
        ({"level": True}, [("probe.level", "expected one of 1, 2, got True")]),
        ({"level": 3}, [("probe.level", "expected one of 1, 2, got 3")]),
        ({"even": 3}, [("probe", "even must be even")]),
    ],
)
def test_schema_field_types(data: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(Probe, data, source="probe.toml", prefix="probe")
    assert [(i.key, i.reason) for i in caught.value.issues] == expected
    assert all(i.file == "probe.toml" for i in caught.value.issues)


def test_schema_accepts_good_values() -> None:
    probe = parse(
        Probe, {"maybe": 3, "pair": ["b", 2], "weights": {"x": 1}, "level": 2}, source="p"
    )
    assert probe == Probe(maybe=3, pair=("b", 2), weights={"x": 1.0}, level=2)


@dataclass(frozen=True)
class BadUnion:
    value: int | str = 0


@dataclass(frozen=True)
class BadDict:
    value: dict[int, int] = field(default_factory=dict)


@pytest.mark.parametrize("cls", [BadUnion, BadDict])
def test_schema_rejects_unsupported_field_types(cls: type[Any]) -> None:
    with pytest.raises(TypeError):
        parse(cls, {"value": 1}, source="x")


def test_doc_rejects_mutable_defaults() -> None:
    with pytest.raises(TypeError, match="mutable defaults"):
        doc("a list", default=[])


def test_chemistry_must_match_the_cell_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"pack.chemistry": "NMC"})
    assert_issues(
        issues_of(path),
        path,
        [("pack.chemistry", "is NMC but the cell file lfp_280ah.toml is LFP")],
    )


@pytest.mark.parametrize(
    ("value", "low", "high", "unit", "problem"),
    [
        (5.0, 0.0, 5.0, "V", None),  # the bounds are allowed
        (0.0, 0.0, 5.0, "V", None),
        (5.000001, 0.0, 5.0, "V", "must be between 0 and 5 V"),
        (9_000_000, 10_000, 8_000_000, "", "must be between 10000 and 8000000"),
        (0.01, 0.0001, 0.005, "s", "must be between 0.0001 and 0.005 s"),
        (float("nan"), 0.0, 1.0, "", "must be between 0 and 1"),
    ],
)
def test_must_be_within_names_the_bounds_as_written(
    value: float, low: float, high: float, unit: str, problem: str | None
) -> None:
    @dataclasses.dataclass
    class Holder:
        level: float

    found = must_be_within(Holder(value), "level", low, high, unit)
    assert found == ([] if problem is None else [("level", problem)])
