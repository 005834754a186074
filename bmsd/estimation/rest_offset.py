"""Current-sensor offset measured over long relaxed rests with the contactors closed.

Responsibility: from one rest window (the pack at rest, voltages relaxed), compute what the
current sensor's offset must be so that the counted charge agrees with the relaxed voltage.

Why it works: over a relaxed rest the cell's OCV only moves when charge really flows. The
counted charge (the sensor's mean reading) moves with the offset as well. So

    offset = mean measured current − mean bleed − (dV/dt ÷ dOCV/dSOC) · Q · 3600

where dV/dt is the least-squares slope of the cell voltage (minus the model's RC voltages)
over the window. A real standby load makes the OCV fall too, so it lands in the last term and
is not mistaken for an offset: the offset is only the part of the counted charge the voltage
does not confirm. Where the OCV is flat (the LFP plateau) the slope divides a voltage drift
allowance into a huge current uncertainty, so such windows carry (honestly) no weight.

The uncertainty of one window is the regression's own slope error plus a fixed voltage drift
allowance (slow relaxation, temperature): the allowance does not average away with a longer
window, so one window never claims more than it can know. Pure numpy, time passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

SECONDS_PER_HOUR = 3600.0
# A slope below this (V per unit SOC) is treated as this: the window then weighs ~nothing.
_MIN_OCV_SLOPE_V = 1e-3


@dataclass(frozen=True, slots=True)
class RestOffsetSample:
    """One window's offset measurement for the whole pack (per string), A."""

    offset_a: float
    offset_std_a: float
    duration_s: float


def offset_from_rest(
    mean_measured_a: float,
    mean_bleed_a: FloatArray,
    dvdt_v_per_s: FloatArray,
    dvdt_std_v_per_s: FloatArray,
    ocv_slope_v: FloatArray,
    capacity_ah: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Per-cell offset (A) and its standard deviation from one relaxed window (pure)."""
    slope = np.maximum(np.abs(ocv_slope_v), _MIN_OCV_SLOPE_V)
    amps_per_v_per_s = capacity_ah * SECONDS_PER_HOUR / slope
    true_a = dvdt_v_per_s * amps_per_v_per_s
    offset = mean_measured_a - mean_bleed_a - true_a
    std = dvdt_std_v_per_s * amps_per_v_per_s
    return np.asarray(offset, dtype=np.float64), np.asarray(std, dtype=np.float64)


def combine_cells(
    offset_a: FloatArray, std_a: FloatArray, usable: BoolArray
) -> tuple[float, float] | None:
    """One pack offset from the cells: inverse-variance mean, and the smallest single σ.

    The σ is not divided by √cells: the drift allowance (relaxation, temperature) is common to
    all cells of a pack, so more cells do not make it smaller.
    """
    if not usable.any():
        return None
    weight = 1.0 / np.maximum(std_a[usable], 1e-12) ** 2
    value = float(np.sum(weight * offset_a[usable]) / np.sum(weight))
    return value, float(np.min(std_a[usable]))


class RestOffsetWindow:
    """Running least-squares sums of one rest window, per cell (no Python loop over cells)."""

    def __init__(self, cell_count: int) -> None:
        self.cell_count = cell_count
        self.start_s: float | None = None
        self.last_s = 0.0
        self._reset()

    def _reset(self) -> None:
        n = self.cell_count
        self.start_s = None
        self.samples = 0
        self.charge_as = 0.0  # ∫ measured current dt, A·s
        self.bleed_as = np.zeros(n)
        self.valid_samples = np.zeros(n)
        self.sum_t = np.zeros(n)
        self.sum_tt = np.zeros(n)
        self.sum_v = np.zeros(n)
        self.sum_tv = np.zeros(n)
        self.sum_vv = np.zeros(n)
        self.temp_min_c = np.full(n, np.inf)
        self.temp_max_c = np.full(n, -np.inf)

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start_s is None else self.last_s - self.start_s

    def add(
        self,
        now_s: float,
        dt_s: float,
        measured_a: float,
        bleed_a: FloatArray,
        voltage_v: FloatArray,
        valid: BoolArray,
        temp_c: FloatArray,
    ) -> None:
        """One sample: ``voltage_v`` is the cell voltage minus the model's RC voltages."""
        if self.start_s is None:
            self.start_s = now_s
            dt_s = 0.0  # the charge counted before the window is not part of it
        self.last_s = now_s
        self.samples += 1
        self.charge_as += measured_a * dt_s
        self.bleed_as = self.bleed_as + bleed_a * dt_s
        t = now_s - self.start_s
        v = np.where(valid, voltage_v, 0.0)
        w = valid.astype(np.float64)
        self.valid_samples += w
        self.sum_t += w * t
        self.sum_tt += w * t * t
        self.sum_v += v
        self.sum_tv += v * t
        self.sum_vv += v * v
        self.temp_min_c = np.minimum(self.temp_min_c, temp_c)
        self.temp_max_c = np.maximum(self.temp_max_c, temp_c)

    def slope(self, drift_v_per_h: float) -> tuple[FloatArray, FloatArray]:
        """dV/dt per cell (V/s) and its σ: regression error plus the drift allowance."""
        n = np.maximum(self.valid_samples, 1.0)
        sxx = self.sum_tt - self.sum_t**2 / n
        sxy = self.sum_tv - self.sum_t * self.sum_v / n
        syy = self.sum_vv - self.sum_v**2 / n
        safe_sxx = np.maximum(sxx, 1e-12)
        dvdt = sxy / safe_sxx
        residual_var = np.maximum(syy - dvdt * sxy, 0.0) / np.maximum(n - 2.0, 1.0)
        fit_var = residual_var / safe_sxx
        drift = drift_v_per_h / SECONDS_PER_HOUR
        return dvdt, np.sqrt(fit_var + drift * drift)

    def close(
        self,
        *,
        min_duration_s: float,
        drift_v_per_h: float,
        max_temp_change_c: float,
        max_offset_a: float,
        ocv_slope_v: FloatArray,
        capacity_ah: FloatArray,
    ) -> RestOffsetSample | None:
        """End the window: its pack offset sample, or None (too short, unusable, implausible).

        A window whose offset is larger than ``max_offset_a`` is dropped, not clipped: so large
        a gap between counted and confirmed charge is not a sensor offset (a load the voltage
        cannot see, a leak, a wrong OCV table), and must not be counted away.
        """
        duration = self.duration_s
        samples = self.samples
        all_valid = self.valid_samples >= max(samples, 1)
        steady_temp = (self.temp_max_c - self.temp_min_c) <= max_temp_change_c
        charge_as, bleed_as = self.charge_as, self.bleed_as
        dvdt, dvdt_std = self.slope(drift_v_per_h)
        self._reset()
        if duration < min_duration_s or samples < 3:
            return None
        offset, std = offset_from_rest(
            charge_as / duration, bleed_as / duration, dvdt, dvdt_std, ocv_slope_v, capacity_ah
        )
        combined = combine_cells(offset, std, all_valid & steady_temp & np.isfinite(offset))
        if combined is None or abs(combined[0]) > max_offset_a:
            return None
        return RestOffsetSample(combined[0], combined[1], duration)


__all__ = ["RestOffsetSample", "RestOffsetWindow", "combine_cells", "offset_from_rest"]
