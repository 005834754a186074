"""``[estimation]``: every tuning value of the SOC/SOH estimator, documented and range-checked.

Defaults work for both LFP and NMC cells of any size: currents are given as C-rates (fractions
of the cell group's nominal 1C current) rather than amperes, voltages relative to the cell
file's voltage window where a fixed value would only suit one chemistry. The method behind each
value is described in docs/estimation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsd.schema import doc, must_be_positive, must_not_be_negative


@dataclass(frozen=True, slots=True)
class EstimationConfig:
    """SOC/SOH estimation: filter noise, rest and anchor rules, SOH learning, persistence."""

    # --- Kalman filter noise -------------------------------------------------------------
    voltage_noise_v: float = doc(
        "Standard deviation of the fast, white part of the cell-voltage error: ADC noise plus "
        "the fast model error after current steps (about 15 mV for a fitted 2RC model)",
        unit="V",
        default=0.015,
    )
    model_error_v: float | None = doc(
        "Standard deviation of the slowly varying cell-model voltage error (OCV table, "
        "resistance, diffusion not captured by the RC pairs); estimated as a per-cell bias. "
        "Omit to use the cell file's model_error_v (the fit RMSE bmsd fit-cell writes), or "
        "0.01 V when the cell file has none",
        unit="V",
        default=None,
    )
    model_error_time_s: float = doc(
        "Correlation time of the model voltage error (Gauss-Markov bias)", unit="s", default=300.0
    )
    model_error_slow_time_s: float = doc(
        "Correlation time of the slow part of the model voltage error (solid diffusion, OCV "
        "table error) that the bias state cannot follow; it is not estimated, only added to the "
        "reported SOC uncertainty (consider analysis)",
        unit="s",
        default=3600.0,
    )
    soc_random_walk_per_sqrt_h: float = doc(
        "SOC process noise: random-walk standard deviation per square root of an hour",
        unit="1/√h",
        default=0.002,
    )
    current_gain_error: float = doc(
        "Relative standard deviation of the current sensor's gain error (0.005 = 0.5 %); grows "
        "the SOC uncertainty with the charge moved",
        default=0.005,
    )
    current_offset_std_c_rate: float = doc(
        "Standard deviation of an unlearned current-sensor offset, as a fraction of 1C",
        unit="C",
        default=0.003,
    )
    current_offset_drift_c_rate_per_sqrt_h: float = doc(
        "Random-walk drift of the current offset per square root of an hour, fraction of 1C",
        unit="C/√h",
        default=0.0005,
    )
    initial_soc_std: float = doc(
        "SOC standard deviation after a start from the open-circuit voltage (added to the "
        "uncertainty the OCV slope gives); wide, because the cells may not be relaxed",
        default=0.15,
    )
    unknown_current_c_rate: float = doc(
        "While the current reading is invalid, the SOC uncertainty grows as if this C-rate "
        "could flow unseen",
        unit="C",
        default=0.5,
    )
    innovation_gate_sigma: float = doc(
        "Voltage residuals beyond this many standard deviations are down-weighted (spikes)",
        default=5.0,
    )
    parameter_refresh_s: float = doc(
        "How often the resistances and time constants are looked up again for the present SOC "
        "and temperature (they change slowly)",
        unit="s",
        default=5.0,
    )
    # --- rest and OCV correction ---------------------------------------------------------
    rest_current_c_rate: float = doc(
        "The pack is resting while |current| stays below this C-rate", unit="C", default=0.01
    )
    rest_time_s: float = doc(
        "Resting this long makes the pack 'at rest': OCV correction starts", unit="s", default=600.0
    )
    ocv_drift_rate_per_h: float = doc(
        "At rest the OCV pulls a confident SOC at most this fast (fraction per hour): a drift, "
        "never a jump. An uncertain one (after a start) may move one standard deviation per "
        "rest_time_s",
        unit="1/h",
        default=0.1,
    )
    # --- pack SOC for inverters ----------------------------------------------------------
    pack_soc_drift_rate_per_h: float = doc(
        "The reported pack SOC follows the per-cell estimate by coulomb counting plus a "
        "correction of at most this much per hour (never against the current direction)",
        unit="1/h",
        default=0.3,
    )
    pack_soc_correction_fraction: float = doc(
        "While current flows the pack SOC correction may also be up to this fraction of the "
        "counted change (0.5: it moves at 0.5 to 1.5 times the counted rate)",
        default=0.5,
    )
    # --- anchors -------------------------------------------------------------------------
    full_voltage_v: float = doc(
        "A cell at or above this voltage at the end of constant-voltage charging is full; "
        "0 = the cell file's max_voltage_v − 0.05 V",
        unit="V",
        default=0.0,
    )
    full_tail_c_rate: float = doc(
        "End of constant-voltage charging: charge current at or below this C-rate",
        unit="C",
        default=0.05,
    )
    full_hold_s: float = doc(
        "The full-charge condition must hold this long before the cell is anchored at 100 %",
        unit="s",
        default=30.0,
    )
    empty_voltage_v: float = doc(
        "A discharging cell at or below this voltage is at the end of discharge; "
        "0 = the cell file's min_voltage_v + 0.05 V",
        unit="V",
        default=0.0,
    )
    empty_hold_s: float = doc(
        "The end-of-discharge condition must hold this long before the cell is anchored",
        unit="s",
        default=10.0,
    )
    anchor_soc_std: float = doc(
        "Standard deviation of the SOC at a full or empty anchor", default=0.01
    )
    # --- current offset ------------------------------------------------------------------
    offset_learning: bool = doc(
        "Learn the current-sensor offset while the current is known to be zero (contactors open)",
        default=True,
    )
    offset_sample_std_c_rate: float = doc(
        "Noise of one current sample when learning the offset, fraction of 1C",
        unit="C",
        default=0.002,
    )
    max_offset_c_rate: float = doc(
        "A learned offset larger than this (fraction of 1C) is a sensor fault: it is not used",
        unit="C",
        default=0.02,
    )
    rest_offset_learning: bool = doc(
        "Also learn the current offset over long relaxed rests with the contactors closed: the "
        "part of the counted charge the relaxed voltage does not confirm (a real standby load "
        "moves the voltage too, so it is not taken for offset)",
        default=True,
    )
    rest_offset_start_s: float = doc(
        "A rest window for offset learning starts after this much rest (the cells have relaxed)",
        unit="s",
        default=1800.0,
    )
    rest_offset_min_window_s: float = doc(
        "A rest window shorter than this when the rest ends gives no offset sample",
        unit="s",
        default=3600.0,
    )
    rest_offset_max_window_s: float = doc(
        "A longer rest is cut into windows of this length, one offset sample each",
        unit="s",
        default=14400.0,
    )
    rest_offset_voltage_drift_v_per_h: float = doc(
        "Voltage drift a relaxed cell may still show without any current (slow relaxation, "
        "temperature), added to each window's slope uncertainty; it does not shrink with a "
        "longer window, so a rest on a flat OCV (LFP plateau) teaches nearly nothing",
        unit="V/h",
        default=0.0003,
    )
    rest_offset_max_temp_change_c: float = doc(
        "Cells whose temperature moved more than this during the window are left out (the OCV "
        "moves with temperature)",
        unit="°C",
        default=2.0,
    )
    rest_offset_max_c_rate: float = doc(
        "A rest window implying a larger offset (fraction of 1C) is dropped, not used: so large "
        "a gap between counted and confirmed charge is not an offset",
        unit="C",
        default=0.01,
    )
    # --- SOH: capacity -------------------------------------------------------------------
    capacity_relax_dvdt_v_per_s: float = doc(
        "A rest voltage counts as relaxed OCV when it changes slower than this "
        "(TI Impedance Track uses 4 µV/s)",
        unit="V/s",
        default=4e-6,
    )
    capacity_min_rest_s: float = doc(
        "A capacity anchor from OCV needs at least this much rest", unit="s", default=1800.0
    )
    capacity_temp_window_c: tuple[float, float] = doc(
        "Capacity anchors only between these cell temperatures", unit="°C", default=(10.0, 40.0)
    )
    capacity_min_soc_swing: float = doc(
        "Two anchors must be at least this far apart in SOC to give a capacity sample",
        default=0.37,
    )
    capacity_min_ocv_slope_v: float = doc(
        "No OCV anchor where dOCV/dSOC is below this (V per unit SOC; 0.1 V = 1 mV per %SOC): "
        "excludes the LFP plateau",
        unit="V",
        default=0.1,
    )
    capacity_prior_std: float = doc(
        "Uncertainty of the nominal capacity as the starting value of the capacity fit, "
        "fraction of nominal (cells vary and age: anchors soon outweigh it)",
        default=0.1,
    )
    capacity_forgetting: float = doc(
        "Forgetting factor per capacity sample (1 = never forget)", default=0.95
    )
    # --- SOH: resistance -----------------------------------------------------------------
    rls_forgetting: float = doc(
        "Forgetting factor of the recursive-least-squares resistance fit, per current step",
        default=0.98,
    )
    resistance_min_step_c_rate: float = doc(
        "Only current steps at least this large (fraction of 1C) update the resistance",
        unit="C",
        default=0.1,
    )
    resistance_max_step_s: float = doc(
        "Only steps between samples at most this far apart update the resistance",
        unit="s",
        default=2.0,
    )
    # --- chemistry and persistence -------------------------------------------------------
    coulombic_efficiency: float | None = doc(
        "Override the cell file's coulombic efficiency (applied to charge); omit to use it",
        default=None,
    )
    state_save_interval_s: float = doc(
        "Save the estimator state this often (and at shutdown)", unit="s", default=5.0
    )
    max_state_age_s: float = doc(
        "An older saved state is not trusted: the SOC restarts from OCV",
        unit="s",
        default=7 * 86400.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        positive = (
            "voltage_noise_v",
            "model_error_time_s",
            "model_error_slow_time_s",
            "initial_soc_std",
            "innovation_gate_sigma",
            "parameter_refresh_s",
            "rest_current_c_rate",
            "ocv_drift_rate_per_h",
            "pack_soc_drift_rate_per_h",
            "full_tail_c_rate",
            "anchor_soc_std",
            "offset_sample_std_c_rate",
            "max_offset_c_rate",
            "rest_offset_min_window_s",
            "rest_offset_max_window_s",
            "rest_offset_voltage_drift_v_per_h",
            "rest_offset_max_temp_change_c",
            "rest_offset_max_c_rate",
            "capacity_relax_dvdt_v_per_s",
            "resistance_min_step_c_rate",
            "resistance_max_step_s",
            "state_save_interval_s",
            "max_state_age_s",
        )
        problems += must_be_positive(self, *positive)
        non_negative = (
            "soc_random_walk_per_sqrt_h",
            "current_gain_error",
            "current_offset_std_c_rate",
            "current_offset_drift_c_rate_per_sqrt_h",
            "unknown_current_c_rate",
            "rest_time_s",
            "full_voltage_v",
            "full_hold_s",
            "empty_voltage_v",
            "empty_hold_s",
            "capacity_min_rest_s",
            "capacity_min_ocv_slope_v",
            "rest_offset_start_s",
        )
        problems += must_not_be_negative(self, *non_negative)
        if self.voltage_noise_v > 0.5:
            problems.append(("voltage_noise_v", "must be at most 0.5 V (is it in mV?)"))
        model_error = self.model_error_v
        if model_error is not None and not 0.0 < model_error <= 0.5:
            problems.append(("model_error_v", "must be positive and at most 0.5 V (is it in mV?)"))
        if not 0.0 <= self.pack_soc_correction_fraction <= 1.0:
            problems.append(("pack_soc_correction_fraction", "must be in [0, 1]"))
        if self.initial_soc_std > 1.0:
            problems.append(("initial_soc_std", "must be at most 1"))
        if self.anchor_soc_std > 0.2:
            problems.append(("anchor_soc_std", "must be at most 0.2"))
        if self.current_gain_error > 0.2:
            problems.append(("current_gain_error", "must be at most 0.2"))
        if self.rest_current_c_rate > 0.2:
            problems.append(("rest_current_c_rate", "must be at most 0.2 C"))
        if self.full_tail_c_rate > 1.0:
            problems.append(("full_tail_c_rate", "must be at most 1 C"))
        for key in ("full_voltage_v", "empty_voltage_v"):
            value = getattr(self, key)
            if value != 0.0 and not 1.0 <= value <= 5.0:
                problems.append((key, "must be 0 (from the cell file) or between 1 and 5 V"))
        low, high = self.capacity_temp_window_c
        if low >= high:
            problems.append(("capacity_temp_window_c", f"lower bound {low} must be below {high}"))
        if not 0.0 < self.capacity_prior_std <= 1.0:
            problems.append(("capacity_prior_std", "must be in (0, 1]"))
        if not 0.0 < self.capacity_min_soc_swing <= 1.0:
            problems.append(("capacity_min_soc_swing", "must be in (0, 1]"))
        for key in ("capacity_forgetting", "rls_forgetting"):
            if not 0.5 <= getattr(self, key) <= 1.0:
                problems.append((key, "must be in [0.5, 1]"))
        if self.rest_offset_min_window_s > self.rest_offset_max_window_s:
            problems.append(
                ("rest_offset_min_window_s", "must not exceed rest_offset_max_window_s")
            )
        if self.rest_offset_max_c_rate > self.max_offset_c_rate:
            problems.append(("rest_offset_max_c_rate", "must not exceed max_offset_c_rate"))
        ce = self.coulombic_efficiency
        if ce is not None and not 0.5 < ce <= 1.0:
            problems.append(("coulombic_efficiency", "must be in (0.5, 1]"))
        # Durations beyond these are unit slips (hours typed as seconds, a stray exponent) that
        # would quietly switch a correction off: a rest never long enough, a state never saved.
        for key, most_s in (*((key, DAY_S) for key in DAY_BOUNDED), *TIME_BOUNDS):
            if getattr(self, key) > most_s:
                problems.append((key, f"must be at most {most_s:.0f} s"))
        return problems


DAY_S = 86_400.0
DAY_BOUNDED = (
    "model_error_time_s",
    "model_error_slow_time_s",
    "parameter_refresh_s",
    "rest_time_s",
    "full_hold_s",
    "empty_hold_s",
    "rest_offset_start_s",
    "rest_offset_min_window_s",
    "rest_offset_max_window_s",
    "capacity_min_rest_s",
    "resistance_max_step_s",
)
TIME_BOUNDS = (
    ("state_save_interval_s", 3600.0),  # a crash loses at most this much of the SOC's history
    ("max_state_age_s", 365 * DAY_S),
)


__all__ = ["EstimationConfig"]
