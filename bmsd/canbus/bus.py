"""CAN bus lifecycle: open a python-can bus from config, receive on the event loop, record, count.

Only this package touches ``can.Message``. Receiving uses python-can's ``Notifier`` bound to the
running asyncio loop, so every callback runs on the loop thread (the single writer). Frames the
process sends are also written to the recording, so a recording holds the whole conversation.
Errors of the bus are counted and reported, never allowed to kill the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import can

from bmsd.config import BusConfig
from bmsd.errors import BmsdError

log = logging.getLogger(__name__)

FrameCallback = Callable[[can.Message, float], None]


@dataclass(slots=True)
class BusStats:
    """Counters of one bus (only the loop thread writes them)."""

    rx_frames: int = 0
    tx_frames: int = 0
    tx_errors: int = 0
    error_frames: int = 0
    unknown_frames: int = 0
    decode_errors: int = 0
    bus_errors: int = 0
    frames_by_message: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


class CanInterface:
    """One configured bus: open, receive into a callback, send, record, close."""

    def __init__(self, name: str, config: BusConfig, record_path: Path | None = None) -> None:
        self.name = name
        self.config = config
        self.stats = BusStats()
        self._record_path = record_path
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self._recorder: can.Listener | None = None

    @property
    def is_open(self) -> bool:
        return self._bus is not None

    def open(self) -> None:
        try:
            self._bus = can.Bus(
                interface=self.config.interface,
                channel=self.config.channel,
                bitrate=self.config.bitrate,
                receive_own_messages=self.config.receive_own_messages,
            )
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise BmsdError(
                f"cannot open CAN bus {self.name!r} "
                f"(interface={self.config.interface}, channel={self.config.channel}): {exc}"
            ) from exc
        if self._record_path is not None:
            self._record_path.parent.mkdir(parents=True, exist_ok=True)
            self._recorder = can.Logger(str(self._record_path))
            log.info("recording bus %s to %s", self.name, self._record_path)

    def start_receiving(self, loop: asyncio.AbstractEventLoop, on_frame: FrameCallback) -> None:
        """Deliver every received frame, with its monotonic receive time, on the loop thread."""
        bus = self._require()
        recorder = self._recorder

        def deliver(message: can.Message) -> None:
            received_at = time.monotonic()
            if recorder is not None:
                recorder(message)
            if message.is_error_frame:
                self.stats.error_frames += 1
                return
            self.stats.rx_frames += 1
            on_frame(message, received_at)

        self._notifier = can.Notifier(bus, [deliver, _ErrorSink(self)], timeout=0.1, loop=loop)

    def send(self, message: can.Message) -> bool:
        """Send without blocking; a failure is counted and logged, and False returned."""
        bus = self._require()
        try:
            bus.send(message, timeout=0)
        except (can.CanError, OSError) as exc:
            self.stats.tx_errors += 1
            self.stats.last_error = str(exc)
            log.warning("send on bus %s failed: %s", self.name, exc)
            return False
        self.stats.tx_frames += 1
        if self._recorder is not None:
            message.timestamp = time.time()
            message.is_rx = False
            message.channel = message.channel or self.config.channel
            self._recorder(message)
        return True

    def bus_state(self) -> can.BusState:
        bus = self._require()
        try:
            return bus.state
        except NotImplementedError:
            return can.BusState.ACTIVE

    def receiver_failed(self) -> BaseException | None:
        """The exception that stopped the receiver thread, if it stopped."""
        notifier = self._notifier
        return None if notifier is None else notifier.exception

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.stop(timeout=1.0)
            self._notifier = None
        if self._recorder is not None:
            self._recorder.stop()
            self._recorder = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    def raw_bus(self) -> can.BusABC:
        """The python-can bus itself (for the simulator, which runs its own receive loop)."""
        return self._require()

    def _require(self) -> can.BusABC:
        if self._bus is None:
            raise BmsdError(f"CAN bus {self.name!r} is not open")
        return self._bus


class _ErrorSink(can.Listener):
    """Counts receiver errors instead of letting them propagate into the loop."""

    def __init__(self, interface: CanInterface) -> None:
        self._interface = interface

    def on_message_received(self, msg: can.Message) -> None:
        return None

    def on_error(self, exc: Exception) -> None:
        self._interface.stats.bus_errors += 1
        self._interface.stats.last_error = str(exc)
        log.error("receiver of CAN bus %s failed: %s", self._interface.name, exc)
