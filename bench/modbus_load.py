"""Modbus load: bmsd's server on the simulated 16 x 24 pack against a bare pymodbus server.

The servers run in this process (the daemon with its control loop, ingesting the pack's
~1,700 frames/s, as in production); the simulated pack runs as ``bmsd sim`` in a child process
on a python-can ``udp_multicast`` bus (its physics would otherwise share the daemon's core),
and the clients run in another child process. Each client is one TCP connection sending
FC 03 reads of 125 registers (cycling over the SunSpec models at 40000, which are
contiguous) and waiting for each answer, as a Modbus master does.

1. Throughput: N = 1, 16, 64 clients reading as fast as they can for ``--seconds``, against
   bmsd and against a bare pymodbus server (the same pymodbus, a ``SimDevice`` with a static
   datastore of the same addresses and no action hook, in its own thread and event loop as
   bmsd's server is, beside the running daemon). ``--rounds`` runs of each, alternating which
   server goes first, so that a burst of load from a neighbour falls on both; every run is
   printed, then the medians. Per run: requests/s, p50 and p99 latency, the server thread's
   CPU time per request (Linux per-thread clock: much less disturbed by other processes than
   requests/s), the daemon process's CPU share, and the control tick's lateness. The ratio is
   bmsd / bare of the same round, median over the rounds.
2. Paced: 64 clients at ``--rate`` requests/s in total against bmsd, ``--rounds`` times, with
   the control tick's lateness (PackState.timing: started minus scheduled) p50/p99/max and
   the ticks missed.

Before the runs: the CPU time of encoding one state, and the daemon's CPU share per thread
with no client (ingest, tick, CAN receivers), which bmsd's server shares the interpreter with.

    .venv/bin/python bench/modbus_load.py                        # 5 s runs, 3 rounds
    .venv/bin/python bench/modbus_load.py --seconds 10 --rounds 5

Figures are printed; nothing is asserted. On a shared machine they vary with the other load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pymodbus.server import ModbusTcpServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402

from bmsd.app import Daemon  # noqa: E402
from bmsd.config import load_config  # noqa: E402
from bmsd.model.state import PackState  # noqa: E402

SIM = ROOT / "etc" / "sim.toml"
MODULES, CELLS, TEMPS = 16, 24, 8
BLOCK = 125
UNIT = 1
SUNSPEC_BASE = 40000


# -- the client process -------------------------------------------------------------------------


async def _client(
    port: int,
    addresses: list[int],
    deadline: float,
    period_s: float,
    latencies: list[float],
    errors: list[int],
    offset: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tid = 0
    index = offset
    next_at = time.perf_counter()
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            if period_s:
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                next_at += period_s
            tid = (tid + 1) & 0xFFFF
            address = addresses[index % len(addresses)]
            index += 1
            frame = struct.pack(">HHHBBHH", tid, 0, 6, UNIT, 3, address, BLOCK)
            started = time.perf_counter()
            writer.write(frame)
            header = await reader.readexactly(6)
            body = await reader.readexactly(struct.unpack(">H", header[4:6])[0])
            latencies.append(time.perf_counter() - started)
            if body[1] & 0x80:
                errors.append(body[2])
    finally:
        writer.close()


async def _clients(
    port: int, clients: int, seconds: float, rate: float, addresses: list[int]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    period = clients / rate if rate else 0.0
    start = time.perf_counter() + 0.2
    deadline = start + seconds
    await asyncio.sleep(0.2)
    await asyncio.gather(
        *(
            _client(port, addresses, deadline, period, latencies, errors, k * 7)
            for k in range(clients)
        )
    )
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * ordered[len(ordered) // 2] if ordered else float("nan"),
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)] if ordered else float("nan"),
        "errors": len(errors),
    }


def client_main(argv: Sequence[str]) -> None:
    port, clients, seconds, rate = int(argv[0]), int(argv[1]), float(argv[2]), float(argv[3])
    addresses = [int(a) for a in argv[4].split(",")]
    print(json.dumps(asyncio.run(_clients(port, clients, seconds, rate, addresses))))


async def run_clients(
    port: int, clients: int, seconds: float, rate: float, addresses: list[int]
) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        str(port),
        str(clients),
        str(seconds),
        str(rate),
        ",".join(map(str, addresses)),
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    result: dict[str, Any] = json.loads(out)
    return result


# -- the servers ----------------------------------------------------------------------------------


def _overrides(state_dir: str) -> tuple[str, ...]:
    group = f"239.74.{os.getpid() % 250}.{(os.getpid() // 250) % 250 + 1}"
    return (
        f"pack.modules_per_string={MODULES}",
        f"pack.cells_per_module={CELLS}",
        f"pack.temps_per_module={TEMPS}",
        f"pack.module_node_ids={list(range(1, MODULES + 1))}",
        f"state.directory='{state_dir}'",
        # The simulated pack runs in its own process (bmsd sim), linked to the daemon by
        # python-can's udp_multicast bus: its physics must not share the daemon's core.
        "can.slaves.interface='udp_multicast'",
        f"can.slaves.channel='{group}'",
        "sim.enabled=false",
        "control.summary_log_interval_s=0",
        "modbus.enabled=true",
        "modbus.port=0",
        "modbus.max_connections=100",
        "modbus.max_connections_per_address=0",  # every client is on loopback here
        "metrics.port=0",
    )


def start_plant(overrides: tuple[str, ...]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bmsd.cli", "sim", "--config", str(SIM)]
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)


class TickWatch:
    """Tick lateness and missed ticks seen by the control loop while a run lasts."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.lateness: list[float] = []
        self.recording = False
        daemon.loop.on_tick.append(self._on_tick)

    def _on_tick(self, state: PackState) -> None:
        if self.recording and state.timing is not None:
            self.lateness.append(state.timing.lateness_s)

    def start(self) -> int:
        self.lateness = []
        self.recording = True
        return self.daemon.loop.stats.missed_ticks

    def stop(self, missed_before: int) -> dict[str, float]:
        self.recording = False
        ordered = sorted(self.lateness)
        n = len(ordered)
        return {
            "ticks": n,
            "p50_ms": 1000 * ordered[n // 2] if n else float("nan"),
            "p99_ms": 1000 * ordered[int(n * 0.99)] if n else float("nan"),
            "max_ms": 1000 * ordered[-1] if n else float("nan"),
            "missed": self.daemon.loop.stats.missed_ticks - missed_before,
        }


class BareServer:
    """pymodbus with a static datastore, in its own thread and event loop like bmsd's server."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="bare-modbus", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = loop.run_until_complete(self._serve())
        self.port = _port_of(server)
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(server.shutdown())
        loop.close()

    async def _serve(self) -> ModbusTcpServer:
        device = SimDevice(
            id=UNIT,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [
                    SimData(
                        SUNSPEC_BASE, values=list(range(self.length)), datatype=DataType.REGISTERS
                    )
                ],
                [SimData(0, values=[0], datatype=DataType.REGISTERS)],
            ),
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        return server

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(10)


def _port_of(server: ModbusTcpServer) -> int:
    return int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


def _thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU time one thread of this process has used (Linux: its per-thread clock)."""
    if thread is None or thread.ident is None:
        return float("nan")
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def measure(
    watch: TickWatch,
    port: int,
    thread: threading.Thread | None,
    clients: int,
    seconds: float,
    rate: float,
    addresses: list[int],
) -> dict[str, Any]:
    """One client run against one server, with the server thread's CPU time per request, the
    whole process's CPU share and the control tick's lateness while it lasted."""
    missed = watch.start()
    cpu_before, process_before = _thread_cpu_s(thread), time.process_time()
    wall_before = time.perf_counter()
    result = await run_clients(port, clients, seconds, rate, addresses)
    wall_s = time.perf_counter() - wall_before
    result["cpu_us"] = (_thread_cpu_s(thread) - cpu_before) / max(1, result["requests"]) * 1e6
    result["process_pct"] = 100 * (time.process_time() - process_before) / wall_s
    result["tick"] = watch.stop(missed)
    return result


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _run_line(clients: int, round_: int, name: str, run: dict[str, Any]) -> str:
    tick = run["tick"]
    return (
        f"{clients:>7} {round_:>5} {name:>6} | {run['per_s']:>8,.0f} {run['p50_ms']:>7.2f} "
        f"{run['p99_ms']:>7.2f} {run['errors']:>4} | {run['cpu_us']:>7.0f} "
        f"{run['process_pct']:>6.0f} | {tick['p99_ms']:>8.2f} {tick['max_ms']:>7.1f} "
        f"{tick['missed']:>6}"
    )


async def bench(seconds: float, rate: float, client_counts: Sequence[int], rounds: int) -> None:
    state_dir = tempfile.mkdtemp(prefix="bmsd-modbus-load-")
    overrides = _overrides(state_dir)
    plant = start_plant(overrides)
    config = load_config(SIM, overrides)
    daemon = Daemon(config)
    watch = TickWatch(daemon)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(300):
            await asyncio.sleep(0.05)
            latest = daemon.hub.latest
            if latest is not None and latest.data_ok and latest.estimates is not None:
                break
        assert daemon.modbus is not None
        server = daemon.modbus
        sunspec = server._sunspec
        assert sunspec is not None
        ours_thread = server._thread
        addresses = list(range(SUNSPEC_BASE, SUNSPEC_BASE + sunspec.length - BLOCK + 1, BLOCK))
        print(
            f"pack {MODULES} x {CELLS} cells, {TEMPS} sensors per module; SunSpec map "
            f"{sunspec.length} registers; {len(addresses)} blocks of {BLOCK}; {seconds:g} s per "
            f"run, {rounds} rounds per server, alternating; load average at start "
            f"{os.getloadavg()[0]:.2f}"
        )
        # Cost of encoding one state: the native map, and every SunSpec model (a poller that
        # reads all of them pays this once per tick, spread over its requests).
        encodes = server.stats.encodings
        state = daemon.hub.latest
        assert state is not None
        wall_before, cpu_before = time.perf_counter(), time.thread_time()
        for _ in range(20):
            server._encoded = None
            server._refresh(state)
            image = server._sunspec_image
            assert image is not None
            image.ensure(0, sunspec.length)
        encode_ms = (time.perf_counter() - wall_before) / 20 * 1000
        encode_cpu_ms = (time.thread_time() - cpu_before) / 20 * 1000
        server.stats.encodings = encodes
        print(
            f"encoding one state (native map + every SunSpec model): {encode_cpu_ms:.2f} ms CPU "
            f"({encode_ms:.2f} ms wall)"
        )

        missed = watch.start()
        threads = threading.enumerate()
        threads_before = [_thread_cpu_s(thread) for thread in threads]
        process_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        idle_s = time.perf_counter() - wall_before
        idle_pct = 100 * (time.process_time() - process_before) / idle_s
        shares = [
            (100 * (_thread_cpu_s(thread) - before) / idle_s, thread.name)
            for thread, before in zip(threads, threads_before, strict=True)
        ]
        idle = watch.stop(missed)
        print(
            f"with no Modbus client the daemon process uses {idle_pct:.1f} % of one core ("
            + ", ".join(f"{name} {pct:.1f} %" for pct, name in sorted(shares, reverse=True))
            + "); the simulated pack runs in its own process, as the real pack is hardware"
        )
        print(
            f"control tick lateness with no Modbus client (the machine's own noise): p50 "
            f"{idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms, max {idle['max_ms']:.2f} ms, "
            f"{idle['missed']} ticks missed"
        )
        bare = BareServer(sunspec.length)
        bare.start()
        runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
        print()
        print(
            "1. throughput, clients reading as fast as they can; every round (bmsd and bare "
            "alternate who goes first)"
        )
        header = (
            f"{'clients':>7} {'round':>5} {'server':>6} | {'req/s':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'err':>4} | {'us CPU':>7} {'proc %':>6} | {'tick p99':>8} "
            f"{'max':>7} {'missed':>6}"
        )
        print(header)
        print("-" * len(header))
        for clients in client_counts:
            for round_ in range(1, rounds + 1):
                order = [("bmsd", server.port, ours_thread), ("bare", bare.port, bare.thread)]
                if round_ % 2 == 0:
                    order.reverse()
                for name, port, thread in order:
                    encodings = server.stats.encodings
                    run = await measure(watch, port, thread, clients, seconds, 0.0, addresses)
                    run["encodings"] = server.stats.encodings - encodings
                    runs.setdefault((clients, name), []).append(run)
                    print(_run_line(clients, round_, name, run), flush=True)
        bare.stop()
        ours_runs = [run for (_, name), rows in runs.items() if name == "bmsd" for run in rows]
        print(
            f"bmsd encoded {sum(r['encodings'] for r in ours_runs):,} states for "
            f"{sum(r['requests'] for r in ours_runs):,} requests over "
            f"{sum(r['tick']['ticks'] for r in ours_runs):,} ticks (once per new state read)"
        )
        print(
            "us CPU: the server thread's CPU time per request (bmsd's includes encoding each "
            "new state); proc %: the whole daemon process's CPU, % of one core"
        )

        print()
        print(f"   medians of the {rounds} rounds")
        header = (
            f"{'clients':>7} | {'bmsd req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'us CPU':>7} | "
            f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'us CPU':>7} | {'ratio':>5} "
            f"{'min':>5} {'CPU':>5} | {'tick p99':>8} {'missed':>6}"
        )
        print(header)
        print("-" * len(header))
        for clients in client_counts:
            ours, theirs = runs[(clients, "bmsd")], runs[(clients, "bare")]
            ratios = [a["per_s"] / b["per_s"] for a, b in zip(ours, theirs, strict=True)]

            def med(rows: list[dict[str, Any]], key: str) -> float:
                return _median([row[key] for row in rows])

            print(
                f"{clients:>7} | {med(ours, 'per_s'):>10,.0f} {med(ours, 'p50_ms'):>7.2f} "
                f"{med(ours, 'p99_ms'):>7.2f} {med(ours, 'cpu_us'):>7.0f} | "
                f"{med(theirs, 'per_s'):>10,.0f} {med(theirs, 'p50_ms'):>7.2f} "
                f"{med(theirs, 'p99_ms'):>7.2f} {med(theirs, 'cpu_us'):>7.0f} | "
                f"{_median(ratios):>5.2f} {min(ratios):>5.2f} "
                f"{med(theirs, 'cpu_us') / med(ours, 'cpu_us'):>5.2f} | "
                f"{_median([r['tick']['p99_ms'] for r in ours]):>5.2f} ms "
                f"{sum(r['tick']['missed'] for r in ours):>6}"
            )
        print(
            "ratio: median over the rounds of bmsd / bare of the same round; min: the worst "
            "round; CPU: bare / bmsd CPU time per request, the throughput ratio when the "
            "server thread is what limits (least disturbed by other load); tick p99: median "
            "of the bmsd runs; missed: total over them"
        )

        print()
        print(f"2. paced: 64 clients, {rate:g} requests/s in total, against bmsd")
        paced_runs = []
        for round_ in range(1, rounds + 1):
            paced = await measure(watch, server.port, ours_thread, 64, seconds, rate, addresses)
            paced_runs.append(paced)
            ticks = paced["tick"]
            print(
                f"round {round_}: served {paced['per_s']:,.0f} req/s (p50 {paced['p50_ms']:.2f} "
                f"ms, p99 {paced['p99_ms']:.2f} ms, {paced['errors']} errors; daemon process "
                f"{paced['process_pct']:.0f} % of a core); tick lateness over {ticks['ticks']} "
                f"ticks: p50 {ticks['p50_ms']:.2f} ms, p99 {ticks['p99_ms']:.2f} ms, max "
                f"{ticks['max_ms']:.2f} ms; ticks missed: {ticks['missed']}",
                flush=True,
            )
        print(
            f"median tick lateness p99 {_median([r['tick']['p99_ms'] for r in paced_runs]):.2f}"
            f" ms; ticks missed in all: {sum(r['tick']['missed'] for r in paced_runs)}"
        )
        print(
            "targets: bmsd >= 80 % of bare pymodbus throughput; paced: lateness p99 < 5 ms and "
            f"no tick missed. Load average at the end {os.getloadavg()[0]:.2f}"
        )
    finally:
        daemon.request_stop()
        try:
            await task
        finally:
            plant.terminate()
            plant.wait(timeout=10)
            shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--client":
        client_main(args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and client count")
    parser.add_argument("--rate", type=float, default=1000.0, help="total rate of the paced run")
    parser.add_argument("--clients", default="1,16,64", help="client counts of the throughput runs")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.WARNING)
    counts = [int(c) for c in options.clients.split(",")]
    asyncio.run(bench(options.seconds, options.rate, counts, options.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
