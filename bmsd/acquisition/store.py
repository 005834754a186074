"""The latest reading of every source, with the time it arrived.

Written only by the frame handler on the loop thread (or by replay), read by the snapshot
builder once per tick. Arrays are preallocated from the topology so storing a reading is a few
array writes; the time each value last *changed* is kept too, so a frozen sensor can be told
from a steady one.
"""

from __future__ import annotations

import math

import numpy as np

from bmsd.model.readings import (
    BalancingFeedback,
    CellVoltageGroup,
    ContactorFeedback,
    ModuleStatus,
    Quantity,
    Reading,
    ScalarReading,
    SensorStatus,
    TemperatureGroup,
    UnexpectedModule,
)
from bmsd.model.topology import Topology

NEVER = -math.inf


class ReadingStore:
    """Latest value and receive time per cell, sensor, module and pack quantity."""

    def __init__(self, topology: Topology) -> None:
        modules, cells, temps = (
            topology.module_count,
            topology.cells_per_module,
            topology.temps_per_module,
        )
        self.topology = topology
        self.cell_voltage_v = np.full((modules, cells), np.nan)
        self.cell_voltage_at = np.full((modules, cells), NEVER)
        self.cell_voltage_changed_at = np.full((modules, cells), NEVER)
        self.temp_c = np.full((modules, temps), np.nan)
        self.temp_at = np.full((modules, temps), NEVER)
        self.module_seen_at = np.full(modules, NEVER)
        self.module_error_flags = np.zeros(modules, dtype=np.int64)
        self.module_board_temp_c = np.full(modules, np.nan)
        self.module_measurement_request = np.zeros(modules, dtype=np.bool_)
        self.balancing_feedback = np.zeros((modules, cells), dtype=np.bool_)
        self.scalars: dict[Quantity, tuple[float, float]] = {}
        self.scalar_changed_at: dict[Quantity, float] = {}
        self.sensor_status: dict[str, tuple[int, float]] = {}
        self.contactors: ContactorFeedback | None = None
        self.unexpected_nodes: dict[int, float] = {}
        self.readings_applied = 0

    def apply(self, reading: Reading) -> None:
        """Store one reading (dispatch on its type)."""
        self.readings_applied += 1
        if isinstance(reading, CellVoltageGroup):
            module, first = reading.module, reading.first_cell
            end = first + len(reading.voltages_v)
            new = np.asarray(reading.voltages_v)
            changed = new != self.cell_voltage_v[module, first:end]
            self.cell_voltage_changed_at[module, first:end][changed] = reading.received_at
            self.cell_voltage_v[module, first:end] = new
            self.cell_voltage_at[module, first:end] = reading.received_at
            self.module_seen_at[module] = reading.received_at
        elif isinstance(reading, ScalarReading):
            previous = self.scalars.get(reading.quantity)
            if previous is None or previous[0] != reading.value:
                self.scalar_changed_at[reading.quantity] = reading.received_at
            self.scalars[reading.quantity] = (reading.value, reading.received_at)
        elif isinstance(reading, TemperatureGroup):
            module, first = reading.module, reading.first_sensor
            end = first + len(reading.temps_c)
            self.temp_c[module, first:end] = reading.temps_c
            self.temp_at[module, first:end] = reading.received_at
            self.module_seen_at[module] = reading.received_at
        elif isinstance(reading, ModuleStatus):
            module = reading.module
            self.module_error_flags[module] = reading.error_flags
            self.module_board_temp_c[module] = (
                np.nan if reading.board_temp_c is None else reading.board_temp_c
            )
            self.module_measurement_request[module] = reading.measurement_request
            self.module_seen_at[module] = reading.received_at
        elif isinstance(reading, BalancingFeedback):
            bits = [(reading.mask >> k) & 1 == 1 for k in range(reading.group_size)]
            first = reading.first_cell
            self.balancing_feedback[reading.module, first : first + reading.group_size] = bits
            self.module_seen_at[reading.module] = reading.received_at
        elif isinstance(reading, SensorStatus):
            self.sensor_status[reading.source] = (reading.flags, reading.received_at)
        elif isinstance(reading, ContactorFeedback):
            self.contactors = reading
        elif isinstance(reading, UnexpectedModule):
            self.unexpected_nodes[reading.node_id] = reading.received_at

    def scalar(self, quantity: Quantity) -> tuple[float, float] | None:
        """(value, received_at) of a pack quantity, or None if never received."""
        return self.scalars.get(quantity)
