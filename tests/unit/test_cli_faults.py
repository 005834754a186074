"""``bmsd faults`` on a journal with damaged entries: listed without them, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmsd.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "etc" / "sim.toml"
GOOD = {
    "wall_time": 1.7e9,
    "change": "set",
    "message": "cell_voltage_high.fatal set",
    "freeze_frame": {"cell_voltage_min_v": 3.2, "cell_voltage_max_v": 3.7, "mode": "fault"},
}


def faults(state_dir: Path, *args: str) -> int:
    return main(
        ["faults", "--config", str(CONFIG), "--set", f"state.directory='{state_dir}'", *args]
    )


@pytest.mark.parametrize(
    "bad",
    [
        # Found by review: each raised from the listing.
        pytest.param({"wall_time": "yesterday"}, id="time-string"),
        pytest.param({"wall_time": 1e999}, id="time-inf"),  # written as Infinity
        pytest.param({"wall_time": 1e300}, id="time-beyond-platform"),
        pytest.param({"wall_time": 10**400}, id="time-huge-int"),
        pytest.param({"wall_time": True}, id="time-bool"),
        pytest.param({"freeze_frame": "oops"}, id="frame-string"),
        pytest.param({"freeze_frame": [1, 2]}, id="frame-list"),
    ],
)
def test_an_entry_with_wrong_types_is_skipped_and_counted(
    tmp_path: Path, bad: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "fault-journal.jsonl"
    lines = [json.dumps(GOOD), json.dumps({**GOOD, **bad}), json.dumps(GOOD)]
    journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert faults(tmp_path) == 0
    out = capsys.readouterr().out
    assert out.count("cell_voltage_high.fatal set") == 2, out
    assert "(1 journal entry skipped" in out


def test_odd_but_printable_fields_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = {**GOOD, "change": ["x"], "message": "lone \ud800 surrogate"}
    (tmp_path / "fault-journal.jsonl").write_text(json.dumps(odd) + "\n", encoding="utf-8")
    assert faults(tmp_path) == 0
    out = capsys.readouterr().out
    assert "lone ? surrogate" in out and "skipped" not in out


@pytest.mark.parametrize("last", ["-2", "x"])
def test_a_bad_last_count_is_a_usage_error(
    tmp_path: Path, last: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        faults(tmp_path, "--last", last)
    assert exit_info.value.code == 2
    assert "--last" in capsys.readouterr().err
