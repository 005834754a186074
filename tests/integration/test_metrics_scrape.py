"""A real scrape of a running daemon on the simulated pack: lint-clean, values of the PackState.

The daemon runs in this process (the real Daemon with its TaskGroup, buses and simulator), so
the test can keep every PackState it publishes and compare a scrape, sample by sample, with the
state of the tick the scrape reports (``bmsd_control_ticks_total``).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests_support import ROOT

from bmsd.app import Daemon
from bmsd.config import load_config
from bmsd.model.limits import LIMIT_KINDS
from bmsd.model.state import PackState
from bmsd.publish.metrics import AH_TO_C, COLLECTOR_FAMILIES, METRICS

PROMTOOL = shutil.which("promtool")


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def _samples(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


async def _scrape_running_daemon(tmp_path: Path) -> tuple[str, dict[int, PackState], Daemon]:
    config = load_config(
        ROOT / "etc" / "sim.toml",
        (
            f"state.directory='{tmp_path / 'state'}'",
            f"can.slaves.channel='metrics-{tmp_path.name}'",
            "metrics.port=0",
            "control.summary_log_interval_s=0",
        ),
    )
    daemon = Daemon(config)
    states: dict[int, PackState] = {}
    daemon.loop.on_tick.append(lambda state: states.__setitem__(state.tick, state))
    running = asyncio.create_task(daemon.run())
    try:
        # Until the simulated pack is up: contactors closed and an SOC estimate.
        for _ in range(300):
            await asyncio.sleep(0.1)
            latest = daemon.hub.latest
            heap_measured = daemon.heap_keeper is None or daemon.heap_keeper.figures.usage
            pack_up = latest is not None and latest.mode.value == "closed" and latest.estimates
            if pack_up and heap_measured:  # and the C heap trimmed once (bmsd_heap_*)
                break
        assert daemon.metrics is not None and daemon.metrics.address is not None
        host, port = daemon.metrics.address
        text = await asyncio.to_thread(_fetch, f"http://{host}:{port}/metrics")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(running, 10)
    return text, states, daemon


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[int, PackState]]:
    text, states, _ = asyncio.run(_scrape_running_daemon(tmp_path_factory.mktemp("scrape")))
    return text, states


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: run scripts/setup.sh")
def test_promtool_finds_nothing_to_complain_about(scrape: tuple[str, dict[int, PackState]]) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=scrape[0], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_every_table_metric_is_served_and_nothing_else(
    scrape: tuple[str, dict[int, PackState]],
) -> None:
    text, states = scrape
    families = {family.name for family in text_string_to_metric_families(text)}
    served = {name for name in families if name.startswith("bmsd_")}
    balancing = next(iter(states.values())).balancing is not None
    expected = set()
    for spec in METRICS:
        name = spec.name.removesuffix("_total")  # the parser names families without _total
        if "balancing" in spec.when and not balancing:
            assert name not in served, spec.name
            continue
        expected.add(name)
    # Publishers' own collectors (Modbus, inverter: etc/sim.toml has both) and the C heap's
    # add theirs, each listed in docs/metrics.md.
    expected |= {family.name.removesuffix("_total") for family in COLLECTOR_FAMILIES}
    assert served == expected
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= families


def test_scraped_values_are_those_of_the_tick_it_reports(
    scrape: tuple[str, dict[int, PackState]],
) -> None:
    text, states = scrape
    got = _samples(text)
    tick = int(got["bmsd_control_ticks_total"][frozenset()])
    state = states[tick]
    snap, estimates, limits = state.snapshot, state.estimates, state.limits
    assert estimates is not None and snap.pack_voltage_v is not None
    assert snap.pack_current_a is not None and snap.cell_voltage is not None

    def one(name: str, **labels: str) -> float:
        return got[name][frozenset(labels.items())]

    assert one("bmsd_pack_voltage_volts") == snap.pack_voltage_v
    assert one("bmsd_pack_current_amperes") == snap.pack_current_a
    assert one("bmsd_soc_ratio") == estimates.pack_soc
    assert one("bmsd_soc_uncertainty_ratio") == estimates.pack_soc_std
    assert one("bmsd_capacity_coulombs") == pytest.approx(estimates.pack_capacity_ah * AH_TO_C)
    assert one("bmsd_cell_voltage_max_volts") == snap.cell_voltage.max_value
    assert one("bmsd_mode", mode="closed") == 1.0
    for name, kind in (
        ("bmsd_charge_voltage_limit_volts", "cvl"),
        ("bmsd_charge_current_limit_amperes", "ccl"),
        ("bmsd_discharge_current_limit_amperes", "dcl"),
        ("bmsd_discharge_voltage_limit_volts", "dvl"),
    ):
        assert one(name) == limits.value(kind)  # type: ignore[arg-type]
    for kind in LIMIT_KINDS:
        family = "volts" if kind in ("cvl", "dvl") else "amperes"
        for contributor in limits.contributors(kind):
            assert (
                one(f"bmsd_limit_contributor_{family}", limit=kind, contributor=contributor.name)
                == contributor.value
            )
        top = limits.limiting(kind)
        assert one("bmsd_limit_limiting", limit=kind, contributor=top.name) == 1.0
    for level in state.faults.levels:
        labels = {"fault": level.fault_id, "level": level.level.label}
        assert one("bmsd_fault_active", **labels) == float(level.active)
        assert one("bmsd_fault_latched", **labels) == float(level.latched)
        assert one("bmsd_fault_events_total", event="set", **labels) >= 0
    cells = got["bmsd_cell_voltage_volts"]
    assert len(cells) == snap.cell_voltage_v.size == 64
    for flat, voltage in enumerate(snap.cell_voltage_v.tolist()):
        module, index = divmod(flat, 16)
        labels = {"string": "0", "module": str(module), "cell": str(index)}
        assert cells[frozenset(labels.items())] == voltage
        assert one("bmsd_cell_soc_ratio", **labels) == estimates.soc[flat]
    # CAN counters are live: frames arrived, by message, none undecodable.
    assert one("bmsd_can_frames_received_total", bus="slaves") > 100
    assert one("bmsd_can_decode_errors_total", bus="slaves") == 0
    by_message = got["bmsd_can_message_frames_total"]
    assert sum(by_message.values()) <= one("bmsd_can_frames_received_total", bus="slaves")
    assert len(by_message) >= 3
    ages = got["bmsd_module_data_age_seconds"]
    assert len(ages) == 4 and all(0 <= age < 1.0 for age in ages.values())
    # The tick histogram has counted the ticks so far.
    assert one("bmsd_control_tick_duration_seconds_count") >= tick - 2
    assert not math.isnan(one("bmsd_state_age_seconds"))


def test_a_taken_metrics_port_stops_the_daemon_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable, "-m", "bmsd.cli", "run", "--config", str(ROOT / "etc" / "sim.toml"),
                "--set", f"state.directory='{tmp_path / 'state'}'",
                "--set", f"can.slaves.channel='taken-{tmp_path.name}'",
                "--set", f"metrics.port={port}",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port} (metrics.host, metrics.port)" in (
        result.stderr
    )
