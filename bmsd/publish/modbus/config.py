"""The ``[modbus]`` section of the config file: listener, limits, writes, EMS supervision."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from bmsd.schema import doc, doc_factory, must_be_positive, must_be_within


@dataclass(frozen=True, slots=True)
class ModbusWritesConfig:
    """Holding-register writes (fault reset, contactor and balancing requests, EMS heartbeat).

    Off by default. When on, a write is accepted only from a client whose address is listed;
    every other write is answered with exception 01 (ILLEGAL FUNCTION) and logged.
    """

    enabled: bool = doc("Accept writes at all", default=False)
    allowed_clients: tuple[str, ...] = doc(
        "Client IP addresses or networks (CIDR, e.g. 192.168.10.0/24) allowed to write",
        default=(),
    )
    command_timeout_s: float = doc(
        "A write that requests something of the control loop waits at most this long for the "
        "answer; then it is answered with exception 04 (SLAVE DEVICE FAILURE)",
        unit="s",
        default=2.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for index, entry in enumerate(self.allowed_clients):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                problems.append(
                    (f"allowed_clients[{index}]", f"{entry!r} is not an IP address or network")
                )
        if self.enabled and not self.allowed_clients:
            problems.append(
                ("allowed_clients", "writes are enabled but no client may write: list at least one")
            )
        problems += must_be_positive(self, "command_timeout_s")
        return problems


@dataclass(frozen=True, slots=True)
class EmsHeartbeatConfig:
    """Supervision of an energy-management system through a heartbeat register.

    The EMS writes a changing value (a counter) to the heartbeat register. Once it has written
    for the first time, bmsd expects a new value within ``timeout_s``; when none comes, the
    fault ``ems_heartbeat_lost`` trips: at its warning level (``action = "derate"``: charge and
    discharge currents derated) or at its fatal level (``action = "fault"``: currents 0,
    contactors open, latched until reset). Needs ``modbus.writes.enabled``.
    """

    enabled: bool = doc("Supervise the EMS heartbeat", default=False)
    timeout_s: float = doc(
        "Longest time between two heartbeat values (at most 3600)", unit="s", default=10.0
    )
    action: Literal["derate", "fault"] = doc(
        "What a lost heartbeat does: derate the currents, or fault (open the contactors)",
        default="derate",
    )

    def check(self) -> list[tuple[str, str]]:
        problems = must_be_positive(self, "timeout_s")
        if self.timeout_s > 3600:  # longer (1e300 was accepted) switches supervision off
            problems.append(("timeout_s", "must be at most 3600 s"))
        return problems


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    """The Modbus TCP server: the native register map and the SunSpec models (docs/modbus.md)."""

    enabled: bool = doc("Run the Modbus TCP server", default=False)
    host: str = doc("Address to listen on; 0.0.0.0 for every interface", default="127.0.0.1")
    port: int = doc(
        "TCP port; 502 is the standard Modbus port (needs privileges); 0 picks a free one",
        default=502,
    )
    unit_id: int = doc(
        "Modbus unit (slave) id this server answers; requests to others get exception 0B",
        default=1,
    )
    max_connections: int = doc(
        "Most simultaneous client connections; a further one replaces the oldest connection "
        "that has not sent a request yet (older than 1 s), else it is closed at once",
        default=16,
    )
    max_connections_per_address: int = doc(
        "Most simultaneous connections from one IP address (IPv6: one /64), so one host "
        "cannot take every slot; a further one replaces that host's oldest connection that "
        "has not sent a request yet (older than 1 s), else it is closed at once. Clients "
        "behind one NAT, or all local tools with host = 127.0.0.1, count as one host; "
        "0: only max_connections",
        default=8,
    )
    idle_timeout_s: float = doc(
        "A connection that gets no request answered for this long is closed; 0: never",
        unit="s",
        default=60.0,
    )
    frame_timeout_s: float = doc(
        "Bytes that do not form a complete request within this long (a slow or truncated "
        "frame, garbage, a wrong protocol id) close the connection",
        unit="s",
        default=5.0,
    )
    max_cpu_share: float = doc(
        "Most CPU time the server thread may use, as a share of one core (averaged, with a "
        "burst of 0.1 s); beyond it the server stops reading from clients and refuses new "
        "connections until it is back within, so a flood cannot delay the control tick "
        "(the thread shares the interpreter lock with the control loop). The default leaves "
        "a fifth of a core to the loop and the CAN receivers, which need about 15 %; a lower "
        "share caps a fleet of busy pollers below what the server can serve",
        default=0.8,
    )
    max_state_age_s: float = doc(
        "A read is answered with exception 04 (SLAVE DEVICE FAILURE) when the newest pack "
        "state is older than this (a stalled control loop), never with stale numbers; at "
        "most 3600",
        unit="s",
        default=1.0,
    )
    sunspec: bool = doc(
        "Serve the SunSpec models (1, 802, 803, 804, 805) at holding register 40000",
        default=True,
    )
    manufacturer: str = doc("SunSpec common model: manufacturer (Mn)", default="bmsd")
    model: str = doc("SunSpec common model: model name (Md)", default="bmsd battery")
    serial_number: str = doc("SunSpec common model: serial number (SN)", default="")
    writes: ModbusWritesConfig = doc_factory("Holding-register writes", ModbusWritesConfig)
    ems_heartbeat: EmsHeartbeatConfig = doc_factory("EMS heartbeat supervision", EmsHeartbeatConfig)

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        problems += must_be_within(self, "port", 0, 65535)
        problems += must_be_within(self, "unit_id", 1, 247)
        problems += must_be_within(self, "max_connections", 1, 1000)
        problems += must_be_within(self, "max_connections_per_address", 0, 1000)
        if self.idle_timeout_s < 0:
            problems.append(("idle_timeout_s", "must not be negative"))
        problems += must_be_positive(self, "max_state_age_s")
        if self.max_state_age_s > 3600:  # longer serves numbers of a dead loop as current
            problems.append(("max_state_age_s", "must be at most 3600 s"))
        problems += must_be_positive(self, "frame_timeout_s")
        problems += must_be_within(self, "max_cpu_share", 0.01, 1.0)
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            problems.append(("host", f"{self.host!r} is not an IP address"))
        for key, limit in (("manufacturer", 32), ("model", 32), ("serial_number", 32)):
            value = getattr(self, key)
            if not value.isascii() or len(value) > limit:
                problems.append((key, f"must be ASCII of at most {limit} characters"))
        if self.ems_heartbeat.enabled and not self.writes.enabled:
            problems.append(
                ("ems_heartbeat.enabled", "needs modbus.writes.enabled (the EMS writes it)")
            )
        return problems
