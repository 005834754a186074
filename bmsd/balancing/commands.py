"""Balancing commands to the slaves: which frames to send after a tick, and when.

A module's command goes out at once when it changes and is repeated every
``command_period_s`` otherwise, each frame carrying ``slave_timeout_s``: a slave that hears
nothing for that long stops bleeding by itself, so a dead or hung bmsd cannot leave resistors
on. Modules that have never been told to bleed are still refreshed with an all-off command
while balancing is configured, so a slave left bleeding by a previous run is stopped too.
Pure bookkeeping: the caller passes the time and sends the frames.
"""

from __future__ import annotations

import math

import can
import numpy as np

from bmsd.balancing.settings import BalancingConfig
from bmsd.canbus.codec import FrameEncoder
from bmsd.model.balancing import BalancingState
from bmsd.model.topology import Topology


class BalancingSender:
    """Turns each tick's BalancingState into the balancing command frames due."""

    def __init__(self, config: BalancingConfig, topology: Topology, encoder: FrameEncoder) -> None:
        self._config = config
        self._topology = topology
        self._encoder = encoder
        modules = topology.module_count
        self._sent = np.zeros((modules, topology.cells_per_module), dtype=np.bool_)
        self._sent_at = np.full(modules, -math.inf)
        self.frames_sent = 0

    def frames(self, state: BalancingState | None, now_s: float) -> list[can.Message]:
        """The frames due at ``now_s`` for ``state`` (None: balancing not configured)."""
        if state is None:
            return []
        per_module = self._topology.cells_per_module
        wanted = np.asarray(state.bleeding, dtype=np.bool_).reshape(-1, per_module)
        frames: list[can.Message] = []
        for module in range(self._topology.module_count):
            row = wanted[module]
            changed = bool((row != self._sent[module]).any())
            due = now_s - self._sent_at[module] >= self._config.command_period_s
            if not (changed or due):
                continue
            frames.extend(
                self._encoder.balancing_command(
                    module, [bool(flag) for flag in row], self._config.slave_timeout_s
                )
            )
            self._sent[module] = row
            self._sent_at[module] = now_s
        self.frames_sent += len(frames)
        return frames


__all__ = ["BalancingSender"]
