"""The quantity table and the shipped fault tables that watch it.

Every quantity of ``bmsd.protection.quantities.QUANTITIES`` is computed from a hand-built
PackSnapshot and ProtectionInputs (a 2-module, 8-cell, 4-sensor pack), including the cases
where it must pass (a charging-only window while not charging, weld checks before the
contactors have settled open) and where it cannot judge (``None``: no valid data). The shipped
tables load through ``load_config`` for LFP and NMC, name only known quantities, use every
quantity, are ordered, and a one-key override changes exactly that key.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bmsd.config import load_config
from bmsd.errors import ConfigError
from bmsd.model.readings import ContactorFeedback
from bmsd.model.snapshot import Extremes, PackSnapshot
from bmsd.model.topology import Topology
from bmsd.protection.faults import evaluate, initial_state
from bmsd.protection.quantities import (
    PASS_ABOVE,
    PASS_BELOW,
    QUANTITIES,
    QUANTITY_BY_NAME,
    ProtectionInputs,
)
from bmsd.protection.table import FaultSpec

ROOT = Path(__file__).resolve().parents[3]
SIM_CONFIG = ROOT / "etc" / "sim.toml"
NMC = (
    "pack.chemistry='NMC'",
    "pack.cell_file='cells/nmc_100ah.toml'",
    "protection.defaults=['protection/diagnostics.toml', 'protection/nmc.toml']",
    "limits.defaults=['limits/nmc.toml']",
)
CHEMISTRY_OVERRIDES = {"LFP": (), "NMC": NMC}

TOPOLOGY = Topology(
    strings=1,
    modules_per_string=2,
    cells_per_module=4,
    temps_per_module=2,
    cells_in_parallel=1,
    module_node_ids=(1, 2),
)
CELLS_V = (3.30, 3.31, 3.29, 3.32, 3.30, 3.28, 3.35, 3.30)  # max 3.35 (c6), min 3.28 (c5)
TEMPS_C = (24.0, 26.5, 25.0, 31.0)  # max 31.0, min 24.0


# -- hand-built inputs -----------------------------------------------------------------------


def _extremes(values: np.ndarray, valid: np.ndarray, *, cells: bool) -> Extremes | None:
    if not valid.any():
        return None
    locate = TOPOLOGY.cell_location if cells else TOPOLOGY.temp_location
    low = int(np.argmin(np.where(valid, values, np.inf)))
    high = int(np.argmax(np.where(valid, values, -np.inf)))
    return Extremes(
        float(values[low]),
        locate(low),
        float(values[high]),
        locate(high),
        float(values[valid].mean()),
        int(valid.sum()),
    )


def snapshot(
    cells: tuple[float, ...] = CELLS_V,
    temps: tuple[float, ...] = TEMPS_C,
    *,
    cells_valid: bool = True,
    temps_valid: bool = True,
    **fields: Any,
) -> PackSnapshot:
    """A healthy, fresh snapshot; ``fields`` replace any PackSnapshot field."""
    volts = np.array(cells, dtype=np.float64)
    v_ok = np.full(volts.size, cells_valid)
    temp = np.array(temps, dtype=np.float64)
    t_ok = np.full(temp.size, temps_valid)
    string_sum = float(volts.sum()) if cells_valid else math.nan
    base = PackSnapshot(
        tick=1,
        time_s=10.0,
        cell_voltage_v=volts,
        cell_voltage_valid=v_ok,
        temp_c=temp,
        temp_valid=t_ok,
        cell_temp_c=np.repeat(temp, 2),
        cell_voltage=_extremes(volts, v_ok, cells=True),
        temperature=_extremes(temp, t_ok, cells=False),
        module_age_s=np.array([0.05, 0.08]),
        module_error_flags=np.zeros(2, dtype=np.int64),
        module_board_temp_c=np.array([30.0, 30.0]),
        module_measurement_request=np.zeros(2, dtype=np.bool_),
        balancing_feedback=np.zeros(volts.size, dtype=np.bool_),
        pack_current_a=10.0,
        pack_current_age_s=0.02,
        pack_voltage_v=string_sum if cells_valid else 26.45,
        pack_voltage_age_s=0.02,
        bus_voltage_v=26.4,
        string_voltage_sum_v=np.array([string_sum]),
        pack_voltage_deviation_v=0.0 if cells_valid else None,
        contactors=ContactorFeedback(True, True, False, 9.95),
        contactors_age_s=0.05,
        sensor_error_flags=0,
        pack_current_measured_a=10.0,
    )
    if "pack_current_a" in fields and "pack_current_measured_a" not in fields:
        fields["pack_current_measured_a"] = fields["pack_current_a"]
    return dataclasses.replace(base, **fields)


def inputs(snap: PackSnapshot | None = None, **fields: Any) -> ProtectionInputs:
    """Protection inputs of a closed, healthy 8s pack of 280 Ah cells."""
    base = ProtectionInputs(
        snapshot=snap if snap is not None else snapshot(),
        series_cells=8,
        pack_capacity_ah=280.0,
        charging=False,
        contactor_mismatch_s=0.0,
        open_settled=False,
        precharging=False,
        precharge_failed=False,
        bus_error_level=0,
        control_stall_s=0.0,
    )
    return dataclasses.replace(base, **fields)


def test_contactor_feedback_field_order() -> None:
    """The hand-built feedback above relies on this field order."""
    fields = [f.name for f in dataclasses.fields(ContactorFeedback)]
    assert fields[:4] == ["minus_closed", "plus_closed", "precharge_closed", "received_at"]


# -- the quantity table ----------------------------------------------------------------------


def test_quantity_names_are_unique_and_described() -> None:
    names = [q.name for q in QUANTITIES]
    assert len(names) == len(set(names))
    assert set(QUANTITY_BY_NAME) == set(names)
    for quantity in QUANTITIES:
        assert quantity.direction in ("above", "below"), quantity.name
        assert quantity.description.strip(), quantity.name
        assert isinstance(quantity.unit, str), quantity.name
        assert callable(quantity.value), quantity.name


UNIT_OF_SUFFIX = {"_per_s": "1/s", "_v": "V", "_s": "s", "_a": "A", "_c": ("°C", "C"), "_pct": "%"}


@pytest.mark.parametrize("quantity", QUANTITIES, ids=lambda q: q.name)
def test_unit_matches_name_suffix(quantity: Any) -> None:
    for suffix, unit in UNIT_OF_SUFFIX.items():
        if quantity.name.endswith(suffix):
            assert quantity.unit in (unit if isinstance(unit, tuple) else (unit,))
            return
    assert quantity.unit == "", f"{quantity.name}: unitless name with unit {quantity.unit!r}"


# (quantity, inputs, expected value); ``None``: cannot judge.
NO_CELLS = snapshot(cells_valid=False)
NO_TEMPS = snapshot(temps_valid=False)
NO_CURRENT = snapshot(pack_current_a=None)
VALUES = [
    ("cell_voltage_max_v", inputs(), 3.35),
    ("cell_voltage_max_v", inputs(NO_CELLS), None),
    ("cell_voltage_min_v", inputs(), 3.28),
    ("cell_voltage_min_v", inputs(NO_CELLS), None),
    ("pack_voltage_per_cell_max_v", inputs(snapshot(pack_voltage_v=27.2)), 3.4),
    ("pack_voltage_per_cell_max_v", inputs(snapshot(pack_voltage_v=25.6)), sum(CELLS_V) / 8),
    ("pack_voltage_per_cell_min_v", inputs(snapshot(pack_voltage_v=25.6)), 3.2),
    ("pack_voltage_per_cell_min_v", inputs(snapshot(pack_voltage_v=27.2)), sum(CELLS_V) / 8),
    ("pack_voltage_per_cell_min_v", inputs(NO_CELLS), 26.45 / 8),
    ("pack_voltage_per_cell_max_v", inputs(snapshot(cells_valid=False, pack_voltage_v=None)), None),
    ("charge_current_c", inputs(snapshot(pack_current_a=140.0)), 0.5),
    ("charge_current_c", inputs(snapshot(pack_current_a=-280.0)), 0.0),
    ("charge_current_c", inputs(NO_CURRENT), None),
    # Beyond the sensor's range the current is invalid, but the over-current faults still see it.
    (
        "charge_current_c",
        inputs(snapshot(pack_current_a=None, pack_current_measured_a=2800.0)),
        10.0,
    ),
    (
        "discharge_current_c",
        inputs(snapshot(pack_current_a=None, pack_current_measured_a=-2800.0)),
        10.0,
    ),
    ("discharge_current_c", inputs(snapshot(pack_current_a=-336.0)), 1.2),
    ("discharge_current_c", inputs(snapshot(pack_current_a=140.0)), 0.0),
    ("discharge_current_c", inputs(NO_CURRENT), None),
    ("cell_temp_max_charging_c", inputs(charging=True), 31.0),
    ("cell_temp_max_charging_c", inputs(charging=False), PASS_ABOVE),
    ("cell_temp_max_charging_c", inputs(NO_TEMPS, charging=True), None),
    ("cell_temp_min_charging_c", inputs(charging=True), 24.0),
    ("cell_temp_min_charging_c", inputs(charging=False), PASS_BELOW),
    ("cell_temp_min_charging_c", inputs(NO_TEMPS, charging=True), None),
    ("cell_temp_max_discharging_c", inputs(charging=False), 31.0),
    ("cell_temp_max_discharging_c", inputs(charging=True), PASS_ABOVE),
    ("cell_temp_max_discharging_c", inputs(NO_TEMPS), None),
    ("cell_temp_min_discharging_c", inputs(charging=False), 24.0),
    ("cell_temp_min_discharging_c", inputs(charging=True), PASS_BELOW),
    ("cell_temp_min_discharging_c", inputs(NO_TEMPS), None),
    ("cell_voltage_spread_v", inputs(), 3.35 - 3.28),
    ("cell_voltage_spread_v", inputs(NO_CELLS), None),
    ("temp_spread_c", inputs(), 7.0),
    ("temp_spread_c", inputs(NO_TEMPS), None),
    ("module_silence_s", inputs(snapshot(module_age_s=np.array([0.1, 2.5]))), 2.5),
    ("module_silence_s", inputs(snapshot(module_age_s=np.array([math.inf, 0.1]))), math.inf),
    ("current_sensor_silence_s", inputs(snapshot(pack_current_age_s=1.7)), 1.7),
    ("switchbox_silence_s", inputs(snapshot(contactors_age_s=0.9)), 0.9),
    ("implausible_recent_ticks", inputs(), 0.0),
    ("implausible_recent_ticks", inputs(implausible_recent_ticks=7), 7.0),
    ("cell_voltage_frozen_swing_v", inputs(snapshot(cell_voltage_frozen_swing_v=0.012)), 0.012),
    ("pack_voltage_deviation_pct", inputs(), 0.0),
    (
        "pack_voltage_deviation_pct",
        inputs(snapshot(pack_voltage_v=25.0, pack_voltage_deviation_v=-1.25)),
        5.0,
    ),
    ("pack_voltage_deviation_pct", inputs(snapshot(pack_voltage_v=None)), None),
    ("unexpected_module_count", inputs(snapshot(unexpected_modules=2)), 2.0),
    (
        "module_error_count",
        inputs(snapshot(module_error_flags=np.array([0, 0x40], dtype=np.int64))),
        1.0,
    ),
    ("current_sensor_error", inputs(), 0.0),
    ("current_sensor_error", inputs(snapshot(sensor_error_flags=0x10)), 1.0),
    ("contactor_mismatch_s", inputs(contactor_mismatch_s=0.7), 0.7),
    ("current_frozen_s", inputs(snapshot(pack_current_frozen_s=42.0)), 42.0),
    ("current_frozen_s", inputs(), 0.0),
    ("open_current_a", inputs(snapshot(pack_current_a=-30.0)), PASS_ABOVE),
    ("open_current_a", inputs(snapshot(pack_current_a=-30.0), open_settled=True), 30.0),
    ("open_current_a", inputs(NO_CURRENT, open_settled=True), None),
    ("open_bus_voltage_ratio", inputs(), PASS_ABOVE),
    (
        "open_bus_voltage_ratio",
        inputs(snapshot(pack_voltage_v=26.0, bus_voltage_v=13.0), open_settled=True),
        0.5,
    ),
    ("open_bus_voltage_ratio", inputs(snapshot(bus_voltage_v=None), open_settled=True), None),
    ("open_bus_voltage_ratio", inputs(snapshot(pack_voltage_v=None), open_settled=True), None),
    ("precharge_current_a", inputs(snapshot(pack_current_a=-12.0)), PASS_ABOVE),
    ("precharge_current_a", inputs(snapshot(pack_current_a=-12.0), precharging=True), 12.0),
    ("precharge_current_a", inputs(NO_CURRENT, precharging=True), None),
    ("precharge_failure", inputs(), 0.0),
    ("precharge_failure", inputs(precharge_failed=True), 1.0),
    ("can_bus_error_level", inputs(bus_error_level=1), 1.0),
    ("can_bus_error_level", inputs(bus_error_level=2), 2.0),
    ("state_file_damaged", inputs(), 0.0),
    ("state_file_damaged", inputs(state_file_damaged=True), 1.0),
    ("control_stall_s", inputs(control_stall_s=0.3), 0.3),
    ("ems_heartbeat_timeout", inputs(), None),  # not supervised: cannot judge
    ("ems_heartbeat_timeout", inputs(external={"ems_heartbeat_timeout": 0.0}), 0.0),
    ("ems_heartbeat_timeout", inputs(external={"ems_heartbeat_timeout": 2.0}), 2.0),
    ("can_error_frames_per_s", inputs(), None),  # no bus open: not judged
    ("can_error_frames_per_s", inputs(external={"can_error_frames_per_s": 0.0}), 0.0),
    ("can_error_frames_per_s", inputs(external={"can_error_frames_per_s": 12.5}), 12.5),
    ("can_unknown_frames_per_s", inputs(), None),
    ("can_unknown_frames_per_s", inputs(external={"can_unknown_frames_per_s": 4000.0}), 4000.0),
    ("inverter_keepalive_overdue_s", inputs(), None),  # no inverter: not judged
    ("inverter_keepalive_overdue_s", inputs(external={"inverter_keepalive_overdue_s": None}), None),
    ("inverter_keepalive_overdue_s", inputs(external={"inverter_keepalive_overdue_s": -2.0}), -2.0),
    ("inverter_keepalive_overdue_s", inputs(external={"inverter_keepalive_overdue_s": 3.5}), 3.5),
    ("inverter_limit_excess_a", inputs(), None),
    ("inverter_limit_excess_a", inputs(external={"inverter_limit_excess_a": -40.0}), -40.0),
    ("inverter_limit_excess_a", inputs(external={"inverter_limit_excess_a": 12.0}), 12.0),
    ("balancing_mismatch_modules", inputs(balancing_mismatch_modules=2), 2.0),
]


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    VALUES,
    ids=[f"{name}-{k}" for k, (name, _, _) in enumerate(VALUES)],
)
def test_quantity_value(name: str, given: ProtectionInputs, expected: float | None) -> None:
    value = QUANTITY_BY_NAME[name].value(given)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


def test_every_quantity_has_a_value_case() -> None:
    assert {name for name, _, _ in VALUES} == set(QUANTITY_BY_NAME)


def test_pass_values_pass_in_the_quantity_direction() -> None:
    """A passing value is beyond every threshold on the safe side."""
    assert math.isinf(PASS_ABOVE) and PASS_ABOVE < 0 < PASS_BELOW and math.isinf(PASS_BELOW)
    conditional = {
        "cell_temp_max_charging_c",
        "cell_temp_min_charging_c",
        "cell_temp_max_discharging_c",
        "cell_temp_min_discharging_c",
        "open_current_a",
        "open_bus_voltage_ratio",
        "precharge_current_a",
    }
    passing = [(n, e) for n, _, e in VALUES if n in conditional and e in (PASS_ABOVE, PASS_BELOW)]
    assert {n for n, _ in passing} == conditional
    for name, expected in passing:
        direction = QUANTITY_BY_NAME[name].direction
        assert expected == (PASS_ABOVE if direction == "above" else PASS_BELOW), name


# -- the shipped tables ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["LFP", "NMC"])
def table(request: pytest.FixtureRequest) -> dict[str, FaultSpec]:
    config = load_config(SIM_CONFIG, CHEMISTRY_OVERRIDES[request.param])
    assert config.pack.chemistry == request.param
    return config.protection.faults


def test_shipped_table_names_only_known_quantities(table: dict[str, FaultSpec]) -> None:
    unknown = {fid: s.quantity for fid, s in table.items() if s.quantity not in QUANTITY_BY_NAME}
    assert unknown == {}


def test_every_quantity_is_watched_by_a_shipped_fault(table: dict[str, FaultSpec]) -> None:
    used = {spec.quantity for spec in table.values() if spec.enabled}
    assert set(QUANTITY_BY_NAME) - used == set(), "quantities no shipped fault watches"


def test_shipped_table_levels_are_ordered(table: dict[str, FaultSpec]) -> None:
    for fault_id, spec in table.items():
        assert spec.check() == [], fault_id
        levels = spec.levels()
        assert levels, fault_id
        for _, level_spec in levels:
            assert level_spec.check() == [], fault_id
        thresholds = [level_spec.threshold for _, level_spec in levels]
        direction = QUANTITY_BY_NAME[spec.quantity].direction
        assert thresholds == sorted(thresholds, reverse=direction == "below"), fault_id


def test_every_shipped_fault_has_a_fatal_or_is_a_diagnostic_warning(
    table: dict[str, FaultSpec],
) -> None:
    """Each safe-operating-area limit has all three levels; every fault has a fatal level
    except diagnostic warnings that block nothing (opening the contactors would not help: a lost
    inverter keep-alive would prevent a black start; a balancing mismatch is for the operator)."""
    without_fatal = [fid for fid, spec in table.items() if spec.fatal is None]
    assert set(without_fatal) <= {
        "balancing_feedback_mismatch",
        "inverter_keepalive_lost",
        "can_error_frame_rate",  # early warnings: bus-off and comm loss have their own fatals
        "can_unknown_frame_rate",
    }
    for fault_id in without_fatal:
        assert table[fault_id].warning is not None and table[fault_id].blocks == "none", fault_id
    soa = [fid for fid, spec in table.items() if spec.blocks in ("charge", "discharge")]
    for fault_id in soa:
        assert table[fault_id].info and table[fault_id].warning, fault_id


SOA_FAULTS = {
    "cell_voltage_high": "cell_voltage_max_v",
    "cell_voltage_low": "cell_voltage_min_v",
    "pack_voltage_high": "pack_voltage_per_cell_max_v",
    "pack_voltage_low": "pack_voltage_per_cell_min_v",
    "charge_overcurrent": "charge_current_c",
    "discharge_overcurrent": "discharge_current_c",
    "charge_temp_high": "cell_temp_max_charging_c",
    "charge_temp_low": "cell_temp_min_charging_c",
    "discharge_temp_high": "cell_temp_max_discharging_c",
    "discharge_temp_low": "cell_temp_min_discharging_c",
    "cell_voltage_spread": "cell_voltage_spread_v",
    "temp_spread": "temp_spread_c",
}


def test_every_limit_of_the_issue_is_in_the_table(table: dict[str, FaultSpec]) -> None:
    assert {fid: table[fid].quantity for fid in SOA_FAULTS} == SOA_FAULTS


@pytest.mark.parametrize(
    ("chemistry", "fault_id", "fatal"),
    [
        ("LFP", "cell_voltage_high", 3.65),
        ("LFP", "cell_voltage_low", 2.50),
        ("NMC", "cell_voltage_high", 4.25),
        ("NMC", "cell_voltage_low", 3.00),
    ],
)
def test_chemistry_selects_its_voltage_window(chemistry: str, fault_id: str, fatal: float) -> None:
    config = load_config(SIM_CONFIG, CHEMISTRY_OVERRIDES[chemistry])
    fatal_spec = config.protection.faults[fault_id].fatal
    assert fatal_spec is not None and fatal_spec.threshold == fatal


def test_one_key_override_changes_only_that_key() -> None:
    base = load_config(SIM_CONFIG).protection.faults
    changed = load_config(
        SIM_CONFIG, ("protection.faults.cell_voltage_high.fatal.threshold=3.6",)
    ).protection.faults
    assert set(changed) == set(base)
    assert {fid for fid in base if base[fid] != changed[fid]} == {"cell_voltage_high"}
    old, new = base["cell_voltage_high"], changed["cell_voltage_high"]
    assert old.fatal is not None and new.fatal is not None
    assert new.fatal.threshold == 3.6
    assert dataclasses.replace(new.fatal, threshold=old.fatal.threshold) == old.fatal
    assert dataclasses.replace(new, fatal=old.fatal) == old


@pytest.mark.parametrize(
    ("override", "key"),
    [
        pytest.param(
            "protection.faults.cell_voltage_high.fatal.threshold=3.52",
            "protection.faults.cell_voltage_high.fatal.threshold",
            id="fatal-below-warning",
        ),
        pytest.param(
            "protection.faults.cell_voltage_low.fatal.threshold=2.85",
            "protection.faults.cell_voltage_low.fatal.threshold",
            id="below-fatal-above-warning",
        ),
        pytest.param(
            "protection.faults.cell_voltage_high.quantity='no_such_quantity'",
            "protection.faults.cell_voltage_high.quantity",
            id="unknown-quantity",
        ),
        pytest.param(
            "protection.faults.module_comm_loss.fatal.debounce_samples=0",
            "protection.faults.module_comm_loss.fatal.debounce_samples",
            id="zero-debounce",
        ),
        pytest.param(
            "protection.faults.module_comm_loss.fatal.set_delay_s=-1.0",
            "protection.faults.module_comm_loss.fatal.set_delay_s",
            id="negative-delay",
        ),
    ],
)
def test_bad_override_is_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(SIM_CONFIG, (override,))
    assert key in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(("protection.defaults=[]",), id="no-table"),
        pytest.param(("protection.faults.cell_voltage_high.enabled=false",), id="ov-disabled"),
        pytest.param(("protection.faults.module_comm_loss.enabled=false",), id="comm-disabled"),
    ],
)
def test_config_without_essential_faults_is_refused(overrides: tuple[str, ...]) -> None:
    """bmsd must not run unprotected because a table was forgotten or a fault disabled."""
    with pytest.raises(ConfigError, match="no enabled fault with a fatal level"):
        load_config(SIM_CONFIG, overrides)


# -- the whole shipped table on a healthy pack -----------------------------------------------


def _is_lfp(table: dict[str, FaultSpec]) -> bool:
    fatal = table["cell_voltage_high"].fatal
    return fatal is not None and fatal.threshold < 4.0


def test_healthy_pack_sets_no_fault(table: dict[str, FaultSpec]) -> None:
    """Nothing of the shipped table fires on a healthy, resting, closed pack (100 ticks)."""
    state = initial_state(table)
    mid = 3.30 if _is_lfp(table) else 3.70
    cells = tuple(mid + 0.002 * (k % 3) for k in range(8))
    given = inputs(snapshot(cells, (25.0, 26.0, 25.5, 26.5)))
    for k in range(100):
        state, events = evaluate(state, given, table, k * 0.125)
        assert events == [], [e.message for e in events]
    assert state.active() == ()


def test_evaluate_evaluates_each_quantity_once_per_tick(
    table: dict[str, FaultSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Levels sharing a quantity share its value (one call per quantity per tick)."""
    calls: dict[str, int] = {}
    for quantity in QUANTITIES:

        def counted(i: ProtectionInputs, q: Any = quantity) -> float | None:
            calls[q.name] = calls.get(q.name, 0) + 1
            return q.value(i)

        monkeypatch.setitem(
            QUANTITY_BY_NAME, quantity.name, dataclasses.replace(quantity, value=counted)
        )
    evaluate(initial_state(table), inputs(), table, 0.0)
    assert calls and max(calls.values()) == 1


def test_intermittent_implausible_readings_are_counted_over_the_window() -> None:
    """The Controller counts ticks with any implausible reading in the last 10 s."""
    from pathlib import Path

    from bmsd.acquisition.store import ReadingStore
    from bmsd.config import load_config
    from bmsd.control.controller import Controller
    from bmsd.model.topology import Topology
    from bmsd.protection.quantities import IMPLAUSIBLE_WINDOW_S

    config = load_config(Path(__file__).resolve().parents[3] / "etc" / "sim.toml")
    topology = Topology.from_config(config.pack)
    controller = Controller(config, topology, ReadingStore(topology), 280.0, 0.0)
    bad = snapshot(cell_voltage_out_of_range=1)
    good = snapshot()
    counts = []
    for tick in range(40):
        now = tick * 0.5
        counts.append(
            controller._protection_inputs(
                bad if tick % 2 else good, now, None, 0
            ).implausible_recent_ticks
        )
    # Every other tick is bad: once the window is full it holds 10 s / 1 s = 10 bad ticks.
    assert IMPLAUSIBLE_WINDOW_S == 10.0
    assert counts[-1] == 10
    assert max(counts) == 10


def test_every_quantity_has_a_threshold_range_its_shipped_thresholds_lie_in() -> None:
    import tomllib

    from bmsd.protection.quantities import THRESHOLD_RANGES

    assert set(THRESHOLD_RANGES) == {q.name for q in QUANTITIES}
    for low, high in THRESHOLD_RANGES.values():
        assert low <= high
    shipped = 0
    for path in sorted((ROOT / "etc" / "protection").glob("*.toml")):
        for name, fault in tomllib.loads(path.read_text(encoding="utf-8")).items():
            if not isinstance(fault, dict) or "quantity" not in fault:
                continue
            low, high = THRESHOLD_RANGES[fault["quantity"]]
            for level in ("info", "warning", "fatal"):
                if level in fault:
                    shipped += 1
                    assert low <= fault[level]["threshold"] <= high, (path.name, name, level)
    assert shipped > 50
