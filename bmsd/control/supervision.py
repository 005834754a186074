"""External supervision inputs: what publishers learn from outside, read by the controller.

The EMS heartbeat (Modbus) and the inverter keep-alive and limits-obeyed checks (CAN profiles)
are watched by the fault table like any other quantity. Their owners register a named provider
here; once per tick the controller asks every provider for its value at the tick's time and
passes the values to the fault checks in ``ProtectionInputs.external``. A provider returns
``None`` while its value cannot be judged (supervision not enabled, start-up grace): the fault
then holds, it neither trips nor clears.

Providers run on the event-loop thread inside the tick: they must be cheap and must not block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Provider = Callable[[float], float | None]


class ExternalInputs:
    """Named providers of supervision values, asked once per tick with the tick's time."""

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}

    def register(self, name: str, provider: Provider) -> None:
        """Add a provider; one owner per name (a second registration is a wiring error)."""
        if name in self._providers:
            raise ValueError(f"external supervision input {name!r} registered twice")
        self._providers[name] = provider

    def values(self, now: float) -> Mapping[str, float | None]:
        """Every provider's value at monotonic time ``now``."""
        return {name: provider(now) for name, provider in self._providers.items()}
