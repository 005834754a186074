"""The fault evaluator (bmsd.protection.faults), judged sample by sample.

``step_level`` and ``evaluate`` are pure functions with the time passed in, so every test here
drives them with a table of values and checks the exact sample at which a level trips, sets,
clears and latches. Unless a test says otherwise the tick is 0.125 s, a binary-exact number, so
"exactly at the delay" is exact in floating point; the 100 ms tick has its own test.

The second half runs every level of every fault of the shipped tables (diagnostics + LFP and
diagnostics + NMC, loaded through ``load_config``): just inside its threshold it never sets,
just beyond it sets after exactly ``debounce_samples`` samples plus ``set_delay_s``, and it
clears (or stays latched) through its hysteresis, debounce and clear delay.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path

import pytest

from bmsd.config import load_config
from bmsd.model.faults import FaultEvent, FaultLevel, FaultState, LevelState
from bmsd.protection.faults import (
    evaluate,
    initial_state,
    reset_latched,
    restore_latched,
    step_level,
)
from bmsd.protection.quantities import QUANTITY_BY_NAME, Direction, ProtectionInputs
from bmsd.protection.table import FaultSpec, LevelSpec

ROOT = Path(__file__).resolve().parents[3]
SIM_CONFIG = ROOT / "etc" / "sim.toml"
TABLES = ROOT / "etc" / "protection"
TICK = 0.125  # binary-exact: k * TICK is exact, so delays compare exactly
DIRECTIONS: tuple[Direction, ...] = ("above", "below")
THRESHOLD = {"above": 3.65, "below": 2.5}
STEP = 0.001


# -- helpers ---------------------------------------------------------------------------------


def beyond(direction: Direction, threshold: float, by: float) -> float:
    """``by`` beyond the threshold (negative: inside it), in the quantity's direction."""
    return threshold + by if direction == "above" else threshold - by


Step = tuple[LevelState, str | None]


def drive(
    spec: LevelSpec,
    direction: Direction,
    values: Sequence[float | None],
    *,
    latches: bool = False,
    state: LevelState | None = None,
    first_tick: int = 0,
    tick_s: float = TICK,
) -> list[Step]:
    """Feed ``values`` one per tick; returns (state, change) after every sample."""
    current = state or LevelState("fault", FaultLevel.WARNING)
    history: list[Step] = []
    for k, value in enumerate(values, start=first_tick):
        current, change = step_level(current, spec, direction, value, k * tick_s, latches)
        history.append((current, change))
    return history


def changes(history: Sequence[Step]) -> list[tuple[int, str]]:
    return [(k, change) for k, (_, change) in enumerate(history) if change is not None]


def pattern(direction: Direction, text: str) -> list[float | None]:
    """B: bad (just beyond), G: good (well inside), N: no value."""
    bad = beyond(direction, THRESHOLD[direction], STEP)
    good = beyond(direction, THRESHOLD[direction], -0.5)
    return [{"B": bad, "G": good, "N": None}[c] for c in text]


def ticks_for(delay_s: float, tick_s: float = TICK) -> int:
    """Whole ticks until ``now - since >= delay_s`` (exact rational arithmetic)."""
    return math.ceil(Fraction(str(delay_s)) / Fraction(str(tick_s)))


# -- judging the threshold -------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    ("offset", "trips"),
    [
        pytest.param(-STEP, False, id="one-step-inside"),
        pytest.param(0.0, True, id="exactly-at-threshold"),
        pytest.param(STEP, True, id="one-step-beyond"),
        pytest.param(-1.0, False, id="far-inside"),
    ],
)
def test_threshold_is_inclusive(direction: Direction, offset: float, trips: bool) -> None:
    spec = LevelSpec(threshold=THRESHOLD[direction])
    value = beyond(direction, THRESHOLD[direction], offset)
    history = drive(spec, direction, [value] * 20)
    assert changes(history) == ([(0, "set")] if trips else [])
    assert history[-1][0].active is trips


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("samples", [1, 3])
def test_value_held_exactly_at_threshold_stays_set(direction: Direction, samples: int) -> None:
    """Without hysteresis the threshold itself stays bad once tripped: no flapping."""
    spec = LevelSpec(threshold=THRESHOLD[direction], debounce_samples=samples)
    history = drive(spec, direction, [THRESHOLD[direction]] * 30)
    assert changes(history) == [(samples - 1, "set")]
    assert all(state.tripped for state, _ in history[samples - 1 :])


# -- debounce (up/down counter) --------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("samples", [1, 2, 3, 5, 10, 50])
def test_debounce_needs_exactly_n_bad_samples(direction: Direction, samples: int) -> None:
    spec = LevelSpec(threshold=THRESHOLD[direction], debounce_samples=samples)
    history = drive(spec, direction, pattern(direction, "B" * (samples - 1)))
    assert not any(state.active or state.tripped for state, _ in history)
    assert [state.counter for state, _ in history] == list(range(1, samples))
    history = drive(spec, direction, pattern(direction, "B" * samples))
    assert changes(history) == [(samples - 1, "set")]


# Debounce 3, no delays, no hysteresis: (samples, expected changes, active at the end).
UP_DOWN = [
    pytest.param("BBB", [(2, "set")], True, id="three-bad-trip"),
    pytest.param("BB", [], False, id="two-bad-do-not"),
    pytest.param("BBGBB", [(4, "set")], True, id="good-sample-costs-one"),
    pytest.param("BGBGBGBGBG", [], False, id="alternating-never-trips"),
    pytest.param("BBGGBBB", [(6, "set")], True, id="counter-back-to-zero"),
    pytest.param("BBBGG", [(2, "set")], True, id="two-good-do-not-clear"),
    pytest.param("BBBGGG", [(2, "set"), (5, "clear")], False, id="three-good-clear"),
    pytest.param("BBBGGBGG", [(2, "set"), (7, "clear")], False, id="bad-during-clear"),
    pytest.param("BBBGBGBGBG", [(2, "set")], True, id="alternating-never-clears"),
    pytest.param("BNB", [], False, id="none-holds-below"),
    pytest.param("BNNNBB", [(5, "set")], True, id="none-holds-counter"),
    pytest.param("BBBNNNNNG", [(2, "set")], True, id="none-does-not-clear"),
    pytest.param("BBBNNNGGG", [(2, "set"), (8, "clear")], False, id="none-then-clear"),
    pytest.param("NNNNNNNNNN", [], False, id="only-none"),
]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(("samples", "expected", "active"), UP_DOWN)
def test_up_down_counter(
    direction: Direction, samples: str, expected: list[tuple[int, str]], active: bool
) -> None:
    spec = LevelSpec(threshold=THRESHOLD[direction], debounce_samples=3)
    history = drive(spec, direction, pattern(direction, samples))
    assert changes(history) == expected
    assert history[-1][0].active is active
    assert all(0 <= state.counter <= 3 for state, _ in history)


def test_none_holds_the_exact_counter() -> None:
    spec = LevelSpec(threshold=3.65, debounce_samples=5)
    history = drive(spec, "above", pattern("above", "BBNNNNB"))
    assert [state.counter for state, _ in history] == [1, 2, 2, 2, 2, 2, 3]


# -- set delay -------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("set_delay_s", [0.0, 0.125, 0.25, 0.5, 1.0, 0.2])
def test_set_delay_after_the_debounce(
    direction: Direction, samples: int, set_delay_s: float
) -> None:
    spec = LevelSpec(
        threshold=THRESHOLD[direction], debounce_samples=samples, set_delay_s=set_delay_s
    )
    history = drive(spec, direction, pattern(direction, "B" * 40))
    tripped_at = samples - 1
    expected = tripped_at + ticks_for(set_delay_s)
    assert changes(history) == [(expected, "set")]
    assert history[tripped_at][0].tripped
    assert history[tripped_at][0].tripped_since == tripped_at * TICK
    assert not any(state.active for state, _ in history[:expected])
    assert all(state.active for state, _ in history[expected:])
    assert history[expected][0].first_set_at == expected * TICK


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_condition_gone_during_set_delay_never_sets(direction: Direction) -> None:
    spec = LevelSpec(threshold=THRESHOLD[direction], debounce_samples=2, set_delay_s=1.0)
    # Trips at sample 1, then two good samples untrip it long before the 1 s delay.
    history = drive(spec, direction, pattern(direction, "BBBGGG" + "G" * 20))
    assert changes(history) == []
    assert not history[-1][0].tripped
    assert history[-1][0].tripped_since is None


def test_set_delay_at_a_100ms_tick_is_not_lengthened_by_rounding() -> None:
    """0.7 - 0.5 < 0.2 in floats: the delay must still take two 100 ms ticks, not three."""
    spec = LevelSpec(threshold=3.65, set_delay_s=0.2)
    state = LevelState("cell_voltage_high", FaultLevel.FATAL)
    for now in (0.5, 0.6, 0.7):  # the times a 100 ms tick produces
        state, change = step_level(state, spec, "above", 3.7, now, True)
    assert change == "set"


# -- hysteresis and clear delay --------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    ("back_by", "clears"),
    [
        pytest.param(0.0, False, id="at-threshold"),
        pytest.param(0.01, False, id="just-inside"),
        pytest.param(0.25 - STEP, False, id="inside-within-hysteresis"),
        pytest.param(0.25 + STEP, True, id="beyond-hysteresis"),
        pytest.param(1.0, True, id="far-inside"),
    ],
)
def test_clear_hysteresis(direction: Direction, back_by: float, clears: bool) -> None:
    threshold = THRESHOLD[direction]
    spec = LevelSpec(threshold=threshold, hysteresis=0.25, debounce_samples=2)
    bad, back = beyond(direction, threshold, STEP), beyond(direction, threshold, -back_by)
    values = [bad] * 2 + [back] * 20
    history = drive(spec, direction, values)
    assert changes(history) == ([(1, "set"), (3, "clear")] if clears else [(1, "set")])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_hysteresis_does_not_apply_before_tripping(direction: Direction) -> None:
    threshold = THRESHOLD[direction]
    spec = LevelSpec(threshold=threshold, hysteresis=0.25)
    history = drive(spec, direction, [beyond(direction, threshold, -0.1)] * 50)
    assert changes(history) == []


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("clear_delay_s", [0.0, 0.125, 0.5, 1.0])
def test_clear_delay(direction: Direction, clear_delay_s: float) -> None:
    spec = LevelSpec(
        threshold=THRESHOLD[direction], debounce_samples=2, clear_delay_s=clear_delay_s
    )
    history = drive(spec, direction, pattern(direction, "BB" + "G" * 30))
    # Untripped after two good samples (index 3), cleared after the delay from there.
    expected = 3 + ticks_for(clear_delay_s)
    assert changes(history) == [(1, "set"), (expected, "clear")]
    assert all(state.active for state, _ in history[1:expected])
    assert history[3][0].clear_since == (3 * TICK if clear_delay_s else None)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_bad_sample_during_clear_delay_restarts_it(direction: Direction) -> None:
    spec = LevelSpec(threshold=THRESHOLD[direction], clear_delay_s=0.5)
    # Set at 0; untripped at 1; bad again at 3 (re-tripped); good from 4: clear at 4 + 4.
    history = drive(spec, direction, pattern(direction, "BGGBGGGGGGG"))
    assert changes(history) == [(0, "set"), (8, "clear")]
    assert history[3][0].clear_since is None


def test_none_while_active_and_tripped_keeps_it_active() -> None:
    spec = LevelSpec(threshold=3.65, debounce_samples=3)
    history = drive(spec, "above", pattern("above", "BBB" + "N" * 100))
    assert changes(history) == [(2, "set")]
    assert history[-1][0].active and history[-1][0].tripped


def test_pending_set_completes_without_data_fail_safe() -> None:
    """Once debounced, data going missing does not cancel the set delay (fail safe)."""
    spec = LevelSpec(threshold=3.65, debounce_samples=2, set_delay_s=0.5)
    history = drive(spec, "above", pattern("above", "BB" + "N" * 10))
    assert changes(history) == [(5, "set")]
    assert history[5][0].value_at_set is None


def test_none_does_not_run_out_the_clear_delay() -> None:
    """Missing data cannot show the cause gone: the clear delay does not run on None."""
    spec = LevelSpec(threshold=3.65, clear_delay_s=1.0)
    # Set at 0, untripped at 1 (clear delay starts), then no data at all for 2 s.
    history = drive(spec, "above", pattern("above", "BG" + "N" * 16))
    assert changes(history) == [(0, "set")]
    assert history[-1][0].active


# -- latching --------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_latched_level_stays_after_the_cause_is_gone(direction: Direction) -> None:
    spec = LevelSpec(threshold=THRESHOLD[direction], debounce_samples=2, latch=True)
    history = drive(spec, direction, pattern(direction, "BB" + "G" * 50), latches=True)
    assert changes(history) == [(1, "set")]
    last = history[-1][0]
    assert last.active and last.latched and not last.tripped
    assert last.value_at_set == pytest.approx(beyond(direction, THRESHOLD[direction], STEP))


@pytest.mark.parametrize(
    ("level", "latch", "latches"),
    [
        (FaultLevel.INFO, False, False),
        (FaultLevel.INFO, True, True),
        (FaultLevel.WARNING, False, False),
        (FaultLevel.WARNING, True, True),
        (FaultLevel.FATAL, False, True),
        (FaultLevel.FATAL, True, True),
    ],
)
def test_fatal_always_latches(level: FaultLevel, latch: bool, latches: bool) -> None:
    spec = FaultSpec(quantity="cell_voltage_max_v")
    assert spec.latches(level, LevelSpec(threshold=3.65, latch=latch)) is latches


# -- evaluate, reset_latched, restore_latched on a small table -------------------------------

# A two-level over-voltage fault and a below fault on one table; driven through ``evaluate``
# with inputs whose only used field is the cell voltage extremes (see _inputs).
SMALL = {
    "ov": FaultSpec(
        quantity="cell_voltage_max_v",
        warning=LevelSpec(threshold=3.55, hysteresis=0.1, debounce_samples=2),
        fatal=LevelSpec(threshold=3.65, hysteresis=0.25, debounce_samples=2, latch=False),
    ),
    "uv": FaultSpec(
        quantity="cell_voltage_min_v", warning=LevelSpec(threshold=2.8, debounce_samples=1)
    ),
    "off": FaultSpec(quantity="cell_voltage_max_v", enabled=False, fatal=LevelSpec(threshold=3.0)),
}


class _Extremes:
    def __init__(self, low: float | None, high: float | None) -> None:
        self.min_value, self.max_value = low, high


class _Snapshot:
    def __init__(self, low: float | None, high: float | None) -> None:
        self.cell_voltage = None if high is None else _Extremes(low, high)


def _inputs(high: float | None, low: float = 3.3) -> ProtectionInputs:
    """Inputs for the cell-voltage quantities only (a duck-typed snapshot)."""
    return ProtectionInputs(
        snapshot=_Snapshot(low, high),  # type: ignore[arg-type]
        series_cells=16,
        pack_capacity_ah=280.0,
        charging=False,
        contactor_mismatch_s=0.0,
        open_settled=False,
        precharging=False,
        precharge_failed=False,
        bus_error_level=0,
        control_stall_s=0.0,
    )


def _run(
    state: FaultState, highs: Sequence[float | None], first_tick: int = 0
) -> tuple[FaultState, list[FaultEvent]]:
    events: list[FaultEvent] = []
    for k, high in enumerate(highs, start=first_tick):
        state, new = evaluate(state, _inputs(high), SMALL, k * TICK)
        events.extend(new)
    return state, events


def _level(state: FaultState, key: str) -> LevelState:
    (found,) = [level for level in state.levels if level.key == key]
    return found


def test_initial_state_has_every_enabled_level_in_table_order() -> None:
    state = initial_state(SMALL)
    assert [level.key for level in state.levels] == ["ov.warning", "ov.fatal", "uv.warning"]
    assert not state.active() and not state.latched() and not state.has_fatal
    assert state.worst_level() is None


def test_events_carry_fault_level_value_and_threshold() -> None:
    state, events = _run(initial_state(SMALL), [3.70, 3.70])
    assert [(e.kind, e.fault_id, e.level) for e in events] == [
        ("set", "ov", FaultLevel.WARNING),
        ("set", "ov", FaultLevel.FATAL),
    ]
    warning, fatal = events
    assert (warning.value, warning.threshold, warning.time_s) == (3.70, 3.55, TICK)
    assert (fatal.value, fatal.threshold) == (3.70, 3.65)
    assert "ov.fatal set" in fatal.message and ">= 3.65" in fatal.message
    assert state.has_fatal and state.worst_level() is FaultLevel.FATAL
    # The warning clears through its hysteresis; the fatal level stays latched.
    state, events = _run(state, [3.40, 3.40], first_tick=2)
    assert [(e.kind, e.fault_id, e.level, e.value) for e in events] == [
        ("clear", "ov", FaultLevel.WARNING, 3.40)
    ]
    assert [level.key for level in state.latched()] == ["ov.fatal"]


def test_below_fault_event_relation() -> None:
    _, events = evaluate(initial_state(SMALL), _inputs(3.3, low=2.79), SMALL, 0.0)
    assert [(e.kind, e.fault_id, e.value, e.threshold) for e in events] == [
        ("set", "uv", 2.79, 2.8)
    ]
    assert "<= 2.8" in events[0].message


def test_reset_is_refused_while_the_cause_is_present_and_accepted_after() -> None:
    state, _ = _run(initial_state(SMALL), [3.70] * 3)
    assert _level(state, "ov.fatal").latched
    refused, events = reset_latched(state, SMALL, 1.0, "test bench")
    assert refused == state
    assert [(e.kind, e.fault_id, e.level) for e in events] == [
        ("reset_refused", "ov", FaultLevel.FATAL)
    ]
    assert "still present" in events[0].message and "test bench" in events[0].message
    assert events[0].threshold == 3.65
    # Cause gone: two good samples (the debounce) beyond the hysteresis untrip it.
    state, _ = _run(state, [3.30, 3.30], first_tick=3)
    assert _level(state, "ov.fatal").active and not _level(state, "ov.fatal").tripped
    reset, events = reset_latched(state, SMALL, 2.0, "operator")
    assert [(e.kind, e.fault_id) for e in events] == [("reset", "ov")]
    assert "ov.fatal reset by operator" in events[0].message
    fatal = _level(reset, "ov.fatal")
    assert not fatal.active and not fatal.latched
    assert not reset.has_fatal
    # A later over-voltage sets it again, counting a second set.
    again, events = _run(reset, [3.70, 3.70], first_tick=20)
    assert _level(again, "ov.fatal").set_count == 2
    assert ("set", "ov") in [(e.kind, e.fault_id) for e in events]


def test_reset_within_the_hysteresis_is_refused() -> None:
    state, _ = _run(initial_state(SMALL), [3.70] * 3)
    # 3.5 V is back below 3.65 but within the 0.25 V hysteresis: the cause is still present.
    state, _ = _run(state, [3.50] * 10, first_tick=3)
    _, events = reset_latched(state, SMALL, 3.0, "operator")
    assert [e.kind for e in events] == ["reset_refused"]


def test_reset_leaves_non_latched_levels_alone() -> None:
    state, _ = _run(initial_state(SMALL), [3.60, 3.60])  # warning only, not latching
    reset, events = reset_latched(state, SMALL, 1.0, "operator")
    assert events == [] and reset == state


def test_restore_latched_relatches_known_keys_and_ignores_unknown() -> None:
    saved: dict[str, dict[str, float | int | None]] = {
        "ov.fatal": {"set_count": 3, "value_at_set": 3.71},
        "uv.warning": {},
        "gone.fatal": {"set_count": 1},  # a fault no longer in the table
        "off.fatal": {"set_count": 1},  # a disabled fault
    }
    state = restore_latched(initial_state(SMALL), saved, 5.0, SMALL)
    assert [level.key for level in state.levels] == ["ov.warning", "ov.fatal", "uv.warning"]
    assert [level.key for level in state.latched()] == ["ov.fatal", "uv.warning"]
    fatal = _level(state, "ov.fatal")
    assert (fatal.active, fatal.set_count, fatal.value_at_set) == (True, 3, 3.71)
    assert (fatal.first_set_at, fatal.last_set_at) == (5.0, 5.0)
    assert _level(state, "uv.warning").set_count == 1
    assert state.has_fatal
    # A healthy pack does not clear a restored latch by itself.
    state, events = _run(state, [3.3] * 20, first_tick=41)
    assert events == [] and _level(state, "ov.fatal").latched


def test_restored_latch_needs_the_cause_seen_gone_before_a_reset() -> None:
    """A restored latch is tripped: a reset needs the debounce of good samples first."""
    state = restore_latched(initial_state(SMALL), {"ov.fatal": {"set_count": 1}}, 0.0, SMALL)
    # No data yet (cell voltages unknown): nothing shows the over-voltage is gone.
    state, _ = _run(state, [None, None])
    after, events = reset_latched(state, SMALL, 0.3, "operator")
    assert [e.kind for e in events] == ["reset_refused"]
    assert after.has_fatal


# -- every level of every shipped fault ------------------------------------------------------

# Table files of each configuration; fault ids are read from the raw TOML at collection time,
# the specs themselves come from load_config (defaults merged, validated).
CHEMISTRIES = {
    "LFP": ("diagnostics.toml", "lfp.toml"),
    "NMC": ("diagnostics.toml", "nmc.toml"),
}
NMC_OVERRIDES = (
    "pack.chemistry='NMC'",
    "pack.cell_file='cells/nmc_100ah.toml'",
    "protection.defaults=['protection/diagnostics.toml', 'protection/nmc.toml']",
    "limits.defaults=['limits/nmc.toml']",
)
UNIT_STEP = {"": 1.0}  # counts and flags move in whole units


@cache
def shipped_table(chemistry: str) -> dict[str, FaultSpec]:
    overrides = NMC_OVERRIDES if chemistry == "NMC" else ()
    return load_config(SIM_CONFIG, overrides).protection.faults


def _shipped_levels() -> list[object]:
    params: list[object] = []
    for chemistry, files in CHEMISTRIES.items():
        for file in files:
            raw = tomllib.loads((TABLES / file).read_text(encoding="utf-8"))
            for fault_id, entry in raw.items():
                for level in ("info", "warning", "fatal"):
                    if level not in entry:
                        continue
                    params.append(
                        pytest.param(
                            chemistry,
                            fault_id,
                            FaultLevel[level.upper()],
                            id=f"{chemistry}-{fault_id}.{level}",
                        )
                    )
    return params


SHIPPED_LEVELS = _shipped_levels()


def _shipped(chemistry: str, fault_id: str, level: FaultLevel) -> tuple[FaultSpec, LevelSpec]:
    spec = shipped_table(chemistry)[fault_id]
    assert spec.enabled, f"{fault_id} is shipped disabled"
    return spec, dict(spec.levels())[level]


def _step_of(spec: FaultSpec) -> float:
    return UNIT_STEP.get(QUANTITY_BY_NAME[spec.quantity].unit, STEP)


@pytest.mark.parametrize(("chemistry", "fault_id", "level"), SHIPPED_LEVELS)
def test_shipped_level_never_sets_just_inside(
    chemistry: str, fault_id: str, level: FaultLevel
) -> None:
    spec, level_spec = _shipped(chemistry, fault_id, level)
    direction = QUANTITY_BY_NAME[spec.quantity].direction
    value = beyond(direction, level_spec.threshold, -_step_of(spec))
    ticks = 3 * level_spec.debounce_samples + ticks_for(level_spec.set_delay_s) + 50
    history = drive(level_spec, direction, [value] * ticks, latches=spec.latches(level, level_spec))
    assert changes(history) == []
    assert history[-1][0].counter == 0


def _sets_after_debounce_and_delay(
    chemistry: str, fault_id: str, level: FaultLevel, offset_steps: float
) -> None:
    spec, level_spec = _shipped(chemistry, fault_id, level)
    direction = QUANTITY_BY_NAME[spec.quantity].direction
    value = beyond(direction, level_spec.threshold, offset_steps * _step_of(spec))
    latches = spec.latches(level, level_spec)
    samples = level_spec.debounce_samples
    expected = samples - 1 + ticks_for(level_spec.set_delay_s)
    history = drive(level_spec, direction, [value] * (expected + 3 * samples + 20), latches=latches)
    assert changes(history) == [(expected, "set")]
    assert all(state.tripped for state, _ in history[samples - 1 :])
    state = history[expected][0]
    assert state.active and state.latched is latches
    assert state.last_set_at == expected * TICK
    assert state.value_at_set == value
    if level is FaultLevel.FATAL:
        assert state.latched


@pytest.mark.parametrize(("chemistry", "fault_id", "level"), SHIPPED_LEVELS)
def test_shipped_level_sets_after_debounce_and_delay(
    chemistry: str, fault_id: str, level: FaultLevel
) -> None:
    _sets_after_debounce_and_delay(chemistry, fault_id, level, offset_steps=1.0)


@pytest.mark.parametrize(("chemistry", "fault_id", "level"), SHIPPED_LEVELS)
def test_shipped_level_held_at_threshold_sets_and_stays(
    chemistry: str, fault_id: str, level: FaultLevel
) -> None:
    _sets_after_debounce_and_delay(chemistry, fault_id, level, offset_steps=0.0)


@pytest.mark.parametrize(
    ("fault_id", "held"),
    [
        pytest.param("module_count_mismatch", 1.0, id="one-unexpected-module"),
        pytest.param("module_reported_error", 1.0, id="one-module-error"),
        pytest.param("can_bus_error", 2.0, id="bus-off"),
    ],
)
def test_shipped_fatal_with_delay_sets_for_a_persistent_condition(
    fault_id: str, held: float
) -> None:
    """A condition present for a minute must set its fatal level (it never does today)."""
    spec, level_spec = _shipped("LFP", fault_id, FaultLevel.FATAL)
    direction = QUANTITY_BY_NAME[spec.quantity].direction
    history = drive(level_spec, direction, [held] * 600, latches=True, tick_s=0.1)
    assert [change for _, change in changes(history)] == ["set"]


@pytest.mark.parametrize(("chemistry", "fault_id", "level"), SHIPPED_LEVELS)
def test_shipped_level_clears_through_hysteresis_debounce_and_delay(
    chemistry: str, fault_id: str, level: FaultLevel
) -> None:
    spec, level_spec = _shipped(chemistry, fault_id, level)
    direction = QUANTITY_BY_NAME[spec.quantity].direction
    latches = spec.latches(level, level_spec)
    samples = level_spec.debounce_samples
    threshold, hysteresis = level_spec.threshold, level_spec.hysteresis
    set_at = samples - 1 + ticks_for(level_spec.set_delay_s)
    history = drive(
        level_spec, direction, [beyond(direction, threshold, _step_of(spec))] * (set_at + 1),
        latches=latches,
    )  # fmt: skip
    state = history[-1][0]
    assert state.active
    # Back inside the threshold but within the hysteresis: still bad, still set.
    first = set_at + 1
    if hysteresis > 0:
        held = beyond(direction, threshold, -hysteresis / 2)
        history = drive(
            level_spec, direction, [held] * (3 * samples + 20),
            latches=latches, state=state, first_tick=first,
        )  # fmt: skip
        assert changes(history) == []
        state = history[-1][0]
        assert state.active and state.tripped
        first += 3 * samples + 20
    # Beyond the hysteresis: untripped after as many good samples as it took bad ones.
    good = beyond(direction, threshold, -(hysteresis + _step_of(spec)))
    count = samples + ticks_for(level_spec.clear_delay_s) + 20
    history = drive(
        level_spec, direction, [good] * count, latches=latches, state=state, first_tick=first
    )
    untripped = samples - 1
    assert history[untripped][0].tripped is False
    assert all(s.tripped for s, _ in history[:untripped])
    if latches:
        assert changes(history) == []
        assert history[-1][0].active and history[-1][0].latched
    else:
        assert changes(history) == [(untripped + ticks_for(level_spec.clear_delay_s), "clear")]
        assert not history[-1][0].active


@pytest.mark.parametrize("chemistry", sorted(CHEMISTRIES))
def test_every_shipped_level_is_checked(chemistry: str) -> None:
    """The parameter list above covers exactly the levels load_config produced."""
    loaded = {
        (fault_id, level)
        for fault_id, spec in shipped_table(chemistry).items()
        for level, _ in spec.levels()
    }
    listed = {(p.values[1], p.values[2]) for p in SHIPPED_LEVELS if p.values[0] == chemistry}  # type: ignore[attr-defined]
    assert loaded == listed


@pytest.mark.parametrize(
    ("fault_id", "level", "held"),
    [
        pytest.param("current_sensor_error", FaultLevel.FATAL, 1.0, id="sensor-error-bit"),
        pytest.param("can_bus_error", FaultLevel.FATAL, 2.0, id="bus-off"),
        pytest.param("module_reported_error", FaultLevel.FATAL, 1.0, id="module-error"),
        pytest.param("implausible_reading", FaultLevel.FATAL, 10.0, id="implausible-10-ticks"),
    ],
)
def test_shipped_flag_held_present_refuses_reset(
    fault_id: str, level: FaultLevel, held: float
) -> None:
    """A condition that stays present (an error bit stays 1) must keep refusing a reset."""
    table = shipped_table("LFP")
    spec, level_spec = _shipped("LFP", fault_id, level)
    direction = QUANTITY_BY_NAME[spec.quantity].direction
    history = drive(
        level_spec, direction, [held] * 200, latches=True, state=LevelState(fault_id, level)
    )
    last = history[-1][0]
    assert last.active and last.latched
    others = tuple(LevelState(fault_id, other) for other, _ in spec.levels() if other is not level)
    _, events = reset_latched(FaultState((*others, last)), table, 200 * TICK, "operator")
    assert [e.kind for e in events] == ["reset_refused"]
