"""`bmsd replay` / `explain` on broken logs: a clear one-line error, never a traceback or a hang;
a long silence in the log is skipped (and noted), not ticked through."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import can
import pytest

from bmsd.cli import main
from bmsd.config import load_config
from bmsd.errors import BmsdError
from bmsd.replay import max_gap_s, replay_log

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "etc" / "sim.toml"


class _Bounded(io.StringIO):
    """An output that fails instead of growing without end (a regression must not hang)."""

    def write(self, text: str) -> int:
        if self.tell() > 5_000_000:
            raise AssertionError("replay output without bound")
        return super().write(text)


def _replay(log: Path) -> tuple[list[dict[str, object]], int]:
    out = _Bounded()
    result = replay_log(load_config(CONFIG), log, out)
    return [json.loads(line) for line in out.getvalue().splitlines()], result.ticks


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["replay", "--config", str(CONFIG), *args])
    return code, capsys.readouterr().err


def _blf(path: Path) -> Path:
    with can.BLFWriter(str(path)) as writer:
        for index in range(50):
            writer.on_message_received(
                can.Message(timestamp=index * 0.01, arbitration_id=0x123, data=bytes(8))
            )
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("(0.0) vcan0 123#00\n(inf) vcan0 123#00\n", "frame 2: timestamp inf is not a finite"),
        ("(nan) vcan0 123#00\n(1.0) vcan0 123#00\n", "frame 1: timestamp nan is not a finite"),
        ("(0.0) vcan0 123#00\n(1e300) vcan0 123#00\n", "frame 2: timestamp 1e+300 s is absurd"),
        ("(10.0) vcan0 123#00\n(5.0) vcan0 123#00\n", "frame 2: time goes back 5 s"),
        ("(0.0) vcan0 123##\n", "cannot read log"),  # python-can: IndexError
    ],
)
def test_bad_timestamps_and_lines_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    log = tmp_path / "bad.log"
    log.write_text(text)
    with pytest.raises(BmsdError, match=re.escape(needle)):
        _replay(log)
    code, err = _cli(capsys, str(log), "-o", str(tmp_path / "out.jsonl"))
    assert code == 1 and err.splitlines()[-1].startswith(f"bmsd: {log}: ")
    assert needle in err
    code = main(["explain", "--config", str(CONFIG), str(log)])
    assert code == 1 and needle in capsys.readouterr().err


def test_a_long_jump_is_a_noted_gap_not_every_tick(tmp_path: Path) -> None:
    log = tmp_path / "jump.log"
    log.write_text("(0.0) vcan0 123#00\n(1e12) vcan0 123#00\n(1e12) vcan0 123#00\n")
    records, ticks = _replay(log)
    gap_s = max_gap_s(load_config(CONFIG))
    tick_s = load_config(CONFIG).control.tick_s
    gaps = [r for r in records if r.get("kind") == "replay_gap"]
    assert len(gaps) == 1 and gaps[0]["gap_s"] == 1e12 and gaps[0]["frame"] == 2
    # Ticked through the comm-loss timeouts up to the bound, then on at the new time.
    assert gap_s / tick_s <= ticks <= gap_s / tick_s + 3
    times = [float(str(r["time_s"])) for r in records if r["type"] == "state"]
    assert max(t for t in times if t < 1e12) <= gap_s + tick_s
    assert 1 <= len([t for t in times if t >= 1e12]) <= 3


def test_small_reordering_is_taken_at_the_newest_time(tmp_path: Path) -> None:
    log = tmp_path / "jitter.log"
    log.write_text("(1.0) vcan0 123#00\n(2.0) vcan0 123#00\n(1.9) vcan0 123#00\n")
    out = _Bounded()
    result = replay_log(load_config(CONFIG), log, out)
    assert result.reordered == 1 and result.frames == 3


@pytest.mark.parametrize("damage", ["empty", "header", "compressed"])
def test_broken_blf_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    log = _blf(tmp_path / "good.blf")
    data = bytearray(log.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "header":
        data = bytearray(b"LOGG" + bytes(12))
    else:  # inside the first zlib-compressed container: zlib.error
        for offset in range(180, 200):
            data[offset] ^= 0xFF
    broken = tmp_path / f"{damage}.blf"
    broken.write_bytes(bytes(data))
    code, err = _cli(capsys, str(broken), "-o", str(tmp_path / "out.jsonl"))
    assert code == 1 and err.splitlines()[-1].startswith(f"bmsd: {broken}: cannot read log"), err


def test_unwritable_output_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _blf(tmp_path / "good.blf")
    for output in (tmp_path, tmp_path / "missing" / "out.jsonl"):
        code, err = _cli(capsys, str(log), "-o", str(output))
        assert code == 1 and err.splitlines()[-1].startswith(f"bmsd: {output}: cannot write"), err
    code, err = _cli(capsys, str(log), "-o", str(log))
    assert code == 1 and "would overwrite the log" in err
    assert log.stat().st_size > 0
    code, err = _cli(capsys, str(log), "-o", str(tmp_path / "out.jsonl"))
    assert code == 0 and "replayed 50 frames" in err
