"""A recording's error frames replay to the same bus faults the live daemon raises."""

from __future__ import annotations

import io
import json
from pathlib import Path

import can

from bmsd.canbus.errorframes import ErrorClass
from bmsd.config import load_config
from bmsd.replay import replay_log

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "etc" / "sim.toml"
BUS_OFF_AT_S = 2.0
END_S = 5.0


def _log(path: Path, *, bus_off: bool) -> Path:
    """Error frames at 10 per second (a bus in trouble), then bus-off at 2 s if asked."""
    with can.Logger(str(path)) as writer:
        for index in range(int(END_S * 10)):
            at_s = index * 0.1
            classes = ErrorClass.BUS_OFF if bus_off and at_s >= BUS_OFF_AT_S else ErrorClass.NO_ACK
            writer.on_message_received(
                can.Message(
                    timestamp=at_s,
                    arbitration_id=int(classes),
                    is_error_frame=True,
                    is_extended_id=False,
                    data=bytes(8),
                )
            )
    return path


def _fault_sets(log: Path) -> dict[str, float]:
    out = io.StringIO()
    replay_log(load_config(CONFIG), log, out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return {
        f"{r['fault']}.{r['level']}": float(r["time_s"])
        for r in records
        if r["type"] == "fault" and r["change"] == "set"
    }


def test_a_recorded_bus_off_trips_the_bus_fault_in_replay(tmp_path: Path) -> None:
    sets = _fault_sets(_log(tmp_path / "bus_off.blf", bus_off=True))
    # etc/protection/diagnostics.toml: can_bus_error.fatal at level 2 (bus-off), 3 samples and
    # a 1 s delay; error frames at 10/s are over can_error_frame_rate's warning (1/s).
    assert BUS_OFF_AT_S + 1.0 <= sets["can_bus_error.fatal"] <= BUS_OFF_AT_S + 1.5, sets
    assert "can_error_frame_rate.warning" in sets, sets


def test_error_frames_without_bus_off_warn_but_do_not_trip(tmp_path: Path) -> None:
    sets = _fault_sets(_log(tmp_path / "acks.blf", bus_off=False))
    assert "can_error_frame_rate.warning" in sets, sets
    assert not any(key.startswith("can_bus_error") for key in sets), sets
