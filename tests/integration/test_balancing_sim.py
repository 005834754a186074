"""Balancing on the simulated pack of etc/sim.toml, as a new user runs it.

The daemon process logs the pack summary: with the injected cell offsets ([[sim.soc_offsets]])
the SOC strategy makes a plan, cells bleed, the Ah bled rise, the charge left to bleed and the
imbalance fall; SIGTERM saves the bled Ah, and a restart continues from them.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests_support import ROOT

from bmsd.balancing.coordinator import STATE_FILE
from bmsd.system.statefile import read_state

BALANCING = re.compile(
    r"bal=soc:(?P<state>\w+) spread=(?P<spread>[\d.]+)% left=(?P<left>[\d.]+)Ah "
    r"bled=(?P<bled>[\d.]+)Ah"
)


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    args = [
        sys.executable, "-m", "bmsd.cli", "run", "--config", str(ROOT / "etc" / "sim.toml"),
        "--set", f"state.directory='{tmp_path / 'state'}'",
        "--set", "control.summary_log_interval_s=1.0",
        "--set", f"can.slaves.channel='bal-{tmp_path.name}'",
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def _balancing_lines(process: subprocess.Popen[str], wanted: int) -> list[dict[str, str]]:
    assert process.stderr is not None
    found: list[dict[str, str]] = []
    for _ in range(5000):
        line = process.stderr.readline()
        if not line:
            break
        match = BALANCING.search(line)
        if match and float(match["left"]) > 0.0:
            found.append(match.groupdict())
            if len(found) == wanted:
                break
    return found


def test_spread_falls_in_the_published_state_and_bled_ah_survive_a_restart(
    tmp_path: Path,
) -> None:
    process = _start(tmp_path)
    try:
        lines = _balancing_lines(process, 12)
        assert len(lines) == 12, "no balancing plan in the summary lines"
        first, last = lines[0], lines[-1]
        assert float(last["bled"]) > float(first["bled"]), "nothing bled"
        assert float(last["left"]) < float(first["left"]), "the charge left does not fall"
        assert float(last["spread"]) <= float(first["spread"])
        assert any(line["state"].endswith("cells") for line in lines)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    saved = read_state(tmp_path / "state" / STATE_FILE, "balancing", 1)
    assert saved.payload is not None, saved.problem
    bled_total = sum(saved.payload["bled_ah"])
    assert bled_total >= float(last["bled"]) - 1e-4
    again = _start(tmp_path)
    try:
        lines = _balancing_lines(again, 1)
        assert lines and float(lines[0]["bled"]) >= bled_total - 1e-4, "bled Ah not restored"
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=15)
