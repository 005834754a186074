"""StateHub: holds the newest PackState for every publisher; readers never block the writer."""

from __future__ import annotations

import asyncio

from bmsd.model.state import PackState


class StateHub:
    """The newest PackState, and a way to wait for the next one."""

    def __init__(self) -> None:
        self._latest: PackState | None = None
        self._changed = asyncio.Event()

    @property
    def latest(self) -> PackState | None:
        return self._latest

    def publish(self, state: PackState) -> None:
        self._latest = state
        # Wake everyone waiting for this tick, then arm a fresh event for the next one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_state(self) -> PackState:
        """Wait for the next published state."""
        event = self._changed
        await event.wait()
        state = self._latest
        assert state is not None
        return state
