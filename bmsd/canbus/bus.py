"""CAN bus lifecycle: open a python-can bus from config, receive on the event loop, record, count.

Only this package touches ``can.Message``. Frames are delivered on the asyncio loop thread (the
single writer), in batches: a bus with a file descriptor (SocketCAN) is drained by a loop
reader, any other bus by a reader thread that queues frames and wakes the loop once per batch.
python-can's ``Notifier`` wakes the loop once per frame, which caps a virtual bus at about 22,000
frames/s on this class of machine; batching removes that per-frame hand-over (bench/can_ingest.py).
Frames the process sends are also written to the recording, so a recording holds the whole
conversation. Errors of the bus are counted and reported, never allowed to kill the daemon.

An interface that fails while running (a USB adapter unplugged, a SocketCAN link taken down)
is reported dead at once — the fault table turns that into a CAN bus fault and the contactors
open — and reopened in the background with an exponential backoff; when it is back, reception
resumes with the same handler and the recording goes on in the same file. Recording files are
rotated and bounded, and a failing recording never stops the bus (:mod:`bmsd.canbus.record`).

Error frames (SocketCAN reports bus-off, error-passive and restarts as error frames) are counted
per error class and drive the bus's controller state (:mod:`bmsd.canbus.errorframes`), which
``error_level`` combines with python-can's own ``bus.state``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import can

from bmsd.canbus.errorframes import (
    ControllerState,
    CounterRate,
    ErrorFrame,
    decode_error_frame,
    error_level,
    next_controller_state,
)
from bmsd.canbus.record import FrameRecorder
from bmsd.config import BusConfig
from bmsd.errors import BmsdError

log = logging.getLogger(__name__)

FrameCallback = Callable[[can.Message, float], None]

MAX_FRAMES_PER_WAKEUP = 512
# Frames a reader thread holds for the loop at most (2 s of a saturated 500 kbit/s bus). Past
# it the oldest are dropped and counted: under an overload the newest readings matter, and an
# unbounded backlog would delay every real frame behind it (and grow without limit).
MAX_BACKLOG_FRAMES = 8192


@dataclass(slots=True)
class BusStats:
    """Counters of one bus (only the loop thread writes them)."""

    rx_frames: int = 0
    tx_frames: int = 0
    tx_errors: int = 0
    rx_dropped: int = 0  # received but dropped before decoding: the daemon could not keep up
    error_frames: int = 0
    unknown_frames: int = 0
    unexpected_module_frames: int = 0  # module frames from node ids the config does not list
    decode_errors: int = 0
    bus_errors: int = 0
    frames_by_message: Counter[str] = field(default_factory=Counter)
    error_frames_by_class: Counter[str] = field(default_factory=Counter)
    controller_state: ControllerState = ControllerState.ACTIVE  # from the error frames
    last_error: str = ""
    reopen_tries: int = 0
    reopens: int = 0  # successful reopens after a failure
    record_errors: int = 0  # failed writes of the recording (each stops it for a while)


def count_error_frame(
    stats: BusStats, message: can.Message
) -> tuple[ControllerState, ControllerState, ErrorFrame]:
    """Count an error frame by class and follow the controller state it reports.

    Returns the state before and after, and the decoded frame. Shared by the live bus and the
    replay of a recording, so a recorded bus-off trips the same fault in both.
    """
    stats.error_frames += 1
    frame = decode_error_frame(message.arbitration_id, message.data or b"")
    for label in frame.class_labels():
        stats.error_frames_by_class[label] += 1
    before = stats.controller_state
    stats.controller_state = next_controller_state(before, frame)
    return before, stats.controller_state, frame


class CanInterface:
    """One configured bus: open, receive into a callback, send, record, reopen, close."""

    def __init__(self, name: str, config: BusConfig, record_path: Path | None = None) -> None:
        self.name = name
        self.config = config
        self.stats = BusStats()
        self._record_path = record_path
        self._bus: can.BusABC | None = None
        self._receiver: _BatchReceiver | None = None
        self._recorder: FrameRecorder | None = None
        self._wanted = False  # opened by the daemon and not closed since
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_frame: FrameCallback | None = None
        self._failure: BaseException | None = None  # why the bus is down now
        self._down_since = 0.0
        self._reopen_delay_s = config.reopen_delay_s
        self._reopen_timer: asyncio.TimerHandle | None = None
        self._error_rate = CounterRate(config.rate_window_s)
        self._unknown_rate = CounterRate(config.rate_window_s)

    @property
    def is_open(self) -> bool:
        """Opened by the daemon and not closed (it may be down and reopening)."""
        return self._wanted

    @property
    def is_up(self) -> bool:
        return self._bus is not None and self._failure is None

    def open(self) -> None:
        """Open the interface; a failure here (at start) is a clear error, not a retry loop."""
        self._bus = self._open_bus()
        self._wanted = True
        if self._record_path is not None:
            recorder = FrameRecorder(
                self.name,
                self._record_path,
                max_bytes=round(self.config.record_max_mb * 1e6),
                keep_files=self.config.record_keep_files,
                on_error=self._count_record_error,
            )
            recorder.open()  # a recording that cannot begin is logged and retried, not fatal
            self._recorder = recorder

    def _count_record_error(self) -> None:
        self.stats.record_errors += 1

    def _open_bus(self) -> can.BusABC:
        try:
            return can.Bus(
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

    def start_receiving(self, loop: asyncio.AbstractEventLoop, on_frame: FrameCallback) -> None:
        """Deliver every received frame, with its monotonic receive time, on the loop thread."""
        self._loop = loop
        self._on_frame = on_frame
        self._start_receiver()

    def _start_receiver(self) -> None:
        bus = self._require()
        loop, on_frame = self._loop, self._on_frame
        assert loop is not None and on_frame is not None
        stats = self.stats

        def deliver(message: can.Message, received_at: float) -> None:
            if self._recorder is not None:
                self._recorder.write(message)
            if message.is_error_frame:
                self._on_error_frame(message)
                return
            stats.rx_frames += 1
            on_frame(message, received_at)

        self._receiver = _BatchReceiver(self, bus, loop, deliver)
        self._receiver.start()

    def _on_error_frame(self, message: can.Message) -> None:
        before, after, frame = count_error_frame(self.stats, message)
        if after is not before:
            log.log(
                logging.WARNING if after > before else logging.INFO,
                "CAN bus %s controller %s -> %s (error frame 0x%X, flags 0x%02X)",
                self.name,
                before.label,
                after.label,
                message.arbitration_id,
                int(frame.controller),
                extra={"fields": {"bus": self.name, "can_state": after.label}},
            )

    def error_level(self) -> int:
        """0 error-active, 1 error-passive, 2 bus-off or dead: the worse of the error frames'
        controller state and python-can's ``bus.state`` (which SocketCAN does not report)."""
        state = self.bus_state()
        if state is can.BusState.ERROR:
            return 2
        level = error_level(self.stats.controller_state)
        return max(level, 1) if state is can.BusState.PASSIVE else level

    def error_frame_rate(self, now_s: float) -> float:
        """Error frames per second over the last ``rate_window_s`` (call once per tick)."""
        return self._error_rate.update(now_s, self.stats.error_frames)

    def unknown_frame_rate(self, now_s: float) -> float:
        """Frames with an unknown id or an undecodable payload per second, over the window."""
        stats = self.stats
        return self._unknown_rate.update(now_s, stats.unknown_frames + stats.decode_errors)

    def send(self, message: can.Message) -> bool:
        """Send without blocking; a failure is counted and logged, and False returned."""
        bus = self._bus
        if bus is None or self._failure is not None:
            self.stats.tx_errors += 1
            return False
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
            self._recorder.write(message)
        return True

    def bus_state(self) -> can.BusState:
        bus = self._bus
        if bus is None or self._failure is not None:
            return can.BusState.ERROR
        try:
            return bus.state
        except NotImplementedError:
            return can.BusState.ACTIVE

    def receiver_failed(self) -> BaseException | None:
        """Why the bus is down now (its receiver failed and it is not reopened yet)."""
        return self._failure

    def receiver_failed_now(self, exc: BaseException) -> None:
        """The receiver stopped on ``exc`` (called on the loop thread): report, then reopen."""
        if not self._wanted or self._failure is not None:
            return
        self._failure = exc
        self._down_since = time.monotonic()
        self.stats.bus_errors += 1
        self.stats.last_error = str(exc)
        log.error(
            "CAN bus %s failed: %s; reopening in %.1f s", self.name, exc, self._reopen_delay_s
        )
        self._stop_receiver()
        self._shutdown_bus()
        self._schedule_reopen()

    def _schedule_reopen(self) -> None:
        assert self._loop is not None
        self._reopen_timer = self._loop.call_later(self._reopen_delay_s, self._try_reopen)

    def _try_reopen(self) -> None:
        self._reopen_timer = None
        if not self._wanted:
            return
        self.stats.reopen_tries += 1
        try:
            self._bus = self._open_bus()
        except BmsdError as exc:
            self._reopen_delay_s = min(self._reopen_delay_s * 2, self.config.reopen_max_delay_s)
            log.warning("%s; next try in %.1f s", exc, self._reopen_delay_s)
            self._schedule_reopen()
            return
        down_s = time.monotonic() - self._down_since
        self._failure = None
        # A device back from a failure is a freshly started controller (a SocketCAN link set
        # up again, an adapter plugged in): error-active, whatever its error frames said.
        self.stats.controller_state = ControllerState.ACTIVE
        self._reopen_delay_s = self.config.reopen_delay_s
        self.stats.reopens += 1
        log.warning("CAN bus %s is back after %.1f s", self.name, down_s)
        self._start_receiver()

    def close(self) -> None:
        self._wanted = False
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
            self._reopen_timer = None
        self._stop_receiver()
        if self._recorder is not None:
            self._recorder.stop()
            self._recorder = None
        self._shutdown_bus()

    def _stop_receiver(self) -> None:
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None

    def _shutdown_bus(self) -> None:
        if self._bus is not None:
            try:
                self._bus.shutdown()
            except Exception as exc:  # a vanished device may fail to close; it is gone anyway
                log.debug("closing CAN bus %s: %s", self.name, exc)
            self._bus = None

    def raw_bus(self) -> can.BusABC:
        """The python-can bus itself (for the simulator, which runs its own receive loop)."""
        return self._require()

    def _require(self) -> can.BusABC:
        if self._bus is None:
            raise BmsdError(f"CAN bus {self.name!r} is not open")
        return self._bus


class _BatchReceiver:
    """Moves frames from a bus to the loop thread, many per wake-up.

    SocketCAN-like buses (a file descriptor) are read by the loop itself when readable, draining
    everything available. Other buses are read by a daemon thread blocking in ``recv``; it
    appends ``(frame, monotonic time)`` to a bounded backlog and schedules one drain on the loop
    only when none is pending; the drain works in slices of ``MAX_FRAMES_PER_WAKEUP``. A full
    backlog drops its oldest frames (counted in ``rx_dropped``). A receive error is counted,
    logged and ends the receiver (the bus is then reported dead: a CAN bus fault).
    """

    def __init__(
        self,
        interface: CanInterface,
        bus: can.BusABC,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[can.Message, float], None],
    ) -> None:
        self._interface = interface
        self._bus = bus
        self._loop = loop
        self._deliver = deliver
        self._lock = threading.Lock()
        self._pending: deque[tuple[can.Message, float]] = deque(maxlen=MAX_BACKLOG_FRAMES)
        self._dropped = 0  # dropped from the full backlog since the last drain (under _lock)
        self._scheduled = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1

    def start(self) -> None:
        # Only SocketCAN honours recv(timeout=0) without blocking; python-can's serial bus,
        # for one, has a file descriptor but ignores the timeout (0.1 s), which would stall the
        # loop. Every other interface is read by a thread.
        self._fd = -1
        if self._interface.config.interface == "socketcan":
            try:
                self._fd = self._bus.fileno()
            except NotImplementedError:
                self._fd = -1
        if self._fd >= 0:
            self._loop.add_reader(self._fd, self._on_readable)
            return
        self._thread = threading.Thread(
            target=self._read_thread, name=f"can-rx-{self._interface.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _on_readable(self) -> None:
        try:
            # Bounded: a flooded bus must not starve the control tick; the loop calls back
            # while the socket stays readable.
            for _ in range(MAX_FRAMES_PER_WAKEUP):
                message = self._bus.recv(timeout=0)
                if message is None:
                    break
                self._deliver(message, time.monotonic())
        except (can.CanError, OSError) as exc:
            self._loop.remove_reader(self._fd)
            self._fail(exc)

    def _read_thread(self) -> None:
        bus, lock, pending = self._bus, self._lock, self._pending
        while not self._stopped.is_set():
            try:
                message = bus.recv(timeout=0.1)
            except Exception as exc:  # any driver error ends this reader; it is reported
                self._loop.call_soon_threadsafe(self._fail, exc)
                return
            if message is None:
                continue
            with lock:
                if len(pending) == MAX_BACKLOG_FRAMES:
                    self._dropped += 1  # the deque drops its oldest on append
                pending.append((message, time.monotonic()))
                if self._scheduled:
                    continue
                self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the daemon is stopping
                return

    def _drain(self) -> None:
        # Bounded like _on_readable: a backlog is worked off in slices, and the tick's timer
        # runs between two slices instead of after the whole backlog.
        with self._lock:
            pending = self._pending
            count = min(len(pending), MAX_FRAMES_PER_WAKEUP)
            batch = [pending.popleft() for _ in range(count)]
            dropped, self._dropped = self._dropped, 0
            more = bool(pending)
            self._scheduled = more
        if dropped:
            self._interface.stats.rx_dropped += dropped
        try:
            for message, received_at in batch:
                self._deliver(message, received_at)
        finally:
            # Even when a frame's handling raised (a bug): the backlog must keep draining, or
            # _scheduled stays set and no frame of this bus is delivered again.
            if more:
                self._loop.call_soon(self._drain)

    def _fail(self, exc: BaseException) -> None:
        if not self._stopped.is_set():
            self._interface.receiver_failed_now(exc)
