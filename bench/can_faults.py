"""Benchmark: the daemon on the simulated 16x24 pack while a babbling node floods its bus.

Prints figures, asserts nothing. One daemon (simulated pack, 100 ms tick) runs; for each flood
rate a node sends unknown ids (11- and 29-bit) and too-short frames of known ids for
``--seconds``, then rests for ``--rest`` seconds. For each rate it prints: frames sent, frames
the daemon counted (unknown + undecodable), dropped by the daemon's receive backlog, lost
elsewhere (sent - counted - dropped: the transport's own buffers; negative when the backlog
also dropped real frames), the CPU share of this process (100 % = one core), the tick lateness
p50/p99/max (how late each tick started against its schedule), missed ticks, and which
faults were set during the phase.

Transports:
  virtual  python-can's in-process bus; the flooding node is a thread of this process, so it
           shares the GIL with the daemon and its simulator (a pessimistic case).
  udp      python-can's ``udp_multicast`` bus on loopback; the flooding node is another process
           (as a real node is), the daemon and its simulator share this one.

    .venv/bin/python bench/can_faults.py                          # rates 0 2000 4000 8000 max
    .venv/bin/python bench/can_faults.py --transport udp --seconds 5
    .venv/bin/python bench/can_faults.py --rates 0 4000 --seconds 5
    .venv/bin/python bench/can_faults.py --set protection.faults.control_loop_overrun.enabled=false

Rate 0 is no flood; "max" is as fast as python-can pushes. A 500 kbit/s bus carries at most
about 4,000 8-byte frames/s: rates above that are stress beyond what a wire can deliver.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import can
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmsd.app import Daemon  # noqa: E402
from bmsd.config import load_config  # noqa: E402
from bmsd.control.controller import Command  # noqa: E402
from bmsd.model.bms import Request  # noqa: E402
from bmsd.model.state import PackState  # noqa: E402

MODULES, CELLS, TEMPS = 16, 24, 8


def pack_overrides() -> tuple[str, ...]:
    return (
        f"pack.modules_per_string={MODULES}",
        f"pack.cells_per_module={CELLS}",
        f"pack.temps_per_module={TEMPS}",
        f"pack.module_node_ids=[{', '.join(str(n) for n in range(1, MODULES + 1))}]",
    )


def flood_frames() -> list[can.Message]:
    frames = []
    for k in range(16):
        frames.append(can.Message(arbitration_id=0x400 + k, data=bytes(8), is_extended_id=False))
        frames.append(can.Message(arbitration_id=0x18FF5000 + k, data=bytes(8)))
    frames.append(can.Message(arbitration_id=0x101, data=b"\x01\x02\x03", is_extended_id=False))
    frames.append(can.Message(arbitration_id=0x521, data=b"\x00", is_extended_id=False))
    return frames


def flood(bus: can.BusABC, rate: float, seconds: float) -> tuple[int, float]:
    """Send the flood mix at ``rate`` frames/s (0: as fast as possible); (sent, elapsed)."""
    start = time.monotonic()
    end = start + seconds
    sent = 0
    for message in itertools.cycle(flood_frames()):
        if sent % 32 == 0:
            now = time.monotonic()
            if now >= end:
                break
            if rate > 0 and sent > (now - start) * rate:
                time.sleep(sent / rate - (now - start))
        try:
            bus.send(message)
        except can.CanError:
            continue  # a full transmit buffer: not sent, not counted
        sent += 1
    return sent, time.monotonic() - start


@dataclass
class Phase:
    label: str
    rate: float
    sent: int = 0
    elapsed_s: float = 0.0
    counted: int = 0
    dropped: int = 0
    drain_s: float = 0.0
    stalls_s: list[float] = field(default_factory=list)
    missed: int = 0
    faults: set[str] = field(default_factory=set)
    cpu_s: float = 0.0  # CPU time of this process (all its threads) during the flood


class Bench:
    def __init__(
        self, transport: str, channel: str, state_dir: Path, extra: Sequence[str] = ()
    ) -> None:
        self.transport = transport
        self.channel = channel
        self.interface = "virtual" if transport == "virtual" else "udp_multicast"
        overrides = (
            *pack_overrides(),
            f"can.slaves.interface='{self.interface}'",
            f"can.slaves.channel='{channel}'",
            f"can.inverter.channel='{channel}-inverter'",
            f"state.directory='{state_dir}'",
            "control.summary_log_interval_s=0",
            "metrics.port=0",
            "modbus.port=0",
            "logging.level='error'",
            *extra,
        )
        if transport == "udp":
            # The embedded simulator needs a virtual bus: the pack runs as its own process,
            # which also leaves the daemon's process to the daemon, as on a gateway.
            overrides = (*overrides, "sim.enabled=false")
            self.sim_command = [sys.executable, "-m", "bmsd.cli", "sim", "--config"]
            self.sim_command.append(str(ROOT / "etc" / "sim.toml"))
            for override in overrides:
                self.sim_command += ["--set", override]
        self.daemon = Daemon(load_config(ROOT / "etc" / "sim.toml", overrides))
        self.states: list[PackState] = []
        self.daemon.loop.on_tick.append(self.states.append)

    def counted(self) -> int:
        stats = self.daemon.buses["slaves"].stats
        counted = stats.unknown_frames + stats.decode_errors
        if self.transport == "udp":
            # Multicast loops the daemon's own commands back to it (unknown to the decoder).
            counted -= stats.tx_frames
        return counted

    async def run_phase(self, phase: Phase, seconds: float, rest_s: float) -> None:
        stats = self.daemon.buses["slaves"].stats
        counted0, dropped0 = self.counted(), stats.rx_dropped
        first = len(self.states)
        missed0 = self.states[-1].timing.missed_ticks if self.states else 0  # type: ignore[union-attr]
        cpu0 = time.process_time()
        if phase.rate >= 0:
            phase.sent, phase.elapsed_s = await self._flood(phase.rate, seconds)
        else:
            await asyncio.sleep(seconds)
            phase.elapsed_s = seconds
        phase.cpu_s = time.process_time() - cpu0
        ended = last_change = time.monotonic()
        seen = self.counted()
        # Until every frame is counted, or for 1 s no more than a trickle arrives (the rest was
        # lost on the way), at most 20 s.
        while self.counted() - counted0 + stats.rx_dropped - dropped0 < phase.sent:
            now = time.monotonic()
            if self.counted() > seen + 20:
                seen, last_change = self.counted(), now
            elif now - last_change > 1.0 or now - ended > 20.0:
                break
            await asyncio.sleep(0.01)
        phase.drain_s = max(0.0, min(time.monotonic(), last_change) - ended)
        phase.counted = self.counted() - counted0
        phase.dropped = stats.rx_dropped - dropped0
        states = self.states[first:]
        phase.stalls_s = [s.timing.stall_s for s in states if s.timing is not None]
        if states and states[-1].timing is not None:
            phase.missed = states[-1].timing.missed_ticks - missed0
        phase.faults = {
            f"{e.fault_id}.{e.level.label}"
            for s in states
            for e in s.fault_events
            if e.kind == "set"
        }
        await asyncio.sleep(rest_s)

    async def _flood(self, rate: float, seconds: float) -> tuple[int, float]:
        if self.transport == "virtual":
            bus = can.Bus(interface="virtual", channel=self.channel)
            try:
                return await asyncio.to_thread(flood, bus, rate, seconds)
            finally:
                bus.shutdown()
        command = [
            sys.executable,
            __file__,
            "--flooder",
            self.channel,
            "--rates",
            str(rate),
            "--seconds",
            str(seconds),
        ]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        out, _ = await process.communicate()
        result = json.loads(out)
        return int(result["sent"]), float(result["elapsed_s"])


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def run(args: argparse.Namespace) -> list[Phase]:
    with tempfile.TemporaryDirectory(prefix="bmsd-can-faults-") as tmp:
        tag = f"{os.getpid() % 200 + 20}"
        channel = (
            f"bench-canfaults-{os.getpid()}" if args.transport == "virtual" else f"239.74.{tag}.7"
        )
        bench = Bench(args.transport, channel, Path(tmp) / "state", args.set)
        sim = None
        if args.transport == "udp":
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            sim = subprocess.Popen(bench.sim_command, env=env, stderr=subprocess.DEVNULL)
        try:
            return await _phases(bench, args)
        finally:
            if sim is not None:
                sim.terminate()
                sim.wait(timeout=10)


async def _phases(bench: Bench, args: argparse.Namespace) -> list[Phase]:
    task = asyncio.create_task(bench.daemon.run())
    try:
        deadline = time.monotonic() + 90
        next_reset = time.monotonic() + 10
        while not bench.states or bench.states[-1].mode.value != "closed":
            if time.monotonic() > deadline:
                active = (
                    [lvl.key for lvl in bench.states[-1].faults.active()] if bench.states else []
                )
                raise SystemExit(
                    f"the daemon did not close its contactors within 90 s; active: {active}"
                )
            if time.monotonic() > next_reset:
                # A start-up stall on a busy machine can latch a fault: reset, as an operator.
                next_reset += 10
                await bench.daemon.loop.submit(Command(Request.RESET, "bench"))
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        phases = []
        for text in args.rates:
            rate = 0.0 if text == "max" else float(text)
            phase = Phase(text, -1.0 if rate == 0 and text != "max" else rate)
            await bench.run_phase(phase, args.seconds, args.rest)
            phases.append(phase)
            print_phase(phase)
        return phases
    finally:
        bench.daemon.request_stop()
        await task


def print_header() -> None:
    print(
        f"{'rate/s':>8} {'sent':>8} {'sent/s':>8} {'counted':>8} {'dropped':>8} {'lost':>6} "
        f"{'drain s':>7} {'cpu %':>6} {'ticks':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'missed':>6}  "
        "faults set"
    )


def print_phase(p: Phase) -> None:
    sent_rate = p.sent / p.elapsed_s if p.elapsed_s else 0.0
    lost = p.sent - p.counted - p.dropped
    faults = ", ".join(sorted(p.faults)) or "-"
    print(
        f"{p.label:>8} {p.sent:>8} {sent_rate:>8.0f} {p.counted:>8} {p.dropped:>8} {lost:>6} "
        f"{p.drain_s:>7.2f} {100 * p.cpu_s / p.elapsed_s:>6.0f} {len(p.stalls_s):>6} "
        f"{percentile_ms(p.stalls_s, 50):>7.1f} "
        f"{percentile_ms(p.stalls_s, 99):>7.1f} {max(p.stalls_s, default=0) * 1000:>7.1f} "
        f"{p.missed:>6}  {faults}",
        flush=True,
    )


def flooder_main(channel: str, rate: float, seconds: float) -> None:
    bus = can.Bus(interface="udp_multicast", channel=channel)
    try:
        sent, elapsed_s = flood(bus, rate, seconds)
    finally:
        bus.shutdown()
    print(json.dumps({"sent": sent, "elapsed_s": elapsed_s}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("virtual", "udp"), default="virtual")
    parser.add_argument("--rates", nargs="+", default=["0", "2000", "4000", "8000", "max"])
    parser.add_argument("--seconds", type=float, default=10.0, help="flood time per rate")
    parser.add_argument("--rest", type=float, default=3.0, help="quiet time after each rate")
    parser.add_argument(
        "--set", action="append", default=[], help="extra config override (repeatable)"
    )
    parser.add_argument("--flooder", help=argparse.SUPPRESS)  # the flooding process's channel
    args = parser.parse_args()
    if args.flooder:
        text = args.rates[0]
        flooder_main(args.flooder, 0.0 if text == "max" else float(text), args.seconds)
        return
    print(
        f"daemon on the simulated {MODULES}x{CELLS} pack, tick 100 ms, flood over "
        f"{args.transport}, {args.seconds:g} s per rate; machine load {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    print_header()
    logging.basicConfig(level=logging.ERROR)  # the fault log lines would mix with the table
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
