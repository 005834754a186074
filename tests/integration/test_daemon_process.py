"""The daemon as a user runs it: `bmsd run --config etc/sim.toml` as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests_support import ROOT, read_summaries


def _start(tmp_path: Path, *overrides: str) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "bmsd.cli",
        "run",
        "--config",
        str(ROOT / "etc" / "sim.toml"),
        "--set",
        f"state.directory='{tmp_path / 'state'}'",
        "--set",
        "metrics.port=0",  # ephemeral: tests run in parallel
        "--set",
        "control.summary_log_interval_s=0.5",
        "--set",
        f"can.slaves.channel='test-{tmp_path.name}'",
    ]
    for override in overrides:
        args += ["--set", override]
    return subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def test_daemon_runs_on_simulated_pack_and_stops_on_sigterm(tmp_path: Path) -> None:
    process = _start(tmp_path)
    try:
        summaries = read_summaries(process, lambda m: m["modules"] == "4/4", wanted=3, limit_s=30)
        assert len(summaries) == 3, "the daemon did not log three pack summaries"
        ticks = [int(m["tick"]) for m in summaries]
        assert ticks[0] < ticks[1] < ticks[2], "ticks do not advance"
        # 64 LFP cells at ~55 % SOC: ~3.2-3.4 V per cell, ~205-215 V for the pack.
        for summary in summaries:
            assert 190.0 < float(summary["pack_v"]) < 230.0
            assert 3.0 < float(summary["cell_min"]) <= float(summary["cell_max"]) < 3.5
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
        assert code == 0
        assert time.monotonic() - started < 2.0, "did not stop within 2 s of SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_daemon_refuses_a_bad_override_with_exit_code_2(tmp_path: Path) -> None:
    process = _start(tmp_path, "control.tick_s=0.001")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "control.tick_s" in stderr
