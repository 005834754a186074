"""The metric table, the collector's values against a real PackState, and the tick hook.

States come from the closed-loop harness (the real pipeline on the simulated pack), so the
values checked here are the ones a daemon would serve.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bmsd.config import Config, MetricsConfig, load_config
from bmsd.errors import BmsdError
from bmsd.model.balancing import BalancingState
from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultEvent, FaultLevel
from bmsd.model.limits import LIMIT_KINDS
from bmsd.model.state import PackState, TickTiming
from bmsd.model.topology import Topology
from bmsd.publish import metrics as metrics_module
from bmsd.publish.metrics import (
    AH_TO_C,
    COLLECTOR_FAMILIES,
    DOC,
    METRICS,
    MetricsExporter,
    PackCollector,
    Sources,
    render_reference,
)
from bmsd.sim.closed_loop import ClosedLoop

ROOT = Path(__file__).resolve().parents[3]

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "etc" / "sim.toml", ("sim.faults=[]",))


@pytest.fixture(scope="module")
def state(config: Config) -> PackState:
    return ClosedLoop(config).run(8.0)


def sources(config: Config, state: PackState | None, now_s: float | None = None) -> Sources:
    return Sources(
        topology=Topology.from_config(config.pack),
        latest=lambda: state,
        buses={},
        tick_s=config.control.tick_s,
        chemistry=config.pack.chemistry,
        clock=(lambda: now_s) if now_s is not None else (lambda: 0.0),
    )


def collect(collector: PackCollector) -> Samples:
    found: Samples = {}
    for family in collector.collect():
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def test_table_names_follow_prometheus_conventions() -> None:
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names)), "duplicate metric names"
    for spec in METRICS:
        assert re.fullmatch(r"bmsd_[a-z0-9_]+", spec.name), spec.name
        assert spec.help and (spec.help[0].isupper() or spec.help[0].isdigit()), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert not re.search(
            r"_(milli|kilo|percent|ah|wh|mv|ma|celsius_total|volt|amp)(_|$)", spec.name
        ), spec.name
        assert (spec.values is None) == (spec.source in ("hook", "http")), spec.name
        if spec.per_cell:
            assert spec.labels == ("string", "module", "cell"), spec.name


def test_reference_doc_is_generated_from_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/metrics.md is stale: run python -m bmsd.publish.metrics"
    )
    for spec in METRICS:
        assert f"| `{spec.name}` |" in render_reference()
    for family in COLLECTOR_FAMILIES:
        assert f"| `{family.name}` | {family.kind} |" in render_reference()
    names = [spec.name for spec in METRICS] + [family.name for family in COLLECTOR_FAMILIES]
    assert len(names) == len(set(names)), "a publisher family clashes with the table"


def test_values_are_those_of_the_newest_state(config: Config, state: PackState) -> None:
    snap = state.snapshot
    estimates = state.estimates
    assert estimates is not None and snap.pack_voltage_v is not None
    assert snap.pack_current_a is not None and snap.cell_voltage is not None
    got = collect(PackCollector(sources(config, state, state.time_s + 0.25), per_cell=True))
    assert got["bmsd_pack_voltage_volts"][()] == snap.pack_voltage_v
    assert got["bmsd_pack_current_amperes"][()] == snap.pack_current_a
    assert got["bmsd_pack_power_watts"][()] == pytest.approx(
        snap.pack_voltage_v * snap.pack_current_a
    )
    assert got["bmsd_soc_ratio"][()] == estimates.pack_soc
    assert got["bmsd_soc_uncertainty_ratio"][()] == estimates.pack_soc_std
    assert got["bmsd_capacity_coulombs"][()] == pytest.approx(estimates.pack_capacity_ah * 3600)
    assert got["bmsd_soh_capacity_ratio"][()] == estimates.soh_capacity
    assert got["bmsd_cell_voltage_spread_volts"][()] == snap.cell_voltage.spread
    assert got["bmsd_state_age_seconds"][()] == pytest.approx(0.25)
    assert got["bmsd_control_ticks_total"][()] == state.tick
    # Every limit and every contributor, and which one limits.
    limits = state.limits
    assert got["bmsd_charge_current_limit_amperes"][()] == limits.charge_current_a
    assert got["bmsd_charge_voltage_limit_volts"][()] == limits.charge_voltage_v
    for kind in LIMIT_KINDS:
        family = "volts" if kind in ("cvl", "dvl") else "amperes"
        for contributor in limits.contributors(kind):
            key = (("contributor", contributor.name), ("limit", kind))
            assert got[f"bmsd_limit_contributor_{family}"][key] == contributor.value
            limiting = contributor is limits.limiting(kind)
            assert got["bmsd_limit_limiting"][key] == float(limiting)
    assert sum(got["bmsd_limit_limiting"].values()) == len(LIMIT_KINDS)
    # Mode as one 1 among all modes; contactors; faults.
    assert got["bmsd_mode"][(("mode", state.mode.value),)] == 1.0
    assert sum(got["bmsd_mode"].values()) == 1.0 and len(got["bmsd_mode"]) == len(BmsMode)
    assert len(got["bmsd_fault_active"]) == len(state.faults.levels)
    # Per cell, labelled string/module/cell in module-major order.
    topology = Topology.from_config(config.pack)
    cells = got["bmsd_cell_voltage_volts"]
    assert len(cells) == topology.cell_count
    for flat in (0, 17, topology.cell_count - 1):
        where = topology.cell_location(flat)
        key = (("cell", str(where.index)), ("module", str(where.module)),
               ("string", str(where.string)))  # fmt: skip
        assert cells[key] == snap.cell_voltage_v[flat]
        assert got["bmsd_cell_soc_ratio"][key] == estimates.soc[flat]
        assert got["bmsd_cell_capacity_coulombs"][key] == pytest.approx(
            estimates.capacity_ah[flat] * AH_TO_C
        )
    assert len(got["bmsd_temperature_celsius"]) == topology.temp_count
    assert len(got["bmsd_module_data_age_seconds"]) == topology.module_count
    # Balancing (on in etc/sim.toml): what the state's plan says, cell by cell.
    balancing = state.balancing
    assert balancing is not None
    assert got["bmsd_balancing_active"][()] == float(balancing.active)
    assert sum(got["bmsd_cell_bleeding"].values()) == float(balancing.bleeding.sum())
    assert sum(got["bmsd_cell_bled_coulombs_total"].values()) == pytest.approx(
        float(balancing.bled_ah.sum()) * AH_TO_C
    )


def test_invalid_cells_and_missing_data_are_absent_not_zero(
    config: Config, state: PackState
) -> None:
    snap = state.snapshot
    valid = snap.cell_voltage_valid.copy()
    valid[3] = False
    broken = dataclasses.replace(
        state,
        snapshot=dataclasses.replace(
            snap, cell_voltage_valid=valid, pack_current_a=None, cell_voltage=None
        ),
        estimates=None,
    )
    got = collect(PackCollector(sources(config, broken), per_cell=True))
    assert len(got["bmsd_cell_voltage_volts"]) == snap.cell_voltage_v.size - 1
    assert (("cell", "3"), ("module", "0"), ("string", "0")) not in got["bmsd_cell_voltage_volts"]
    for name in ("bmsd_pack_current_amperes", "bmsd_pack_power_watts", "bmsd_soc_ratio",
                 "bmsd_cell_voltage_min_volts", "bmsd_cell_soc_ratio"):  # fmt: skip
        assert name not in got, name
    assert got["bmsd_pack_voltage_volts"][()] == snap.pack_voltage_v


def test_no_state_yet_serves_only_daemon_metrics(config: Config) -> None:
    got = collect(PackCollector(sources(config, None), per_cell=True))
    assert set(got) == {"bmsd_pack_info", "bmsd_build_info", "bmsd_control_tick_period_seconds"}


def test_per_cell_off_leaves_out_every_per_cell_series(config: Config, state: PackState) -> None:
    on = collect(PackCollector(sources(config, state), per_cell=True))
    off = collect(PackCollector(sources(config, state), per_cell=False))
    per_cell = {spec.name for spec in METRICS if spec.per_cell}
    assert per_cell & set(on)
    assert not per_cell & set(off)
    assert set(on) - set(off) <= per_cell
    assert off["bmsd_cell_voltage_max_volts"] == on["bmsd_cell_voltage_max_volts"]


def test_balancing_state_exports_bleeding_and_bled_charge(config: Config, state: PackState) -> None:
    n = state.snapshot.cell_voltage_v.size
    bleeding = np.zeros(n, dtype=np.bool_)
    bleeding[[2, 40]] = True
    bled = np.linspace(0.0, 0.5, n)
    balanced = dataclasses.replace(
        state,
        balancing=BalancingState("voltage", True, True, "top cells above target", bleeding, bled),
    )
    got = collect(PackCollector(sources(config, balanced), per_cell=True))
    assert got["bmsd_balancing_cells_bleeding"][()] == 2.0
    assert got["bmsd_balancing_active"][()] == 1.0
    assert sum(got["bmsd_cell_bleeding"].values()) == 2.0
    key = (("cell", "8"), ("module", "2"), ("string", "0"))  # flat 40 = module 2, cell 8
    assert got["bmsd_cell_bleeding"][key] == 1.0
    assert got["bmsd_cell_bled_coulombs_total"][key] == pytest.approx(bled[40] * 3600)


def _scrape_text(exporter: MetricsExporter) -> str:
    return generate_latest(exporter.registry).decode()


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise KeyError(name)


def test_tick_hook_counts_fault_events_overruns_and_durations(
    config: Config, state: PackState
) -> None:
    exporter = MetricsExporter(
        MetricsConfig(), sources(config, state), fault_keys=[("cell_voltage_high", "fatal")]
    )
    text = _scrape_text(exporter)
    assert _value(text, "bmsd_fault_events_total", fault="cell_voltage_high", level="fatal",
                  event="set") == 0.0  # fmt: skip
    tick_s = config.control.tick_s
    event = FaultEvent(1.0, "set", "cell_voltage_high", FaultLevel.FATAL, 3.7, 3.65, "high")
    for tick, duration in ((2, 0.004), (3, tick_s * 1.5), (4, tick_s)):
        timing = TickTiming(10.0, 10.02, duration, 0)
        exporter.on_tick(
            dataclasses.replace(state, tick=tick, timing=timing, fault_events=(event,))
        )
    text = _scrape_text(exporter)
    assert _value(text, "bmsd_fault_events_total", fault="cell_voltage_high", level="fatal",
                  event="set") == 3.0  # fmt: skip
    assert _value(text, "bmsd_control_overruns_total") == 1.0  # only the tick above the period
    assert _value(text, "bmsd_control_tick_duration_seconds_count") == 3.0
    assert _value(text, "bmsd_control_tick_duration_seconds_bucket", le="0.005") == 1.0
    assert _value(text, "bmsd_control_tick_lateness_seconds_bucket", le="0.02") == 3.0


def test_tick_hook_keeps_the_largest_lateness_including_skipped_periods(
    config: Config, state: PackState
) -> None:
    exporter = MetricsExporter(MetricsConfig(), sources(config, state), fault_keys=[])
    assert _value(_scrape_text(exporter), "bmsd_control_tick_lateness_max_seconds") == 0.0
    tick_s = config.control.tick_s
    # (started - scheduled after skipping, missed periods, lateness against the original
    # schedule): a 0.35 s stall at 0.1 s ticks skips 3 periods and starts 0.05 s late.
    for tick, late_s, missed, stall_s in (
        (2, 0.004, 0, 0.004),
        (3, 0.05, 3, 3 * tick_s + 0.05),
        (4, 0.02, 0, 0.02),  # smaller: the maximum stays
    ):
        timing = TickTiming(10.0, 10.0 + late_s, 0.001, missed, missed, stall_s)
        exporter.on_tick(dataclasses.replace(state, tick=tick, timing=timing))
    text = _scrape_text(exporter)
    assert _value(text, "bmsd_control_tick_lateness_max_seconds") == pytest.approx(
        3 * tick_s + 0.05
    )
    assert _value(text, "bmsd_control_tick_lateness_seconds_count") == 3.0


def test_exporter_serves_http_and_reports_a_taken_port(config: Config, state: PackState) -> None:
    exporter = MetricsExporter(MetricsConfig(port=0), sources(config, state), fault_keys=[])
    host, port = exporter.start()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert _value(body, "bmsd_control_ticks_total") == state.tick
        assert "process_cpu_seconds_total" in body
        taken = MetricsExporter(MetricsConfig(port=port), sources(config, state), fault_keys=[])
        with pytest.raises(BmsdError, match=r"metrics\.port"):
            taken.start()
    finally:
        exporter.stop()
    with socket.socket() as probe:  # stopped: the port is free again (as a restart needs)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def test_a_connection_flood_is_counted_and_scrapes_resume(config: Config, state: PackState) -> None:
    """Silent connections hold the one worker and fill the queue: the rest are closed and
    counted, and once the deadline frees the worker the endpoint answers (and says so)."""
    exporter = MetricsExporter(
        MetricsConfig(port=0, workers=1, request_timeout_s=0.5),
        sources(config, state),
        fault_keys=[],
    )
    host, port = exporter.start()
    try:
        flood = [socket.create_connection((host, port)) for _ in range(30)]
        time.sleep(1.0)
        for sock in flood:
            sock.close()
        deadline = time.monotonic() + 10.0
        while True:  # the queued silent connections each take the worker for 0.5 s
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
                    body = reply.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the endpoint never answered again"
                time.sleep(0.2)
        # One held by the worker, 8 queued: at most 21 closed unanswered.
        assert 15 <= _value(body, "bmsd_metrics_connections_rejected_total") <= 21
    finally:
        exporter.stop()


def test_an_added_collector_is_served_and_a_clash_refused(config: Config, state: PackState) -> None:
    from prometheus_client.core import CounterMetricFamily

    class Extra:
        def __init__(self, name: str) -> None:
            self.name = name

        def collect(self):  # type: ignore[no-untyped-def]
            family = CounterMetricFamily(self.name, "requests", labels=["function"])
            family.add_metric(["read_holding_registers"], 7)
            yield family

        def describe(self):  # type: ignore[no-untyped-def]
            return self.collect()

    exporter = MetricsExporter(MetricsConfig(), sources(config, state), fault_keys=[])
    exporter.add_collector(Extra("bmsd_modbus_requests_total"))
    text = _scrape_text(exporter)
    assert _value(text, "bmsd_modbus_requests_total", function="read_holding_registers") == 7
    with pytest.raises(ValueError, match="Duplicated"):
        exporter.add_collector(Extra("bmsd_pack_voltage_volts"))


def _parsed(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("block_lines", [256, 7])
def test_fast_renderer_serves_exactly_what_prometheus_client_would(
    config: Config, state: PackState, block_lines: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "BLOCK_LINES", block_lines)  # chunk edges inside
    limits = state.limits
    valid = state.snapshot.temp_valid.copy()
    valid[5] = False  # an incomplete block: that sensor is left out
    odd = dataclasses.replace(limits.ccl_contributors[0], name='odd "name" \\ with\nnewline')
    weird = dataclasses.replace(
        state,
        limits=dataclasses.replace(limits, ccl_contributors=(odd, *limits.ccl_contributors[1:])),
        snapshot=dataclasses.replace(state.snapshot, temp_valid=valid),
        balancing=BalancingState(
            "voltage", True, False, "", np.zeros(64, dtype=np.bool_), np.full(64, np.nan)
        ),
    )
    for per_cell in (True, False):
        exporter = MetricsExporter(
            MetricsConfig(per_cell=per_cell), sources(config, weird, 5.0), fault_keys=[]
        )
        fast = exporter.render().decode()
        reference = generate_latest(exporter.registry).decode()
        pack = {spec.name for spec in METRICS if spec.values is not None}
        fast_pack = {k: v for k, v in _parsed(fast).items() if k[0] in pack}
        reference_pack = {k: v for k, v in _parsed(reference).items() if k[0] in pack}
        assert fast_pack.keys() == reference_pack.keys()
        for key, value in reference_pack.items():
            assert fast_pack[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
        assert ("bmsd_limit_contributor_amperes",
                frozenset({("limit", "ccl"), ("contributor", odd.name)})) in fast_pack  # fmt: skip
        assert "process_cpu_seconds_total" in fast and "bmsd_control_overruns_total" in fast
        temps = [k for k in fast_pack if k[0] == "bmsd_temperature_celsius"]
        assert len(temps) == valid.size - 1


def test_a_failing_scrape_answers_500_and_the_next_one_works(
    config: Config, state: PackState
) -> None:
    broken = {"now": True}

    def latest() -> PackState:
        if broken["now"]:
            raise RuntimeError("boom")
        return state

    flaky = dataclasses.replace(sources(config, state), latest=latest)
    exporter = MetricsExporter(MetricsConfig(port=0), flaky, fault_keys=[])
    host, port = exporter.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5)
        assert failed.value.code == 500
        broken["now"] = False
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            assert _value(response.read().decode(), "bmsd_control_ticks_total") == state.tick
    finally:
        exporter.stop()
