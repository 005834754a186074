"""Metric families served by a publisher's own collector (Modbus server, inverter links).

Each collector declares its families once as :class:`FamilyDoc`; it builds what it serves from
them, and ``docs/metrics.md`` lists them from the same declarations, so the reference cannot
drift from what a scrape returns.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class FamilyDoc(NamedTuple):
    """One family: its name as served (a counter's with ``_total``), type, labels and help."""

    name: str
    kind: Literal["counter", "gauge"]
    labels: tuple[str, ...]
    help: str

    def family(self) -> CounterMetricFamily | GaugeMetricFamily:
        """An empty family to add this scrape's samples to."""
        if self.kind == "counter":
            return CounterMetricFamily(
                self.name.removesuffix("_total"), self.help, labels=list(self.labels)
            )
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))

    def single(self, value: float) -> CounterMetricFamily | GaugeMetricFamily:
        """The family with its one unlabelled sample."""
        family = self.family()
        family.add_metric([], value)
        return family
