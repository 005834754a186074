"""Conditions on bleeding: pure functions of the tick's inputs, time passed in.

Whatever a strategy wants, a cell bleeds only if every condition holds:

- the operator has balancing enabled; no fault (the BMS in FAULT, or any fault at warning or
  fatal level other than balancing's own feedback warning); every reading valid and fresh;
- the pack charges (above ``charge_current_a``) or rests (below ``rest_current_a`` for
  ``rest_time_s``), as allowed by the config; never while it discharges;
- its module reports fresh, reports a board temperature below the limit (the duty cycle is
  derated linearly across the band below it; an unknown board temperature allows nothing), and
  does not ask for a measurement with bleeding off;
- the duty cycle is in its on-phase: each period starts with a measurement window (bleeding
  off, so the voltages the strategies use carry no bleed current), then bleeds for the derated
  share of the rest;
- at most ``max_cells_per_module`` cells of a module bleed (board heat budget): those with the
  highest priority.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bmsd.balancing.settings import BalancingConfig
from bmsd.model.bms import BmsMode

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class PackConditions:
    """Pack-level inputs of the gate for one tick."""

    enabled: bool
    mode: BmsMode
    blocking_faults: tuple[str, ...]
    """Active fault levels (``id.level``) that forbid bleeding."""
    data_ok: bool
    current_a: float | None
    rest_since_s: float | None
    """Time since when |current| has been below rest_current_a (None: not below)."""
    now_s: float


def rest_since(
    previous_s: float | None, current_a: float | None, now_s: float, config: BalancingConfig
) -> float | None:
    """When the current went (and stayed) below the rest threshold; None if not below now."""
    if current_a is None or not math.isfinite(current_a) or abs(current_a) >= config.rest_current_a:
        return None
    return now_s if previous_s is None else previous_s


def pack_gate(config: BalancingConfig, pack: PackConditions) -> str:
    """Why the pack may not bleed now; an empty string when it may."""
    if not pack.enabled:
        return "disabled by the operator"
    if pack.mode is BmsMode.FAULT:
        return "BMS in fault"
    if pack.blocking_faults:
        return f"fault active: {', '.join(pack.blocking_faults)}"
    if not pack.data_ok or pack.current_a is None or not math.isfinite(pack.current_a):
        return "cell data missing or stale"
    current = pack.current_a
    if current > config.charge_current_a:
        return "" if config.allow_while_charging else "charging (not allowed in the config)"
    resting = pack.rest_since_s is not None and pack.now_s - pack.rest_since_s >= config.rest_time_s
    if resting:
        return "" if config.allow_at_rest else "at rest (not allowed in the config)"
    if current < -config.rest_current_a:
        return "discharging"
    if pack.rest_since_s is not None and config.allow_at_rest:
        left = config.rest_time_s - (pack.now_s - pack.rest_since_s)
        return f"waiting for rest ({left:.0f} s)"
    return "neither charging nor at rest"


def board_duty(config: BalancingConfig, board_temp_c: FloatArray) -> FloatArray:
    """Per module, the share of the duty cycle its board temperature allows (0..1).

    1 at or below limit − band, falling linearly to 0 at the limit; 0 at or above the limit and
    for an unknown (NaN) temperature.
    """
    temps = np.asarray(board_temp_c, dtype=np.float64)
    limit, band = config.board_temp_limit_c, config.board_derate_band_c
    with np.errstate(invalid="ignore"):
        if band > 0.0:
            duty = np.clip((limit - temps) / band, 0.0, 1.0)
        else:
            duty = np.where(temps < limit, 1.0, 0.0)
        duty = np.where(np.isfinite(temps) & (temps < limit), duty, 0.0)
    return np.asarray(duty, dtype=np.float64)


def duty_on(config: BalancingConfig, now_s: float, duty: float) -> bool:
    """Whether a module with duty share ``duty`` bleeds at ``now_s``.

    Each period of ``duty_period_s`` starts with ``measure_window_s`` off, then bleeds for
    ``duty`` of the remaining time: on for window ≤ phase < window + duty × (period − window).
    """
    if duty <= 0.0:
        return False
    period, window = config.duty_period_s, config.measure_window_s
    phase = math.fmod(now_s, period)
    if phase < 0.0:
        phase += period
    return window <= phase < window + min(duty, 1.0) * (period - window)


def in_measure_window(config: BalancingConfig, now_s: float) -> bool:
    """Whether ``now_s`` lies in the bleed-off measurement window of its duty period."""
    if config.measure_window_s <= 0.0:
        return False
    phase = math.fmod(now_s, config.duty_period_s)
    if phase < 0.0:
        phase += config.duty_period_s
    return phase < config.measure_window_s


def limit_per_module(
    wanted: BoolArray, priority: FloatArray, cells_per_module: int, max_cells: int
) -> BoolArray:
    """At most ``max_cells`` wanted cells per module, those with the highest priority (ties:
    the lower cell index)."""
    shaped = np.asarray(wanted, dtype=np.bool_).reshape(-1, cells_per_module)
    if max_cells >= cells_per_module:
        return np.asarray(shaped.reshape(-1).copy(), dtype=np.bool_)
    score = np.where(shaped, np.asarray(priority, dtype=np.float64).reshape(shaped.shape), -np.inf)
    # A stable sort on the negated score keeps the lower index first on ties.
    order = np.argsort(-score, axis=1, kind="stable")[:, :max_cells]
    chosen = np.zeros_like(shaped)
    np.put_along_axis(chosen, order, True, axis=1)
    return np.asarray((chosen & shaped).reshape(-1), dtype=np.bool_)


__all__ = [
    "PackConditions",
    "board_duty",
    "duty_on",
    "in_measure_window",
    "limit_per_module",
    "pack_gate",
    "rest_since",
]
