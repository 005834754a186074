"""The background state writer: newest snapshot wins, the loop never waits for the disk."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from bmsd.system.statefile import read_state
from bmsd.system.statewriter import StateJob, StateWriter


def job(path: Path, value: int, what: str = "test state") -> StateJob:
    return StateJob(path, "test", 1, {"value": value}, what)


class BlockingDisk:
    """A write function that holds the writer thread until released (a slow fsync)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list[tuple[Path, int]] = []

    def __call__(self, path: Path, kind: str, version: int, payload: dict[str, Any]) -> None:
        self.entered.set()
        assert self.release.wait(10.0), "the test never released the disk"
        self.written.append((path, payload["value"]))


def test_snapshots_land_as_readable_state_files(tmp_path: Path) -> None:
    writer = StateWriter()
    writer.submit(job(tmp_path / "a.json", 1))
    writer.submit(job(tmp_path / "b.json", 2))
    assert writer.close()
    assert read_state(tmp_path / "a.json", "test", 1).payload == {"value": 1}
    assert read_state(tmp_path / "b.json", "test", 1).payload == {"value": 2}
    assert writer.stats.writes == 2 and writer.stats.failures == 0


def test_submit_returns_while_the_disk_is_stuck_and_the_newest_snapshot_wins(
    tmp_path: Path,
) -> None:
    disk = BlockingDisk()
    writer = StateWriter(disk)
    path = tmp_path / "soc.json"
    writer.submit(job(path, 1))
    assert disk.entered.wait(5.0)  # the thread is inside the first write, blocked
    for value in (2, 3, 4):  # the control loop goes on submitting: none of these blocks
        writer.submit(job(path, value))
    assert not writer.flush(timeout_s=0.05)  # still stuck: flush says so instead of hanging
    disk.release.set()
    assert writer.close()
    # 2 and 3 were superseded before the disk was free: only the newest is written.
    assert disk.written == [(path, 1), (path, 4)]
    assert writer.stats.replaced == 2


def test_a_failing_disk_is_logged_once_per_interval_counted_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "file-not-dir"
    missing.write_text("")  # a file where the state directory should be: every write fails
    writer = StateWriter()
    caplog.set_level(logging.ERROR, "bmsd.system.statewriter")
    for value in range(3):
        writer.submit(job(missing / "soc.json", value, "SOC/SOH state"))
        assert writer.flush()
    assert writer.stats.failures == 3 and writer.stats.writes == 0
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1
    assert "cannot save the SOC/SOH state" in errors[0] and str(missing) in errors[0]
    missing.unlink()  # the disk is back: the next snapshot lands
    writer.submit(job(missing / "soc.json", 9))
    assert writer.close()
    assert read_state(missing / "soc.json", "test", 1).payload == {"value": 9}


def test_a_nan_payload_is_refused_and_the_last_good_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "soc.json"
    writer = StateWriter()
    writer.submit(job(path, 1))
    assert writer.flush()
    writer.submit(StateJob(path, "test", 1, {"value": float("nan")}, "SOC/SOH state"))
    assert writer.close()
    assert writer.stats.failures == 1
    assert read_state(path, "test", 1).payload == {"value": 1}


def test_after_close_a_submit_writes_at_once(tmp_path: Path) -> None:
    writer = StateWriter()
    assert writer.close()
    writer.submit(job(tmp_path / "late.json", 7))
    assert read_state(tmp_path / "late.json", "test", 1).payload == {"value": 7}
