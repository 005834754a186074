"""Hostile Modbus clients against a ``bmsd run`` process: what an attack costs the others.

The daemon runs as a child process on etc/sim.toml (ports chosen by the kernel); the attackers
of ``tests/modbus_hostile.py`` and a well-behaved pymodbus client run in this process.

1. Baseline: the good client alone for ``--baseline-s`` (reads input registers 0..9 every
   20 ms): requests/s, p50/p99 latency; the control tick's lateness and missed ticks.
2. Attack: the same client during the campaign (``--frames``, default 100,000, spread over
   the attack kinds; slowloris and a connect storm alongside): frames/s per kind, the good
   client's requests/s and latency, daemon RSS before/peak/after, Modbus connections open
   (sampled every 0.5 s), what the server counted (exceptions, connections replaced, frame
   timeouts, refused, CPU-budget pauses), the tick's lateness and missed ticks, log lines.

Tick lateness comes from the daemon's ``bmsd_control_tick_lateness_seconds`` histogram, so
p99 and max are bucket bounds (1, 2, 5, 10, 20, 50, 100, 200, 500 ms, ...).

    .venv/bin/python bench/modbus_hostile.py                   # 100,000 frames
    .venv/bin/python bench/modbus_hostile.py --frames 300000 --seed 7
    .venv/bin/python bench/modbus_hostile.py --set modbus.max_cpu_share=1.0

Figures are printed; nothing is asserted. On a shared machine they vary with the other load:
compare the baseline and the attack of one run, not runs of different times.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import modbus_hostile as mh  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bmsd.config import load_config  # noqa: E402

LATENESS = "bmsd_control_tick_lateness_seconds"


def _lateness_buckets(text: str) -> dict[float, float]:
    """Cumulative counts by upper bound of the tick-lateness histogram."""
    found: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LATENESS:
            continue
        for sample in family.samples:
            if sample.name == LATENESS + "_bucket":
                found[float(sample.labels["le"])] = sample.value
    return found


def _lateness(before: str, after: str) -> tuple[int, str, str]:
    """(ticks, p99 bound, max bound) of the ticks between two scrapes."""
    b, a = _lateness_buckets(before), _lateness_buckets(after)
    bounds = sorted(a)
    counts = [a[le] - b.get(le, 0.0) for le in bounds]
    total = counts[-1] if counts else 0.0

    def text(le: float) -> str:
        return "> 2 s" if le == float("inf") else f"<= {le * 1000:g} ms"

    p99 = next((le for le, c in zip(bounds, counts, strict=True) if c >= 0.99 * total), 0.0)
    top = next((le for le, c in zip(bounds, counts, strict=True) if c >= total), 0.0)
    return int(total), text(p99), text(top)


async def _phase(
    daemon: mh.DaemonProcess,
    target: mh.Target,
    metrics_port: int,
    seconds: float,
    campaign: mh.Campaign | None,
) -> dict[str, object]:
    pid = daemon.process.pid
    before = await asyncio.to_thread(mh.fetch_metrics, metrics_port)
    log_mark = len(daemon.lines)
    rss_before = mh.rss_kib(pid)
    peak = [rss_before]
    connections_max = [0.0]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], mh.rss_kib(pid))
            text = await asyncio.to_thread(mh.fetch_metrics, metrics_port)
            connections_max[0] = max(
                connections_max[0], mh.metric_value(text, "bmsd_modbus_connections")
            )
            await asyncio.sleep(0.5)

    good = mh.GoodStats()
    sampler = asyncio.ensure_future(sample())
    reader = asyncio.ensure_future(mh.good_client(target, stop, good))
    await mh.until_served(good)  # connected and served before the attack, as an EMS is
    started = time.monotonic()
    if campaign is None:
        await asyncio.sleep(seconds)
    else:
        await campaign.run()
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(sampler, reader)
    after = await asyncio.to_thread(mh.fetch_metrics, metrics_port)
    # Connections left open a moment later (the attackers have closed theirs).
    await asyncio.sleep(1.0)
    later = await asyncio.to_thread(mh.fetch_metrics, metrics_port)
    ticks, p99, top = _lateness(before, after)
    log = daemon.log_since(log_mark)
    return {
        "elapsed_s": elapsed,
        "good": good,
        "rss": (rss_before, peak[0], mh.rss_kib(pid)),
        "connections_max": connections_max[0],
        "connections_after": mh.metric_value(later, "bmsd_modbus_connections"),
        "ticks": ticks,
        "lateness_p99": p99,
        "lateness_max": top,
        "missed": mh.metric_value(after, "bmsd_control_missed_ticks_total")
        - mh.metric_value(before, "bmsd_control_missed_ticks_total"),
        "before": before,
        "after": after,
        "log_lines": len(log),
        "log_chars": sum(map(len, log)),
    }


def _delta(phase: dict[str, object], name: str, **labels: str) -> float:
    before, after = str(phase["before"]), str(phase["after"])
    return mh.metric_value(after, name, **labels) - mh.metric_value(before, name, **labels)


def _print_phase(title: str, result: dict[str, object]) -> None:
    good = result["good"]
    assert isinstance(good, mh.GoodStats)
    elapsed = float(str(result["elapsed_s"]))
    rss = result["rss"]
    assert isinstance(rss, tuple)
    print(f"\n{title} ({elapsed:.1f} s)")
    print(
        f"  good client: {good.requests / elapsed:.0f} requests/s, "
        f"p50 {good.percentile_ms(0.5):.1f} ms, p99 {good.percentile_ms(0.99):.1f} ms, "
        f"{len(good.failures)} failures, {good.stale} stale (04), {good.reconnects} reconnects"
    )
    for failure in good.failures[:5]:
        print(f"    {failure}")
    print(
        f"  control tick: {result['ticks']} ticks, lateness p99 {result['lateness_p99']}, "
        f"max {result['lateness_max']}, {result['missed']:.0f} missed"
    )
    print(
        f"  daemon RSS: before {rss[0] / 1024:.1f} MiB, peak {rss[1] / 1024:.1f} MiB, "
        f"after {rss[2] / 1024:.1f} MiB"
    )
    print(
        f"  Modbus connections open: max {result['connections_max']:.0f}, "
        f"1 s after {result['connections_after']:.0f}; "
        f"log: {result['log_lines']} lines, {result['log_chars']} characters"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bmsd-hostile-") as tmp:
        daemon = mh.DaemonProcess(
            ROOT, Path(tmp) / "state", f"hostile-bench-{Path(tmp).name}", *args.set
        )
        try:
            modbus_port, metrics_port = daemon.ports()
            config = load_config(ROOT / "etc" / "sim.toml", tuple(args.set))
            target = mh.target_of(config, "127.0.0.1", modbus_port)
            mode = await mh.wait_ready(target)
            print(f"seed {args.seed}; BMS state at start {mode}; settings {args.set or '-'}")
            baseline = await _phase(daemon, target, metrics_port, args.baseline_s, None)
            _print_phase("baseline: the good client alone", baseline)
            campaign = mh.Campaign(
                target, args.seed, args.frames, deadline_s=args.deadline_s, min_duration_s=5
            )
            attack = await _phase(daemon, target, metrics_port, 0.0, campaign)
            _print_phase(f"attack: {campaign.frames} frames", attack)
            print("  attackers:")
            for kind, stats in campaign.stats.items():
                print(
                    f"    {kind:18s} {stats.frames:7d} frames {stats.frames_per_s:7.0f}/s "
                    f"{stats.connections:6d} connections {stats.closed_by_server:6d} closed "
                    f"by the server, answers {dict(sorted(stats.exceptions.items()))}"
                )
            print(f"  writes answered normally: {campaign.writes_accepted}")
            print("  the server counted:")
            for name, labels in (
                ("bmsd_modbus_writes_total", {"result": "accepted"}),
                ("bmsd_modbus_writes_total", {"result": "refused"}),
                ("bmsd_modbus_connections_accepted_total", {}),
                ("bmsd_modbus_connections_evicted_total", {}),
                ("bmsd_modbus_connections_refused_total", {}),
                ("bmsd_modbus_connections_frame_timeout_total", {}),
                ("bmsd_modbus_connections_not_reading_total", {}),
                ("bmsd_modbus_connections_busy_total", {}),
                ("bmsd_modbus_throttled_seconds_total", {}),
            ):
                label = ",".join(f"{k}={v}" for k, v in labels.items())
                print(f"    {name}{{{label}}} +{_delta(attack, name, **labels):g}")
            print(f"  daemon alive: {daemon.process.poll() is None}")
        finally:
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 1_000_000)
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--deadline-s", type=float, default=600.0)
    parser.add_argument(
        "--set", action="append", default=[], help="a config override, e.g. modbus.port=0"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
