"""Benchmark of the inverter sender: cost of building frames, and timing on a real bus.

Prints figures, asserts nothing. Two measurements:

a) per profile, the CPU cost of one full frame set: ``battery_values`` (the semantics applied
   to a PackState) and the encoding of every frame (``InverterLink.poll`` with all due);
b) the sender on the event loop (``InverterService.run``) talking to a python-can ``virtual``
   bus while states arrive every 100 ms: the period of 0x351 seen by a peer (nominal 1 s) and,
   for the Sunny Island profile, the smallest gap between two frames (must stay >= 200 ms).

    .venv/bin/python bench/inverter_send.py            # about 15 s
    .venv/bin/python bench/inverter_send.py --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import statistics
import sys
import time
from pathlib import Path

import can

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from inverter_golden import base_state  # noqa: E402

from bmsd.canbus.bus import CanInterface  # noqa: E402
from bmsd.config import load_config  # noqa: E402
from bmsd.publish.inverter.link import InverterLink, LinkSettings  # noqa: E402
from bmsd.publish.inverter.profile import load_profile  # noqa: E402
from bmsd.publish.inverter.service import InverterService  # noqa: E402
from bmsd.publish.inverter.values import battery_values  # noqa: E402

PROFILES = ("pylontech_lv", "sma_si", "victron", "pylontech_hv")


def encode_cost() -> None:
    state, info = base_state()
    print("a) CPU cost per full frame set (this machine, shared: figures are disturbed)")
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        battery_values(state, info)
    values_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"   battery_values: {values_us:.0f} us per state")
    for name in PROFILES:
        profile = load_profile(ROOT / "etc" / "inverters" / f"{name}.toml")
        link = InverterLink(name, profile, info, LinkSettings(stale_after_s=1e9), 0.0)
        link.on_state(state)
        frames = profile.sent_frames()
        started = time.perf_counter()
        count = 0
        for index in range(rounds // 4):
            for frame in frames:
                link._enqueue(frame)  # every frame due: the worst case of one poll
            count += len(link.poll(float(index)))
        elapsed = time.perf_counter() - started
        polls = rounds // 4
        print(
            f"   {name:13s} {count / polls:4.1f} frames per poll (of {len(frames)}): "
            f"{elapsed / polls * 1e6:6.0f} us per poll, {elapsed / count * 1e6:5.1f} us per frame"
        )


async def timing(profile: str, seconds: float) -> tuple[list[float], list[float]]:
    state, info = base_state()
    channel = f"bench-inverter-{profile}-{time.monotonic_ns()}"
    config = load_config(
        ROOT / "etc" / "sim.toml",
        (
            f"can.inverter.channel='{channel}'",
            f"inverters.hybrid.profile='inverters/{profile}.toml'",
            "sim.inverter=''",
        ),
    )
    service = InverterService(config, info, time.monotonic())
    bus = CanInterface("inverter", config.can["inverter"])
    bus.open()
    loop = asyncio.get_running_loop()
    bus.start_receiving(loop, service.receiver("inverter", bus))
    peer = can.Bus(interface="virtual", channel=channel)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run({"inverter": bus}, stop))
    arrivals: list[tuple[float, int]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        service.on_state(dataclasses.replace(state, time_s=time.monotonic()))
        await asyncio.sleep(0.1)
        while (message := peer.recv(timeout=0)) is not None:
            arrivals.append((message.timestamp, message.arbitration_id))
    stop.set()
    await task
    bus.close()
    peer.shutdown()
    limits = [t for t, frame_id in arrivals if frame_id == 0x351]
    periods = [b - a for a, b in itertools.pairwise(limits)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    return periods, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    encode_cost()
    print(f"b) sender on the event loop, virtual bus, {args.seconds:g} s per profile")
    for profile in ("pylontech_lv", "sma_si"):
        periods, gaps = asyncio.run(timing(profile, args.seconds))
        if periods:
            print(
                f"   {profile:13s} 0x351 period: mean {statistics.mean(periods) * 1000:7.1f} ms, "
                f"min {min(periods) * 1000:7.1f} ms, max {max(periods) * 1000:7.1f} ms "
                f"({len(periods)} periods); smallest gap between frames "
                f"{min(gaps) * 1000:6.1f} ms"
            )


if __name__ == "__main__":
    main()
