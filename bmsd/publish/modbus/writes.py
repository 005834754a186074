"""Holding-register writes: who may write, what each writable register accepts, and the EMS
heartbeat supervision.

Pure logic with the time passed in; the server (``server.py``) calls it and sends the
resulting requests through the control loop's command queue.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bmsd.model.bms import Request
from bmsd.publish.modbus.config import EmsHeartbeatConfig

HEARTBEAT_INPUT = "ems_heartbeat_timeout"
"""Name of the supervision input (bmsd.control.supervision) the EMS heartbeat provides."""

HEARTBEAT_OK = 0.0
HEARTBEAT_LOST_DERATE = 1.0  # trips the warning level of ems_heartbeat_lost
HEARTBEAT_LOST_FAULT = 2.0  # trips its fatal level too


class WriteKind(StrEnum):
    """What a writable register does."""

    FAULT_RESET = "fault_reset"
    CONTACTOR = "contactor"  # 1 close, 2 open (native)
    CONNECT = "connect"  # SunSpec SetOp: 1 CONNECT, 2 DISCONNECT
    BALANCING = "balancing"
    HEARTBEAT = "heartbeat"


class IllegalWriteError(ValueError):
    """A value the register does not accept (answered with ILLEGAL DATA VALUE)."""


def request_for(kind: WriteKind, value: int) -> Request | None:
    """The control-loop request a written value asks for; None for the heartbeat.

    Raises :class:`IllegalWriteError` for a value outside the register's range.
    """
    if kind is WriteKind.FAULT_RESET:
        if value != 1:
            raise IllegalWriteError(f"fault reset takes 1, not {value}")
        return Request.RESET
    if kind in (WriteKind.CONTACTOR, WriteKind.CONNECT):
        if value == 1:
            return Request.CLOSE
        if value == 2:
            return Request.OPEN
        raise IllegalWriteError(f"contactor request takes 1 (close) or 2 (open), not {value}")
    if kind is WriteKind.BALANCING:
        if value == 1:
            return Request.BALANCING_ON
        if value == 0:
            return Request.BALANCING_OFF
        raise IllegalWriteError(f"balancing enable takes 0 or 1, not {value}")
    return None


@dataclass(frozen=True, slots=True)
class ClientFilter:
    """The client addresses allowed to write."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def of(cls, entries: Sequence[str]) -> ClientFilter:
        return cls(tuple(ipaddress.ip_network(entry, strict=False) for entry in entries))

    def allows(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class EmsHeartbeat:
    """Watches the EMS heartbeat register: a new value must arrive within the timeout.

    Supervision starts with the first value the EMS writes (an EMS that never writes is not
    supervised). The supervision value (:meth:`supervision`) is None while it cannot be
    judged, 0 while heartbeats arrive, and 1 (derate) or 2 (fault) once one is late.
    """

    def __init__(self, config: EmsHeartbeatConfig) -> None:
        self._config = config
        self.value = 0
        self.last_change_s: float | None = None
        self.client: str | None = None

    def write(self, value: int, now: float, client: str) -> bool:
        """Record a written value; True when it is a new heartbeat (the value changed)."""
        changed = self.last_change_s is None or value != self.value
        self.value = value
        self.client = client
        if changed:
            self.last_change_s = now
        return changed

    def age_s(self, now: float) -> float | None:
        if not self._config.enabled or self.last_change_s is None:
            return None
        return max(0.0, now - self.last_change_s)

    def supervision(self, now: float) -> float | None:
        age = self.age_s(now)
        if age is None:
            return None
        if age <= self._config.timeout_s:
            return HEARTBEAT_OK
        return HEARTBEAT_LOST_FAULT if self._config.action == "fault" else HEARTBEAT_LOST_DERATE
