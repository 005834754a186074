"""Inverter profiles end to end: the daemon on its simulated pack talks to a simulated inverter
on a second virtual bus; the inverter bus is recorded (candump .log) and every frame the
daemon sent is decoded with tests/inverter_decoder.py (written from protocols.md, not from
bmsd's DBCs) and compared with the published state. A misbehaving inverter ends in the
configured fault; a silent one trips the keep-alive supervision and, with action "stop",
gets CCL = DCL = 0."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from pathlib import Path

import can
import pytest
from inverter_decoder import decode

from bmsd.app import Daemon
from bmsd.config import load_config
from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultLevel
from bmsd.model.state import PackState
from bmsd.publish.inverter.values import outgoing_limits

ROOT = Path(__file__).resolve().parents[2]


def overrides(tmp_path: Path, profile: str, *extra: str) -> tuple[str, ...]:
    return (
        f"can.slaves.channel='inv-e2e-slaves-{tmp_path.name}'",
        f"can.inverter.channel='inv-e2e-inverter-{tmp_path.name}'",
        f"can.inverter.record='{tmp_path / 'inverter.log'}'",
        f"state.directory='{tmp_path / 'state'}'",
        "control.summary_log_interval_s=0",
        "metrics.port=0",
        "modbus.port=0",
        f"inverters.hybrid.profile='inverters/{profile}.toml'",
        "sim.inverter='hybrid'",
        *extra,
    )


async def _run(
    config_overrides: tuple[str, ...], until: Callable[[Daemon], bool], timeout_s: float
) -> tuple[Daemon, list[PackState]]:
    daemon = Daemon(load_config(ROOT / "etc" / "sim.toml", config_overrides))
    states: list[PackState] = []
    daemon.loop.on_tick.append(states.append)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(daemon):
        await asyncio.sleep(0.1)
    daemon.request_stop()
    await task
    return daemon, states


def run(
    config_overrides: tuple[str, ...], until: Callable[[Daemon], bool], timeout_s: float
) -> tuple[Daemon, list[PackState]]:
    return asyncio.run(_run(config_overrides, until, timeout_s))


def sent_frames(path: Path) -> list[can.Message]:
    return [m for m in can.LogReader(str(path)) if not m.is_rx and not m.is_error_frame]


def state_at(states: list[PackState], wall_time: float) -> list[PackState]:
    """The state in force at ``wall_time`` and its neighbours (the hook ran after its tick)."""
    times = [s.wall_time for s in states]
    index = bisect.bisect_right(times, wall_time) - 1
    return states[max(index - 1, 0) : index + 2]


def closed_for(seconds: float) -> Callable[[Daemon], bool]:
    marks: dict[str, float] = {}

    def done(daemon: Daemon) -> bool:
        state = daemon.hub.latest
        if state is None or state.mode is not BmsMode.CLOSED:
            return False
        marks.setdefault("closed", time.monotonic())
        return time.monotonic() - marks["closed"] >= seconds

    return done


LIMIT_IDS = {"pylontech_lv": 0x351, "sma_si": 0x351, "victron": 0x351, "pylontech_hv": 0x4220}
SOC_IDS = {"pylontech_lv": 0x355, "sma_si": 0x355, "victron": 0x355, "pylontech_hv": 0x4210}


@pytest.mark.parametrize("profile", ["pylontech_lv", "sma_si", "victron", "pylontech_hv"])
def test_recorded_inverter_bus_matches_the_published_state(tmp_path: Path, profile: str) -> None:
    daemon, states = run(overrides(tmp_path, profile), closed_for(4.0), timeout_s=30.0)
    frames = sent_frames(tmp_path / "inverter.log")
    assert frames, "the daemon sent nothing"
    assert all(m.is_extended_id is (profile == "pylontech_hv") for m in frames)
    limit_frames = [m for m in frames if m.arbitration_id == LIMIT_IDS[profile]]
    assert len(limit_frames) >= 3
    checked_closed = 0
    for message in limit_frames:
        got = decode(profile, message.arbitration_id, bytes(message.data))
        assert got["cvl_v"] > 0  # never CVL 0
        candidates = [outgoing_limits(s) for s in state_at(states, message.timestamp)]
        assert any(
            abs(got["cvl_v"] - out.charge_voltage_v) <= 0.05
            and abs(got["ccl_a"] - out.charge_current_a) <= 0.05
            and abs(got["dcl_a"] - out.discharge_current_a) <= 0.05
            and abs(got["dvl_v"] - out.discharge_voltage_v) <= 0.05
            for out in candidates
        ), (got, candidates)
        checked_closed += any(s.mode is BmsMode.CLOSED for s in state_at(states, message.timestamp))
    assert checked_closed >= 2
    for message in frames:
        if (
            message.arbitration_id == SOC_IDS[profile]
            and message.timestamp > states[-1].wall_time - 2
        ):
            got = decode(profile, message.arbitration_id, bytes(message.data))
            soc = [
                s.estimates.pack_soc * 100
                for s in state_at(states, message.timestamp)
                if s.estimates
            ]
            assert any(abs(got["soc_pct"] - value) <= 0.5 for value in soc), (got, soc)
    # The simulated inverter followed the limits: never more current than allowed (+ noise).
    for state in states[-20:]:
        current = state.snapshot.pack_current_a or 0.0
        assert current <= state.limits.charge_current_a + 2.0
        assert -current <= state.limits.discharge_current_a + 2.0
    stats = daemon.inverters.links[0].stats
    assert sum(stats.frames_sent.values()) == len(frames)


def test_misbehaving_inverter_ends_in_the_configured_fault(tmp_path: Path) -> None:
    config = overrides(
        tmp_path,
        "pylontech_lv",
        "sim.inverter_ignores_limits=true",
        "sim.load.kind='constant'",
        "sim.load.current_a=150.0",  # beyond the 140 A maximum CCL, and the ramp
        "inverters.hybrid.supervision.limit_response_s=1.0",
        "protection.faults.inverter_ignores_limits.warning.set_delay_s=1.0",
        "protection.faults.inverter_ignores_limits.fatal.set_delay_s=3.0",
    )

    def faulted(daemon: Daemon) -> bool:
        state = daemon.hub.latest
        return state is not None and state.mode is BmsMode.FAULT

    _, states = run(config, faulted, timeout_s=40.0)
    last = states[-1]
    assert last.mode is BmsMode.FAULT
    latched = {level.key for level in last.faults.levels if level.latched}
    assert "inverter_ignores_limits.fatal" in latched, latched
    events = [(e.kind, e.fault_id, e.level) for s in states for e in s.fault_events]
    # The first fatal fault is the inverter's (a loaded test machine may stall the loop
    # afterwards, which its own faults then report).
    first_fatal = next(e for e in events if e[0] == "set" and e[2] is FaultLevel.FATAL)
    assert first_fatal[1] == "inverter_ignores_limits", events
    warning_at = events.index(("set", "inverter_ignores_limits", FaultLevel.WARNING))
    fatal_at = events.index(("set", "inverter_ignores_limits", FaultLevel.FATAL))
    assert warning_at < fatal_at
    # In fault the inverter is told: no charge, no discharge, protection flags set.
    frames = [m for m in sent_frames(tmp_path / "inverter.log") if m.timestamp > last.wall_time - 1]
    limits = [
        decode("pylontech_lv", 0x351, bytes(m.data)) for m in frames if m.arbitration_id == 0x351
    ]
    flags = [
        decode("pylontech_lv", 0x35C, bytes(m.data)) for m in frames if m.arbitration_id == 0x35C
    ]
    alarms = [
        decode("pylontech_lv", 0x359, bytes(m.data)) for m in frames if m.arbitration_id == 0x359
    ]
    assert limits and all(f["ccl_a"] == 0 and f["dcl_a"] == 0 and f["cvl_v"] > 0 for f in limits)
    assert flags and not any(f["charge_enable"] or f["discharge_enable"] for f in flags)
    assert alarms and all(a["protection.system_error"] for a in alarms)


def test_silent_inverter_trips_keepalive_and_stop_zeroes_the_currents(tmp_path: Path) -> None:
    config = overrides(
        tmp_path,
        "sma_si",
        "sim.inverter_silent=true",
        "inverters.hybrid.supervision.keepalive_timeout_s=1.0",
        "inverters.hybrid.supervision.startup_grace_s=2.0",
        "inverters.hybrid.supervision.keepalive_action='stop'",
        "inverters.hybrid.supervision.keepalive_grace_s=1.0",
    )
    _, states = run(config, closed_for(5.0), timeout_s=30.0)
    last = states[-1]
    active = {level.key for level in last.faults.active()}
    assert "inverter_keepalive_lost.warning" in active
    assert last.mode is BmsMode.CLOSED and last.limits.charge_current_a > 0  # the battery could
    frames = [
        m for m in sent_frames(tmp_path / "inverter.log")
        if m.arbitration_id == 0x351 and m.timestamp > last.wall_time - 1.5
    ]  # fmt: skip
    decoded = [decode("sma_si", 0x351, bytes(m.data)) for m in frames]
    assert decoded and all(f["ccl_a"] == 0 and f["dcl_a"] == 0 and f["cvl_v"] > 0 for f in decoded)
