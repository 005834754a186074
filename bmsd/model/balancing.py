"""BalancingState: what cell balancing does at one tick (pure data, made by balancing/).

Per-cell arrays are flat, read-only and in the same module-major order as
:class:`bmsd.model.snapshot.PackSnapshot`. Publishers (Modbus, metrics, inverter profiles) read
this and nothing inside ``bmsd.balancing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class BalancingState:
    """The balancing plan for one tick and what it has done so far."""

    strategy: str
    """Configured strategy: ``none``, ``voltage``, ``soc`` or ``top``."""
    enabled: bool
    """Allowed by the config and by the operator (a Modbus or CLI balancing enable)."""
    active: bool
    """At least one cell is commanded to bleed this tick."""
    reason: str
    """Why bleeding is on or held off now, in words for the operator."""
    bleeding: NDArray[np.bool_]
    """Per cell: commanded to bleed this tick."""
    bled_ah: NDArray[np.float64]
    """Per cell: charge bled since the counters started, Ah."""
    feedback_mismatch_modules: int = 0
    """Modules whose reported balancing state differs from the command."""
    spread: float = float("nan")
    """The imbalance the strategy sees, in ``spread_unit`` (NaN: not known)."""
    spread_unit: str = ""
    """``V`` (voltage and top strategies) or ``share`` (soc: fraction of a cell's capacity)."""
    remaining_ah: NDArray[np.float64] | None = None
    """soc strategy: per cell, charge still to bleed under the present plan, Ah."""
    charge_hold_a: float | None = None
    """The charge current limit balancing holds the pack at near the top (None: no hold)."""

    @property
    def bleeding_count(self) -> int:
        return int(np.count_nonzero(self.bleeding))

    @property
    def bled_total_ah(self) -> float:
        return float(self.bled_ah.sum())
