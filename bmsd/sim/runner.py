"""Running the simulated pack in real time against a python-can bus.

The same runner serves the embedded simulator (a virtual bus inside the daemon) and
``bmsd sim`` (its own process, on any python-can bus, for tests across processes and hardware
in the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import can

from bmsd.canbus.protocol import Protocol
from bmsd.config import Config
from bmsd.model.cell import CellModel
from bmsd.model.topology import Topology
from bmsd.publish.inverter.profile import load_profile
from bmsd.sim.inverter import SimulatedInverter
from bmsd.sim.load import ConstantLoad, CsvLoad, EssDayCycle, LoadProfile
from bmsd.sim.pack import SimulatedPack

log = logging.getLogger(__name__)

# Never integrate more than this much simulated time in one go after a stall.
MAX_CATCH_UP_S = 1.0


def build_load(config: Config) -> LoadProfile:
    load = config.sim.load
    if load.kind == "constant":
        return ConstantLoad(load.current_a)
    if load.kind == "csv":
        return CsvLoad(config.path(load.csv_file), loop=True)
    day = EssDayCycle(
        charge_current_a=load.charge_current_a,
        discharge_current_a=load.discharge_current_a,
        day_length_s=load.day_length_s,
    )
    return _StartLater(day, load.start_hour / 24.0 * load.day_length_s)


class _StartLater:
    """A load profile entered ``offset_s`` into its cycle (the day starts at ``start_hour``)."""

    def __init__(self, profile: LoadProfile, offset_s: float) -> None:
        self._profile = profile
        self._offset_s = offset_s

    def current_a(self, time_s: float) -> float:
        return self._profile.current_a(time_s + self._offset_s)


def build_simulated_pack(
    config: Config, protocol: Protocol, topology: Topology, load: LoadProfile | None = None
) -> SimulatedPack:
    """The simulated pack; ``load`` (a simulated inverter) replaces the config's load profile."""
    cell_model = CellModel.load(config.path(config.pack.cell_file))
    return SimulatedPack(
        config, protocol, cell_model, topology, build_load(config) if load is None else load
    )


def build_simulated_inverter(config: Config) -> SimulatedInverter | None:
    """The simulated inverter of ``sim.inverter`` (its demand is the load profile), or None."""
    if not config.sim.inverter:
        return None
    inverter = config.inverters[config.sim.inverter]
    profile = load_profile(config.path(inverter.profile), inverter.profile_overrides())
    return SimulatedInverter(
        profile,
        build_load(config),
        ignore_limits=config.sim.inverter_ignores_limits,
        silent=config.sim.inverter_silent,
    )


async def run_simulator(
    pack: SimulatedPack,
    bus: can.BusABC,
    step_s: float,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
    inverter: tuple[SimulatedInverter, can.BusABC] | None = None,
) -> None:
    """Advance the pack in real time, obey commands from the bus and send its frames; with
    ``inverter``, also run the simulated inverter on its own bus (it is the pack's load)."""
    last = clock()
    sent = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=step_s)
        now = clock()
        elapsed = min(now - last, MAX_CATCH_UP_S)
        last = now
        while True:
            message = bus.recv(timeout=0)
            if message is None:
                break
            pack.handle_frame(message)
        steps = max(1, round(elapsed / step_s))
        frames: list[can.Message] = []
        for _ in range(steps):
            frames.extend(pack.advance(elapsed / steps))
        for frame in frames:
            try:
                bus.send(frame, timeout=0)
                sent += 1
            except can.CanError as exc:
                log.warning("simulator: send failed: %s", exc)
        if inverter is not None:
            _step_inverter(*inverter, pack)
    log.info("simulator stopped after %.1f s simulated, %d frames sent", pack.time_s, sent)


def _step_inverter(inverter: SimulatedInverter, bus: can.BusABC, pack: SimulatedPack) -> None:
    while True:
        message = bus.recv(timeout=0)
        if message is None:
            break
        inverter.handle_frame(message, pack.time_s)
    for frame in inverter.due_frames(pack.time_s, pack.true_current_a):
        try:
            bus.send(frame, timeout=0)
        except can.CanError as exc:
            log.warning("simulated inverter: send failed: %s", exc)
