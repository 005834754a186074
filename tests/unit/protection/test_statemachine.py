"""The BMS and contactor state machine (bmsd.protection.statemachine) as transition tables.

``step_machine`` and ``answer_request`` are pure: a MachineState, MachineInputs with the time,
the ContactorConfig. Each table row is one (mode, step, inputs) → (mode, step, command). A small
plant stub (feedback follows the command one tick later, the bus charges like an RC) drives
whole sequences: closing, precharge failure, opening under load.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from bmsd.config import ContactorConfig
from bmsd.model.bms import CONTACTOR_REQUESTS, OPEN, Answer, BmsMode, ContactorCommand, Request
from bmsd.model.readings import ContactorFeedback
from bmsd.protection.statemachine import (
    MachineInputs,
    MachineState,
    answer_request,
    initial_machine,
    step_machine,
)

CONFIG = ContactorConfig(
    auto_close=True,
    feedback_timeout_s=0.5,
    precharge_voltage_share=0.95,
    precharge_timeout_s=3.0,
    break_current_a=5.0,
    open_wait_s=2.0,
    weld_check_delay_s=10.0,
    command_timeout_s=0.5,
)
MANUAL = dataclasses.replace(CONFIG, auto_close=False)
TICK = 0.125
PACK_V = 200.0

MINUS = ContactorCommand(minus=True)
PRECHARGING = ContactorCommand(minus=True, precharge=True)
BOTH_AND_PRECHARGE = ContactorCommand(minus=True, plus=True, precharge=True)
CLOSED = ContactorCommand(minus=True, plus=True)


def feedback(command: ContactorCommand, at: float = 0.0) -> ContactorFeedback:
    return ContactorFeedback(command.minus, command.plus, command.precharge, at)


def machine(
    mode: BmsMode,
    step: str = "",
    command: ContactorCommand = OPEN,
    *,
    since: float = 0.0,
    **fields: Any,
) -> MachineState:
    return MachineState(mode, step, since, since, command, "test", **fields)


def given(
    now: float = 1.0,
    *,
    fatal: bool = False,
    data_ok: bool = True,
    fb: ContactorCommand | None = OPEN,
    pack: float | None = PACK_V,
    bus: float | None = 0.0,
    current: float | None = 0.0,
) -> MachineInputs:
    return MachineInputs(
        now=now,
        has_fatal=fatal,
        data_ok=data_ok,
        feedback=None if fb is None else feedback(fb, now),
        pack_voltage_v=pack,
        bus_voltage_v=bus,
        current_a=current,
    )


# -- one tick: (state, inputs, config) -> (mode, step, command) -------------------------------

M, R, A = BmsMode, Request, Answer

ROWS = [
    # INIT
    ("init-healthy", machine(M.INIT), given(), CONFIG, M.STANDBY, "", OPEN),
    ("init-no-data", machine(M.INIT), given(data_ok=False), CONFIG, M.INIT, "", OPEN),
    ("init-restored-fatal", machine(M.INIT), given(fatal=True), CONFIG, M.FAULT, "", OPEN),
    (
        "init-restored-fatal-no-data",
        machine(M.INIT),
        given(fatal=True, data_ok=False),
        CONFIG,
        M.FAULT,
        "",
        OPEN,
    ),
    # STANDBY
    ("standby-auto-close", machine(M.STANDBY), given(), CONFIG, M.PRECHARGE, "close_minus", MINUS),
    ("standby-no-data", machine(M.STANDBY), given(data_ok=False), CONFIG, M.STANDBY, "", OPEN),
    ("standby-manual", machine(M.STANDBY), given(), MANUAL, M.STANDBY, "", OPEN),
    (
        "standby-manual-close-pending",
        machine(M.STANDBY, close_pending=True),
        given(),
        MANUAL,
        M.PRECHARGE,
        "close_minus",
        MINUS,
    ),
    (
        "standby-close-pending-no-data",
        machine(M.STANDBY, close_pending=True),
        given(data_ok=False),
        MANUAL,
        M.STANDBY,
        "",
        OPEN,
    ),
    ("standby-stay-open", machine(M.STANDBY, stay_open=True), given(), CONFIG, M.STANDBY, "", OPEN),
    ("standby-fatal", machine(M.STANDBY), given(fatal=True), CONFIG, M.FAULT, "", OPEN),
    # PRECHARGE: close_minus waits for its feedback
    (
        "minus-unconfirmed",
        machine(M.PRECHARGE, "close_minus", MINUS),
        given(0.3, fb=OPEN),
        CONFIG,
        M.PRECHARGE,
        "close_minus",
        MINUS,
    ),
    (
        "minus-no-feedback",
        machine(M.PRECHARGE, "close_minus", MINUS),
        given(0.3, fb=None),
        CONFIG,
        M.PRECHARGE,
        "close_minus",
        MINUS,
    ),
    (
        "minus-confirmed",
        machine(M.PRECHARGE, "close_minus", MINUS),
        given(fb=MINUS),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    # precharge: judged by measured bus / pack voltage
    (
        "precharge-bus-low",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=PRECHARGING, bus=189.9),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    (
        "precharge-bus-at-share",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=PRECHARGING, bus=190.0),
        CONFIG,
        M.PRECHARGE,
        "close_plus",
        BOTH_AND_PRECHARGE,
    ),
    (
        "precharge-bus-full",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=PRECHARGING, bus=200.0),
        CONFIG,
        M.PRECHARGE,
        "close_plus",
        BOTH_AND_PRECHARGE,
    ),
    (
        "precharge-bus-ok-relay-unconfirmed",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=MINUS, bus=200.0),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    (
        "precharge-pack-voltage-unknown",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=PRECHARGING, pack=None, bus=200.0),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    (
        "precharge-bus-voltage-unknown",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=PRECHARGING, bus=None),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    (
        "precharge-pack-voltage-zero",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fb=PRECHARGING, pack=0.0, bus=0.0),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    (
        "precharge-just-before-timeout",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(3.0 - TICK, fb=PRECHARGING, bus=100.0),
        CONFIG,
        M.PRECHARGE,
        "precharge",
        PRECHARGING,
    ),
    (
        "precharge-timeout",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(3.0, fb=PRECHARGING, bus=100.0),
        CONFIG,
        M.OPENING,
        "wait_current",
        PRECHARGING,
    ),
    (
        "precharge-fatal-opens-at-once",
        machine(M.PRECHARGE, "precharge", PRECHARGING),
        given(fatal=True, fb=PRECHARGING, current=-30.0),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    # close_plus and release_precharge wait for their feedback
    (
        "plus-unconfirmed",
        machine(M.PRECHARGE, "close_plus", BOTH_AND_PRECHARGE),
        given(0.3, fb=PRECHARGING, bus=200.0),
        CONFIG,
        M.PRECHARGE,
        "close_plus",
        BOTH_AND_PRECHARGE,
    ),
    (
        "plus-confirmed",
        machine(M.PRECHARGE, "close_plus", BOTH_AND_PRECHARGE),
        given(fb=BOTH_AND_PRECHARGE, bus=200.0),
        CONFIG,
        M.PRECHARGE,
        "release_precharge",
        CLOSED,
    ),
    (
        "release-unconfirmed",
        machine(M.PRECHARGE, "release_precharge", CLOSED),
        given(0.3, fb=BOTH_AND_PRECHARGE),
        CONFIG,
        M.PRECHARGE,
        "release_precharge",
        CLOSED,
    ),
    # ... but not forever: an unconfirmed step opens after feedback_timeout_s (0.5 s)
    (
        "minus-confirm-timeout",
        machine(M.PRECHARGE, "close_minus", MINUS),
        given(0.5, fb=OPEN),
        CONFIG,
        M.OPENING,
        "wait_current",
        MINUS,
    ),
    (
        "plus-confirm-timeout",
        machine(M.PRECHARGE, "close_plus", BOTH_AND_PRECHARGE),
        given(0.5, fb=PRECHARGING, bus=200.0),
        CONFIG,
        M.OPENING,
        "wait_current",
        BOTH_AND_PRECHARGE,
    ),
    (
        "release-confirm-timeout",
        machine(M.PRECHARGE, "release_precharge", CLOSED),
        given(0.5, fb=BOTH_AND_PRECHARGE),
        CONFIG,
        M.OPENING,
        "wait_current",
        CLOSED,
    ),
    (
        "release-confirmed",
        machine(M.PRECHARGE, "release_precharge", CLOSED),
        given(fb=CLOSED),
        CONFIG,
        M.CLOSED,
        "",
        CLOSED,
    ),
    # CLOSED
    (
        "closed-stays",
        machine(M.CLOSED, command=CLOSED),
        given(fb=CLOSED, current=100.0),
        CONFIG,
        M.CLOSED,
        "",
        CLOSED,
    ),
    (
        "closed-no-data-stays",
        machine(M.CLOSED, command=CLOSED),
        given(data_ok=False, fb=CLOSED),
        CONFIG,
        M.CLOSED,
        "",
        CLOSED,
    ),
    (
        "closed-fatal-low-current-opens-now",
        machine(M.CLOSED, command=CLOSED),
        given(fatal=True, fb=CLOSED, current=4.0),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    (
        "closed-fatal-at-break-current-opens-now",
        machine(M.CLOSED, command=CLOSED),
        given(fatal=True, fb=CLOSED, current=-5.0),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    (
        "closed-fatal-under-load-waits",
        machine(M.CLOSED, command=CLOSED),
        given(fatal=True, fb=CLOSED, current=-150.0),
        CONFIG,
        M.OPENING,
        "wait_current",
        CLOSED,
    ),
    (
        "closed-fatal-current-unknown-waits",
        machine(M.CLOSED, command=CLOSED),
        given(fatal=True, fb=CLOSED, current=None),
        CONFIG,
        M.OPENING,
        "wait_current",
        CLOSED,
    ),
    # OPENING: wait_current, bounded by open_wait_s
    (
        "wait-current-high",
        machine(M.OPENING, "wait_current", CLOSED),
        given(2.0 - TICK, fb=CLOSED, current=150.0),
        CONFIG,
        M.OPENING,
        "wait_current",
        CLOSED,
    ),
    (
        "wait-current-unknown",
        machine(M.OPENING, "wait_current", CLOSED),
        given(2.0 - TICK, fb=CLOSED, current=None),
        CONFIG,
        M.OPENING,
        "wait_current",
        CLOSED,
    ),
    (
        "wait-current-fell",
        machine(M.OPENING, "wait_current", CLOSED),
        given(0.5, fb=CLOSED, current=-2.0),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    (
        "wait-current-bound-reached",
        machine(M.OPENING, "wait_current", CLOSED),
        given(2.0, fb=CLOSED, current=150.0),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    (
        "wait-current-bound-reached-unknown",
        machine(M.OPENING, "wait_current", CLOSED),
        given(2.0, fb=CLOSED, current=None),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    (
        "wait-current-plus-not-closed",
        machine(M.OPENING, "wait_current", PRECHARGING),
        given(fb=PRECHARGING, current=None),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    # OPENING: confirm_open
    (
        "confirm-open-unconfirmed",
        machine(M.OPENING, "confirm_open", OPEN),
        given(0.5 - TICK, fb=CLOSED),
        CONFIG,
        M.OPENING,
        "confirm_open",
        OPEN,
    ),
    (
        "confirm-open-done",
        machine(M.OPENING, "confirm_open", OPEN),
        given(fb=OPEN),
        CONFIG,
        M.STANDBY,
        "",
        OPEN,
    ),
    (
        "confirm-open-done-fatal",
        machine(M.OPENING, "confirm_open", OPEN),
        given(fatal=True, fb=OPEN),
        CONFIG,
        M.FAULT,
        "",
        OPEN,
    ),
    (
        "confirm-open-timeout",
        machine(M.OPENING, "confirm_open", OPEN),
        given(0.5, fb=CLOSED),
        CONFIG,
        M.STANDBY,
        "",
        OPEN,
    ),
    (
        "confirm-open-timeout-fatal",
        machine(M.OPENING, "confirm_open", OPEN),
        given(0.5, fatal=True, fb=CLOSED),
        CONFIG,
        M.FAULT,
        "",
        OPEN,
    ),
    # FAULT: only a reset leaves it
    ("fault-stays-healthy", machine(M.FAULT), given(), CONFIG, M.FAULT, "", OPEN),
    ("fault-stays-fatal", machine(M.FAULT), given(fatal=True), CONFIG, M.FAULT, "", OPEN),
    (
        "fault-reopens-anything-closed",
        machine(M.FAULT, command=CLOSED),
        given(fb=CLOSED),
        CONFIG,
        M.FAULT,
        "",
        OPEN,
    ),
]


@pytest.mark.parametrize(
    ("state", "inputs", "config", "mode", "step", "command"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_transition(
    state: MachineState,
    inputs: MachineInputs,
    config: ContactorConfig,
    mode: BmsMode,
    step: str,
    command: ContactorCommand,
) -> None:
    after = step_machine(state, inputs, config)
    assert (after.mode, after.step, after.command) == (mode, step, command)
    if after.mode is not state.mode:
        assert after.mode_since == inputs.now
    if after.step != state.step:
        assert after.step_since == inputs.now
    if after.command.all_open and not state.command.all_open:
        assert after.opened_at == inputs.now


def test_every_mode_has_a_row() -> None:
    assert {row[1].mode for row in ROWS} == set(BmsMode)


def test_initial_machine_is_init_and_open() -> None:
    state = initial_machine(12.5)
    assert (state.mode, state.command, state.opened_at) == (BmsMode.INIT, OPEN, 12.5)
    assert not state.close_pending and not state.stay_open and not state.precharge_failed


def test_precharge_timeout_marks_failure_and_no_auto_retry() -> None:
    state = step_machine(
        machine(BmsMode.PRECHARGE, "precharge", PRECHARGING),
        given(3.0, fb=PRECHARGING, bus=100.0),
        CONFIG,
    )
    assert state.precharge_failed and state.stay_open
    assert state.reason == "precharge failed"
    # Opens (plus was never closed: no wait), confirms, and stays in STANDBY for good.
    state = step_machine(state, given(3.0 + TICK, fb=PRECHARGING), CONFIG)
    assert (state.mode, state.step, state.command) == (BmsMode.OPENING, "confirm_open", OPEN)
    state = step_machine(state, given(3.0 + 2 * TICK, fb=OPEN), CONFIG)
    assert state.mode is BmsMode.STANDBY
    for k in range(3, 200):
        state = step_machine(state, given(3.0 + k * TICK, fb=OPEN, bus=0.0), CONFIG)
        assert state.mode is BmsMode.STANDBY and state.command == OPEN
    # An explicit close request tries again.
    state, reply = answer_request(state, Request.CLOSE, given(30.0), reset_cleared=False)
    assert reply.answer is Answer.ACCEPTED
    state = step_machine(state, given(30.0), CONFIG)
    assert (state.mode, state.step) == (BmsMode.PRECHARGE, "close_minus")
    assert not state.precharge_failed


def test_precharge_failure_flag_is_cleared_on_fault() -> None:
    failed = machine(BmsMode.OPENING, "confirm_open", OPEN, precharge_failed=True, stay_open=True)
    state = step_machine(failed, given(fatal=True, fb=OPEN), CONFIG)
    assert state.mode is BmsMode.FAULT and not state.precharge_failed


# -- whole sequences against a plant stub ----------------------------------------------------


class Plant:
    """Contactors follow the command one tick later; the bus charges through the precharge
    resistor (time constant ``tau_s``) and follows the pack once plus is closed."""

    def __init__(self, tau_s: float = 0.2, current_a: float = 0.0) -> None:
        self.tau_s = tau_s
        self.current_a: float | None = current_a
        self.closed = OPEN
        self.bus_v = 0.0

    def inputs(self, now: float, *, fatal: bool = False) -> MachineInputs:
        return given(now, fatal=fatal, fb=self.closed, bus=self.bus_v, current=self.current_a)

    def obey(self, command: ContactorCommand) -> None:
        self.closed = command
        if command.minus and command.plus:
            self.bus_v = PACK_V
        elif command.minus and command.precharge:
            self.bus_v += (PACK_V - self.bus_v) * (1 - math.exp(-TICK / self.tau_s))
        else:
            self.bus_v *= 0.9


def run(
    plant: Plant,
    state: MachineState,
    ticks: int,
    *,
    first: int = 1,
    config: ContactorConfig = CONFIG,
    fatal_from: int | None = None,
) -> tuple[MachineState, list[tuple[float, MachineState, float]]]:
    trace: list[tuple[float, MachineState, float]] = []
    for k in range(first, first + ticks):
        now = k * TICK
        fatal = fatal_from is not None and k >= fatal_from
        state = step_machine(state, plant.inputs(now, fatal=fatal), config)
        trace.append((now, state, plant.bus_v))
        plant.obey(state.command)
    return state, trace


def _steps(trace: list[tuple[float, MachineState, float]]) -> list[tuple[BmsMode, str]]:
    seen: list[tuple[BmsMode, str]] = []
    for _, state, _ in trace:
        if not seen or seen[-1] != (state.mode, state.step):
            seen.append((state.mode, state.step))
    return seen


def test_closing_sequence_minus_precharge_plus_release() -> None:
    plant = Plant(tau_s=0.2)
    state, trace = run(plant, initial_machine(0.0), 40)
    assert _steps(trace) == [
        (BmsMode.STANDBY, ""),
        (BmsMode.PRECHARGE, "close_minus"),
        (BmsMode.PRECHARGE, "precharge"),
        (BmsMode.PRECHARGE, "close_plus"),
        (BmsMode.PRECHARGE, "release_precharge"),
        (BmsMode.CLOSED, ""),
    ]
    assert state.mode is BmsMode.CLOSED and state.command == CLOSED
    # Plus is commanded only once the bus has reached its share of the pack voltage.
    for _, step_state, bus_v in trace:
        if step_state.command.plus and step_state.step == "close_plus":
            assert bus_v >= CONFIG.precharge_voltage_share * PACK_V
            break
    # Each step's command changed only after the previous command was confirmed: a step
    # lasts at least one tick (the plant answers one tick later).
    durations = [
        sum(1 for _, s, _ in trace if (s.mode, s.step) == step) for step in _steps(trace)[1:-1]
    ]
    assert min(durations) >= 1


@pytest.mark.parametrize("tau_s", [0.1, 0.3, 0.6])
def test_precharge_ends_on_voltage_not_time(tau_s: float) -> None:
    """A slower bus precharges longer: the plus contactor waits for the voltage."""
    plant = Plant(tau_s=tau_s)
    _, trace = run(plant, initial_machine(0.0), 60)
    ticks = [s for _, s, _ in trace if s.step == "precharge"]
    expected = math.ceil(-tau_s * math.log(1 - CONFIG.precharge_voltage_share) / TICK)
    assert len(ticks) == expected


def test_precharge_never_reaching_the_share_fails_at_the_timeout() -> None:
    plant = Plant(tau_s=100.0)  # a short or a missing link capacitor charge path
    state, trace = run(plant, initial_machine(0.0), 60)
    started = next(now for now, s, _ in trace if s.step == "precharge")
    failed = next(now for now, s, _ in trace if s.precharge_failed)
    assert failed - started == pytest.approx(CONFIG.precharge_timeout_s)
    assert not any(s.command.plus for _, s, _ in trace)
    assert state.mode is BmsMode.STANDBY and state.stay_open


@pytest.mark.parametrize(
    ("current_a", "open_after_ticks"),
    [
        pytest.param(0.0, 0, id="no-current"),
        pytest.param(-5.0, 0, id="at-break-rating"),
        pytest.param(5.01, 16, id="just-above-break-rating"),
        pytest.param(-300.0, 16, id="full-load"),
        pytest.param(None, 16, id="current-unknown"),
    ],
)
def test_fatal_while_closed_opens_within_the_bounded_wait(
    current_a: float | None, open_after_ticks: int
) -> None:
    plant = Plant()
    state, _ = run(plant, initial_machine(0.0), 40)
    assert state.mode is BmsMode.CLOSED
    plant.current_a = current_a
    state, trace = run(plant, state, 40, first=41, fatal_from=41)
    opened = next(k for k, (_, s, _) in enumerate(trace) if s.command == OPEN)
    assert opened == open_after_ticks  # open_wait_s = 2.0 s = 16 ticks of 0.125 s
    assert all(s.mode is BmsMode.OPENING for _, s, _ in trace[:opened])
    assert state.mode is BmsMode.FAULT and state.command == OPEN


def test_current_falling_during_the_wait_opens_at_once() -> None:
    plant = Plant()
    state, _ = run(plant, initial_machine(0.0), 40)
    plant.current_a = -200.0
    state, _ = run(plant, state, 5, first=41, fatal_from=41)
    assert (state.mode, state.step, state.command) == (BmsMode.OPENING, "wait_current", CLOSED)
    plant.current_a = -3.0  # the inverter followed the zero limits
    state, _ = run(plant, state, 1, first=46, fatal_from=41)
    assert state.command == OPEN


# -- requests ----------------------------------------------------------------------------------


def req(
    name: str,
    mode: BmsMode,
    request: Request,
    answer: Answer,
    after: BmsMode,
    *,
    data_ok: bool = True,
    fatal: bool = False,
    cleared: bool = False,
    pending: bool = False,
    stay: bool = True,
) -> Any:
    """One request row; the machine starts with ``stay_open`` set and nothing pending."""
    return pytest.param(
        mode, request, data_ok, fatal, cleared, answer, after, pending, stay, id=name
    )


REQUESTS = [
    req("close-init", M.INIT, R.CLOSE, A.PENDING, M.INIT, pending=True, stay=False),
    req("close-standby", M.STANDBY, R.CLOSE, A.ACCEPTED, M.STANDBY, pending=True, stay=False),
    req(
        "close-standby-no-data",
        M.STANDBY,
        R.CLOSE,
        A.PENDING,
        M.STANDBY,
        data_ok=False,
        pending=True,
        stay=False,
    ),
    req("close-standby-fatal", M.STANDBY, R.CLOSE, A.ILLEGAL, M.STANDBY, fatal=True),
    req("close-precharge", M.PRECHARGE, R.CLOSE, A.ACCEPTED, M.PRECHARGE, stay=False),
    req("close-closed", M.CLOSED, R.CLOSE, A.ACCEPTED, M.CLOSED, stay=False),
    req("close-opening", M.OPENING, R.CLOSE, A.ILLEGAL, M.OPENING),
    req("close-fault", M.FAULT, R.CLOSE, A.ILLEGAL, M.FAULT),
    req("open-init", M.INIT, R.OPEN, A.ACCEPTED, M.INIT),
    req("open-standby", M.STANDBY, R.OPEN, A.ACCEPTED, M.STANDBY),
    req("open-precharge", M.PRECHARGE, R.OPEN, A.ACCEPTED, M.OPENING),
    req("open-closed", M.CLOSED, R.OPEN, A.ACCEPTED, M.OPENING),
    req("open-opening", M.OPENING, R.OPEN, A.ACCEPTED, M.OPENING),
    req("open-fault", M.FAULT, R.OPEN, A.ACCEPTED, M.FAULT, fatal=True),
    req("reset-fault-cleared", M.FAULT, R.RESET, A.ACCEPTED, M.STANDBY, cleared=True, stay=False),
    req("reset-fault-cause-present", M.FAULT, R.RESET, A.ILLEGAL, M.FAULT, fatal=True),
    req("reset-fault-still-fatal", M.FAULT, R.RESET, A.ILLEGAL, M.FAULT, fatal=True, cleared=True),
    req("reset-fault-nothing-cleared", M.FAULT, R.RESET, A.ILLEGAL, M.FAULT),
    req("reset-init-nothing", M.INIT, R.RESET, A.ILLEGAL, M.INIT),
    req("reset-standby-nothing", M.STANDBY, R.RESET, A.ILLEGAL, M.STANDBY),
    req("reset-closed-warning-cleared", M.CLOSED, R.RESET, A.ACCEPTED, M.CLOSED, cleared=True),
    req("reset-closed-nothing", M.CLOSED, R.RESET, A.ILLEGAL, M.CLOSED),
    req("reset-precharge-nothing", M.PRECHARGE, R.RESET, A.ILLEGAL, M.PRECHARGE),
    req("reset-opening-nothing", M.OPENING, R.RESET, A.ILLEGAL, M.OPENING),
]


@pytest.mark.parametrize(
    ("mode", "request_", "data_ok", "fatal", "reset_cleared", "answer", "after", "pending", "stay"),
    REQUESTS,
)
def test_request_answer(
    mode: BmsMode,
    request_: Request,
    data_ok: bool,
    fatal: bool,
    reset_cleared: bool,
    answer: Answer,
    after: BmsMode,
    pending: bool,
    stay: bool,
) -> None:
    command = CLOSED if mode in (BmsMode.CLOSED, BmsMode.PRECHARGE, BmsMode.OPENING) else OPEN
    state = machine(mode, command=command, stay_open=True)
    new, reply = answer_request(
        state, request_, given(5.0, fatal=fatal, data_ok=data_ok), reset_cleared
    )
    assert (reply.request, reply.answer) == (request_, answer)
    assert reply.reason
    assert new.mode is after
    assert (new.close_pending, new.stay_open) == (pending, stay)
    if answer is Answer.ILLEGAL:
        assert new == state
    if after is not mode:
        assert new.mode_since == 5.0


def test_every_request_is_tried_in_every_mode() -> None:
    tried = {(row.values[0], row.values[1]) for row in REQUESTS}
    assert tried == {(mode, request) for mode in BmsMode for request in CONTACTOR_REQUESTS}


@pytest.mark.parametrize(
    ("reset_cleared", "fatal", "reason"),
    [
        (True, False, "faults reset"),
        (False, True, "a latched fault's cause is still present"),
        (False, False, "a latched fault's cause is still present"),
    ],
)
def test_reset_reasons_in_fault(reset_cleared: bool, fatal: bool, reason: str) -> None:
    _, reply = answer_request(
        machine(BmsMode.FAULT), Request.RESET, given(fatal=fatal), reset_cleared
    )
    assert reply.reason == reason


def test_open_request_under_load_waits_like_a_fatal() -> None:
    plant = Plant()
    state, _ = run(plant, initial_machine(0.0), 40)
    plant.current_a = 120.0
    state, reply = answer_request(state, Request.OPEN, plant.inputs(41 * TICK), False)
    assert reply.answer is Answer.ACCEPTED and state.mode is BmsMode.OPENING
    state, trace = run(plant, state, 30, first=41)
    opened = next(k for k, (_, s, _) in enumerate(trace) if s.command == OPEN)
    assert opened == 16
    assert state.mode is BmsMode.STANDBY and state.stay_open  # no automatic re-close
    assert state.command == OPEN


def test_manual_close_waits_for_a_close_request() -> None:
    plant = Plant()
    state, trace = run(plant, initial_machine(0.0), 100, config=MANUAL)
    assert {s.mode for _, s, _ in trace} == {BmsMode.STANDBY}
    state, reply = answer_request(state, Request.CLOSE, plant.inputs(101 * TICK), False)
    assert reply.answer is Answer.ACCEPTED
    state, _ = run(plant, state, 40, first=101, config=MANUAL)
    assert state.mode is BmsMode.CLOSED
    # Once opened on request, it stays open again until the next close request.
    state, _ = answer_request(state, Request.OPEN, plant.inputs(141 * TICK), False)
    state, _ = run(plant, state, 40, first=141, config=MANUAL)
    assert state.mode is BmsMode.STANDBY and state.command == OPEN


def test_close_requested_during_init_closes_once_healthy() -> None:
    plant = Plant()
    state, reply = answer_request(initial_machine(0.0), Request.CLOSE, given(0.0), False)
    assert reply.answer is Answer.PENDING
    state, _ = run(plant, state, 40, config=MANUAL)
    assert state.mode is BmsMode.CLOSED


def test_reset_in_fault_returns_to_standby_and_closes_again() -> None:
    plant = Plant()
    state, _ = run(plant, initial_machine(0.0), 40)
    state, _ = run(plant, state, 4, first=41, fatal_from=41)
    assert state.mode is BmsMode.FAULT
    refused, reply = answer_request(state, Request.RESET, plant.inputs(6.0, fatal=True), False)
    assert reply.answer is Answer.ILLEGAL and refused.mode is BmsMode.FAULT
    state, reply = answer_request(state, Request.RESET, plant.inputs(6.0), True)
    assert reply.answer is Answer.ACCEPTED and state.mode is BmsMode.STANDBY
    state, _ = run(plant, state, 40, first=49)
    assert state.mode is BmsMode.CLOSED


@pytest.mark.parametrize(
    ("state", "inputs", "step"),
    [
        pytest.param(
            machine(BmsMode.OPENING, "wait_current", CLOSED, since=3.1),
            given(5.1, fb=CLOSED, current=150.0),
            "confirm_open",
            id="open-wait",
        ),
        pytest.param(
            machine(BmsMode.OPENING, "confirm_open", OPEN, since=0.2),
            given(0.7, fb=CLOSED),
            "",
            id="feedback-timeout",
        ),
        pytest.param(
            machine(BmsMode.PRECHARGE, "precharge", PRECHARGING, since=1.1),
            given(4.1, fb=PRECHARGING, bus=10.0),
            "wait_current",
            id="precharge-timeout",
        ),
    ],
)
def test_bounded_waits_at_a_100ms_tick_are_not_lengthened_by_rounding(
    state: MachineState, inputs: MachineInputs, step: str
) -> None:
    assert step_machine(state, inputs, CONFIG).step == step
