"""The inverter service on real python-can virtual buses: two profiles on two buses at once,
frames from the event loop, each inverter's frames to its own receiver; the supervision
providers (worst keep-alive, limit excess over the sum of the sent limits)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import can
import pytest

from bmsd.canbus.bus import CanInterface
from bmsd.config import BusConfig, load_config
from bmsd.control.supervision import ExternalInputs
from bmsd.model.bms import BmsMode
from bmsd.model.state import PackState
from bmsd.publish.inverter.service import (
    KEEPALIVE_INPUT,
    LIMIT_INPUT,
    InverterService,
)
from bmsd.publish.inverter.values import PackInfo

ROOT = Path(__file__).resolve().parents[3]


def two_inverters(tmp_path: Path, **extra: str) -> tuple[str, ...]:
    return (
        f"can.inverter.channel='svc-a-{tmp_path.name}'",
        "can.second.interface='virtual'",
        f"can.second.channel='svc-b-{tmp_path.name}'",
        "inverters.hybrid.profile='inverters/pylontech_lv.toml'",
        "inverters.island.profile='inverters/sma_si.toml'",
        "inverters.island.bus='second'",
        "inverters.island.supervision.keepalive_timeout_s=2.0",
        "inverters.island.supervision.startup_grace_s=1.0",
        *(f"{k}={v}" for k, v in extra.items()),
    )


async def _exchange(
    service: InverterService, config_buses: dict[str, BusConfig], state: PackState
) -> tuple[dict[str, list[can.Message]], float]:
    loop = asyncio.get_running_loop()
    buses = {name: CanInterface(name, bus) for name, bus in config_buses.items()}
    peers = {
        name: can.Bus(interface="virtual", channel=bus.channel)
        for name, bus in config_buses.items()
    }
    for name, bus in buses.items():
        bus.open()
        bus.start_receiving(loop, service.receiver(name, bus))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(buses, stop))
    start = time.monotonic()
    received: dict[str, list[can.Message]] = {name: [] for name in buses}
    while time.monotonic() - start < 2.5:
        service.on_state(dataclasses.replace(state, time_s=time.monotonic()))
        if time.monotonic() - start < 0.2:
            peers["inverter"].send(
                can.Message(arbitration_id=0x305, is_extended_id=False, data=bytes(8))
            )
        await asyncio.sleep(0.1)
        for name, peer in peers.items():
            while (message := peer.recv(timeout=0)) is not None:
                received[name].append(message)
    stop.set()
    await task
    for bus in buses.values():
        bus.close()
    for peer in peers.values():
        peer.shutdown()
    return received, start


def test_two_profiles_on_two_buses(
    tmp_path: Path, closed_state: tuple[PackState, PackInfo]
) -> None:
    state, info = closed_state
    config = load_config(ROOT / "etc" / "sim.toml", two_inverters(tmp_path))
    service = InverterService(config, info, time.monotonic())
    external = ExternalInputs()
    service.register_supervision(external)
    buses = {"inverter": config.can["inverter"], "second": config.can["second"]}
    received, _ = asyncio.run(_exchange(service, buses, state))
    lv_ids = {m.arbitration_id for m in received["inverter"]}
    si_ids = {m.arbitration_id for m in received["second"]}
    assert lv_ids == {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E}
    assert si_ids == {0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F}
    assert len([m for m in received["inverter"] if m.arbitration_id == 0x351]) >= 2
    hybrid, island = service.entries["hybrid"].link, service.entries["island"].link
    assert hybrid.keepalive_seen_at is not None and island.keepalive_seen_at is None
    assert hybrid.stats.keepalives >= 1
    now = time.monotonic()
    values = external.values(now)
    # The island never sent its 0x305: overdue since start (grace 1 s, timeout 2 s).
    assert values[KEEPALIVE_INPUT] == pytest.approx(now - island.started_at - 2.0, abs=0.05)
    assert values[LIMIT_INPUT] is not None


def test_limit_excess_is_judged_against_the_sum_of_sent_limits(
    tmp_path: Path, closed_state: tuple[PackState, PackInfo]
) -> None:
    state, info = closed_state
    config = load_config(ROOT / "etc" / "sim.toml", two_inverters(tmp_path))
    service = InverterService(config, info, 0.0)
    assert service.limit_excess_a(0.0) is None  # nothing sent yet
    ccl = state.limits.charge_current_a
    for entry in service.entries.values():
        entry.link.limit_window.record(0.0, ccl, 10.0)
    current = state.snapshot.pack_current_a
    assert current is not None
    service.on_state(state)
    expected = max(current - 2 * ccl, -current - 20.0) - 5.0
    assert service.limit_excess_a(1.0) == pytest.approx(expected)
    no_current = dataclasses.replace(
        state, snapshot=dataclasses.replace(state.snapshot, pack_current_a=None)
    )
    service.on_state(no_current)
    assert service.limit_excess_a(1.0) is None
    service.on_state(dataclasses.replace(state, mode=BmsMode.PRECHARGE))
    assert service.limit_excess_a(1.0) is None


def test_no_inverters_registers_nothing(closed_state: tuple[PackState, PackInfo]) -> None:
    _, info = closed_state
    config = load_config(ROOT / "etc" / "sim.toml", ("inverters={}", "sim.inverter=''"))
    service = InverterService(config, info, 0.0)
    external = ExternalInputs()
    service.register_supervision(external)
    assert external.values(0.0) == {}


def test_malformed_request_on_a_virtual_bus_is_counted_not_raised(
    tmp_path: Path, closed_state: tuple[PackState, PackInfo]
) -> None:
    # The reviewer's case: a Pylontech HV request 0x4200 with one data byte, through the real
    # bus reader (a cantools DecodeError escaped the link and was never counted).
    state, info = closed_state
    config = load_config(
        ROOT / "etc" / "sim.toml",
        (
            f"can.inverter.channel='svc-bad-{tmp_path.name}'",
            "inverters.hv.profile='inverters/pylontech_hv.toml'",
            "inverters.hv.bus='inverter'",
        ),
    )
    service = InverterService(config, info, time.monotonic())
    link = service.entries["hv"].link

    async def run() -> None:
        bus = CanInterface("inverter", config.can["inverter"])
        bus.open()
        bus.start_receiving(asyncio.get_running_loop(), service.receiver("inverter", bus))
        service.on_state(dataclasses.replace(state, time_s=time.monotonic()))
        peer = can.Bus(interface="virtual", channel=config.can["inverter"].channel)
        peer.send(can.Message(arbitration_id=0x4200, is_extended_id=True, data=b"\x00"))
        deadline = time.monotonic() + 2.0
        while link.stats.bad_frames == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        peer.shutdown()
        bus.close()

    asyncio.run(run())
    assert link.stats.bad_frames == 1
    assert link.keepalive_seen_at is None and link.stats.requests == 0


def test_a_link_that_raises_on_a_frame_costs_the_frame_only(
    tmp_path: Path, closed_state: tuple[PackState, PackInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, info = closed_state
    config = load_config(ROOT / "etc" / "sim.toml", two_inverters(tmp_path))
    service = InverterService(config, info, 0.0)
    hybrid = service.entries["hybrid"].link

    def broken(message: can.Message, received_at: float) -> bool:
        raise RuntimeError("a bug in a profile")

    monkeypatch.setattr(hybrid, "on_frame", broken)
    interface = CanInterface("inverter", config.can["inverter"])
    receive = service.receiver("inverter", interface)
    receive(can.Message(arbitration_id=0x305, is_extended_id=False, data=bytes(8)), 1.0)
    assert hybrid.stats.bad_frames == 1 and interface.stats.unknown_frames == 0
