"""Load profiles for the simulator: the pack current requested over time (positive = charge).

A profile is anything with ``current_a(time_s) -> float``. Three are provided: a constant
current, a smooth ESS day (night idle, morning discharge, midday PV charge, evening discharge)
that can be time-compressed, and a CSV file of ``time_s,current_a`` points. The simulated
inverter decides how much of the request it actually draws; profiles only describe intent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bmsd.errors import ConfigError, ConfigIssue
from bmsd.schema import file_problem


class LoadProfile(Protocol):
    """Requested pack current as a function of simulation time."""

    def current_a(self, time_s: float) -> float:
        """Requested current in A at ``time_s`` (s since the start); positive charges."""
        ...


class ConstantLoad:
    """The same current (A, positive charges) at all times."""

    __slots__ = ("_current_a",)

    def __init__(self, current_a: float) -> None:
        if not math.isfinite(current_a):
            raise ValueError("current_a must be finite")
        self._current_a = float(current_a)

    def current_a(self, time_s: float) -> float:
        return self._current_a


def _window(hour: float, start_h: float, end_h: float, ramp_h: float) -> float:
    """1 inside [start, end], 0 outside, with raised-cosine ramps of ``ramp_h`` inside the
    window edges (smooth, so a simulated inverter does not see steps)."""
    if hour <= start_h or hour >= end_h:
        return 0.0
    rise = (hour - start_h) / ramp_h
    fall = (end_h - hour) / ramp_h
    edge = min(rise, fall, 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * edge)


# Shape of the day in hours of a 24 h day: (start, end, ramp) of each phase.
_MORNING_H = (6.0, 9.0, 0.5)  # household/site load before PV, 30 % of the discharge current
_MORNING_FRACTION = 0.3
_PV_H = (9.0, 16.0)  # PV surplus: half-sine, peak at 12:30
_EVENING_H = (17.0, 22.0, 0.5)  # evening peak discharge at full discharge current


@dataclass(frozen=True, slots=True)
class EssDayCycle:
    """A smooth, repeating ESS day.

    00–06 h idle, 06–09 h discharge at 30 % of ``discharge_current_a``, 09–16 h PV charge as a
    half-sine peaking at ``charge_current_a``, 16–17 h idle, 17–22 h discharge at
    ``discharge_current_a`` (half-hour raised-cosine ramps), 22–24 h idle. Both currents are
    magnitudes (≥ 0); discharge is returned negative.

    ``day_length_s`` is the length of one day in day-time; ``time_scale`` compresses time, so one
    cycle lasts ``day_length_s / time_scale`` seconds of simulation time (time_scale=144 runs a
    day in 10 minutes, with the same currents, hence the same Ah × time_scale⁻¹).
    """

    charge_current_a: float
    discharge_current_a: float
    day_length_s: float = 86_400.0
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.charge_current_a < 0.0 or self.discharge_current_a < 0.0:
            raise ValueError("charge_current_a and discharge_current_a are magnitudes (>= 0)")
        if self.day_length_s <= 0.0 or self.time_scale <= 0.0:
            raise ValueError("day_length_s and time_scale must be positive")

    @property
    def period_s(self) -> float:
        """Simulation time of one full day cycle, s."""
        return self.day_length_s / self.time_scale

    def current_a(self, time_s: float) -> float:
        hour = 24.0 * ((time_s / self.period_s) % 1.0)
        morning = _MORNING_FRACTION * _window(hour, *_MORNING_H)
        evening = _window(hour, *_EVENING_H)
        pv_start, pv_end = _PV_H
        pv = 0.0
        if pv_start < hour < pv_end:
            pv = math.sin(math.pi * (hour - pv_start) / (pv_end - pv_start))
        return self.charge_current_a * pv - self.discharge_current_a * (morning + evening)

    def charge_ah_per_cycle(self) -> float:
        """Charge requested in one cycle, Ah (the half-sine integrates to 2/π of its span)."""
        span_h = (_PV_H[1] - _PV_H[0]) * self.period_s / 86_400.0
        return self.charge_current_a * span_h * 2.0 / math.pi

    def discharge_ah_per_cycle(self) -> float:
        """Discharge requested in one cycle, Ah, as a positive number.

        A raised-cosine window of length L with ramps r integrates to L − r.
        """
        scale = self.period_s / 86_400.0
        morning_h = _MORNING_FRACTION * (_MORNING_H[1] - _MORNING_H[0] - _MORNING_H[2])
        evening_h = _EVENING_H[1] - _EVENING_H[0] - _EVENING_H[2]
        return self.discharge_current_a * (morning_h + evening_h) * scale


class CsvLoad:
    """Current read from a CSV file with a ``time_s,current_a`` header, linearly interpolated.

    Times must be finite, start at 0 or later and strictly increase. Before the first point the
    first current applies. After the last point the last current is held, or with ``loop=True``
    the profile repeats with period equal to the last time (so the first point should be at 0 s
    and the last current should match the first for a smooth joint). Blank lines and lines
    starting with ``#`` are ignored. Every problem in the file is reported at once as a
    :class:`ConfigError` naming the file and line.
    """

    __slots__ = ("_currents_a", "_loop", "_times_s", "path")

    HEADER = ("time_s", "current_a")

    def __init__(self, path: Path, *, loop: bool = False) -> None:
        self.path = path
        self._loop = loop
        times, currents = _read_csv(path, loop=loop)
        self._times_s: NDArray[np.float64] = times
        self._currents_a: NDArray[np.float64] = currents

    @property
    def duration_s(self) -> float:
        """Time of the last point, s."""
        return float(self._times_s[-1])

    def current_a(self, time_s: float) -> float:
        if self._loop:
            time_s = time_s % self.duration_s
        return float(np.interp(time_s, self._times_s, self._currents_a))


def _read_csv(path: Path, *, loop: bool) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    source = str(path)
    problem = file_problem(path)  # a FIFO would block the read for ever
    if problem is not None:
        raise ConfigError([ConfigIssue(source, "", problem)])
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM from spreadsheets
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(source, "", "file not found")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(source, "", "not UTF-8 text")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(source, "", f"cannot read: {exc.strerror}")]) from None

    issues: list[ConfigIssue] = []
    times: list[float] = []
    currents: list[float] = []
    header_seen = False
    previous_time: float | None = None
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split(",")]
        where = f"line {number}"
        if not header_seen:
            header_seen = True
            if tuple(cells) != CsvLoad.HEADER:
                issues.append(
                    ConfigIssue(source, where, f"expected header 'time_s,current_a', got {line!r}")
                )
            continue
        if len(cells) != 2:
            issues.append(ConfigIssue(source, where, f"expected 2 columns, got {len(cells)}"))
            continue
        values: list[float] = []
        for column, cell in zip(CsvLoad.HEADER, cells, strict=True):
            try:
                value = float(cell)
            except ValueError:
                issues.append(ConfigIssue(source, where, f"{column} {cell!r} is not a number"))
                continue
            if not math.isfinite(value):
                issues.append(ConfigIssue(source, where, f"{column} must be finite"))
                continue
            values.append(value)
        if len(values) != 2:
            continue
        time_s, current_a = values
        if time_s < 0.0:
            issues.append(ConfigIssue(source, where, f"time_s {time_s} is negative"))
        elif previous_time is not None and time_s <= previous_time:
            issues.append(
                ConfigIssue(
                    source, where, f"time_s {time_s} is not after the previous {previous_time}"
                )
            )
        else:
            previous_time = time_s
        times.append(time_s)
        currents.append(current_a)
    if not header_seen:
        issues.append(ConfigIssue(source, "", "empty file: expected a 'time_s,current_a' header"))
    elif not times:
        issues.append(ConfigIssue(source, "", "no data rows after the header"))
    elif loop and (len(times) < 2 or times[-1] <= 0.0):
        issues.append(ConfigIssue(source, "", "loop needs at least two rows ending after 0 s"))
    if issues:
        raise ConfigError(issues)
    return np.asarray(times, dtype=np.float64), np.asarray(currents, dtype=np.float64)
