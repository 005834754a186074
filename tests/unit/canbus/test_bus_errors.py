"""A CanInterface on a real python-can virtual bus: error frames counted per class, the
controller state followed and combined with ``bus.state``, rates over the window, the reader's
backlog bounded (oldest dropped and counted)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import can
import pytest

from bmsd.canbus import bus as bus_module
from bmsd.canbus.bus import CanInterface
from bmsd.canbus.errorframes import ControllerState
from bmsd.config import BusConfig


def _channel() -> str:
    return f"bus-errors-{uuid.uuid4().hex[:8]}"


def _error(can_id: int, flags: int = 0) -> can.Message:
    return can.Message(arbitration_id=can_id, is_error_frame=True, data=[0, flags, 0, 0, 0, 0])


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_error_frames_are_counted_and_drive_the_level() -> None:
    channel = _channel()

    async def scenario() -> None:
        interface = CanInterface("slaves", BusConfig(interface="virtual", channel=channel))
        interface.open()
        received: list[int] = []
        interface.start_receiving(
            asyncio.get_running_loop(), lambda m, _at: received.append(m.arbitration_id)
        )
        peer = can.Bus(interface="virtual", channel=channel)
        stats = interface.stats
        try:
            steps: list[tuple[can.Message, ControllerState, int]] = [
                (_error(0x4, 0x08), ControllerState.WARNING, 0),
                (_error(0x4, 0x10), ControllerState.PASSIVE, 1),
                (_error(0x8 | 0x80), ControllerState.PASSIVE, 1),
                (_error(0x40), ControllerState.BUS_OFF, 2),
                (_error(0x4, 0x20), ControllerState.BUS_OFF, 2),
                (_error(0x100), ControllerState.ACTIVE, 0),
            ]
            for count, (frame, state, level) in enumerate(steps, 1):
                peer.send(frame)
                await _until(lambda n=count: stats.error_frames == n)  # type: ignore[misc]
                assert stats.controller_state is state, frame
                assert interface.error_level() == level, frame
            # Error frames never reach the decoder; data frames do.
            peer.send(can.Message(arbitration_id=0x123, data=b"\x01", is_extended_id=False))
            await _until(lambda: received == [0x123])
            assert stats.rx_frames == 1
            assert stats.error_frames_by_class == Counter(
                {"controller": 3, "protocol": 1, "bus_error": 1, "bus_off": 1, "restarted": 1}
            )
        finally:
            peer.shutdown()
            interface.close()

    asyncio.run(scenario())


class _StateBus(can.BusABC):
    """A bus whose python-can ``state`` is set by the test (as a PCAN or Kvaser reports it)."""

    def __init__(self, channel: str = "", **kwargs: object) -> None:
        super().__init__(channel=channel)
        self.reported = can.BusState.ACTIVE

    @property
    def state(self) -> can.BusState:
        return self.reported

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        self.reported = new_state

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        pass

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        time.sleep(min(timeout or 0.0, 0.01))
        return None, False


@pytest.mark.parametrize(
    ("reported", "frames_state", "level"),
    [
        (can.BusState.ACTIVE, ControllerState.ACTIVE, 0),
        (can.BusState.PASSIVE, ControllerState.ACTIVE, 1),
        (can.BusState.PASSIVE, ControllerState.WARNING, 1),
        (can.BusState.PASSIVE, ControllerState.BUS_OFF, 2),
        (can.BusState.ERROR, ControllerState.ACTIVE, 2),
        (can.BusState.ACTIVE, ControllerState.PASSIVE, 1),
        (can.BusState.ACTIVE, ControllerState.BUS_OFF, 2),
    ],
)
def test_level_is_the_worse_of_bus_state_and_error_frames(
    monkeypatch: pytest.MonkeyPatch,
    reported: can.BusState,
    frames_state: ControllerState,
    level: int,
) -> None:
    fake = _StateBus()
    fake.reported = reported
    interface = CanInterface("slaves", BusConfig(interface="virtual", channel=_channel()))
    monkeypatch.setattr(interface, "_open_bus", lambda: fake)
    interface.open()
    interface.stats.controller_state = frames_state
    assert interface.error_level() == level
    interface.close()
    assert interface.error_level() == 2  # closed: no bus, reads as dead


def test_rates_over_the_window() -> None:
    interface = CanInterface(
        "slaves", BusConfig(interface="virtual", channel=_channel(), rate_window_s=2.0)
    )
    stats = interface.stats
    assert interface.error_frame_rate(100.0) == 0.0
    assert interface.unknown_frame_rate(100.0) == 0.0
    stats.error_frames += 10
    stats.unknown_frames += 300
    stats.decode_errors += 100  # undecodable frames count with the unknown ones
    assert interface.error_frame_rate(101.0) == pytest.approx(5.0)
    assert interface.unknown_frame_rate(101.0) == pytest.approx(200.0)
    assert interface.error_frame_rate(103.5) == pytest.approx(0.0)
    assert interface.unknown_frame_rate(103.5) == pytest.approx(0.0)


def test_a_full_backlog_drops_the_oldest_frames_and_counts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop is blocked while a peer sends more than the backlog holds: the newest frames
    are kept, the dropped ones counted, and every frame is either delivered or dropped."""
    monkeypatch.setattr(bus_module, "MAX_BACKLOG_FRAMES", 50)
    channel = _channel()

    async def scenario() -> None:
        interface = CanInterface("slaves", BusConfig(interface="virtual", channel=channel))
        interface.open()
        received: list[int] = []
        interface.start_receiving(
            asyncio.get_running_loop(), lambda m, _at: received.append(m.data[0])
        )
        peer = can.Bus(interface="virtual", channel=channel)
        try:
            for value in range(200):
                peer.send(can.Message(arbitration_id=0x10, data=[value], is_extended_id=False))
            time.sleep(0.5)  # the loop is blocked: the reader thread fills the backlog
            await _until(lambda: len(received) + interface.stats.rx_dropped == 200)
            assert interface.stats.rx_dropped >= 100
            assert received[-1] == 199  # the newest survived
            assert received == sorted(received)
        finally:
            peer.shutdown()
            interface.close()

    asyncio.run(scenario())


def test_a_frame_whose_handling_raises_does_not_stop_delivery() -> None:
    """A bug in a frame's handling (an exception out of the callback) loses that slice of
    the backlog at most: the frames after it, and every later frame, are still delivered."""
    channel = _channel()

    async def scenario() -> None:
        interface = CanInterface("slaves", BusConfig(interface="virtual", channel=channel))
        interface.open()
        received: list[int] = []

        def on_frame(message: can.Message, _at: float) -> None:
            value = int.from_bytes(message.data, "big")
            if value == 5:
                raise RuntimeError("a bug in a decoder")
            received.append(value)

        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _context: None)  # the bug is expected here
        interface.start_receiving(loop, on_frame)
        peer = can.Bus(interface="virtual", channel=channel)
        try:
            # More than one slice (512) waits while the loop is blocked, so the slice that
            # raises has a backlog behind it.
            for value in range(2000):
                peer.send(
                    can.Message(arbitration_id=0x10, data=value.to_bytes(2, "big"),
                                is_extended_id=False)
                )  # fmt: skip
            time.sleep(0.5)
            await _until(lambda: bool(received) and received[-1] == 1999)
            assert received[:5] == [0, 1, 2, 3, 4]
            # Later frames are delivered too.
            peer.send(can.Message(arbitration_id=0x10, data=(3000).to_bytes(2, "big"),
                                  is_extended_id=False))  # fmt: skip
            await _until(lambda: received[-1] == 3000)
        finally:
            peer.shutdown()
            interface.close()

    asyncio.run(scenario())
