"""Benchmark of the daemon's systemd protocol, as systemd would see it.

Prints figures, asserts nothing. A real ``bmsd run`` on the simulated pack (etc/sim.toml) gets
a unix datagram NOTIFY_SOCKET and the shipped unit's watchdog (WATCHDOG_USEC from WatchdogSec=
in systemd/bmsd.service); the benchmark measures:

a) start-up: process start to READY=1;
b) the watchdog pings over ``--seconds``: count, gaps (min, median, max), and the margin left
   to the watchdog timeout by the longest gap;
c) reload: SIGHUP to RELOADING=1 and to READY=1 (the same, unchanged file);
d) shutdown: SIGTERM to STOPPING=1 and to the process's exit.

Times are taken at the receiving end, so they include this machine's scheduling delays.

    .venv/bin/python bench/sd_notify.py                # 60 s of pings
    .venv/bin/python bench/sd_notify.py --seconds 10   # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _unit_watchdog_s() -> float:
    text = (ROOT / "systemd" / "bmsd.service").read_text()
    match = re.search(r"^WatchdogSec=(\d+)s$", text, re.MULTILINE)
    if match is None:
        raise SystemExit("no WatchdogSec=<n>s in systemd/bmsd.service")
    return float(match.group(1))


class Listener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_for(self, key: str, timeout_s: float) -> tuple[float, list[float]]:
        """Time ``key`` arrived, and the arrival times of WATCHDOG pings on the way."""
        pings: list[float] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            now = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            if "WATCHDOG" in fields:
                pings.append(now)
            if key in fields:
                return now, pings
        raise SystemExit(f"no {key} within {timeout_s} s")

    def collect_pings(self, seconds: float) -> list[float]:
        pings: list[float] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            if "WATCHDOG=1" in data.splitlines():
                pings.append(time.monotonic())
        return pings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to watch pings")
    args = parser.parse_args()
    watchdog_s = _unit_watchdog_s()
    work = Path(tempfile.mkdtemp(prefix="bmsd-bench-notify-"))
    listener = Listener(work / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(work / "notify.sock"),
        "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
    }
    command = [
        sys.executable,
        "-m",
        "bmsd.cli",
        "run",
        "--config",
        str(ROOT / "etc" / "sim.toml"),
        "--set",
        f"state.directory='{work / 'state'}'",
        "--set",
        f"can.slaves.channel='bench-notify-{os.getpid()}'",
    ]
    with (work / "daemon.log").open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=log, stdout=log)
    try:
        ready_at, _ = listener.wait_for("READY", 60)
        print(f"watchdog (from the unit)     {watchdog_s:.1f} s, pings due every "
              f"{watchdog_s / 2:.1f} s")  # fmt: skip
        print(f"a) start to READY=1          {ready_at - started:.3f} s")
        pings = listener.collect_pings(args.seconds)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        if gaps:
            print(
                f"b) pings in {args.seconds:.0f} s           {len(pings)}; gap min "
                f"{min(gaps):.3f} s, median {statistics.median(gaps):.3f} s, max "
                f"{max(gaps):.3f} s; margin to the watchdog {watchdog_s - max(gaps):.3f} s"
            )
        else:
            print(f"b) pings in {args.seconds:.0f} s           {len(pings)} (too few for gaps)")
        hup = time.monotonic()
        process.send_signal(signal.SIGHUP)
        reloading_at, _ = listener.wait_for("RELOADING", 30)
        reready_at, _ = listener.wait_for("READY", 30)
        print(
            f"c) SIGHUP to RELOADING=1     {reloading_at - hup:.3f} s, to READY=1 "
            f"{reready_at - hup:.3f} s"
        )
        term = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stopping_at, _ = listener.wait_for("STOPPING", 30)
        code = process.wait(timeout=30)
        exited = time.monotonic()
        print(
            f"d) SIGTERM to STOPPING=1     {stopping_at - term:.3f} s, to exit "
            f"{exited - term:.3f} s (exit code {code})"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        listener.sock.close()


if __name__ == "__main__":
    main()
