"""The fault table as data: each fault's quantity, levels, thresholds, debounce, delays, latch.

A fault watches one quantity (bmsd.protection.quantities) and has up to three levels. Each
level has its own threshold, a clear hysteresis, a debounce (consecutive-sample up/down counter:
as many good samples to clear as bad ones to trip), a set delay after the debounce, a clear
delay, and whether it latches (fatal levels always latch). Shipped defaults live in
``etc/protection/*.toml``; a config selects one with ``protection.defaults`` and may override
any key under ``[protection.faults.ID...]``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from bmsd.model.faults import FaultLevel
from bmsd.protection.quantities import QUANTITY_BY_NAME, THRESHOLD_RANGES
from bmsd.schema import doc, must_be_within

Blocks = Literal["charge", "discharge", "both", "none"]

# Longest set or clear delay of any level. The shipped tables use at most 30 s (set) and 10 s
# (clear); an hour leaves room for slow diagnostics while refusing a value (1e300) that would
# silently disable a level.
MAX_DELAY_S = 3600.0
# Longest set delay of a fatal level: the shipped maximum is 30 s (inverter_ignores_limits,
# on top of its own response time); a fatal reaction held back longer is not protection.
MAX_FATAL_SET_DELAY_S = 60.0


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """One level of a fault."""

    threshold: float = doc("Trips at or beyond this value (direction from the quantity)")
    hysteresis: float = doc(
        "Clears only this far back inside the threshold (same unit)", default=0.0
    )
    debounce_samples: int = doc(
        "Consecutive bad ticks to trip; as many good ticks to clear", default=1
    )
    set_delay_s: float = doc(
        "After the debounce, wait this long before setting (0 to 3600; at most 60 on a fatal "
        "level: a longer wait is no protection)",
        unit="s",
        default=0.0,
    )
    clear_delay_s: float = doc(
        "After the condition is gone, wait this long before clearing (0 to 3600)",
        unit="s",
        default=0.0,
    )
    latch: bool = doc("Stay set until an explicit reset (fatal levels always latch)", default=False)

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.hysteresis < 0:
            problems.append(("hysteresis", "must not be negative"))
        problems += must_be_within(self, "debounce_samples", 1, 10_000)
        for key in ("set_delay_s", "clear_delay_s"):
            problems += must_be_within(self, key, 0.0, MAX_DELAY_S, "s")
        return problems


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault of the table."""

    quantity: str = doc("Watched quantity (see the quantity table in docs/safety.md)")
    description: str = doc("What it means for the operator", default="")
    blocks: Blocks = doc(
        "Which current a warning derates and which a fatal level stops", default="both"
    )
    enabled: bool = doc("Evaluate this fault", default=True)
    info: LevelSpec | None = doc("Maximum operating limit: reported", default=None)
    warning: LevelSpec | None = doc("Recommended safety limit: derate", default=None)
    fatal: LevelSpec | None = doc("Maximum safety limit: open contactors, latch", default=None)

    def levels(self) -> tuple[tuple[FaultLevel, LevelSpec], ...]:
        found = (
            (FaultLevel.INFO, self.info),
            (FaultLevel.WARNING, self.warning),
            (FaultLevel.FATAL, self.fatal),
        )
        return tuple((level, spec) for level, spec in found if spec is not None)

    def check(self) -> list[tuple[str, str]]:
        quantity = QUANTITY_BY_NAME.get(self.quantity)
        if quantity is None:
            return [
                ("quantity", f"unknown quantity; use one of {', '.join(sorted(QUANTITY_BY_NAME))}")
            ]
        levels = self.levels()
        if not levels:
            return [("", "needs at least one of info, warning, fatal")]
        problems: list[tuple[str, str]] = []
        if self.fatal is not None and (
            MAX_FATAL_SET_DELAY_S < self.fatal.set_delay_s <= MAX_DELAY_S  # beyond: said already
        ):
            problems.append(
                (
                    "fatal.set_delay_s",
                    f"must be at most {MAX_FATAL_SET_DELAY_S:g} s on a fatal level",
                )
            )
        low_limit, high_limit = THRESHOLD_RANGES[quantity.name]
        unit = f" {quantity.unit}" if quantity.unit else ""
        for level, spec in levels:
            if not low_limit <= spec.threshold <= high_limit:
                problems.append(
                    (
                        f"{level.label}.threshold",
                        f"must be between {low_limit:g} and {high_limit:g}{unit}: "
                        f"{quantity.name} cannot reach {spec.threshold:g}, so it would never trip",
                    )
                )
        thresholds = [(level.label, spec.threshold) for level, spec in levels]
        for (low_name, low), (high_name, high) in itertools.pairwise(thresholds):
            ordered = low <= high if quantity.direction == "above" else low >= high
            if not ordered:
                relation = "below" if quantity.direction == "above" else "above"
                problems.append(
                    (
                        f"{high_name}.threshold",
                        f"must lie beyond {low_name} ({low_name} {low} must be {relation} {high})",
                    )
                )
        return problems

    def latches(self, level: FaultLevel, spec: LevelSpec) -> bool:
        return spec.latch or level is FaultLevel.FATAL
