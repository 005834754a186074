"""Cell test traces: CSV files with ``time_s,current_a,voltage_v,temp_c`` (current > 0 charges).

Used by ``bmsd fit-cell`` and ``bmsd estimate``. Reading validates every row and reports each
bad line with file, line number and reason (as a :class:`~bmsd.errors.ConfigError`), so a bad
file never ends in a traceback. ``temp_c`` may be empty on a row (unknown temperature). A
UTF-8 byte-order mark (spreadsheet exports) is accepted. Values beyond :data:`PLAUSIBLE` or a
time step over :data:`MAX_STEP_S` are refused: they overflowed the estimator into a NaN SOC.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bmsd.errors import ConfigError, ConfigIssue

FloatArray = NDArray[np.float64]
COLUMNS = ("time_s", "current_a", "voltage_v", "temp_c")
# Stop collecting after this many bad lines: the file is clearly not a trace.
_MAX_ISSUES = 20
# Bounds of a real cell test (|value| at most); beyond them a value is a unit or export error.
PLAUSIBLE = {
    "time_s": (1e10, "s"),  # about 317 years
    "current_a": (1e4, "A"),  # a cell, not a pack
    "temp_c": (200.0, "°C"),
}
MAX_STEP_S = 30 * 86400.0  # a longer pause between two rows is two traces


@dataclass(frozen=True, slots=True)
class Trace:
    """A validated trace; arrays of equal length, time strictly increasing."""

    source: str
    time_s: FloatArray
    current_a: FloatArray
    voltage_v: FloatArray
    temp_c: FloatArray  # NaN where unknown

    def __len__(self) -> int:
        return int(self.time_s.size)


def read_trace(path: Path) -> Trace:
    """Read and validate a trace CSV; raise ConfigError naming every bad line (up to 20)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM is not header text
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(source, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(source, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(source, "", "not UTF-8 text")]) from None
    rows = list(csv.reader(text.splitlines()))
    issues: list[ConfigIssue] = []
    header_index = next(
        (i for i, row in enumerate(rows) if row and any(c.strip() for c in row)), None
    )
    if header_index is None:
        raise ConfigError([ConfigIssue(source, "line 1", "empty file")])
    header = [c.strip() for c in rows[header_index]]
    missing = [c for c in COLUMNS[:3] if c not in header]
    if missing:
        raise ConfigError(
            [
                ConfigIssue(
                    source,
                    f"line {header_index + 1}",
                    f"header must name the columns {','.join(COLUMNS)}; "
                    f"missing {', '.join(missing)}",
                )
            ]
        )
    col = {name: header.index(name) for name in COLUMNS if name in header}
    values: list[tuple[float, float, float, float]] = []
    last_time = -math.inf
    for number, row in enumerate(rows[header_index + 1 :], start=header_index + 2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(issues) >= _MAX_ISSUES:
            break
        if len(row) < len(header):
            issues.append(
                ConfigIssue(
                    source, f"line {number}", f"has {len(row)} fields, expected {len(header)}"
                )
            )
            continue
        parsed: dict[str, float] = {}
        bad = False
        for name, index in col.items():
            cell = row[index].strip()
            if name == "temp_c" and cell == "":
                parsed[name] = math.nan
                continue
            try:
                value = float(cell)
            except ValueError:
                issues.append(
                    ConfigIssue(source, f"line {number}", f"{name} {cell!r} is not a number")
                )
                bad = True
                break
            if not math.isfinite(value):
                issues.append(ConfigIssue(source, f"line {number}", f"{name} is not finite"))
                bad = True
                break
            bound = PLAUSIBLE.get(name)
            if bound is not None and abs(value) > bound[0]:
                issues.append(
                    ConfigIssue(
                        source,
                        f"line {number}",
                        f"{name} {value:g} {bound[1]} is implausible (beyond ±{bound[0]:g})",
                    )
                )
                bad = True
                break
            parsed[name] = value
        if bad:
            continue
        if not 0.0 < parsed["voltage_v"] < 10.0:
            issues.append(
                ConfigIssue(
                    source, f"line {number}", f"voltage_v {parsed['voltage_v']} V is implausible"
                )
            )
            continue
        if parsed["time_s"] <= last_time:
            issues.append(
                ConfigIssue(source, f"line {number}", "time_s must increase from row to row")
            )
            continue
        if values and parsed["time_s"] - last_time > MAX_STEP_S:
            issues.append(
                ConfigIssue(
                    source,
                    f"line {number}",
                    f"time_s jumps {parsed['time_s'] - last_time:g} s from the row before "
                    f"(at most {MAX_STEP_S:g} s; split the trace)",
                )
            )
            continue
        last_time = parsed["time_s"]
        values.append(
            (
                parsed["time_s"],
                parsed["current_a"],
                parsed["voltage_v"],
                parsed.get("temp_c", math.nan),
            )
        )
    if issues:
        raise ConfigError(issues)
    if len(values) < 2:
        raise ConfigError(
            [ConfigIssue(source, f"line {header_index + 1}", "needs at least two data rows")]
        )
    data = np.asarray(values, dtype=np.float64)
    return Trace(source, data[:, 0].copy(), data[:, 1].copy(), data[:, 2].copy(), data[:, 3].copy())


def write_trace(path: Path, trace: Trace) -> None:
    """Write a trace in the same CSV format (used by tests and the benchmark)."""
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(COLUMNS) + "\n")
        for t, i, v, temp in zip(
            trace.time_s, trace.current_a, trace.voltage_v, trace.temp_c, strict=True
        ):
            temp_text = "" if math.isnan(temp) else f"{temp:.3f}"
            out.write(f"{t:.3f},{i:.6g},{v:.6f},{temp_text}\n")


__all__ = ["COLUMNS", "Trace", "read_trace", "write_trace"]
