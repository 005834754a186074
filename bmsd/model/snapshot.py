"""PackSnapshot: one validated, immutable view of every measurement, built once per tick.

Everything after acquisition (protection, balancing, estimation, publishers) reads only this.
Per-cell values are flat NumPy arrays (module-major, see :class:`bmsd.model.topology.Topology`)
made read-only. A value that is missing, stale or outside its physical range is marked invalid;
invalid values never enter the min/max/average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bmsd.model.readings import ContactorFeedback
from bmsd.model.topology import Location

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Extremes:
    """Minimum, maximum and mean over the valid values, with where the extremes sit."""

    min_value: float
    min_location: Location
    max_value: float
    max_location: Location
    mean: float
    valid_count: int

    @property
    def spread(self) -> float:
        return self.max_value - self.min_value


@dataclass(frozen=True, slots=True)
class PackSnapshot:
    """Every measurement of the pack at one tick, with validity and ages."""

    tick: int
    time_s: float
    cell_voltage_v: FloatArray
    cell_voltage_valid: BoolArray
    temp_c: FloatArray
    temp_valid: BoolArray
    cell_temp_c: FloatArray
    cell_voltage: Extremes | None
    temperature: Extremes | None
    module_age_s: FloatArray
    module_error_flags: IntArray
    module_board_temp_c: FloatArray
    module_measurement_request: BoolArray
    balancing_feedback: BoolArray
    pack_current_a: float | None
    pack_current_age_s: float
    pack_voltage_v: float | None
    pack_voltage_age_s: float
    bus_voltage_v: float | None
    string_voltage_sum_v: FloatArray
    pack_voltage_deviation_v: float | None
    contactors: ContactorFeedback | None
    contactors_age_s: float
    sensor_error_flags: int
    # Diagnostics: fresh readings outside the physical range, and how far the pack's mean cell
    # voltage has moved since some fresh cell voltage last changed by a single LSB (a frozen
    # ADC or a stuck slave no longer follows the pack; at rest nothing moves and nothing is
    # judged, so a quiet ADC on a resting battery is never taken for a frozen one).
    cell_voltage_out_of_range: int = 0
    temp_out_of_range: int = 0
    cell_voltage_frozen_swing_v: float = 0.0
    unexpected_modules: int = 0  # node ids sending module frames the config does not list
    # The fresh current reading even when outside the sensor's range (then pack_current_a is
    # None): an over-current beyond full scale must still reach the over-current faults.
    pack_current_measured_a: float | None = None
    # How long the fresh current reading has not changed, counted only outside the rest band
    # (sensors often report exactly 0 at rest, and a resting battery is no fault).
    pack_current_frozen_s: float = 0.0

    @property
    def all_cells_valid(self) -> bool:
        return bool(self.cell_voltage_valid.all())

    @property
    def all_temps_valid(self) -> bool:
        return bool(self.temp_valid.all())

    @property
    def invalid_cell_count(self) -> int:
        return int(self.cell_voltage_valid.size - np.count_nonzero(self.cell_voltage_valid))
