"""Simulated cell array: the plant model of the built-in simulator (vectorised over all cells).

Each cell is an equivalent circuit (OCV source, series resistance R0, one or two RC pairs) with
coulomb counting, self-discharge, an optional injected leakage and a lumped thermal node::

    terminal_voltage_v = OCV(soc, T) + I·R0(soc, T) + V_rc1 + V_rc2        (I > 0 charges)

Parameters come from a :class:`~bmsd.model.cell.CellModel`; every cell gets its own capacity and
resistance factor drawn once from a seeded random generator, so runs are repeatable.

Every update is exact for a current held constant over the step (zero-order hold), so any step
from 1 ms to hours is stable: exponential RC and thermal updates, linear charge update.

The simulator is the *plant*: it knows the truth (charge, SOC, temperature) that bmsd must
estimate from measured voltages and currents. Nothing in bmsd outside ``sim/`` may read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bmsd.model.cell import CellModel

FloatArray = NDArray[np.float64]
CellIndex = int | slice | Sequence[int] | NDArray[np.integer[Any]] | None
"""Which cells an operation applies to: one index, a slice, a list/array of indices, or all."""

SECONDS_PER_HOUR = 3600.0

# Beyond the ends of the OCV table the simulated OCV keeps moving with this slope, so an
# over-charged cell shows a rising voltage that protection can see (and an over-discharged one
# a falling voltage). 10 V per unit SOC = 100 mV per %SOC: steeper than any table segment of the
# shipped cells, like the real knee of a full or empty cell.
OVERRANGE_SLOPE_V_PER_SOC = 10.0

# The simulated charge is clamped to this SOC range. The OCV at the clamp is already 1 V beyond
# the table end (far past any protection threshold); the clamp only keeps a runaway test (a leak
# left on for months, protection disabled) finite.
SOC_CLAMP = (-0.1, 1.1)


def _readonly(values: FloatArray) -> FloatArray:
    view = values.view()
    view.flags.writeable = False
    return view


class SimCellArray:
    """``count`` simulated cells of one type, stepped together.

    Spreads are normal distributions (truncated at ±3σ) whose σ is given in percent:
    ``capacity_spread_pct`` and ``resistance_spread_pct`` are relative to the nominal value,
    ``soc_spread_pct`` is in percentage points of SOC added to ``initial_soc`` (then clamped to
    0..1). The resistance factor of a cell scales R0, R1 and R2 alike; time constants are
    unchanged. Temperatures start at ``ambient_temp_c``.
    """

    def __init__(
        self,
        cell: CellModel,
        count: int,
        *,
        capacity_spread_pct: float,
        resistance_spread_pct: float,
        initial_soc: float | FloatArray,
        soc_spread_pct: float,
        ambient_temp_c: float,
        seed: int,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        for name, value in (
            ("capacity_spread_pct", capacity_spread_pct),
            ("resistance_spread_pct", resistance_spread_pct),
            ("soc_spread_pct", soc_spread_pct),
        ):
            if not 0.0 <= value < 30.0:
                raise ValueError(f"{name} must be in [0, 30) %, got {value}")
        self.cell = cell
        self.count = count
        rng = np.random.default_rng(seed)

        def spread(sigma_pct: float) -> FloatArray:
            draw = np.clip(rng.standard_normal(count), -3.0, 3.0)
            return np.asarray(1.0 + draw * sigma_pct / 100.0, dtype=np.float64)

        info = cell.info
        self._capacity_ah: FloatArray = info.capacity_ah * spread(capacity_spread_pct)
        self._resistance_factor: FloatArray = spread(resistance_spread_pct)
        soc0 = np.broadcast_to(np.asarray(initial_soc, dtype=np.float64), (count,))
        soc_offset = np.clip(rng.standard_normal(count), -3.0, 3.0) * soc_spread_pct / 100.0
        soc = np.clip(soc0 + soc_offset, 0.0, 1.0)
        self._charge_ah: FloatArray = soc * self._capacity_ah
        self._v_rc1_v: FloatArray = np.zeros(count)
        self._v_rc2_v: FloatArray = np.zeros(count)
        self._ambient_temp_c: FloatArray = np.full(count, float(ambient_temp_c))
        self._temp_c: FloatArray = self._ambient_temp_c.copy()
        self._leak_a: FloatArray = np.zeros(count)
        self._pending_heat_w: FloatArray = np.zeros(count)
        self._last_current_a: FloatArray = np.zeros(count)
        thermal = cell.file.thermal
        self._heat_capacity_j_per_k = thermal.heat_capacity_j_per_k
        self._thermal_resistance_k_per_w = thermal.thermal_resistance_k_per_w

    # --- read-only state -------------------------------------------------------------------

    @property
    def charge_ah(self) -> FloatArray:
        """Charge held by each cell, Ah (read-only view)."""
        return _readonly(self._charge_ah)

    @property
    def capacity_ah(self) -> FloatArray:
        """Capacity of each cell after spread and ageing, Ah (read-only view)."""
        return _readonly(self._capacity_ah)

    @property
    def soc(self) -> FloatArray:
        """True SOC of each cell as a fraction of its own capacity (read-only)."""
        return _readonly(self._charge_ah / self._capacity_ah)

    @property
    def temp_c(self) -> FloatArray:
        """Cell temperature, °C (read-only view)."""
        return _readonly(self._temp_c)

    @property
    def resistance_factor(self) -> FloatArray:
        """Per-cell multiplier on R0/R1/R2 from spread and ageing (read-only view)."""
        return _readonly(self._resistance_factor)

    @property
    def rc_voltage_v(self) -> FloatArray:
        """Sum of the RC-pair voltages of each cell (polarisation), V (read-only)."""
        return _readonly(self._v_rc1_v + self._v_rc2_v)

    @property
    def last_current_a(self) -> FloatArray:
        """Terminal current of each cell during the last step, A (read-only view)."""
        return _readonly(self._last_current_a)

    # --- voltages --------------------------------------------------------------------------

    def ocv_v(self) -> FloatArray:
        """Open-circuit voltage of each cell, extended beyond the table ends (see module)."""
        soc = self._charge_ah / self._capacity_ah
        soc_min, soc_max = self.cell.ocv_soc_range
        inside = np.clip(soc, soc_min, soc_max)
        ocv = self.cell.ocv_v(inside, self._temp_c)
        return np.asarray(ocv + (soc - inside) * OVERRANGE_SLOPE_V_PER_SOC, dtype=np.float64)

    def terminal_voltage_v(self) -> FloatArray:
        """Voltage at each cell's terminals with the last step's current flowing, V."""
        soc = self._charge_ah / self._capacity_ah
        r0 = self.cell.r0_ohm(soc, self._temp_c) * self._resistance_factor
        return self.ocv_v() + self._last_current_a * r0 + self._v_rc1_v + self._v_rc2_v

    # --- dynamics --------------------------------------------------------------------------

    def step(self, dt_s: float, cell_current_a: ArrayLike) -> None:
        """Advance every cell by ``dt_s`` with ``cell_current_a`` (A, > 0 charges) held constant.

        ``cell_current_a`` is the current through each cell's terminals (a scalar for a series
        string, or one value per cell; a balancing bleed is subtracted by the caller). Charge
        efficiency applies to charging terminal current only; leakage and self-discharge are
        internal and bypass R0 and the RC pairs. Heat added with :meth:`add_heat_w` since the
        last step is applied during this one and then cleared.
        """
        if not dt_s > 0.0:
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        current = np.broadcast_to(np.asarray(cell_current_a, dtype=np.float64), (self.count,))
        if not np.all(np.isfinite(current)):
            raise ValueError("cell_current_a must be finite")
        cell, info = self.cell, self.cell.info
        soc = self._charge_ah / self._capacity_ah
        temp = self._temp_c
        factor = self._resistance_factor

        r0 = cell.r0_ohm(soc, temp) * factor
        r1 = cell.r1_ohm(soc, temp) * factor
        self._v_rc1_v, loss1_w = _rc_step(self._v_rc1_v, current, r1, cell.tau1_s(soc, temp), dt_s)
        heat_w = current * current * r0 + loss1_w
        r2 = cell.r2_ohm(soc, temp)
        tau2 = cell.tau2_s(soc, temp)
        if r2 is not None and tau2 is not None:
            self._v_rc2_v, loss2_w = _rc_step(self._v_rc2_v, current, r2 * factor, tau2, dt_s)
            heat_w = heat_w + loss2_w

        # Self-discharge stops at empty; an injected leak does not (it is a fault).
        self_discharge_a = np.where(soc > 0.0, cell.self_discharge_a(self._capacity_ah), 0.0)
        stored_a = np.where(current > 0.0, current * info.coulombic_efficiency, current)
        net_a = stored_a - self._leak_a - self_discharge_a
        charge = self._charge_ah + net_a * dt_s / SECONDS_PER_HOUR
        lo, hi = SOC_CLAMP
        self._charge_ah = np.clip(charge, lo * self._capacity_ah, hi * self._capacity_ah)

        # Lumped thermal node, exact for constant heat over the step:
        # C·dT/dt = P − (T − T_amb)/R_th  →  T → T_amb + P·R_th with time constant R_th·C.
        heat_w = heat_w + self._pending_heat_w
        r_th = self._thermal_resistance_k_per_w
        target = self._ambient_temp_c + heat_w * r_th
        decay_t = np.exp(-dt_s / (r_th * self._heat_capacity_j_per_k))
        self._temp_c = target + (temp - target) * decay_t
        self._pending_heat_w = np.zeros(self.count)
        self._last_current_a = current.copy()

    # --- fault injection and set-up --------------------------------------------------------

    def set_leakage_a(self, index: CellIndex, leak_current_a: float | ArrayLike) -> None:
        """Set an internal leak current (A) on the selected cells; it replaces any earlier one.

        A positive leak drains the cell (a cell drifting low, e.g. a soft internal short); a
        negative leak makes it drift high. It does not pass the terminals, so it does not show
        as an IR drop, only as a slowly changing SOC. Use 0 to remove it.
        """
        self._leak_a[self._select(index)] = np.asarray(leak_current_a, dtype=np.float64)

    def set_ambient_temp_c(self, value: float | ArrayLike, index: CellIndex = None) -> None:
        """Set the ambient temperature (°C) the selected cells (default: all) relax towards."""
        self._ambient_temp_c[self._select(index)] = np.asarray(value, dtype=np.float64)

    def add_heat_w(self, heat_w: ArrayLike) -> None:
        """Add external heat (W per cell, or one value for all) during the next :meth:`step`.

        For example a slave board's balancing resistors warming neighbouring cells: the caller
        passes bleed power × its coupling factor. Contributions from several callers add up; the
        sum is applied once and cleared by the next step.
        """
        heat = np.broadcast_to(np.asarray(heat_w, dtype=np.float64), (self.count,))
        self._pending_heat_w = self._pending_heat_w + heat

    def set_soc(self, index: CellIndex, value: float | ArrayLike) -> None:
        """Set the SOC (fraction of each cell's own capacity) of the selected cells.

        For test set-up; RC voltages and temperature are left as they are.
        """
        selected = self._select(index)
        soc = np.asarray(value, dtype=np.float64)
        self._charge_ah[selected] = soc * self._capacity_ah[selected]

    def set_temp_c(self, index: CellIndex, value: float | ArrayLike) -> None:
        """Set the temperature (°C) of the selected cells, e.g. to start a test warm."""
        self._temp_c[self._select(index)] = np.asarray(value, dtype=np.float64)

    def relax(self) -> None:
        """Clear all RC polarisation, as after a long rest (test set-up)."""
        self._v_rc1_v = np.zeros(self.count)
        self._v_rc2_v = np.zeros(self.count)

    def age(
        self, capacity_factor: float, resistance_factor: float, index: CellIndex = None
    ) -> None:
        """Age the selected cells (default: all): capacity × ``capacity_factor`` (≤ 1 for fade),
        resistances × ``resistance_factor`` (≥ 1 for growth). SOC is kept, so charge scales."""
        if not 0.0 < capacity_factor <= 2.0 or not 0.0 < resistance_factor <= 10.0:
            raise ValueError("capacity_factor must be in (0, 2], resistance_factor in (0, 10]")
        selected = self._select(index)
        self._charge_ah[selected] *= capacity_factor
        self._capacity_ah[selected] *= capacity_factor
        self._resistance_factor[selected] *= resistance_factor

    def _select(self, index: CellIndex) -> Any:
        if index is None:
            return slice(None)
        if isinstance(index, int | slice):
            if isinstance(index, int) and not -self.count <= index < self.count:
                raise IndexError(f"cell index {index} out of range 0..{self.count - 1}")
            return index
        indices = np.asarray(index, dtype=np.intp)
        if indices.size and (indices.min() < -self.count or indices.max() >= self.count):
            raise IndexError(f"cell index out of range 0..{self.count - 1}")
        return indices


def _rc_step(
    v_rc_v: FloatArray, current_a: FloatArray, r_ohm: FloatArray, tau_s: FloatArray, dt_s: float
) -> tuple[FloatArray, FloatArray]:
    """Exact RC-pair update for a constant current, and the mean power in its resistor.

    v(t) = v_ss + (v0 − v_ss)·exp(−t/τ) with v_ss = I·R. The loss is (mean v)²/R over the step:
    exact at rest and in steady state, and right for steps much longer than τ.
    """
    v_ss = current_a * r_ohm
    ratio = dt_s / tau_s
    decay = np.exp(-ratio)
    v_end = v_ss + (v_rc_v - v_ss) * decay
    # τ/dt·(1 − e^(−dt/τ)) is the mean of the decaying term; -expm1 keeps it exact for tiny dt.
    mean_fraction = -np.expm1(-ratio) / ratio
    v_mean = v_ss + (v_rc_v - v_ss) * mean_fraction
    return np.asarray(v_end, dtype=np.float64), np.asarray(v_mean * v_mean / r_ohm, np.float64)
