"""A CAN interface that disappears is reported dead at once and reopened with a backoff.

The link is python-can's ``serial`` interface over a real socat pty pair: killing socat makes
the device vanish under the reader (as an unplugged USB adapter does), starting socat again
brings it back under the same name.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import can
import pytest

from bmsd.canbus.bus import CanInterface
from bmsd.config import BusConfig

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")


def _start_socat(far: Path, near: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={far}", f"pty,raw,echo=0,link={near}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5.0
    while not (far.exists() and near.exists()):
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.02)
    return process


async def _until(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _frame(value: int) -> can.Message:
    return can.Message(arbitration_id=0x123, data=[value], is_extended_id=False)


def test_a_vanished_interface_is_reported_dead_then_reopened(tmp_path: Path) -> None:
    far, near = tmp_path / "far", tmp_path / "near"
    record = tmp_path / "bus.asc"

    async def scenario() -> None:
        socat = _start_socat(far, near)
        config = BusConfig(
            interface="serial", channel=str(near), reopen_delay_s=0.1, reopen_max_delay_s=0.4
        )
        interface = CanInterface("slaves", config, record)
        interface.open()
        received: list[int] = []
        interface.start_receiving(
            asyncio.get_running_loop(), lambda message, _at: received.append(message.data[0])
        )
        sender = can.Bus(interface="serial", channel=str(far))
        try:
            sender.send(_frame(1))
            await _until(lambda: received == [1])
            assert interface.is_up and interface.receiver_failed() is None

            # The device vanishes: dead at once, sends refused without an exception.
            sender.shutdown()
            socat.kill()
            socat.wait()
            await _until(lambda: interface.receiver_failed() is not None)
            assert not interface.is_up
            assert interface.bus_state() is can.BusState.ERROR
            assert interface.send(_frame(9)) is False
            assert interface.stats.bus_errors == 1
            # Tries go on while it is away, further and further apart.
            await asyncio.sleep(0.8)
            tries_while_away = interface.stats.reopen_tries
            assert 2 <= tries_while_away <= 5, tries_while_away

            # It comes back under the same name: reception resumes with the same handler.
            socat = _start_socat(far, near)
            sender = can.Bus(interface="serial", channel=str(far))
            await _until(lambda: interface.is_up)
            assert interface.stats.reopens == 1
            sender.send(_frame(2))
            await _until(lambda: received == [1, 2])
            assert interface.send(_frame(3)) is True
        finally:
            interface.close()
            sender.shutdown()
            socat.kill()
            socat.wait()
        assert not interface.is_open

    asyncio.run(scenario())
    # One recording across the outage, holding frames from before and after it.
    lines = record.read_text().splitlines()
    assert sum(" Rx " in line and "123" in line for line in lines) == 2


def test_closing_a_dead_interface_stops_the_reopen_tries(tmp_path: Path) -> None:
    far, near = tmp_path / "far", tmp_path / "near"

    async def scenario() -> None:
        socat = _start_socat(far, near)
        config = BusConfig(interface="serial", channel=str(near), reopen_delay_s=0.05)
        interface = CanInterface("inverter", config)
        interface.open()
        interface.start_receiving(asyncio.get_running_loop(), lambda message, _at: None)
        socat.kill()
        socat.wait()
        await _until(lambda: interface.receiver_failed() is not None)
        interface.close()
        tries = interface.stats.reopen_tries
        await asyncio.sleep(0.3)
        assert interface.stats.reopen_tries == tries

    asyncio.run(scenario())
