"""Events: things worth a log line and a JSON record, produced by the control loop."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Event:
    """Something that changed at a tick: a source went stale, a fault set, a reset, ..."""

    time_s: float
    kind: str
    message: str
    fields: dict[str, str | int | float | bool] = field(default_factory=dict)
