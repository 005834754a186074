"""Pack SOC for inverters from per-cell SOC and capacity, with its uncertainty.

A series string is full when its first cell is full and empty when its first cell is empty.
With ``D = min_i soc_i·Q_i`` (charge that can still be taken out before the first cell is empty)
and ``C = min_i (1 − soc_i)·Q_i`` (charge that can still be put in before the first cell is
full), the pack SOC is ``D / (D + C)``. Moving a charge ``a`` through the string adds ``a`` to
every ``soc_i·Q_i``, so ``D`` grows by exactly ``a`` and ``C`` shrinks by exactly ``a``: ``D + C``
stays constant and the pack SOC is linear, hence continuous and monotonic, in the charge moved.
It is 1 when a cell is full, 0 when a cell is empty, and always within [0, 1].

That value jumps whenever a per-cell estimate is corrected (a Kalman update at an OCV knee, an
anchor). Inverters need a SOC that is continuous and moves with the charge, so
:class:`PackSocTracker` integrates the charge moved over the usable window ``D + C`` (coulomb
counting of the pack SOC itself) and lets the gap to the per-cell value close only as a bounded
drift whose sign never opposes the current: while charging the reported SOC never falls, while
discharging it never rises, at rest it drifts both ways at a bounded rate.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

SECONDS_PER_HOUR = 3600.0
# When the per-cell value says a cell is full (1) or empty (0), the reported value closes the
# gap this many times faster: inverters rely on 100 % meaning "full" (still monotonic).
END_RATE_FACTOR = 10.0


def pack_soc(soc: FloatArray, soc_std: FloatArray, capacity_ah: FloatArray) -> tuple[float, float]:
    """Return (pack SOC, its standard deviation) for one series string of cells."""
    value, std, _ = pack_window(soc, soc_std, capacity_ah)
    return value, std


def pack_window(
    soc: FloatArray, soc_std: FloatArray, capacity_ah: FloatArray
) -> tuple[float, float, float]:
    """(pack SOC, its standard deviation, usable window ``D + C`` in Ah of one cell group)."""
    clipped = np.clip(soc, 0.0, 1.0)
    stored_ah = clipped * capacity_ah
    room_ah = (1.0 - clipped) * capacity_ah
    low = int(np.argmin(stored_ah))
    high = int(np.argmin(room_ah))
    d_ah = float(stored_ah[low])
    c_ah = float(room_ah[high])
    total_ah = d_ah + c_ah
    if not total_ah > 1e-9 * float(np.max(capacity_ah)):
        # One cell full while another is empty: no usable window. Report empty (safe side).
        return 0.0, float(np.max(soc_std)), max(total_ah, 0.0)
    value = min(1.0, max(0.0, d_ah / total_ah))
    sigma_d = float(soc_std[low] * capacity_ah[low])
    sigma_c = float(soc_std[high] * capacity_ah[high])
    # df/dD = C/(D+C)², df/dC = −D/(D+C)². The same cell limiting both ends means its stored
    # charge and its room are perfectly anti-correlated (correlation −1).
    correlation = -1.0 if low == high else 0.0
    c_rel, d_rel = c_ah / total_ah, d_ah / total_ah
    variance = (
        (c_rel * sigma_d) ** 2
        + (d_rel * sigma_c) ** 2
        - 2.0 * correlation * c_rel * d_rel * sigma_d * sigma_c
    ) / total_ah**2
    return value, math.sqrt(max(variance, 0.0)), total_ah


class PackSocTracker:
    """The pack SOC reported to inverters: counted with the charge, pulled by a bounded drift.

    Each step: ``value += counted + correction`` with ``counted = charge / window`` (the charge
    moved through the string over the usable window ``D + C``, so the value moves exactly as the
    per-cell pack SOC would without corrections) and ``correction`` the gap to the per-cell value,
    limited to ``drift_rate_per_h·dt + correction_fraction·|counted|`` (the drift term
    ``END_RATE_FACTOR`` times larger when a cell is full or empty) and, while current flows,
    never against the current. The result is clamped to [0, 1]. Its standard deviation is the
    per-cell one combined with the remaining gap (an honest upper bound).
    """

    __slots__ = ("_correction_fraction", "_drift_rate_per_h", "value")

    def __init__(self, drift_rate_per_h: float, correction_fraction: float) -> None:
        self._drift_rate_per_h = drift_rate_per_h
        self._correction_fraction = correction_fraction
        self.value: float | None = None

    def update(
        self,
        target: float,
        target_std: float,
        window_ah: float,
        charge_ah: float,
        dt_s: float,
        direction: int,
    ) -> tuple[float, float]:
        """Advance by one step; return (reported pack SOC, its standard deviation).

        ``target``/``target_std``: the per-cell pack SOC now; ``window_ah``: its ``D + C``;
        ``charge_ah``: the charge moved through one cell group since the last step (positive
        charges, efficiency applied, offset removed); ``direction``: +1 charging, −1
        discharging, 0 resting or current unknown (then only the bounded drift applies).
        """
        if not math.isfinite(target):
            target = 0.0
        previous = self.value
        if previous is None or not math.isfinite(previous):
            value = min(1.0, max(0.0, target))
        else:
            counted = charge_ah / window_ah if window_ah > 0.0 else 0.0
            if not math.isfinite(counted) or direction * counted < 0.0:
                counted = 0.0  # a count against the stated direction is not used
            limit = self._drift_rate_per_h * max(dt_s, 0.0) / SECONDS_PER_HOUR
            if target >= 1.0 or target <= 0.0:
                limit *= END_RATE_FACTOR
            limit += self._correction_fraction * abs(counted)
            correction = min(limit, max(-limit, target - (previous + counted)))
            if direction > 0:
                correction = max(correction, 0.0)
            elif direction < 0:
                correction = min(correction, 0.0)
            value = previous + counted + correction
            # While current flows, the reported value never moves against it (clamping included).
            if direction > 0:
                value = max(value, previous)
            elif direction < 0:
                value = min(value, previous)
            value = min(1.0, max(0.0, value))
        self.value = value
        std = math.sqrt(max(target_std, 0.0) ** 2 + (value - target) ** 2)
        return value, std


__all__ = ["PackSocTracker", "pack_soc", "pack_window"]
