"""Prometheus metrics of the inverter links: a custom collector over the live link counters.

Registered by the metrics exporter (``registry.register(InverterCollector(service))``); it
reads the links' counters at scrape time and keeps no state of its own. Its families are
declared once in :data:`FAMILIES`, from which docs/metrics.md lists them. The keep-alive
series exist only for profiles with a keep-alive; the age counts from start before the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from bmsd.publish.family import FamilyDoc
from bmsd.publish.inverter.link import InverterLink

KEEPALIVE_AGE = FamilyDoc(
    "bmsd_inverter_keepalive_age_seconds",
    "gauge",
    ("inverter", "profile"),
    "Time since the inverter's last keep-alive or request (since start before the first)",
)
KEEPALIVE_TIMEOUT = FamilyDoc(
    "bmsd_inverter_keepalive_timeout_seconds",
    "gauge",
    ("inverter", "profile"),
    "Keep-alive timeout supervised for the inverter (profile default or config)",
)
FRAMES_SENT = FamilyDoc(
    "bmsd_inverter_frames_sent_total",
    "counter",
    ("inverter", "frame"),
    "Frames sent to the inverter, by DBC message",
)
REQUESTS = FamilyDoc(
    "bmsd_inverter_requests_total", "counter", ("inverter",), "Inverter requests answered"
)
BAD_FRAMES = FamilyDoc(
    "bmsd_inverter_bad_frames_total",
    "counter",
    ("inverter",),
    "Frames with the inverter's request or keep-alive id that did not decode (dropped; "
    "not a keep-alive)",
)
FAMILIES: tuple[FamilyDoc, ...] = (
    KEEPALIVE_AGE,
    KEEPALIVE_TIMEOUT,
    FRAMES_SENT,
    REQUESTS,
    BAD_FRAMES,
)


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
        age = KEEPALIVE_AGE.family()
        timeout = KEEPALIVE_TIMEOUT.family()
        frames = FRAMES_SENT.family()
        requests = REQUESTS.family()
        bad = BAD_FRAMES.family()
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
            bad.add_metric([link.name], float(link.stats.bad_frames))
        yield age
        yield timeout
        yield frames
        yield requests
        yield bad
