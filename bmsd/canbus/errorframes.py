"""CAN error frames: decode their class bits and follow the CAN controller's error state.

SocketCAN reports controller events as error frames: the identifier holds the error class
(``linux/can/error.h``: ``CAN_ERR_TX_TIMEOUT`` 0x1 ... ``CAN_ERR_RESTARTED`` 0x100) and, for
``CAN_ERR_CRTL``, ``data[1]`` holds the controller flags (warning, passive, active, overflow).
The kernel's ``can_change_state()`` puts the flags of the *new* state into that byte, so a
warning flag received while error-passive means the error counters fell back below 128.

Everything here is pure: decoding, the controller state machine and the counter rate (whose
time is passed in, monotonic). ``bmsd.canbus.bus`` applies them to each bus's frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum, IntFlag

# Names of the supervision inputs (bmsd.control.supervision) that carry each bus's rates.
CAN_ERROR_FRAME_RATE = "can_error_frames_per_s"
CAN_UNKNOWN_FRAME_RATE = "can_unknown_frames_per_s"


class ErrorClass(IntFlag):
    """Error class bits of an error frame's identifier (``CAN_ERR_*`` in linux/can/error.h)."""

    TX_TIMEOUT = 0x001
    LOST_ARBITRATION = 0x002
    CONTROLLER = 0x004
    PROTOCOL = 0x008
    TRANSCEIVER = 0x010
    NO_ACK = 0x020
    BUS_OFF = 0x040
    BUS_ERROR = 0x080
    RESTARTED = 0x100


# (class, metric label, meaning) for every class: the per-class counters and docs use this.
ERROR_CLASSES: tuple[tuple[ErrorClass, str, str], ...] = (
    (ErrorClass.TX_TIMEOUT, "tx_timeout", "a frame could not be sent in time"),
    (ErrorClass.LOST_ARBITRATION, "lost_arbitration", "arbitration lost"),
    (ErrorClass.CONTROLLER, "controller", "controller state change or overflow (data[1])"),
    (ErrorClass.PROTOCOL, "protocol", "protocol violation (bit, form, stuff error)"),
    (ErrorClass.TRANSCEIVER, "transceiver", "transceiver status (wiring)"),
    (ErrorClass.NO_ACK, "no_ack", "no node acknowledged a frame sent"),
    (ErrorClass.BUS_OFF, "bus_off", "the controller went bus-off"),
    (ErrorClass.BUS_ERROR, "bus_error", "bus error (with bus-error reporting on)"),
    (ErrorClass.RESTARTED, "restarted", "the controller restarted after bus-off"),
)
# Bits outside the known classes (a newer kernel's, or garbage) are counted under this label.
OTHER_CLASS_LABEL = "other"
KNOWN_CLASS_BITS = 0x1FF
ERROR_CLASS_LABELS = (*(label for _, label, _ in ERROR_CLASSES), OTHER_CLASS_LABEL)


class ControllerFlag(IntFlag):
    """``data[1]`` of a ``CAN_ERR_CRTL`` error frame (``CAN_ERR_CRTL_*``)."""

    RX_OVERFLOW = 0x01
    TX_OVERFLOW = 0x02
    RX_WARNING = 0x04
    TX_WARNING = 0x08
    RX_PASSIVE = 0x10
    TX_PASSIVE = 0x20
    ACTIVE = 0x40


class ControllerState(IntEnum):
    """Error state of a CAN controller, in order of severity."""

    ACTIVE = 0  # error counters below 96: normal
    WARNING = 1  # a counter at 96 or above: still sending normally
    PASSIVE = 2  # a counter at 128 or above: may not signal errors actively
    BUS_OFF = 3  # transmit counter above 255: the controller is off the bus

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """What one error frame says."""

    classes: ErrorClass
    controller: ControllerFlag
    other_bits: int  # identifier bits outside the known classes

    def class_labels(self) -> list[str]:
        labels = [label for flag, label, _ in ERROR_CLASSES if self.classes & flag]
        if self.other_bits:
            labels.append(OTHER_CLASS_LABEL)
        return labels


def decode_error_frame(arbitration_id: int, data: bytes | bytearray) -> ErrorFrame:
    """Decode an error frame's identifier and controller byte; a short payload has no flags."""
    classes = ErrorClass(arbitration_id & KNOWN_CLASS_BITS)
    flags = ControllerFlag(0)
    if classes & ErrorClass.CONTROLLER and len(data) > 1:
        flags = ControllerFlag(data[1] & 0x7F)
    return ErrorFrame(classes, flags, arbitration_id & ~KNOWN_CLASS_BITS & 0x1FFFFFFF)


def next_controller_state(state: ControllerState, frame: ErrorFrame) -> ControllerState:
    """The controller state after ``frame``.

    Bus-off holds until the controller reports a restart or error-active (nothing else proves
    it is back); bus-off and restart in one frame read as bus-off (fail safe). Otherwise the
    controller flags name the new state (the kernel reports the state it changed to).
    """
    if frame.classes & ErrorClass.BUS_OFF:
        return ControllerState.BUS_OFF
    if frame.classes & ErrorClass.RESTARTED:
        return ControllerState.ACTIVE
    if not frame.classes & ErrorClass.CONTROLLER:
        return state
    flags = frame.controller
    if flags & ControllerFlag.ACTIVE and not flags & (
        ControllerFlag.RX_PASSIVE
        | ControllerFlag.TX_PASSIVE
        | ControllerFlag.RX_WARNING
        | ControllerFlag.TX_WARNING
    ):
        return ControllerState.ACTIVE
    if state is ControllerState.BUS_OFF:
        return state
    if flags & (ControllerFlag.RX_PASSIVE | ControllerFlag.TX_PASSIVE):
        return ControllerState.PASSIVE
    if flags & (ControllerFlag.RX_WARNING | ControllerFlag.TX_WARNING):
        return ControllerState.WARNING
    return state  # an overflow alone says nothing about the error counters


def error_level(state: ControllerState) -> int:
    """The ``can_bus_error_level`` of a state: 0 active or warning, 1 passive, 2 bus-off."""
    if state is ControllerState.BUS_OFF:
        return 2
    if state is ControllerState.PASSIVE:
        return 1
    return 0


class CounterRate:
    """Events per second of an ever-growing counter, over the last ``window_s``.

    Fed once per control tick with the counter's total: the count since the newest sample at
    least ``window_s`` old (the first sample, before a whole window has passed), divided by
    ``window_s``. A burst therefore reads as its average over the window, and a start-up
    burst is not magnified by a short elapsed time.
    """

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now_s: float, total: int) -> float:
        samples = self._samples
        if samples and now_s < samples[-1][0]:
            samples.clear()  # time ran backwards: a caller's bug; start over, never raise
        samples.append((now_s, total))
        edge_s = now_s - self.window_s
        # Keep one sample at or before the window's start: the base of the count.
        while len(samples) > 1 and samples[1][0] <= edge_s:
            samples.popleft()
        base_total = samples[0][1]
        return max(0, total - base_total) / self.window_s
