"""``bmsd sim``: the simulated pack as its own process on any python-can bus."""

from __future__ import annotations

import asyncio
import logging
import signal

import can

from bmsd.canbus.protocol import load_protocol
from bmsd.config import Config
from bmsd.errors import BmsdError
from bmsd.model.topology import Topology
from bmsd.sim.runner import build_simulated_pack, run_simulator

log = logging.getLogger(__name__)


async def run_standalone_simulator(config: Config) -> None:
    """Run until SIGTERM/SIGINT on the bus named by ``sim.bus``."""
    topology = Topology.from_config(config.pack)
    protocol = load_protocol(config.path(config.acquisition.protocol))
    pack = build_simulated_pack(config, protocol, topology)
    bus_config = config.can[config.sim.bus]
    try:
        bus = can.Bus(
            interface=bus_config.interface, channel=bus_config.channel, bitrate=bus_config.bitrate
        )
    except (can.CanError, OSError, ValueError, ImportError) as exc:
        raise BmsdError(f"cannot open the simulator's bus {config.sim.bus!r}: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "simulated pack on %s %s: %d modules x %d cells",
        bus_config.interface,
        bus_config.channel,
        topology.module_count,
        topology.cells_per_module,
    )
    try:
        await run_simulator(pack, bus, config.sim.physics_step_s, stop)
    finally:
        bus.shutdown()
