"""State of health: capacity from SOC anchors (weighted least squares) and resistance (RLS).

Both learners are vectorised over all cells and are pure arithmetic on numpy arrays; the
estimator decides *when* an anchor or a current step is good enough and feeds them here.

Capacity. Between two anchors (SOC known independently of coulomb counting: full, empty, or a
relaxed OCV outside the flat region) the charge passed ``y = ΔAh`` and the SOC change
``x = ΔSOC`` satisfy ``y = Q·x``. Both are noisy, so ordinary least squares of y on x is biased
towards zero (Plett 2011). Each sample is weighted with its effective variance
``1 / (σy² + Q̂²·σx²)`` (Orear 1982) and the known SOC noise is subtracted from the x² sum
(errors-in-variables correction), which removes that bias; the sums decay with a forgetting
factor and start from a prior sample (x = 1, y = nominal capacity), as in Plett's method.

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


class CapacityLearner:
    """Per-cell capacity from pairs of SOC anchors and the charge passed between them."""

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
        "samples",
        "sum_xx",
        "sum_xy",
    )

    def __init__(
        self,
        nominal_ah: FloatArray,
        *,
        prior_weight: float,
        prior_soc_std: float,
        min_swing: float,
        forgetting: float,
    ) -> None:
        count = nominal_ah.size
        self._count = count
        self._nominal_ah = nominal_ah.copy()
        self._min_swing = min_swing
        self._forgetting = forgetting
        # Prior sample x0 = 1, y0 = nominal, weighted like `prior_weight` full-swing samples
        # whose end points are known to prior_soc_std each.
        w0 = prior_weight / (nominal_ah**2 * 2.0 * prior_soc_std**2)
        self.sum_xx: FloatArray = w0 * 1.0
        self.sum_xy: FloatArray = w0 * nominal_ah
        self.capacity_ah: FloatArray = nominal_ah.copy()
        self.samples: FloatArray = np.zeros(count)
        self.anchor_valid: BoolArray = np.zeros(count, dtype=np.bool_)
        self.anchor_soc: FloatArray = np.zeros(count)
        self.anchor_var: FloatArray = np.zeros(count)
        self.anchor_ah: FloatArray = np.zeros(count)
        self.anchor_moved_ah: FloatArray = np.zeros(count)
        self.anchor_time_s: FloatArray = np.zeros(count)

    @property
    def capacity_std_ah(self) -> FloatArray:
        """One-sigma uncertainty of the capacity: 1/sqrt(information)."""
        return np.asarray(1.0 / np.sqrt(np.maximum(self.sum_xx, 1e-30)), dtype=np.float64)

    def add_anchor(
        self,
        mask: BoolArray,
        soc: FloatArray,
        soc_std: FloatArray,
        net_ah: float,
        moved_ah: float,
        time_s: float,
        current_std_a: float,
        gain_error: float,
    ) -> BoolArray:
        """Register anchors for the cells in ``mask``; return which of them gave a sample.

        ``net_ah`` is the cell group's running net charge counter (efficiency applied, offset
        removed), ``moved_ah`` the running sum of |charge|, both at the anchor time.
        ``current_std_a`` is the remaining current-offset uncertainty of one cell group.
        """
        used = np.zeros(self._count, dtype=np.bool_)
        if not mask.any():
            return used
        x = soc - self.anchor_soc
        y = net_ah - self.anchor_ah
        dt_s = time_s - self.anchor_time_s
        pair = mask & self.anchor_valid & (np.abs(x) >= self._min_swing)
        if pair.any():
            var_x = soc_std**2 + self.anchor_var
            moved = moved_ah - self.anchor_moved_ah
            var_y = (gain_error * moved) ** 2 + (current_std_a * np.maximum(dt_s, 0.0) / 3600) ** 2
            q = self.capacity_ah
            weight = 1.0 / (var_y + q * q * var_x)
            f = self._forgetting
            new_xx = f * self.sum_xx + weight * (x * x - var_x)
            new_xy = f * self.sum_xy + weight * x * y
            self.sum_xx = np.where(pair, np.maximum(new_xx, 1e-30), self.sum_xx)
            self.sum_xy = np.where(pair, new_xy, self.sum_xy)
            estimate = self.sum_xy / self.sum_xx
            low = self._nominal_ah * _CAPACITY_MIN_FRACTION
            high = self._nominal_ah * _CAPACITY_MAX_FRACTION
            self.capacity_ah = np.where(pair, np.clip(estimate, low, high), self.capacity_ah)
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
