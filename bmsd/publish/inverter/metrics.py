"""Prometheus metrics of the inverter links: a custom collector over the live link counters.

Registered by the metrics exporter (``registry.register(InverterCollector(service))``); it
reads the links' counters at scrape time and keeps no state of its own:

- ``bmsd_inverter_keepalive_age_seconds{inverter,profile}``: time since the inverter's last
  keep-alive (or request); before the first one, time since start. Only for profiles with a
  keep-alive.
- ``bmsd_inverter_keepalive_timeout_seconds{inverter,profile}``: the keep-alive timeout bmsd
  supervises (the profile's or the config's), so an alert compares the age with it.
- ``bmsd_inverter_frames_sent_total{inverter,frame}``: frames sent, by DBC message name.
- ``bmsd_inverter_requests_total{inverter}``: requests answered (request-driven profiles).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bmsd.publish.inverter.link import InverterLink


class InverterCollector(Collector):
    """Collects the inverter metrics from ``links()`` at each scrape."""

    def __init__(
        self,
        links: Callable[[], Iterable[InverterLink]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._links = links
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        age = GaugeMetricFamily(
            "bmsd_inverter_keepalive_age_seconds",
            "Time since the inverter's last keep-alive or request (since start before the first)",
            labels=["inverter", "profile"],
            unit="",
        )
        timeout = GaugeMetricFamily(
            "bmsd_inverter_keepalive_timeout_seconds",
            "Keep-alive timeout supervised for the inverter (profile default or config)",
            labels=["inverter", "profile"],
            unit="",
        )
        frames = CounterMetricFamily(
            "bmsd_inverter_frames_sent",
            "Frames sent to the inverter, by DBC message",
            labels=["inverter", "frame"],
        )
        requests = CounterMetricFamily(
            "bmsd_inverter_requests",
            "Inverter requests answered",
            labels=["inverter"],
        )
        for link in self._links():
            spec = link.profile.spec
            if spec.keepalive is not None:
                seen = link.keepalive_seen_at
                since = link.started_at if seen is None else seen
                age.add_metric([link.name, spec.name], max(0.0, now - since))
                if link.settings.keepalive_timeout_s is not None:
                    timeout.add_metric([link.name, spec.name], link.settings.keepalive_timeout_s)
            for frame in link.profile.sent_frames():
                frames.add_metric([link.name, frame], float(link.stats.frames_sent[frame]))
            requests.add_metric([link.name], float(link.stats.requests))
        yield age
        yield timeout
        yield frames
        yield requests
