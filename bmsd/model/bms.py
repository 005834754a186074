"""BMS modes, contactor commands, and requests with their answers: pure data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bmsd.model.readings import ContactorFeedback


class BmsMode(StrEnum):
    INIT = "init"
    STANDBY = "standby"
    PRECHARGE = "precharge"
    CLOSED = "closed"
    OPENING = "opening"
    FAULT = "fault"


class Request(StrEnum):
    CLOSE = "close"
    OPEN = "open"
    RESET = "reset"
    BALANCING_ON = "balancing_on"
    BALANCING_OFF = "balancing_off"


CONTACTOR_REQUESTS = frozenset({Request.CLOSE, Request.OPEN, Request.RESET})
"""The requests the contactor state machine answers; the others go to their own part."""


class Answer(StrEnum):
    ACCEPTED = "accepted"
    PENDING = "pending"
    ILLEGAL = "illegal"


@dataclass(frozen=True, slots=True)
class ContactorCommand:
    minus: bool = False
    plus: bool = False
    precharge: bool = False

    def matches(self, feedback: ContactorFeedback) -> bool:
        return (
            feedback.minus_closed == self.minus
            and feedback.plus_closed == self.plus
            and feedback.precharge_closed == self.precharge
        )

    @property
    def all_open(self) -> bool:
        return not (self.minus or self.plus or self.precharge)


OPEN = ContactorCommand()


@dataclass(frozen=True, slots=True)
class Reply:
    request: Request
    answer: Answer
    reason: str
