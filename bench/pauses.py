"""Pauses of the machine beside a soak: was a late tick the daemon's, or the machine's?

A daemon can only be as punctual as the machine it runs on. On a virtual machine the host may
stop a vCPU (hypervisor steal, /proc/stat), and a busy machine may leave every runnable
process waiting. Neither is the daemon's doing, and neither shows in the daemon's own figures.
This probe runs as its own small process beside the daemon, at the daemon's priority, and
writes down every moment the machine let it down:

- it sleeps 10 ms at a time and records each wake-up more than ``THRESHOLD_S`` late (the
  machine did not run it: a stopped VM, or every CPU busy);
- it reads each CPU's steal time every 100 ms and records each window in which the
  hypervisor took more than ``THRESHOLD_S`` of one CPU.

Each event is one line: ``start end overslept_s steal_s`` (wall-clock seconds, so they can be
set beside the daemon's log; steal is the most any one CPU lost in the window).
:func:`attribute` sets the daemon's stalls (its ``control_loop_overrun`` log lines) beside
these events: a stall is the machine's when, within the stall, the probe overslept or one
CPU lost to steal at least half as long as the stall.

    .venv/bin/python bench/pauses.py pauses.txt      # until SIGTERM
"""

from __future__ import annotations

import datetime
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SLEEP_S = 0.010
THRESHOLD_S = 0.020
STEAL_WINDOW_S = 0.100
USER_HZ = 100  # /proc/stat counts in 1/100 s (USER_HZ is 100 on every Linux architecture)
MARGIN_S = 0.020  # log timestamps come a little after the tick's start


@dataclass(frozen=True, slots=True)
class Pause:
    """An interval in which the machine did not run the probe, or stole a CPU."""

    start: float  # wall clock, s
    end: float
    overslept_s: float
    steal_s: float


@dataclass(frozen=True, slots=True)
class Stall:
    """A late tick of the daemon, from its log."""

    at: float  # wall clock of the log line, s
    stall_s: float
    missed: int  # tick periods skipped (0: late, none skipped)


def _steal_s() -> list[float]:
    """Seconds of steal of each CPU since boot."""
    steal = []
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith("cpu") and line[3] != " ":
                fields = line.split()
                steal.append(int(fields[8]) / USER_HZ if len(fields) > 8 else 0.0)
    return steal


def probe(out_path: Path) -> None:
    """Record pauses to ``out_path`` until SIGTERM or SIGINT."""
    running = True

    def stop(signum: int, frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with out_path.open("w", buffering=1) as out:
        window_at, window_wall, window_steal = time.monotonic(), time.time(), _steal_s()
        while running:
            asleep_at, asleep_wall = time.monotonic(), time.time()
            time.sleep(SLEEP_S)
            awake_at = time.monotonic()
            overslept_s = awake_at - asleep_at - SLEEP_S
            if overslept_s > THRESHOLD_S:
                end = asleep_wall + (awake_at - asleep_at)
                out.write(f"{asleep_wall:.3f} {end:.3f} {overslept_s:.3f} 0\n")
            if awake_at - window_at >= STEAL_WINDOW_S:
                # Steal of another CPU does not delay the probe: read it over a window.
                steal = _steal_s()
                deltas = zip(steal, window_steal, strict=False)  # a CPU may come or go
                stolen_s = max((new - old for new, old in deltas), default=0.0)
                if stolen_s > THRESHOLD_S:
                    end = window_wall + (awake_at - window_at)
                    out.write(f"{window_wall:.3f} {end:.3f} 0 {stolen_s:.3f}\n")
                window_at, window_wall, window_steal = awake_at, asleep_wall, steal


def read_pauses(path: Path) -> list[Pause]:
    pauses = []
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 4:
                pauses.append(Pause(*(float(field) for field in fields)))
    return pauses


_STALL = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) WARNING\s+\S+: control_loop_overrun\.\w+ set: "
    r"control_stall_s ([\d.eE+-]+) s"
)
_MISSED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) WARNING\s+\S+: control loop overran: (\d+) tick"
)


def _wall(date_time: str, millis: str) -> float:
    """The daemon's log time (local time, as logging writes it) as Unix seconds."""
    moment = datetime.datetime.strptime(date_time, "%Y-%m-%d %H:%M:%S")
    return moment.timestamp() + int(millis) / 1000.0


def read_stalls(log_path: Path) -> list[Stall]:
    """Every ``control_loop_overrun`` set (a stall over its warning level) in the daemon's log,
    with the tick periods it skipped (the "control loop overran" line just before it)."""
    stalls: list[Stall] = []
    missed_at: tuple[float, int] | None = None
    with log_path.open(errors="replace") as log:
        for line in log:
            if found := _MISSED.match(line):
                missed_at = (_wall(found.group(1), found.group(2)), int(found.group(3)))
            elif found := _STALL.match(line):
                at = _wall(found.group(1), found.group(2))
                missed = 0
                if missed_at is not None and at - missed_at[0] < 0.5:
                    missed, missed_at = missed_at[1], None
                stalls.append(Stall(at, float(found.group(3)), missed))
    return stalls


def attribute(stall: Stall, pauses: list[Pause]) -> tuple[bool, float, float]:
    """(the machine's, probe overslept s, most steal of one CPU s) within the stall."""
    start, end = stall.at - stall.stall_s - MARGIN_S, stall.at + MARGIN_S
    overslept_s = steal_s = 0.0
    for pause in pauses:
        overlap_s = min(end, pause.end) - max(start, pause.start)
        if overlap_s > 0:
            share = overlap_s / max(pause.end - pause.start, 1e-9)
            overslept_s += min(pause.overslept_s, overlap_s)
            steal_s += pause.steal_s * min(1.0, share)
    machine = max(overslept_s, steal_s) >= 0.5 * stall.stall_s
    return machine, overslept_s, steal_s


def total_steal_s() -> float:
    """Steal of all CPUs since boot, s (read before and after a run)."""
    return sum(_steal_s())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[-1].strip(), file=sys.stderr)
        raise SystemExit(2)
    probe(Path(sys.argv[1]))
