"""Prometheus exporter: serves the newest PackState as metrics, built at scrape time.

The collector reads ``StateHub.latest`` (an immutable PackState) when Prometheus scrapes and
yields every series from it, so a tick never updates thousands of gauge children. Only what
cannot be derived from the newest state alone is counted by a tick hook: fault events, tick
duration and lateness histograms, overruns. The metric table :data:`METRICS` is the single
description of every metric: the collector, the generated reference ``docs/metrics.md``
(``python -m bmsd.publish.metrics``) and the tests all read it.

Conventions: base units (volts, amperes, watts, seconds, coulombs, joules, ohms, ratio 0..1,
celsius), counters end in ``_total``, constant descriptions are ``_info`` gauges of value 1.
Labels ``string``, ``module`` and ``cell`` (or ``sensor``) are 0-based, modules counted within
their string from the negative end, as in ``bmsd explain``.

The HTTP server (bmsd/publish/httpserver.py) serves scrapes from a fixed pool of threads: a
scrape never runs on the event loop, and only reads immutable data and plain counters. The
table's metrics are written by :meth:`PackCollector.render` (text format 0.0.4, about ten
times faster than prometheus-client's exposition, which is tested to give the same samples);
everything else (process metrics, tick-hook counters, collectors of other publishers, added
with :meth:`MetricsExporter.add_collector`) by prometheus-client's exposition.
"""

from __future__ import annotations

import gzip
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bmsd.canbus.bus import CanInterface
from bmsd.canbus.errorframes import ERROR_CLASS_LABELS
from bmsd.config import MetricsConfig
from bmsd.errors import BmsdError
from bmsd.model.bms import BmsMode
from bmsd.model.limits import LIMIT_KINDS
from bmsd.model.snapshot import Extremes
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.publish import heap as heap_metrics
from bmsd.publish.family import FamilyDoc
from bmsd.publish.httpserver import BoundedWSGIServer
from bmsd.publish.inverter import metrics as inverter_metrics
from bmsd.publish.modbus import metrics as modbus_metrics

log = logging.getLogger(__name__)

AH_TO_C = 3600.0  # 1 Ah = 3600 C
WH_TO_J = 3600.0  # 1 Wh = 3600 J

BLOCK_LINES = 256  # samples formatted per C call by the renderer (bounds one GIL hold)

TICK_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

Kind = Literal["gauge", "counter", "histogram"]
Source = Literal["state", "bus", "daemon", "hook", "http"]
Sample = tuple[Sequence[str], float]


@dataclass(frozen=True, slots=True)
class Sources:
    """What the collector reads at scrape time; every callable is cheap and thread-safe."""

    topology: Topology
    latest: Callable[[], PackState | None]
    buses: Mapping[str, CanInterface]
    tick_s: float
    chemistry: str
    clock: Callable[[], float] = time.monotonic


@dataclass(slots=True)
class Scrape:
    """One scrape: the newest state and the label tuples prepared once per exporter."""

    state: PackState | None
    now_s: float
    sources: Sources
    labels: Labels


@dataclass(frozen=True, slots=True)
class Labels:
    """Label values of every cell, temperature sensor and module (built once)."""

    cells: tuple[tuple[str, str, str], ...]
    sensors: tuple[tuple[str, str, str], ...]
    modules: tuple[tuple[str, str], ...]
    strings: tuple[tuple[str], ...]

    @classmethod
    def of(cls, topology: Topology) -> Labels:
        def loc(flat: int, per_module: int) -> tuple[str, str, str]:
            module, index = divmod(flat, per_module)
            string, in_string = divmod(module, topology.modules_per_string)
            return (str(string), str(in_string), str(index))

        return cls(
            cells=tuple(loc(i, topology.cells_per_module) for i in range(topology.cell_count)),
            sensors=tuple(loc(i, topology.temps_per_module) for i in range(topology.temp_count)),
            modules=tuple(
                (str(m // topology.modules_per_string), str(m % topology.modules_per_string))
                for m in range(topology.module_count)
            ),
            strings=tuple((str(s),) for s in range(topology.strings)),
        )


Values = Callable[[Scrape], Iterable[Sample]]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its name as exposed, type, help, labels and where its value comes from."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    source: Source = "state"
    per_cell: bool = False  # left out when metrics.per_cell is off
    when: str = ""  # for the reference: when the series is absent
    values: Values | None = field(default=None, compare=False)


CELL = ("string", "module", "cell")
SENSOR = ("string", "module", "sensor")
MODULE = ("string", "module")


# -- value functions -------------------------------------------------------------------------


def _one(value: float | None) -> Iterable[Sample]:
    return () if value is None else (((), float(value)),)


def _snap(getter: Callable[[PackState], float | None]) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        return () if scrape.state is None else _one(getter(scrape.state))

    return values


def _est(getter: Callable[[PackState], float]) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        state = scrape.state
        if state is None or state.estimates is None:
            return ()
        return _one(getter(state))

    return values


def _bal(getter: Callable[[PackState], float]) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        state = scrape.state
        if state is None or state.balancing is None:
            return ()
        return _one(getter(state))

    return values


@dataclass(frozen=True, slots=True)
class Block:
    """Samples of one array (cells, sensors, modules): label tuples and values side by side.

    Iterates as ``(labels, value)`` pairs like any other value function's result; the text
    renderer writes it in one pass instead (see :meth:`PackCollector.render`).
    """

    labels: Sequence[Sequence[str]]
    values: list[float]
    complete: bool  # labels is the whole topology tuple (the same object every scrape)

    def __iter__(self) -> Iterator[Sample]:
        return zip(self.labels, self.values, strict=True)


def _per_label(
    labels: Sequence[Sequence[str]], array: NDArray[np.float64], valid: NDArray[np.bool_] | None
) -> Block:
    if valid is None or bool(valid.all()):
        return Block(labels, array.tolist(), complete=True)
    keep = valid.tolist()
    return Block(
        [label for label, ok in zip(labels, keep, strict=True) if ok],
        array[valid].tolist(),
        complete=False,
    )


def _cells(getter: Callable[[PackState], NDArray[np.float64] | None], scale: float = 1.0) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        state = scrape.state
        if state is None:
            return ()
        array = getter(state)
        if array is None:
            return ()
        if scale != 1.0:
            array = array * scale
        return _per_label(scrape.labels.cells, array, None)

    return values


def _cell_voltages(scrape: Scrape) -> Iterable[Sample]:
    if scrape.state is None:
        return ()
    snap = scrape.state.snapshot
    return _per_label(scrape.labels.cells, snap.cell_voltage_v, snap.cell_voltage_valid)


def _cell_temps(scrape: Scrape) -> Iterable[Sample]:
    if scrape.state is None:
        return ()
    snap = scrape.state.snapshot
    return _per_label(scrape.labels.cells, snap.cell_temp_c, None)


def _sensor_temps(scrape: Scrape) -> Iterable[Sample]:
    if scrape.state is None:
        return ()
    snap = scrape.state.snapshot
    return _per_label(scrape.labels.sensors, snap.temp_c, snap.temp_valid)


def _modules(getter: Callable[[PackState], NDArray[np.float64]]) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        if scrape.state is None:
            return ()
        array = np.asarray(getter(scrape.state), dtype=np.float64)
        return _per_label(scrape.labels.modules, array, None)

    return values


def _extreme(
    which: Callable[[PackState], Extremes | None], part: Callable[[Extremes], float]
) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        if scrape.state is None:
            return ()
        extremes = which(scrape.state)
        return () if extremes is None else _one(part(extremes))

    return values


def _power(state: PackState) -> float | None:
    snap = state.snapshot
    if snap.pack_voltage_v is None or snap.pack_current_a is None:
        return None
    return snap.pack_voltage_v * snap.pack_current_a


def _string_sums(scrape: Scrape) -> Iterable[Sample]:
    if scrape.state is None:
        return ()
    return _per_label(scrape.labels.strings, scrape.state.snapshot.string_voltage_sum_v, None)


def _limit(kind: str) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        if scrape.state is None:
            return ()
        return _one(scrape.state.limits.value(kind))  # type: ignore[arg-type]

    return values


def _contributors(kinds: tuple[str, ...]) -> Values:
    def values(scrape: Scrape) -> Iterator[Sample]:
        if scrape.state is None:
            return
        limits = scrape.state.limits
        for kind in kinds:
            for contributor in limits.contributors(kind):  # type: ignore[arg-type]
                yield (kind, contributor.name), contributor.value

    return values


def _limiting(scrape: Scrape) -> Iterator[Sample]:
    if scrape.state is None:
        return
    limits = scrape.state.limits
    for kind in LIMIT_KINDS:
        top = limits.limiting(kind)
        for contributor in limits.contributors(kind):
            yield (kind, contributor.name), 1.0 if contributor is top else 0.0


def _mode(scrape: Scrape) -> Iterator[Sample]:
    if scrape.state is None:
        return
    for mode in BmsMode:
        yield (mode.value,), 1.0 if scrape.state.mode is mode else 0.0


def _contactors_closed(scrape: Scrape) -> Iterator[Sample]:
    if scrape.state is None or scrape.state.snapshot.contactors is None:
        return
    feedback = scrape.state.snapshot.contactors
    yield ("minus",), float(feedback.minus_closed)
    yield ("plus",), float(feedback.plus_closed)
    yield ("precharge",), float(feedback.precharge_closed)


def _contactors_commanded(scrape: Scrape) -> Iterator[Sample]:
    if scrape.state is None:
        return
    command = scrape.state.contactor_command
    yield ("minus",), float(command.minus)
    yield ("plus",), float(command.plus)
    yield ("precharge",), float(command.precharge)


def _fault_flag(attribute: str) -> Values:
    def values(scrape: Scrape) -> Iterator[Sample]:
        if scrape.state is None:
            return
        for level in scrape.state.faults.levels:
            yield (level.fault_id, level.level.label), float(getattr(level, attribute))

    return values


def _worst_level(state: PackState) -> float:
    worst = state.faults.worst_level()
    return 0.0 if worst is None else float(worst)


def _bus(getter: Callable[[CanInterface], float]) -> Values:
    def values(scrape: Scrape) -> Iterator[Sample]:
        for name, bus in scrape.sources.buses.items():
            yield (name,), float(getter(bus))

    return values


def _bus_messages(scrape: Scrape) -> Iterator[Sample]:
    for name, bus in scrape.sources.buses.items():
        # dict() of a Counter copies it in one step under the GIL: safe against the loop thread.
        for message, count in sorted(dict(bus.stats.frames_by_message).items()):
            yield (name, message), float(count)


def _bus_error_classes(scrape: Scrape) -> Iterator[Sample]:
    for name, bus in scrape.sources.buses.items():
        counts = dict(bus.stats.error_frames_by_class)  # one copy under the GIL, as above
        for label in ERROR_CLASS_LABELS:
            yield (name, label), float(counts.get(label, 0))


def _receiver_up(bus: CanInterface) -> float:
    return float(bus.is_open and bus.receiver_failed() is None)


def _state_age(scrape: Scrape) -> Iterable[Sample]:
    if scrape.state is None:
        return ()
    return _one(max(0.0, scrape.now_s - scrape.state.time_s))


def _timing(getter: Callable[[PackState], float]) -> Values:
    def values(scrape: Scrape) -> Iterable[Sample]:
        state = scrape.state
        if state is None or state.timing is None:
            return ()
        return _one(getter(state))

    return values


def _build_info(scrape: Scrape) -> Iterable[Sample]:
    return (((_version(), sys.version.split()[0]), 1.0),)


def _pack_info(scrape: Scrape) -> Iterable[Sample]:
    t = scrape.sources.topology
    return (
        (
            (
                scrape.sources.chemistry,
                str(t.strings),
                str(t.modules_per_string),
                str(t.cells_per_module),
                str(t.temps_per_module),
                str(t.cells_in_parallel),
            ),
            1.0,
        ),
    )


def _version() -> str:
    try:
        return metadata.version("bmsd")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cells_bleeding(state: PackState) -> float:
    assert state.balancing is not None
    return float(np.count_nonzero(state.balancing.bleeding))


# -- the table -------------------------------------------------------------------------------

_EST = "no SOC estimate yet"
_BAL = "no balancing configured"
_NO_V = "pack voltage missing"
_NO_I = "pack current missing"
_NO_CELLS = "no valid cell voltage"
_NO_TEMPS = "no valid temperature"
_VOLTAGE_KINDS = ("cvl", "dvl")
_CURRENT_KINDS = ("ccl", "dcl")

METRICS: tuple[MetricSpec, ...] = (
    # pack
    MetricSpec("bmsd_pack_voltage_volts", "gauge", "Measured pack voltage",
               values=_snap(lambda s: s.snapshot.pack_voltage_v), when=_NO_V),
    MetricSpec("bmsd_pack_current_amperes", "gauge", "Pack current, positive charges the battery",
               values=_snap(lambda s: s.snapshot.pack_current_a), when=_NO_I),
    MetricSpec("bmsd_pack_power_watts", "gauge",
               "Pack power (voltage times current), positive charges the battery",
               values=_snap(_power), when=f"{_NO_V} or {_NO_I}"),
    MetricSpec("bmsd_bus_voltage_volts", "gauge", "Voltage on the inverter side of the contactors",
               values=_snap(lambda s: s.snapshot.bus_voltage_v), when="not measured"),
    MetricSpec("bmsd_string_cell_voltage_sum_volts", "gauge",
               "Sum of the valid cell voltages of each string", ("string",),
               values=_string_sums),
    MetricSpec("bmsd_data_valid", "gauge",
               "1 when every cell, temperature, current and contactor reading is valid",
               values=_snap(lambda s: float(s.data_ok))),
    MetricSpec("bmsd_pack_info", "gauge", "Pack chemistry and topology (value 1)",
               ("chemistry", "strings", "modules_per_string", "cells_per_module",
                "temps_per_module", "cells_in_parallel"), source="daemon", values=_pack_info),
    # estimates
    MetricSpec("bmsd_soc_ratio", "gauge",
               "Pack SOC for the inverter (0..1): 1 when the first cell is full, 0 when the first "
               "cell is empty", values=_est(lambda s: s.estimates.pack_soc), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_soc_uncertainty_ratio", "gauge", "One standard deviation of the pack SOC",
               values=_est(lambda s: s.estimates.pack_soc_std), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_soc_average_ratio", "gauge", "Mean of the per-cell SOC",
               values=_est(lambda s: s.estimates.average_soc), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_soh_capacity_ratio", "gauge",
               "State of health: pack capacity over nominal capacity (1 = as new)",
               values=_est(lambda s: s.estimates.soh_capacity), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_soh_resistance_ratio", "gauge",
               "Median cell resistance over its as-new value (1 = as new, 2 = doubled)",
               values=_est(lambda s: s.estimates.soh_resistance), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_capacity_coulombs", "gauge",
               "Estimated pack capacity (weakest cell group times parallel strings); Ah x 3600",
               values=_est(lambda s: s.estimates.pack_capacity_ah * AH_TO_C), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_current_sensor_offset_amperes", "gauge",
               "Learned offset of the pack current sensor",
               values=_est(lambda s: s.estimates.current_offset_a), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_charge_throughput_coulombs_total", "counter",
               "Charge put into the pack (persisted across restarts); Ah x 3600",
               values=_est(lambda s: s.estimates.charge_throughput_ah * AH_TO_C), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_discharge_throughput_coulombs_total", "counter",
               "Charge taken out of the pack (persisted across restarts); Ah x 3600",
               values=_est(lambda s: s.estimates.discharge_throughput_ah * AH_TO_C), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_charge_energy_joules_total", "counter", "Energy put into the pack; Wh x 3600",
               values=_est(lambda s: s.estimates.charge_energy_wh * WH_TO_J), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_discharge_energy_joules_total", "counter",
               "Energy taken out of the pack; Wh x 3600",
               values=_est(lambda s: s.estimates.discharge_energy_wh * WH_TO_J), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_equivalent_full_cycles", "gauge",
               "Discharge throughput over nominal pack capacity",
               values=_est(lambda s: s.estimates.equivalent_full_cycles), when=_EST),  # type: ignore[union-attr]
    MetricSpec("bmsd_at_rest", "gauge", "1 when the pack current has been near zero long enough",
               values=_est(lambda s: float(s.estimates.at_rest)), when=_EST),  # type: ignore[union-attr]
    # limits
    MetricSpec("bmsd_charge_voltage_limit_volts", "gauge", "CVL: pack voltage the charger may "
               "regulate to", values=_limit("cvl")),
    MetricSpec("bmsd_discharge_voltage_limit_volts", "gauge",
               "DVL: pack voltage below which the inverter stops discharging",
               values=_limit("dvl")),
    MetricSpec("bmsd_charge_current_limit_amperes", "gauge", "CCL: allowed charge current",
               values=_limit("ccl")),
    MetricSpec("bmsd_discharge_current_limit_amperes", "gauge", "DCL: allowed discharge current",
               values=_limit("dcl")),
    MetricSpec("bmsd_limit_contributor_volts", "gauge",
               "Each candidate value of a voltage limit; the limit is the lowest",
               ("limit", "contributor"), values=_contributors(_VOLTAGE_KINDS)),
    MetricSpec("bmsd_limit_contributor_amperes", "gauge",
               "Each candidate value of a current limit; the limit is the lowest",
               ("limit", "contributor"), values=_contributors(_CURRENT_KINDS)),
    MetricSpec("bmsd_limit_limiting", "gauge",
               "1 for the contributor that sets each limit now (why it is limited), else 0",
               ("limit", "contributor"), values=_limiting),
    # state machine
    MetricSpec("bmsd_mode", "gauge", "BMS state: 1 for the current mode, 0 for the others",
               ("mode",), values=_mode),
    MetricSpec("bmsd_contactor_closed", "gauge", "Contactor feedback: 1 closed, 0 open",
               ("contactor",), values=_contactors_closed, when="no contactor feedback"),
    MetricSpec("bmsd_contactor_commanded_closed", "gauge",
               "Contactor command of the state machine: 1 close, 0 open", ("contactor",),
               values=_contactors_commanded),
    # faults
    MetricSpec("bmsd_fault_active", "gauge", "1 while a fault level is active",
               ("fault", "level"), values=_fault_flag("active")),
    MetricSpec("bmsd_fault_latched", "gauge", "1 while a fault level is latched (needs a reset)",
               ("fault", "level"), values=_fault_flag("latched")),
    MetricSpec("bmsd_fault_worst_level", "gauge",
               "Most severe active fault level: 0 none, 1 info, 2 warning, 3 fatal",
               values=_snap(_worst_level)),
    MetricSpec("bmsd_fault_events_total", "counter",
               "Fault changes since start, by event: set, clear, reset, reset_refused",
               ("fault", "level", "event"), source="hook"),
    # cells: extremes
    MetricSpec("bmsd_cell_voltage_min_volts", "gauge", "Lowest valid cell voltage",
               values=_extreme(lambda s: s.snapshot.cell_voltage, lambda e: e.min_value),
               when=_NO_CELLS),
    MetricSpec("bmsd_cell_voltage_max_volts", "gauge", "Highest valid cell voltage",
               values=_extreme(lambda s: s.snapshot.cell_voltage, lambda e: e.max_value),
               when=_NO_CELLS),
    MetricSpec("bmsd_cell_voltage_mean_volts", "gauge", "Mean valid cell voltage",
               values=_extreme(lambda s: s.snapshot.cell_voltage, lambda e: e.mean),
               when=_NO_CELLS),
    MetricSpec("bmsd_cell_voltage_spread_volts", "gauge", "Highest minus lowest cell voltage",
               values=_extreme(lambda s: s.snapshot.cell_voltage, lambda e: e.spread),
               when=_NO_CELLS),
    MetricSpec("bmsd_cell_voltage_invalid_cells", "gauge",
               "Cells whose voltage is missing, stale or out of range",
               values=_snap(lambda s: float(s.snapshot.invalid_cell_count))),
    MetricSpec("bmsd_temperature_min_celsius", "gauge", "Lowest valid temperature",
               values=_extreme(lambda s: s.snapshot.temperature, lambda e: e.min_value),
               when=_NO_TEMPS),
    MetricSpec("bmsd_temperature_max_celsius", "gauge", "Highest valid temperature",
               values=_extreme(lambda s: s.snapshot.temperature, lambda e: e.max_value),
               when=_NO_TEMPS),
    MetricSpec("bmsd_temperature_spread_celsius", "gauge",
               "Highest minus lowest valid temperature",
               values=_extreme(lambda s: s.snapshot.temperature, lambda e: e.spread),
               when=_NO_TEMPS),
    # per sensor and module
    MetricSpec("bmsd_temperature_celsius", "gauge", "Each valid temperature sensor", SENSOR,
               values=_sensor_temps, when="that sensor invalid"),
    MetricSpec("bmsd_module_data_age_seconds", "gauge",
               "Age of each module's newest cell-voltage frame at the newest tick", MODULE,
               values=_modules(lambda s: s.snapshot.module_age_s)),
    MetricSpec("bmsd_module_error_flags", "gauge", "Error flags each module reports (bit field)",
               MODULE, values=_modules(lambda s: s.snapshot.module_error_flags.astype(np.float64))),
    MetricSpec("bmsd_module_board_temperature_celsius", "gauge",
               "Board temperature each module reports", MODULE,
               values=_modules(lambda s: s.snapshot.module_board_temp_c)),
    MetricSpec("bmsd_current_sensor_data_age_seconds", "gauge",
               "Age of the newest pack current reading at the newest tick",
               values=_snap(lambda s: s.snapshot.pack_current_age_s)),
    MetricSpec("bmsd_contactor_feedback_age_seconds", "gauge",
               "Age of the newest contactor feedback at the newest tick",
               values=_snap(lambda s: s.snapshot.contactors_age_s)),
    # per cell
    MetricSpec("bmsd_cell_voltage_volts", "gauge", "Each valid cell (group) voltage", CELL,
               per_cell=True, values=_cell_voltages, when="that cell invalid"),
    MetricSpec("bmsd_cell_temperature_celsius", "gauge",
               "Temperature of each cell, from the nearest sensor of its module", CELL,
               per_cell=True, values=_cell_temps),
    MetricSpec("bmsd_cell_soc_ratio", "gauge", "SOC of each cell (0..1)", CELL, per_cell=True,
               values=_cells(lambda s: None if s.estimates is None else s.estimates.soc),
               when=_EST),
    MetricSpec("bmsd_cell_soc_uncertainty_ratio", "gauge",
               "One standard deviation of each cell's SOC", CELL, per_cell=True,
               values=_cells(lambda s: None if s.estimates is None else s.estimates.soc_std),
               when=_EST),
    MetricSpec("bmsd_cell_capacity_coulombs", "gauge",
               "Estimated capacity of each cell group; Ah x 3600", CELL, per_cell=True,
               values=_cells(
                   lambda s: None if s.estimates is None else s.estimates.capacity_ah, AH_TO_C
               ), when=_EST),
    MetricSpec("bmsd_cell_resistance_ohms", "gauge",
               "Estimated ohmic resistance of each cell group", CELL, per_cell=True,
               values=_cells(lambda s: None if s.estimates is None else s.estimates.resistance_ohm),
               when=_EST),
    # balancing
    MetricSpec("bmsd_balancing_enabled", "gauge", "1 when balancing is allowed (config and "
               "operator)", values=_bal(lambda s: float(s.balancing.enabled)), when=_BAL),  # type: ignore[union-attr]
    MetricSpec("bmsd_balancing_active", "gauge", "1 when at least one cell bleeds",
               values=_bal(lambda s: float(s.balancing.active)), when=_BAL),  # type: ignore[union-attr]
    MetricSpec("bmsd_balancing_cells_bleeding", "gauge", "Cells commanded to bleed now",
               values=_bal(_cells_bleeding), when=_BAL),
    MetricSpec("bmsd_balancing_feedback_mismatch_modules", "gauge",
               "Modules whose reported balancing differs from the command",
               values=_bal(lambda s: float(s.balancing.feedback_mismatch_modules)), when=_BAL),  # type: ignore[union-attr]
    MetricSpec("bmsd_cell_bleeding", "gauge", "1 while a cell is commanded to bleed", CELL,
               per_cell=True, when=_BAL, values=_cells(
                   lambda s: None if s.balancing is None
                   else s.balancing.bleeding.astype(np.float64))),
    MetricSpec("bmsd_cell_bled_coulombs_total", "counter",
               "Charge bled from each cell since the counters started; Ah x 3600", CELL,
               per_cell=True, when=_BAL, values=_cells(
                   lambda s: None if s.balancing is None else s.balancing.bled_ah, AH_TO_C)),
    # CAN. The breakdown by message is read before the totals: frames keep arriving while a
    # scrape runs, and read in this order its sum never exceeds frames received.
    MetricSpec("bmsd_can_message_frames_total", "counter", "Frames decoded, by message",
               ("bus", "message"), source="bus", values=_bus_messages,
               when="no frame of that message yet"),
    MetricSpec("bmsd_can_frames_received_total", "counter", "Frames received", ("bus",),
               source="bus", values=_bus(lambda b: b.stats.rx_frames)),
    MetricSpec("bmsd_can_frames_dropped_total", "counter",
               "Frames received but dropped before decoding (the daemon could not keep up)",
               ("bus",), source="bus", values=_bus(lambda b: b.stats.rx_dropped)),
    MetricSpec("bmsd_can_frames_sent_total", "counter", "Frames sent", ("bus",), source="bus",
               values=_bus(lambda b: b.stats.tx_frames)),
    MetricSpec("bmsd_can_send_errors_total", "counter", "Frames that could not be sent",
               ("bus",), source="bus", values=_bus(lambda b: b.stats.tx_errors)),
    MetricSpec("bmsd_can_error_frames_total", "counter", "CAN error frames received", ("bus",),
               source="bus", values=_bus(lambda b: b.stats.error_frames)),
    MetricSpec("bmsd_can_unknown_frames_total", "counter",
               "Frames with an identifier nobody decodes", ("bus",), source="bus",
               values=_bus(lambda b: b.stats.unknown_frames)),
    MetricSpec("bmsd_can_unexpected_module_frames_total", "counter",
               "Module frames from node ids the configuration does not list", ("bus",),
               source="bus", values=_bus(lambda b: b.stats.unexpected_module_frames)),
    MetricSpec("bmsd_can_decode_errors_total", "counter", "Frames that did not decode", ("bus",),
               source="bus", values=_bus(lambda b: b.stats.decode_errors)),
    MetricSpec("bmsd_can_bus_errors_total", "counter", "Receive failures of the bus driver",
               ("bus",), source="bus", values=_bus(lambda b: b.stats.bus_errors)),
    MetricSpec("bmsd_can_record_errors_total", "counter",
               "Failed writes of the bus recording (each stops it for a minute)", ("bus",),
               source="bus", values=_bus(lambda b: b.stats.record_errors)),
    MetricSpec("bmsd_can_error_frames_by_class_total", "counter",
               "Error frames by SocketCAN error class (a frame may carry several classes)",
               ("bus", "class"), source="bus", values=_bus_error_classes),
    MetricSpec("bmsd_can_controller_state", "gauge",
               "CAN controller state from its error frames: 0 active, 1 warning, 2 passive, "
               "3 bus-off", ("bus",), source="bus",
               values=_bus(lambda b: float(b.stats.controller_state))),
    MetricSpec("bmsd_can_bus_error_level", "gauge",
               "Bus error level the fault table sees: 0 active, 1 passive, 2 bus-off or dead",
               ("bus",), source="bus", values=_bus(lambda b: float(b.error_level()))),
    MetricSpec("bmsd_can_receiver_up", "gauge", "1 while the bus is open and its receiver runs",
               ("bus",), source="bus", values=_bus(_receiver_up)),
    # daemon
    MetricSpec("bmsd_build_info", "gauge", "Versions of bmsd and Python (value 1)",
               ("version", "python"), source="daemon", values=_build_info),
    MetricSpec("bmsd_control_tick_period_seconds", "gauge", "Configured control tick period",
               source="daemon", values=lambda s: _one(s.sources.tick_s)),
    MetricSpec("bmsd_control_ticks_total", "counter", "Control ticks since start",
               values=_snap(lambda s: float(s.tick))),
    MetricSpec("bmsd_control_missed_ticks_total", "counter",
               "Tick periods skipped because the loop was late", values=_timing(
                   lambda s: float(s.timing.missed_ticks))),  # type: ignore[union-attr]
    MetricSpec("bmsd_control_overruns_total", "counter",
               "Ticks whose run time exceeded the tick period", source="hook"),
    MetricSpec("bmsd_control_tick_duration_seconds", "histogram",
               "Run time of each control tick", source="hook"),
    MetricSpec("bmsd_control_tick_lateness_seconds", "histogram",
               "How late each tick started against its schedule", source="hook"),
    MetricSpec("bmsd_control_tick_lateness_max_seconds", "gauge",
               "Largest lateness of a tick since start, against its original schedule (a "
               "stall that skipped periods counts in full)", source="hook"),
    MetricSpec("bmsd_metrics_connections_rejected_total", "counter",
               "Connections to this endpoint closed unanswered because every worker was busy "
               "and the queue was full (metrics.workers)", source="http"),
    MetricSpec("bmsd_state_age_seconds", "gauge",
               "Time since the newest tick (grows if the control loop stalls)",
               values=_state_age, when="before the first tick"),
    MetricSpec("bmsd_last_tick_timestamp_seconds", "gauge",
               "Wall-clock time of the newest tick (Unix seconds)",
               values=_snap(lambda s: s.wall_time)),
)  # fmt: skip

METRICS_BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}


class PackCollector(Collector):
    """Yields every table metric from the newest PackState, bus counters and the daemon.

    Two outputs from the same value functions: :meth:`collect` (prometheus-client's families,
    for its registry and exposition) and :meth:`render`, the same samples written straight as
    text format 0.0.4 with each label set rendered once and cached. prometheus-client's
    exposition validates and escapes every label of every sample (about 40 µs a sample here),
    which for 10,000 per-cell series takes far longer than the 50 ms a scrape may take.
    """

    def __init__(self, sources: Sources, *, per_cell: bool) -> None:
        self._sources = sources
        self._labels = Labels.of(sources.topology)
        self._specs = tuple(
            spec for spec in METRICS if spec.values is not None and (per_cell or not spec.per_cell)
        )
        self._headers = {spec.name: _header(spec) for spec in self._specs}
        self._label_text: dict[tuple[str, tuple[str, ...]], str] = {}
        self._block_templates: dict[str, list[str]] = {}

    def describe(self) -> Iterable[Metric]:
        # Names only, so a collector added later that clashes is refused at registration.
        for spec in self._specs:
            yield _family(spec)

    def _scrape(self) -> Scrape:
        return Scrape(self._sources.latest(), self._sources.clock(), self._sources, self._labels)

    def collect(self) -> Iterable[Metric]:
        scrape = self._scrape()
        for spec in self._specs:
            assert spec.values is not None
            family = _family(spec)
            for labels, value in spec.values(scrape):
                family.add_metric(labels, value)
            if family.samples:  # an absent source is no series at all, not an empty family
                yield family

    def render(self, out: list[str]) -> None:
        """Append the text exposition of every table metric (same samples as collect)."""
        scrape = self._scrape()
        cache = self._label_text
        if len(cache) > 200_000:  # label sets are finite; this only bounds a surprise
            cache.clear()
        for spec in self._specs:
            assert spec.values is not None
            name, names = spec.name, spec.labels
            samples = spec.values(scrape)
            if isinstance(samples, Block):
                if samples.values:
                    out.append(self._headers[name])
                    out.append(self._block(name, names, samples))
                continue
            lines: list[str] = []
            append = lines.append
            for labels, value in samples:
                key = (name, tuple(labels))
                prefix = cache.get(key)
                if prefix is None:
                    prefix = cache[key] = name + _label_text(names, labels)
                append(f"{prefix} {_number(value)}\n")
            if lines:
                out.append(self._headers[name])
                out.extend(lines)

    def _block(self, name: str, names: Sequence[str], block: Block) -> str:
        # One %-format of a template holding many lines: no Python call per sample, and
        # %.17g round-trips every double exactly. Chunks of BLOCK_LINES lines bound how long
        # one C call holds the GIL, so the control loop's thread gets it back between them.
        values = block.values
        if not math.isfinite(sum(values)):  # a NaN or an infinity: spelled per value
            return "".join(
                f"{name}{_label_text(names, labels)} {_number(value)}\n" for labels, value in block
            )
        templates = self._block_templates.get(name) if block.complete else None
        if templates is None:
            lines = [
                f"{name}{_label_text(names, labels)}".replace("%", "%%") + " %.17g\n"
                for labels in block.labels
            ]
            templates = [
                "".join(lines[start : start + BLOCK_LINES])
                for start in range(0, len(lines), BLOCK_LINES)
            ]
            if block.complete:
                self._block_templates[name] = templates
        return "".join(
            template % tuple(values[n * BLOCK_LINES : (n + 1) * BLOCK_LINES])
            for n, template in enumerate(templates)
        )


def _family(spec: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _header(spec: MetricSpec) -> str:
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.kind}\n"


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (
        str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        for value in values
    )
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


def _number(value: float) -> str:
    number = float(value)
    if math.isfinite(number):
        return repr(number)
    if math.isnan(number):
        return "NaN"
    return "+Inf" if number > 0 else "-Inf"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsExporter:
    """The registries, the tick hook's counters and the HTTP server of one daemon.

    ``registry`` holds everything (for prometheus-client's own exposition and the duplicate
    check of added collectors); the HTTP server writes the pack collector with its fast
    renderer and everything else (process, hook counters, added collectors) with
    prometheus-client's exposition of ``_others``.
    """

    def __init__(
        self, config: MetricsConfig, sources: Sources, *, fault_keys: Iterable[tuple[str, str]]
    ) -> None:
        self.config = config
        # No *_created series beside every counter and histogram: they double the counters'
        # series and Prometheus does not use them in the text format (a library-wide switch).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._others = CollectorRegistry()
        self._pack = PackCollector(sources, per_cell=config.per_cell)
        self.registry.register(self._pack)
        for collector in (ProcessCollector(registry=None), PlatformCollector(registry=None)):
            self._add(collector)
        # GCCollector registers itself (its registry cannot be None); add it to the full one too.
        self.registry.register(GCCollector(registry=self._others))
        self._tick_s = sources.tick_s
        self._fault_events = Counter(
            "bmsd_fault_events",
            METRICS_BY_NAME["bmsd_fault_events_total"].help,
            METRICS_BY_NAME["bmsd_fault_events_total"].labels,
            registry=None,
        )
        for fault_id, level in fault_keys:
            self._fault_events.labels(fault_id, level, "set")  # present from the start, at 0
        self._overruns = Counter(
            "bmsd_control_overruns",
            METRICS_BY_NAME["bmsd_control_overruns_total"].help,
            registry=None,
        )
        self._tick_duration = Histogram(
            "bmsd_control_tick_duration_seconds",
            METRICS_BY_NAME["bmsd_control_tick_duration_seconds"].help,
            buckets=TICK_BUCKETS_S,
            registry=None,
        )
        self._tick_lateness = Histogram(
            "bmsd_control_tick_lateness_seconds",
            METRICS_BY_NAME["bmsd_control_tick_lateness_seconds"].help,
            buckets=TICK_BUCKETS_S,
            registry=None,
        )
        # The histogram's top bucket cannot tell a 3 s stall from a 30 s one: keep the worst.
        self._tick_lateness_max = Gauge(
            "bmsd_control_tick_lateness_max_seconds",
            METRICS_BY_NAME["bmsd_control_tick_lateness_max_seconds"].help,
            registry=None,
        )
        self._tick_lateness_max_s = 0.0
        for metric in (
            self._fault_events, self._overruns, self._tick_duration, self._tick_lateness,
            self._tick_lateness_max,
        ):  # fmt: skip
            self._add(metric)
        self._server: BoundedWSGIServer | None = None
        self._add(_RejectedConnections(lambda: self._server))
        self.address: tuple[str, int] | None = None

    def _add(self, collector: Collector) -> None:
        self.registry.register(collector)  # first: refuses a name that is already served
        self._others.register(collector)

    def add_collector(self, collector: Collector) -> None:
        """Serve another publisher's metrics too (Modbus, inverter); names must not clash."""
        self._add(collector)

    def render(self) -> bytes:
        """The body of one scrape, text format 0.0.4."""
        parts: list[str] = []
        self._pack.render(parts)
        return "".join(parts).encode() + generate_latest(self._others)

    def on_tick(self, state: PackState) -> None:
        """Tick hook: count what the newest state alone cannot tell (cheap, no I/O)."""
        timing = state.timing
        if timing is not None:
            # timing.duration_s is the previous tick's run time (this one is still running).
            if state.tick > 1:
                self._tick_duration.observe(timing.duration_s)
                if timing.duration_s > self._tick_s:
                    self._overruns.inc()
            self._tick_lateness.observe(max(0.0, timing.lateness_s))
            if timing.stall_s > self._tick_lateness_max_s:
                self._tick_lateness_max_s = timing.stall_s
                self._tick_lateness_max.set(timing.stall_s)
        for event in state.fault_events:
            self._fault_events.labels(event.fault_id, event.level.label, event.kind).inc()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: metrics are at /metrics\n"]
        try:
            body = self.render()
        except Exception:  # a scrape must fail loudly (up == 0), never take the daemon down
            log.exception("metrics scrape failed")
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"metrics scrape failed; see the bmsd log\n"]
        headers = [("Content-Type", CONTENT_TYPE)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            # Level 1: a tenth of the size at a few ms; the default level costs far more time.
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []

    def start(self) -> tuple[str, int]:
        """Listen on the configured address; a taken port is a clear error naming the key.

        A bounded pool of ``metrics.workers`` threads serves the scrapes: a scrape never runs
        on the event loop, and no client can make the daemon start threads.
        """
        host, port = self.config.host, self.config.port
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server = BoundedWSGIServer(
                (host, port),
                family,
                workers=self.config.workers,
                request_timeout_s=self.config.request_timeout_s,
                name="metrics",
            )
        except OSError as exc:
            raise BmsdError(
                f"cannot serve metrics on {host}:{port} (metrics.host, metrics.port): {exc}"
            ) from exc
        server.set_app(self._app)
        thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        self._server = server
        self.address = (host, int(server.server_port))
        log.info("metrics on http://%s/metrics", _host_port(host, self.address[1]))
        return self.address

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _RejectedConnections(Collector):
    """``bmsd_metrics_connections_rejected_total``, read from the server at scrape time."""

    def __init__(self, server: Callable[[], BoundedWSGIServer | None]) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server()
        spec = METRICS_BY_NAME["bmsd_metrics_connections_rejected_total"]
        yield CounterMetricFamily(
            spec.name.removesuffix("_total"),
            spec.help,
            value=float(server.rejected if server is not None else 0),
        )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the reference -------------------------------------------------------------------------

# Families the publishers' collectors serve (listed in the reference, checked against a scrape).
PUBLISHER_FAMILIES: tuple[FamilyDoc, ...] = (*modbus_metrics.FAMILIES, *inverter_metrics.FAMILIES)
# Every family a collector other than the pack's serves (the C heap's too).
COLLECTOR_FAMILIES: tuple[FamilyDoc, ...] = (*PUBLISHER_FAMILIES, *heap_metrics.FAMILIES)

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

_SOURCE_TEXT = {
    "state": "newest state",
    "bus": "bus counters",
    "daemon": "daemon",
    "hook": "tick hook",
    "http": "HTTP server",
}


def _family_rows(families: Sequence[FamilyDoc]) -> list[str]:
    rows = []
    for family in families:
        labels = ", ".join(f"`{label}`" for label in family.labels)
        rows.append(f"| `{family.name}` | {family.kind} | {labels} | {family.help} |")
    return rows


def render_reference() -> str:
    """docs/metrics.md, generated from :data:`METRICS`."""
    lines = [
        "# Prometheus metrics",
        "",
        "<!-- Generated by `python -m bmsd.publish.metrics` from the metric table in",
        "bmsd/publish/metrics.py; tests/unit/publish/test_metrics.py fails when it is stale. -->",
        "",
        "bmsd serves these metrics on `http://HOST:PORT/metrics` when `[metrics] enabled = true`",
        "(see `docs/configuration.md`). Values are taken from the newest control-loop state at",
        "scrape time; counters marked *tick hook* are counted as ticks run. Units are base units:",
        "charge in coulombs (Ah x 3600), energy in joules (Wh x 3600), fractions as ratios 0..1.",
        "Labels `string`, `module`, `cell` and `sensor` are 0-based; `module` counts within its",
        "string from the negative end. Series marked *per cell* are left out when",
        "`metrics.per_cell = false`. A series is absent (not zero) while its source is missing,",
        "as listed in the last column, so a dashboard shows a gap rather than a false value.",
        "",
        "| metric | type | labels | source | description | absent when |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in METRICS:
        source = _SOURCE_TEXT[spec.source] + (", per cell" if spec.per_cell else "")
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        lines.append(
            f"| `{spec.name}` | {spec.kind} | {labels} | {source} | {spec.help} | {spec.when} |"
        )
    per_cell = [spec.name for spec in METRICS if spec.per_cell]
    always = [spec.name for spec in METRICS if spec.per_cell and "balancing" not in spec.when]
    lines += [
        "",
        "## Size",
        "",
        f"Per cell (group) there are {len(always)} series ({len(per_cell)} once balancing "
        "reports): "
        + ", ".join(f"`{name}`" for name in per_cell)
        + ". A 1,536-cell pack serves about 10,000 series (770 KiB, 95 KiB with gzip, which "
        "Prometheus asks for); `bench/metrics_scrape.py` measures scrape time and size. With "
        "`per_cell = false` the extremes, spreads and per-sensor and per-module series remain.",
    ]
    lines += [
        "",
        "## Modbus server and inverter links",
        "",
        "Served by the publishers' own collectors, from their counters at scrape time: the",
        "Modbus families while `[modbus] enabled = true`, the inverter families for each",
        "configured inverter link (keep-alive series only for profiles with a keep-alive).",
        "",
        "| metric | type | labels | description |",
        "| --- | --- | --- | --- |",
    ]
    lines += _family_rows(PUBLISHER_FAMILIES)
    lines += [
        "",
        "## The daemon's C heap",
        "",
        "Measured by glibc (`mallinfo2`, all arenas) just before each trim of the heap",
        "(`malloc_trim`, every `service.heap_trim_interval_s`), so from the first trim on, and",
        "only on glibc. `bmsd_heap_in_use_bytes` that keeps growing is a leak;",
        "`bmsd_heap_free_bytes` is fragmentation, whose whole pages each trim gives back",
        "(docs/reliability.md, section 5). The systemd unit and scripts/run-sim.sh set",
        "`PYTHONMALLOC=malloc`, so there these figures hold Python's objects too, and nearly",
        "all the daemon allocates; without it (`bmsd run` typed in a shell) Python keeps its",
        "small objects in arenas of its own, which these figures leave out.",
        "",
        "| metric | type | labels | description |",
        "| --- | --- | --- | --- |",
    ]
    lines += _family_rows(heap_metrics.FAMILIES)
    lines += [
        "",
        "## Scraping",
        "",
        'Name the scrape job `bmsd`: the alert rules select `job="bmsd"`.',
        "",
        "```yaml",
        "scrape_configs:",
        "  - job_name: bmsd",
        "    scrape_interval: 10s",
        "    static_configs:",
        "      - targets: ['ess1.example:9108']",
        "rule_files:",
        "  - bmsd-rules.yml   # docs/prometheus/bmsd-rules.yml",
        "```",
        "",
        "Also served: prometheus-client's process metrics (`process_cpu_seconds_total`,",
        "`process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds`, ...),",
        "`python_info` and the Python garbage collector's `python_gc_*` counters.",
        "",
        "## Dashboard and alerts",
        "",
        "`docs/grafana/bmsd.json` (generated by `scripts/grafana_dashboard.py`) is the Grafana",
        "dashboard: import it and pick the Prometheus data source; the `instance` and `string`",
        "variables select the battery and its strings. `docs/prometheus/bmsd-rules.yml` holds",
        "the alert rules, with unit tests in `docs/prometheus/bmsd-rules.test.yml`",
        "(`promtool test rules`). Every dashboard query is run against a real Prometheus",
        "scraping a running daemon on the simulated pack (tests/integration/",
        "test_grafana_dashboard.py), which also loads the rules; a real scrape is checked with",
        "`promtool check metrics` and against the daemon's state (test_metrics_scrape.py).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    DOC.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
