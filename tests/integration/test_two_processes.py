"""Simulator and daemon as two processes on a CAN link (python-can serial over a socat pty pair).

This is how hardware in the loop is wired: `bmsd sim` plays the battery on one end of a link,
`bmsd run` manages it from the other.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests_support import ROOT, read_summaries

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")


def _bmsd(command: str, channel: Path, state: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bmsd.cli",
        command,
        "--config",
        str(ROOT / "etc" / "sim.toml"),
        "--set",
        "can.slaves.interface='serial'",
        "--set",
        f"can.slaves.channel='{channel}'",
        "--set",
        "sim.enabled=false",
        "--set",
        f"state.directory='{state}'",
        "--set",
        "metrics.port=0",  # ephemeral: tests run in parallel
        "--set",
        "control.summary_log_interval_s=0.5",
    ]


def test_daemon_reads_a_simulator_in_another_process(tmp_path: Path) -> None:
    end_a, end_b = tmp_path / "pty-sim", tmp_path / "pty-bmsd"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={end_a}", f"pty,raw,echo=0,link={end_b}"],
        stderr=subprocess.DEVNULL,
    )
    processes = [socat]
    try:
        deadline = time.monotonic() + 10
        while not (end_a.exists() and end_b.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        sim = subprocess.Popen(
            _bmsd("sim", end_a, tmp_path / "s1"), cwd=ROOT, stderr=subprocess.DEVNULL
        )
        processes.append(sim)
        daemon = subprocess.Popen(
            _bmsd("run", end_b, tmp_path / "s2"), cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        processes.append(daemon)
        # Every module and the current sensor fresh at once (on a loaded machine the pty link
        # can lag for a moment, and a summary may show the sensor stale as "?").
        summaries = read_summaries(
            daemon, lambda m: m["modules"] == "4/4" and m["pack_v"] != "?", wanted=2, limit_s=30
        )
        assert len(summaries) == 2, "the daemon never saw all four modules and the sensor"
        assert 190.0 < float(summaries[-1]["pack_v"]) < 230.0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=10) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
