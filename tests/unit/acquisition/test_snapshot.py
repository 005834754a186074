"""SnapshotBuilder and ReadingStore: validation of raw readings into the PackSnapshot.

A small pack (2 strings x 2 modules x 5 cells, 2 temperature sensors per module) is fed by
hand through ``ReadingStore.apply``; each table row states what a user of the snapshot relies
on: what counts as valid, what enters min/max/mean and where the extremes sit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.config import AcquisitionConfig
from bmsd.model.readings import (
    BalancingFeedback,
    CellVoltageGroup,
    ContactorFeedback,
    ModuleStatus,
    Quantity,
    Reading,
    ScalarReading,
    SensorStatus,
    TemperatureGroup,
)
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.topology import Location, Topology

TOPOLOGY = Topology(
    strings=2,
    modules_per_string=2,
    cells_per_module=5,
    temps_per_module=2,
    cells_in_parallel=1,
    module_node_ids=(1, 2, 3, 4),
)
MODULES = TOPOLOGY.module_count
CELLS = TOPOLOGY.cells_per_module
CONFIG = AcquisitionConfig(
    bus="slaves",
    protocol="unused.toml",
    module_timeout_s=1.0,
    current_sensor_timeout_s=0.5,
    switchbox_timeout_s=0.5,
    cell_voltage_range_v=(0.5, 5.0),
    temp_range_c=(-40.0, 125.0),
    current_range_a=(-500.0, 500.0),
)
T0 = 100.0  # when the readings arrive
BASE_V = 3.300
BASE_T = 25.0


def cell_readings(voltages: np.ndarray, at: float = T0) -> list[Reading]:
    """Cell voltage frames of every module (3 per frame, as the slaves send them)."""
    readings: list[Reading] = []
    for module in range(MODULES):
        for first in range(0, CELLS, 3):
            values = voltages[module, first : first + 3]
            readings.append(CellVoltageGroup(module, first, tuple(float(v) for v in values), at))
    return readings


def temp_readings(temps: np.ndarray, at: float = T0) -> list[Reading]:
    return [
        TemperatureGroup(module, 0, tuple(float(t) for t in temps[module]), at)
        for module in range(MODULES)
    ]


def healthy_voltages() -> np.ndarray:
    # Distinct values so min/max locations are unambiguous: 3.300 + 1 mV * flat index.
    return BASE_V + 0.001 * np.arange(TOPOLOGY.cell_count, dtype=float).reshape(MODULES, CELLS)


def healthy_temps() -> np.ndarray:
    return BASE_T + 0.5 * np.arange(TOPOLOGY.temp_count, dtype=float).reshape(MODULES, 2)


def fed_store(
    voltages: np.ndarray | None = None, temps: np.ndarray | None = None, at: float = T0
) -> ReadingStore:
    store = ReadingStore(TOPOLOGY)
    for reading in cell_readings(healthy_voltages() if voltages is None else voltages, at):
        store.apply(reading)
    for reading in temp_readings(healthy_temps() if temps is None else temps, at):
        store.apply(reading)
    return store


def build(store: ReadingStore, now: float = T0 + 0.05, tick: int = 7) -> PackSnapshot:
    return SnapshotBuilder(TOPOLOGY, CONFIG).build(store, tick, now)


# -- staleness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_s", "valid"),
    [(0.0, True), (0.5, True), (1.0, True), (1.0 + 1e-9, False), (1.5, False), (1e6, False)],
)
def test_module_staleness(age_s: float, valid: bool) -> None:
    store = fed_store()
    snapshot = build(store, now=T0 + age_s)
    assert snapshot.cell_voltage_valid.tolist() == [valid] * TOPOLOGY.cell_count
    assert snapshot.module_age_s.tolist() == pytest.approx([age_s] * MODULES)
    assert (snapshot.cell_voltage is not None) is valid


@pytest.mark.parametrize(
    ("age_s", "valid"),
    [(1.5, True), (3.0, True), (3.0 + 1e-9, False), (10.0, False)],
)
def test_temperatures_have_their_own_timeout(age_s: float, valid: bool) -> None:
    # Slaves send temperatures less often than voltages: acquisition.temp_timeout_s (3 s).
    store = fed_store()
    snapshot = build(store, now=T0 + age_s)
    assert snapshot.temp_valid.tolist() == [valid] * TOPOLOGY.temp_count
    assert (snapshot.temperature is not None) is valid


def test_one_stale_module_only_invalidates_its_own_cells() -> None:
    store = fed_store(at=T0)
    # Modules 0, 1 and 3 report again later; module 2 (string 1, first module) falls silent.
    for reading in cell_readings(healthy_voltages(), T0 + 1.0):
        assert isinstance(reading, CellVoltageGroup)
        if reading.module != 2:
            store.apply(reading)
    snapshot = build(store, now=T0 + 1.5)
    expected = [module != 2 for module in range(MODULES) for _ in range(CELLS)]
    assert snapshot.cell_voltage_valid.tolist() == expected
    assert snapshot.invalid_cell_count == CELLS
    assert not snapshot.all_cells_valid
    assert snapshot.module_age_s.tolist() == pytest.approx([0.5, 0.5, 1.5, 0.5])


# -- ranges ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellCase:
    name: str
    value_v: float
    valid: bool


CELL_CASES = [
    CellCase("normal", 3.3, True),
    CellCase("at-lower-bound", 0.5, True),
    CellCase("at-upper-bound", 5.0, True),
    CellCase("below-range", 0.499, False),
    CellCase("above-range", 5.001, False),
    CellCase("invalid-marker-0xFFFF", 65.535, False),
    CellCase("zero", 0.0, False),
    CellCase("nan", math.nan, False),
    CellCase("inf", math.inf, False),
]


@pytest.mark.parametrize("case", CELL_CASES, ids=lambda c: c.name)
def test_cell_voltage_range(case: CellCase) -> None:
    voltages = healthy_voltages()
    voltages[3, 4] = case.value_v  # string 1, module 1, cell 4: the last cell of the pack
    snapshot = build(fed_store(voltages))
    flat = 3 * CELLS + 4
    assert bool(snapshot.cell_voltage_valid[flat]) is case.valid
    assert snapshot.cell_voltage_valid.sum() == TOPOLOGY.cell_count - (0 if case.valid else 1)
    extremes = snapshot.cell_voltage
    assert extremes is not None
    assert extremes.valid_count == TOPOLOGY.cell_count - (0 if case.valid else 1)
    others = np.delete(healthy_voltages().reshape(-1), flat)
    pool = np.append(others, case.value_v) if case.valid else others
    assert extremes.max_value == pytest.approx(pool.max())
    assert extremes.min_value == pytest.approx(pool.min())
    assert extremes.mean == pytest.approx(pool.mean())


@dataclass(frozen=True)
class TempCase:
    name: str
    value_c: float
    valid: bool


TEMP_CASES = [
    TempCase("normal", 30.0, True),
    TempCase("cold-edge", -40.0, True),
    TempCase("hot-edge", 125.0, True),
    TempCase("too-cold", -40.1, False),
    TempCase("too-hot", 125.1, False),
    TempCase("invalid-marker-0x7FFF", 3276.7, False),
    TempCase("nan", math.nan, False),
]


@pytest.mark.parametrize("case", TEMP_CASES, ids=lambda c: c.name)
def test_temperature_range(case: TempCase) -> None:
    temps = healthy_temps()
    temps[1, 0] = case.value_c
    snapshot = build(fed_store(temps=temps))
    flat = 1 * 2 + 0
    assert bool(snapshot.temp_valid[flat]) is case.valid
    extremes = snapshot.temperature
    assert extremes is not None
    assert extremes.valid_count == TOPOLOGY.temp_count - (0 if case.valid else 1)
    others = np.delete(healthy_temps().reshape(-1), flat)
    pool = np.append(others, case.value_c) if case.valid else others
    assert extremes.mean == pytest.approx(pool.mean())
    assert extremes.max_value == pytest.approx(pool.max())


# -- extremes and their locations ------------------------------------------------------------


@dataclass(frozen=True)
class ExtremesCase:
    name: str
    edits: dict[tuple[int, int], float]
    min_value: float
    min_location: Location
    max_value: float
    max_location: Location
    valid_count: int
    invalid_values: tuple[float, ...] = field(default=())


EXTREMES_CASES = [
    ExtremesCase(
        "healthy-ramp",
        {},
        3.300,
        Location(0, 0, 0),
        3.319,
        Location(1, 1, 4),
        20,
    ),
    ExtremesCase(
        "low-in-string-1-module-0",
        {(2, 3): 2.901},
        2.901,
        Location(1, 0, 3),
        3.319,
        Location(1, 1, 4),
        20,
    ),
    ExtremesCase(
        "high-in-string-0-module-1",
        {(1, 2): 3.612},
        3.300,
        Location(0, 0, 0),
        3.612,
        Location(0, 1, 2),
        20,
    ),
    ExtremesCase(
        "invalid-values-ignored",
        {(0, 0): 65.535, (3, 4): 0.0, (1, 1): math.nan},
        3.301,
        Location(0, 0, 1),
        3.318,
        Location(1, 1, 3),
        17,
    ),
]


@pytest.mark.parametrize("case", EXTREMES_CASES, ids=lambda c: c.name)
def test_cell_extremes_and_locations(case: ExtremesCase) -> None:
    voltages = healthy_voltages()
    for (module, cell), value in case.edits.items():
        voltages[module, cell] = value
    snapshot = build(fed_store(voltages))
    extremes = snapshot.cell_voltage
    assert extremes is not None
    assert extremes.min_value == pytest.approx(case.min_value)
    assert extremes.min_location == case.min_location
    assert extremes.max_value == pytest.approx(case.max_value)
    assert extremes.max_location == case.max_location
    assert extremes.valid_count == case.valid_count
    valid_values = voltages.reshape(-1)[snapshot.cell_voltage_valid]
    assert extremes.mean == pytest.approx(valid_values.mean())
    assert math.isfinite(extremes.mean)
    assert extremes.spread == pytest.approx(case.max_value - case.min_value)


def test_temperature_extremes_locations() -> None:
    temps = healthy_temps()
    temps[2, 1] = -5.0  # string 1, module 0, sensor 1
    temps[1, 0] = 61.0  # string 0, module 1, sensor 0
    snapshot = build(fed_store(temps=temps))
    extremes = snapshot.temperature
    assert extremes is not None
    assert (extremes.min_value, extremes.min_location) == (-5.0, Location(1, 0, 1))
    assert (extremes.max_value, extremes.max_location) == (61.0, Location(0, 1, 0))


def test_never_received_cells_are_invalid_and_no_extremes() -> None:
    store = ReadingStore(TOPOLOGY)
    snapshot = build(store)
    assert not snapshot.cell_voltage_valid.any()
    assert np.isnan(snapshot.cell_voltage_v).all()
    assert not snapshot.temp_valid.any()
    assert snapshot.cell_voltage is None
    assert snapshot.temperature is None
    assert np.isnan(snapshot.string_voltage_sum_v).all()
    assert snapshot.module_age_s.tolist() == [math.inf] * MODULES
    assert snapshot.pack_current_a is None
    assert snapshot.pack_current_age_s == math.inf
    assert snapshot.contactors is None


def test_partly_received_module_leaves_the_rest_invalid() -> None:
    store = ReadingStore(TOPOLOGY)
    store.apply(CellVoltageGroup(0, 0, (3.30, 3.31, 3.32), T0))  # cells 3 and 4 never sent
    snapshot = build(store)
    assert snapshot.cell_voltage_valid[:CELLS].tolist() == [True, True, True, False, False]
    assert snapshot.cell_voltage is not None
    assert snapshot.cell_voltage.valid_count == 3
    assert snapshot.cell_voltage.mean == pytest.approx(3.31)


# -- string sums and pack voltage deviation --------------------------------------------------


def test_string_sums_only_when_every_cell_of_the_string_is_valid() -> None:
    voltages = healthy_voltages()
    voltages[1, 2] = 65.535  # string 0 has one invalid cell
    snapshot = build(fed_store(voltages))
    sums = snapshot.string_voltage_sum_v
    assert math.isnan(sums[0])
    assert sums[1] == pytest.approx(healthy_voltages()[2:].sum())


@pytest.mark.parametrize(
    ("pack_voltage_v", "invalid_string", "expected_deviation"),
    [
        (None, None, None),
        (66.500, None, "mean"),  # both strings valid: against the mean of both sums
        (66.500, 0, "string1"),  # only string 1 valid: against its sum alone
        (66.500, "both", None),  # no valid string: no deviation
    ],
)
def test_pack_voltage_deviation(
    pack_voltage_v: float | None, invalid_string: int | str | None, expected_deviation: str | None
) -> None:
    voltages = healthy_voltages()
    if invalid_string == 0:
        voltages[0, 0] = 0.0
    elif invalid_string == "both":
        voltages[0, 0] = voltages[2, 0] = 0.0
    store = fed_store(voltages)
    if pack_voltage_v is not None:
        store.apply(ScalarReading(Quantity.PACK_VOLTAGE_V, pack_voltage_v, T0))
    snapshot = build(store)
    sums = healthy_voltages().reshape(2, -1).sum(axis=1)
    if expected_deviation is None:
        assert snapshot.pack_voltage_deviation_v is None
    elif expected_deviation == "mean":
        assert snapshot.pack_voltage_deviation_v == pytest.approx(66.5 - sums.mean())
    else:
        assert snapshot.pack_voltage_deviation_v == pytest.approx(66.5 - sums[1])


# -- current sensor, pack voltage, contactors ------------------------------------------------


@dataclass(frozen=True)
class CurrentCase:
    name: str
    current_a: float
    age_s: float
    status: dict[str, int]
    expected: float | None


CURRENT_CASES = [
    CurrentCase("fresh", -123.4, 0.1, {}, -123.4),
    CurrentCase("at-timeout", 50.0, 0.5, {}, 50.0),
    CurrentCase("stale", 50.0, 0.51, {}, None),
    CurrentCase("at-range-edge", 500.0, 0.0, {}, 500.0),
    CurrentCase("above-range", 500.1, 0.0, {}, None),
    CurrentCase("below-range", -500.1, 0.0, {}, None),
    CurrentCase("status-ok", 10.0, 0.0, {"IVT_Msg_Result_I": 0}, 10.0),
    CurrentCase("current-status-bit", 10.0, 0.0, {"IVT_Msg_Result_I": 0b0100}, None),
    CurrentCase(
        "voltage-status-bit", 10.0, 0.0, {"IVT_Msg_Result_I": 0, "IVT_Msg_Result_U1": 8}, None
    ),
]


@pytest.mark.parametrize("case", CURRENT_CASES, ids=lambda c: c.name)
def test_pack_current_validity(case: CurrentCase) -> None:
    store = fed_store()
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, case.current_a, T0))
    for source, flags in case.status.items():
        store.apply(SensorStatus(source, flags, T0))
    snapshot = build(store, now=T0 + case.age_s)
    assert snapshot.pack_current_a == (
        None if case.expected is None else pytest.approx(case.expected)
    )
    assert snapshot.pack_current_age_s == pytest.approx(case.age_s)
    expected_flags = 0
    for flags in case.status.values():
        expected_flags |= flags
    assert snapshot.sensor_error_flags == expected_flags


def test_sensor_status_cleared_by_a_later_good_status() -> None:
    store = fed_store()
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, 10.0, T0))
    store.apply(SensorStatus("IVT_Msg_Result_I", 0b0001, T0))
    assert build(store).pack_current_a is None
    store.apply(SensorStatus("IVT_Msg_Result_I", 0, T0))
    assert build(store).pack_current_a == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("voltage_v", "age_s", "flags", "expected"),
    [
        (204.8, 0.1, 0, 204.8),
        (204.8, 0.6, 0, None),  # stale
        (-1.0, 0.0, 0, None),  # negative: implausible
        (204.8, 0.0, 2, None),  # sensor reports an error
    ],
)
def test_pack_voltage_validity(
    voltage_v: float, age_s: float, flags: int, expected: float | None
) -> None:
    store = fed_store()
    store.apply(ScalarReading(Quantity.PACK_VOLTAGE_V, voltage_v, T0))
    store.apply(SensorStatus("IVT_Msg_Result_U1", flags, T0))
    snapshot = build(store, now=T0 + age_s)
    assert snapshot.pack_voltage_v == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(("age_s", "fresh"), [(0.0, True), (0.5, True), (0.51, False), (9, False)])
def test_contactors_and_bus_voltage_none_when_stale(age_s: float, fresh: bool) -> None:
    store = fed_store()
    feedback = ContactorFeedback(True, False, True, T0)
    store.apply(feedback)
    store.apply(ScalarReading(Quantity.BUS_VOLTAGE_V, 180.0, T0))
    snapshot = build(store, now=T0 + age_s)
    assert snapshot.contactors == (feedback if fresh else None)
    assert snapshot.contactors_age_s == pytest.approx(age_s)
    assert snapshot.bus_voltage_v == (180.0 if fresh else None)


# -- module data, arrays, temperature per cell -----------------------------------------------


def test_module_status_and_balancing_feedback_are_carried() -> None:
    store = fed_store()
    store.apply(ModuleStatus(2, 0b101, 41.5, True, T0))
    store.apply(ModuleStatus(3, 0, None, False, T0))
    store.apply(BalancingFeedback(1, 0, 5, 0b10010, T0))
    snapshot = build(store)
    assert snapshot.module_error_flags.tolist() == [0, 0, 0b101, 0]
    assert snapshot.module_board_temp_c[2] == 41.5
    assert np.isnan(snapshot.module_board_temp_c[[0, 1, 3]]).all()
    assert snapshot.module_measurement_request.tolist() == [False, False, True, False]
    expected = [False] * TOPOLOGY.cell_count
    expected[CELLS + 1] = expected[CELLS + 4] = True
    assert snapshot.balancing_feedback.tolist() == expected


def test_snapshot_arrays_are_read_only_and_detached_from_the_store() -> None:
    store = fed_store()
    store.apply(ModuleStatus(0, 1, 30.0, False, T0))
    snapshot = build(store)
    arrays = [
        snapshot.cell_voltage_v,
        snapshot.cell_voltage_valid,
        snapshot.temp_c,
        snapshot.temp_valid,
        snapshot.cell_temp_c,
        snapshot.module_age_s,
        snapshot.module_error_flags,
        snapshot.module_board_temp_c,
        snapshot.module_measurement_request,
        snapshot.balancing_feedback,
        snapshot.string_voltage_sum_v,
    ]
    for array in arrays:
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 0
    before = snapshot.cell_voltage_v.copy()
    # New readings after the snapshot must not change it.
    for reading in cell_readings(healthy_voltages() + 0.1, T0 + 0.1):
        store.apply(reading)
    store.apply(ModuleStatus(0, 7, 31.0, True, T0 + 0.1))
    assert np.array_equal(snapshot.cell_voltage_v, before)
    assert snapshot.module_error_flags[0] == 1


def test_cell_temp_maps_each_cell_to_its_nearest_sensor() -> None:
    temps = np.array([[10.0, 20.0], [11.0, 21.0], [12.0, 22.0], [13.0, 23.0]])
    temps[3, 1] = 3276.7  # invalid sensor: its cells get no temperature
    snapshot = build(fed_store(temps=temps))
    # 5 cells, 2 sensors spread evenly: cells 0..2 nearest sensor 0, cells 3..4 sensor 1.
    expected = []
    for module in range(MODULES):
        for cell in range(CELLS):
            sensor = 0 if cell < 3 else 1
            expected.append(temps[module, sensor])
    expected[3 * CELLS + 3] = expected[3 * CELLS + 4] = math.nan
    assert snapshot.cell_temp_c.tolist() == pytest.approx(expected, nan_ok=True)
    assert [TOPOLOGY.cell_temp_sensor(c) for c in range(CELLS)] == [0, 0, 0, 1, 1]


def test_tick_and_time_are_recorded() -> None:
    snapshot = build(fed_store(), now=T0 + 0.25, tick=42)
    assert (snapshot.tick, snapshot.time_s) == (42, T0 + 0.25)


# -- ReadingStore ----------------------------------------------------------------------------


def test_changed_at_moves_only_when_a_value_changes() -> None:
    store = ReadingStore(TOPOLOGY)
    assert (store.cell_voltage_changed_at == -math.inf).all()
    store.apply(CellVoltageGroup(1, 0, (3.30, 3.31, 3.32), 1.0))
    assert store.cell_voltage_changed_at[1, :3].tolist() == [1.0, 1.0, 1.0]
    store.apply(CellVoltageGroup(1, 0, (3.30, 3.31, 3.32), 2.0))  # same values
    assert store.cell_voltage_changed_at[1, :3].tolist() == [1.0, 1.0, 1.0]
    assert store.cell_voltage_at[1, :3].tolist() == [2.0, 2.0, 2.0]
    store.apply(CellVoltageGroup(1, 0, (3.30, 3.35, 3.32), 3.0))  # only the middle one moves
    assert store.cell_voltage_changed_at[1, :3].tolist() == [1.0, 3.0, 1.0]
    assert store.cell_voltage_at[1, :3].tolist() == [3.0, 3.0, 3.0]
    # Nothing else was touched.
    assert (store.cell_voltage_changed_at[0] == -math.inf).all()
    assert (store.cell_voltage_changed_at[1, 3:] == -math.inf).all()
    assert store.module_seen_at.tolist() == [-math.inf, 3.0, -math.inf, -math.inf]


def test_store_counts_and_keeps_latest_values() -> None:
    store = ReadingStore(TOPOLOGY)
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, 1.0, 1.0))
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, 2.0, 2.0))
    store.apply(TemperatureGroup(3, 0, (20.0, 21.0), 2.5))
    assert store.scalar(Quantity.PACK_CURRENT_A) == (2.0, 2.0)
    assert store.scalar(Quantity.BUS_VOLTAGE_V) is None
    assert store.temp_c[3].tolist() == [20.0, 21.0]
    assert store.readings_applied == 3


def test_balancing_feedback_group_overwrites_only_its_cells() -> None:
    store = ReadingStore(TOPOLOGY)
    store.apply(BalancingFeedback(0, 0, 5, 0b11111, 1.0))
    store.apply(BalancingFeedback(0, 0, 5, 0b00100, 2.0))
    assert store.balancing_feedback[0].tolist() == [False, False, True, False, False]
    assert not store.balancing_feedback[1:].any()


# -- frozen measurements -----------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenCase:
    name: str
    pack_shift_mv: tuple[float, ...]  # the pack's cells (but the watched one) move, per step
    watched_moves: tuple[bool, ...]  # does the watched cell's reading change in that step
    expected_swing_mv: float


FROZEN_CASES = [
    # A resting battery with a quiet ADC: nothing changes for hours, nothing is judged.
    FrozenCase("rest", (0.0,) * 6, (False,) * 6, 0.0),
    # The pack moves 4 mV a step; the watched cell never follows: the swing builds up.
    FrozenCase("stuck", (4.0,) * 5, (False,) * 5, 20.0),
    # It follows once in the middle: judged afresh from that change.
    FrozenCase("follows-once", (4.0,) * 5, (False, False, True, False, False), 8.0),
    # A load step and back: the swing counts the whole excursion, not the net move.
    FrozenCase("step-and-back", (15.0, -15.0, 0.0), (False, False, False), 15.0),
    # Healthy: follows every step.
    FrozenCase("healthy", (4.0,) * 5, (True,) * 5, 0.0),
]


@pytest.mark.parametrize("case", FROZEN_CASES, ids=lambda c: c.name)
def test_a_cell_that_does_not_follow_the_pack_is_frozen(case: FrozenCase) -> None:
    watched = (1, 3)  # module, cell
    builder = SnapshotBuilder(TOPOLOGY, CONFIG)
    voltages = healthy_voltages()
    store = fed_store(voltages)
    now = T0
    snapshot = builder.build(store, 0, now)
    assert snapshot.cell_voltage_frozen_swing_v == 0.0
    steps = zip(case.pack_shift_mv, case.watched_moves, strict=True)
    for step, (shift_mv, moves) in enumerate(steps):
        now += 1.0
        stuck_v = voltages[watched]
        voltages = voltages + shift_mv / 1000.0
        if not moves:
            voltages[watched] = stuck_v
        elif shift_mv == 0.0:
            voltages[watched] += 0.001  # a change of one LSB
        for reading in cell_readings(voltages, at=now):
            store.apply(reading)
        snapshot = builder.build(store, step + 1, now + 0.05)
    # The watched cell's own share of the mean (1 of 20 cells) is what it did not move.
    share = 1.0 - 1.0 / TOPOLOGY.cell_count
    expected_v = case.expected_swing_mv * share / 1000.0
    assert snapshot.cell_voltage_frozen_swing_v == pytest.approx(expected_v, abs=1e-9)


def test_a_cell_coming_back_from_stale_is_judged_from_then_on() -> None:
    builder = SnapshotBuilder(TOPOLOGY, CONFIG)
    voltages = healthy_voltages()
    store = fed_store(voltages)
    builder.build(store, 0, T0)
    # Module 0 falls silent while the rest of the pack moves 30 mV.
    for step in range(1, 4):
        voltages = voltages + 0.010
        for reading in cell_readings(voltages, at=T0 + step):
            if isinstance(reading, CellVoltageGroup) and reading.module != 0:
                store.apply(reading)
        builder.build(store, step, T0 + step + 0.05)
    # It comes back with unchanged values (the slave held them): not frozen for what it missed;
    # and the others, unchanged this tick, are not judged moved by its return.
    back = voltages.copy()
    back[0] = healthy_voltages()[0]
    for reading in cell_readings(back, at=T0 + 4):
        store.apply(reading)
    snapshot = builder.build(store, 4, T0 + 4.05)
    assert snapshot.cell_voltage_valid.all()
    assert snapshot.cell_voltage_frozen_swing_v == 0.0


@pytest.mark.parametrize(
    ("current_a", "held_s", "expected_s"),
    [
        (0.0, 3600.0, 0.0),  # exactly 0 at rest for an hour: a resting battery, no fault
        (1.0, 3600.0, 0.0),  # inside the rest band (edge)
        (-1.0, 3600.0, 0.0),
        (1.01, 100.0, 100.0),  # outside it, the same reading is judged frozen
        (-89.0, 42.0, 42.0),
    ],
)
def test_current_frozen_only_away_from_rest(
    current_a: float, held_s: float, expected_s: float
) -> None:
    builder = SnapshotBuilder(TOPOLOGY, CONFIG)
    store = fed_store(at=T0 + held_s)
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, current_a, T0))
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, current_a, T0 + held_s))  # same value
    snapshot = builder.build(store, 1, T0 + held_s)
    assert snapshot.pack_current_frozen_s == pytest.approx(expected_s)
