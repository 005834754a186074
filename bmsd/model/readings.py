"""Decoded readings: what one CAN frame said, with the time it was received.

``received_at`` is on the acquisition clock: the monotonic clock when live, the log's own
clock when replaying. Readings are made by ``bmsd.canbus`` and consumed by
``bmsd.acquisition`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class CellVoltageGroup:
    """Consecutive cell voltages of one module (one multiplexed frame)."""

    module: int
    first_cell: int
    voltages_v: tuple[float, ...]
    received_at: float


@dataclass(frozen=True, slots=True)
class TemperatureGroup:
    """Consecutive temperature sensor values of one module."""

    module: int
    first_sensor: int
    temps_c: tuple[float, ...]
    received_at: float


@dataclass(frozen=True, slots=True)
class ModuleStatus:
    """A module's own health report."""

    module: int
    error_flags: int
    board_temp_c: float | None
    measurement_request: bool
    received_at: float


@dataclass(frozen=True, slots=True)
class BalancingFeedback:
    """Which cells of a group a module reports as bleeding (bit k = cell first_cell + k)."""

    module: int
    first_cell: int
    group_size: int
    mask: int
    received_at: float


class Quantity(StrEnum):
    """Pack-level scalar measurements, from whichever sensor the protocol maps to them."""

    PACK_CURRENT_A = "pack_current_a"
    PACK_VOLTAGE_V = "pack_voltage_v"
    BUS_VOLTAGE_V = "bus_voltage_v"
    SENSOR_TEMP_C = "sensor_temp_c"


@dataclass(frozen=True, slots=True)
class ScalarReading:
    """One pack-level measurement."""

    quantity: Quantity
    value: float
    received_at: float


@dataclass(frozen=True, slots=True)
class UnexpectedModule:
    """A module frame from a node id the configuration does not list."""

    node_id: int
    received_at: float


@dataclass(frozen=True, slots=True)
class SensorStatus:
    """A status signal of the current sensor; any bit set marks its readings faulty."""

    source: str
    flags: int
    received_at: float


@dataclass(frozen=True, slots=True)
class ContactorFeedback:
    """Auxiliary-contact feedback of the HV switch box."""

    minus_closed: bool
    plus_closed: bool
    precharge_closed: bool
    received_at: float


Reading = (
    CellVoltageGroup
    | TemperatureGroup
    | ModuleStatus
    | BalancingFeedback
    | ScalarReading
    | SensorStatus
    | ContactorFeedback
    | UnexpectedModule
)
