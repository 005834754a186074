"""Inverter supervision as pure functions: keep-alive age and limits obeyed.

Keep-alive: the inverter sends a frame regularly (Pylontech's 0x305 acknowledgement, the
Sunny Island's 0x305 telemetry). :func:`keepalive_overdue_s` says how far its age is past the
timeout (negative while on time) or ``None`` while it cannot be judged: supervision off, or
inside the start-up grace before the first keep-alive (a black start: the inverter boots only
once the battery supplies DC). :func:`keepalive_stop` decides the configured action "stop":
CCL = DCL = 0 once the keep-alive has been overdue for the grace period.

Limits obeyed: the inverter may take ``response_s`` to follow a lowered limit, so the allowed
current is the highest limit sent within that window (:class:`LimitWindow`).
:func:`limit_excess_a` is how far the measured current goes beyond it in either direction;
the fault table warns, then faults, when it stays above the margin (the inverter is ignoring
the battery).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

KeepaliveAction = Literal["warn", "stop"]


def keepalive_overdue_s(
    now: float,
    started_at: float,
    last_seen_at: float | None,
    timeout_s: float,
    startup_grace_s: float,
) -> float | None:
    """Keep-alive age minus its timeout (s); None inside the start-up grace with none seen."""
    if last_seen_at is None:
        if now - started_at < startup_grace_s:
            return None
        return (now - started_at) - timeout_s
    return (now - last_seen_at) - timeout_s


def keepalive_stop(overdue_s: float | None, action: KeepaliveAction, grace_s: float) -> bool:
    """Whether the action "stop" applies: overdue for at least ``grace_s``."""
    return action == "stop" and overdue_s is not None and overdue_s >= grace_s


def limit_excess_a(current_a: float, allowed_charge_a: float, allowed_discharge_a: float) -> float:
    """How far the current (positive charges) exceeds the allowed charge or discharge current;
    negative while inside both."""
    return max(current_a - allowed_charge_a, -current_a - allowed_discharge_a)


@dataclass(frozen=True, slots=True)
class SentLimits:
    time_s: float
    charge_a: float
    discharge_a: float


class LimitWindow:
    """The limits sent within the last ``response_s``; the allowed current is their maximum
    (the inverter may still follow the higher one). Before anything was sent: None.

    Pruned on every record as well as every query: while the contactors are open nobody asks
    for the allowed current, yet the limits keep going out (the window must not grow then).
    """

    def __init__(self, response_s: float) -> None:
        self.response_s = response_s
        self._sent: deque[SentLimits] = deque()

    def __len__(self) -> int:
        return len(self._sent)

    def record(self, time_s: float, charge_a: float, discharge_a: float) -> None:
        self._sent.append(SentLimits(time_s, charge_a, discharge_a))
        self._prune(time_s)

    def allowed(self, now: float) -> tuple[float, float] | None:
        """(charge, discharge) allowed at ``now``; None before the first sent limit."""
        self._prune(now)
        sent = self._sent
        if not sent:
            return None
        return (max(s.charge_a for s in sent), max(s.discharge_a for s in sent))

    def _prune(self, now: float) -> None:
        sent = self._sent
        # Keep the newest entry older than the window: it was in force at the window's start.
        while len(sent) >= 2 and sent[1].time_s <= now - self.response_s:
            sent.popleft()


def worst(values: list[float | None]) -> float | None:
    """The largest judged value; None when none can be judged."""
    judged = [v for v in values if v is not None and not math.isnan(v)]
    return max(judged) if judged else None
