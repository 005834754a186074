"""The BMS and contactor state machine: explicit modes, explicit steps, time passed in.

Modes: INIT → STANDBY → PRECHARGE → CLOSED → OPENING → STANDBY, and FAULT from anywhere a
fatal fault is active. Closing sequence: negative contactor; precharge relay; wait until the
bus voltage reaches ``precharge_voltage_share`` of the pack voltage (judged by measurement, not
by time — a timeout only declares failure); positive contactor; precharge relay off.

Opening policy: the current limits go to zero first (the mode is no longer CLOSED), then the
machine waits until the current is below the contactors' break rating, at most
``open_wait_s``, and opens regardless after that. Breaking a large DC current wears or welds
contactor tips, so a short wait for a cooperating inverter is worth it; a battery outside its
safe area is worse than a worn contactor, so the wait is bounded. An unknown current counts as
too high (fail safe: wait the bounded time, then open).

Requests (close, open, reset) are answered ACCEPTED, PENDING (remembered, acted on when
possible) or ILLEGAL, always with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bmsd.config import ContactorConfig
from bmsd.model.bms import OPEN, Answer, BmsMode, ContactorCommand, Reply, Request
from bmsd.model.readings import ContactorFeedback
from bmsd.protection.faults import TIME_EPSILON_S


@dataclass(frozen=True, slots=True)
class MachineState:
    mode: BmsMode
    step: str
    mode_since: float
    step_since: float
    command: ContactorCommand
    reason: str
    close_pending: bool = False
    stay_open: bool = False  # an explicit open request: no automatic closing
    precharge_failed: bool = False
    opened_at: float | None = None  # when everything was last commanded open


@dataclass(frozen=True, slots=True)
class MachineInputs:
    now: float
    has_fatal: bool
    data_ok: bool
    feedback: ContactorFeedback | None
    pack_voltage_v: float | None
    bus_voltage_v: float | None
    current_a: float | None


def initial_machine(now: float) -> MachineState:
    return MachineState(BmsMode.INIT, "", now, now, OPEN, "starting", opened_at=now)


def answer_request(
    state: MachineState,
    request: Request,
    inputs: MachineInputs,
    reset_cleared: bool,
    latched_left: bool = False,
) -> tuple[MachineState, Reply]:
    """Answer one request; ``reset_cleared``: a reset cleared every latch; ``latched_left``:
    latches remain (their cause is still present)."""
    mode = state.mode
    if request is Request.CLOSE:
        if mode is BmsMode.FAULT:
            return state, Reply(request, Answer.ILLEGAL, "in fault: reset first")
        if mode is BmsMode.OPENING:
            return state, Reply(request, Answer.ILLEGAL, "opening in progress")
        if mode in (BmsMode.PRECHARGE, BmsMode.CLOSED):
            return replace(state, stay_open=False), Reply(
                request, Answer.ACCEPTED, "already closing or closed"
            )
        if mode is BmsMode.INIT or not inputs.data_ok:
            return replace(state, close_pending=True, stay_open=False), Reply(
                request, Answer.PENDING, "waiting for healthy data before closing"
            )
        if inputs.has_fatal:
            return state, Reply(request, Answer.ILLEGAL, "a fatal fault is active")
        return replace(state, close_pending=True, stay_open=False), Reply(
            request, Answer.ACCEPTED, "closing"
        )
    if request is Request.OPEN:
        state = replace(state, stay_open=True, close_pending=False)
        if mode in (BmsMode.PRECHARGE, BmsMode.CLOSED):
            return _enter(
                state, BmsMode.OPENING, "wait_current", inputs.now, "open requested"
            ), Reply(request, Answer.ACCEPTED, "opening")
        return state, Reply(request, Answer.ACCEPTED, "already open")
    # RESET: the fault engine has already tried to clear the latches.
    if mode is not BmsMode.FAULT:
        if reset_cleared:
            return state, Reply(request, Answer.ACCEPTED, "latched faults cleared")
        if latched_left:
            return state, Reply(request, Answer.ILLEGAL, "a latched fault's cause is still present")
        return state, Reply(request, Answer.ILLEGAL, "nothing to reset")
    if not reset_cleared or inputs.has_fatal:
        return state, Reply(request, Answer.ILLEGAL, "a latched fault's cause is still present")
    cleared = replace(state, stay_open=False, close_pending=False)
    return _enter(cleared, BmsMode.STANDBY, "", inputs.now, "fault reset"), Reply(
        request, Answer.ACCEPTED, "faults reset"
    )


def step_machine(
    state: MachineState, inputs: MachineInputs, config: ContactorConfig
) -> MachineState:
    """Advance the machine by one tick (after requests were answered)."""
    now = inputs.now
    if inputs.has_fatal and state.mode not in (BmsMode.FAULT, BmsMode.OPENING):
        if state.command.all_open:
            return _enter(state, BmsMode.FAULT, "", now, "fatal fault")
        # Judge the current in this same tick: no tick lost between the fault and opening.
        opening = _enter(state, BmsMode.OPENING, "wait_current", now, "fatal fault")
        return _step_opening(opening, inputs, config)
    mode = state.mode
    if mode is BmsMode.INIT:
        if inputs.data_ok:
            return _enter(state, BmsMode.STANDBY, "", now, "data healthy")
        return state
    if mode is BmsMode.STANDBY:
        wants_close = state.close_pending or (config.auto_close and not state.stay_open)
        if wants_close and inputs.data_ok:
            started = replace(state, close_pending=False, precharge_failed=False)
            return _command(
                _enter(started, BmsMode.PRECHARGE, "close_minus", now, "closing"),
                ContactorCommand(minus=True),
            )
        return state
    if mode is BmsMode.PRECHARGE:
        return _step_precharge(state, inputs, config)
    if mode is BmsMode.OPENING:
        return _step_opening(state, inputs, config)
    if mode is BmsMode.FAULT:
        if not state.command.all_open:
            return _open(state, now)
        return state
    return state  # CLOSED: stays until a request or a fatal fault


def _step_precharge(
    state: MachineState, inputs: MachineInputs, config: ContactorConfig
) -> MachineState:
    now, feedback = inputs.now, inputs.feedback
    confirmed = feedback is not None and state.command.matches(feedback)
    waiting_for_feedback = state.step in ("close_minus", "close_plus", "release_precharge")
    if waiting_for_feedback and not confirmed:
        if _elapsed(state.step_since, now, config.feedback_timeout_s):
            # The machine does not wait forever on its own; the fault table latches the cause
            # (contactor_feedback_mismatch) independently.
            reason = f"contactor did not confirm ({state.step})"
            return _enter(
                replace(state, stay_open=True), BmsMode.OPENING, "wait_current", now, reason
            )
        return state
    if state.step == "close_minus":
        if confirmed:
            return _command(
                replace(state, step="precharge", step_since=now),
                ContactorCommand(minus=True, precharge=True),
            )
        return state
    if state.step == "precharge":
        if confirmed and _precharged(inputs, config.precharge_voltage_share):
            return _command(
                replace(state, step="close_plus", step_since=now),
                ContactorCommand(minus=True, plus=True, precharge=True),
            )
        if _elapsed(state.step_since, now, config.precharge_timeout_s):
            # No automatic retry of a failed precharge: it needs a reset or a close request.
            failed = replace(state, precharge_failed=True, stay_open=True)
            return _enter(failed, BmsMode.OPENING, "wait_current", now, "precharge failed")
        return state
    if state.step == "close_plus":
        if confirmed:
            return _command(
                replace(state, step="release_precharge", step_since=now),
                ContactorCommand(minus=True, plus=True),
            )
        return state
    if state.step == "release_precharge" and confirmed:
        return _enter(state, BmsMode.CLOSED, "", now, "closed")
    return state


def _step_opening(
    state: MachineState, inputs: MachineInputs, config: ContactorConfig
) -> MachineState:
    now = inputs.now
    if state.step == "wait_current":
        current = inputs.current_a
        low = current is not None and abs(current) <= config.break_current_a
        if low or _elapsed(state.step_since, now, config.open_wait_s) or not state.command.plus:
            return _open(replace(state, step="confirm_open", step_since=now), now)
        return state
    # confirm_open: everything commanded open; leave when the feedback agrees or it times out
    # (a disagreeing contactor is the fault engine's contactor_feedback_mismatch).
    feedback = inputs.feedback
    done = feedback is not None and OPEN.matches(feedback)
    if done or _elapsed(state.step_since, now, config.feedback_timeout_s):
        if inputs.has_fatal:
            return _enter(state, BmsMode.FAULT, "", now, state.reason)
        return _enter(state, BmsMode.STANDBY, "", now, state.reason)
    return state


def _elapsed(since: float, now: float, duration_s: float) -> bool:
    """``duration_s`` has passed, with the same float slack as the fault delays."""
    return now - since >= duration_s - TIME_EPSILON_S


def _precharged(inputs: MachineInputs, share: float) -> bool:
    """The bus has reached its share of the pack voltage (both measured)."""
    pack, bus = inputs.pack_voltage_v, inputs.bus_voltage_v
    return pack is not None and bus is not None and pack > 0 and bus >= share * pack


def _enter(state: MachineState, mode: BmsMode, step: str, now: float, reason: str) -> MachineState:
    if mode is BmsMode.FAULT:
        # The fault table has latched what happened; the one-shot flag has done its job.
        state = replace(state, precharge_failed=False)
    return replace(state, mode=mode, step=step, mode_since=now, step_since=now, reason=reason)


def _command(state: MachineState, command: ContactorCommand) -> MachineState:
    return replace(state, command=command)


def _open(state: MachineState, now: float) -> MachineState:
    return replace(state, command=OPEN, opened_at=now)
