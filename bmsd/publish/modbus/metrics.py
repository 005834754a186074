"""Prometheus collector of the Modbus server's counters (wired into the exporter by metrics).

A custom collector: it reads :class:`ModbusStats` when Prometheus scrapes, so serving a
request costs a counter increment and nothing else.

- ``bmsd_modbus_requests_total{function}``: requests received, by function name
- ``bmsd_modbus_errors_total{function,exception}``: exception responses sent
- ``bmsd_modbus_connections``: client connections open now
- ``bmsd_modbus_connections_refused_total``, ``bmsd_modbus_connections_idle_closed_total``
- ``bmsd_modbus_connections_accepted_total``, ``bmsd_modbus_connections_evicted_total``,
  ``bmsd_modbus_connections_frame_timeout_total``, ``bmsd_modbus_connections_busy_total``,
  ``bmsd_modbus_connections_not_reading_total``, ``bmsd_modbus_frames_dropped_total``
- ``bmsd_modbus_throttled_seconds_total``: time reading was held off by the CPU budget
- ``bmsd_modbus_writes_total{result}``: writes accepted or refused
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bmsd.publish.modbus.server import FUNCTION_NAMES, ModbusServer

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


class ModbusCollector(Collector):
    """Exposes one ModbusServer's statistics."""

    def __init__(self, server: ModbusServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        stats = self._server.stats
        requests = CounterMetricFamily(
            "bmsd_modbus_requests", "Modbus requests received", labels=["function"]
        )
        for code in sorted(set(FUNCTION_NAMES) | set(stats.requests)):
            requests.add_metric([_function(code)], float(stats.requests[code]))
        yield requests
        errors = CounterMetricFamily(
            "bmsd_modbus_errors",
            "Modbus exception responses sent",
            labels=["function", "exception"],
        )
        for (function, exception), count in sorted(stats.errors.items()):
            name = EXCEPTION_NAMES.get(int(exception), f"code{int(exception)}")
            errors.add_metric([_function(function), name], float(count))
        yield errors
        yield GaugeMetricFamily(
            "bmsd_modbus_connections",
            "Modbus client connections open",
            value=float(self._server.connections),
        )
        for suffix, help_text, value in (
            ("refused", "closed at once because the connection limit was reached",
             stats.connections_refused),
            ("idle_closed", "closed after the idle timeout", stats.connections_idle_closed),
            ("accepted", "accepted", stats.connections_accepted),
            ("evicted", "closed (quiet ones) to admit a new one at the connection limit",
             stats.connections_evicted),
            ("frame_timeout", "closed because their bytes formed no request in time",
             stats.connections_frame_timeout),
            ("busy", "refused while the server was over its CPU budget", stats.connections_busy),
            ("not_reading", "closed because the client did not read its answers",
             stats.connections_not_reading),
        ):  # fmt: skip
            yield CounterMetricFamily(
                f"bmsd_modbus_connections_{suffix}",
                f"Modbus client connections {help_text}",
                value=float(value),
            )
        yield CounterMetricFamily(
            "bmsd_modbus_frames_dropped",
            "Modbus TCP frames dropped unanswered: protocol id not 0, or bytes no frame can "
            "start with (a length field outside 2..254)",
            value=float(stats.frames_dropped),
        )
        yield CounterMetricFamily(
            "bmsd_modbus_throttled_seconds",
            "Time the Modbus server held off reading to stay within its CPU budget",
            value=float(self._server.budget.paused_s),
        )
        writes = CounterMetricFamily(
            "bmsd_modbus_writes", "Modbus writes by result", labels=["result"]
        )
        writes.add_metric(["accepted"], float(stats.writes_accepted))
        writes.add_metric(["refused"], float(stats.writes_refused))
        yield writes
