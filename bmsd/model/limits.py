"""Limits: what the battery allows the inverter to do now, and why.

Four limits are published to the inverter:

- ``charge_voltage_v`` (CVL): the pack voltage the charger may regulate to. Never 0 — an
  inverter reads CVL 0 as an over-voltage (protocols.md C.3); charging is stopped with CCL 0.
- ``charge_current_a`` (CCL) and ``discharge_current_a`` (DCL): magnitudes, ≥ 0.
- ``discharge_voltage_v`` (DVL): the pack voltage below which the inverter stops discharging.

Each limit is the minimum of its *contributors*; every contributor is kept, with its value and a
human reason, so "why is my current limited?" always has an answer (:meth:`Limits.limiting`).
Pure data, no I/O; made by :mod:`bmsd.protection.limits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LimitKind = Literal["cvl", "ccl", "dcl", "dvl"]
"""Short names of the four limits, as used by :meth:`Limits.limiting` and the publishers."""

LIMIT_KINDS: tuple[LimitKind, ...] = ("cvl", "ccl", "dcl", "dvl")

LIMIT_UNITS: dict[LimitKind, str] = {"cvl": "V", "ccl": "A", "dcl": "A", "dvl": "V"}


@dataclass(frozen=True, slots=True)
class Contributor:
    """One candidate value for a limit, e.g. ``("cell_voltage", 42.0, "highest cell ...")``."""

    name: str
    value: float
    reason: str

    def __str__(self) -> str:
        return f"{self.name} {self.value:.2f}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Limits:
    """The four limits of one tick and every contributor behind each.

    Invariants (checked on construction): each limit equals the minimum of its contributors,
    currents are ≥ 0 and both voltages are > 0.
    """

    charge_voltage_v: float
    charge_current_a: float
    discharge_current_a: float
    discharge_voltage_v: float
    cvl_contributors: tuple[Contributor, ...]
    ccl_contributors: tuple[Contributor, ...]
    dcl_contributors: tuple[Contributor, ...]
    dvl_contributors: tuple[Contributor, ...]

    def __post_init__(self) -> None:
        for kind in LIMIT_KINDS:
            contributors = self.contributors(kind)
            if not contributors:
                raise ValueError(f"{kind} has no contributors")
            lowest = min(c.value for c in contributors)
            if self.value(kind) != lowest:
                raise ValueError(
                    f"{kind} is {self.value(kind)} but its lowest contributor is {lowest}"
                )
        if self.charge_current_a < 0.0 or self.discharge_current_a < 0.0:
            raise ValueError("currents are magnitudes and must not be negative")
        if self.charge_voltage_v <= 0.0 or self.discharge_voltage_v <= 0.0:
            raise ValueError("CVL and DVL must be positive (an inverter reads 0 as a fault)")

    def value(self, kind: LimitKind) -> float:
        """The limit itself: V for cvl/dvl, A for ccl/dcl."""
        if kind == "cvl":
            return self.charge_voltage_v
        if kind == "ccl":
            return self.charge_current_a
        if kind == "dcl":
            return self.discharge_current_a
        return self.discharge_voltage_v

    def contributors(self, kind: LimitKind) -> tuple[Contributor, ...]:
        """Every contributor to a limit, in a fixed order."""
        if kind == "cvl":
            return self.cvl_contributors
        if kind == "ccl":
            return self.ccl_contributors
        if kind == "dcl":
            return self.dcl_contributors
        return self.dvl_contributors

    def limiting(self, kind: LimitKind) -> Contributor:
        """The contributor that set the limit: the lowest, the first one listed on a tie."""
        return min(self.contributors(kind), key=lambda c: c.value)

    def explain(self, kind: LimitKind) -> str:
        """One line: the limit, the contributor that set it and why."""
        top = self.limiting(kind)
        return (
            f"{kind.upper()} {self.value(kind):.2f} {LIMIT_UNITS[kind]}: {top.name} — {top.reason}"
        )

    @property
    def charge_allowed(self) -> bool:
        return self.charge_current_a > 0.0

    @property
    def discharge_allowed(self) -> bool:
        return self.discharge_current_a > 0.0


__all__ = ["LIMIT_KINDS", "LIMIT_UNITS", "Contributor", "LimitKind", "Limits"]
