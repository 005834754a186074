"""The Modbus collector exposes the server's counters under the agreed names."""

from __future__ import annotations

import subprocess

from prometheus_client import CollectorRegistry, generate_latest
from pymodbus.constants import ExcCodes

from bmsd.model.topology import Topology
from bmsd.publish.modbus.config import ModbusConfig
from bmsd.publish.modbus.metrics import FAMILIES, ModbusCollector
from bmsd.publish.modbus.registers import PackInfo
from bmsd.publish.modbus.server import ModbusServer


def _server() -> ModbusServer:
    async def submit(command: object) -> object:
        raise AssertionError

    topology = Topology(1, 2, 16, 4, 1, (1, 2))
    return ModbusServer(
        ModbusConfig(enabled=True, port=0),
        lambda: None,
        submit,  # type: ignore[arg-type]
        PackInfo(topology, 280.0, {}),
    )


def test_counters_are_exposed() -> None:
    server = _server()
    server.stats.requests[4] += 7
    server.stats.requests[3] += 2
    server.stats.errors[(4, ExcCodes.ILLEGAL_ADDRESS)] += 3
    server.stats.errors[(3, ExcCodes.DEVICE_FAILURE)] += 1
    server.stats.writes_refused += 2
    registry = CollectorRegistry()
    registry.register(ModbusCollector(server))
    get = registry.get_sample_value
    assert get("bmsd_modbus_requests_total", {"function": "read_input_registers"}) == 7
    assert get("bmsd_modbus_requests_total", {"function": "read_holding_registers"}) == 2
    assert get("bmsd_modbus_requests_total", {"function": "write_single_register"}) == 0
    assert (
        get(
            "bmsd_modbus_errors_total",
            {"function": "read_input_registers", "exception": "illegal_data_address"},
        )
        == 3
    )
    assert (
        get(
            "bmsd_modbus_errors_total",
            {"function": "read_holding_registers", "exception": "slave_device_failure"},
        )
        == 1
    )
    assert get("bmsd_modbus_connections") == 0
    assert get("bmsd_modbus_writes_total", {"result": "refused"}) == 2
    text = generate_latest(registry).decode()
    assert "# TYPE bmsd_modbus_requests_total counter" in text
    assert "# TYPE bmsd_modbus_connections gauge" in text
    # Served exactly as declared (and so as docs/metrics.md lists them).
    served = {(family.name, family.type, family.documentation) for family in registry.collect()}
    declared = {(f.name.removesuffix("_total"), f.kind, f.help) for f in FAMILIES}
    assert served == declared


def test_promtool_accepts_the_exposition() -> None:
    server = _server()
    server.stats.requests[4] += 1
    server.stats.errors[(4, ExcCodes.ILLEGAL_VALUE)] += 1
    registry = CollectorRegistry()
    registry.register(ModbusCollector(server))
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
