"""Estimates: SOC, SOH and counters of the pack at one tick (pure data, made by estimation/).

Per-cell values are flat read-only float64 arrays in the same module-major order as
:class:`bmsd.model.snapshot.PackSnapshot`. A "cell" here is what the slaves measure: a cell
group of ``cells_in_parallel`` cells; capacities and resistances are those of the group.
Fractions (SOC, SOH) are 0..1, not percent. Standard deviations are one sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Estimates:
    """The estimator's output for one tick; built by :class:`bmsd.estimation.Estimator`."""

    time_s: float
    """Monotonic time of the tick the estimate belongs to."""
    soc: FloatArray
    """Per-cell SOC, fraction 0..1 of that cell's own (estimated) capacity."""
    soc_std: FloatArray
    """Per-cell SOC standard deviation (fraction)."""
    pack_soc: float
    """SOC for inverters: 1 when the first cell is full, 0 when the first cell is empty,
    linear in the charge moved in between (see bmsd.estimation.pack)."""
    pack_soc_std: float
    average_soc: float
    """Plain mean of the per-cell SOC."""
    average_soc_std: float
    """Mean of the per-cell standard deviations (errors are mostly common to all cells)."""
    capacity_ah: FloatArray
    """Per-cell-group capacity estimate, Ah."""
    capacity_std_ah: FloatArray
    pack_capacity_ah: float
    """Capacity of the weakest cell group times the number of parallel strings, Ah."""
    soh_capacity: float
    """Pack capacity over nominal capacity (fraction; 1 = as new)."""
    resistance_ohm: FloatArray
    """Per-cell-group ohmic resistance R0 at the present SOC and temperature, Ω."""
    resistance_growth: FloatArray
    """Per-cell learned R0 over the cell file's R0 at the same SOC and temperature."""
    soh_resistance: float
    """Median resistance growth factor (1 = as new, 2 = resistance doubled)."""
    current_offset_a: float
    """Learned offset of the pack current sensor (subtracted from readings), A."""
    current_offset_std_a: float
    charge_throughput_ah: float
    """Total charge put into the pack, Ah (sensor offset removed)."""
    discharge_throughput_ah: float
    """Total charge taken out of the pack, Ah."""
    charge_energy_wh: float
    discharge_energy_wh: float
    equivalent_full_cycles: float
    """Discharge throughput over the nominal pack capacity."""
    at_rest: bool
    """|current| has been below the rest threshold for the configured rest time."""
    anchored: str
    """Last anchor event: "full", "empty", "ocv" (a relaxed OCV reading), "" for none yet."""
    anchored_at_s: float
    """Monotonic time of that anchor event (NaN when none)."""
    current_valid: bool
    """False when the last pack current was missing: the estimate is held, its std grows."""

    @property
    def cell_count(self) -> int:
        return int(self.soc.size)


__all__ = ["Estimates"]
