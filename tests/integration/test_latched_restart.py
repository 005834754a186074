"""A latched fault survives kill -9; only an audited reset, once the cause is gone, clears it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests_support import ROOT, read_summaries


def _bmsd(tmp_path: Path, command: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "bmsd.cli", command, "--config", str(ROOT / "etc" / "sim.toml"),
        "--set", f"state.directory='{tmp_path / 'state'}'",
        "--set", "metrics.port=0",  # ephemeral: tests run in parallel
        "--set", f"can.slaves.channel='latch-{tmp_path.name}'",
        "--set", "control.summary_log_interval_s=0.3",
        *extra,
    ]  # fmt: skip


def _daemon(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _bmsd(tmp_path, "run", *extra), cwd=ROOT, stderr=subprocess.PIPE, text=True
    )


def _faults(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _bmsd(tmp_path, "faults", *extra), cwd=ROOT, capture_output=True, text=True, timeout=30
    )


def test_latched_fault_survives_kill_9_and_needs_a_reset(tmp_path: Path) -> None:
    silent = "sim.faults=[{kind='silent_module', start_s=2.0, module=2}]"
    first = _daemon(tmp_path, "--set", silent)
    try:
        in_fault = read_summaries(first, lambda m: m["mode"] == "fault", wanted=1, limit_s=30)
        assert in_fault, "a silent module must end in fault"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    listed = _faults(tmp_path)
    assert "latched faults: module_comm_loss.fatal" in listed.stdout

    # Restart without the injected fault: the latch must hold although the cause is gone.
    second = _daemon(tmp_path)
    try:
        summaries = read_summaries(second, lambda m: m["modules"] == "4/4", wanted=3, limit_s=30)
        assert [s["mode"] for s in summaries] == ["fault"] * 3
        reset = _faults(tmp_path, "--reset")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        assert "reset accepted" in reset.stdout
        closed = read_summaries(second, lambda m: m["mode"] == "closed", wanted=1, limit_s=30)
        assert closed, "after the reset the pack closes again"
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
    journal = _faults(tmp_path, "--last", "0")
    assert "module_comm_loss.fatal set" in journal.stdout
    assert "module_comm_loss.fatal reset by control socket (bmsd faults --reset" in journal.stdout


def test_reset_is_refused_while_the_cause_is_present(tmp_path: Path) -> None:
    daemon = _daemon(
        tmp_path, "--set", "sim.faults=[{kind='silent_module', start_s=1.0, module=0}]"
    )
    try:
        assert read_summaries(daemon, lambda m: m["mode"] == "fault", wanted=1, limit_s=30)
        reset = _faults(tmp_path, "--reset")
        assert reset.returncode == 1
        assert "reset illegal: a latched fault's cause is still present" in reset.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)


def test_damaged_latch_file_starts_in_fault(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "latched-faults.json").write_bytes(b"\x00" * 64)  # a power cut during a write
    daemon = _daemon(tmp_path)
    try:
        summaries = read_summaries(daemon, lambda m: m["modules"] == "4/4", wanted=2, limit_s=30)
        assert [s["mode"] for s in summaries] == ["fault", "fault"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
    assert "latched_faults_lost.fatal" in _faults(tmp_path).stdout
