"""Inverter semantics, force-charge hysteresis, supervision functions and the link's
scheduling (period, spacing, stale, requests), each at its edges."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import can
import pytest

from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultLevel, FaultState, LevelState
from bmsd.model.state import PackState
from bmsd.publish.inverter.link import InverterLink, LinkSettings
from bmsd.publish.inverter.profile import load_profile
from bmsd.publish.inverter.supervision import (
    LimitWindow,
    keepalive_overdue_s,
    keepalive_stop,
    limit_excess_a,
)
from bmsd.publish.inverter.values import (
    PackInfo,
    active_conditions,
    battery_values,
    force_charge_step,
    outgoing_limits,
)

ROOT = Path(__file__).resolve().parents[3]
INVERTERS = ROOT / "etc" / "inverters"


def _faulted(state: PackState, fault_id: str, level: FaultLevel) -> PackState:
    levels = (LevelState(fault_id, level, active=True, tripped=True),)
    return dataclasses.replace(state, faults=FaultState(levels))


@pytest.mark.parametrize(
    ("mode", "fatal", "stop", "charge", "discharge", "fault"),
    [
        (BmsMode.CLOSED, False, "", True, True, False),
        (BmsMode.CLOSED, False, "keep-alive lost", False, False, False),
        (BmsMode.CLOSED, True, "", False, False, True),
        (BmsMode.FAULT, False, "", False, False, True),
        (BmsMode.STANDBY, False, "", False, False, False),
        (BmsMode.PRECHARGE, False, "", False, False, False),
        (BmsMode.OPENING, False, "", False, False, False),
    ],
)
def test_outgoing_limits(
    closed_state: tuple[PackState, PackInfo],
    mode: BmsMode,
    fatal: bool,
    stop: str,
    charge: bool,
    discharge: bool,
    fault: bool,
) -> None:
    state, _ = closed_state
    state = dataclasses.replace(state, mode=mode)
    if fatal:
        state = _faulted(state, "cell_voltage_high", FaultLevel.FATAL)
    out = outgoing_limits(state, stop)
    assert out.charge_voltage_v == state.limits.charge_voltage_v > 0  # never CVL 0
    assert out.charge_enable is charge and (out.charge_current_a > 0) is charge
    assert out.discharge_enable is discharge and (out.discharge_current_a > 0) is discharge
    assert out.fault is fault


def test_stop_charging_is_ccl_zero_and_enable_clear(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    state, info = closed_state
    limits = state.limits
    no_charge = dataclasses.replace(
        limits,
        charge_current_a=0.0,
        ccl_contributors=(
            *limits.ccl_contributors,
            type(limits.ccl_contributors[0])("t", 0.0, "test"),
        ),
    )
    values = battery_values(dataclasses.replace(state, limits=no_charge), info)
    assert values["charge_current_a"] == 0.0 and values["charge_enable"] == 0.0
    assert values["charge_forbidden"] == 1.0
    assert values["charge_voltage_v"] > 0 and values["discharge_enable"] == 1.0


def test_fault_sets_protection_flags(closed_state: tuple[PackState, PackInfo]) -> None:
    state, info = closed_state
    faulted = _faulted(state, "cell_voltage_high", FaultLevel.FATAL)
    values = battery_values(faulted, info)
    assert values["alarm.high_voltage"] == values["alarm.general"] == 1.0
    assert values["charge_current_a"] == values["discharge_current_a"] == 0.0
    assert values["warning.high_voltage"] == 0.0
    # fault mode without a specific condition: the system flag
    bare = battery_values(dataclasses.replace(state, mode=BmsMode.FAULT), info)
    assert bare["alarm.system"] == bare["alarm.general"] == 1.0
    warned = battery_values(_faulted(state, "charge_temp_low", FaultLevel.WARNING), info)
    assert warned["warning.low_temp"] == warned["warning.charge_low_temp"] == 1.0
    assert warned["alarm.general"] == 0.0
    alarms, warnings = active_conditions(_faulted(state, "unknown_id", FaultLevel.FATAL), info)
    assert alarms == {"general", "system"} and not warnings


@pytest.mark.parametrize(
    ("soc", "active", "expected"),
    [
        (4.9, False, True),
        (5.0, False, True),
        (5.1, False, False),
        (9.9, True, True),
        (10.0, True, False),
        (10.1, True, False),
        (7.0, True, True),
        (7.0, False, False),
        (math.nan, True, False),
    ],
)
def test_force_charge_hysteresis(soc: float, active: bool, expected: bool) -> None:
    assert force_charge_step(soc, active, 5.0, 10.0) is expected


@pytest.mark.parametrize(
    ("now", "seen", "expected"),
    [
        (10.0, None, None),  # inside the start-up grace, nothing seen: not judged
        (29.99, None, None),
        (30.0, None, 20.0),  # grace over, never seen: age counted from start
        (30.0, 25.0, -5.0),  # seen 5 s ago, timeout 10 s
        (35.0, 25.0, 0.0),  # exactly at the timeout
        (36.0, 25.0, 1.0),
    ],
)
def test_keepalive_overdue(now: float, seen: float | None, expected: float | None) -> None:
    assert keepalive_overdue_s(now, 0.0, seen, 10.0, 30.0) == expected


@pytest.mark.parametrize(
    ("overdue", "action", "expected"),
    [(None, "stop", False), (4.99, "stop", False), (5.0, "stop", True), (100.0, "warn", False)],
)
def test_keepalive_stop(overdue: float | None, action: str, expected: bool) -> None:
    assert keepalive_stop(overdue, action, 5.0) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "expected"),
    [(50.0, 0.0), (55.0, 5.0), (-30.0, 0.0), (-40.0, 10.0), (0.0, -30.0)],
)
def test_limit_excess(current: float, expected: float) -> None:
    assert limit_excess_a(current, 50.0, 30.0) == pytest.approx(expected)


def test_limit_window_keeps_the_higher_limit_for_the_response_time() -> None:
    window = LimitWindow(10.0)
    assert window.allowed(0.0) is None
    window.record(0.0, 100.0, 80.0)
    window.record(5.0, 20.0, 10.0)
    assert window.allowed(5.0) == (100.0, 80.0)
    assert window.allowed(14.99) == (100.0, 80.0)
    assert window.allowed(15.0) == (20.0, 10.0)  # the lowered limit had 10 s to take effect


def test_limit_window_stays_bounded_when_nobody_asks() -> None:
    """Contactors open for a day: limits go out at 10 Hz and no one asks what is allowed."""
    window = LimitWindow(10.0)
    for step in range(864_000):
        window.record(step * 0.1, 0.0, 0.0)
    assert len(window) <= 102  # 10 s at 10 Hz, and the one in force at the window's start
    window.record(86_400.0, 50.0, 40.0)
    assert window.allowed(86_400.0) == (50.0, 40.0)


def _link(name: str, state: PackState, info: PackInfo, **settings: object) -> InverterLink:
    profile = load_profile(INVERTERS / f"{name}.toml")
    link = InverterLink(name, profile, info, LinkSettings(**settings), started_at=state.time_s)  # type: ignore[arg-type]
    link.on_state(state)
    return link


def test_periodic_link_sends_each_frame_once_per_period(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    state, info = closed_state
    link = _link("pylontech_lv", state, info, stale_after_s=100.0)
    t0 = state.time_s
    first = link.poll(t0)
    assert [m.arbitration_id for m in first] == [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]
    assert link.poll(t0 + 0.5) == []
    assert link.next_wakeup(t0 + 0.5) == pytest.approx(t0 + 1.0)
    assert len(link.poll(t0 + 1.0)) == 6


def test_sma_spacing_never_below_200_ms(closed_state: tuple[PackState, PackInfo]) -> None:
    state, info = closed_state
    link = _link("sma_si", state, info, stale_after_s=100.0)
    t = state.time_s
    sent: list[float] = []
    end = t + 5.0
    while t < end:
        if link.poll(t):
            sent.append(t)
        t = min(link.next_wakeup(t), end)
        if t == end:
            break
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps and min(gaps) >= 0.2 - 1e-9
    assert link.stats.frames_sent["SMA_LIMITS"] >= 3  # 0x351 still at least every ~1.4 s


def test_stale_state_silences_the_sender(closed_state: tuple[PackState, PackInfo]) -> None:
    state, info = closed_state
    link = _link("pylontech_lv", state, info, stale_after_s=1.0)
    assert link.poll(state.time_s + 1.0)  # exactly at the limit: still fresh
    assert link.poll(state.time_s + 2.01) == [] and link.stale
    link.on_state(dataclasses.replace(state, time_s=state.time_s + 2.1))
    assert link.poll(state.time_s + 2.2) and not link.stale


def test_request_driven_link_answers_requests_only(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    state, info = closed_state
    link = _link("pylontech_hv", state, info, stale_after_s=100.0)
    t = state.time_s
    assert link.poll(t) == [] and link.next_wakeup(t) == math.inf
    request = can.Message(arbitration_id=0x4200, is_extended_id=True, data=bytes(8))
    assert link.on_frame(request, t)
    ids = []
    while True:
        frames = link.poll(t)
        ids += [m.arbitration_id for m in frames]
        nxt = link.next_wakeup(t)
        if nxt == math.inf:
            break
        t = nxt
    assert ids == [0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290]
    assert link.stats.requests == 1 and link.keepalive_seen_at == state.time_s
    standard = can.Message(arbitration_id=0x4200, is_extended_id=False, data=bytes(8))
    assert not link.on_frame(standard, t)  # an 11-bit 0x4200 is someone else's frame
    unknown = can.Message(arbitration_id=0x4200, is_extended_id=True, data=bytes([7]) + bytes(7))
    link.on_frame(unknown, t)
    assert link.stats.unknown_requests == 1


def test_keepalive_stop_zeroes_the_limits(closed_state: tuple[PackState, PackInfo]) -> None:
    state, info = closed_state
    link = _link(
        "pylontech_lv",
        state,
        info,
        stale_after_s=1000.0,
        keepalive_timeout_s=10.0,
        keepalive_action="stop",
        keepalive_grace_s=5.0,
        startup_grace_s=60.0,
    )
    t0 = state.time_s
    assert link.values(t0 + 59.0)["charge_current_a"] > 0  # start-up grace: black start
    ack = can.Message(arbitration_id=0x305, is_extended_id=True, data=bytes(8))
    assert link.on_frame(ack, t0 + 1.0)  # extended 0x305 accepted (any_id_type)
    assert link.values(t0 + 15.98)["charge_current_a"] > 0
    stopped = link.values(t0 + 16.01)
    assert stopped["charge_current_a"] == stopped["discharge_current_a"] == 0.0
    assert stopped["charge_enable"] == 0.0 and stopped["charge_voltage_v"] > 0


# Every profile's inverter-side frame (request or keep-alive), as (profile, id, extended).
INBOUND = [
    ("pylontech_hv", 0x4200, True),
    ("pylontech_lv", 0x305, False),
    ("pylontech_lv", 0x305, True),
    ("sma_si", 0x305, False),
    ("victron", 0x305, False),
]


@pytest.mark.parametrize(("name", "frame_id", "extended"), INBOUND)
@pytest.mark.parametrize("data", [b"", b"\x00", bytes(7)])
def test_malformed_inbound_frame_is_counted_dropped_and_no_keepalive(
    closed_state: tuple[PackState, PackInfo],
    name: str,
    frame_id: int,
    extended: bool,
    data: bytes,
) -> None:
    state, info = closed_state
    link = _link(name, state, info, stale_after_s=100.0, keepalive_timeout_s=10.0)
    t0 = state.time_s
    short = can.Message(arbitration_id=frame_id, is_extended_id=extended, data=data)
    assert link.on_frame(short, t0 + 1.0)  # its id is known: not counted as unknown too
    assert link.stats.bad_frames == 1
    assert link.keepalive_seen_at is None  # garbage is no sign of a live inverter
    assert link.stats.requests == link.stats.keepalives == 0
    assert link.poll(t0 + 1.0) == [] or name != "pylontech_hv"  # nothing answered
    good = can.Message(arbitration_id=frame_id, is_extended_id=extended, data=bytes(8))
    assert link.on_frame(good, t0 + 2.0)
    assert link.keepalive_seen_at == t0 + 2.0 and link.stats.bad_frames == 1


def test_unknown_request_type_is_no_keepalive(closed_state: tuple[PackState, PackInfo]) -> None:
    state, info = closed_state
    link = _link("pylontech_hv", state, info, stale_after_s=100.0)
    unknown = can.Message(arbitration_id=0x4200, is_extended_id=True, data=bytes([7]) + bytes(7))
    assert link.on_frame(unknown, state.time_s)
    assert link.stats.unknown_requests == 1 and link.keepalive_seen_at is None
