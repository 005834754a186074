"""A running daemon trims its C heap at service.heap_trim_interval_s, and a reload changes that."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bmsd.app import Daemon
from bmsd.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _write_config(path: Path, interval_s: float) -> None:
    """etc/sim.toml with a [service] section, beside links to what its relative paths name."""
    for entry in (ROOT / "etc").iterdir():
        if entry.is_dir() and not (path.parent / entry.name).exists():
            (path.parent / entry.name).symlink_to(entry)
    text = (ROOT / "etc" / "sim.toml").read_text(encoding="utf-8")
    path.write_text(f"{text}\n[service]\nheap_trim_interval_s = {interval_s}\n", encoding="utf-8")


async def _trims_after(daemon: Daemon, wait_s: float) -> int:
    await asyncio.sleep(wait_s)
    assert daemon.heap_keeper is not None
    return daemon.heap_keeper.figures.trims


async def _run(tmp_path: Path) -> tuple[int, int, int]:
    config_path = tmp_path / "bmsd.toml"
    _write_config(config_path, 1.0)
    overrides = (
        f"state.directory='{tmp_path / 'state'}'",
        f"can.slaves.channel='heap-{tmp_path.name}'",
        f"can.inverter.channel='heap-inv-{tmp_path.name}'",
        "metrics.port=0",
        "modbus.port=0",
        "control.summary_log_interval_s=0",
    )
    daemon = Daemon(load_config(config_path, overrides), config_path=config_path,
                    overrides=overrides)  # fmt: skip
    running = asyncio.create_task(daemon.run())
    try:
        trims_running = await _trims_after(daemon, 3.5)
        _write_config(config_path, 0.0)
        assert await daemon.reload()
        trims_at_reload = await _trims_after(daemon, 1.2)
        trims_later = await _trims_after(daemon, 2.5)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(running, 10)
    return trims_running, trims_at_reload, trims_later


def test_the_heap_is_trimmed_at_the_interval_until_a_reload_turns_it_off(tmp_path: Path) -> None:
    trims_running, trims_at_reload, trims_later = asyncio.run(_run(tmp_path))
    assert trims_running >= 3  # every second for 3.5 s, from start-up on
    assert trims_later == trims_at_reload  # interval 0 after the reload: no trim since
