"""Urgent readings: a decoded value beyond a fatal threshold wakes the control loop at once.

The control loop stays the only decision maker; an urgent reading only makes it take its next
sample now instead of at the next scheduled tick, so a fatal over-voltage or over-current is
judged within the time it takes to run one tick rather than up to a whole tick period later.
Only fatal thresholds wake the loop: it samples early, it never decides here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsd.config import Config
from bmsd.model.readings import CellVoltageGroup, Quantity, Reading, ScalarReading


@dataclass(frozen=True, slots=True)
class UrgentCheck:
    """Precomputed fatal thresholds and the physical ranges they are judged within."""

    cell_high_v: float
    cell_low_v: float
    voltage_range_v: tuple[float, float]
    charge_limit_a: float
    discharge_limit_a: float

    @classmethod
    def from_config(cls, config: Config, pack_capacity_ah: float) -> UrgentCheck:
        def fatal(quantity: str) -> list[float]:
            return [
                spec.fatal.threshold
                for spec in config.protection.faults.values()
                if spec.enabled and spec.quantity == quantity and spec.fatal is not None
            ]

        inf = float("inf")
        return cls(
            cell_high_v=min(fatal("cell_voltage_max_v"), default=inf),
            cell_low_v=max(fatal("cell_voltage_min_v"), default=-inf),
            voltage_range_v=config.acquisition.cell_voltage_range_v,
            charge_limit_a=min(fatal("charge_current_c"), default=inf) * pack_capacity_ah,
            discharge_limit_a=min(fatal("discharge_current_c"), default=inf) * pack_capacity_ah,
        )

    def __call__(self, reading: Reading) -> bool:
        if isinstance(reading, CellVoltageGroup):
            low, high = self.voltage_range_v
            return any(
                low <= v <= high and (v >= self.cell_high_v or v <= self.cell_low_v)
                for v in reading.voltages_v
            )
        if isinstance(reading, ScalarReading) and reading.quantity is Quantity.PACK_CURRENT_A:
            return reading.value >= self.charge_limit_a or -reading.value >= self.discharge_limit_a
        return False
