"""Metrics scrape cost: time and body size of /metrics, and whether scraping delays ticks.

1. **Scrape time and size** for 384 (16 x 24) and 1,536 (64 x 24) cells with per-cell series
   on (and off, for comparison): a real PackState from the closed-loop harness (the real
   pipeline on the simulated pack, with SOC estimates), served by the real exporter over HTTP on
   loopback, fetched ``--scrapes`` times by an HTTP client in another process (curl), as
   Prometheus would. Reported: median and worst wall time, body bytes plain and gzip, and the
   CPU time of rendering the body alone (in this process, no HTTP).
2. **Tick lateness** of a running daemon (the real Daemon with its embedded simulated pack,
   slowed down so the plant does not saturate the shared process) for each pack size, first
   without scraping, then while /metrics is fetched every ``--interval`` seconds
   (Prometheus' default is 15 s; 1 s stresses it). Reported: lateness p50/p99/max and
   overruns of both phases, from each tick's TickTiming.

    .venv/bin/python bench/metrics_scrape.py                 # both parts, about 2 minutes
    .venv/bin/python bench/metrics_scrape.py --phase-s 10    # shorter lateness phases

The machine is shared: figures are disturbed by whatever else runs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmsd.app import Daemon  # noqa: E402
from bmsd.config import Config, MetricsConfig, load_config  # noqa: E402
from bmsd.model.state import PackState  # noqa: E402
from bmsd.model.topology import Topology  # noqa: E402
from bmsd.publish.metrics import MetricsExporter, Sources  # noqa: E402
from bmsd.sim.closed_loop import ClosedLoop  # noqa: E402

SIM = ROOT / "etc" / "sim.toml"
PACKS = ((16, 24), (64, 24))  # 384 and 1,536 cells


def pack_config(modules: int, cells: int, state_dir: Path, *extra: str) -> Config:
    ids = ", ".join(str(n) for n in range(1, modules + 1))
    return load_config(
        SIM,
        (
            f"pack.modules_per_string={modules}",
            f"pack.cells_per_module={cells}",
            "pack.temps_per_module=8",
            f"pack.module_node_ids=[{ids}]",
            f"state.directory='{state_dir}'",
            "control.summary_log_interval_s=0",
            # A 1.3-5 kV pack: a larger precharge resistor keeps the inrush in bounds.
            "sim.precharge_resistor_ohm=200.0",
            "limits.max_charge_current_a=140.0",
            "metrics.port=0",
            *extra,
        ),
    )


def curl(url: str, *, compressed: bool = False) -> tuple[float, int]:
    """One fetch by curl: (wall time s, body bytes as transferred)."""
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url]
    if compressed:
        args.insert(1, "--compressed")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def scrape_cost(modules: int, cells: int, scrapes: int, state_dir: Path) -> None:
    config = pack_config(modules, cells, state_dir)
    loop = ClosedLoop(config)
    state: PackState = loop.run(3.0)
    for per_cell in (True, False):
        sources = Sources(
            topology=Topology.from_config(config.pack),
            latest=lambda: state,
            buses={},
            tick_s=config.control.tick_s,
            chemistry=config.pack.chemistry,
        )
        keys = [(level.fault_id, level.level.label) for level in state.faults.levels]
        exporter = MetricsExporter(
            MetricsConfig(port=0, per_cell=per_cell), sources, fault_keys=keys
        )
        host, port = exporter.start()
        url = f"http://{host}:{port}/metrics"
        try:
            curl(url)  # warm-up
            times = []
            size = 0
            for _ in range(scrapes):
                elapsed, size = curl(url)
                times.append(elapsed)
            gz_times = []
            gz_size = 0
            for _ in range(max(3, scrapes // 4)):
                elapsed, gz_size = curl(url, compressed=True)
                gz_times.append(elapsed)
            render_cpu = []
            for _ in range(scrapes):
                started = time.process_time()
                exporter.render()
                render_cpu.append(time.process_time() - started)
            with urllib_open(url) as body:
                series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        finally:
            exporter.stop()
        print(
            f"{modules * cells:5d} cells per_cell={'on ' if per_cell else 'off'}: "
            f"{series:6d} series, scrape median {1000 * statistics.median(times):6.1f} ms, "
            f"max {1000 * max(times):6.1f} ms, body {size / 1024:7.1f} KiB "
            f"(gzip {gz_size / 1024:6.1f} KiB, "
            f"median {1000 * statistics.median(gz_times):.1f} ms), "
            f"render CPU median {1000 * statistics.median(render_cpu):.1f} ms"
        )


class urllib_open:  # noqa: N801 - used like open()
    """The body of one fetch as text (for counting series)."""

    def __init__(self, url: str) -> None:
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as response:
            raw = response.read()
        self.text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()

    def __enter__(self) -> str:
        return self.text

    def __exit__(self, *exc: object) -> None:
        return None


def lateness(states: list[PackState]) -> str:
    late = sorted(1000 * s.timing.lateness_s for s in states if s.timing is not None)
    if not late:
        return "no ticks"
    p99 = late[min(len(late) - 1, int(0.99 * len(late)))]
    overruns = sum(1 for s in states if s.timing is not None and s.timing.duration_s > 0.1)
    return (
        f"{len(late):4d} ticks, lateness p50 {statistics.median(late):5.1f} ms, "
        f"p99 {p99:5.1f} ms, max {late[-1]:6.1f} ms, overruns {overruns}"
    )


async def tick_lateness(
    modules: int, cells: int, phase_s: float, interval_s: float, state_dir: Path
) -> None:
    config = pack_config(
        modules,
        cells,
        state_dir,
        f"can.slaves.channel='bench-metrics-{modules}x{cells}'",
        # The simulator shares this process: at full rate a 1,536-cell plant alone saturates
        # a core, which would measure the plant. Slower frames and physics keep it light;
        # the daemon's tick (snapshot, protection, estimator for every cell) is unchanged.
        "sim.physics_step_s=0.05",
        "sim.cell_period_s=0.5",
        "sim.status_period_s=0.5",
        "sim.temp_period_s=2.0",
        "acquisition.module_timeout_s=2.0",
        "acquisition.temp_timeout_s=6.0",
        "protection.faults.module_comm_loss.warning.threshold=2.0",
        "protection.faults.module_comm_loss.fatal.threshold=3.0",
    )
    daemon = Daemon(config)
    states: list[PackState] = []
    daemon.loop.on_tick.append(states.append)
    running = asyncio.create_task(daemon.run())
    stop_scraping = threading.Event()
    scrape_times: list[float] = []
    try:
        await asyncio.sleep(5.0)  # start-up: contactors close, estimator starts
        assert daemon.metrics is not None and daemon.metrics.address is not None
        host, port = daemon.metrics.address
        url = f"http://{host}:{port}/metrics"
        states.clear()
        await asyncio.sleep(phase_s)
        quiet = list(states)
        states.clear()

        def scraper() -> None:
            while not stop_scraping.is_set():
                scrape_times.append(curl(url)[0])
                stop_scraping.wait(interval_s)

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        await asyncio.sleep(phase_s)
        stop_scraping.set()
        scraped = list(states)
        await asyncio.to_thread(thread.join, 30)
    finally:
        stop_scraping.set()
        daemon.request_stop()
        await asyncio.wait_for(running, 30)
    n = modules * cells
    print(f"{n:5d} cells, no scraping      : {lateness(quiet)}")
    print(
        f"{n:5d} cells, scrape every {interval_s:g} s: {lateness(scraped)}; "
        f"{len(scrape_times)} scrapes, median {1000 * statistics.median(scrape_times):.1f} ms "
        "while the daemon runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scrapes", type=int, default=20, help="fetches per configuration")
    parser.add_argument("--phase-s", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--interval", type=float, default=1.0, help="scrape interval, s")
    parser.add_argument("--skip-lateness", action="store_true")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is needed (apt-get install curl)")
    with tempfile.TemporaryDirectory(prefix="bmsd-bench-metrics-") as tmp:
        print("scrape time and body size (exporter serving a fixed closed-loop state):")
        for modules, cells in PACKS:
            scrape_cost(modules, cells, args.scrapes, Path(tmp) / f"s{modules}")
        if args.skip_lateness:
            return
        print(
            "\ntick lateness of a running daemon (embedded simulated pack, tick 100 ms), "
            "without and with scraping:"
        )
        for modules, cells in PACKS:
            asyncio.run(
                tick_lateness(
                    modules, cells, args.phase_s, args.interval, Path(tmp) / f"d{modules}"
                )
            )


if __name__ == "__main__":
    main()
