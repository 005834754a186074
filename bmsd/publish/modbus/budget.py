"""The Modbus server's CPU budget: how long to stop reading from clients when over it.

The server thread shares the interpreter lock with the control loop. A flood of requests
(or of garbage, or of connects) would let it take every free cycle of the process, and the
control tick would start late. The budget is a token bucket of CPU seconds of the server
thread: it fills at ``share`` CPU seconds per wall second up to ``burst_s``; what the thread
used is taken out. While it is empty the server pauses reading (and refuses new connections)
for as long as refilling the debt takes. Pure: both clocks are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class CpuBudget:
    """A token bucket of CPU seconds (see the module docstring)."""

    share: float  # CPU seconds per wall second the server may use (0 < share <= 1)
    burst_s: float  # CPU seconds it may use at once after being idle
    max_pause_s: float = 1.0  # a larger debt is forgiven: no client waits longer than this
    _tokens_s: float = 0.0
    _wall_s: float | None = None
    _cpu_s: float | None = None
    paused_s: float = 0.0  # wall time spent paused (overlapping pauses counted once)
    _paused_until_s: float = 0.0

    def __post_init__(self) -> None:
        self._tokens_s = self.burst_s

    def delay_s(self, wall_s: float, cpu_s: float) -> float:
        """How long to pause before serving more, given the wall clock and the thread's CPU
        clock now; 0 when within the budget."""
        if self._wall_s is None or self._cpu_s is None:
            self._wall_s, self._cpu_s = wall_s, cpu_s
            return 0.0
        refill = max(wall_s - self._wall_s, 0.0) * self.share
        used = max(cpu_s - self._cpu_s, 0.0)
        # The thread is checked only when a client sends: the CPU of everything in between
        # comes due at once. Beyond max_pause_s it is forgiven, so one unlucky client is not
        # held for the whole debt.
        floor = -self.share * self.max_pause_s
        self._tokens_s = max(min(self._tokens_s + refill - used, self.burst_s), floor)
        self._wall_s, self._cpu_s = wall_s, cpu_s
        if self._tokens_s >= -1e-9:  # float rounding of a debt just paid back
            return 0.0
        delay = -self._tokens_s / self.share
        end = wall_s + delay
        if end > self._paused_until_s:
            self.paused_s += end - max(self._paused_until_s, wall_s)
            self._paused_until_s = end
        return delay
