"""Soak: the real daemon under every publisher's load for a long time; does anything degrade?

Starts ``bmsd run`` on etc/sim.toml as its own process (its own state directory, ephemeral
Modbus and metrics ports) with a cycling load: a CSV profile written for the run repeats a
compressed charge / rest / discharge / rest cycle just below the pack's rated charge current
(130 A charge, 120 A discharge, charging longer), starting near the top, so every cycle runs
into the charge-current taper and back down. The simulated Pylontech HV inverter of sim.toml
answers on its own bus and draws that load within the limits bmsd sends it. Beside the daemon
this process runs:

- four Modbus TCP clients (pymodbus), each one connection polling at its own rate: an EMS
  reading the native limits at 10 Hz, a SunSpec reader walking the model chain at 5 Hz, a
  cell-voltage/temperature reader at 2 Hz and a full native-block reader at 1 Hz;
- a real Prometheus server (Debian ``prometheus``, generated config in the work directory)
  scraping /metrics every ``--scrape`` seconds; without the binary, an HTTP GET scraper at the
  same rate (said so in the output);
- a sampler reading the daemon's RSS (/proc/PID/status VmRSS) and its own metrics every
  ``--sample`` seconds;
- the pause probe (bench/pauses.py), its own process at the daemon's priority, which writes
  down every moment the machine stopped it or the hypervisor stole a CPU: each stall the
  daemon logs is set beside them, so a tick missed while the whole machine stood still is told
  from one the daemon missed by itself.

Printed periodically and at the end: RSS at start and end, RSS growth per hour as a
least-squares slope over the samples after the warm-up with its standard error, tick lateness
p50/p99 (interpolated in the daemon's lateness histogram, as Prometheus' histogram_quantile)
and max (the daemon's max gauge), missed ticks, each stall and whose it was, the machine's
pauses and hypervisor steal, fault events by fault, Modbus requests and
errors, inverter frames sent, Prometheus scrapes and failures, and the SOC and CCL ranges
covered. Memory of this harness stays bounded: only running sums, extremes and counters are
kept, never the samples. Exits 1 when the daemon died or a component never worked; with
``--strict`` 2 when a target is missed (RSS growth beyond two standard errors, a tick missed
after the warm-up outside a pause of the machine, a fatal fault).

    .venv/bin/python bench/soak.py --duration 1h
    .venv/bin/python bench/soak.py --duration 10m --json soak.json

Timing figures depend on the machine's other load; run the hour on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402
from pymodbus.exceptions import ModbusException  # noqa: E402

from bmsd.config import load_config  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import pauses  # noqa: E402

SIM = ROOT / "etc" / "sim.toml"
UNIT_FILE = ROOT / "systemd" / "bmsd.service"
# Variables of the harness's environment that change what the soak measures when the daemon
# inherits them (the report names them).
INTERPRETER_VARIABLES = ("PYTHON", "MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD")


def unit_values(directive: str, text: str | None = None) -> list[str]:
    """The values of one directive's lines in the systemd unit (``Nice=``, ...), in order."""
    prefix = f"{directive}="
    lines = (UNIT_FILE.read_text() if text is None else text).splitlines()
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def unit_nice() -> int:
    """The scheduling priority the systemd unit gives the daemon (its ``Nice=``), else 0."""
    values = [value for value in unit_values("Nice") if re.fullmatch(r"-?\d+\s*", value)]
    return int(values[-1]) if values else 0  # as systemd: the last one wins


def unit_environment(text: str | None = None) -> tuple[tuple[str, str], ...]:
    """The variables the systemd unit sets for the daemon (its ``Environment=`` lines).

    As systemd reads them: each line holds space-separated NAME=VALUE assignments, quoted
    where a value has spaces; lines add up, a later one overrides, an empty one clears.
    """
    variables: dict[str, str] = {}
    for line in unit_values("Environment", text):
        try:
            assignments = shlex.split(line)
        except ValueError:  # an unbalanced quote: systemd ignores the line too
            continue
        if not assignments:
            variables.clear()
        for assignment in assignments:
            name, equals, value = assignment.partition("=")
            if equals and name.isidentifier():  # as systemd, skip what is no variable name
                variables[name] = value
    return tuple(variables.items())


UNIT = 1
SUNSPEC_BASE = 40000
SUNSPEC_MARKER = [0x5375, 0x6E53]  # "SunS"
MAP_VERSION = 1  # native input register 0
CELL_BLOCK_BASE, CELL_BLOCK_STRIDE, TEMP_OFFSET = 1000, 320, 256
MIB = 1024.0 * 1024.0
PROMETHEUS = shutil.which("prometheus")

# --stall-tolerant: on a machine shared with other heavy jobs the daemon's process can stall for
# a second. The production thresholds rightly trip on that (the loop made no decision; the
# switch box's own command timeout opens the contactors; sources look silent), which ends the
# cycling. These overrides let the pack ride through stalls of up to about 2.5 s, so such a
# machine still exercises the publishers; warnings are unchanged. Never for a real pack.
STALL_TOLERANT = (
    "protection.faults.control_loop_overrun.fatal.threshold=5.0",
    "protection.contactors.command_timeout_s=2.55",  # SWITCHBOX_COMMAND.CommandTimeout's maximum
    "protection.faults.current_sensor_comm_loss.fatal.threshold=3.0",
    "protection.faults.switchbox_comm_loss.fatal.threshold=3.0",
    "protection.faults.module_comm_loss.fatal.threshold=3.0",
)

# -- parsing and statistics (pure) -------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h`` -> seconds; anything else is a ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"duration {text!r}: expected a number with s, m or h (e.g. 10m, 1h)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


@dataclass(slots=True)
class LinearFit:
    """Streaming least-squares line y = a + b·x (Welford co-moments: no samples kept)."""

    n: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        dx = x - self.mean_x
        self.mean_x += dx / self.n
        old_mean_y = self.mean_y
        self.mean_y += (y - self.mean_y) / self.n
        self.sxx += dx * (x - self.mean_x)
        self.sxy += dx * (y - self.mean_y)
        self.syy += (y - old_mean_y) * (y - self.mean_y)

    @property
    def slope(self) -> float | None:
        return self.sxy / self.sxx if self.n >= 2 and self.sxx > 0 else None

    @property
    def slope_stderr(self) -> float | None:
        """Standard error of the slope (residuals taken as independent, see the docs)."""
        if self.n < 3 or self.sxx <= 0:
            return None
        residual = max(0.0, self.syy - self.sxy * self.sxy / self.sxx)
        return math.sqrt(residual / (self.n - 2) / self.sxx)


Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q.

    Returns the highest finite bound when the rank falls in the +Inf bucket, None without
    observations.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def bucket_difference(end: Buckets, start: Buckets) -> Buckets:
    """Observations between two cumulative histograms of the same buckets."""
    if not start:
        return end
    before = dict(start)
    return [(upper, count - before.get(upper, 0.0)) for upper, count in end]


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """What the sampler needs from one scrape of the daemon's /metrics."""

    ticks: float
    missed_ticks: float
    lateness_buckets: Buckets
    lateness_max_s: float
    fault_sets: dict[str, float]  # "fault/level" -> set events since start
    faults_active: tuple[str, ...]
    soc: float | None
    ccl_a: float | None
    dcl_a: float | None
    mode: str
    modbus_requests: float
    modbus_errors: float
    modbus_errors_by: dict[str, float]  # "function/exception" -> exception answers
    inverter_frames: float
    inverter_requests: float
    # The C heap as glibc saw it before the daemon's newest trim (absent before the first)
    heap_in_use_bytes: float | None = None
    heap_free_bytes: float | None = None
    heap_trims: float = 0.0
    cpu_s: float | None = None  # the daemon's CPU time since start (user and system)
    tick_run_buckets: Buckets = field(default_factory=list)  # bmsd_control_tick_duration_seconds
    tick_run_sum_s: float = 0.0


def parse_metrics(text: str) -> MetricsSample:
    """Pick the soak's figures out of one exposition text."""
    values: dict[str, float] = {}
    buckets: Buckets = []
    run_buckets: Buckets = []
    fault_sets: dict[str, float] = {}
    active: list[str] = []
    mode = "?"
    modbus_requests = modbus_errors = frames = requests = 0.0
    modbus_errors_by: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == "bmsd_control_tick_lateness_seconds_bucket":
                buckets.append((float(labels["le"]), value))
            elif name == "bmsd_control_tick_duration_seconds_bucket":
                run_buckets.append((float(labels["le"]), value))
            elif name == "bmsd_fault_events_total" and labels.get("event") == "set":
                fault_sets[f"{labels['fault']}/{labels['level']}"] = value
            elif name == "bmsd_fault_active" and value:
                active.append(f"{labels['fault']}/{labels['level']}")
            elif name == "bmsd_mode" and value:
                mode = labels["mode"]
            elif name == "bmsd_modbus_requests_total":
                modbus_requests += value
            elif name == "bmsd_modbus_errors_total":
                modbus_errors += value
                modbus_errors_by[f"{labels['function']}/{labels['exception']}"] = value
            elif name == "bmsd_inverter_frames_sent_total":
                frames += value
            elif name == "bmsd_inverter_requests_total":
                requests += value
            elif not labels:
                values[name] = value
    buckets.sort()
    run_buckets.sort()
    return MetricsSample(
        ticks=values.get("bmsd_control_ticks_total", 0.0),
        missed_ticks=values.get("bmsd_control_missed_ticks_total", 0.0),
        lateness_buckets=buckets,
        lateness_max_s=values.get("bmsd_control_tick_lateness_max_seconds", 0.0),
        fault_sets=fault_sets,
        faults_active=tuple(sorted(active)),
        soc=values.get("bmsd_soc_ratio"),
        ccl_a=values.get("bmsd_charge_current_limit_amperes"),
        dcl_a=values.get("bmsd_discharge_current_limit_amperes"),
        mode=mode,
        modbus_requests=modbus_requests,
        modbus_errors=modbus_errors,
        modbus_errors_by=modbus_errors_by,
        inverter_frames=frames,
        inverter_requests=requests,
        heap_in_use_bytes=values.get("bmsd_heap_in_use_bytes"),
        heap_free_bytes=values.get("bmsd_heap_free_bytes"),
        heap_trims=values.get("bmsd_heap_trims_total", 0.0),
        cpu_s=values.get("process_cpu_seconds_total"),
        tick_run_buckets=run_buckets,
        tick_run_sum_s=values.get("bmsd_control_tick_duration_seconds_sum", 0.0),
    )


def cycle_profile(
    period_s: float, charge_a: float, discharge_a: float
) -> list[tuple[float, float]]:
    """One compressed ESS cycle as (time_s, current_a) points, positive charging.

    Charge for 45 % of the period, rest, discharge for 40 %, rest, with ramps of 2 % of the
    period (a real inverter ramps; steps would only test the current sensor's filter). Charge
    outlasts discharge, so the pack is held near the top by the charge taper instead of
    drifting down cycle after cycle: the run can last any time.
    """
    shape = (
        (0.00, 0.0), (0.02, 1.0), (0.45, 1.0), (0.47, 0.0), (0.50, 0.0),
        (0.52, -1.0), (0.90, -1.0), (0.92, 0.0), (1.00, 0.0),
    )  # fmt: skip
    return [
        (fraction * period_s, level * (charge_a if level > 0 else discharge_a))
        for fraction, level in shape
    ]


# -- the parts of the run ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read().decode())


@dataclass(slots=True)
class ClientStats:
    """One Modbus client's counts (kept as totals only)."""

    name: str
    rate_hz: float
    requests: int = 0
    exceptions: int = 0  # Modbus exception responses
    failures: int = 0  # timeouts, broken connections
    wrong: int = 0  # answers that do not hold what the map promises
    reconnects: int = 0


async def _read(
    client: AsyncModbusTcpClient, stats: ClientStats, function: int, address: int, count: int
) -> list[int] | None:
    stats.requests += 1
    try:
        if function == 4:
            response = await client.read_input_registers(address, count=count, device_id=UNIT)
        else:
            response = await client.read_holding_registers(address, count=count, device_id=UNIT)
    except (ModbusException, OSError, TimeoutError):
        stats.failures += 1
        client.close()
        return None
    if response.isError():
        stats.exceptions += 1
        return None
    return list(response.registers)


async def _sunspec_chunks(
    client: AsyncModbusTcpClient, stats: ClientStats
) -> list[tuple[int, int]] | None:
    """Walk the SunSpec model chain once: every (address, count ≤ 125) to read."""
    marker = await _read(client, stats, 3, SUNSPEC_BASE, 2)
    if marker is None:
        return None
    if marker != SUNSPEC_MARKER:
        stats.wrong += 1
        return None
    chunks: list[tuple[int, int]] = []
    address = SUNSPEC_BASE + 2
    for _ in range(1000):  # a chain longer than this is itself wrong
        header = await _read(client, stats, 3, address, 2)
        if header is None:
            return None
        model_id, length = header
        if model_id == 0xFFFF:
            return chunks
        end = address + 2 + length
        for start in range(address, end, 125):
            chunks.append((start, min(125, end - start)))
        address = end
    stats.wrong += 1
    return None


async def modbus_client(
    kind: str, port: int, stats: ClientStats, layout: tuple[int, int, int], stop: asyncio.Event
) -> None:
    """One TCP connection polling at ``stats.rate_hz`` until ``stop``; reconnects on failure.

    ``layout`` is (modules, cells per module, temperature sensors per module) of the pack.
    """
    module_count, cells, temps = layout
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0)
    period_s = 1.0 / stats.rate_hz
    step = 0
    chunks: list[tuple[int, int]] | None = None
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            if not client.connected:
                if step:
                    stats.reconnects += 1
                await client.connect()
            if client.connected:
                if kind == "ems":  # status, SOC and the four limits
                    regs = await _read(client, stats, 4, 0, 21)
                    if regs is not None and regs[0] != MAP_VERSION:
                        stats.wrong += 1
                elif kind == "native":  # the whole native input block
                    regs = await _read(client, stats, 4, 0, 66)
                    if regs is not None and regs[0] != MAP_VERSION:
                        stats.wrong += 1
                    await _read(client, stats, 4, 100, 16)
                elif kind == "cells":  # one module's cells, then its temperatures
                    module = (step // 2) % module_count
                    base = CELL_BLOCK_BASE + CELL_BLOCK_STRIDE * module
                    if step % 2 == 0:
                        await _read(client, stats, 4, base, cells)
                    else:
                        await _read(client, stats, 4, base + TEMP_OFFSET, temps)
                elif kind == "sunspec":
                    if not chunks:
                        chunks = await _sunspec_chunks(client, stats)
                    else:
                        address, count = chunks[step % len(chunks)]
                        await _read(client, stats, 3, address, count)
            step += 1
            next_at += period_s
            now = time.monotonic()
            if next_at < now:  # behind (a reconnect): keep the rate, do not burst
                next_at = now
            with contextlib.suppress(TimeoutError):  # the pace, or stop
                await asyncio.wait_for(stop.wait(), timeout=next_at - now)
    finally:
        client.close()


CLIENTS = (("ems", 10.0), ("sunspec", 5.0), ("cells", 2.0), ("native", 1.0))


@dataclass(slots=True)
class Scrapes:
    """Prometheus (or the fallback scraper): how many scrapes and how many failed."""

    by: str = "prometheus"
    total: int = 0
    failed: int = 0
    max_duration_s: float | None = None


class PrometheusServer:
    """A real Prometheus scraping the daemon, with its config and TSDB in ``directory``."""

    def __init__(self, directory: Path, target: str, interval_s: float) -> None:
        assert PROMETHEUS is not None
        directory.mkdir(parents=True, exist_ok=True)
        interval_ms = max(100, round(interval_s * 1000))
        timeout_ms = max(100, min(round(interval_ms * 0.8), 5000))  # must not exceed the interval
        (directory / "prometheus.yml").write_text(  # Prometheus durations take no fraction
            f"global: {{scrape_interval: {interval_ms}ms, scrape_timeout: {timeout_ms}ms}}\n"
            "scrape_configs:\n"
            f"  - job_name: bmsd\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_at = time.monotonic()
        self._log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def wait_ready(self, limit_s: float = 60.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}")
            try:
                http_get(f"{self.url}/-/ready", 2.0)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus not ready within a minute")

    def query(self, promql: str) -> float | None:
        """An instant query giving one number (None when empty or unavailable)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            body = json.loads(http_get(url, 10.0))
        except (OSError, ValueError):
            return None
        result = body.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else None

    def scrapes(self) -> Scrapes:
        window = f"{max(1, int(time.monotonic() - self.started_at) + 5)}s"
        total = self.query(f'count_over_time(up{{job="bmsd"}}[{window}])')
        ok = self.query(f'sum_over_time(up{{job="bmsd"}}[{window}])')
        longest = self.query(f'max_over_time(scrape_duration_seconds{{job="bmsd"}}[{window}])')
        count = int(total or 0)
        return Scrapes("prometheus", count, count - int(ok or 0), longest)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


async def fallback_scraper(
    url: str, interval_s: float, scrapes: Scrapes, stop: asyncio.Event
) -> None:
    """HTTP GET scrapes at Prometheus' rate when the prometheus binary is missing."""
    while not stop.is_set():
        started = time.monotonic()
        scrapes.total += 1
        try:
            await asyncio.to_thread(http_get, url, max(0.5, interval_s))
            duration = time.monotonic() - started
            scrapes.max_duration_s = max(scrapes.max_duration_s or 0.0, duration)
        except OSError:
            scrapes.failed += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stop.wait(), timeout=max(0.0, interval_s - (time.monotonic() - started))
            )


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SoakOptions:
    duration_s: float
    sample_s: float = 10.0
    report_s: float = 60.0
    warmup_s: float | None = None  # default: a fifth of the run, at most 5 min
    scrape_s: float = 2.0
    cycle_s: float = 1200.0
    # Below the cell rating (0.5C = 140 A: charge_overcurrent's info level) so noise does not
    # flag it; charge outweighs discharge per cycle (see cycle_profile).
    charge_a: float = 130.0
    discharge_a: float = 120.0
    initial_soc: float = 0.93  # mean cell SOC: the top of the charge tapers in the first hour
    use_prometheus: bool = True
    nice: int = 0  # the daemon's nice value (the unit's by default, see main)
    # Variables set for the daemon besides the harness's own (the unit's by default, see main)
    environment: tuple[tuple[str, str], ...] = ()
    overrides: tuple[str, ...] = ()  # more ``--set KEY=VALUE`` for the daemon, applied last

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(300.0, self.duration_s / 5.0)


@dataclass(slots=True)
class SoakResult:
    """Every figure of one run (also the --json output)."""

    duration_s: float = 0.0
    daemon_alive: bool = False
    daemon_exit_code: int | None = None
    daemon_nice: int = 0  # as run (raising the priority needs root)
    daemon_environment: list[str] = field(default_factory=list)  # NAME=VALUE set for it
    daemon_inherited: list[str] = field(default_factory=list)  # from the harness, that matter
    samples: int = 0
    rss_start_mib: float | None = None
    rss_end_mib: float | None = None
    rss_max_mib: float | None = None
    rss_growth_mib_per_h: float | None = None
    rss_growth_stderr_mib_per_h: float | None = None
    rss_fit_samples: int = 0
    # The same fit over the second half of the time after the warm-up: the verdict. A leak
    # grows as fast late as early; a heap that settles (allocator steps ever further apart)
    # does not.
    rss_late_from_s: float | None = None
    rss_late_growth_mib_per_h: float | None = None
    rss_late_growth_stderr_mib_per_h: float | None = None
    rss_late_fit_samples: int = 0
    # What the C heap holds (the daemon's bmsd_heap_* metrics, after the warm-up): memory in
    # use that grows is a leak; RSS that grows while it does not is the allocator's.
    heap_in_use_start_mib: float | None = None
    heap_in_use_end_mib: float | None = None
    heap_in_use_growth_mib_per_h: float | None = None
    heap_in_use_growth_stderr_mib_per_h: float | None = None
    heap_free_end_mib: float | None = None
    heap_trims: int = 0
    ticks: int = 0
    missed_ticks: int = 0
    missed_ticks_after_warmup: int = 0
    # Stalls over control_loop_overrun's warning level, each set beside the pause probe
    # (bench/pauses.py): was the machine stopped or stolen at the time?
    stalls: list[dict[str, Any]] = field(default_factory=list)
    missed_ticks_in_machine_pauses: int = 0  # after the warm-up
    machine_pauses: int = 0  # probe events over the run (overslept or steal > 20 ms)
    machine_pause_max_s: float | None = None
    steal_s: float | None = None  # hypervisor steal of all CPUs during the run
    lateness_p50_s: float | None = None
    lateness_p99_s: float | None = None
    lateness_max_s: float | None = None
    lateness_max_after_warmup: bool = False
    # What the daemon's work costs after the warm-up: its CPU time as a share of one CPU, and
    # the run time of a control tick (bmsd_control_tick_duration_seconds: mean and p99).
    cpu_after_warmup_percent: float | None = None
    tick_run_mean_s: float | None = None
    tick_run_p99_s: float | None = None
    fault_sets: dict[str, int] = field(default_factory=dict)
    fault_sets_after_warmup: dict[str, int] = field(default_factory=dict)
    faults_active_end: list[str] = field(default_factory=list)
    modes_seen: list[str] = field(default_factory=list)
    soc_min: float | None = None
    soc_max: float | None = None
    ccl_min_a: float | None = None
    ccl_max_a: float | None = None
    dcl_min_a: float | None = None
    modbus_clients: list[dict[str, Any]] = field(default_factory=list)
    modbus_requests_server: int = 0
    modbus_errors_server: int = 0
    modbus_errors_by: dict[str, int] = field(default_factory=dict)
    inverter_frames: int = 0
    inverter_requests: int = 0
    scrapes_by: str = ""
    scrapes: int = 0
    scrape_failures: int = 0
    scrape_max_duration_s: float | None = None
    sampler_failures: int = 0
    log_warnings: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def unmet_targets(self) -> list[str]:
        """The soak's targets this run missed: growth beyond noise, missed ticks, fatal faults."""
        unmet = []
        slope, stderr = self.rss_growth_mib_per_h, self.rss_growth_stderr_mib_per_h
        if self.rss_late_fit_samples >= 3:
            slope = self.rss_late_growth_mib_per_h
            stderr = self.rss_late_growth_stderr_mib_per_h
        if slope is not None and stderr is not None and slope > 2.0 * stderr:
            unmet.append(f"RSS grows {slope:+.2f} MiB/h, beyond 2 standard errors")
        own = self.missed_ticks_after_warmup - self.missed_ticks_in_machine_pauses
        if own > 0:
            unmet.append(f"{own} ticks missed after the warm-up, outside any pause of the machine")
        fatal = [key for key in self.fault_sets if key.endswith("/fatal")]
        if fatal:
            unmet.append(f"fatal faults: {', '.join(fatal)}")
        return unmet

    def modbus_totals(self) -> tuple[int, int, int, int]:
        keys = ("requests", "exceptions", "failures", "wrong")
        return tuple(sum(int(c[k]) for c in self.modbus_clients) for k in keys)  # type: ignore[return-value]


def _lo(old: float | None, new: float | None) -> float | None:
    return new if old is None else old if new is None else min(old, new)


def _hi(old: float | None, new: float | None) -> float | None:
    return new if old is None else old if new is None else max(old, new)


class Soak:
    """One run; ``run()`` returns the result. The work directory holds logs and the TSDB."""

    def __init__(self, options: SoakOptions, work: Path, out: Any = sys.stdout) -> None:
        self.options = options
        self.work = work
        self.out = out
        self.result = SoakResult()
        self._fit = LinearFit()
        self._late_fit = LinearFit()
        self._heap_fit = LinearFit()
        self._late_from_s = options.warmup + (options.duration_s - options.warmup) / 2.0
        self._warm_sample: MetricsSample | None = None
        self._warm_elapsed_s = self._last_elapsed_s = 0.0
        self._modes: set[str] = set()

    # -- the daemon ----------------------------------------------------------------------------

    def _start_daemon(self) -> subprocess.Popen[bytes]:
        profile = self.work / "load.csv"
        points = cycle_profile(
            self.options.cycle_s, self.options.charge_a, self.options.discharge_a
        )
        profile.write_text("time_s,current_a\n" + "".join(f"{t:.3f},{i:.3f}\n" for t, i in points))
        tag = f"soak-{os.getpid()}-{self.work.name}"
        self._log_path = self.work / "bmsd.log"
        self._log_file = self._log_path.open("w")
        # As the unit runs it: with its Nice= (a negative value needs root; else nice 0).
        nice = self.options.nice if self.options.nice >= 0 or os.geteuid() == 0 else 0
        self.result.daemon_nice = nice
        # And with its Environment= (PYTHONMALLOC among them: the allocator is part of what
        # the soak measures).
        unit_variables = dict(self.options.environment)
        self.result.daemon_environment = [f"{k}={v}" for k, v in unit_variables.items()]
        # The daemon also inherits the harness's environment (systemd would start it from a
        # clean one): name what it inherits that changes the interpreter or the allocator.
        self.result.daemon_inherited = sorted(
            f"{k}={v}"
            for k, v in os.environ.items()
            if k.startswith(INTERPRETER_VARIABLES) and k not in unit_variables
        )
        return subprocess.Popen(
            [
                *(("nice", "-n", str(nice)) if nice else ()),
                sys.executable, "-m", "bmsd.cli", "run", "--config", str(SIM),
                "--set", f"state.directory='{self.work / 'state'}'",
                "--set", "metrics.port=0", "--set", "modbus.port=0",
                "--set", f"can.slaves.channel='{tag}-slaves'",
                "--set", f"can.inverter.channel='{tag}-inverter'",
                "--set", "sim.load.kind='csv'",
                "--set", f"sim.load.csv_file='{profile}'",
                "--set", f"sim.initial_soc={self.options.initial_soc}",
                "--set", "control.summary_log_interval_s=10.0",
                *(arg for override in self.options.overrides for arg in ("--set", override)),
            ],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log_file,
            env={**os.environ, **unit_variables},
        )  # fmt: skip

    def _addresses(self, daemon: subprocess.Popen[bytes], limit_s: float = 60.0) -> tuple[str, int]:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            text = self._log_path.read_text(errors="replace")
            metrics = re.search(r"metrics on http://([^/\s]+)/metrics", text)
            modbus = re.search(r"modbus: serving unit \d+ on [\d.]+:(\d+)", text)
            if metrics and modbus:
                return metrics.group(1), int(modbus.group(1))
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError("the daemon never logged its metrics and Modbus addresses")

    def _count_log(self) -> None:
        """Warnings and errors the daemon logged, by logger and message start (streamed)."""
        counts: Counter[str] = Counter()
        pattern = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\s+(\S+): (.{0,40})")
        with self._log_path.open(errors="replace") as log:
            for line in log:
                match = pattern.match(line)
                if match:
                    words = re.sub(r"\d+(\.\d+)?", "N", match.group(3))
                    counts[f"{match.group(1)} {match.group(2)}: {words}"] += 1
        self.result.log_warnings = dict(counts.most_common(20))

    def _start_probe(self) -> subprocess.Popen[bytes]:
        """bench/pauses.py beside the daemon, at its priority: the machine's own pauses."""
        nice = self.options.nice if self.options.nice >= 0 or os.geteuid() == 0 else 0
        return subprocess.Popen(
            [
                *(("nice", "-n", str(nice)) if nice else ()),
                sys.executable, str(ROOT / "bench" / "pauses.py"), str(self.work / "pauses.txt"),
            ],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _stalls(self) -> None:
        """Set each stall the daemon logged beside the machine's pauses at the time."""
        result = self.result
        found = pauses.read_pauses(self.work / "pauses.txt")
        result.machine_pauses = len(found)
        result.machine_pause_max_s = max(
            (max(p.overslept_s, p.steal_s) for p in found), default=None
        )
        warm_wall = getattr(self, "_warm_wall", math.inf)
        for stall in pauses.read_stalls(self._log_path):
            machine, overslept_s, steal_s = pauses.attribute(stall, found)
            after_warmup = stall.at >= warm_wall
            if machine and after_warmup:
                result.missed_ticks_in_machine_pauses += stall.missed
            result.stalls.append(
                {
                    "at": time.strftime("%H:%M:%S", time.localtime(stall.at))
                    + f".{int(stall.at * 1000) % 1000:03d}",
                    "stall_s": stall.stall_s,
                    "missed": stall.missed,
                    "after_warmup": after_warmup,
                    "probe_overslept_s": overslept_s,
                    "steal_s": steal_s,
                    "machine": machine,
                }
            )

    # -- sampling ------------------------------------------------------------------------------

    def _sample(self, pid: int, metrics_url: str, elapsed_s: float) -> None:
        result = self.result
        rss = rss_kib(pid)
        if rss is not None:
            mib = rss / 1024.0
            result.rss_start_mib = mib if result.rss_start_mib is None else result.rss_start_mib
            result.rss_end_mib = mib
            result.rss_max_mib = _hi(result.rss_max_mib, mib)
            if elapsed_s >= self.options.warmup:
                self._fit.add(elapsed_s / 3600.0, mib)
            if elapsed_s >= self._late_from_s:
                self._late_fit.add(elapsed_s / 3600.0, mib)
        try:
            sample = parse_metrics(http_get(metrics_url))
        except (OSError, ValueError):
            result.sampler_failures += 1
            return
        result.samples += 1
        if self._warm_sample is None and elapsed_s >= self.options.warmup:
            self._warm_sample, self._warm_elapsed_s = sample, elapsed_s
        self._last_elapsed_s = elapsed_s
        self._modes.add(sample.mode)
        self._last = sample
        if elapsed_s < self.options.warmup:
            return  # the ranges show the load cycling, not the limits at zero during start-up
        # One point per trim: the figure changes only then, and repeating it between trims
        # would shrink the slope's standard error without adding any information.
        if sample.heap_in_use_bytes is not None and sample.heap_trims > result.heap_trims:
            in_use_mib = sample.heap_in_use_bytes / MIB
            if result.heap_in_use_start_mib is None:
                result.heap_in_use_start_mib = in_use_mib
            result.heap_in_use_end_mib = in_use_mib
            self._heap_fit.add(elapsed_s / 3600.0, in_use_mib)
        if sample.heap_free_bytes is not None:
            result.heap_free_end_mib = sample.heap_free_bytes / MIB
        result.heap_trims = int(sample.heap_trims)
        result.soc_min, result.soc_max = (
            _lo(result.soc_min, sample.soc),
            _hi(result.soc_max, sample.soc),
        )
        result.ccl_min_a, result.ccl_max_a = (
            _lo(result.ccl_min_a, sample.ccl_a),
            _hi(result.ccl_max_a, sample.ccl_a),
        )
        result.dcl_min_a = _lo(result.dcl_min_a, sample.dcl_a)

    def _figures(self) -> None:
        """Fold the newest metrics sample and the fit into the result."""
        result, last, warm = self.result, getattr(self, "_last", None), self._warm_sample
        result.rss_growth_mib_per_h = self._fit.slope
        result.rss_growth_stderr_mib_per_h = self._fit.slope_stderr
        result.rss_fit_samples = self._fit.n
        result.rss_late_from_s = self._late_from_s
        result.rss_late_growth_mib_per_h = self._late_fit.slope
        result.rss_late_growth_stderr_mib_per_h = self._late_fit.slope_stderr
        result.rss_late_fit_samples = self._late_fit.n
        result.heap_in_use_growth_mib_per_h = self._heap_fit.slope
        result.heap_in_use_growth_stderr_mib_per_h = self._heap_fit.slope_stderr
        result.modes_seen = sorted(self._modes)
        if last is None:
            return
        result.ticks = int(last.ticks)
        result.missed_ticks = int(last.missed_ticks)
        result.missed_ticks_after_warmup = int(
            last.missed_ticks - (warm.missed_ticks if warm else 0)
        )
        # After the warm-up when there was one long enough, else the whole run.
        base = warm.lateness_buckets if warm is not None and warm is not last else []
        buckets = bucket_difference(last.lateness_buckets, base)
        result.lateness_p50_s = histogram_quantile(0.5, buckets)
        result.lateness_p99_s = histogram_quantile(0.99, buckets)
        result.lateness_max_s = last.lateness_max_s
        result.lateness_max_after_warmup = (
            warm is not None and last.lateness_max_s > warm.lateness_max_s
        )
        if warm is not None and warm is not last:
            seconds = self._last_elapsed_s - self._warm_elapsed_s
            if last.cpu_s is not None and warm.cpu_s is not None:
                result.cpu_after_warmup_percent = 100.0 * (last.cpu_s - warm.cpu_s) / seconds
            run_buckets = bucket_difference(last.tick_run_buckets, warm.tick_run_buckets)
            ticks = run_buckets[-1][1] if run_buckets else 0.0  # the +Inf bucket counts all
            if ticks:
                result.tick_run_mean_s = (last.tick_run_sum_s - warm.tick_run_sum_s) / ticks
                result.tick_run_p99_s = histogram_quantile(0.99, run_buckets)
        result.fault_sets = {k: int(v) for k, v in sorted(last.fault_sets.items()) if v}
        before = warm.fault_sets if warm is not None else {}
        result.fault_sets_after_warmup = {
            k: n for k, v in sorted(last.fault_sets.items()) if (n := int(v - before.get(k, 0.0)))
        }
        result.faults_active_end = list(last.faults_active)
        result.modbus_requests_server = int(last.modbus_requests)
        result.modbus_errors_server = int(last.modbus_errors)
        result.modbus_errors_by = {k: int(v) for k, v in sorted(last.modbus_errors_by.items())}
        result.inverter_frames = int(last.inverter_frames)
        result.inverter_requests = int(last.inverter_requests)

    # -- the whole run -------------------------------------------------------------------------

    async def _run(self) -> None:
        options, result = self.options, self.result
        probe = self._start_probe()
        steal_before_s = pauses.total_steal_s()
        try:
            daemon = self._start_daemon()
        except BaseException:
            probe.terminate()
            raise
        prometheus: PrometheusServer | None = None
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        scrapes = Scrapes()
        clients = [ClientStats(kind, rate) for kind, rate in CLIENTS]
        started = time.monotonic()
        # SIGINT and SIGTERM cancel the run, so its cleanup below stops the daemon and
        # Prometheus (a background job may even have SIGINT ignored: asyncio's own handler
        # would then not be installed).
        loop, run_task = asyncio.get_running_loop(), asyncio.current_task()
        assert run_task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, run_task.cancel)
        try:
            target, modbus_port = await asyncio.to_thread(self._addresses, daemon)
            metrics_url = f"http://{target}/metrics"
            print(f"soak: bmsd pid {daemon.pid}, metrics {metrics_url}, Modbus port "
                  f"{modbus_port}, work directory {self.work}", file=self.out)  # fmt: skip
            if options.use_prometheus and PROMETHEUS is not None:
                prometheus = PrometheusServer(self.work / "prometheus", target, options.scrape_s)
                await asyncio.to_thread(prometheus.wait_ready)
            else:
                why = "prometheus not installed" if options.use_prometheus else "--no-prometheus"
                scrapes.by = f"HTTP GET ({why})"
                tasks.append(
                    asyncio.create_task(
                        fallback_scraper(metrics_url, options.scrape_s, scrapes, stop)
                    )
                )
            pack = load_config(SIM, self.options.overrides).pack
            layout = (
                pack.strings * pack.modules_per_string,
                pack.cells_per_module,
                pack.temps_per_module,
            )
            for stats in clients:
                tasks.append(
                    asyncio.create_task(modbus_client(stats.name, modbus_port, stats, layout, stop))
                )
            started = time.monotonic()
            self._warm_wall = time.time() + options.warmup
            next_sample = next_report = started
            while (elapsed := time.monotonic() - started) < options.duration_s:
                if daemon.poll() is not None:
                    result.problems.append(
                        f"the daemon died after {elapsed:.0f} s (exit code {daemon.returncode})"
                    )
                    break
                now = time.monotonic()
                if now >= next_sample:
                    await asyncio.to_thread(self._sample, daemon.pid, metrics_url, elapsed)
                    # A slow sample (a stalled daemon) delays the next, never causes a burst.
                    next_sample = max(next_sample + options.sample_s, time.monotonic())
                if now >= next_report and now > started:
                    next_report += options.report_s
                    self._figures()
                    print(self._progress(elapsed, clients), file=self.out, flush=True)
                await asyncio.sleep(
                    max(0.05, min(next_sample, options.duration_s + started) - time.monotonic())
                )
            result.duration_s = time.monotonic() - started
            if daemon.poll() is None:
                await asyncio.to_thread(self._sample, daemon.pid, metrics_url, result.duration_s)
            self._figures()
        finally:
            result.daemon_alive = daemon.poll() is None  # also when interrupted
            stop.set()
            for task in tasks:
                try:
                    await asyncio.wait_for(task, 10)
                except Exception as exc:  # a failed part is reported, not raised
                    result.problems.append(f"a load task failed: {exc!r}")
            if prometheus is not None:
                found = await asyncio.to_thread(prometheus.scrapes)
                scrapes = found
                prometheus.stop()
            result.scrapes_by, result.scrapes, result.scrape_failures = (
                scrapes.by,
                scrapes.total,
                scrapes.failed,
            )
            result.scrape_max_duration_s = scrapes.max_duration_s
            result.modbus_clients = [asdict(c) for c in clients]
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    result.daemon_exit_code = daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    result.daemon_exit_code = daemon.wait()
                    result.problems.append("the daemon did not stop within 20 s of SIGTERM")
            else:
                result.daemon_exit_code = daemon.returncode
            probe.terminate()
            probe.wait(10)
            result.steal_s = pauses.total_steal_s() - steal_before_s
            self._log_file.close()
            self._count_log()
            self._stalls()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        self._judge()

    def _judge(self) -> None:
        """Name every component that never worked (the exit status reads these)."""
        result = self.result
        wrong = result.modbus_totals()[3]
        if not result.daemon_alive:
            result.problems.append("the daemon was not running at the end")
        elif result.daemon_exit_code != 0:
            result.problems.append(f"the daemon exited with {result.daemon_exit_code} on SIGTERM")
        if result.samples == 0:
            result.problems.append("no metrics sample succeeded")
        for client in result.modbus_clients:
            if client["requests"] - client["exceptions"] - client["failures"] <= 0:
                result.problems.append(f"Modbus client {client['name']} got no answer")
        if wrong:
            result.problems.append(f"{wrong} Modbus answers with wrong content")
        if result.inverter_frames == 0:
            result.problems.append("no inverter frame sent")
        if result.scrapes - result.scrape_failures <= 0:
            result.problems.append("no successful Prometheus scrape")

    def run(self) -> SoakResult:
        """Run to the end; SIGINT or SIGTERM stops the children and raises KeyboardInterrupt."""
        try:
            asyncio.run(self._run())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        return self.result

    # -- output --------------------------------------------------------------------------------

    def _progress(self, elapsed_s: float, clients: list[ClientStats]) -> str:
        r = self.result
        requests = sum(c.requests for c in clients)
        bad = sum(c.exceptions + c.failures for c in clients)
        slope = f"{_f(r.rss_growth_mib_per_h, '+.2f')} ± {_f(r.rss_growth_stderr_mib_per_h, '.2f')}"
        return (
            f"[{elapsed_s / 60:6.1f} min] RSS {_f(r.rss_end_mib, '.1f')} MiB ({slope} MiB/h) "
            f"late p99 {_ms(r.lateness_p99_s)} max {_ms(r.lateness_max_s)} "
            f"missed {r.missed_ticks} SOC {_pct(r.soc_min)}..{_pct(r.soc_max)} "
            f"CCL {_f(r.ccl_min_a, '.0f')}..{_f(r.ccl_max_a, '.0f')} A Modbus {requests} "
            f"({bad} bad) frames {r.inverter_frames} faults {sum(r.fault_sets.values())}"
        )


def _f(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60.0


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value * 1000:.1f} ms"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.1f} %"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} x{count}" for key, count in counts.items()) or "none"


def report(result: SoakResult, options: SoakOptions) -> Iterator[str]:
    """The final figures, one topic a line."""
    r = result
    requests, exceptions, failures, wrong = r.modbus_totals()
    yield (
        f"soak: {r.duration_s / 60:.1f} min, {r.samples} samples every {options.sample_s:g} s, "
        f"warm-up {options.warmup / 60:.1f} min"
    )
    alive = "alive" if r.daemon_alive else "DEAD"
    yield (
        f"  daemon: {alive} at the end, exit code {r.daemon_exit_code} after SIGTERM, "
        f"nice {r.daemon_nice}, environment {' '.join(r.daemon_environment) or 'as the harness'}"
        + (f"; inherited {' '.join(r.daemon_inherited)}" if r.daemon_inherited else "")
    )
    yield (
        f"  RSS: start {_f(r.rss_start_mib, '.1f')} MiB, end {_f(r.rss_end_mib, '.1f')} MiB, "
        f"max {_f(r.rss_max_mib, '.1f')} MiB"
    )
    yield (
        f"  RSS growth: {_f(r.rss_growth_mib_per_h, '+.3f')} "
        f"± {_f(r.rss_growth_stderr_mib_per_h, '.3f')} MiB/h (least squares over "
        f"{r.rss_fit_samples} samples after the warm-up, ± one standard error)"
    )
    yield (
        f"  RSS growth in the second half (from {_f(_minutes(r.rss_late_from_s), '.1f')} min, "
        f"the verdict): {_f(r.rss_late_growth_mib_per_h, '+.3f')} "
        f"± {_f(r.rss_late_growth_stderr_mib_per_h, '.3f')} MiB/h "
        f"({r.rss_late_fit_samples} samples)"
    )
    yield (
        f"  C heap in use (glibc, after the warm-up): {_f(r.heap_in_use_start_mib, '.2f')} -> "
        f"{_f(r.heap_in_use_end_mib, '.2f')} MiB, {_f(r.heap_in_use_growth_mib_per_h, '+.3f')} "
        f"± {_f(r.heap_in_use_growth_stderr_mib_per_h, '.3f')} MiB/h; free before the last "
        f"trim {_f(r.heap_free_end_mib, '.2f')} MiB; {r.heap_trims} trims"
    )
    yield (
        f"  ticks: {r.ticks}, missed {r.missed_ticks} "
        f"({r.missed_ticks_after_warmup} after the warm-up)"
    )
    yield (
        f"  machine: {r.machine_pauses} pauses over 20 ms seen by the probe (longest "
        f"{_ms(r.machine_pause_max_s)}), hypervisor steal {_f(r.steal_s, '.1f')} s in all"
    )
    for stall in r.stalls:
        whose = "the machine's" if stall["machine"] else "the daemon's"
        yield (
            f"    stall at {stall['at']}: {stall['stall_s'] * 1000:.0f} ms, "
            f"{stall['missed']} missed, {'after' if stall['after_warmup'] else 'in'} the "
            f"warm-up; probe overslept {stall['probe_overslept_s'] * 1000:.0f} ms, steal "
            f"{stall['steal_s'] * 1000:.0f} ms: {whose}"
        )
    when = "after" if r.lateness_max_after_warmup else "during"
    yield (
        f"  tick lateness after the warm-up: p50 {_ms(r.lateness_p50_s)}, "
        f"p99 {_ms(r.lateness_p99_s)} (interpolated in histogram buckets); "
        f"max {_ms(r.lateness_max_s)} (whole run, set {when} the warm-up)"
    )
    yield (
        f"  cost after the warm-up: daemon CPU {_f(r.cpu_after_warmup_percent, '.1f')} % of one "
        f"CPU; control tick run time mean {_ms(r.tick_run_mean_s)}, p99 {_ms(r.tick_run_p99_s)}"
    )
    yield f"  fault events (set), whole run: {_counts(r.fault_sets)}"
    yield f"  fault events (set) after the warm-up: {_counts(r.fault_sets_after_warmup)}"
    yield f"  faults active at the end: {', '.join(r.faults_active_end) or 'none'}"
    yield f"  modes seen: {', '.join(r.modes_seen)}"
    yield (
        f"  load after the warm-up: SOC {_pct(r.soc_min)}..{_pct(r.soc_max)}, "
        f"CCL {_f(r.ccl_min_a, '.1f')}..{_f(r.ccl_max_a, '.1f')} A, "
        f"DCL min {_f(r.dcl_min_a, '.1f')} A"
    )
    yield (
        f"  Modbus: {requests} requests by {len(r.modbus_clients)} clients, {exceptions} "
        f"exception answers, {failures} timeouts or broken connections, {wrong} wrong answers; "
        f"the server counted {r.modbus_requests_server} requests, {r.modbus_errors_server} errors"
    )
    yield f"    server exception answers by function/exception: {_counts(r.modbus_errors_by)}"
    for c in r.modbus_clients:
        yield (
            f"    {c['name']:8s} {c['rate_hz']:4.0f} Hz: {c['requests']} requests, "
            f"{c['exceptions']} exceptions, {c['failures']} failures, "
            f"{c['reconnects']} reconnects"
        )
    yield f"  inverter: {r.inverter_frames} frames sent, {r.inverter_requests} requests answered"
    yield (
        f"  scrapes by {r.scrapes_by} every {options.scrape_s:g} s: {r.scrapes}, "
        f"failed {r.scrape_failures}, longest {_ms(r.scrape_max_duration_s)}; "
        f"sampler failures {r.sampler_failures}"
    )
    yield f"  daemon log warnings and errors: {_counts(r.log_warnings)}"
    yield f"  problems: {'; '.join(r.problems) or 'none'}"
    unmet = r.unmet_targets()
    yield f"  targets: {'not met: ' + '; '.join(unmet) if unmet else 'met'}"


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/reliability.md is tested against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=parse_duration("1h"),
        help="run time with s, m or h (default 1h)",
    )
    parser.add_argument(
        "--sample", type=parse_duration, default=10.0, help="RSS and metrics sample period"
    )
    parser.add_argument("--report", type=parse_duration, default=60.0, help="progress line period")
    parser.add_argument(
        "--warmup",
        type=parse_duration,
        default=None,
        help="left out of the RSS fit and lateness quantiles (default: a fifth, at most 5m)",
    )
    parser.add_argument(
        "--scrape", type=parse_duration, default=2.0, help="Prometheus scrape interval"
    )
    parser.add_argument(
        "--cycle", type=parse_duration, default=1200.0, help="load cycle period (default 20m)"
    )
    parser.add_argument(
        "--no-prometheus", action="store_true", help="HTTP GET scrapes instead of Prometheus"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="keep logs and TSDB here (default: a temp dir)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the figures as JSON here"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="the daemon's nice value (default: the systemd unit's Nice=; below 0 needs root)",
    )
    parser.add_argument(
        "--stall-tolerant",
        action="store_true",
        help="raise the stall-sensitive fatal thresholds (a loaded machine; see the docs)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 2 when a target is not met (see the docs)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another config override for the daemon (repeatable), e.g. a fault threshold",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # fmt: skip
    options = SoakOptions(
        duration_s=args.duration, sample_s=args.sample, report_s=args.report, warmup_s=args.warmup,
        scrape_s=args.scrape, cycle_s=args.cycle, use_prometheus=not args.no_prometheus,
        nice=unit_nice() if args.nice is None else args.nice, environment=unit_environment(),
        overrides=(STALL_TOLERANT if args.stall_tolerant else ()) + tuple(args.set),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bmsd-soak-") as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        soak = Soak(options, work)
        try:
            result = soak.run()
        except RuntimeError as exc:  # the daemon or Prometheus never came up
            print(f"soak: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("soak: interrupted; figures so far:", file=sys.stderr)
            for line in report(soak.result, options):
                print(line, file=sys.stderr)
            return 130
    for line in report(result, options):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    if result.problems:
        return 1
    return 2 if args.strict and result.unmet_targets() else 0


if __name__ == "__main__":
    raise SystemExit(main())
