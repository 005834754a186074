"""Building the validated PackSnapshot from the reading store, once per tick.

Raw measurements are validated here and only here: a value is valid when it has arrived, is
not older than its source's timeout and lies inside the physical range from the config.
Everything after acquisition trusts the validity flags and never looks at raw readings.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

from bmsd.acquisition.store import ReadingStore
from bmsd.config import AcquisitionConfig
from bmsd.model.readings import Quantity
from bmsd.model.snapshot import BoolArray, Extremes, FloatArray, PackSnapshot
from bmsd.model.topology import Topology

NDArrayT = TypeVar("NDArrayT", bound=np.ndarray[Any, Any])


class SnapshotBuilder:
    """Validates the store's latest readings into an immutable PackSnapshot."""

    def __init__(
        self, topology: Topology, config: AcquisitionConfig, start_s: float = -math.inf
    ) -> None:
        self._topology = topology
        self._config = config
        # A source never heard from has been silent since the start, not forever: silence
        # faults then trip after their own threshold, which gives slaves time to boot.
        self._start_s = start_s
        sensor_of_cell = [topology.cell_temp_sensor(c) for c in range(topology.cells_per_module)]
        # Flat temperature index of the sensor nearest to every flat cell index.
        self._cell_sensor = np.array(
            [
                module * topology.temps_per_module + sensor_of_cell[cell]
                for module in range(topology.module_count)
                for cell in range(topology.cells_per_module)
            ],
            dtype=np.int64,
        )
        # Frozen-measurement evidence: the pack's accumulated voltage movement, and per cell
        # its lowest and highest value since that cell's reading last changed.
        cells = topology.cell_count
        self._level_v = 0.0
        self._level_low_v = np.zeros(cells)
        self._level_high_v = np.zeros(cells)
        self._seen_change_at = np.full(cells, -np.inf)
        self._prev_v = np.full(cells, np.nan)
        self._prev_valid = np.zeros(cells, dtype=bool)

    def build(self, store: ReadingStore, tick: int, now: float) -> PackSnapshot:
        topology, config = self._topology, self._config
        v_low, v_high = config.cell_voltage_range_v
        t_low, t_high = config.temp_range_c

        cell_voltage_v = store.cell_voltage_v.reshape(-1).copy()
        cell_fresh = (now - store.cell_voltage_at.reshape(-1)) <= config.module_timeout_s
        with np.errstate(invalid="ignore"):
            cell_valid = cell_fresh & (cell_voltage_v >= v_low) & (cell_voltage_v <= v_high)

        temp_c = store.temp_c.reshape(-1).copy()
        temp_fresh = (now - store.temp_at.reshape(-1)) <= config.temp_timeout_s
        with np.errstate(invalid="ignore"):
            temp_valid = temp_fresh & (temp_c >= t_low) & (temp_c <= t_high)

        if topology.temps_per_module > 0:
            cell_temp_c = np.where(temp_valid, temp_c, np.nan)[self._cell_sensor]
        else:
            cell_temp_c = np.full(topology.cell_count, np.nan)

        sensor_error_flags = 0
        for flags, _at in store.sensor_status.values():
            sensor_error_flags |= flags
        current_a, current_age_s = self._scalar(store, Quantity.PACK_CURRENT_A, now)
        current_fresh = current_a is not None and current_age_s <= config.current_sensor_timeout_s
        measured_current_a = current_a if current_fresh and not sensor_error_flags else None
        current_frozen_s = 0.0
        if current_fresh and abs(current_a or 0.0) > config.current_rest_band_a:
            current_frozen_s = now - store.scalar_changed_at.get(Quantity.PACK_CURRENT_A, now)
        low_a, high_a = config.current_range_a
        if current_a is not None and (
            current_age_s > config.current_sensor_timeout_s
            or not low_a <= current_a <= high_a
            or sensor_error_flags
        ):
            current_a = None
        pack_voltage_v, pack_voltage_age_s = self._scalar(store, Quantity.PACK_VOLTAGE_V, now)
        if pack_voltage_v is not None and (
            pack_voltage_age_s > config.current_sensor_timeout_s
            or pack_voltage_v < 0
            or sensor_error_flags
        ):
            pack_voltage_v = None
        bus_voltage_v, bus_age_s = self._scalar(store, Quantity.BUS_VOLTAGE_V, now)
        if bus_voltage_v is not None and bus_age_s > config.switchbox_timeout_s:
            bus_voltage_v = None

        with np.errstate(invalid="ignore"):
            voltage_out = cell_fresh & ((cell_voltage_v < v_low) | (cell_voltage_v > v_high))
            temp_out = temp_fresh & ((temp_c < t_low) | (temp_c > t_high))
        frozen_swing_v = self._frozen_swing_v(
            store.cell_voltage_changed_at.reshape(-1), cell_voltage_v, cell_valid
        )

        contactors = store.contactors
        contactors_age_s = (
            now - self._start_s if contactors is None else now - contactors.received_at
        )
        if contactors_age_s > config.switchbox_timeout_s:
            contactors = None

        string_sums = self._string_sums(cell_voltage_v, cell_valid)
        deviation = None
        valid_sums = string_sums[~np.isnan(string_sums)]
        if pack_voltage_v is not None and valid_sums.size:
            deviation = float(pack_voltage_v - valid_sums.mean())

        return PackSnapshot(
            tick=tick,
            time_s=now,
            cell_voltage_v=_frozen(cell_voltage_v),
            cell_voltage_valid=_frozen(cell_valid),
            temp_c=_frozen(temp_c),
            temp_valid=_frozen(temp_valid),
            cell_temp_c=_frozen(cell_temp_c),
            cell_voltage=self._extremes(cell_voltage_v, cell_valid, cells=True),
            temperature=self._extremes(temp_c, temp_valid, cells=False),
            module_age_s=_frozen(now - np.maximum(store.module_seen_at, self._start_s)),
            module_error_flags=_frozen(store.module_error_flags.copy()),
            module_board_temp_c=_frozen(store.module_board_temp_c.copy()),
            module_measurement_request=_frozen(store.module_measurement_request.copy()),
            balancing_feedback=_frozen(store.balancing_feedback.reshape(-1).copy()),
            pack_current_a=current_a,
            pack_current_age_s=current_age_s,
            pack_voltage_v=pack_voltage_v,
            pack_voltage_age_s=pack_voltage_age_s,
            bus_voltage_v=bus_voltage_v,
            string_voltage_sum_v=_frozen(string_sums),
            pack_voltage_deviation_v=deviation,
            contactors=contactors,
            contactors_age_s=contactors_age_s,
            sensor_error_flags=sensor_error_flags,
            cell_voltage_out_of_range=int(np.count_nonzero(voltage_out)),
            temp_out_of_range=int(np.count_nonzero(temp_out)),
            cell_voltage_frozen_swing_v=frozen_swing_v,
            pack_current_measured_a=measured_current_a,
            pack_current_frozen_s=current_frozen_s,
            unexpected_modules=sum(
                1 for at in store.unexpected_nodes.values() if now - at <= config.module_timeout_s
            ),
        )

    def _scalar(
        self, store: ReadingStore, quantity: Quantity, now: float
    ) -> tuple[float | None, float]:
        found = store.scalar(quantity)
        if found is None:
            return None, now - self._start_s
        value, received_at = found
        return value, now - received_at

    def _frozen_swing_v(
        self, changed_at: FloatArray, voltage_v: FloatArray, valid: BoolArray
    ) -> float:
        """How far the pack's cell voltages moved since the stalest fresh cell changed.

        A healthy cell follows the pack: when the pack moves by several LSB (a load step, a
        charge), every healthy reading changes at least once. One that does not is frozen.
        The pack's movement is accumulated from the mean change of the cells valid in both
        this tick and the last, so a module going silent or coming back (which changes which
        cells a plain mean covers) is not taken for movement.
        """
        both = valid & self._prev_valid
        if both.any():
            self._level_v += float((voltage_v[both] - self._prev_v[both]).mean())
        self._prev_v = voltage_v.copy()
        self._prev_valid = valid.copy()
        level, low, high = self._level_v, self._level_low_v, self._level_high_v
        # Start afresh where the reading changed, and where it cannot be judged (stale or
        # invalid): a cell coming back is judged from then on, not on what it missed.
        restart = (changed_at > self._seen_change_at) | ~valid
        self._seen_change_at = changed_at.copy()
        np.minimum(low, level, out=low)
        np.maximum(high, level, out=high)
        low[restart] = level
        high[restart] = level
        return float((high - low)[valid].max()) if valid.any() else 0.0

    def _string_sums(self, voltage_v: FloatArray, valid: BoolArray) -> FloatArray:
        per_string = self._topology.cells_per_string
        shaped_v = voltage_v.reshape(self._topology.strings, per_string)
        shaped_ok = valid.reshape(self._topology.strings, per_string)
        sums = np.where(shaped_ok, shaped_v, 0.0).sum(axis=1)
        # A string with any invalid cell has no trustworthy sum.
        return np.where(shaped_ok.all(axis=1), sums, np.nan)

    def _extremes(self, values: FloatArray, valid: BoolArray, *, cells: bool) -> Extremes | None:
        count = int(np.count_nonzero(valid))
        if count == 0:
            return None
        masked_low = np.where(valid, values, np.inf)
        masked_high = np.where(valid, values, -np.inf)
        low_index = int(np.argmin(masked_low))
        high_index = int(np.argmax(masked_high))
        locate = self._topology.cell_location if cells else self._topology.temp_location
        return Extremes(
            min_value=float(values[low_index]),
            min_location=locate(low_index),
            max_value=float(values[high_index]),
            max_location=locate(high_index),
            mean=float(values[valid].mean()),
            valid_count=count,
        )


def _frozen(array: NDArrayT) -> NDArrayT:
    array.flags.writeable = False
    return array
