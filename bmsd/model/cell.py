"""Cell parameters: the cell-file format (``etc/cells/*.toml``) and fast table look-ups.

A cell file describes one cell type for an equivalent-circuit model (ECM): open-circuit voltage
(OCV) as a function of SOC and temperature, ohmic resistance R0 and one or two RC pairs, and a
lumped thermal model. The same format is read by the simulator, the SOC estimator and written by
``bmsd fit-cell``. The dataclasses here are pure data; :func:`load_cell_file` is the only I/O.

:class:`CellModel` turns a parsed file into numpy arrays once, so that the interpolation helpers
run vectorised over every cell of a pack (1,536 cells and more) without Python loops per cell.

Conventions: SOC is a fraction 0..1 of the cell's own capacity; current is positive when it
charges the cell; tables are given per temperature row, each row over the SOC grid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bmsd.schema import doc, load_toml, must_be_within

Chemistry = Literal["LFP", "NMC"]
FloatArray = NDArray[np.float64]
Table = tuple[tuple[float, ...], ...]

# Plausible range of any lithium-ion cell voltage (LFP and NMC); catches tables in mV or
# a wrong chemistry, not a tight limit.
_MIN_PLAUSIBLE_V = 1.0
_MAX_PLAUSIBLE_V = 5.0

# Physical plausibility bounds. Values outside them are typos or unit slips, and some break
# the arithmetic outright (a capacity of 5e-324 Ah divides by zero in the control loop, SOC
# points 5e-324 apart give a NaN SOC, R0 = 1e300 Ω a NaN voltage).
CAPACITY_RANGE_AH = (0.1, 10_000.0)  # a small pouch cell to a large stationary cell
RESISTANCE_MAX_OHM = 1.0  # mΩ for large cells, tens of mΩ for small ones; 1 Ω is a unit slip
TAU_RANGE_S = (0.01, 100_000.0)  # below a tick it belongs in R0; 1e5 s is over a day
MIN_SOC_STEP = 1e-4  # grid points closer than this make the interpolation ill-conditioned
MIN_TEMP_STEP_C = 0.1
# The OCV table may reach a little beyond the datasheet window (fits overshoot slightly),
# not into another chemistry's (an NMC table under an LFP window).
OCV_WINDOW_MARGIN_V = 0.2
COULOMBIC_EFFICIENCY_MIN = 0.5
HEAT_CAPACITY_RANGE_J_PER_K = (1.0, 1e6)  # a 20 g cell to a 500 kg block
THERMAL_RESISTANCE_RANGE_K_PER_W = (0.01, 100.0)


def _strictly_increasing(values: tuple[float, ...]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


def _check_grid(
    key: str, values: tuple[float, ...], lo: float, hi: float, min_step: float
) -> list[tuple[str, str]]:
    """Rules for an axis of a table: not empty, inside [lo, hi], strictly increasing by at
    least ``min_step``."""
    problems: list[tuple[str, str]] = []
    if not values:
        problems.append((key, "must have at least one value"))
        return problems
    for i, value in enumerate(values):
        if not lo <= value <= hi:
            problems.append((f"{key}[{i}]", f"{value} is outside {lo}..{hi}"))
    if not _strictly_increasing(values):
        problems.append((key, "must be strictly increasing"))
    elif any(b - a < min_step for a, b in itertools.pairwise(values)):
        problems.append((key, f"points must be at least {min_step:g} apart"))
    return problems


def _check_table(
    key: str,
    table: Table,
    rows: int,
    columns: int,
    *,
    positive: bool = True,
    value_range: tuple[float, float] | None = None,
) -> list[tuple[str, str]]:
    """Shape rule for a table with one row per temperature and one column per SOC point."""
    problems: list[tuple[str, str]] = []
    if len(table) != rows:
        problems.append((key, f"has {len(table)} rows, expected {rows} (one per temp_c value)"))
    for i, row in enumerate(table):
        if len(row) != columns:
            problems.append(
                (f"{key}[{i}]", f"has {len(row)} values, expected {columns} (one per soc value)")
            )
        if positive:
            for j, value in enumerate(row):
                if value <= 0.0:
                    problems.append((f"{key}[{i}][{j}]", f"must be positive, got {value}"))
        if value_range is not None:
            low, high = value_range
            for j, value in enumerate(row):
                if value > 0.0 and not low <= value <= high:
                    problems.append((f"{key}[{i}][{j}]", f"{value} is outside {low:g}..{high:g}"))
    return problems


@dataclass(frozen=True, slots=True)
class CellInfo:
    """``[cell]``: identity, ratings and voltage window of the cell."""

    name: str = doc("Human-readable cell type, e.g. the manufacturer's part number.")
    chemistry: Chemistry = doc("Cathode chemistry: LFP or NMC.")
    capacity_ah: float = doc("Rated (nameplate) capacity at 25 °C.", unit="Ah")
    nominal_voltage_v: float = doc("Nominal cell voltage.", unit="V")
    min_voltage_v: float = doc("Discharge cut-off voltage from the datasheet.", unit="V")
    max_voltage_v: float = doc("Charge cut-off voltage from the datasheet.", unit="V")
    coulombic_efficiency: float = doc(
        "Fraction of the charge put in that can be taken out again, in (0, 1]; applied on charge."
    )
    self_discharge_pct_per_month: float = doc(
        "Self-discharge at 25 °C, percent of capacity per 30-day month.", unit="%/month"
    )
    source: str = doc("Free text: where the numbers in this file come from.")
    model_error_v: float = doc(
        "RMS voltage error of this model against the trace it was fitted to (written by bmsd "
        "fit-cell); the SOC estimator's model error. 0 = not known.",
        unit="V",
        default=0.0,
    )
    ocv_error_v: float = doc(
        "RMS error of the OCV table at relaxed rests (written by bmsd fit-cell: leave-one-out "
        "over the trace's rests); how far a relaxed rest voltage is trusted. 0 = not known.",
        unit="V",
        default=0.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for key in ("model_error_v", "ocv_error_v"):
            problems += must_be_within(self, key, 0.0, 0.5, "V", note=" (is it in mV?)")
        low_ah, high_ah = CAPACITY_RANGE_AH
        problems += must_be_within(self, "capacity_ah", low_ah, high_ah, "Ah")
        for key in ("min_voltage_v", "nominal_voltage_v", "max_voltage_v"):
            value = getattr(self, key)
            if not _MIN_PLAUSIBLE_V <= value <= _MAX_PLAUSIBLE_V:
                problems.append(
                    (key, f"{value} V is outside {_MIN_PLAUSIBLE_V}..{_MAX_PLAUSIBLE_V} V")
                )
        if self.min_voltage_v >= self.max_voltage_v:
            problems.append(("min_voltage_v", "must be below max_voltage_v"))
        elif not self.min_voltage_v <= self.nominal_voltage_v <= self.max_voltage_v:
            problems.append(
                ("nominal_voltage_v", "must lie between min_voltage_v and max_voltage_v")
            )
        if not COULOMBIC_EFFICIENCY_MIN <= self.coulombic_efficiency <= 1.0:
            problems.append(
                ("coulombic_efficiency", f"must be in [{COULOMBIC_EFFICIENCY_MIN:g}, 1]")
            )
        if not 0.0 <= self.self_discharge_pct_per_month < 100.0:
            problems.append(("self_discharge_pct_per_month", "must be in [0, 100)"))
        if not self.name.strip():
            problems.append(("name", "must not be empty"))
        return problems


@dataclass(frozen=True, slots=True)
class OcvTable:
    """``[ocv]``: rested open-circuit voltage over SOC, one row per temperature."""

    soc: tuple[float, ...] = doc("SOC grid, fractions 0..1, strictly increasing.")
    temp_c: tuple[float, ...] = doc("Temperature grid, strictly increasing.", unit="°C")
    voltage_v: Table = doc(
        "OCV rows, one per temp_c value, each as long as soc and strictly increasing.", unit="V"
    )

    def check(self) -> list[tuple[str, str]]:
        problems = _check_grid("soc", self.soc, 0.0, 1.0, MIN_SOC_STEP)
        if len(self.soc) < 2:
            problems.append(("soc", "needs at least two points"))
        problems += _check_grid("temp_c", self.temp_c, -60.0, 120.0, MIN_TEMP_STEP_C)
        problems += _check_table("voltage_v", self.voltage_v, len(self.temp_c), len(self.soc))
        for i, row in enumerate(self.voltage_v):
            if len(row) != len(self.soc):
                continue
            if not _strictly_increasing(row):
                problems.append(
                    (f"voltage_v[{i}]", "must be strictly increasing in SOC (needed to invert it)")
                )
            for j, value in enumerate(row):
                if not _MIN_PLAUSIBLE_V <= value <= _MAX_PLAUSIBLE_V:
                    problems.append(
                        (
                            f"voltage_v[{i}][{j}]",
                            f"{value} V is outside {_MIN_PLAUSIBLE_V}..{_MAX_PLAUSIBLE_V} V",
                        )
                    )
        return problems


@dataclass(frozen=True, slots=True)
class ResistanceTable:
    """``[resistance]``: R0 and RC pairs of the ECM over (temperature, SOC).

    Every table has one row per ``temp_c`` value and one column per ``soc`` value. A model fitted
    at one temperature simply uses a one-row grid. The second RC pair is optional.
    """

    soc: tuple[float, ...] = doc("SOC grid, fractions 0..1, strictly increasing.")
    temp_c: tuple[float, ...] = doc("Temperature grid, strictly increasing.", unit="°C")
    r0_ohm: Table = doc("Ohmic (instantaneous) resistance R0.", unit="Ω")
    r1_ohm: Table = doc("Resistance of the first RC pair.", unit="Ω")
    tau1_s: Table = doc("Time constant R1·C1 of the first RC pair.", unit="s")
    r2_ohm: Table | None = doc(
        "Resistance of the optional second RC pair (omit for a 1RC model).", unit="Ω", default=None
    )
    tau2_s: Table | None = doc(
        "Time constant of the optional second RC pair (omit for a 1RC model).",
        unit="s",
        default=None,
    )

    def check(self) -> list[tuple[str, str]]:
        problems = _check_grid("soc", self.soc, 0.0, 1.0, MIN_SOC_STEP)
        problems += _check_grid("temp_c", self.temp_c, -60.0, 120.0, MIN_TEMP_STEP_C)
        rows, columns = len(self.temp_c), len(self.soc)
        ohms = (0.0, RESISTANCE_MAX_OHM)
        for key in ("r0_ohm", "r1_ohm"):
            problems += _check_table(key, getattr(self, key), rows, columns, value_range=ohms)
        problems += _check_table("tau1_s", self.tau1_s, rows, columns, value_range=TAU_RANGE_S)
        if (self.r2_ohm is None) != (self.tau2_s is None):
            missing = "tau2_s" if self.tau2_s is None else "r2_ohm"
            problems.append((missing, "r2_ohm and tau2_s must be given together"))
        if self.r2_ohm is not None:
            problems += _check_table("r2_ohm", self.r2_ohm, rows, columns, value_range=ohms)
        if self.tau2_s is not None:
            problems += _check_table("tau2_s", self.tau2_s, rows, columns, value_range=TAU_RANGE_S)
        return problems


@dataclass(frozen=True, slots=True)
class ThermalParams:
    """``[thermal]``: lumped single-node thermal model of one cell."""

    heat_capacity_j_per_k: float = doc("Heat capacity of the whole cell (mass × c_p).", unit="J/K")
    thermal_resistance_k_per_w: float = doc(
        "Thermal resistance from the cell to ambient as mounted in the module.", unit="K/W"
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for key, (low, high), unit in (
            ("heat_capacity_j_per_k", HEAT_CAPACITY_RANGE_J_PER_K, "J/K"),
            ("thermal_resistance_k_per_w", THERMAL_RESISTANCE_RANGE_K_PER_W, "K/W"),
        ):
            problems += must_be_within(self, key, low, high, unit)
        return problems


@dataclass(frozen=True, slots=True)
class CellFile:
    """A whole cell file: ``[cell]``, ``[ocv]``, ``[resistance]`` and ``[thermal]``."""

    cell: CellInfo = doc("Identity, ratings and voltage window.")
    ocv: OcvTable = doc("Open-circuit voltage table.")
    resistance: ResistanceTable = doc("Equivalent-circuit resistances and time constants.")
    thermal: ThermalParams = doc("Lumped thermal model.")

    def check(self) -> list[tuple[str, str]]:
        """The OCV table must lie within the cell's own voltage window (plus a margin)."""
        low = self.cell.min_voltage_v - OCV_WINDOW_MARGIN_V
        high = self.cell.max_voltage_v + OCV_WINDOW_MARGIN_V
        problems: list[tuple[str, str]] = []
        if self.cell.min_voltage_v >= self.cell.max_voltage_v:
            return problems  # no window to compare with; reported under [cell]
        for i, row in enumerate(self.ocv.voltage_v):
            for j, value in enumerate(row):
                if not low <= value <= high:
                    problems.append(
                        (
                            f"ocv.voltage_v[{i}][{j}]",
                            f"{value} V is outside the cell's window min_voltage_v..max_voltage_v "
                            f"± {OCV_WINDOW_MARGIN_V:g} V ({low:g}..{high:g} V)",
                        )
                    )
        return problems


def load_cell_file(path: Path) -> CellFile:
    """Read and validate a cell file; raises ``ConfigError`` listing every problem."""
    return load_toml(CellFile, path)


class _Grid2D:
    """A table over (temperature, SOC): linear in SOC per row, then linear across temperature.

    Queries outside the grid are clamped to its edges. Evaluation is vectorised: one
    ``np.interp`` per temperature row (a handful), then one blend, for any number of points.
    """

    __slots__ = ("_soc", "_temp_c", "_values")

    def __init__(self, soc: tuple[float, ...], temp_c: tuple[float, ...], values: Table) -> None:
        self._soc: FloatArray = np.asarray(soc, dtype=np.float64)
        self._temp_c: FloatArray = np.asarray(temp_c, dtype=np.float64)
        self._values: FloatArray = np.asarray(values, dtype=np.float64)

    def temp_weights(self, temp_c: FloatArray) -> tuple[NDArray[np.intp], FloatArray]:
        """Lower row index and blend weight (0 → that row, 1 → the next) per point."""
        temps = self._temp_c
        if temps.size == 1:
            return np.zeros(temp_c.shape, dtype=np.intp), np.zeros(temp_c.shape)
        clamped = np.clip(temp_c, temps[0], temps[-1])
        upper = np.clip(np.searchsorted(temps, clamped, side="right"), 1, temps.size - 1)
        lower = (upper - 1).astype(np.intp)
        weight = (clamped - temps[lower]) / (temps[upper] - temps[lower])
        return lower, weight

    def blended_rows(self, temp_c: FloatArray) -> FloatArray:
        """The table row at each temperature, shape ``temp_c.shape + (len(soc),)``."""
        lower, weight = self.temp_weights(temp_c)
        values = self._values
        if values.shape[0] == 1:
            return np.broadcast_to(values[0], (*temp_c.shape, values.shape[1])).copy()
        w = weight[..., np.newaxis]
        return values[lower] * (1.0 - w) + values[lower + 1] * w

    def __call__(self, soc: FloatArray, temp_c: FloatArray) -> FloatArray:
        soc_b, temp_b = np.broadcast_arrays(soc, temp_c)
        per_row = [np.interp(soc_b, self._soc, row) for row in self._values]
        if len(per_row) == 1:
            return np.asarray(per_row[0], dtype=np.float64)
        stacked = np.stack(per_row)
        lower, weight = self.temp_weights(temp_b)
        low = np.take_along_axis(stacked, lower[np.newaxis], axis=0)[0]
        high = np.take_along_axis(stacked, (lower + 1)[np.newaxis], axis=0)[0]
        return np.asarray(low * (1.0 - weight) + high * weight, dtype=np.float64)


def _as_float_array(values: ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


class CellModel:
    """Numpy form of a :class:`CellFile`, with vectorised, clamped look-ups.

    Every helper takes array-likes of SOC (0..1) and temperature (°C) that broadcast together
    and returns a float64 array of the broadcast shape. SOC and temperature outside the table
    grids are clamped to the nearest edge (no extrapolation here; the simulator extends the OCV
    beyond the table itself).
    """

    __slots__ = ("_ocv", "_r0", "_r1", "_r2", "_slope", "_tau1", "_tau2", "file")

    def __init__(self, file: CellFile) -> None:
        self.file = file
        ocv, res = file.ocv, file.resistance
        self._ocv = _Grid2D(ocv.soc, ocv.temp_c, ocv.voltage_v)
        # Slope at each table node by central differences (one-sided at the ends), then linear
        # between nodes: a continuous dOCV/dSOC, so a Kalman gain does not jump at table nodes.
        soc_grid = np.asarray(ocv.soc, dtype=np.float64)
        slopes = np.gradient(np.asarray(ocv.voltage_v, dtype=np.float64), soc_grid, axis=1)
        slope_rows: Table = tuple(tuple(row) for row in np.asarray(slopes).tolist())
        self._slope = _Grid2D(ocv.soc, ocv.temp_c, slope_rows)
        self._r0 = _Grid2D(res.soc, res.temp_c, res.r0_ohm)
        self._r1 = _Grid2D(res.soc, res.temp_c, res.r1_ohm)
        self._tau1 = _Grid2D(res.soc, res.temp_c, res.tau1_s)
        self._r2 = None if res.r2_ohm is None else _Grid2D(res.soc, res.temp_c, res.r2_ohm)
        self._tau2 = None if res.tau2_s is None else _Grid2D(res.soc, res.temp_c, res.tau2_s)

    @classmethod
    def load(cls, path: Path) -> CellModel:
        """Load a cell file and build its model."""
        return cls(load_cell_file(path))

    @property
    def info(self) -> CellInfo:
        return self.file.cell

    @property
    def has_second_rc(self) -> bool:
        """True when the file defines the optional second RC pair."""
        return self._r2 is not None

    @property
    def ocv_soc_range(self) -> tuple[float, float]:
        """First and last SOC of the OCV table."""
        soc = self.file.ocv.soc
        return soc[0], soc[-1]

    def ocv_v(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray:
        """Open-circuit voltage in V at ``soc`` and ``temp_c`` (clamped to the table)."""
        return self._ocv(_as_float_array(soc), _as_float_array(temp_c))

    def docv_dsoc(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray:
        """Slope of the OCV in V per unit SOC (V per 100 %SOC) at ``soc`` and ``temp_c``.

        Central differences at the table nodes, interpolated linearly in between; outside the
        table the slope at the nearest end is returned (useful to a filter near full/empty).
        """
        return self._slope(_as_float_array(soc), _as_float_array(temp_c))

    def soc_from_ocv(self, voltage_v: ArrayLike, temp_c: ArrayLike) -> FloatArray:
        """SOC (0..1) whose OCV at ``temp_c`` equals ``voltage_v``: the inverse of :meth:`ocv_v`.

        Exact inverse of the piecewise-linear OCV at that temperature (the blended row is
        inverted, not the blend of inverses). Voltages beyond the table give its first or last
        SOC.
        """
        voltage, temp = np.broadcast_arrays(_as_float_array(voltage_v), _as_float_array(temp_c))
        soc_grid = self._ocv._soc
        rows = self._ocv.blended_rows(temp)  # shape (*voltage.shape, n_soc), increasing
        # Segment index k with rows[k] <= v < rows[k+1]; counting is cheap for ~21 nodes.
        count = np.sum(rows <= voltage[..., np.newaxis], axis=-1)
        k = np.clip(count - 1, 0, soc_grid.size - 2)
        v_lo = np.take_along_axis(rows, k[..., np.newaxis], axis=-1)[..., 0]
        v_hi = np.take_along_axis(rows, (k + 1)[..., np.newaxis], axis=-1)[..., 0]
        fraction = np.clip((voltage - v_lo) / (v_hi - v_lo), 0.0, 1.0)
        return np.asarray(soc_grid[k] + fraction * (soc_grid[k + 1] - soc_grid[k]), np.float64)

    def r0_ohm(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray:
        """Ohmic resistance R0 in Ω at ``soc`` and ``temp_c`` (clamped to the table)."""
        return self._r0(_as_float_array(soc), _as_float_array(temp_c))

    def r1_ohm(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray:
        """First RC-pair resistance R1 in Ω at ``soc`` and ``temp_c``."""
        return self._r1(_as_float_array(soc), _as_float_array(temp_c))

    def tau1_s(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray:
        """First RC-pair time constant in s at ``soc`` and ``temp_c``."""
        return self._tau1(_as_float_array(soc), _as_float_array(temp_c))

    def r2_ohm(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray | None:
        """Second RC-pair resistance in Ω, or None for a 1RC cell."""
        if self._r2 is None:
            return None
        return self._r2(_as_float_array(soc), _as_float_array(temp_c))

    def tau2_s(self, soc: ArrayLike, temp_c: ArrayLike) -> FloatArray | None:
        """Second RC-pair time constant in s, or None for a 1RC cell."""
        if self._tau2 is None:
            return None
        return self._tau2(_as_float_array(soc), _as_float_array(temp_c))

    def self_discharge_a(self, capacity_ah: ArrayLike) -> FloatArray:
        """Self-discharge as a constant current in A for cells of ``capacity_ah``."""
        month_h = 30.0 * 24.0
        rate = self.info.self_discharge_pct_per_month / 100.0
        return _as_float_array(capacity_ah) * rate / month_h


def thermal_time_constant_s(thermal: ThermalParams) -> float:
    """Time constant of the lumped thermal model, C·R, in s."""
    return thermal.heat_capacity_j_per_k * thermal.thermal_resistance_k_per_w


__all__ = [
    "CellFile",
    "CellInfo",
    "CellModel",
    "Chemistry",
    "OcvTable",
    "ResistanceTable",
    "ThermalParams",
    "load_cell_file",
    "thermal_time_constant_s",
]
