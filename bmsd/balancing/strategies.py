"""Balancing strategies behind one protocol: which cells *want* to bleed, and how urgently.

A strategy is a pure function of a :class:`CellView` (voltages measured with bleeding off, the
estimator's per-cell SOC and capacity, the Ah bled so far, the time) and its own small
:class:`Memory` (a hysteresis flag, an SOC plan). It returns a :class:`Decision` and the next
memory; it never reads a clock, never does I/O and knows nothing of the conditions (fault,
temperature, duty cycle, heat budget) that :mod:`bmsd.balancing.conditions` applies afterwards.

- ``none``: never bleeds.
- ``voltage``: starts when the voltage spread reaches a threshold, stops with hysteresis when
  it falls to a lower one, only while the lowest cell is above a minimum voltage.
- ``top``: voltage-based, but only near the end of charge (highest cell above a threshold),
  where LFP's OCV is steep enough for a voltage difference to mean a charge difference.
- ``soc``: from the estimator's per-cell SOC and capacity, plans a budget: the charge (Ah) each
  cell holds above the reference (the cell with the most room to full, or the emptiest) less a
  noise deadband, made near the aligned end of charge and kept for an interval, and bleeds it
  by counting Ah, the fullest cells first. It works inside LFP's flat plateau, where voltages
  cannot see the imbalance. The estimator is told each cell's bleed current, so a new plan
  already includes what was bled (see :class:`SocBased`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bmsd.balancing.settings import BalancingConfig

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Charge below this is rounding, not a plan (1 µAh: far below anything a bleed resistor moves).
_MIN_AH = 1e-6


@dataclass(frozen=True, slots=True)
class CellView:
    """What a strategy may look at in one tick; per-cell arrays in flat module-major order."""

    now_s: float
    voltage_v: FloatArray
    """Cell voltages, measured with the cell's module not bleeding where possible."""
    voltage_valid: BoolArray
    bled_ah: FloatArray
    """Charge bled per cell since the counters started (only ever grows)."""
    soc: FloatArray | None = None
    soc_std: FloatArray | None = None
    capacity_ah: FloatArray | None = None
    capacity_std_ah: FloatArray | None = None
    """One-sigma uncertainty of each cell's capacity (None: not known, taken as 0)."""
    anchored_at_s: float = math.nan
    """Time of the estimator's last anchor event (NaN: none yet)."""


@dataclass(frozen=True, slots=True)
class SocPlan:
    """Charge to bleed per cell, counted from the bled Ah at the time the plan was made."""

    made_at_s: float
    anchored_at_s: float
    target_ah: FloatArray
    bled_at_plan_ah: FloatArray
    excess_ah: FloatArray
    """Charge above the reference per cell when the plan was made."""
    capacity_ah: FloatArray
    """Capacity per cell when the plan was made."""
    soc_std: float = math.inf
    """Median uncertainty (share of capacity) of the room or charge the plan was made from."""

    def spread(self, bled_ah: FloatArray) -> float:
        """The imbalance left: the planned excess minus what has been bled, over capacity.

        Counted from the Ah bled rather than from the live, noisy SOC, so the figure falls
        steadily as balancing works."""
        left = np.maximum(0.0, self.excess_ah - (bled_ah - self.bled_at_plan_ah))
        return float((left / self.capacity_ah).max())

    def remaining_ah(self, bled_ah: FloatArray) -> FloatArray:
        left = self.target_ah - (bled_ah - self.bled_at_plan_ah)
        return np.asarray(np.where(left > _MIN_AH, left, 0.0), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Memory:
    """A strategy's state between ticks."""

    active: bool = False
    plan: SocPlan | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Which cells want to bleed, before any condition is applied."""

    wanted: BoolArray
    priority: FloatArray
    """Larger bleeds first when a module's heat budget allows fewer cells."""
    needed: bool
    """The pack is out of balance beyond the strategy's target (the charge hold uses it)."""
    spread: float
    """The imbalance the strategy sees: V (voltage, top) or fraction of capacity (soc)."""
    remaining_ah: FloatArray
    """soc: charge still to bleed per cell under the plan; 0 for the voltage strategies."""
    reason: str


class Strategy(Protocol):
    """One balancing strategy: a pure decision from a view and its memory."""

    name: str

    def decide(self, view: CellView, memory: Memory) -> tuple[Decision, Memory]: ...


def _nothing(count: int, reason: str, spread: float = math.nan) -> Decision:
    return Decision(
        wanted=np.zeros(count, dtype=np.bool_),
        priority=np.zeros(count),
        needed=False,
        spread=spread,
        remaining_ah=np.zeros(count),
        reason=reason,
    )


class NoBalancing:
    """``none``: never bleeds."""

    name = "none"

    def decide(self, view: CellView, memory: Memory) -> tuple[Decision, Memory]:
        return _nothing(view.voltage_v.size, "no balancing configured"), memory


class VoltageThreshold:
    """``voltage``: spread hysteresis, above a minimum cell voltage (foxBMS, LibreSolar)."""

    name = "voltage"

    def __init__(self, config: BalancingConfig) -> None:
        self._start_v = config.voltage_start_delta_v
        self._stop_v = config.voltage_stop_delta_v
        self._min_cell_v = config.voltage_min_cell_v

    def decide(self, view: CellView, memory: Memory) -> tuple[Decision, Memory]:
        count = view.voltage_v.size
        if not view.voltage_valid.all():
            return _nothing(count, "cell voltages incomplete"), replace(memory, active=False)
        voltage = view.voltage_v
        low, spread = float(voltage.min()), float(voltage.max() - voltage.min())
        active = memory.active
        if low < self._min_cell_v:
            reason = f"lowest cell {low:.3f} V below {self._min_cell_v:.3f} V"
            return _nothing(count, reason, spread), replace(memory, active=False)
        if active and spread <= self._stop_v:
            active = False
        elif not active and spread >= self._start_v:
            active = True
        above = voltage - low
        wanted = (above > self._stop_v) & active
        if active:
            reason = f"spread {spread * 1000:.1f} mV, bleeding down to {self._stop_v * 1000:.1f} mV"
        else:
            reason = f"spread {spread * 1000:.1f} mV below the start {self._start_v * 1000:.1f} mV"
        decision = Decision(
            wanted=np.asarray(wanted, dtype=np.bool_),
            priority=np.asarray(above, dtype=np.float64),
            needed=active,
            spread=spread,
            remaining_ah=np.zeros(count),
            reason=reason,
        )
        return decision, replace(memory, active=active)


class TopBalancing:
    """``top``: cells above the lowest bleed while the highest is near the end of charge."""

    name = "top"

    def __init__(self, config: BalancingConfig) -> None:
        self._start_v = config.top_start_cell_v
        self._delta_v = config.top_delta_v

    def decide(self, view: CellView, memory: Memory) -> tuple[Decision, Memory]:
        count = view.voltage_v.size
        if not view.voltage_valid.all():
            return _nothing(count, "cell voltages incomplete"), replace(memory, active=False)
        voltage = view.voltage_v
        low, high = float(voltage.min()), float(voltage.max())
        spread = high - low
        # Hysteresis of top_delta_v on the highest cell, so charge ripple does not toggle it.
        active = high >= self._start_v - self._delta_v if memory.active else high >= self._start_v
        if not active:
            reason = f"highest cell {high:.3f} V below the top threshold {self._start_v:.3f} V"
            return _nothing(count, reason, spread), replace(memory, active=False)
        above = voltage - low
        wanted = above > self._delta_v
        decision = Decision(
            wanted=np.asarray(wanted, dtype=np.bool_),
            priority=np.asarray(above, dtype=np.float64),
            needed=bool(wanted.any()),
            spread=spread,
            remaining_ah=np.zeros(count),
            reason=f"end of charge: spread {spread * 1000:.1f} mV",
        )
        return decision, replace(memory, active=True)


def excess_ah(
    soc: FloatArray, capacity_ah: FloatArray, alignment: str, quantile: float = 1.0
) -> FloatArray:
    """Charge each cell holds above the reference, Ah (never negative).

    ``top``: the reference is the cell with the most room to full, so after bleeding the
    excess every cell reaches full together. ``bottom``: the reference is the cell holding the
    least charge, so every cell reaches empty together. With ``quantile`` below 1 the
    reference is that quantile of the cells instead of the extreme one: the extreme of many
    noisy estimates is biased by the noise, and every cell would be over-bled by the bias.
    """
    if alignment == "top":
        room_ah = (1.0 - soc) * capacity_ah
        return np.asarray(np.maximum(0.0, np.quantile(room_ah, quantile) - room_ah), np.float64)
    charge_ah = soc * capacity_ah
    return np.asarray(
        np.maximum(0.0, charge_ah - np.quantile(charge_ah, 1.0 - quantile)), np.float64
    )


def reference_index(
    soc: FloatArray, capacity_ah: FloatArray, alignment: str, quantile: float = 1.0
) -> int:
    """The cell at (or nearest to) the reference of :func:`excess_ah`."""
    if alignment == "top":
        value = (1.0 - soc) * capacity_ah
        return int(np.argmin(np.abs(value - np.quantile(value, quantile))))
    value = soc * capacity_ah
    return int(np.argmin(np.abs(value - np.quantile(value, 1.0 - quantile))))


class SocBased:
    """``soc``: bleed a budget of Ah per cell, planned from the SOC estimate, top cells first.

    The estimator sees each cell's bleed current (the controller passes it in), so its SOC
    stays current while bleeding. Bleeding still costs energy on what only the noise shows:
    re-planning from every tick's estimate would bleed whichever cell the noise lifts, which
    then becomes the cell with the most room, and every other cell is bled after it (a ratchet).
    So the plan is a budget: made from a certain estimate at most every ``soc_plan_interval_s``,
    each cell's excess less a deadband of ``soc_deadband_sigma`` standard deviations of its
    difference to the reference, bled by counting Ah. Within the budget, the cells with the
    most left bleed first (``soc_top_first_band``).
    """

    name = "soc"

    def __init__(self, config: BalancingConfig) -> None:
        self._alignment = config.soc_alignment
        self._start = config.soc_start_spread
        self._stop = config.soc_stop_spread
        self._max_std = config.soc_max_std
        self._quantile = config.soc_reference_quantile
        self._deadband_sigma = config.soc_deadband_sigma
        self._interval_s = config.soc_plan_interval_s
        self._band = config.soc_top_first_band
        self._window = config.soc_plan_window

    def charge_std(self, view: CellView) -> FloatArray:
        """Uncertainty of each cell's room to full (top) or charge (bottom), share of capacity.

        Room = (1 − SOC)·Q: its error is the SOC's plus (1 − SOC) times the capacity's, so the
        room is known best near full (top alignment) and the charge near empty (bottom)."""
        assert view.soc is not None and view.soc_std is not None and view.capacity_ah is not None
        lever = 1.0 - view.soc if self._alignment == "top" else view.soc
        cap_std = np.zeros_like(view.soc) if view.capacity_std_ah is None else view.capacity_std_ah
        relative = lever * cap_std / view.capacity_ah
        return np.asarray(np.sqrt(view.soc_std**2 + relative**2), dtype=np.float64)

    def budget_ah(self, soc: FloatArray, std: FloatArray, capacity_ah: FloatArray) -> FloatArray:
        """Charge to bleed per cell: the excess above the reference less the larger of the
        stop spread and the deadband (never negative). ``std``: :meth:`charge_std`."""
        excess = excess_ah(soc, capacity_ah, self._alignment, self._quantile)
        ref = reference_index(soc, capacity_ah, self._alignment, self._quantile)
        sigma_diff = np.sqrt(std**2 + float(std[ref]) ** 2)
        keep = np.maximum(self._stop, self._deadband_sigma * sigma_diff) * capacity_ah
        budget = excess - keep
        return np.asarray(np.where(budget > _MIN_AH, budget, 0.0), dtype=np.float64)

    def decide(self, view: CellView, memory: Memory) -> tuple[Decision, Memory]:
        count = view.voltage_v.size
        plan = memory.plan
        if plan is not None and plan.target_ah.size != count:
            plan = None
        remaining = plan.remaining_ah(view.bled_ah) if plan is not None else np.zeros(count)
        plan_done = plan is None or not remaining.any()
        spread = math.nan
        soc, soc_std, capacity = view.soc, view.soc_std, view.capacity_ah
        planned_now = False
        if soc is None or soc_std is None or capacity is None:
            if plan is None:
                return _nothing(count, "no SOC estimate yet"), memory
        else:
            excess = excess_ah(soc, capacity, self._alignment, self._quantile)
            spread = float((excess / capacity).max())
            certain = bool(np.all(soc_std <= self._max_std))
            std = self.charge_std(view)
            # The estimator counts the bleed, so a new estimate already includes what was bled;
            # a budget is still kept for an interval, so the noise is sampled once per plan.
            # An estimate twice as certain as the plan's (after the start, an anchor) is news.
            sharper = plan is not None and float(np.median(std)) < 0.5 * plan.soc_std
            due = plan is None or sharper or view.now_s - plan.made_at_s >= self._interval_s
            average = float(np.mean(soc))
            lever = 1.0 - average if self._alignment == "top" else average
            if due and certain and lever <= self._window:
                in_progress = not plan_done
                if spread >= self._start or (in_progress and spread > self._stop):
                    target = self.budget_ah(soc, std, capacity)
                    plan = SocPlan(
                        view.now_s,
                        view.anchored_at_s,
                        target,
                        view.bled_ah.copy(),
                        excess,
                        np.asarray(capacity, dtype=np.float64).copy(),
                        float(np.median(std)),
                    )
                    remaining = plan.remaining_ah(view.bled_ah)
                    planned_now = True
                elif plan is not None:
                    # Re-checked and found balanced: nothing left to bleed until the next check.
                    plan = replace(
                        plan,
                        made_at_s=view.now_s,
                        anchored_at_s=view.anchored_at_s,
                        target_ah=np.zeros(count),
                        bled_at_plan_ah=view.bled_ah.copy(),
                        excess_ah=excess,
                        soc_std=float(np.median(std)),
                    )
                    remaining = np.zeros(count)
            elif plan is None and not certain:
                worst = float(soc_std.max())
                reason = f"SOC uncertainty {worst:.1%} above {self._max_std:.1%}: no plan"
                return _nothing(count, reason, spread), memory
            elif plan is None:
                edge = "full" if self._alignment == "top" else "empty"
                reason = (
                    f"average SOC {average:.1%}: a plan is made within {self._window:.0%} of {edge}"
                )
                return _nothing(count, reason, spread), memory
        memory = replace(memory, plan=plan)
        if plan is not None:
            spread = plan.spread(view.bled_ah)
            # Top first: only cells within the band of the largest remaining budget bleed.
            level = remaining / plan.capacity_ah
            wanted = (remaining > 0.0) & (level >= level.max() - self._band)
        else:
            wanted = np.zeros(count, dtype=np.bool_)
        if remaining.any():
            word = "new plan" if planned_now else "plan"
            total = float(remaining.sum())
            reason = (
                f"{word}: {total:.3f} Ah left to bleed on {int((remaining > 0).sum())} cells, "
                f"{int(wanted.sum())} at the top"
            )
        elif plan is not None and not math.isnan(spread) and spread >= self._start:
            reason = "budget bled; re-planned from the estimate at the next check"
        else:
            reason = f"balanced within {self._start:.1%} (or within the estimate's noise)"
        decision = Decision(
            wanted=np.asarray(wanted, dtype=np.bool_),
            priority=remaining,
            needed=bool(remaining.any()),
            spread=spread,
            remaining_ah=remaining,
            reason=reason,
        )
        return decision, memory


def make_strategy(config: BalancingConfig) -> Strategy:
    """The configured strategy."""
    if config.strategy == "voltage":
        return VoltageThreshold(config)
    if config.strategy == "top":
        return TopBalancing(config)
    if config.strategy == "soc":
        return SocBased(config)
    return NoBalancing()


__all__ = [
    "CellView",
    "Decision",
    "Memory",
    "NoBalancing",
    "SocBased",
    "SocPlan",
    "Strategy",
    "TopBalancing",
    "VoltageThreshold",
    "excess_ah",
    "make_strategy",
    "reference_index",
]
