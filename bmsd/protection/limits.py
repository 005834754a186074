"""Charge and discharge limits (CVL, CCL, DCL, DVL), each the minimum of explained contributors.

Per tick, :class:`LimitCalculator` turns :class:`LimitInputs` (extremes of the validated
snapshot, fault factors, data health, contactor state, time) into :class:`~bmsd.model.limits.
Limits`:

- **CCL / DCL** = min(configured maximum, contactor state, data health, fault factor × max,
  cell-voltage curve, temperature curve, SOC curve (when an SOC is given); CCL also needs a
  known pack voltage, without which CVL cannot be regulated).
  Curves are (x, fraction of the maximum) points, linear in between and flat beyond the ends.
  *Decreases are immediate; increases are ramped* (A/s, using the time since the previous
  step): the ramp shows as its own contributor ``ramp`` while it holds a limit back.
- **CVL** = min(series cells × cell charge voltage, :class:`DynamicCvl`). Never 0: charging is
  stopped with CCL = 0, never with CVL = 0 (an inverter reads that as an over-voltage).
- **DVL** = series cells × cell discharge voltage.

Design, equations and default numbers with their sources: ``docs/limits.md``. Everything here
is pure apart from the explicit state of the two stateful classes; time is passed in (monotonic
seconds), nothing reads a clock or does I/O.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from bmsd.model.limits import Contributor, Limits
from bmsd.model.snapshot import PackSnapshot
from bmsd.schema import doc, must_be_positive, must_be_within, must_not_be_negative

Curve = tuple[tuple[float, float], ...]
"""(x, fraction of the configured maximum) points, x strictly increasing."""

# dbus-serialbattery LFP defaults (estimation.md §4.1): charge current vs highest cell voltage,
# discharge current vs lowest cell voltage, and both vs temperature.
LFP_CCL_CURVE_CELL_VOLTAGE_V: Curve = ((3.30, 1.0), (3.45, 0.5), (3.50, 0.05), (3.55, 0.0))
LFP_DCL_CURVE_CELL_VOLTAGE_V: Curve = ((2.70, 0.0), (2.80, 0.1), (2.90, 0.5), (3.10, 1.0))
LFP_CCL_CURVE_TEMP_C: Curve = (
    (0.0, 0.0),
    (2.0, 0.1),
    (5.0, 0.2),
    (10.0, 0.4),
    (15.0, 0.8),
    (20.0, 1.0),
    (35.0, 1.0),
    (40.0, 0.4),
    (55.0, 0.0),
)
LFP_DCL_CURVE_TEMP_C: Curve = (
    (-20.0, 0.0),
    (0.0, 0.2),
    (5.0, 0.3),
    (10.0, 0.4),
    (15.0, 1.0),
    (45.0, 1.0),
    (55.0, 0.0),
)
# SOC derating is off by default: an LFP SOC estimate is least certain exactly where it would
# matter (flat OCV, estimation.md §1); the voltage curves taper near full and empty instead.
NO_DERATING_SOC: Curve = ((0.0, 1.0), (1.0, 1.0))


def curve_fraction(curve: Curve, x: float) -> float:
    """Linear interpolation in ``curve`` at ``x``; the end values hold beyond the ends."""
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def _check_curve(
    key: str, curve: Curve, *, x_range: tuple[float, float], zero_ends: tuple[bool, bool]
) -> list[tuple[str, str]]:
    """A curve: at least one point, x strictly increasing inside x_range, fractions in 0..1,
    and (where safety needs it) a fraction of 0 at the first and/or last point."""
    problems: list[tuple[str, str]] = []
    if not curve:
        return [(key, "needs at least one point")]
    low, high = x_range
    for index, (x, fraction) in enumerate(curve):
        if not low <= x <= high:
            problems.append((f"{key}[{index}]", f"x = {x} is outside {low}..{high}"))
        if not 0.0 <= fraction <= 1.0:
            problems.append((f"{key}[{index}]", f"fraction {fraction} is outside 0..1"))
    if any(b[0] <= a[0] for a, b in itertools.pairwise(curve)):
        problems.append((key, "x values must be strictly increasing"))
    first, last = zero_ends
    if first and curve[0][1] != 0.0:
        problems.append((key, "must start at a fraction of 0 (no current beyond the first point)"))
    if last and curve[-1][1] != 0.0:
        problems.append((key, "must end at a fraction of 0 (no current beyond the last point)"))
    return problems


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Charge and discharge limits: maxima, derating curves, ramps and the dynamic CVL.

    Voltages are per cell and multiplied by the series cells per string, so one file serves
    every pack of a chemistry. Defaults are for LFP (sources in docs/limits.md).
    """

    defaults: tuple[str, ...] = doc(
        "Limit files merged in order under this table (etc/limits/*.toml); keys given here win",
        default=(),
    )
    max_charge_current_a: float = doc(
        "Highest charge current ever allowed (pack, all strings); within the current sensor's "
        "range (acquisition.current_range_a)",
        unit="A",
        default=140.0,
    )
    max_discharge_current_a: float = doc(
        "Highest discharge current ever allowed (pack, all strings); within the current "
        "sensor's range (acquisition.current_range_a)",
        unit="A",
        default=140.0,
    )
    cell_charge_voltage_v: float = doc(
        "Charge voltage per cell: CVL = series cells × this; the dynamic CVL keeps the highest "
        "cell at or below it",
        unit="V",
        default=3.45,
    )
    cell_discharge_voltage_v: float = doc(
        "Discharge voltage per cell: DVL = series cells × this", unit="V", default=2.90
    )
    ccl_curve_cell_voltage_v: Curve = doc(
        "Charge current vs highest cell voltage: (V, fraction of the maximum) points; must end "
        "at 0 above the charge voltage",
        unit="V, 0..1",
        default=LFP_CCL_CURVE_CELL_VOLTAGE_V,
    )
    dcl_curve_cell_voltage_v: Curve = doc(
        "Discharge current vs lowest cell voltage: (V, fraction) points; must start at 0 below "
        "the discharge voltage",
        unit="V, 0..1",
        default=LFP_DCL_CURVE_CELL_VOLTAGE_V,
    )
    ccl_curve_temp_c: Curve = doc(
        "Charge current vs cell temperature, applied to both the lowest and the highest "
        "temperature (the lower fraction wins); 0 at both ends",
        unit="°C, 0..1",
        default=LFP_CCL_CURVE_TEMP_C,
    )
    dcl_curve_temp_c: Curve = doc(
        "Discharge current vs cell temperature, as for charge; 0 at both ends",
        unit="°C, 0..1",
        default=LFP_DCL_CURVE_TEMP_C,
    )
    ccl_curve_soc: Curve = doc(
        "Charge current vs SOC (fraction 0..1), applied when an SOC estimate is given",
        unit="0..1, 0..1",
        default=NO_DERATING_SOC,
    )
    dcl_curve_soc: Curve = doc(
        "Discharge current vs SOC (fraction 0..1), applied when an SOC estimate is given",
        unit="0..1, 0..1",
        default=NO_DERATING_SOC,
    )
    ccl_ramp_a_per_s: float = doc(
        "Fastest rise of the charge current limit (falls are immediate)", unit="A/s", default=10.0
    )
    dcl_ramp_a_per_s: float = doc(
        "Fastest rise of the discharge current limit (falls are immediate)",
        unit="A/s",
        default=10.0,
    )
    warning_derate_factor: float = doc(
        "Share of the maximum currents allowed while a warning-level fault is active (fatal: 0)",
        default=0.5,
    )
    dynamic_cvl: bool = doc(
        "Lower CVL as the highest cell nears the charge voltage (false: CVL is constant)",
        default=True,
    )
    cvl_floor_cell_v: float = doc(
        "Lowest CVL per cell the dynamic CVL may send", unit="V", default=3.20
    )
    cvl_release_s: float = doc(
        "Time constant with which the dynamic CVL follows a rise of the voltage that would put "
        "the highest cell at its charge voltage (falls are followed at once); 0: no filter",
        unit="s",
        default=300.0,
    )
    cvl_trim_s: float = doc(
        "Integral time of the trim that removes a steady overshoot of the highest cell, e.g. "
        "from a charger that reads the pack voltage low; 0: no trim",
        unit="s",
        default=60.0,
    )
    cvl_trim_max_cell_v: float = doc(
        "Largest trim per series cell (the charger voltage error it can absorb)",
        unit="V",
        default=0.02,
    )
    cvl_trim_deadband_cell_v: float = doc(
        "Overshoot of the highest cell the trim leaves alone (and its residual with a charger "
        "offset)",
        unit="V",
        default=0.002,
    )
    cvl_ramp_cell_v_per_s: float = doc(
        "Fastest rise of CVL, per series cell and second (falls are immediate)",
        unit="V/s",
        default=0.0002,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        problems += must_be_positive(
            self,
            "max_charge_current_a",
            "max_discharge_current_a",
            "ccl_ramp_a_per_s",
            "dcl_ramp_a_per_s",
            "cvl_ramp_cell_v_per_s",
        )
        for key in ("cell_charge_voltage_v", "cell_discharge_voltage_v", "cvl_floor_cell_v"):
            problems += must_be_within(self, key, 1.0, 5.0, "V", note=" (a cell voltage)")
        if not self.cell_discharge_voltage_v < self.cvl_floor_cell_v < self.cell_charge_voltage_v:
            problems.append(
                (
                    "cvl_floor_cell_v",
                    "must lie between cell_discharge_voltage_v and cell_charge_voltage_v "
                    f"({self.cell_discharge_voltage_v} < {self.cvl_floor_cell_v} < "
                    f"{self.cell_charge_voltage_v} does not hold)",
                )
            )
        problems += must_be_within(self, "warning_derate_factor", 0.0, 1.0)
        problems += must_not_be_negative(
            self,
            "cvl_release_s",
            "cvl_trim_s",
            "cvl_trim_max_cell_v",
            "cvl_trim_deadband_cell_v",
        )
        volts, temps, soc = (0.0, 6.0), (-60.0, 120.0), (0.0, 1.0)
        problems += _check_curve(
            "ccl_curve_cell_voltage_v",
            self.ccl_curve_cell_voltage_v,
            x_range=volts,
            zero_ends=(False, True),
        )
        problems += _check_curve(
            "dcl_curve_cell_voltage_v",
            self.dcl_curve_cell_voltage_v,
            x_range=volts,
            zero_ends=(True, False),
        )
        problems += _check_curve(
            "ccl_curve_temp_c", self.ccl_curve_temp_c, x_range=temps, zero_ends=(True, True)
        )
        problems += _check_curve(
            "dcl_curve_temp_c", self.dcl_curve_temp_c, x_range=temps, zero_ends=(True, True)
        )
        problems += _check_curve(
            "ccl_curve_soc", self.ccl_curve_soc, x_range=soc, zero_ends=(False, False)
        )
        problems += _check_curve(
            "dcl_curve_soc", self.dcl_curve_soc, x_range=soc, zero_ends=(False, False)
        )
        # The CVL target must sit below the cell voltage where charging is cut to 0, and DVL
        # above the one where discharging is cut, or the two mechanisms fight each other.
        if self.ccl_curve_cell_voltage_v and not (
            self.cell_charge_voltage_v < self.ccl_curve_cell_voltage_v[-1][0]
        ):
            problems.append(
                ("cell_charge_voltage_v", "must lie below the last ccl_curve_cell_voltage_v point")
            )
        if self.dcl_curve_cell_voltage_v and not (
            self.cell_discharge_voltage_v > self.dcl_curve_cell_voltage_v[0][0]
        ):
            problems.append(
                (
                    "cell_discharge_voltage_v",
                    "must lie above the first dcl_curve_cell_voltage_v point",
                )
            )
        return problems

    def fault_factor(self, *, warning: bool, fatal: bool) -> float:
        """The current factor for the fault engine's state: fatal 0, warning derate, else 1."""
        if fatal:
            return 0.0
        if warning:
            return self.warning_derate_factor
        return 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitInputs:
    """What the limits depend on at one tick. ``None`` (or NaN) means unknown and gives 0.

    The ``*_at`` strings only name where an extreme sits (e.g. ``s0/m2/c5``) for the reasons.
    """

    now_s: float
    series_cells: int
    cell_voltage_max_v: float | None
    cell_voltage_min_v: float | None
    cell_temp_min_c: float | None
    cell_temp_max_c: float | None
    pack_voltage_v: float | None
    soc: float | None = None
    charge_fault_factor: float
    discharge_fault_factor: float
    fault_reason: str = ""
    data_ok: bool
    contactors_closed: bool
    cell_voltage_max_at: str = ""
    cell_voltage_min_at: str = ""
    cell_temp_min_at: str = ""
    cell_temp_max_at: str = ""
    # Balancing holds the charge current near the top of charge so bleeding can finish.
    balancing_charge_a: float | None = None
    balancing_reason: str = ""

    def __post_init__(self) -> None:
        if self.series_cells < 1:
            raise ValueError(f"series_cells must be at least 1, got {self.series_cells}")


def inputs_from_snapshot(
    snapshot: PackSnapshot,
    *,
    series_cells: int,
    contactors_closed: bool,
    charge_fault_factor: float,
    discharge_fault_factor: float,
    fault_reason: str = "",
    soc: float | None = None,
    data_ok: bool = True,
) -> LimitInputs:
    """LimitInputs from a validated snapshot.

    Data are healthy only if ``data_ok`` and every cell voltage and temperature is valid: an
    unseen cell could be the one out of range, so extremes over part of the pack never pass.
    """
    cells, temps = snapshot.cell_voltage, snapshot.temperature
    healthy = (
        data_ok
        and cells is not None
        and temps is not None
        and snapshot.all_cells_valid
        and snapshot.all_temps_valid
    )
    return LimitInputs(
        now_s=snapshot.time_s,
        series_cells=series_cells,
        cell_voltage_max_v=None if cells is None else cells.max_value,
        cell_voltage_min_v=None if cells is None else cells.min_value,
        cell_temp_min_c=None if temps is None else temps.min_value,
        cell_temp_max_c=None if temps is None else temps.max_value,
        pack_voltage_v=snapshot.pack_voltage_v,
        soc=soc,
        charge_fault_factor=charge_fault_factor,
        discharge_fault_factor=discharge_fault_factor,
        fault_reason=fault_reason,
        data_ok=healthy,
        contactors_closed=contactors_closed,
        cell_voltage_max_at="" if cells is None else str(cells.max_location),
        cell_voltage_min_at="" if cells is None else str(cells.min_location),
        cell_temp_min_at="" if temps is None else str(temps.min_location),
        cell_temp_max_at="" if temps is None else str(temps.max_location),
    )


def _known(value: float | None) -> float | None:
    """None for unknown and for NaN/inf, which can only come from a broken reading."""
    if value is None or not math.isfinite(value):
        return None
    return value


def _at(location: str) -> str:
    return f" at {location}" if location else ""


class DynamicCvl:
    """Charge voltage limit that keeps the highest cell at its charge voltage, without oscillation.

    Per step, with n series cells, cell charge voltage V_t, highest cell v_max, measured pack
    voltage V_p and dt the time since the previous step::

        X     = min(V_p + n·(V_t − v_max), n·V_t)     pack voltage at which the highest cell
                                                      would reach V_t if all cells moved alike
        X_f   = X                       if X ≤ X_f    falls are taken at once,
              = X_f + a·(X − X_f)       otherwise     rises slowly, a = 1 − e^(−dt/τ_release)
        trim  = clamp(trim + n·h_excess·dt/T_trim, −n·trim_max, 0)
        CVL   = clamp(min(X_f + trim, CVL_prev + n·r·dt), n·V_floor, n·V_t)

    X hardly moves when the current steps (the pack's IR drop and the highest cell's move
    together), so loads do not shake CVL. With the charger holding CVL, one step puts the
    highest cell on its target (exactly if its resistance is the pack's mean); a larger error
    leaves it a little below, from where it only rises slowly. Falls are immediate, rises are
    filtered and ramped, and X is a function of the measured state (not an integrator), so a
    slow charger cannot wind it up and nothing alternates. The trim is a slow, negative-only
    integral of the overshoot beyond a deadband: it removes the steady overshoot a charger
    that reads the pack voltage low would otherwise leave. Design notes: docs/limits.md.

    Missing or untrusted data hold CVL at its last value (never raise it); before any data it
    is n × V_t, the value a fixed-CVL battery sends, and CCL = 0 stops the charge.
    """

    __slots__ = ("_config", "_cvl_v", "_last_s", "_target_v", "_trim_v")

    def __init__(self, config: LimitsConfig) -> None:
        self._config = config
        self._cvl_v: float | None = None
        self._target_v: float | None = None  # X_f
        self._trim_v = 0.0
        self._last_s: float | None = None

    @property
    def value_v(self) -> float | None:
        """The last CVL returned, or None before the first step."""
        return self._cvl_v

    @property
    def trim_v(self) -> float:
        """The present trim (≤ 0), pack volts."""
        return self._trim_v

    def step(
        self,
        now_s: float,
        series_cells: int,
        cell_voltage_max_v: float | None,
        pack_voltage_v: float | None,
        *,
        trusted: bool = True,
        cell_voltage_max_at: str = "",
    ) -> Contributor:
        """Advance to ``now_s`` and return the dynamic CVL as the contributor ``dynamic_cvl``."""
        config = self._config
        dt_s = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s if self._last_s is None else max(self._last_s, now_s)
        n = series_cells
        cell_target_v = config.cell_charge_voltage_v
        ceiling_v = n * cell_target_v
        floor_v = n * config.cvl_floor_cell_v
        previous_v = ceiling_v if self._cvl_v is None else min(self._cvl_v, ceiling_v)

        if not config.dynamic_cvl:
            self._cvl_v = ceiling_v
            return Contributor("dynamic_cvl", ceiling_v, "dynamic CVL disabled in the config")

        v_max, v_pack = _known(cell_voltage_max_v), _known(pack_voltage_v)
        if not trusted or v_max is None or v_pack is None:
            self._cvl_v = previous_v
            missing = (
                "cell data missing or stale"
                if not trusted or v_max is None
                else "pack voltage unknown"
            )
            return Contributor(
                "dynamic_cvl",
                previous_v,
                f"{missing}: CVL held at {previous_v:.2f} V, charging stopped by CCL = 0",
            )

        headroom_v = cell_target_v - v_max
        reach_v = min(ceiling_v, v_pack + n * headroom_v)
        previous_target = self._target_v
        if previous_target is None or reach_v <= previous_target:
            target_v = reach_v
        else:
            target_v = previous_target + _share(dt_s, config.cvl_release_s) * (
                reach_v - previous_target
            )
        self._target_v = target_v

        if config.cvl_trim_s > 0.0:
            # Wind down only on an overshoot beyond the deadband (an ordinary top-up's few mV
            # leave the trim alone; a charger offset does not), unwind on any headroom.
            band_v = config.cvl_trim_deadband_cell_v
            excess_v = headroom_v + band_v if headroom_v < -band_v else max(0.0, headroom_v)
            trim_v = self._trim_v + n * excess_v * min(1.0, dt_s / config.cvl_trim_s)
            self._trim_v = max(-n * config.cvl_trim_max_cell_v, min(0.0, trim_v))

        wanted_v = target_v + self._trim_v
        rise_limit_v = previous_v + n * config.cvl_ramp_cell_v_per_s * dt_s
        value_v = max(floor_v, min(wanted_v, rise_limit_v, ceiling_v))
        self._cvl_v = value_v

        top = f"highest cell {v_max:.3f} V{_at(cell_voltage_max_at)}"
        if value_v == floor_v and wanted_v < floor_v:
            reason = (
                f"{top}, pack {v_pack:.2f} V: CVL at its floor {n} × "
                f"{config.cvl_floor_cell_v:.3f} V"
            )
        elif value_v == ceiling_v:
            reason = f"{top}: no need to lower CVL"
        elif value_v == rise_limit_v and rise_limit_v < wanted_v:
            reason = (
                f"{top}: rising at {n * config.cvl_ramp_cell_v_per_s * 60.0:.2f} V/min "
                f"towards {wanted_v:.2f} V"
            )
        else:
            trim = f", trim {self._trim_v:+.2f} V" if self._trim_v <= -0.005 else ""
            side = "below" if headroom_v >= 0.0 else "above"
            reason = (
                f"{top} is {abs(headroom_v) * 1000.0:.1f} mV {side} {cell_target_v:.3f} V: pack "
                f"{v_pack:.2f} V + {n} × headroom = {reach_v:.2f} V, followed "
                f"{'at once' if target_v == reach_v else 'slowly'}{trim}"
            )
        return Contributor("dynamic_cvl", value_v, reason)


def _share(dt_s: float, time_constant_s: float) -> float:
    """Share of the way a first-order low-pass moves towards its input in ``dt_s``."""
    if time_constant_s <= 0.0:
        return 1.0
    return 1.0 - math.exp(-dt_s / time_constant_s)


@dataclass(frozen=True, slots=True)
class _Side:
    """The per-direction settings of a current limit (charge or discharge)."""

    word: str
    max_a: float
    ramp_a_per_s: float
    voltage_curve: Curve
    temp_curve: Curve
    soc_curve: Curve


class LimitCalculator:
    """Computes :class:`~bmsd.model.limits.Limits` once per tick; holds only the ramp state."""

    __slots__ = ("_ccl_a", "_charge", "_cvl", "_dcl_a", "_discharge", "_last_s", "config")

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config
        self._cvl = DynamicCvl(config)
        self._charge = _Side(
            "charge",
            config.max_charge_current_a,
            config.ccl_ramp_a_per_s,
            config.ccl_curve_cell_voltage_v,
            config.ccl_curve_temp_c,
            config.ccl_curve_soc,
        )
        self._discharge = _Side(
            "discharge",
            config.max_discharge_current_a,
            config.dcl_ramp_a_per_s,
            config.dcl_curve_cell_voltage_v,
            config.dcl_curve_temp_c,
            config.dcl_curve_soc,
        )
        # Currents start at 0 and ramp up: nothing is allowed before the first step.
        self._ccl_a = 0.0
        self._dcl_a = 0.0
        self._last_s: float | None = None

    def step(self, inputs: LimitInputs) -> Limits:
        """The limits at ``inputs.now_s``; ramps use the time since the previous step."""
        dt_s = 0.0 if self._last_s is None else max(0.0, inputs.now_s - self._last_s)
        self._last_s = inputs.now_s if self._last_s is None else max(self._last_s, inputs.now_s)
        config, n = self.config, inputs.series_cells

        ccl = self._current(self._charge, inputs, self._ccl_a, dt_s)
        dcl = self._current(self._discharge, inputs, self._dcl_a, dt_s)
        self._ccl_a = min(c.value for c in ccl)
        self._dcl_a = min(c.value for c in dcl)

        ceiling_v = n * config.cell_charge_voltage_v
        cvl = (
            Contributor(
                "configured", ceiling_v, f"{n} cells × {config.cell_charge_voltage_v:.3f} V"
            ),
            self._cvl.step(
                inputs.now_s,
                n,
                inputs.cell_voltage_max_v,
                inputs.pack_voltage_v,
                trusted=inputs.data_ok,
                cell_voltage_max_at=inputs.cell_voltage_max_at,
            ),
        )
        dvl_v = n * config.cell_discharge_voltage_v
        dvl = (
            Contributor(
                "configured", dvl_v, f"{n} cells × {config.cell_discharge_voltage_v:.3f} V"
            ),
        )
        return Limits(
            charge_voltage_v=min(c.value for c in cvl),
            charge_current_a=self._ccl_a,
            discharge_current_a=self._dcl_a,
            discharge_voltage_v=dvl_v,
            cvl_contributors=cvl,
            ccl_contributors=ccl,
            dcl_contributors=dcl,
            dvl_contributors=dvl,
        )

    @staticmethod
    def _current(
        side: _Side, inputs: LimitInputs, previous_a: float, dt_s: float
    ) -> tuple[Contributor, ...]:
        """Every contributor to one current limit, the ramp last (only while it holds back)."""
        max_a, word = side.max_a, side.word
        charge = word == "charge"
        out = [Contributor("configured", max_a, f"configured maximum {word} current")]

        if inputs.contactors_closed:
            out.append(Contributor("contactors", max_a, "contactors closed"))
        else:
            out.append(Contributor("contactors", 0.0, "contactors open: no current can flow"))

        if inputs.data_ok:
            out.append(Contributor("data_health", max_a, "all cell data valid and fresh"))
        else:
            out.append(
                Contributor("data_health", 0.0, f"cell data missing or stale: no {word} allowed")
            )

        factor = _known(inputs.charge_fault_factor if charge else inputs.discharge_fault_factor)
        factor = 0.0 if factor is None else min(1.0, max(0.0, factor))
        if inputs.fault_reason:
            fault_reason = f"{inputs.fault_reason} ({factor:.0%} of maximum)"
        elif factor == 1.0:
            fault_reason = "no fault derates"
        else:
            fault_reason = f"fault level allows {factor:.0%} of maximum"
        out.append(Contributor("fault", max_a * factor, fault_reason))

        if charge:
            voltage, location, which = (
                _known(inputs.cell_voltage_max_v),
                inputs.cell_voltage_max_at,
                "highest",
            )
        else:
            voltage, location, which = (
                _known(inputs.cell_voltage_min_v),
                inputs.cell_voltage_min_at,
                "lowest",
            )
        if voltage is None:
            out.append(Contributor("cell_voltage", 0.0, f"{which} cell voltage unknown"))
        else:
            fraction = curve_fraction(side.voltage_curve, voltage)
            out.append(
                Contributor(
                    "cell_voltage",
                    max_a * fraction,
                    f"{which} cell {voltage:.3f} V{_at(location)} allows {fraction:.0%}",
                )
            )

        t_min, t_max = _known(inputs.cell_temp_min_c), _known(inputs.cell_temp_max_c)
        if t_min is None or t_max is None:
            out.append(Contributor("temperature", 0.0, "cell temperature unknown"))
        else:
            low = curve_fraction(side.temp_curve, t_min)
            high = curve_fraction(side.temp_curve, t_max)
            if low <= high:
                fraction, text = low, f"lowest cell {t_min:.1f} °C{_at(inputs.cell_temp_min_at)}"
            else:
                fraction, text = high, f"highest cell {t_max:.1f} °C{_at(inputs.cell_temp_max_at)}"
            out.append(
                Contributor("temperature", max_a * fraction, f"{text} allows {fraction:.0%}")
            )

        soc = _known(inputs.soc)
        if soc is not None:
            fraction = curve_fraction(side.soc_curve, soc)
            out.append(Contributor("soc", max_a * fraction, f"SOC {soc:.1%} allows {fraction:.0%}"))

        hold_a = _known(inputs.balancing_charge_a) if charge else None
        if hold_a is not None:
            out.append(
                Contributor("balancing", min(max_a, max(0.0, hold_a)), inputs.balancing_reason)
            )

        if charge and _known(inputs.pack_voltage_v) is None:
            out.append(
                Contributor("pack_voltage", 0.0, "pack voltage unknown: CVL cannot be regulated")
            )

        target_a = min(c.value for c in out)
        if target_a > previous_a:
            allowed_a = previous_a + side.ramp_a_per_s * dt_s
            if allowed_a < target_a:
                out.append(
                    Contributor(
                        "ramp",
                        allowed_a,
                        f"rising at {side.ramp_a_per_s:g} A/s towards {target_a:.1f} A",
                    )
                )
        return tuple(out)


__all__ = [
    "Curve",
    "DynamicCvl",
    "LimitCalculator",
    "LimitInputs",
    "LimitsConfig",
    "curve_fraction",
    "inputs_from_snapshot",
]
