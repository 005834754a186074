"""A recording of an over-voltage event replays to the same fault at the right log time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import can
import cantools

from bmsd.app import Daemon
from bmsd.config import load_config
from bmsd.model.state import PackState

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD_V = 3.65  # etc/protection/lfp.toml: cell_voltage_high.fatal
DEBOUNCE_TICKS, SET_DELAY_S, TICK_S = 5, 0.2, 0.1


def _overrides(tmp_path: Path, log_path: Path) -> tuple[str, ...]:
    return (
        f"can.slaves.channel='ov-{tmp_path.name}'",
        f"can.slaves.record='{log_path}'",
        f"state.directory='{tmp_path / 'state'}'",
        "metrics.port=0",  # ephemeral: tests run in parallel
        "control.summary_log_interval_s=0",
        "sim.load.kind='constant'",
        "sim.load.current_a=20.0",
        "sim.initial_soc=1.0",
        "sim.soc_spread_pct=0.0",
        # One cell charged from inside (a cell drifting high): it climbs the top knee in seconds.
        "sim.faults=[{kind='cell_drift', start_s=1.0, module=1, cell=5, value=-4000.0}]",
    )


async def _record_until_fault(overrides: tuple[str, ...], limit_s: float) -> list[PackState]:
    daemon = Daemon(load_config(ROOT / "etc" / "sim.toml", overrides))
    states: list[PackState] = []
    daemon.loop.on_tick.append(states.append)
    task = asyncio.create_task(daemon.run())
    for _ in range(int(limit_s / 0.1)):
        await asyncio.sleep(0.1)
        if states and states[-1].faults.has_fatal:
            break
    await asyncio.sleep(0.5)  # a few more ticks in the recording after the fault
    daemon.request_stop()
    await task
    return states


def _first_over_threshold(log_path: Path) -> float:
    """Log time of the first cell voltage frame at or above the threshold (decoded here)."""
    database = cantools.database.load_file(str(ROOT / "dbc" / "bmsd_slave.dbc"))
    message = database.get_message_by_name("SLAVE_CELL_VOLTAGES")
    for frame in can.LogReader(str(log_path)):
        if not frame.is_rx or not 0x100 <= frame.arbitration_id <= 0x1FF:
            continue
        signals = message.decode(bytes(frame.data))
        values = [signals[f"CellVoltage{k}"] for k in range(3)]
        if any(THRESHOLD_V <= value < 60 for value in values):  # 65.535 V marks invalid
            return float(frame.timestamp)
    raise AssertionError("the recording holds no over-voltage frame")


def _replay(overrides: tuple[str, ...], log_path: Path, out: Path) -> list[dict[str, object]]:
    args = [sys.executable, "-m", "bmsd.cli", "replay", "--config", str(ROOT / "etc" / "sim.toml")]
    for override in overrides:
        args += ["--set", override]
    result = subprocess.run(
        [*args, str(log_path), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_over_voltage_replays_to_the_same_fault_at_the_same_log_time(tmp_path: Path) -> None:
    log_path = tmp_path / "ov.asc"
    overrides = _overrides(tmp_path, log_path)
    live = asyncio.run(_record_until_fault(overrides, limit_s=60))
    live_faults = {level.key for level in live[-1].faults.latched()}
    assert "cell_voltage_high.fatal" in live_faults

    records = _replay(overrides, log_path, tmp_path / "replay.jsonl")
    sets = [r for r in records if r["type"] == "fault" and r["change"] == "set"]
    replayed = {f"{r['fault']}.{r['level']}" for r in sets}
    assert "cell_voltage_high.fatal" in replayed
    # The replay judged the contactors against what the live daemon commanded: no invented
    # feedback mismatch although this replay's own machine started in init.
    assert not any(str(r["fault"]).startswith("contactor") for r in sets)
    assert replayed >= live_faults

    first = _first_over_threshold(log_path)
    set_at = next(
        float(str(r["time_s"]))
        for r in sets
        if r["fault"] == "cell_voltage_high" and r["level"] == "fatal"
    )
    # Debounce and delay counted on the log's own clock, plus the tick the frame falls into.
    latest = first + (DEBOUNCE_TICKS - 1) * TICK_S + SET_DELAY_S + 2 * TICK_S + 1e-6
    assert first < set_at <= latest, (first, set_at)

    again = _replay(overrides, log_path, tmp_path / "again.jsonl")
    assert again == records, "a replay is deterministic"


def test_explain_says_why_the_limits_are_zero_at_the_end_of_the_log(tmp_path: Path) -> None:
    log_path = tmp_path / "ov.asc"
    overrides = _overrides(tmp_path, log_path)
    asyncio.run(_record_until_fault(overrides, limit_s=60))
    args = [sys.executable, "-m", "bmsd.cli", "explain", "--config", str(ROOT / "etc" / "sim.toml")]
    for override in overrides:
        args += ["--set", override]
    result = subprocess.run(
        [*args, str(log_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "cell_voltage_high.fatal" in text
    assert "CCL 0.00 A" in text and "DCL 0.00 A" in text
    # CVL is never 0: an inverter reads a zero charge voltage as a fault of its own.
    cvl = next(line for line in text.splitlines() if line.startswith("CVL "))
    assert float(cvl.split()[1]) > 0
