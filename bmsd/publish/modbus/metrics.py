"""Prometheus collector of the Modbus server's counters (wired into the exporter by metrics).

A custom collector: it reads :class:`ModbusStats` when Prometheus scrapes, so serving a
request costs a counter increment and nothing else. Its families are declared once in
:data:`FAMILIES`, from which docs/metrics.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bmsd.publish.family import FamilyDoc
from bmsd.publish.modbus.server import FUNCTION_NAMES, ModbusServer, ModbusStats

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "slave_device_failure",
    6: "slave_device_busy",
    11: "gateway_target_no_response",
}


def _function(code: int) -> str:
    return FUNCTION_NAMES.get(code, f"fc{code}")


REQUESTS = FamilyDoc(
    "bmsd_modbus_requests_total", "counter", ("function",), "Modbus requests received"
)
ERRORS = FamilyDoc(
    "bmsd_modbus_errors_total",
    "counter",
    ("function", "exception"),
    "Modbus exception responses sent",
)
CONNECTIONS = FamilyDoc("bmsd_modbus_connections", "gauge", (), "Modbus client connections open")
# (family, the server's counter it serves)
CONNECTION_COUNTERS: tuple[tuple[FamilyDoc, Callable[[ModbusStats], int]], ...] = tuple(
    (
        FamilyDoc(f"bmsd_modbus_connections_{suffix}_total", "counter", (),
                  f"Modbus client connections {help_text}"),
        value,
    )
    for suffix, help_text, value in (
        ("refused", "closed at once because a connection limit (in all or per address) was "
         "reached",
         lambda stats: stats.connections_refused),
        ("idle_closed", "closed after the idle timeout",
         lambda stats: stats.connections_idle_closed),
        ("accepted", "accepted", lambda stats: stats.connections_accepted),
        ("evicted", "closed (quiet ones) to admit a new one at a connection limit",
         lambda stats: stats.connections_evicted),
        ("frame_timeout", "closed because their bytes formed no request in time",
         lambda stats: stats.connections_frame_timeout),
        ("busy", "refused while the server was over its CPU budget",
         lambda stats: stats.connections_busy),
        ("not_reading", "closed because the client did not read its answers",
         lambda stats: stats.connections_not_reading),
    )
)  # fmt: skip
FRAMES_DROPPED = FamilyDoc(
    "bmsd_modbus_frames_dropped_total",
    "counter",
    (),
    "Modbus TCP frames dropped unanswered: protocol id not 0, or bytes no frame can start with "
    "(a length field outside 2..254)",
)
THROTTLED = FamilyDoc(
    "bmsd_modbus_throttled_seconds_total",
    "counter",
    (),
    "Time the Modbus server held off reading to stay within its CPU budget",
)
WRITES = FamilyDoc("bmsd_modbus_writes_total", "counter", ("result",), "Modbus writes by result")

FAMILIES: tuple[FamilyDoc, ...] = (
    REQUESTS,
    ERRORS,
    CONNECTIONS,
    *(family for family, _ in CONNECTION_COUNTERS),
    FRAMES_DROPPED,
    THROTTLED,
    WRITES,
)


class ModbusCollector(Collector):
    """Exposes one ModbusServer's statistics."""

    def __init__(self, server: ModbusServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        stats = self._server.stats
        requests = REQUESTS.family()
        for code in sorted(set(FUNCTION_NAMES) | set(stats.requests)):
            requests.add_metric([_function(code)], float(stats.requests[code]))
        yield requests
        errors = ERRORS.family()
        for (function, exception), count in sorted(stats.errors.items()):
            name = EXCEPTION_NAMES.get(int(exception), f"code{int(exception)}")
            errors.add_metric([_function(function), name], float(count))
        yield errors
        yield CONNECTIONS.single(float(self._server.connections))
        for family, value in CONNECTION_COUNTERS:
            yield family.single(float(value(stats)))
        yield FRAMES_DROPPED.single(float(stats.frames_dropped))
        yield THROTTLED.single(float(self._server.budget.paused_s))
        writes = WRITES.family()
        writes.add_metric(["accepted"], float(stats.writes_accepted))
        writes.add_metric(["refused"], float(stats.writes_refused))
        yield writes
