"""Error-frame decoding, the controller state machine and the counter rate, by tables."""

from __future__ import annotations

import pytest

from bmsd.canbus.errorframes import (
    ERROR_CLASS_LABELS,
    ERROR_CLASSES,
    ControllerFlag,
    ControllerState,
    CounterRate,
    ErrorClass,
    decode_error_frame,
    error_level,
    next_controller_state,
)

# linux/can/error.h values, written out here so the test does not trust the module's enum.
CRTL, BUSOFF, RESTARTED, PROT, ACK, TX_TIMEOUT = 0x4, 0x40, 0x100, 0x8, 0x20, 0x1
RX_OVERFLOW, TX_OVERFLOW = 0x01, 0x02
RX_WARNING, TX_WARNING, RX_PASSIVE, TX_PASSIVE, CRTL_ACTIVE = 0x04, 0x08, 0x10, 0x20, 0x40


def _data(flags: int) -> bytes:
    return bytes([0, flags, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    ("can_id", "data", "labels", "flags"),
    [
        (CRTL, _data(RX_PASSIVE), ["controller"], ControllerFlag.RX_PASSIVE),
        (CRTL, _data(TX_WARNING | RX_OVERFLOW), ["controller"], 0x09),
        (CRTL, b"\x00", ["controller"], 0),  # too short for data[1]: no flags
        (CRTL, b"", ["controller"], 0),
        (BUSOFF, _data(0), ["bus_off"], 0),
        (BUSOFF, _data(0xFF), ["bus_off"], 0),  # data[1] only means something with CRTL
        (PROT | 0x80, _data(0), ["protocol", "bus_error"], 0),
        (ACK | TX_TIMEOUT, _data(0), ["tx_timeout", "no_ack"], 0),
        (RESTARTED, _data(0), ["restarted"], 0),
        (0x1FF, _data(0xFF), [label for _, label, _ in ERROR_CLASSES], 0x7F),
        (0x200 | PROT, _data(0), ["protocol", "other"], 0),  # CAN_ERR_CNT of newer kernels
        (0, _data(0), [], 0),
    ],
)
def test_decode(can_id: int, data: bytes, labels: list[str], flags: int) -> None:
    frame = decode_error_frame(can_id, data)
    assert frame.class_labels() == labels
    assert int(frame.controller) == flags


def test_every_class_has_a_unique_label() -> None:
    assert len(set(ERROR_CLASS_LABELS)) == len(ERROR_CLASS_LABELS) == len(ErrorClass) + 1
    assert sum(int(flag) for flag, _, _ in ERROR_CLASSES) == 0x1FF


A, W, P, OFF = (
    ControllerState.ACTIVE,
    ControllerState.WARNING,
    ControllerState.PASSIVE,
    ControllerState.BUS_OFF,
)

# (state before, identifier, data[1], state after)
TRANSITIONS = [
    # error-active climbs
    (A, CRTL, RX_WARNING, W),
    (A, CRTL, TX_WARNING, W),
    (A, CRTL, RX_PASSIVE, P),
    (A, CRTL, TX_PASSIVE | RX_WARNING, P),
    (W, CRTL, TX_PASSIVE, P),
    (A, BUSOFF, 0, OFF),
    (W, BUSOFF, 0, OFF),
    (P, BUSOFF, 0, OFF),
    (P, BUSOFF | CRTL, CRTL_ACTIVE, OFF),  # bus-off wins within one frame
    (P, BUSOFF | RESTARTED, 0, OFF),  # ambiguous: fail safe
    # and comes back: the flags name the state changed to
    (P, CRTL, CRTL_ACTIVE, A),
    (P, CRTL, TX_WARNING, W),  # counters fell below 128 but not below 96
    (W, CRTL, CRTL_ACTIVE, A),
    (OFF, RESTARTED, 0, A),
    (OFF, CRTL, CRTL_ACTIVE, A),
    # bus-off holds until restart or active
    (OFF, CRTL, RX_PASSIVE, OFF),
    (OFF, CRTL, TX_WARNING, OFF),
    (OFF, CRTL, CRTL_ACTIVE | TX_PASSIVE, OFF),  # contradictory flags: no proof it is back
    (OFF, PROT, 0, OFF),
    (OFF, ACK, 0, OFF),
    # frames that say nothing about the state
    (P, PROT, 0, P),
    (P, ACK | TX_TIMEOUT, 0, P),
    (W, CRTL, RX_OVERFLOW | TX_OVERFLOW, W),
    (P, CRTL, 0, P),
    (A, 0x80, 0, A),
    (A, 0x200, 0, A),
    (A, RESTARTED, 0, A),
]


@pytest.mark.parametrize(("before", "can_id", "flags", "after"), TRANSITIONS)
def test_controller_state(
    before: ControllerState, can_id: int, flags: int, after: ControllerState
) -> None:
    assert next_controller_state(before, decode_error_frame(can_id, _data(flags))) is after


@pytest.mark.parametrize(("state", "level"), [(A, 0), (W, 0), (P, 1), (OFF, 2)])
def test_error_level(state: ControllerState, level: int) -> None:
    assert error_level(state) == level


def test_counter_rate_counts_the_last_window() -> None:
    rate = CounterRate(10.0)
    # (time, counter total, expected rate): the count since the newest sample >= 10 s old.
    table = [
        (0.0, 0, 0.0),
        (1.0, 5, 0.5),  # within the first window: divided by the whole window
        (5.0, 100, 10.0),
        (10.0, 100, 10.0),  # the sample at 0.0 is exactly 10 s old: still the base
        (10.5, 100, 10.0),  # 0.0 is still the newest sample at least 10 s old
        (11.0, 100, 9.5),  # now 1.0 (5) is
        (15.0, 100, 0.0),  # base 5.0 (100)
        (15.1, 101, 0.1),
        (40.0, 101, 0.0),  # a long gap: base is the previous sample
        (40.1, 111, 1.0),
    ]
    for now_s, total, expected in table:
        assert rate.update(now_s, total) == pytest.approx(expected), now_s


def test_counter_rate_edges() -> None:
    with pytest.raises(ValueError, match="positive"):
        CounterRate(0.0)
    rate = CounterRate(1.0)
    assert rate.update(5.0, 10) == 0.0
    assert rate.update(4.0, 20) == 0.0  # time ran backwards: starts over
    assert rate.update(4.5, 10) == 0.0  # a counter reset never reads as a negative rate
