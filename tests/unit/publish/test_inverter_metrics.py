"""The inverter collector in a real CollectorRegistry: names, labels and values follow the
links' counters, and the text exposition parses."""

from __future__ import annotations

from pathlib import Path

import can
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bmsd.model.state import PackState
from bmsd.publish.inverter.link import InverterLink, LinkSettings
from bmsd.publish.inverter.metrics import FAMILIES, InverterCollector
from bmsd.publish.inverter.profile import load_profile
from bmsd.publish.inverter.values import PackInfo

ROOT = Path(__file__).resolve().parents[3]


def test_collector_exports_keepalive_frames_and_requests(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    state, info = closed_state
    t0 = state.time_s
    clock = [t0]
    links = []
    for name in ("pylontech_lv", "pylontech_hv"):
        profile = load_profile(ROOT / "etc" / "inverters" / f"{name}.toml")
        link = InverterLink(f"inv_{name}", profile, info, LinkSettings(stale_after_s=100.0), t0)
        link.on_state(state)
        links.append(link)
    registry = CollectorRegistry()
    registry.register(InverterCollector(lambda: links, lambda: clock[0]))
    lv, hv = links
    lv.poll(t0)
    lv.poll(t0 + 1.0)
    lv.on_frame(can.Message(arbitration_id=0x305, is_extended_id=False, data=bytes(8)), t0 + 1.5)
    hv.on_frame(can.Message(arbitration_id=0x4200, is_extended_id=True, data=bytes(8)), t0 + 2.0)
    hv.on_frame(can.Message(arbitration_id=0x4200, is_extended_id=True, data=b"\x00"), t0 + 3.0)
    clock[0] = t0 + 4.0

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert (
        value(
            "bmsd_inverter_keepalive_age_seconds",
            inverter="inv_pylontech_lv",
            profile="pylontech_lv",
        )
        == 2.5
    )
    assert (
        value(
            "bmsd_inverter_keepalive_age_seconds",
            inverter="inv_pylontech_hv",
            profile="pylontech_hv",
        )
        == 2.0
    )
    assert (
        value(
            "bmsd_inverter_frames_sent_total", inverter="inv_pylontech_lv", frame="PYLON_LV_LIMITS"
        )
        == 2.0
    )
    assert (
        value(
            "bmsd_inverter_frames_sent_total", inverter="inv_pylontech_hv", frame="PYLON_HV_LIMITS"
        )
        == 0.0
    )
    assert value("bmsd_inverter_requests_total", inverter="inv_pylontech_hv") == 1.0
    assert value("bmsd_inverter_requests_total", inverter="inv_pylontech_lv") == 0.0
    assert value("bmsd_inverter_bad_frames_total", inverter="inv_pylontech_hv") == 1.0
    assert value("bmsd_inverter_bad_frames_total", inverter="inv_pylontech_lv") == 0.0
    text = generate_latest(registry).decode()
    # Served exactly as declared (and so as docs/metrics.md lists them).
    served = {(f.name, f.type, f.documentation) for f in text_string_to_metric_families(text)}
    declared = {(f.name.removesuffix("_total"), f.kind, f.help) for f in FAMILIES}
    assert served == declared


def test_keepalive_age_counts_from_start_before_the_first(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    _, info = closed_state
    profile = load_profile(ROOT / "etc" / "inverters" / "sma_si.toml")
    link = InverterLink(
        "si", profile, info, LinkSettings(keepalive_timeout_s=12.5), started_at=10.0
    )
    registry = CollectorRegistry()
    registry.register(InverterCollector(lambda: [link], lambda: 17.0))
    labels = {"inverter": "si", "profile": "sma_si"}
    assert registry.get_sample_value("bmsd_inverter_keepalive_age_seconds", labels) == 7.0
    # The timeout supervised is exported beside the age, so an alert can compare them.
    assert registry.get_sample_value("bmsd_inverter_keepalive_timeout_seconds", labels) == 12.5


def test_no_timeout_series_when_the_keepalive_is_not_supervised(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    _, info = closed_state
    profile = load_profile(ROOT / "etc" / "inverters" / "sma_si.toml")
    link = InverterLink("si", profile, info, LinkSettings(), started_at=10.0)
    registry = CollectorRegistry()
    registry.register(InverterCollector(lambda: [link], lambda: 17.0))
    labels = {"inverter": "si", "profile": "sma_si"}
    assert registry.get_sample_value("bmsd_inverter_keepalive_timeout_seconds", labels) is None
