"""RSS of a daemon under fast metrics scrapes: does memory follow the number of scrapes?

The 1-hour soak (bench/soak.py) sees the daemon's RSS grow by about 0.3 MiB/h while Python's
own allocations (tracemalloc) stay flat. This bench compresses hours of Prometheus scraping
into minutes: it starts ``bmsd run`` on the simulated pack (etc/sim.toml, its own process),
waits for it to settle, then GETs /metrics at ``--rate`` per second for ``--duration`` and
samples the RSS every 10 s. It prints the RSS at each sample, the least-squares slope and the
growth per scrape. ``--rate 0`` measures the same daemon without scrapes (the baseline).

    .venv/bin/python bench/scrape_rss.py --rate 20 --duration 4m
    .venv/bin/python bench/scrape_rss.py --rate 0 --duration 4m
    MALLOC_ARENA_MAX=2 .venv/bin/python bench/scrape_rss.py ...   # allocator settings pass on

Growth that levels off is the allocator taking heap pages; growth per scrape that goes on is
a leak.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from soak import parse_duration  # bench/ is on the path when run as a script

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "etc" / "sim.toml"
SETTLE_S = 30.0
SAMPLE_S = 10.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="scrapes per second (0: none)")
    parser.add_argument("--duration", type=parse_duration, default=240.0, help="e.g. 4m, 1h")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bmsd-scrape-rss-") as temp:
        log_path = Path(temp) / "bmsd.log"
        tag = f"scrape-rss-{Path(temp).name}"
        with log_path.open("w") as log:
            daemon = subprocess.Popen(
                [
                    sys.executable, "-m", "bmsd.cli", "run", "--config", str(SIM),
                    "--set", f"state.directory='{Path(temp) / 'state'}'",
                    "--set", "metrics.port=0", "--set", "modbus.port=0",
                    "--set", f"can.slaves.channel='{tag}-slaves'",
                    "--set", f"can.inverter.channel='{tag}-inverter'",
                ],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        try:
            url = None
            for _ in range(300):
                found = re.search(r"metrics on (http://\S+/metrics)", log_path.read_text())
                if found:
                    url = found.group(1)
                    break
                if daemon.poll() is not None:
                    print(log_path.read_text()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
            if url is None:
                print("the daemon never served its metrics", file=sys.stderr)
                return 1
            time.sleep(SETTLE_S)
            started = time.monotonic()
            next_sample = started
            scrapes = 0
            points: list[tuple[float, int]] = []
            while (now := time.monotonic()) - started < args.duration:
                if now >= next_sample:
                    points.append((now - started, rss_kib(daemon.pid)))
                    print(f"{now - started:7.0f} s  {scrapes:7d} scrapes  RSS {points[-1][1]} KiB")
                    next_sample += SAMPLE_S
                if args.rate > 0:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        response.read()
                    scrapes += 1
                    time.sleep(1.0 / args.rate)
                else:
                    time.sleep(min(1.0, max(0.0, next_sample - now)))
            points.append((time.monotonic() - started, rss_kib(daemon.pid)))
        finally:
            daemon.terminate()
            daemon.wait(30)
    times = [t for t, _ in points]
    values = [v for _, v in points]
    slope = statistics.linear_regression(times, values).slope * 3600 / 1024
    growth = values[-1] - values[0]
    per_scrape = f", {growth * 1024 / scrapes:.0f} B per scrape" if scrapes else ""
    print(
        f"rate {args.rate:g}/s: {scrapes} scrapes in {times[-1]:.0f} s; RSS {values[0]} -> "
        f"{values[-1]} KiB ({growth:+d} KiB{per_scrape}); slope {slope:+.2f} MiB/h"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
