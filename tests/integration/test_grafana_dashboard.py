"""Every query of the Grafana dashboard returns data from a real Prometheus scraping bmsd.

A real daemon (``bmsd run`` on the simulated pack) serves metrics on an ephemeral port; the
Debian ``prometheus`` server, on a temporary directory and loopback only, scrapes it every
second and loads the shipped alert rules. A pymodbus client polls the daemon's Modbus server
(one request in each poll reads an unmapped register, so exception series exist too). Each
panel's PromQL, with Grafana's variables filled in, must return at least one series through the
HTTP API; each variable query must find values.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient
from tests_support import ROOT

DASHBOARD = ROOT / "docs" / "grafana" / "bmsd.json"
GENERATOR = ROOT / "scripts" / "grafana_dashboard.py"
RULES = ROOT / "docs" / "prometheus" / "bmsd-rules.yml"
PROMETHEUS = shutil.which("prometheus")
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval
SETTLE_S = 15.0  # scrapes collected before the queries run, so every rate window has data
UNMAPPED_REGISTER = 60000  # not in the native map or SunSpec: ILLEGAL DATA ADDRESS


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _panels() -> list[dict[str, Any]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


def _poll_modbus(port: int, stop: threading.Event) -> None:
    """Reads like an EMS does until stopped; one illegal read per poll feeds the error series."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        while not stop.is_set():
            if client.connect():
                client.read_input_registers(0, count=16, device_id=1)
                client.read_holding_registers(0, count=4, device_id=1)
                answer = client.read_input_registers(UNMAPPED_REGISTER, count=1, device_id=1)
                assert answer.isError(), "an unmapped register was served"
            stop.wait(0.5)
    finally:
        client.close()


def test_dashboard_json_is_generated_and_well_formed() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == _load_generator().render(), (
        "docs/grafana/bmsd.json is stale: run python scripts/grafana_dashboard.py"
    )
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    names = {variable["name"] for variable in board["templating"]["list"]}
    assert names == {"datasource", "instance", "string"}
    for panel in _panels():
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert '$instance"' in target["expr"], f"{panel['title']}: not filtered by instance"
    titles = {row["title"] for row in board["panels"] if row["type"] == "row"}
    assert {"Pack overview", "Limits and why", "Cells", "SOC and SOH", "Faults",
            "Communication", "Balancing", "Publishers", "Daemon health"} <= titles  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(Prometheus base URL, the bmsd target's instance label) once data has settled."""
    if PROMETHEUS is None:
        pytest.skip("prometheus missing: run scripts/setup.sh")
    tmp = tmp_path_factory.mktemp("prom")
    log_path = tmp / "bmsd.log"
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen(
            [
                sys.executable, "-m", "bmsd.cli", "run", "--config", str(ROOT / "etc" / "sim.toml"),
                "--set", f"state.directory='{tmp / 'state'}'",
                "--set", f"can.slaves.channel='grafana-{tmp.name}'",
                "--set", "metrics.port=0", "--set", "modbus.port=0",
            ],
            cwd=ROOT, stderr=log_file, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    server: subprocess.Popen[bytes] | None = None
    stop_polling = threading.Event()
    poller: threading.Thread | None = None
    try:
        target = ""
        modbus_port = 0
        for _ in range(300):
            log_text = log_path.read_text()
            found = re.search(r"metrics on http://([^/\s]+)/metrics", log_text)
            modbus = re.search(r"modbus: serving unit \d+ on [\d.]+:(\d+)", log_text)
            if found and modbus:
                target, modbus_port = found.group(1), int(modbus.group(1))
                break
            assert daemon.poll() is None, log_text
            time.sleep(0.1)
        assert target, "the daemon never logged its metrics address"
        assert modbus_port, "the daemon never logged its Modbus address"
        poller = threading.Thread(target=_poll_modbus, args=(modbus_port, stop_polling))
        poller.start()
        shutil.copy(RULES, tmp / RULES.name)
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{RULES.name}]\n"
            "scrape_configs:\n"
            f"  - job_name: bmsd\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = _free_port()
        server = subprocess.Popen(
            [
                PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("w"),
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        first_up = None
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                result = _get(f"{base}/api/v1/query?query=up%7Bjob%3D%22bmsd%22%7D%3D%3D1")
                if result["data"]["result"]:
                    first_up = first_up or time.monotonic()
            except OSError:
                pass
            if first_up is not None and time.monotonic() - first_up > SETTLE_S:
                break
            time.sleep(0.5)
        assert first_up is not None, "Prometheus never scraped bmsd successfully"
        assert poller.is_alive(), "the Modbus client stopped"
        yield base, target
    finally:
        stop_polling.set()
        if poller is not None:
            poller.join(timeout=10)
        for process in (server, daemon):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _fill(expr: str, instance: str, string: str) -> str:
    return (
        expr.replace("$instance", instance)
        .replace("$string", string)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", "1m")
    )


def _query(base: str, expr: str) -> list[Any]:
    answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@pytest.mark.parametrize("string", [".*", "0"])
def test_every_panel_query_returns_data(prometheus: tuple[str, str], string: str) -> None:
    base, instance = prometheus
    empty = []
    for panel in _panels():
        for target in panel["targets"]:
            expr = _fill(target["expr"], instance, string)
            if not _query(base, expr):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_variables_find_the_daemon_and_its_strings(prometheus: tuple[str, str]) -> None:
    base, instance = prometheus
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert found, variable["query"]
        selector, label = _fill(found.group(1), instance, ".*"), found.group(2)
        values = _get(
            f"{base}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": selector})
        )["data"]
        assert values, variable["name"]
        if label == "instance":
            assert instance in values
        if label == "string":
            assert values == ["0"]


def test_prometheus_evaluates_the_shipped_rules(prometheus: tuple[str, str]) -> None:
    base, _ = prometheus
    groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 10
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # A healthy simulated pack raises none of the critical alerts.
    firing = _query(base, 'ALERTS{alertstate="firing", severity="critical"}')
    assert not firing, firing
