"""Helpers shared by the tests: paths, and reading the daemon's pack summary lines."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUMMARY = re.compile(
    r"pack tick=(?P<tick>\d+) mode=(?P<mode>\w+) "
    r"CVL=(?P<cvl_v>[\d.]+)V CCL=(?P<ccl_a>[\d.]+)A DCL=(?P<dcl_a>[\d.]+)A "
    r"(?:SOC=(?P<soc_pct>[\d.]+)%\(±(?P<soc_std_pct>[\d.]+)\) )?"
    r"V=(?P<pack_v>[\d.]+|\?)V? I=(?P<current_a>[+-][\d.]+|\?)A? "
    r"cells=(?:(?P<cell_min>[\d.]+)\.\.(?P<cell_max>[\d.]+)V|\?).*?modules=(?P<modules>\d+/\d+)"
)


def read_summaries(
    process: subprocess.Popen[str],
    accept: Callable[[dict[str, str]], bool],
    *,
    wanted: int,
    limit_s: float,
) -> list[dict[str, str]]:
    """Read the process's stderr until ``wanted`` accepted summary lines (or the time limit)."""
    assert process.stderr is not None
    found: list[dict[str, str]] = []
    deadline = time.monotonic() + limit_s
    while len(found) < wanted and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        match = SUMMARY.search(line)
        if match and accept(match.groupdict()):
            found.append(match.groupdict())
    return found


def sealed_state_file(payload_text: str, kind: str, written_at: str = "1.0e9") -> bytes:
    """A state file with a correct envelope and checksum around any payload text (as a bug or
    an older writer could leave it): only the payload's content can be wrong. ``written_at``
    is JSON text, so an out-of-range time stamp can be written too."""
    import hashlib
    import json

    digest = hashlib.sha256(payload_text.encode("utf-8", "surrogatepass")).hexdigest()
    text = (
        f'{{"kind": {json.dumps(kind)}, "version": 1, "written_at": {written_at}, '
        f'"sha256": "{digest}", "payload": {json.dumps(payload_text)}}}'
    )
    return text.encode("utf-8")
