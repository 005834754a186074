"""Record the simulated pack's bus while the daemon runs, replay it, get the same pack values."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import can
import numpy as np

from bmsd.app import Daemon
from bmsd.canbus.protocol import load_protocol
from bmsd.config import load_config
from bmsd.model.readings import Quantity
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.sim.runner import build_simulated_pack, run_simulator

ROOT = Path(__file__).resolve().parents[2]


async def _run_live(
    config_overrides: tuple[str, ...], run_s: float
) -> tuple[PackState, dict[Quantity, float]]:
    config = load_config(ROOT / "etc" / "sim.toml", config_overrides)
    daemon = Daemon(config)
    topology = Topology.from_config(config.pack)
    pack = build_simulated_pack(
        config, load_protocol(config.path(config.acquisition.protocol)), topology
    )
    bus_config = config.can["slaves"]
    sim_bus = can.Bus(interface="virtual", channel=bus_config.channel)
    sim_stop = asyncio.Event()
    daemon_task = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.2)
    sim_task = asyncio.create_task(run_simulator(pack, sim_bus, 0.01, sim_stop))
    await asyncio.sleep(run_s)
    sim_stop.set()
    await sim_task
    sim_bus.shutdown()
    # Let every frame in flight arrive, then a tick after the last one, so the live state holds
    # every last value (fixed sleeps are not enough on a loaded machine).
    bus = daemon.buses["slaves"]
    seen, quiet_since = -1, 0.0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(0.05)
        if bus.stats.rx_frames != seen:
            seen, quiet_since = bus.stats.rx_frames, loop.time()
        elif loop.time() - quiet_since > 0.15:
            break
    tick = daemon.controller.tick
    while daemon.controller.tick < tick + 2:
        await asyncio.sleep(0.02)
    daemon.request_stop()
    await daemon_task
    latest = daemon.hub.latest
    assert latest is not None
    # The last value received of each scalar, whatever its age when the daemon stopped.
    last_scalars = {quantity: value for quantity, (value, _at) in daemon.store.scalars.items()}
    return latest, last_scalars


def test_recorded_log_replays_to_the_same_pack_values(tmp_path: Path) -> None:
    log_path = tmp_path / "slaves.asc"
    overrides = (
        "sim.enabled=false",
        f"can.slaves.channel='replay-{tmp_path.name}'",
        f"can.slaves.record='{log_path}'",
        f"state.directory='{tmp_path / 'state'}'",
        "metrics.port=0",  # ephemeral: tests run in parallel
        "control.summary_log_interval_s=0",
    )
    live, live_scalars = asyncio.run(_run_live(overrides, run_s=2.0))
    assert log_path.stat().st_size > 0

    out = tmp_path / "states.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmsd.cli",
            "replay",
            "--config",
            str(ROOT / "etc" / "sim.toml"),
            *[arg for o in overrides for arg in ("--set", o)],
            str(log_path),
            "-o",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    states = [r for r in records if r["type"] == "state"]
    assert len(states) >= 15, "two seconds of log at 100 ms ticks"
    final = states[-1]
    live_snap = live.snapshot
    assert live_snap.all_cells_valid
    replayed_v = np.array(final["cell_voltage_v"], dtype=float)
    np.testing.assert_allclose(replayed_v, np.round(live_snap.cell_voltage_v, 4), atol=1e-9)
    replayed_t = np.array(final["temp_c"], dtype=float)
    np.testing.assert_allclose(replayed_t, np.round(live_snap.temp_c, 2), atol=1e-9)
    # The current sensor goes stale 0.5 s after its last frame, and both runs tick on past the
    # end of the traffic for a race-dependent time: compare the last value each side received.
    last_fresh = [s for s in states if s["pack_current_a"] is not None][-1]
    assert last_fresh["pack_current_a"] == round(live_scalars[Quantity.PACK_CURRENT_A], 3)
    assert last_fresh["pack_voltage_v"] == round(live_scalars[Quantity.PACK_VOLTAGE_V], 3)
    kinds = {r["kind"] for r in records if r["type"] == "event"}
    assert "module_online" in kinds
