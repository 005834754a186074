"""Protection end to end: simulated faults through the real pipeline, on simulated time.

Each test runs a ClosedLoop (bmsd.sim.closed_loop): the simulated pack's CAN frames go through
the real decoder, store, snapshot builder and Controller, and the Controller's contactor
commands go back to the simulated switch box. A fault injected in the pack (``sim.faults``)
must end in the right mode with the right fault, limits at zero and no current once the
contactors are open, and the fault must be set no later than its debounce and set delay plus
one tick after the first over-limit sample. Physics runs at 50 ms so every test stays short.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bmsd.config import Config, load_config
from bmsd.control.controller import Command
from bmsd.model.bms import OPEN, Answer, BmsMode, Request
from bmsd.model.faults import FaultLevel
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.state import PackState
from bmsd.protection.persistence import LatchedFaultStore
from bmsd.protection.quantities import QUANTITY_BY_NAME
from bmsd.protection.table import LevelSpec
from bmsd.sim.closed_loop import ClosedLoop

ROOT = Path(__file__).resolve().parents[2]
SIM_CONFIG = ROOT / "etc" / "sim.toml"
QUICK = ("sim.physics_step_s=0.05", "sim.load.kind='constant'", "sim.load.current_a=0.0")
EPS = 1e-6


def closed_loop(*overrides: str) -> ClosedLoop:
    return ClosedLoop(load_config(SIM_CONFIG, QUICK + overrides))


def level_spec(config: Config, key: str) -> LevelSpec:
    fault_id, level = key.split(".")
    return dict(config.protection.faults[fault_id].levels())[FaultLevel[level.upper()]]


def set_time(loop: ClosedLoop, key: str) -> float:
    times = [
        e.time_s
        for e in loop.trace.fault_events
        if e.kind == "set" and f"{e.fault_id}.{e.level.label}" == key
    ]
    assert times, f"{key} was never set; events: {[e.message for e in loop.trace.fault_events]}"
    return times[0]


def latched_keys(state: PackState) -> set[str]:
    return {level.key for level in state.faults.latched()}


def left_fault_for_standby(loop: ClosedLoop) -> bool:
    """The last tick went FAULT -> STANDBY (and, auto-closing, maybe on to PRECHARGE)."""
    state = loop.state
    assert state is not None
    modes = [
        e.fields["mode"] for e in loop.trace.events if e.kind == "mode" and e.time_s == state.time_s
    ]
    return modes[:1] == ["standby"] and state.mode in (BmsMode.STANDBY, BmsMode.PRECHARGE)


def assert_stopped_safely(loop: ClosedLoop) -> None:
    """FAULT, everything commanded and confirmed open, no current, limits 0."""
    state = loop.state
    assert state is not None
    assert state.mode is BmsMode.FAULT, state.mode_reason
    assert state.contactor_command == OPEN
    feedback = state.snapshot.contactors
    assert feedback is not None
    assert not (feedback.minus_closed or feedback.plus_closed or feedback.precharge_closed)
    assert not (loop.pack.minus_closed or loop.pack.plus_closed or loop.pack.precharge_closed)
    assert loop.pack.true_current_a == 0.0
    assert state.limits.charge_current_a == 0.0
    assert state.limits.discharge_current_a == 0.0


def assert_within_delay(
    loop: ClosedLoop, key: str, value: Callable[[PackSnapshot], float | None]
) -> float:
    """The set came at most debounce×tick + set_delay + one tick after the first bad sample.

    Returns the time from the first over-limit sample to the set.
    """
    spec = level_spec(loop.config, key)
    direction = QUANTITY_BY_NAME[loop.config.protection.faults[key.split(".")[0]].quantity]
    tick = loop.config.control.tick_s

    def beyond(state: PackState) -> bool:
        found = value(state.snapshot)
        if found is None:
            return False
        if direction.direction == "above":
            return found >= spec.threshold
        return found <= spec.threshold

    first_bad = next(state.time_s for state in loop.trace.states if beyond(state))
    took = set_time(loop, key) - first_bad
    assert took <= spec.debounce_samples * tick + spec.set_delay_s + tick + EPS
    assert took >= (spec.debounce_samples - 1) * tick + spec.set_delay_s - EPS
    return took


def cell_max(snapshot: PackSnapshot) -> float | None:
    return None if snapshot.cell_voltage is None else snapshot.cell_voltage.max_value


def cell_min(snapshot: PackSnapshot) -> float | None:
    return None if snapshot.cell_voltage is None else snapshot.cell_voltage.min_value


def module_silence(snapshot: PackSnapshot) -> float:
    return float(snapshot.module_age_s.max())


def frozen(snapshot: PackSnapshot) -> float:
    return snapshot.cell_voltage_frozen_swing_v


# -- each injection trips its fault ----------------------------------------------------------

# (id, overrides, fault key, value seen in the snapshot, simulated seconds)
FATAL_CASES = [
    pytest.param(
        (
            "sim.initial_soc=1.0",
            "sim.soc_spread_pct=0.0",
            "sim.faults=[{kind='cell_drift', start_s=2.0, module=1, cell=3, value=-6000.0}]",
        ),
        "cell_voltage_high.fatal",
        cell_max,
        9.0,
        id="over-voltage-cell-drift",
    ),
    pytest.param(
        (
            "sim.initial_soc=0.02",
            "sim.soc_spread_pct=0.0",
            "sim.load.current_a=-50.0",
            "sim.faults=[{kind='cell_drift', start_s=2.0, module=2, cell=5, value=6000.0}]",
        ),
        "cell_voltage_low.fatal",
        cell_min,
        15.0,
        id="under-voltage-discharge",
    ),
    pytest.param(
        ("sim.load.current_a=20.0", "sim.faults=[{kind='silent_module', start_s=3.0, module=1}]"),
        "module_comm_loss.fatal",
        module_silence,
        8.0,
        id="silent-module",
    ),
    pytest.param(
        (
            # A frozen reading shows when the pack moves: a fast day cycle swings the current.
            "sim.load.kind='day_cycle'",
            "sim.load.day_length_s=60.0",
            "sim.load.start_hour=11.0",
            "protection.faults.frozen_cell_voltage.warning.threshold=0.005",
            "protection.faults.frozen_cell_voltage.fatal.threshold=0.010",
            "sim.faults=[{kind='stuck_sensor', start_s=3.0, module=1, cell=2}]",
        ),
        "frozen_cell_voltage.fatal",
        frozen,
        20.0,
        id="stuck-cell-sensor",
    ),
]


@pytest.mark.parametrize(("overrides", "key", "value", "seconds"), FATAL_CASES)
def test_injected_fault_trips_its_fatal_and_stops_safely(
    overrides: tuple[str, ...],
    key: str,
    value: Callable[[PackSnapshot], float | None],
    seconds: float,
) -> None:
    loop = closed_loop(*overrides)
    loop.run(1.5)
    assert loop.state is not None and loop.state.mode is BmsMode.CLOSED
    loop.run(seconds - 1.5)
    assert_within_delay(loop, key, value)
    assert key in latched_keys(loop.state)
    assert_stopped_safely(loop)
    # Nothing closes again by itself: another while later it is still in FAULT.
    loop.run(2.0)
    assert_stopped_safely(loop)


def test_over_voltage_fault_names_the_cell_and_value() -> None:
    loop = closed_loop(
        "sim.initial_soc=1.0",
        "sim.soc_spread_pct=0.0",
        "sim.faults=[{kind='cell_drift', start_s=2.0, module=1, cell=3, value=-6000.0}]",
    )
    loop.run(9.0)
    (event,) = [
        e
        for e in loop.trace.fault_events
        if (e.fault_id, e.level, e.kind) == ("cell_voltage_high", FaultLevel.FATAL, "set")
    ]
    assert event.threshold == 3.65 and event.value is not None and event.value >= 3.65
    at_set = next(s for s in loop.trace.states if s.time_s == event.time_s)
    assert at_set.snapshot.cell_voltage is not None
    location = at_set.snapshot.cell_voltage.max_location
    assert (location.module, location.index) == (1, 3)
    # The warning and info levels of the same limit came first.
    order = [
        e.level
        for e in loop.trace.fault_events
        if e.fault_id == "cell_voltage_high" and e.kind == "set"
    ]
    assert order == [FaultLevel.INFO, FaultLevel.WARNING, FaultLevel.FATAL]


def test_silent_module_under_load_opens_after_the_bounded_wait() -> None:
    """20 A is above the 5 A break rating: the contactors open open_wait_s after the fault."""
    loop = closed_loop(
        "sim.load.current_a=20.0", "sim.faults=[{kind='silent_module', start_s=3.0, module=1}]"
    )
    loop.run(8.0)
    fault_at = set_time(loop, "module_comm_loss.fatal")
    opened_at = next(
        s.time_s for s in loop.trace.states if s.contactor_command == OPEN and s.time_s > 2
    )
    wait = loop.config.protection.contactors.open_wait_s
    tick = loop.config.control.tick_s
    assert wait - EPS <= opened_at - fault_at <= wait + tick + EPS
    during = [s for s in loop.trace.states if fault_at <= s.time_s < opened_at]
    assert {s.mode for s in during} == {BmsMode.OPENING}
    assert all(s.limits.charge_current_a == 0 and s.limits.discharge_current_a == 0 for s in during)


def test_precharge_that_never_reaches_its_share_fails_without_retry() -> None:
    loop = closed_loop("sim.precharge_resistor_ohm=2000.0")  # τ = 4 s against a 3 s timeout
    loop.run(8.0)
    assert "precharge_failed.fatal" in latched_keys(loop.state)
    assert not any(s.contactor_command.plus for s in loop.trace.states)
    started = next(s.time_s for s in loop.trace.states if s.contactor_command.precharge)
    failed = set_time(loop, "precharge_failed.fatal")
    timeout = loop.config.protection.contactors.precharge_timeout_s
    tick = loop.config.control.tick_s
    assert timeout <= failed - started <= timeout + 3 * tick + EPS
    assert_stopped_safely(loop)
    precharges = [
        k
        for k, s in enumerate(loop.trace.states[1:], 1)
        if s.contactor_command.minus and not loop.trace.states[k - 1].contactor_command.minus
    ]
    assert len(precharges) == 1  # no automatic retry


def test_noisy_cell_sensor_raises_the_spread_warning() -> None:
    loop = closed_loop(
        "sim.load.current_a=20.0",
        "sim.faults=[{kind='noisy_sensor', start_s=3.0, module=1, cell=2, value=0.3}]",
    )
    loop.run(15.0)
    spec = level_spec(loop.config, "cell_voltage_spread.warning")
    warning_at = set_time(loop, "cell_voltage_spread.warning")
    assert warning_at >= 3.0 + (spec.debounce_samples - 1) * loop.config.control.tick_s - EPS
    keys = {level.key for level in loop.state.faults.active()}
    assert "cell_voltage_spread.warning" in keys
    # A warning derates; it does not open the contactors.
    assert loop.state.mode is BmsMode.CLOSED


def test_very_noisy_cell_sensor_is_judged_implausible() -> None:
    loop = closed_loop(
        "sim.load.current_a=20.0",
        "sim.faults=[{kind='noisy_sensor', start_s=2.0, module=1, cell=2, value=3.0}]",
    )
    loop.run(10.0)
    active = {level.key for level in loop.state.faults.active()}
    assert active & {"implausible_reading.fatal", "cell_voltage_spread.fatal"}


def test_welded_contactor_is_detected_after_an_open_request() -> None:
    loop = closed_loop(
        "sim.load.current_a=20.0", "sim.faults=[{kind='contactor_stuck_closed', start_s=2.0}]"
    )
    loop.run(3.0)
    assert loop.state.mode is BmsMode.CLOSED
    loop.submit(Command(Request.OPEN, "test"))
    loop.run(0.1)
    assert [(r.request, r.answer) for r in loop.state.replies] == [(Request.OPEN, Answer.ACCEPTED)]
    loop.run(14.0)
    tick = loop.config.control.tick_s
    commanded_open = next(
        s.time_s for s in loop.trace.states if s.time_s > 3.0 and s.contactor_command == OPEN
    )
    # Mismatch: measured from the tick after the command was sent.
    mismatch = level_spec(loop.config, "contactor_feedback_mismatch.fatal")
    took = set_time(loop, "contactor_feedback_mismatch.fatal") - commanded_open
    assert took <= tick + mismatch.threshold + tick + EPS
    # Weld checks from weld_check_delay_s after opening, then their debounce.
    settle = loop.config.protection.contactors.weld_check_delay_s
    for key in ("contactor_welded_current.fatal", "contactor_welded_voltage.fatal"):
        spec = level_spec(loop.config, key)
        took = set_time(loop, key) - commanded_open
        assert settle + (spec.debounce_samples - 1) * tick - EPS <= took
        assert took <= settle + spec.debounce_samples * tick + tick + EPS
    state = loop.state
    assert state.mode is BmsMode.FAULT and state.contactor_command == OPEN
    assert {
        "contactor_feedback_mismatch.fatal",
        "contactor_welded_current.fatal",
        "contactor_welded_voltage.fatal",
    } <= latched_keys(state)
    assert state.limits.charge_current_a == 0.0 and state.limits.discharge_current_a == 0.0
    # The BMS cannot break a welded contactor: current still flows, and it says so.
    assert loop.pack.true_current_a == 20.0


def test_stuck_current_sensor_raises_a_fault() -> None:
    loop = closed_loop(
        "sim.load.kind='day_cycle'",
        "sim.load.day_length_s=60.0",
        "sim.load.start_hour=11.0",
        "sim.faults=[{kind='stuck_current_sensor', start_s=3.0}]",
        "protection.faults.frozen_current.warning.threshold=10.0",
    )
    loop.run(30.0)
    # The true current went from ~90 A charge to 0 and to discharge; the reading never moved.
    assert abs(loop.pack.true_current_a - 89.0) > 20.0
    faults = {e.fault_id for e in loop.trace.fault_events if e.kind == "set"}
    assert any("current" in fault_id and "overcurrent" not in fault_id for fault_id in faults)


def test_current_beyond_the_sensor_range_opens_the_contactors() -> None:
    loop = closed_loop("sim.load.current_a=-2500.0")  # 9 C, beyond the ±2000 A sensor
    loop.run(6.0)
    assert "discharge_overcurrent.fatal" in latched_keys(loop.state)
    assert_stopped_safely(loop)


# -- latched faults across a restart, and resets ---------------------------------------------

SILENT = ("sim.load.current_a=20.0", "sim.faults=[{kind='silent_module', start_s=2.0, module=2}]")


def test_latched_fault_survives_a_restart(tmp_path: Path) -> None:
    first = closed_loop(*SILENT)
    first.run(7.0)
    assert first.state.mode is BmsMode.FAULT
    store = LatchedFaultStore(tmp_path)
    store.load()
    assert store.save_if_changed(first.state.faults)
    before = latched_keys(first.state)
    assert "module_comm_loss.fatal" in before

    # The restarted daemon: a new Controller without the injected fault, latches restored.
    second = closed_loop("sim.load.current_a=20.0")
    latched, problem = LatchedFaultStore(tmp_path).load()
    assert problem == ""
    second.controller.restore_latched(latched, 0.0, damaged=False)
    state = second.run(second.config.control.tick_s)
    assert state.tick == 1
    assert state.mode is BmsMode.FAULT
    assert latched_keys(state) == before
    second.run(3.0)  # healthy data everywhere, but the latch holds
    assert second.state.mode is BmsMode.FAULT and not second.pack.minus_closed
    second.submit(Command(Request.RESET, "operator"))
    state = second.run(second.config.control.tick_s)
    assert [(r.request, r.answer) for r in state.replies] == [(Request.RESET, Answer.ACCEPTED)]
    assert left_fault_for_standby(second)
    resets = [e for e in state.fault_events if e.kind == "reset"]
    assert {f"{e.fault_id}.{e.level.label}" for e in resets} == before
    assert all("operator" in e.message for e in resets)
    second.run(2.0)
    assert second.state.mode is BmsMode.CLOSED


def test_reset_is_refused_while_the_cause_is_present_and_accepted_after() -> None:
    loop = closed_loop(*SILENT)
    loop.run(7.0)
    assert loop.state.mode is BmsMode.FAULT
    loop.submit(Command(Request.RESET, "operator"))
    state = loop.run(0.1)
    assert [(r.request, r.answer) for r in state.replies] == [(Request.RESET, Answer.ILLEGAL)]
    assert "cause is still present" in state.replies[0].reason
    refused = [e for e in state.fault_events if e.kind == "reset_refused"]
    assert [f"{e.fault_id}.{e.level.label}" for e in refused] == ["module_comm_loss.fatal"]
    assert state.mode is BmsMode.FAULT and "module_comm_loss.fatal" in latched_keys(state)
    # The module talks again (a repaired harness): the latch still holds until a reset.
    loop.pack.silent_modules.clear()
    loop.run(1.0)
    assert loop.state.mode is BmsMode.FAULT
    loop.submit(Command(Request.RESET, "operator"))
    state = loop.run(0.1)
    assert [(r.request, r.answer) for r in state.replies] == [(Request.RESET, Answer.ACCEPTED)]
    assert left_fault_for_standby(loop) and not state.faults.latched()
    loop.run(2.0)
    assert loop.state.mode is BmsMode.CLOSED


def test_close_is_illegal_in_fault() -> None:
    loop = closed_loop(*SILENT)
    loop.run(7.0)
    loop.submit(Command(Request.CLOSE, "operator"))
    state = loop.run(0.1)
    assert [(r.request, r.answer) for r in state.replies] == [(Request.CLOSE, Answer.ILLEGAL)]
    assert state.mode is BmsMode.FAULT and state.contactor_command == OPEN


def test_damaged_latch_file_starts_in_fault() -> None:
    loop = closed_loop()
    loop.controller.restore_latched({}, 0.0, damaged=True)
    state = loop.run(loop.config.control.tick_s)
    assert state.mode is BmsMode.FAULT
    assert latched_keys(state) == {"latched_faults_lost.fatal"}
    loop.run(2.0)
    assert loop.state.mode is BmsMode.FAULT
    loop.submit(Command(Request.RESET, "operator"))
    loop.run(0.1)
    assert left_fault_for_standby(loop)


def test_reset_on_the_first_tick_after_a_restart_is_refused() -> None:
    """Requests are answered before the tick's evaluation: nothing has shown the cause gone."""
    loop = closed_loop()
    loop.controller.restore_latched(
        {"cell_voltage_high.fatal": {"set_count": 1}}, 0.0, damaged=False
    )
    loop.submit(Command(Request.RESET, "operator"))
    state = loop.run(loop.config.control.tick_s)
    assert [(r.request, r.answer) for r in state.replies] == [(Request.RESET, Answer.ILLEGAL)]
    assert state.mode is BmsMode.FAULT
