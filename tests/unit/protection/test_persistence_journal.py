"""Latched faults on disk (LatchedFaultStore) and the fault journal (FaultJournal).

The latched set is written only when it changes, read back by a new store as a restarted
daemon would, and every kind of damage a power cut can leave (empty, truncated, zeroed,
garbage, a checksum that does not match) is reported as a problem, never raised. The journal
appends one JSON line per event with a freeze frame, rotates past ``max_bytes`` keeping
``keep`` old files, and reads back oldest first across them, skipping a torn last line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from tests_support import sealed_state_file

from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultEvent, FaultLevel, FaultState, LevelState
from bmsd.model.readings import ContactorFeedback
from bmsd.model.snapshot import Extremes
from bmsd.model.state import PackState
from bmsd.model.topology import Location
from bmsd.protection.faults import initial_state, restore_latched
from bmsd.protection.journal import FILE_NAME as JOURNAL_NAME
from bmsd.protection.journal import FaultJournal, freeze_frame, read_journal
from bmsd.protection.persistence import FILE_NAME as LATCH_NAME
from bmsd.protection.persistence import LatchedFaultStore, latched_payload
from bmsd.protection.table import FaultSpec, LevelSpec

TABLE = {
    "cell_voltage_high": FaultSpec(
        quantity="cell_voltage_max_v",
        warning=LevelSpec(threshold=3.55, latch=True),
        fatal=LevelSpec(threshold=3.65),
    ),
    "module_comm_loss": FaultSpec(quantity="module_silence_s", fatal=LevelSpec(threshold=2.0)),
}


def latched(*keys: str, value: float | None = 3.7, set_count: int = 1) -> FaultState:
    """The table's fault state with ``keys`` latched."""
    levels = []
    for level in initial_state(TABLE).levels:
        if level.key in keys:
            level = LevelState(
                level.fault_id,
                level.level,
                counter=1,
                tripped=True,
                tripped_since=1.0,
                active=True,
                latched=True,
                set_count=set_count,
                first_set_at=1.0,
                last_set_at=1.0,
                value_at_set=value,
            )
        levels.append(level)
    return FaultState(tuple(levels))


# -- LatchedFaultStore -----------------------------------------------------------------------


def test_no_file_yet_is_no_problem(tmp_path: Path) -> None:
    assert LatchedFaultStore(tmp_path).load() == ({}, "")


def test_writes_only_when_the_latched_set_changes(tmp_path: Path) -> None:
    store = LatchedFaultStore(tmp_path)
    store.load()
    path = tmp_path / LATCH_NAME
    assert store.save_if_changed(latched()) is False  # nothing latched, nothing on disk
    assert not path.exists()
    assert store.save_if_changed(latched("cell_voltage_high.fatal")) is True
    first = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    assert store.save_if_changed(latched("cell_voltage_high.fatal")) is False
    assert store.save_if_changed(latched("cell_voltage_high.fatal", set_count=2)) is False
    assert path.read_bytes() == first and path.stat().st_mtime_ns == stamp
    assert store.save_if_changed(latched("cell_voltage_high.fatal", "module_comm_loss.fatal"))
    assert store.save_if_changed(latched()) is True  # a reset empties the file
    assert LatchedFaultStore(tmp_path).load() == ({}, "")


def test_a_new_store_reads_the_same_latched_faults(tmp_path: Path) -> None:
    faults = latched("cell_voltage_high.fatal", "cell_voltage_high.warning", set_count=2)
    LatchedFaultStore(tmp_path).save_if_changed(faults)
    loaded, problem = LatchedFaultStore(tmp_path).load()
    assert problem == ""
    assert loaded == latched_payload(faults)
    assert loaded == {
        "cell_voltage_high.warning": {"set_count": 2, "value_at_set": 3.7},
        "cell_voltage_high.fatal": {"set_count": 2, "value_at_set": 3.7},
    }
    # What was loaded re-latches the same levels in a fresh fault state.
    restored = restore_latched(initial_state(TABLE), loaded, 100.0, TABLE)
    assert {level.key for level in restored.latched()} == set(loaded)
    assert restored.has_fatal


def test_a_reloaded_store_does_not_rewrite_the_same_set(tmp_path: Path) -> None:
    faults = latched("module_comm_loss.fatal")
    LatchedFaultStore(tmp_path).save_if_changed(faults)
    again = LatchedFaultStore(tmp_path)
    again.load()
    assert again.save_if_changed(faults) is False


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_value_at_set_is_stored_as_none(tmp_path: Path, value: float) -> None:
    LatchedFaultStore(tmp_path).save_if_changed(latched("module_comm_loss.fatal", value=value))
    loaded, problem = LatchedFaultStore(tmp_path).load()
    assert problem == ""
    assert loaded["module_comm_loss.fatal"]["value_at_set"] is None


def _damage_truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _damage_checksum(data: bytes) -> bytes:
    document = json.loads(data)
    document["payload"] = document["payload"].replace("cell_voltage_high", "cell_voltage_hogh")
    return json.dumps(document).encode()


def _damage_kind(data: bytes) -> bytes:
    document = json.loads(data)
    document["kind"] = "soc-estimate"
    return json.dumps(document).encode()


def _damage_table(data: bytes) -> bytes:
    from bmsd.system.statefile import _digest

    document = json.loads(data)
    payload = json.dumps({"latched": ["cell_voltage_high.fatal"]})
    document["payload"], document["sha256"] = payload, _digest(payload)
    return json.dumps(document).encode()


DAMAGE = [
    pytest.param(lambda data: b"", "empty", id="empty"),
    pytest.param(_damage_truncate, "corrupt", id="truncated"),
    pytest.param(lambda data: b"\x00" * len(data), "zeroed", id="zeroed"),
    pytest.param(lambda data: b"\xff\xfe garbage", "corrupt", id="garbage"),
    pytest.param(_damage_checksum, "checksum", id="checksum-mismatch"),
    pytest.param(_damage_kind, "not a latched-faults file", id="foreign-file"),
    pytest.param(_damage_table, "no latched table", id="latched-not-a-table"),
]


@pytest.mark.parametrize(("damage", "problem"), DAMAGE)
def test_damaged_file_is_a_problem_not_an_exception(
    tmp_path: Path, damage: Any, problem: str
) -> None:
    LatchedFaultStore(tmp_path).save_if_changed(latched("cell_voltage_high.fatal"))
    path = tmp_path / LATCH_NAME
    path.write_bytes(damage(path.read_bytes()))
    store = LatchedFaultStore(tmp_path)
    loaded, found = store.load()
    assert loaded == {}
    assert problem in found
    # The next change writes a good file again.
    assert store.save_if_changed(latched("module_comm_loss.fatal")) is True
    assert list(LatchedFaultStore(tmp_path).load()[0]) == ["module_comm_loss.fatal"]


def test_damaged_file_is_kept_aside_for_the_post_mortem(tmp_path: Path) -> None:
    LatchedFaultStore(tmp_path).save_if_changed(latched("cell_voltage_high.fatal"))
    path = tmp_path / LATCH_NAME
    path.write_bytes(b"\x00" * 64)
    assert LatchedFaultStore(tmp_path).load()[1]
    assert (tmp_path / f"{LATCH_NAME}.bad").read_bytes() == b"\x00" * 64


GOOD = {"set_count": 2, "value_at_set": 3.71}


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(None, id="null"),  # read as "not latched" before: a fatal fault un-latched
        pytest.param("yes", id="string"),
        pytest.param([1, 2], id="list"),
        pytest.param({}, id="empty-record"),
        pytest.param({"set_count": 1}, id="no-value"),
        pytest.param({"set_count": "x", "value_at_set": 3.7}, id="count-string"),
        pytest.param({"set_count": True, "value_at_set": 3.7}, id="count-bool"),
        pytest.param({"set_count": 0, "value_at_set": 3.7}, id="count-zero"),
        pytest.param({"set_count": 10**400, "value_at_set": 3.7}, id="count-huge"),
        pytest.param({"set_count": 1.5, "value_at_set": 3.7}, id="count-float"),
        pytest.param({"set_count": 1, "value_at_set": "x"}, id="value-string"),
        pytest.param({"set_count": 1, "value_at_set": 10**400}, id="value-huge-int"),
        pytest.param({"set_count": 1, "value_at_set": [3.7]}, id="value-list"),
        pytest.param({"set_count": 1, "value_at_set": 3.7, "x": 1}, id="extra-key"),
    ],
)
def test_unreadable_entry_makes_the_file_damaged_and_keeps_the_rest_latched(
    tmp_path: Path, entry: Any
) -> None:
    path = tmp_path / LATCH_NAME
    payload = {"latched": {"cell_voltage_high.fatal": entry, "module_comm_loss.fatal": GOOD}}
    path.write_bytes(sealed_state_file(json.dumps(payload), "latched-faults"))
    data = path.read_bytes()
    loaded, problem = LatchedFaultStore(tmp_path).load()
    assert "cell_voltage_high.fatal" in problem, "damaged, naming the entry"
    assert loaded == {"module_comm_loss.fatal": GOOD}
    assert (tmp_path / f"{LATCH_NAME}.bad").read_bytes() == data
    # What the daemon then does with it: the readable entry latched, the rest via "damaged".
    state = restore_latched(initial_state(TABLE), loaded, 5.0, TABLE)
    assert [level.key for level in state.latched()] == ["module_comm_loss.fatal"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00" * 64, id="zeroed"),
        pytest.param(b"{ torn", id="torn"),
        pytest.param(
            sealed_state_file('{"latched": {"cell_voltage_high.fatal": null}}', "latched-faults"),
            id="null-entry",
        ),
    ],
)
def test_a_restart_before_the_first_write_finds_the_file_damaged_again(
    tmp_path: Path, content: bytes
) -> None:
    """A crash between start-up and the first tick must not leave "no file" (= not latched)."""
    path = tmp_path / LATCH_NAME
    path.write_bytes(content)
    for _ in range(2):
        loaded, problem = LatchedFaultStore(tmp_path).load()
        assert problem and "cell_voltage_high.fatal" not in loaded
    assert path.read_bytes() == content
    assert (tmp_path / f"{LATCH_NAME}.bad").read_bytes() == content


@pytest.mark.parametrize("table", [None, "yes", [], 3])
def test_a_latched_table_of_the_wrong_type_is_damaged(tmp_path: Path, table: Any) -> None:
    path = tmp_path / LATCH_NAME
    path.write_bytes(sealed_state_file(json.dumps({"latched": table}), "latched-faults"))
    loaded, problem = LatchedFaultStore(tmp_path).load()
    assert loaded == {} and "corrupt" in problem
    assert (tmp_path / f"{LATCH_NAME}.bad").exists()


@pytest.mark.parametrize("entry", [None, "yes", [], {"set_count": "x", "value_at_set": "x"}])
def test_restore_latched_latches_any_key_present_whatever_its_record(entry: Any) -> None:
    """Defence in depth behind the store's check: present means latched, never a crash."""
    state = restore_latched(initial_state(TABLE), {"cell_voltage_high.fatal": entry}, 5.0, TABLE)
    (level,) = state.latched()
    assert level.key == "cell_voltage_high.fatal" and level.set_count == 1
    assert level.value_at_set is None


# -- FaultJournal ----------------------------------------------------------------------------


def pack_state(mode: BmsMode = BmsMode.FAULT) -> PackState:
    """The parts of a PackState the freeze frame reads."""
    snapshot = SimpleNamespace(
        pack_voltage_v=211.2,
        pack_current_a=-12.5,
        bus_voltage_v=210.9,
        cell_voltage=Extremes(3.21, Location(0, 1, 2), 3.71234, Location(0, 3, 15), 3.3, 64),
        temperature=Extremes(21.004, Location(0, 0, 1), 29.456, Location(0, 2, 3), 25.0, 16),
        invalid_cell_count=0,
        contactors=ContactorFeedback(True, False, True, 9.9),
    )
    return cast(PackState, SimpleNamespace(snapshot=snapshot, mode=mode))


def event(k: int, kind: str = "set") -> FaultEvent:
    return FaultEvent(
        float(k), kind, "cell_voltage_high", FaultLevel.FATAL, 3.7, 3.65, f"event {k}"
    )


def test_freeze_frame_summarises_the_snapshot() -> None:
    assert freeze_frame(pack_state()) == {
        "mode": "fault",
        "pack_voltage_v": 211.2,
        "pack_current_a": -12.5,
        "bus_voltage_v": 210.9,
        "cell_voltage_min_v": 3.21,
        "cell_voltage_min_at": "s0/m1/c2",
        "cell_voltage_max_v": 3.7123,
        "cell_voltage_max_at": "s0/m3/c15",
        "temp_min_c": 21.0,
        "temp_max_c": 29.46,
        "invalid_cells": 0,
        "contactors": [True, True, False],
    }


def test_append_writes_one_line_per_event_with_freeze_frame(tmp_path: Path) -> None:
    journal = FaultJournal(tmp_path / "state")
    journal.append((event(1), event(2, "reset")), pack_state())
    lines = (tmp_path / "state" / JOURNAL_NAME).read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert {k: first[k] for k in ("time_s", "change", "fault", "level", "value", "threshold")} == {
        "time_s": 1.0,
        "change": "set",
        "fault": "cell_voltage_high",
        "level": "fatal",
        "value": 3.7,
        "threshold": 3.65,
    }
    assert first["message"] == "event 1"
    assert first["freeze_frame"] == freeze_frame(pack_state())
    assert isinstance(first["wall_time"], float)
    assert json.loads(lines[1])["change"] == "reset"
    assert [r["time_s"] for r in read_journal(tmp_path / "state")] == [1.0, 2.0]


def test_append_nothing_writes_nothing(tmp_path: Path) -> None:
    FaultJournal(tmp_path).append((), pack_state())
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert read_journal(tmp_path) == []


@pytest.mark.parametrize("keep", [1, 2, 4])
def test_rotation_keeps_n_files_and_reads_oldest_first(tmp_path: Path, keep: int) -> None:
    journal = FaultJournal(tmp_path, max_bytes=2000, keep=keep)
    for k in range(60):
        journal.append((event(k),), pack_state())
    names = sorted(path.name for path in tmp_path.iterdir())
    rotated = [name for name in names if name != JOURNAL_NAME]
    assert rotated == [f"{JOURNAL_NAME}.{i}" for i in range(1, keep + 1)]
    for path in tmp_path.iterdir():
        # Each file passed max_bytes by at most one append before rotating.
        assert path.stat().st_size <= 2000 + 1000
    times = [record["time_s"] for record in read_journal(tmp_path, keep=keep)]
    assert times == sorted(times)
    assert times[-1] == 59.0  # the newest is kept
    assert times == [float(k) for k in range(int(times[0]), 60)]  # contiguous: nothing lost
    assert times[0] > 0.0  # the oldest were dropped


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    journal = FaultJournal(tmp_path)
    journal.append((event(1), event(2)), pack_state())
    with (tmp_path / JOURNAL_NAME).open("a") as handle:
        handle.write('{"time_s": 3.0, "change": "se')  # a power cut mid-write
    assert [r["time_s"] for r in read_journal(tmp_path)] == [1.0, 2.0]


def test_unreadable_and_non_object_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_text('[1, 2]\n\x00\x00\x00\n{"time_s": 7.0}\n', encoding="utf-8")
    assert read_journal(tmp_path) == [{"time_s": 7.0}]


def test_event_after_a_torn_line_is_not_lost(tmp_path: Path) -> None:
    journal = FaultJournal(tmp_path)
    journal.append((event(1),), pack_state())
    with (tmp_path / JOURNAL_NAME).open("a") as handle:
        handle.write('{"time_s": 2.0, "chan')  # killed mid-write
    FaultJournal(tmp_path).append((event(3),), pack_state())  # the restarted daemon
    assert [r["time_s"] for r in read_journal(tmp_path)] == [1.0, 3.0]
