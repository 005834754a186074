"""Pack SOC for inverters from per-cell SOC and capacity, with its uncertainty.

A series string is full when its first cell is full and empty when its first cell is empty.
With ``D = min_i soc_i·Q_i`` (charge that can still be taken out before the first cell is empty)
and ``C = min_i (1 − soc_i)·Q_i`` (charge that can still be put in before the first cell is
full), the pack SOC is ``D / (D + C)``. Moving a charge ``a`` through the string adds ``a`` to
every ``soc_i·Q_i``, so ``D`` grows by exactly ``a`` and ``C`` shrinks by exactly ``a``: ``D + C``
stays constant and the pack SOC is linear, hence continuous and monotonic, in the charge moved.
It is 1 when a cell is full, 0 when a cell is empty, and always within [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def pack_soc(soc: FloatArray, soc_std: FloatArray, capacity_ah: FloatArray) -> tuple[float, float]:
    """Return (pack SOC, its standard deviation) for one series string of cells."""
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
        return 0.0, float(np.max(soc_std))
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
    return value, math.sqrt(max(variance, 0.0))


__all__ = ["pack_soc"]
