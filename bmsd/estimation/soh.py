"""State of health: capacity from SOC anchors (weighted least squares) and resistance (RLS).

Both learners are vectorised over all cells and are pure arithmetic on numpy arrays; the
estimator decides *when* an anchor or a current step is good enough and feeds them here.

Capacity. Between two anchors (SOC known independently of coulomb counting: full, empty, or a
relaxed OCV outside the flat region) the charge passed ``y = ΔAh``, the SOC change
``x = ΔSOC`` and the time ``t`` satisfy ``y = Q·x + b·t`` (b: a current-sensor offset left in
the count). Both y and x are noisy, so ordinary least squares is biased towards zero (Plett
2011). Each sample is weighted with its effective variance ``1 / (σy² + Q̂²·σx²)`` (Orear
1982) and the known SOC noise is subtracted from the x² sum (errors-in-variables correction),
which removes that bias; the sums decay with a forgetting factor and start from priors (x = 1,
y = nominal capacity, as in Plett's method; b = 0).

Resistance. At each large current step the voltage step over one sample is
``ΔV = g·(R0 + R1·(1 − e^(−dt/τ1)) [+ R2 term])·ΔI`` with the cell file's resistances and an
unknown growth factor g per cell, fitted by scalar recursive least squares with forgetting.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# The growth factor is kept in a physically plausible band; outside it the data is wrong.
_GROWTH_MIN = 0.3
_GROWTH_MAX = 5.0
# Capacity estimates are kept within this band of nominal for the same reason.
_CAPACITY_MIN_FRACTION = 0.3
_CAPACITY_MAX_FRACTION = 1.5
# The same bands, for checking restored state: a value the learners cannot produce is damage.
GROWTH_RANGE = (_GROWTH_MIN, _GROWTH_MAX)
CAPACITY_FRACTION_RANGE = (_CAPACITY_MIN_FRACTION, _CAPACITY_MAX_FRACTION)


class CapacityLearner:
    """Per-cell capacity (and the current offset it sees) from pairs of SOC anchors.

    Between two anchors ``y = Q·x + b·t``: ``y`` the counted charge (Ah), ``x`` the SOC change,
    ``t`` the hours between them and ``b`` a residual current-sensor offset (A) that the SOC
    filter could not learn (no zero-current readings). A charge pair and a discharge pair have
    ``x`` of opposite signs but ``t`` of the same sign, so ``Q`` and ``b`` separate; fitting only
    ``Q`` would read the offset as capacity (high after charging, low after discharging).
    Weighted least squares over the recursive sums below, with the effective-variance weight
    ``1/(σy² + Q̂²·σx²)`` and the errors-in-variables correction on the ``x²`` sum; priors
    ``Q = nominal ± prior_std·nominal`` and ``b = 0 ± offset_prior_std_a``.
    """

    __slots__ = (
        "_count",
        "_forgetting",
        "_min_swing",
        "_nominal_ah",
        "anchor_ah",
        "anchor_moved_ah",
        "anchor_soc",
        "anchor_time_s",
        "anchor_valid",
        "anchor_var",
        "capacity_ah",
        "offset_a",
        "samples",
        "sum_tt",
        "sum_ty",
        "sum_xt",
        "sum_xx",
        "sum_xy",
    )

    def __init__(
        self,
        nominal_ah: FloatArray,
        *,
        prior_std: float,
        offset_prior_std_a: float,
        min_swing: float,
        forgetting: float,
    ) -> None:
        count = nominal_ah.size
        self._count = count
        self._nominal_ah = nominal_ah.copy()
        self._min_swing = min_swing
        self._forgetting = forgetting
        # Priors as pseudo-samples: x = 1, y = nominal with σy = prior_std·nominal; t = 1 h,
        # y = 0 with σy = offset_prior_std_a (an offset of that size moves that much per hour).
        w_q = 1.0 / (prior_std * nominal_ah) ** 2
        w_b = 1.0 / max(offset_prior_std_a, 1e-12) ** 2
        self.sum_xx: FloatArray = w_q.copy()
        self.sum_xy: FloatArray = w_q * nominal_ah
        self.sum_xt: FloatArray = np.zeros(count)
        self.sum_tt: FloatArray = np.full(count, w_b)
        self.sum_ty: FloatArray = np.zeros(count)
        self.capacity_ah: FloatArray = nominal_ah.copy()
        self.offset_a: FloatArray = np.zeros(count)
        self.samples: FloatArray = np.zeros(count)
        self.anchor_valid: BoolArray = np.zeros(count, dtype=np.bool_)
        self.anchor_soc: FloatArray = np.zeros(count)
        self.anchor_var: FloatArray = np.zeros(count)
        self.anchor_ah: FloatArray = np.zeros(count)
        self.anchor_moved_ah: FloatArray = np.zeros(count)
        self.anchor_time_s: FloatArray = np.zeros(count)

    def _determinant(self) -> FloatArray:
        det = self.sum_xx * self.sum_tt - self.sum_xt**2
        return np.asarray(np.maximum(det, 1e-30 * self.sum_xx * self.sum_tt), dtype=np.float64)

    @property
    def capacity_std_ah(self) -> FloatArray:
        """One-sigma uncertainty of the capacity (offset marginalised)."""
        variance = self.sum_tt / self._determinant()
        return np.asarray(np.sqrt(np.maximum(variance, 0.0)), dtype=np.float64)

    def solve(self) -> None:
        """Capacity and offset from the sums (2×2 normal equations per cell), clamped."""
        det = self._determinant()
        capacity = (self.sum_xy * self.sum_tt - self.sum_ty * self.sum_xt) / det
        low = self._nominal_ah * _CAPACITY_MIN_FRACTION
        high = self._nominal_ah * _CAPACITY_MAX_FRACTION
        self.capacity_ah = np.clip(capacity, low, high)
        self.offset_a = (self.sum_xx * self.sum_ty - self.sum_xt * self.sum_xy) / det

    def add_anchor(
        self,
        mask: BoolArray,
        soc: FloatArray,
        soc_std: FloatArray,
        net_ah: float | FloatArray,
        moved_ah: float,
        time_s: float,
        offset_drift_a_per_sqrt_h: float,
        gain_error: float,
    ) -> BoolArray:
        """Register anchors for the cells in ``mask``; return which of them gave a sample.

        ``net_ah`` is the cell group's running net charge counter (efficiency applied, learned
        offset removed, balancing bleed subtracted; one value per cell or one for all),
        ``moved_ah`` the running sum of |charge|, both at the anchor time.
        ``offset_drift_a_per_sqrt_h`` is the random-walk drift of the offset of one cell group's
        current: the part a constant offset term cannot follow (its integral over ``t`` hours
        has a variance of ``drift²·t³/3``).
        """
        used = np.zeros(self._count, dtype=np.bool_)
        if not mask.any():
            return used
        x = soc - self.anchor_soc
        y = net_ah - self.anchor_ah
        t_h = np.maximum(time_s - self.anchor_time_s, 0.0) / 3600.0
        pair = mask & self.anchor_valid & (np.abs(x) >= self._min_swing)
        if pair.any():
            var_x = soc_std**2 + self.anchor_var
            moved = moved_ah - self.anchor_moved_ah
            var_y = (gain_error * moved) ** 2 + offset_drift_a_per_sqrt_h**2 * t_h**3 / 3.0
            q = self.capacity_ah
            w = np.where(pair, 1.0 / (var_y + q * q * var_x), 0.0)
            f = np.where(pair, self._forgetting, 1.0)
            self.sum_xx = np.maximum(f * self.sum_xx + w * (x * x - var_x), 1e-30)
            self.sum_xy = f * self.sum_xy + w * x * y
            self.sum_xt = f * self.sum_xt + w * x * t_h
            self.sum_tt = f * self.sum_tt + w * t_h * t_h
            self.sum_ty = f * self.sum_ty + w * t_h * y
            self.solve()
            self.samples = self.samples + pair
            used = pair
        self.anchor_valid = self.anchor_valid | mask
        self.anchor_soc = np.where(mask, soc, self.anchor_soc)
        self.anchor_var = np.where(mask, soc_std**2, self.anchor_var)
        self.anchor_ah = np.where(mask, net_ah, self.anchor_ah)
        self.anchor_moved_ah = np.where(mask, moved_ah, self.anchor_moved_ah)
        self.anchor_time_s = np.where(mask, time_s, self.anchor_time_s)
        return used


class ResistanceRls:
    """Per-cell resistance growth factor g by scalar recursive least squares with forgetting."""

    __slots__ = ("_forgetting", "growth", "variance")

    def __init__(self, count: int, *, forgetting: float, prior_std: float = 0.3) -> None:
        self._forgetting = forgetting
        self.growth: FloatArray = np.ones(count)
        self.variance: FloatArray = np.full(count, prior_std**2)

    def update(
        self, mask: BoolArray, regressor_v: FloatArray, step_v: FloatArray, noise_v: float
    ) -> None:
        """One RLS step for the cells in ``mask``: ``step_v ≈ growth · regressor_v``.

        Both are divided by the voltage noise so the variance is that of the growth factor.
        """
        if not mask.any():
            return
        phi = regressor_v / noise_v
        y = step_v / noise_v
        lam = self._forgetting
        p = self.variance
        gain = p * phi / (lam + phi * phi * p)
        growth = np.clip(self.growth + gain * (y - phi * self.growth), _GROWTH_MIN, _GROWTH_MAX)
        # Bounded from below so that forgetting cannot make the estimator overconfident, and
        # from above so that long periods without steps do not blow the variance up.
        variance = np.clip((p - gain * phi * p) / lam, 1e-6, 1.0)
        self.growth = np.where(mask, growth, self.growth)
        self.variance = np.where(mask, variance, self.variance)


__all__ = ["CapacityLearner", "ResistanceRls"]
