"""The simulated inverter, for each profile: it decodes the battery's frames (from a real
link), draws its demand within the limits, stops at its own timeout, ignores the limits when
misbehaving, and sends its keep-alives or requests."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from bmsd.model.bms import BmsMode
from bmsd.model.state import PackState
from bmsd.publish.inverter.link import InverterLink, LinkSettings
from bmsd.publish.inverter.profile import load_profile
from bmsd.publish.inverter.values import PackInfo
from bmsd.sim.inverter import SimulatedInverter
from bmsd.sim.load import ConstantLoad

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from inverter_golden import base_state  # noqa: E402

PROFILES = ("pylontech_lv", "sma_si", "victron", "pylontech_hv")


@pytest.fixture(scope="module")
def base() -> tuple[PackState, PackInfo]:
    return base_state()


def _pair(
    profile_name: str, info: PackInfo, demand_a: float, **kwargs: bool
) -> tuple[InverterLink, SimulatedInverter]:
    profile = load_profile(ROOT / "etc" / "inverters" / f"{profile_name}.toml")
    link = InverterLink(profile_name, profile, info, LinkSettings(stale_after_s=100.0), 0.0)
    return link, SimulatedInverter(profile, ConstantLoad(demand_a), **kwargs)


def _exchange(link: InverterLink, inverter: SimulatedInverter, state: PackState, t: float) -> None:
    """One second of conversation at time ``t``."""
    link.on_state(dataclasses.replace(state, time_s=t))
    for request in inverter.due_frames(t):
        link.on_frame(request, t)
    now = t
    while now < t + 1.0:
        for frame in link.poll(now):
            inverter.handle_frame(frame, now)
        nxt = link.next_wakeup(now)
        if nxt >= t + 1.0:
            break
        now = nxt


@pytest.mark.parametrize("profile", PROFILES)
def test_follows_the_limits_and_its_own_timeout(
    profile: str, base: tuple[PackState, PackInfo]
) -> None:
    state, info = base
    ccl = state.limits.charge_current_a
    dcl = state.limits.discharge_current_a
    link, charger = _pair(profile, info, 500.0)
    assert charger.current_a(0.0) == 0.0  # nothing received yet: no power
    _exchange(link, charger, state, 0.0)
    assert charger.current_a(0.5) == pytest.approx(ccl, abs=0.05)
    assert charger.current_a(4.0) == 0.0  # 3 s without the limits: its own timeout
    link, small = _pair(profile, info, 10.0)
    _exchange(link, small, state, 0.0)
    assert small.current_a(0.5) == 10.0
    link, discharger = _pair(profile, info, -500.0)
    _exchange(link, discharger, state, 0.0)
    assert discharger.current_a(0.5) == pytest.approx(-dcl, abs=0.05)
    link, faulted = _pair(profile, info, -500.0)
    _exchange(link, faulted, dataclasses.replace(state, mode=BmsMode.FAULT), 0.0)
    assert faulted.current_a(0.5) == 0.0
    link, rogue = _pair(profile, info, -500.0, ignore_limits=True)
    _exchange(link, rogue, dataclasses.replace(state, mode=BmsMode.FAULT), 0.0)
    assert rogue.current_a(0.5) == -500.0


@pytest.mark.parametrize("profile", PROFILES)
def test_sends_its_keepalive_or_requests(profile: str, base: tuple[PackState, PackInfo]) -> None:
    info = base[1]
    link, inverter = _pair(profile, info, 0.0)
    frames = inverter.due_frames(0.0)
    assert frames and inverter.due_frames(0.5) == [] and inverter.due_frames(1.0)
    assert all(link.on_frame(frame, 0.0) for frame in frames)
    assert link.keepalive_seen_at == 0.0
    _, silent = _pair(profile, info, 0.0, silent=True)
    assert silent.due_frames(0.0) == []
