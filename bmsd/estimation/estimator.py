"""Per-cell SOC/SOH estimator: a vectorised Kalman filter on the equivalent-circuit model.

Responsibility: turn one tick of measurements (pack current, every cell voltage and
temperature) into :class:`~bmsd.model.estimates.Estimates`, and save/restore its own state.
All cells are processed at once with numpy; there is no Python loop over cells.

State of each cell group (one filter per cell, same equations for all)::

    x = [soc, v_rc1, (v_rc2), v_bias, i_offset]

- soc: coulomb counting ``soc += η·(I − i_offset)·dt / (3600·Q)`` underneath (η on charge);
- v_rc: RC-pair voltages, exact zero-order-hold update;
- v_bias: slowly varying model voltage error (first-order Gauss-Markov, ``model_error_v``,
  ``model_error_time_s``), so a persistent OCV/resistance mismatch is not read as SOC;
- i_offset: current-sensor offset, a *consider* state: its uncertainty enters the SOC
  uncertainty (which therefore grows linearly in time, as a real offset makes it), but only
  measurements with the current known to be zero move its value, and long relaxed rests with
  the contactors closed (the counted charge the relaxed voltage does not confirm, see
  bmsd/estimation/rest_offset.py).

Measurement: ``v = OCV(soc, T) + g·R0·(I − i_offset) + v_rc1 + v_rc2 + v_bias + noise``. The OCV
is linearised by statistical linear regression over three sigma points in SOC (±√3·σ), not at
the point estimate, so a wrong prior in the LFP plateau next to a steep knee does not produce a
huge, wrong gain; the linearisation residual is added to the measurement variance. Where the
OCV is flat the regression slope is small: the gain shrinks and the process noise, the gain and
offset error make the SOC variance grow — the uncertainty honestly says the voltage is mute.

While resting, the update is rate-limited (``ocv_drift_rate_per_h``): the OCV correction is a
drift, never a jump (the Joseph-form covariance update stays exact for the shortened gain).
Anchors: end of constant-voltage charge (SOC 1) and end of discharge (IR-compensated OCV) are
scalar measurements with ``anchor_soc_std``. See docs/estimation.md for the full method.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bmsd.estimation.pack import PackSocTracker, pack_window
from bmsd.estimation.rest_offset import RestOffsetSample, RestOffsetWindow
from bmsd.estimation.settings import EstimationConfig
from bmsd.estimation.soh import (
    CAPACITY_FRACTION_RANGE,
    GROWTH_RANGE,
    CapacityLearner,
    ResistanceRls,
)
from bmsd.model.cell import CellModel
from bmsd.model.estimates import Estimates
from bmsd.system.statefile import read_state, set_aside, write_state
from bmsd.system.statewriter import StateJob

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

STATE_KIND = "estimates"
STATE_VERSION = 1
SECONDS_PER_HOUR = 3600.0
DEFAULT_TEMP_C = 25.0
# Model voltage error when neither the configuration nor the cell file gives one.
DEFAULT_MODEL_ERROR_V = 0.010
# Margin of the default full/empty detection voltages inside the cell file's window.
_FULL_MARGIN_V = 0.05
_EMPTY_MARGIN_V = 0.05
# Period of the relaxation check (dV/dt over this window) at rest.
_RELAX_WINDOW_S = 60.0
# Small process noise on the RC voltages (V²/s): keeps their covariance from collapsing.
_RC_NOISE_V2_PER_S = 1e-9
# A cell's SOC state is kept inside the OCV table's range plus this much (the look-ups clamp).
_SOC_LIMITS = (0.0, 1.0)
# Largest factor by which the adaptive measurement noise may exceed the configured one.
_MAX_R_SCALE = 100.0
# Shortest distance of the sigma points from the mean (SOC), so the slope is never a point one.
_MIN_SIGMA_STEP = 0.002


def _readonly(values: FloatArray) -> FloatArray:
    copy = np.array(values, dtype=np.float64)
    copy.flags.writeable = False
    return copy


class Estimator:
    """SOC/SOH estimator for ``cell_count`` cell groups in series (per string)."""

    def __init__(
        self,
        cell: CellModel,
        cell_count: int,
        cells_in_parallel: int,
        config: EstimationConfig,
        cell_capacity_ah: float | None = None,
        *,
        strings: int = 1,
    ) -> None:
        if cell_count < 1 or cells_in_parallel < 1 or strings < 1:
            raise ValueError("cell_count, cells_in_parallel and strings must be at least 1")
        self.cell = cell
        self.config = config
        self.cell_count = cell_count
        self.cells_in_parallel = cells_in_parallel
        self.strings = strings
        info = cell.info
        self.nominal_cell_ah = float(cell_capacity_ah or info.capacity_ah)
        # A "cell" is the measured group of cells in parallel; all values are per group.
        self.nominal_ah = self.nominal_cell_ah * cells_in_parallel
        self.efficiency = float(
            config.coulombic_efficiency
            if config.coulombic_efficiency is not None
            else info.coulombic_efficiency
        )
        self.full_voltage_v = config.full_voltage_v or info.max_voltage_v - _FULL_MARGIN_V
        self.empty_voltage_v = config.empty_voltage_v or info.min_voltage_v + _EMPTY_MARGIN_V
        # The model error: configured, else the fit RMSE the cell file carries, else a default.
        self.model_error_v = float(
            config.model_error_v
            if config.model_error_v is not None
            else info.model_error_v or DEFAULT_MODEL_ERROR_V
        )
        # A relaxed rest voltage carries only the OCV table's error: the cell file's measured
        # one (fit-cell, leave-one-out over its rests), else the default; never above the model's.
        self.ocv_error_v = min(self.model_error_v, info.ocv_error_v or DEFAULT_MODEL_ERROR_V)
        self.rc_count = 2 if cell.has_second_rc else 1
        n = cell_count
        self._k = 3 + self.rc_count  # soc, rc..., bias, offset
        self._i_bias = 1 + self.rc_count
        self._i_offset = 2 + self.rc_count
        self._diag = np.arange(self._k)
        # Structure of arrays: x[i] and p[i, j] are length-n vectors, so every operation is a
        # handful of whole-array numpy calls (batched 4x4 matmuls are far slower).
        self._x: FloatArray = np.zeros((self._k, n))
        self._p: FloatArray = np.zeros((self._k, self._k, n))
        # Sensitivity of the state error to a slow model voltage error the bias state cannot
        # follow (Schmidt's consider analysis, reporting only: it widens soc_std, never the gain).
        self._sens: FloatArray = np.zeros((self._k, n))
        self._slow_error_scale = 1.0
        # Sensitivity of the state error to the capacity error, in units of the capacity
        # learner's own σ at the time the charge was counted (consider analysis, reporting
        # only): the SOC error between corrections is the counted SOC change × σ_Q/Q.
        self._cap_sens: FloatArray = np.zeros((self._k, n))
        self._temp_c: FloatArray = np.full(n, DEFAULT_TEMP_C)
        self.capacity = CapacityLearner(
            np.full(n, self.nominal_ah),
            prior_std=config.capacity_prior_std,
            offset_prior_std_a=config.current_offset_std_c_rate * self.nominal_ah,
            min_swing=config.capacity_min_soc_swing,
            forgetting=config.capacity_forgetting,
        )
        self.resistance = ResistanceRls(n, forgetting=config.rls_forgetting)
        self._params_time_s = -math.inf
        self._r0: FloatArray = np.zeros(n)
        self._r1: FloatArray = np.zeros(n)
        self._tau1: FloatArray = np.ones(n)
        self._r2: FloatArray = np.zeros(n)
        self._tau2: FloatArray = np.ones(n)
        self._last_time_s: float | None = None
        # Cached OCV regression (see _linearise); -inf time forces the first computation.
        self._slr_time_s = -math.inf
        self._slr_soc: FloatArray = np.zeros(n)
        self._slr_step: FloatArray = np.ones(n)
        self._slr_sigma: FloatArray = np.zeros(n)
        self._slr_mean: FloatArray = np.zeros(n)
        self._slr_slope: FloatArray = np.zeros(n)
        self._slr_residual_var: FloatArray = np.zeros(n)
        self._last_current_a: float | None = None  # cell-group current of the last step
        # Charge bled per cell group by balancing (never seen by the pack current sensor).
        self._bled_ah: FloatArray = np.zeros(n)
        self._bleed_a: FloatArray = np.zeros(n)
        self._last_voltage_v: FloatArray = np.full(n, np.nan)
        self._rest_s = 0.0
        self._full_timer_s: FloatArray = np.zeros(n)
        self._full_done: BoolArray = np.zeros(n, dtype=np.bool_)
        self._empty_timer_s: FloatArray = np.zeros(n)
        self._empty_done: BoolArray = np.zeros(n, dtype=np.bool_)
        self._relax_ref_v: FloatArray = np.full(n, np.nan)
        self._relax_ref_time_s = 0.0
        self._relax_dvdt: FloatArray = np.full(n, np.inf)
        self._ocv_taken: BoolArray = np.zeros(n, dtype=np.bool_)
        self.net_ah = 0.0  # per cell group: η-weighted, offset-corrected charge counter
        self.moved_ah = 0.0  # per cell group: sum of |charge|
        self.charge_throughput_ah = 0.0  # pack
        self.discharge_throughput_ah = 0.0
        self.charge_energy_wh = 0.0
        self.discharge_energy_wh = 0.0
        self.anchored = ""
        self.anchored_at_s = math.nan
        self._current_valid = True
        self._save_time_s = -math.inf
        self._soh_resistance = 1.0
        self._nis: FloatArray = np.ones(n)
        self._nis_keep = 1.0
        self._r_scale: FloatArray = np.ones(n)
        self.pack = PackSocTracker(
            config.pack_soc_drift_rate_per_h, config.pack_soc_correction_fraction
        )
        self._pack_charge_ah = 0.0  # charge through one cell group since the last estimate
        self._pack_dt_s = 0.0
        self._pack_direction = 0
        self._rest_window = RestOffsetWindow(n)
        self.rest_offset_samples = 0  # windows whose offset was used (diagnostics, bench)
        self._reset_covariance(np.full(n, 0.5), np.full(n, 0.3))

    # --- set-up ----------------------------------------------------------------------------

    @property
    def nominal_c_a(self) -> float:
        """1C current of one cell group, A."""
        return self.nominal_ah

    def _reset_covariance(self, soc: FloatArray, soc_std: FloatArray) -> None:
        cfg = self.config
        n, k = self.cell_count, self._k
        offset_mean = self._offset_mean if self._x.shape == (k, n) else 0.0
        self.pack.value = None  # the reported pack SOC restarts from the new per-cell values
        self._x = np.zeros((k, n))
        self._x[0] = np.clip(soc, *_SOC_LIMITS)
        self._x[self._i_offset] = offset_mean
        self._p = np.zeros((k, k, n))
        self._p[0, 0] = soc_std**2
        self._sens = np.zeros((k, n))
        self._cap_sens = np.zeros((k, n))
        for j in range(1, 1 + self.rc_count):
            self._p[j, j] = (0.01 * self.model_error_v) ** 2
        self._p[self._i_bias, self._i_bias] = self.model_error_v**2
        offset_std = cfg.current_offset_std_c_rate * self.nominal_c_a
        self._p[self._i_offset, self._i_offset] = offset_std**2

    @property
    def _offset_mean(self) -> float:
        return float(self._x[self._i_offset, 0]) if self._x.size else 0.0

    def _clean_temp(self, cell_temp_c: ArrayLike) -> FloatArray:
        temp = np.asarray(cell_temp_c, dtype=np.float64)
        temp = np.broadcast_to(temp, (self.cell_count,))
        known = np.isfinite(temp)
        self._temp_c = np.where(known, temp, self._temp_c)
        return self._temp_c

    def initialise_from_ocv(self, cell_voltage_v: ArrayLike, cell_temp_c: ArrayLike) -> None:
        """Start every cell from the SOC its voltage gives as an OCV, with a wide uncertainty.

        The cells may not be relaxed and the OCV may be flat: the standard deviation is
        ``initial_soc_std`` combined with the model error divided by the local OCV slope.
        Invalid or non-finite voltages give SOC 0.5 with a standard deviation of 0.5.
        """
        temp = self._clean_temp(cell_temp_c)
        voltage = np.broadcast_to(np.asarray(cell_voltage_v, dtype=np.float64), temp.shape)
        good = np.isfinite(voltage)
        soc = np.where(good, self.cell.soc_from_ocv(np.where(good, voltage, 3.0), temp), 0.5)
        slope = np.maximum(np.abs(self.cell.docv_dsoc(soc, temp)), 1e-3)
        cfg = self.config
        std = np.sqrt(cfg.initial_soc_std**2 + (self.model_error_v / slope) ** 2)
        std = np.where(good, np.minimum(std, 0.5), 0.5)
        self._reset_covariance(soc, std)
        self._last_voltage_v = np.where(good, voltage, np.nan)

    def set_soc(self, soc: ArrayLike, soc_std: ArrayLike) -> None:
        """Start every cell from a given SOC and standard deviation (offline runs, tests)."""
        n = self.cell_count
        self._reset_covariance(
            np.broadcast_to(np.asarray(soc, dtype=np.float64), (n,)).copy(),
            np.broadcast_to(np.asarray(soc_std, dtype=np.float64), (n,)).copy(),
        )

    # --- the tick --------------------------------------------------------------------------

    def _refresh_parameters(self, now_s: float, soc: FloatArray, temp: FloatArray) -> None:
        if now_s - self._params_time_s < self.config.parameter_refresh_s:
            return
        cell, p = self.cell, self.cells_in_parallel
        growth = self.resistance.growth
        # Parallel cells: resistances divide by p, time constants stay.
        self._r0 = cell.r0_ohm(soc, temp) * growth / p
        self._r1 = cell.r1_ohm(soc, temp) * growth / p
        self._tau1 = cell.tau1_s(soc, temp)
        r2, tau2 = cell.r2_ohm(soc, temp), cell.tau2_s(soc, temp)
        if r2 is not None and tau2 is not None:
            self._r2 = r2 * growth / p
            self._tau2 = tau2
        self._params_time_s = now_s

    def _linearise(self, soc: FloatArray, temp: FloatArray) -> None:
        """Statistical linear regression of the OCV over three sigma points in SOC.

        With points at soc and soc ± √3·σ weighted 2/3, 1/6, 1/6 (exact moments of a
        Gaussian), the regression gives the predicted mean OCV, the slope the Kalman filter
        uses, and the variance of the OCV around that line (added to the measurement noise).
        The line is reused while the SOC stays well inside the sigma points, σ has not shrunk
        much and the parameter refresh time has not passed: most ticks need no OCV look-up.
        """
        sigma = np.sqrt(np.maximum(self._p[0, 0], 0.0))
        stale = (
            self._slr_time_s < self._params_time_s
            or bool(np.any(np.abs(soc - self._slr_soc) > 0.25 * self._slr_step))
            or bool(np.any(sigma < 0.5 * self._slr_sigma))
        )
        if not stale:
            return
        n = self.cell_count
        step = np.clip(math.sqrt(3.0) * sigma, _MIN_SIGMA_STEP, 0.5)
        points = np.concatenate((soc - step, soc, soc + step))
        ocv = self._ocv_extended(points, np.concatenate((temp, temp, temp)))
        y_lo, y_mid, y_hi = ocv[:n], ocv[n : 2 * n], ocv[2 * n :]
        y_mean = (y_lo + 4.0 * y_mid + y_hi) / 6.0
        slope = (y_hi - y_lo) / (2.0 * step)
        self._slr_residual_var = (
            (y_lo - y_mean + slope * step) ** 2
            + 4.0 * (y_mid - y_mean) ** 2
            + (y_hi - y_mean - slope * step) ** 2
        ) / 6.0
        self._slr_mean = y_mean
        self._slr_slope = slope
        self._slr_soc = soc.copy()
        self._slr_step = step
        self._slr_sigma = sigma
        self._slr_time_s = self._params_time_s

    def _ocv_extended(self, soc: FloatArray, temp: FloatArray) -> FloatArray:
        """OCV continued beyond the table with its end slope (only the sigma points go there)."""
        lo, hi = self.cell.ocv_soc_range
        inside = np.clip(soc, lo, hi)
        ocv = self.cell.ocv_v(inside, temp)
        outside = soc - inside
        if not outside.any():
            return ocv
        slope = self.cell.docv_dsoc(inside, temp)
        return np.asarray(ocv + outside * slope, dtype=np.float64)

    def step(
        self,
        now_s: float,
        pack_current_a: float | None,
        cell_voltage_v: NDArray[np.float64],
        cell_voltage_valid: NDArray[np.bool_],
        cell_temp_c: NDArray[np.float64],
        current_is_zero: bool,
        cell_bleed_a: NDArray[np.float64] | None = None,
    ) -> Estimates:
        """Advance the estimate to ``now_s`` (monotonic s) with one tick of measurements.

        ``pack_current_a`` is positive when charging; None (or NaN) means the reading is
        invalid: the estimate is held and its uncertainty grows. ``current_is_zero`` means the
        contactors are open, so the true current is zero and the reading is pure offset.
        Invalid cells (``cell_voltage_valid`` False or NaN voltage) get no voltage update.
        ``cell_bleed_a`` is the balancing bleed current per cell group (A, ≥ 0) that flowed
        since the last step: it leaves the cell without passing the pack current sensor, so it
        is added to that cell's own prediction (and its charge counter for the capacity fit).
        """
        cfg = self.config
        n = self.cell_count
        if cell_bleed_a is None:
            self._bleed_a = np.zeros(n)
        else:
            bleed = np.asarray(cell_bleed_a, dtype=np.float64).reshape(n)
            self._bleed_a = np.where(np.isfinite(bleed), np.maximum(bleed, 0.0), 0.0)
        temp = self._clean_temp(cell_temp_c)
        voltage = np.asarray(cell_voltage_v, dtype=np.float64).reshape(n)
        valid = np.asarray(cell_voltage_valid, dtype=np.bool_).reshape(n) & np.isfinite(voltage)
        dt_s = 0.0 if self._last_time_s is None else max(0.0, now_s - self._last_time_s)
        self._last_time_s = now_s

        current_ok = (
            pack_current_a is not None and math.isfinite(pack_current_a)
        ) or current_is_zero
        self._current_valid = current_ok
        if not current_ok:
            # Unknown current: hold, and let the SOC uncertainty grow as if the configured
            # C-rate could be flowing (linearly in time, not as a random walk).
            grow = cfg.unknown_current_c_rate * dt_s / SECONDS_PER_HOUR
            sigma = np.sqrt(self._p[0, 0]) + grow
            self._p[0, 0] = sigma * sigma
            self._rest_s = 0.0
            self._last_current_a = None
            self._last_voltage_v = np.where(valid, voltage, np.nan)
            self._pack_charge_ah, self._pack_dt_s, self._pack_direction = 0.0, 0.0, 0
            return self._estimates(now_s)

        measured_a = 0.0 if pack_current_a is None else float(pack_current_a) / self.strings
        if current_is_zero and cfg.offset_learning:
            self._learn_offset(measured_a)
        offset_a = self._offset_mean
        current_a = 0.0 if current_is_zero else measured_a - offset_a

        soc = self._x[0]
        self._refresh_parameters(now_s, soc, temp)
        if dt_s > 0.0:
            self._predict(dt_s, current_a)
            self._count(dt_s, current_a, voltage, valid)

        resting = abs(current_a) <= cfg.rest_current_c_rate * self.nominal_c_a
        self._rest_s = self._rest_s + dt_s if resting else 0.0
        eta = self.efficiency if current_a > 0.0 else 1.0
        self._pack_charge_ah = eta * current_a * dt_s / SECONDS_PER_HOUR
        self._pack_dt_s = dt_s
        self._pack_direction = 0 if resting else (1 if current_a > 0.0 else -1)
        rate_limit: FloatArray | None = None
        if resting:
            # A drift, never a jump: a confident SOC moves at most ocv_drift_rate_per_h; an
            # uncertain one (fresh start) at most one standard deviation per rest_time_s.
            sigma = np.sqrt(np.maximum(self._p[0, 0], 0.0))
            rate_per_s = np.maximum(
                cfg.ocv_drift_rate_per_h / SECONDS_PER_HOUR, sigma / cfg.rest_time_s
            )
            rate_limit = rate_per_s * dt_s
        self._resistance_step(dt_s, current_a, voltage, valid, temp)
        self._update(current_a, voltage, valid, temp, rate_limit)
        self._anchors(now_s, dt_s, current_a, voltage, valid, temp)
        if cfg.rest_offset_learning:
            window_open = (
                resting and not current_is_zero and self._rest_s >= cfg.rest_offset_start_s
            )
            self._rest_offset_step(now_s, dt_s, window_open, measured_a, voltage, valid, temp)
        self._last_current_a = current_a
        self._last_voltage_v = np.where(valid, voltage, np.nan)
        return self._estimates(now_s)

    def _learn_offset(self, measured_a: float) -> None:
        """Kalman update of the offset state from a reading whose true value is zero."""
        cfg = self.config
        if abs(measured_a) > cfg.max_offset_c_rate * self.nominal_c_a:
            return  # a reading that large with open contactors is a sensor fault, not offset
        j = self._i_offset
        r = (cfg.offset_sample_std_c_rate * self.nominal_c_a) ** 2
        ph = self._p[:, j, :]
        s = self._p[j, j] + r
        self._apply_gain(ph / s, ph, s, measured_a - self._x[j])

    def _rest_offset_step(
        self,
        now_s: float,
        dt_s: float,
        window_open: bool,
        measured_a: float,
        voltage: FloatArray,
        valid: BoolArray,
        temp: FloatArray,
    ) -> None:
        """Collect a relaxed rest window; when it ends (or is long enough), learn from it."""
        cfg = self.config
        window = self._rest_window
        if window_open:
            # The model's RC voltages still decaying are relaxation, not charge: remove them.
            rc_v = self._x[1 : 1 + self.rc_count].sum(axis=0)
            window.add(now_s, dt_s, measured_a, self._bleed_a, voltage - rc_v, valid, temp)
            if window.duration_s < cfg.rest_offset_max_window_s:
                return
        elif window.start_s is None:
            return
        sample = window.close(
            min_duration_s=cfg.rest_offset_min_window_s,
            drift_v_per_h=cfg.rest_offset_voltage_drift_v_per_h,
            max_temp_change_c=cfg.rest_offset_max_temp_change_c,
            max_offset_a=cfg.rest_offset_max_c_rate * self.nominal_c_a,
            ocv_slope_v=self.cell.docv_dsoc(self._x[0], temp),
            capacity_ah=self.capacity.capacity_ah,
        )
        if sample is not None:
            self._learn_rest_offset(sample)

    def _learn_rest_offset(self, sample: RestOffsetSample) -> None:
        """Kalman update of the offset state alone with one rest window's offset.

        Only the offset moves: the same rest voltages have already corrected the SOC through
        the voltage update, so letting them move it again would count them twice.
        """
        j = self._i_offset
        ph = self._p[:, j, :]
        s = self._p[j, j] + sample.offset_std_a**2
        gain = np.zeros_like(ph)
        gain[j] = ph[j] / s
        self._apply_gain(gain, ph, s, sample.offset_a - self._x[j])
        self.rest_offset_samples += 1

    def _apply_gain(
        self, gain: FloatArray, ph: FloatArray, s: FloatArray, innovation: FloatArray
    ) -> None:
        """x += K·ν and the Joseph-form covariance update for a scalar measurement per cell.

        (I − K·hᵀ)·P·(I − K·hᵀ)ᵀ + r·K·Kᵀ  =  P − K·phᵀ − ph·Kᵀ + s·K·Kᵀ  with ph = P·h and
        s = hᵀ·P·h + r: exact for any gain (a zeroed consider row, a rate-limited gain).
        """
        self._x = self._x + gain * innovation
        self._x[0] = np.clip(self._x[0], *_SOC_LIMITS)
        # K·phᵀ + ph·Kᵀ − s·K·Kᵀ  =  K·mᵀ + m·Kᵀ  with  m = ph − s·K/2.
        m = ph - 0.5 * s * gain
        k_m = gain[:, None, :] * m[None, :, :]
        self._p -= k_m + k_m.transpose(1, 0, 2)
        self._symmetrise()

    def _predict(self, dt_s: float, current_a: float) -> None:
        cfg = self.config
        self._nis_keep = math.exp(-dt_s / cfg.model_error_time_s)
        k = self._k
        o = self._i_offset
        capacity = self.capacity.capacity_ah
        # Each cell's own current: the pack's minus its bleed (balancing resistors).
        cell_a = current_a - self._bleed_a
        eta = np.where(cell_a > 0.0, self.efficiency, 1.0)
        ds_da = eta * dt_s / (SECONDS_PER_HOUR * capacity)  # d soc / d current, per cell
        ds = ds_da * cell_a
        x = self._x
        # F = diag(f) plus one column g (the offset's effect on soc and the RC voltages).
        f = np.ones((k, self.cell_count))
        g = np.zeros((k, self.cell_count))
        q = np.zeros((k, self.cell_count))
        x[0] = np.clip(x[0] + ds, *_SOC_LIMITS)
        g[0] = -ds_da
        taus = (self._tau1, self._tau2)[: self.rc_count]
        resistances = (self._r1, self._r2)[: self.rc_count]
        for j, (tau, r) in enumerate(zip(taus, resistances, strict=True), start=1):
            decay = np.exp(-dt_s / tau)
            x[j] = decay * x[j] + r * (1.0 - decay) * cell_a
            f[j] = decay
            g[j] = -r * (1.0 - decay)
            q[j] = _RC_NOISE_V2_PER_S * dt_s
        phi = math.exp(-dt_s / cfg.model_error_time_s)
        x[self._i_bias] *= phi
        f[self._i_bias] = phi
        # After rest_time_s at rest the RC and dynamic errors have decayed: what is left is the
        # OCV table's error (as for a relaxed OCV anchor), so the bias variance relaxes towards
        # that (within model_error_time_s/2) and the rest voltage pulls the SOC, not the bias.
        error_v = self.model_error_v
        relaxed = self._rest_s >= cfg.rest_time_s
        if relaxed:
            error_v = self.ocv_error_v
        self._slow_error_scale = error_v / self.model_error_v
        q[self._i_bias] = error_v**2 * (1.0 - phi * phi) * self._r_scale
        # SOC noise: a random walk, plus the current gain error that grows with the charge
        # moved (variance ∝ |Δsoc|: one full one-way swing gives σ = the relative error).
        # The capacity uncertainty is deliberately not added here: its error follows the net
        # SOC change since the last correction, which a random walk in the throughput grossly
        # overstates under back-and-forth cycling (σ of the learned capacity after one noisy
        # sample is ~10 %, which would hand the SOC to an imperfect voltage model).
        q[0] = cfg.soc_random_walk_per_sqrt_h**2 * dt_s / SECONDS_PER_HOUR + (
            cfg.current_gain_error**2
        ) * np.abs(ds)
        drift = cfg.current_offset_drift_c_rate_per_sqrt_h * self.nominal_c_a
        q[o] = drift**2 * dt_s / SECONDS_PER_HOUR
        # The consider sensitivity follows the state; it fades with the slow error's
        # correlation time (an older slow error is no longer the one in the present voltage).
        # Not at a relaxed rest: what is left there is the OCV table's error at a standing SOC,
        # the same after 9 h as after 1 h, so hours of rest voltages must not average it away.
        fade = 1.0 if relaxed else math.exp(-dt_s / cfg.model_error_slow_time_s)
        self._sens = (f * self._sens + g * self._sens[o]) * fade
        # The capacity error does not fade: the SOC counted with a wrong Q stays wrong by
        # Δsoc·δQ/Q until a voltage or an anchor corrects it (the updates shrink it by K).
        relative_std = self.capacity.capacity_std_ah / capacity
        self._cap_sens = f * self._cap_sens + g * self._cap_sens[o]
        self._cap_sens[0] += ds * relative_std
        p = self._p
        # A = F·P: row i is f_i·P[i] + g_i·P[o]; then F·P·Fᵀ likewise on the columns.
        a = f[:, None, :] * p + g[:, None, :] * p[o][None, :, :]
        p = a * f[None, :, :] + a[:, o, :][:, None, :] * g[None, :, :]
        idx = np.arange(k)
        p[idx, idx] += q
        self._p = p
        self._symmetrise()

    def _update(
        self,
        current_a: float,
        voltage: FloatArray,
        valid: BoolArray,
        temp: FloatArray,
        rate_limit: FloatArray | None,
    ) -> None:
        if not valid.any():
            return
        cfg = self.config
        x, p = self._x, self._p
        soc = x[0]
        n = self.cell_count
        self._linearise(soc, temp)
        slope, residual_var = self._slr_slope, self._slr_residual_var
        # The regression line through the sigma points, valid within them (see _linearise).
        y_mean = self._slr_mean + slope * (soc - self._slr_soc)
        k = self._k
        h = np.zeros((k, n))
        h[0] = slope
        h[1 : 1 + self.rc_count] = 1.0
        h[self._i_bias] = 1.0
        h[self._i_offset] = -self._r0
        cell_a = current_a - self._bleed_a
        predicted = y_mean + self._r0 * cell_a + x[1 : 1 + self.rc_count].sum(axis=0)
        predicted = predicted + x[self._i_bias]
        innovation = np.where(valid, voltage - predicted, 0.0)
        # Covariance matching (adaptive R): when the residuals stay larger than the filter
        # expects, the cell model is worse than assumed here (e.g. LFP under load): trust the
        # voltage less, instead of reading the model error as SOC.
        r = (cfg.voltage_noise_v**2 + residual_var) * self._r_scale
        ph = np.einsum("ijn,jn->in", p, h)
        s = np.einsum("in,in->n", h, ph) + r
        nis = np.minimum(innovation**2 / s, 100.0) * self._r_scale
        self._nis = np.where(
            valid, self._nis_keep * self._nis + (1 - self._nis_keep) * nis, self._nis
        )
        self._r_scale = np.clip(self._nis, 1.0, _MAX_R_SCALE)
        # Spikes: beyond the gate the measurement variance is raised so that the residual
        # sits exactly on the gate (a Huber-like down-weighting, never a hard rejection).
        gate2 = cfg.innovation_gate_sigma**2
        extra = np.maximum(innovation**2 / gate2 - s, 0.0)
        s = s + extra
        gain = np.where(valid, ph / s, 0.0)
        gain[self._i_offset] = 0.0  # consider state: only known-zero current moves it
        if rate_limit is not None:
            wanted = np.abs(gain[0] * innovation)
            scale = np.where(wanted > rate_limit, rate_limit / np.maximum(wanted, 1e-30), 1.0)
            gain = gain * scale
        # The slow error enters the voltage with coefficient 1: e ← (I − K·hᵀ)·e + K·b (S is
        # per model_error_v; a relaxed rest voltage carries only the OCV table's share of it).
        h_sens = np.einsum("in,in->n", h, self._sens)
        self._sens = self._sens - gain * h_sens + gain * self._slow_error_scale
        self._cap_sens = self._cap_sens - gain * np.einsum("in,in->n", h, self._cap_sens)
        self._apply_gain(gain, ph, s, innovation)

    def _symmetrise(self) -> None:
        # Every update is symmetric by construction; only keep the variances positive.
        idx = self._diag
        self._p[idx, idx] = np.maximum(self._p[idx, idx], 1e-14)

    def _scalar_soc_update(
        self,
        mask: BoolArray,
        value: FloatArray,
        std: FloatArray,
        bias_sensitivity: FloatArray | float = 0.0,
    ) -> None:
        """Kalman update of SOC alone with a direct SOC measurement (anchors).

        ``bias_sensitivity`` is d(value)/d(voltage error): 0 for the full anchor, 1/slope for
        one read from a voltage through the model.
        """
        if not mask.any():
            return
        ph = self._p[:, 0, :]
        s = self._p[0, 0] + std**2
        gain = np.where(mask, ph / s, 0.0)
        gain[self._i_offset] = 0.0
        self._sens = self._sens - gain * self._sens[0] + gain * bias_sensitivity
        self._cap_sens = self._cap_sens - gain * self._cap_sens[0]
        self._apply_gain(gain, ph, s, np.where(mask, value - self._x[0], 0.0))

    def _count(self, dt_s: float, current_a: float, voltage: FloatArray, valid: BoolArray) -> None:
        eta = self.efficiency if current_a > 0.0 else 1.0
        charge_ah = current_a * dt_s / SECONDS_PER_HOUR
        self.net_ah += eta * charge_ah
        self._bled_ah = self._bled_ah + self._bleed_a * dt_s / SECONDS_PER_HOUR
        self.moved_ah += abs(charge_ah)
        pack_ah = charge_ah * self.strings
        if valid.any():
            pack_v = float(np.mean(voltage[valid])) * self.cell_count / self.strings
        else:
            pack_v = 0.0
        if pack_ah >= 0.0:
            self.charge_throughput_ah += pack_ah
            self.charge_energy_wh += pack_ah * pack_v
        else:
            self.discharge_throughput_ah -= pack_ah
            self.discharge_energy_wh -= pack_ah * pack_v

    def _resistance_step(
        self,
        dt_s: float,
        current_a: float,
        voltage: FloatArray,
        valid: BoolArray,
        temp: FloatArray,
    ) -> None:
        """Feed the resistance RLS with the voltage step of a large current step."""
        cfg = self.config
        last = self._last_current_a
        if last is None or dt_s <= 0.0 or dt_s > cfg.resistance_max_step_s:
            return
        step_a = current_a - last
        if abs(step_a) < cfg.resistance_min_step_c_rate * self.nominal_c_a:
            return
        mask = valid & np.isfinite(self._last_voltage_v)
        if not mask.any():
            return
        growth = self.resistance.growth
        soc = self._x[0]
        # Resistances without the learned growth (the regressor), per cell group.
        p = self.cells_in_parallel
        r0 = self.cell.r0_ohm(soc, temp) / p
        r1 = self.cell.r1_ohm(soc, temp) / p
        forced = r0 * step_a + r1 * (1.0 - np.exp(-dt_s / self._tau1)) * current_a
        # The RC voltages have already been predicted to now: subtract their free decay.
        free = np.zeros(self.cell_count)
        taus = (self._tau1, self._tau2)[: self.rc_count]
        for j, tau in enumerate(taus, start=1):
            decay = np.maximum(np.exp(-dt_s / tau), 1e-3)
            before = (self._x[j] - (1.0 - decay) * self._rc_r(j) * current_a) / decay
            free += (decay - 1.0) * before
        if self.rc_count == 2:
            r2 = self.cell.r2_ohm(soc, temp)
            if r2 is not None:
                forced = forced + r2 / p * (1.0 - np.exp(-dt_s / self._tau2)) * current_a
        step_v = np.where(mask, voltage - self._last_voltage_v - free, 0.0)
        self.resistance.update(mask, forced, step_v, cfg.voltage_noise_v * math.sqrt(2.0))
        self._soh_resistance = float(np.median(self.resistance.growth))
        # Use the new growth at once (not only at the next parameter refresh).
        ratio = self.resistance.growth / growth
        self._r0 = self._r0 * ratio
        self._r1 = self._r1 * ratio
        self._r2 = self._r2 * ratio

    def _rc_r(self, j: int) -> FloatArray:
        return self._r1 if j == 1 else self._r2

    def _anchors(
        self,
        now_s: float,
        dt_s: float,
        current_a: float,
        voltage: FloatArray,
        valid: BoolArray,
        temp: FloatArray,
    ) -> None:
        cfg = self.config
        c = self.nominal_c_a
        cell = self.cell
        offset_drift = cfg.current_offset_drift_c_rate_per_sqrt_h * c

        # Full: constant-voltage charging with a tail current, cell at the full voltage.
        charging_tail = 0.0 < current_a <= cfg.full_tail_c_rate * c
        full_cond = valid & (voltage >= self.full_voltage_v) & charging_tail
        self._full_timer_s = np.where(full_cond, self._full_timer_s + dt_s, 0.0)
        if current_a < -cfg.rest_current_c_rate * c:
            self._full_done[:] = False
        full = (self._full_timer_s >= cfg.full_hold_s) & ~self._full_done & full_cond
        if full.any():
            std = np.full(self.cell_count, cfg.anchor_soc_std)
            self._scalar_soc_update(full, np.ones(self.cell_count), std)
            self._full_done |= full
            self.capacity.add_anchor(
                full, np.ones(self.cell_count), std, self._cell_net_ah, self.moved_ah, now_s,
                offset_drift, cfg.current_gain_error,
            )  # fmt: skip
            self._mark("full", now_s)

        # Empty: discharging cell at the end-of-discharge voltage; IR-compensated OCV.
        empty_cond = valid & (voltage <= self.empty_voltage_v) & (current_a < 0.0)
        self._empty_timer_s = np.where(empty_cond, self._empty_timer_s + dt_s, 0.0)
        if current_a > cfg.rest_current_c_rate * c:
            self._empty_done[:] = False
        empty = (self._empty_timer_s >= cfg.empty_hold_s) & ~self._empty_done & empty_cond
        if empty.any():
            rc = self._x[1 : 1 + self.rc_count].sum(axis=0)
            ocv = voltage - self._r0 * current_a - rc
            value = cell.soc_from_ocv(ocv, temp)
            slope = np.maximum(np.abs(cell.docv_dsoc(value, temp)), 1e-3)
            std = np.maximum(cfg.anchor_soc_std, self.model_error_v / slope)
            self._scalar_soc_update(empty, value, std, 1.0 / slope)
            self._empty_done |= empty
            self.capacity.add_anchor(
                empty, value, std, self._cell_net_ah, self.moved_ah, now_s, offset_drift,
                cfg.current_gain_error,
            )  # fmt: skip
            self._mark("empty", now_s)

        # Relaxed OCV at rest, outside the flat region and inside the temperature window.
        if self._rest_s <= 0.0:
            self._ocv_taken[:] = False
            self._relax_ref_v[:] = np.nan
            self._relax_dvdt[:] = np.inf
            return
        if now_s - self._relax_ref_time_s >= _RELAX_WINDOW_S or np.isnan(self._relax_ref_v).all():
            window = now_s - self._relax_ref_time_s
            if window > 0.0:
                self._relax_dvdt = np.abs(voltage - self._relax_ref_v) / window
            self._relax_ref_v = np.where(valid, voltage, np.nan)
            self._relax_ref_time_s = now_s
        if self._rest_s < cfg.capacity_min_rest_s:
            return
        low, high = cfg.capacity_temp_window_c
        value = cell.soc_from_ocv(voltage, temp)
        slope = np.abs(cell.docv_dsoc(value, temp))
        relaxed = (
            valid
            & ~self._ocv_taken
            & (self._relax_dvdt < cfg.capacity_relax_dvdt_v_per_s)
            & (temp >= low)
            & (temp <= high)
            & (slope >= cfg.capacity_min_ocv_slope_v)
        )
        if relaxed.any():
            # A relaxed OCV reading depends on the OCV table only, not on the dynamic model
            # whose error the fit RMSE measures (43 mV for the LFP bench fit, at rests ~0).
            std = np.sqrt(self.ocv_error_v**2 + cfg.voltage_noise_v**2) / np.maximum(slope, 1e-3)
            self.capacity.add_anchor(
                relaxed, value, std, self._cell_net_ah, self.moved_ah, now_s, offset_drift,
                cfg.current_gain_error,
            )  # fmt: skip
            self._ocv_taken |= relaxed
            self._mark("ocv", now_s)

    @property
    def _cell_net_ah(self) -> FloatArray:
        """Net charge counter per cell group: the pack's minus what balancing bled from it."""
        return np.asarray(self.net_ah - self._bled_ah, dtype=np.float64)

    def _mark(self, event: str, now_s: float) -> None:
        self.anchored = event
        self.anchored_at_s = now_s

    # --- output ----------------------------------------------------------------------------

    @property
    def soc(self) -> FloatArray:
        return _readonly(self._x[0])

    def _soc_variance(self) -> FloatArray:
        """The filter's SOC variance plus the consider shares of the slow model error and of
        the capacity error (charge counted since the last correction × σ_Q/Q)."""
        slow = self._sens[0] * self.model_error_v
        cap = self._cap_sens[0]
        return np.asarray(
            np.maximum(self._p[0, 0], 0.0) + slow * slow + cap * cap, dtype=np.float64
        )

    @property
    def capacity_soc_std(self) -> FloatArray:
        """The capacity error's share of the reported SOC σ (per cell, a fraction)."""
        return _readonly(np.abs(self._cap_sens[0]))

    @property
    def soc_std(self) -> FloatArray:
        return _readonly(np.sqrt(self._soc_variance()))

    def _estimates(self, now_s: float) -> Estimates:
        soc = np.clip(self._x[0], 0.0, 1.0)
        soc_std = np.sqrt(self._soc_variance())
        capacity = self.capacity.capacity_ah
        target, target_std, window_ah = pack_window(soc, soc_std, capacity)
        p_soc, p_std = self.pack.update(
            target, target_std, window_ah, self._pack_charge_ah, self._pack_dt_s,
            self._pack_direction,
        )  # fmt: skip
        self._pack_charge_ah, self._pack_dt_s = 0.0, 0.0
        growth = self.resistance.growth
        pack_capacity = float(np.min(capacity)) * self.strings
        nominal_pack = self.nominal_ah * self.strings
        offset_pack_a = self._offset_mean * self.strings
        offset_std_a = math.sqrt(float(self._p[self._i_offset, self._i_offset, 0])) * self.strings
        cfg = self.config
        at_rest = self._current_valid and self._rest_s >= cfg.rest_time_s
        return Estimates(
            time_s=now_s,
            soc=_readonly(soc),
            soc_std=_readonly(soc_std),
            pack_soc=p_soc,
            pack_soc_std=p_std,
            average_soc=float(np.mean(soc)),
            average_soc_std=float(np.mean(soc_std)),
            capacity_ah=_readonly(capacity),
            capacity_std_ah=_readonly(self.capacity.capacity_std_ah),
            pack_capacity_ah=pack_capacity,
            soh_capacity=pack_capacity / nominal_pack,
            resistance_ohm=_readonly(self._r0),
            resistance_growth=_readonly(growth),
            soh_resistance=self._soh_resistance,
            current_offset_a=offset_pack_a,
            current_offset_std_a=offset_std_a,
            charge_throughput_ah=self.charge_throughput_ah,
            discharge_throughput_ah=self.discharge_throughput_ah,
            charge_energy_wh=self.charge_energy_wh,
            discharge_energy_wh=self.discharge_energy_wh,
            equivalent_full_cycles=self.discharge_throughput_ah / nominal_pack,
            at_rest=at_rest,
            anchored=self.anchored,
            anchored_at_s=self.anchored_at_s,
            current_valid=self._current_valid,
        )

    # --- persistence -----------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-able plain data (no covariance cross terms)."""

        def arr(values: FloatArray, digits: int = 7) -> list[float]:
            return [float(v) for v in np.round(values, digits)]

        cap = self.capacity
        return {
            "cell_count": self.cell_count,
            "cells_in_parallel": self.cells_in_parallel,
            "strings": self.strings,
            "nominal_ah": self.nominal_ah,
            "soc": arr(self._x[0]),
            # The reported σ (with the slow model error's share): restored as the filter's own.
            "soc_std": arr(np.sqrt(self._soc_variance()), 8),
            "current_offset_a": float(self._offset_mean),
            "current_offset_std_a": float(np.sqrt(self._p[self._i_offset, self._i_offset, 0])),
            "capacity_ah": arr(cap.capacity_ah, 6),
            "capacity_sum_xx": [float(v) for v in cap.sum_xx],
            "capacity_sum_xy": [float(v) for v in cap.sum_xy],
            "capacity_sum_xt": [float(v) for v in cap.sum_xt],
            "capacity_sum_tt": [float(v) for v in cap.sum_tt],
            "capacity_sum_ty": [float(v) for v in cap.sum_ty],
            "capacity_samples": arr(cap.samples, 0),
            "resistance_growth": arr(self.resistance.growth, 6),
            "resistance_variance": [float(v) for v in self.resistance.variance],
            "charge_throughput_ah": self.charge_throughput_ah,
            "discharge_throughput_ah": self.discharge_throughput_ah,
            "charge_energy_wh": self.charge_energy_wh,
            "discharge_energy_wh": self.discharge_energy_wh,
            "anchored": self.anchored,
            "pack_soc": self.pack.value,
        }

    def restore_state(self, payload: dict[str, Any], age_s: float = 0.0) -> str:
        """Resume from :meth:`export_state` output; return "" or why it was refused.

        Nothing is changed when the payload is refused. ``age_s`` is how long ago it was
        saved: self-discharge over that time is applied and the SOC uncertainty widened.
        """
        n = self.cell_count
        try:
            if int(payload["cell_count"]) != n:
                return f"cell count changed ({payload['cell_count']} saved, {n} now)"
            if int(payload["cells_in_parallel"]) != self.cells_in_parallel:
                return "cells in parallel changed"
            if int(payload.get("strings", 1)) != self.strings:
                return "number of strings changed"
            if not math.isclose(float(payload["nominal_ah"]), self.nominal_ah, rel_tol=1e-6):
                return "nominal capacity changed"
            arrays = {
                key: np.asarray(payload[key], dtype=np.float64)
                for key in (
                    "soc",
                    "soc_std",
                    "capacity_ah",
                    "capacity_sum_xx",
                    "capacity_sum_xy",
                    "capacity_samples",
                    "resistance_growth",
                    "resistance_variance",
                )
            }
            scalars = {
                key: float(payload[key])
                for key in (
                    "current_offset_a",
                    "current_offset_std_a",
                    "charge_throughput_ah",
                    "discharge_throughput_ah",
                    "charge_energy_wh",
                    "discharge_energy_wh",
                )
            }
            # Offset terms of the capacity fit (absent in older files: keep the prior).
            offset_sums: dict[str, FloatArray] = {
                key: np.asarray(payload[key], dtype=np.float64)
                for key in ("capacity_sum_xt", "capacity_sum_tt", "capacity_sum_ty")
                if key in payload
            }
            anchored = str(payload.get("anchored", ""))
            saved_pack = payload.get("pack_soc")
            pack_value = None if saved_pack is None else float(saved_pack)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            # OverflowError: Infinity or a 400-digit int where an int or a float belongs.
            return f"malformed state ({type(exc).__name__}: {str(exc)[:80]})"
        for key, values in arrays.items():
            if values.shape != (n,):
                return f"{key} has {values.size} values, expected {n}"
            if not np.all(np.isfinite(values)):
                return f"{key} has non-finite values"
        for key, values in offset_sums.items():
            if values.shape != (n,) or not np.all(np.isfinite(values)):
                return f"{key} is malformed"
        for key, value in scalars.items():
            if not math.isfinite(value):
                return f"{key} is not finite"
        implausible = self._implausible(arrays, scalars)
        if implausible:
            return implausible
        soc, soc_std = arrays["soc"], arrays["soc_std"]
        backup = {name: copy.deepcopy(getattr(self, name)) for name in _RESTORED_ATTRIBUTES}
        with np.errstate(all="ignore"):  # overflow is found just below, and refused
            self._apply_state(arrays, scalars, offset_sums, soc, soc_std, age_s)
        self.anchored = anchored
        if pack_value is not None and math.isfinite(pack_value) and 0.0 <= pack_value <= 1.0:
            self.pack.value = pack_value  # continue the reported value where it was
        self._params_time_s = -math.inf
        broken = self._non_finite_state()
        if broken:
            # Plausible numbers can still combine into inf/NaN (the capacity fit's sums):
            # refused whole, as if never read.
            for name, value in backup.items():
                setattr(self, name, value)
            return f"{broken} not finite after restoring"
        return ""

    def _implausible(self, arrays: dict[str, FloatArray], scalars: dict[str, float]) -> str:
        """Why restored numbers cannot be this estimator's own ("" when they can).

        The bounds are what a running estimator can produce: a value outside them came from a
        damaged or foreign file and, used, would drive the SOC (and the limits) wrong.
        """
        soc, soc_std = arrays["soc"], arrays["soc_std"]
        # The filter's SOC may overshoot 0..1 slightly between corrections; σ = 0 would
        # freeze the filter (no correction ever), σ > 1 says nothing about a 0..1 quantity.
        if np.any((soc < -0.01) | (soc > 1.01)) or np.any((soc_std <= 0) | (soc_std > 1)):
            return "SOC or its uncertainty out of range"
        low, high = CAPACITY_FRACTION_RANGE
        capacity_ah = arrays["capacity_ah"]
        # The learner clamps to this band; the file rounds to 6 digits, hence the margin.
        if np.any(capacity_ah < low * self.nominal_ah * (1 - _ROUNDING)) or np.any(
            capacity_ah > high * self.nominal_ah * (1 + _ROUNDING)
        ):
            return f"capacity outside {low:g}..{high:g} × nominal {self.nominal_ah:g} Ah"
        low, high = GROWTH_RANGE
        growth = arrays["resistance_growth"]
        if np.any(growth < low * (1 - _ROUNDING)) or np.any(growth > high * (1 + _ROUNDING)):
            return f"resistance growth outside {low:g}..{high:g}"
        if np.any(arrays["resistance_variance"] < 0) or np.any(arrays["capacity_samples"] < 0):
            return "a variance or sample count is negative"
        cfg = self.config
        # A learned offset beyond these is refused as a sensor fault while running.
        max_offset_a = max(cfg.max_offset_c_rate, cfg.rest_offset_max_c_rate) * self.nominal_c_a
        if abs(scalars["current_offset_a"]) > max_offset_a:
            return f"current offset beyond ±{max_offset_a:g} A"
        # An offset uncertain by more than 1C means nothing and, squared, overflows.
        offset_std_a = scalars["current_offset_std_a"]
        if not 0.0 < offset_std_a <= self.nominal_c_a:
            return f"current offset uncertainty outside (0, {self.nominal_c_a:g}] A"
        for key in _COUNTERS:
            if not 0.0 <= scalars[key] <= _MAX_COUNTER:
                return f"{key} outside 0..{_MAX_COUNTER:g}"
        return ""

    def _non_finite_state(self) -> str:
        """The first part of the filter's state that is not finite ("" when all are)."""
        cap = self.capacity
        parts = {
            "state": self._x,
            "covariance": self._p,
            "capacity": cap.capacity_ah,
            "capacity fit": np.concatenate([cap.sum_xx, cap.sum_xy, cap.sum_xt, cap.sum_tt]),
            "capacity offset fit": np.concatenate([cap.sum_ty, np.ravel(cap.offset_a)]),
            "resistance growth": self.resistance.growth,
            "resistance variance": self.resistance.variance,
        }
        for name, values in parts.items():
            if not np.all(np.isfinite(values)):
                return name
        return ""

    def _apply_state(
        self,
        arrays: dict[str, FloatArray],
        scalars: dict[str, float],
        offset_sums: dict[str, FloatArray],
        soc: FloatArray,
        soc_std: FloatArray,
        age_s: float,
    ) -> None:
        cap = self.capacity
        cap.capacity_ah = arrays["capacity_ah"]
        cap.sum_xx = np.maximum(arrays["capacity_sum_xx"], 1e-30)
        cap.sum_xy = arrays["capacity_sum_xy"]
        if len(offset_sums) == 3:
            cap.sum_xt = offset_sums["capacity_sum_xt"]
            cap.sum_tt = np.maximum(offset_sums["capacity_sum_tt"], 1e-30)
            cap.sum_ty = offset_sums["capacity_sum_ty"]
            cap.solve()
            cap.capacity_ah = arrays["capacity_ah"]  # as saved (solve() only adds the offset)
        cap.samples = arrays["capacity_samples"]
        self.resistance.growth = arrays["resistance_growth"]
        self.resistance.variance = np.clip(arrays["resistance_variance"], 1e-6, 1.0)
        self._soh_resistance = float(np.median(self.resistance.growth))
        # Offline time: self-discharge moved the SOC; how much exactly is uncertain (±50 %).
        age_s = max(0.0, age_s)
        sd_soc = self.cell.self_discharge_a(1.0) * age_s / SECONDS_PER_HOUR
        std = np.sqrt(soc_std**2 + (0.5 * sd_soc) ** 2)
        self._reset_covariance(soc - sd_soc, std)
        self._x[self._i_offset] = scalars["current_offset_a"]
        offset_std = max(
            scalars["current_offset_std_a"],
            self.config.current_offset_drift_c_rate_per_sqrt_h
            * self.nominal_c_a
            * math.sqrt(age_s / SECONDS_PER_HOUR),
        )
        self._p[self._i_offset, self._i_offset] = offset_std**2
        self.charge_throughput_ah = scalars["charge_throughput_ah"]
        self.discharge_throughput_ah = scalars["discharge_throughput_ah"]
        self.charge_energy_wh = scalars["charge_energy_wh"]
        self.discharge_energy_wh = scalars["discharge_energy_wh"]

    def save(self, path: Path) -> None:
        """Write the state atomically (bmsd.system.statefile); OSError is the caller's."""
        write_state(path, STATE_KIND, STATE_VERSION, self.export_state())

    def state_job(self, path: Path) -> StateJob:
        """This tick's state, for the background writer (bmsd.system.statewriter)."""
        return StateJob(path, STATE_KIND, STATE_VERSION, self.export_state(), "SOC/SOH state")

    def save_due(self, now_s: float) -> bool:
        """True (and the timer restarted) when ``state_save_interval_s`` has passed."""
        if now_s - self._save_time_s >= self.config.state_save_interval_s:
            self._save_time_s = now_s
            return True
        return False

    def load(self, path: Path, max_age_s: float | None = None) -> str:
        """Restore from a state file; return "" or the reason it was not used.

        On any problem (missing, corrupt, truncated, too old, another pack) the estimator is
        left as it was: the caller then starts from OCV (:meth:`initialise_from_ocv`).
        """
        limit = self.config.max_state_age_s if max_age_s is None else max_age_s
        result = read_state(path, STATE_KIND, STATE_VERSION, max_age_s=limit)
        if result.payload is None:
            return result.problem
        refused = self.restore_state(result.payload, result.age_s or 0.0)
        if refused:
            set_aside(path)  # the next save would overwrite it: keep it for the post-mortem
        return refused


# Relative margin for values the state file rounds (to 6 significant decimals).
_ROUNDING = 1e-6
# Pack throughput counters: far beyond any pack's life, small enough for every publisher.
_COUNTERS = (
    "charge_throughput_ah",
    "discharge_throughput_ah",
    "charge_energy_wh",
    "discharge_energy_wh",
)
_MAX_COUNTER = 1e12
# What restore_state may change, kept to put back when the result is refused.
_RESTORED_ATTRIBUTES = (
    "capacity",
    "resistance",
    "pack",
    "_x",
    "_p",
    "_sens",
    "_cap_sens",
    "_soh_resistance",
    "charge_throughput_ah",
    "discharge_throughput_ah",
    "charge_energy_wh",
    "discharge_energy_wh",
    "anchored",
    "_params_time_s",
)

__all__ = ["STATE_KIND", "STATE_VERSION", "Estimator"]
