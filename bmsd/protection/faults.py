"""Fault evaluation: a pure function of (fault state, inputs, fault table, now).

Per level, each tick:

1. The quantity's value is judged bad or good. Not yet tripped: bad at or beyond the
   threshold. Tripped: still bad until the value is back inside by the hysteresis.
   ``None`` (cannot judge) leaves everything as it was.
2. An up/down counter debounces: +1 per bad sample up to ``debounce_samples`` (trips there),
   −1 per good sample down to 0 (untrips there) — as many good samples to clear as bad to trip.
3. Tripped for ``set_delay_s`` → the level is set (active); a latching level also latches.
4. Untripped for ``clear_delay_s`` → a non-latched level clears. A latched level stays set
   until :func:`reset_latched` is called and its cause is gone.

Nothing here reads a clock or does I/O; the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import replace

from bmsd.model.faults import FaultEvent, FaultLevel, FaultState, LevelState
from bmsd.protection.quantities import QUANTITY_BY_NAME, Direction, ProtectionInputs
from bmsd.protection.table import FaultSpec, LevelSpec


def initial_state(table: dict[str, FaultSpec]) -> FaultState:
    """Nothing tripped, for every level of every enabled fault, in table order."""
    return FaultState(
        tuple(
            LevelState(fault_id, level)
            for fault_id, spec in table.items()
            if spec.enabled
            for level, _ in spec.levels()
        )
    )


# Delays are compared with this slack: tick times are sums of floats (0.7 - 0.5 < 0.2), and a
# delay must take the same number of ticks live and in replay, whatever the clock origin.
TIME_EPSILON_S = 1e-6


def judge(value: float, spec: LevelSpec, direction: Direction, tripped: bool) -> bool:
    """Is this sample bad? Once tripped, good only when back inside by more than the hysteresis.

    With no hysteresis a value held exactly at the threshold therefore stays bad: a flag or
    count quantity (an error bit at 1, bus-off at 2) must not flap or let a reset through.
    """
    if direction == "above":
        return value >= spec.threshold - spec.hysteresis if tripped else value >= spec.threshold
    return value <= spec.threshold + spec.hysteresis if tripped else value <= spec.threshold


def step_level(
    state: LevelState,
    spec: LevelSpec,
    direction: Direction,
    value: float | None,
    now: float,
    latches: bool,
) -> tuple[LevelState, str | None]:
    """Advance one level by one sample; returns the new state and "set"/"clear"/None.

    ``None`` (cannot judge) holds the counter and never clears a level, but a level already
    tripped still sets when its delay runs out: missing data must not postpone a fault.
    """
    counter, tripped, tripped_since = state.counter, state.tripped, state.tripped_since
    if value is not None:
        bad = judge(value, spec, direction, tripped or state.active)
        counter = min(spec.debounce_samples, counter + 1) if bad else max(0, counter - 1)
        if counter >= spec.debounce_samples and not tripped:
            tripped, tripped_since = True, now
        elif counter == 0 and tripped:
            tripped, tripped_since = False, None
    new = replace(state, counter=counter, tripped=tripped, tripped_since=tripped_since)
    if not new.active:
        delay_over = (
            tripped_since is not None and now - tripped_since >= spec.set_delay_s - TIME_EPSILON_S
        )
        if tripped and delay_over:
            new = replace(
                new,
                active=True,
                latched=latches,
                clear_since=None,
                set_count=new.set_count + 1,
                first_set_at=new.first_set_at if new.first_set_at is not None else now,
                last_set_at=now,
                value_at_set=value,
            )
            return new, "set"
        return new, None
    if tripped:
        return replace(new, clear_since=None), None
    if value is None:
        return new, None  # cannot see the cause gone: the clear delay does not run
    clear_since = new.clear_since if new.clear_since is not None else now
    if not new.latched and now - clear_since >= spec.clear_delay_s - TIME_EPSILON_S:
        return replace(new, active=False, clear_since=None), "clear"
    return replace(new, clear_since=clear_since), None


def evaluate(
    state: FaultState, inputs: ProtectionInputs, table: dict[str, FaultSpec], now: float
) -> tuple[FaultState, list[FaultEvent]]:
    """Advance every level of every enabled fault by one tick."""
    values: dict[str, float | None] = {}
    levels: list[LevelState] = []
    events: list[FaultEvent] = []
    for level_state in state.levels:
        spec = table[level_state.fault_id]
        level_spec = _level_spec(spec, level_state.level)
        quantity = QUANTITY_BY_NAME[spec.quantity]
        if spec.quantity not in values:
            values[spec.quantity] = quantity.value(inputs)
        value = values[spec.quantity]
        new, change = step_level(
            level_state,
            level_spec,
            quantity.direction,
            value,
            now,
            spec.latches(level_state.level, level_spec),
        )
        levels.append(new)
        if change is not None:
            events.append(_event(now, change, new, spec, level_spec, value))
    return FaultState(tuple(levels)), events


def reset_latched(
    state: FaultState, table: dict[str, FaultSpec], now: float, origin: str
) -> tuple[FaultState, list[FaultEvent]]:
    """Clear latched levels whose cause is gone; refuse (and report) those still present."""
    levels: list[LevelState] = []
    events: list[FaultEvent] = []
    for level_state in state.levels:
        if not level_state.latched:
            levels.append(level_state)
            continue
        spec = table[level_state.fault_id]
        level_spec = _level_spec(spec, level_state.level)
        if level_state.tripped:
            levels.append(level_state)
            events.append(
                FaultEvent(
                    now,
                    "reset_refused",
                    level_state.fault_id,
                    level_state.level,
                    None,
                    level_spec.threshold,
                    f"reset of {level_state.key} refused: cause still present (by {origin})",
                )
            )
            continue
        levels.append(replace(level_state, active=False, latched=False, clear_since=None))
        events.append(
            FaultEvent(
                now,
                "reset",
                level_state.fault_id,
                level_state.level,
                None,
                level_spec.threshold,
                f"{level_state.key} reset by {origin}",
            )
        )
    return FaultState(tuple(levels)), events


def restore_latched(
    state: FaultState,
    latched: dict[str, dict[str, float | int | None]],
    now: float,
    table: dict[str, FaultSpec],
) -> FaultState:
    """Re-latch levels persisted before a restart (keys ``fault.level``), unknown keys ignored.

    A restored level is active, latched and tripped with a full debounce counter: a reset is
    refused until the daemon has seen the cause gone for as many samples as it took to trip,
    exactly like a level latched in this run.
    """
    levels = []
    for level_state in state.levels:
        if level_state.key not in latched:
            levels.append(level_state)
            continue
        # Present means latched, whatever the record holds (LatchedFaultStore checks records;
        # this must still never un-latch or raise on one it let through).
        saved = latched[level_state.key]
        if not isinstance(saved, dict):
            saved = {}
        level_spec = _level_spec(table[level_state.fault_id], level_state.level)
        value = _finite_float(saved.get("value_at_set"))
        set_count = saved.get("set_count")
        levels.append(
            replace(
                level_state,
                counter=level_spec.debounce_samples,
                tripped=True,
                tripped_since=now,
                active=True,
                latched=True,
                set_count=set_count if type(set_count) is int and set_count >= 1 else 1,
                first_set_at=now,
                last_set_at=now,
                value_at_set=value,
            )
        )
    return FaultState(tuple(levels))


def _finite_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _level_spec(spec: FaultSpec, level: FaultLevel) -> LevelSpec:
    found = dict(spec.levels())[level]
    return found


def _event(
    now: float,
    change: str,
    state: LevelState,
    spec: FaultSpec,
    level_spec: LevelSpec,
    value: float | None,
) -> FaultEvent:
    quantity = QUANTITY_BY_NAME[spec.quantity]
    shown = "?" if value is None else f"{value:.4g}"
    relation = ">=" if quantity.direction == "above" else "<="
    if change == "set":
        message = (
            f"{state.key} set: {spec.quantity} {shown} {quantity.unit} {relation} "
            f"{level_spec.threshold:g} {quantity.unit}"
        )
    else:
        message = f"{state.key} cleared: {spec.quantity} {shown} {quantity.unit}"
    return FaultEvent(
        now, change, state.fault_id, state.level, value, level_spec.threshold, message.strip()
    )
