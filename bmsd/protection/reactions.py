"""What active faults do to the currents: the factors the limits apply, with the reason.

A fault's ``blocks`` says which current it concerns. An active warning limits that current to
the warning derate factor, an active fatal level to zero; the strongest active level wins, and
the reason names every fault that contributes, strongest first.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmsd.model.faults import FaultLevel, FaultState
from bmsd.protection.limits import LimitsConfig
from bmsd.protection.table import FaultSpec


@dataclass(frozen=True, slots=True)
class FaultReaction:
    charge_factor: float
    discharge_factor: float
    reason: str


def fault_reaction(
    faults: FaultState, table: dict[str, FaultSpec], limits: LimitsConfig
) -> FaultReaction:
    worst: dict[str, FaultLevel] = {}
    causes: dict[str, list[tuple[FaultLevel, str]]] = {"charge": [], "discharge": []}
    for level in faults.active():
        if level.level is FaultLevel.INFO:
            continue
        blocks = table[level.fault_id].blocks
        directions = {
            "charge": ("charge",),
            "discharge": ("discharge",),
            "both": ("charge", "discharge"),
        }.get(blocks, ())
        for direction in directions:
            if level.level > worst.get(direction, FaultLevel.INFO):
                worst[direction] = level.level
            causes[direction].append((level.level, level.key))

    def factor(direction: str) -> float:
        found = worst.get(direction)
        return limits.fault_factor(
            warning=found is FaultLevel.WARNING, fatal=found is FaultLevel.FATAL
        )

    named = sorted(
        {key for items in causes.values() for _, key in items},
        key=lambda key: (-_level_of(key), key),
    )
    return FaultReaction(
        charge_factor=factor("charge"),
        discharge_factor=factor("discharge"),
        reason=", ".join(named),
    )


def _level_of(key: str) -> int:
    return int(FaultLevel[key.rsplit(".", 1)[1].upper()])
