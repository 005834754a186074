"""State files survive restarts; every bad form is reported and set aside, never loaded."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from tests_support import sealed_state_file

from bmsd.system.statefile import read_state, write_state

PAYLOAD = {"soc": [0.5, 0.51], "latched": ["cell_overvoltage"]}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_state(path, "estimates", 1, PAYLOAD)
    result = read_state(path, "estimates", 1)
    assert result.ok and result.payload == PAYLOAD
    assert result.age_s is not None and result.age_s < 5
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    result = read_state(tmp_path / "absent.json", "estimates", 1)
    assert not result.ok and "no state file" in result.problem


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: b"", "empty"),
        (lambda data: b"\x00" * len(data), "zeroed"),
        (lambda data: data[: len(data) // 2], "corrupt"),
        (lambda data: data.replace(b"0.51", b"0.99"), "checksum"),
        (lambda data: b"\xff\xfe garbage", "corrupt"),
        (lambda data: b"[1, 2, 3]", "fields missing"),
    ],
)
def test_damaged_files_give_a_reason_and_are_set_aside(tmp_path: Path, mangle, reason) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.json"
    write_state(path, "estimates", 1, PAYLOAD)
    path.write_bytes(mangle(path.read_bytes()))
    result = read_state(path, "estimates", 1)
    assert not result.ok
    assert reason in result.problem
    assert (tmp_path / "s.json.bad").exists()
    assert not path.exists()


def test_wrong_kind_and_version_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_state(path, "faults", 1, PAYLOAD)
    assert "not a estimates file" in read_state(path, "estimates", 1).problem
    write_state(path, "estimates", 2, PAYLOAD)
    assert "version 2" in read_state(path, "estimates", 1).problem


def test_too_old_file_is_refused_but_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_state(path, "estimates", 1, PAYLOAD)
    document = json.loads(path.read_text())
    document["written_at"] = time.time() - 3 * 86400
    path.write_text(json.dumps(document))
    result = read_state(path, "estimates", 1, max_age_s=86400)
    assert not result.ok and "too old" in result.problem
    assert path.exists(), "an old but intact file is not set aside"


def test_an_interrupted_write_leaves_the_old_file_and_its_leftover_is_removed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "estimates.json"
    write_state(path, "estimates", 1, {"soc": 0.5})
    # What a kill -9 between the temporary write and the rename leaves: a dead writer's file.
    finished = subprocess.Popen(["true"])
    finished.wait()
    leftover = tmp_path / f".estimates.json.{finished.pid}.tmp"
    leftover.write_text('{"kind": "estimates", "ver')
    live = tmp_path / f".estimates.json.{os.getpid()}.tmp"  # a write in progress: kept
    live.write_text("")
    result = read_state(path, "estimates", 1)
    assert result.payload == {"soc": 0.5}
    assert not leftover.exists()
    assert live.exists()


def _sealed(payload_text: str, written_at: str = "1.0e9") -> bytes:
    return sealed_state_file(payload_text, "estimates", written_at)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # A lone surrogate as a raw character of the payload text and as a JSON escape in it.
        (_sealed('{"a": "\ud800"}'), "Unicode"),
        (_sealed('{"a": "\\ud800"}'), "Unicode"),
        (_sealed('{"a": 1}', written_at="1" * 401), "time stamp"),
        (_sealed('{"a": 1}', written_at="1e999"), "time stamp"),
        (_sealed('{"a": 1}', written_at="NaN"), "time stamp"),
        (_sealed('{"a": 1}', written_at="true"), "time stamp"),
        (_sealed('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested too deeply"),
        (_sealed('{"a": ' + "9" * 5000 + "}"), "not JSON"),
    ],
)
def test_sealed_but_unusable_files_are_reported_not_raised(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(data)
    result = read_state(path, "estimates", 1)
    assert not result.ok
    assert reason in result.problem
    assert (tmp_path / "s.json.bad").read_bytes() == data, "set aside unchanged"
