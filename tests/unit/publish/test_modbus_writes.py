"""Write validation, client filter and EMS heartbeat supervision, edge by edge."""

from __future__ import annotations

import pytest

from bmsd.model.bms import Request
from bmsd.publish.modbus.config import EmsHeartbeatConfig
from bmsd.publish.modbus.writes import (
    ClientFilter,
    EmsHeartbeat,
    IllegalWriteError,
    WriteKind,
    request_for,
)


@pytest.mark.parametrize(
    ("kind", "value", "wanted"),
    [
        (WriteKind.FAULT_RESET, 1, Request.RESET),
        (WriteKind.CONTACTOR, 1, Request.CLOSE),
        (WriteKind.CONTACTOR, 2, Request.OPEN),
        (WriteKind.CONNECT, 1, Request.CLOSE),
        (WriteKind.CONNECT, 2, Request.OPEN),
        (WriteKind.BALANCING, 1, Request.BALANCING_ON),
        (WriteKind.BALANCING, 0, Request.BALANCING_OFF),
        (WriteKind.HEARTBEAT, 0, None),
        (WriteKind.HEARTBEAT, 65535, None),
    ],
)
def test_accepted_values(kind: WriteKind, value: int, wanted: Request | None) -> None:
    assert request_for(kind, value) is wanted


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (WriteKind.FAULT_RESET, 0),
        (WriteKind.FAULT_RESET, 2),
        (WriteKind.CONTACTOR, 0),
        (WriteKind.CONTACTOR, 3),
        (WriteKind.CONNECT, 0),
        (WriteKind.BALANCING, 2),
    ],
)
def test_illegal_values(kind: WriteKind, value: int) -> None:
    with pytest.raises(IllegalWriteError):
        request_for(kind, value)


def test_client_filter() -> None:
    clients = ClientFilter.of(("127.0.0.1", "10.1.0.0/16", "fd00::1"))
    assert clients.allows("127.0.0.1")
    assert clients.allows("10.1.200.3")
    assert clients.allows("::ffff:127.0.0.1")  # IPv4 client on a dual-stack socket
    assert clients.allows("fd00::1")
    assert not clients.allows("127.0.0.2")
    assert not clients.allows("10.2.0.1")
    assert not clients.allows(None)
    assert not clients.allows("not-an-address")
    assert not ClientFilter.of(()).allows("127.0.0.1")


@pytest.mark.parametrize(
    ("action", "lost"),
    [("derate", 1.0), ("fault", 2.0)],
)
def test_heartbeat_timeline(action: str, lost: float) -> None:
    config = EmsHeartbeatConfig(enabled=True, timeout_s=10.0, action=action)  # type: ignore[arg-type]
    heartbeat = EmsHeartbeat(config)
    assert heartbeat.supervision(100.0) is None  # not judged before the first write
    assert heartbeat.write(5, 100.0, "c")
    assert heartbeat.supervision(100.0) == 0.0
    assert heartbeat.supervision(110.0) == 0.0  # exactly at the timeout: still on time
    assert heartbeat.supervision(110.001) == lost
    assert not heartbeat.write(5, 111.0, "c")  # the same value again is not a heartbeat
    assert heartbeat.supervision(111.0) == lost
    assert heartbeat.write(6, 112.0, "c")
    assert heartbeat.supervision(112.0) == 0.0
    assert heartbeat.age_s(115.0) == pytest.approx(3.0)


def test_heartbeat_not_supervised_when_disabled() -> None:
    heartbeat = EmsHeartbeat(EmsHeartbeatConfig(enabled=False))
    heartbeat.write(1, 0.0, "c")
    assert heartbeat.supervision(1000.0) is None
    assert heartbeat.age_s(1000.0) is None
    assert heartbeat.value == 1
