"""Crash loop: kill -9 the daemon at random moments, many times; nothing may be lost or corrupt.

Each round starts the real daemon (``bmsd run`` on the simulated pack, in its own process),
lets it run for a random time, then kills it with SIGKILL. The estimator saves its state every
0.2 s here, so many kills land during or next to a state write. After each kill the round checks:

- every state file in the state directory loads (no corrupt or half-written file);
- after the restart the SOC is within 0.5 % of the last SOC published before the kill;
- a latched fault (phase two: tripped once, then many more kills) is still latched;
- no temporary file of an interrupted write is left behind after the restart.

The simulated pack lives inside the daemon, so it restarts with it: each restart gives it the
SOC the daemon published before the kill, as a real pack keeps its charge while its BMS
restarts. Run:

    .venv/bin/python bench/crash_loop.py --rounds 50

It prints the SOC error after each restart (max and p95), the kills that hit a state write
window, and every failure; it exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tests_support import SUMMARY  # noqa: E402

from bmsd.balancing.coordinator import STATE_FILE as BALANCING_FILE  # noqa: E402
from bmsd.balancing.coordinator import STATE_KIND as BALANCING_KIND  # noqa: E402
from bmsd.balancing.coordinator import STATE_VERSION as BALANCING_VERSION  # noqa: E402
from bmsd.estimation.estimator import STATE_KIND, STATE_VERSION  # noqa: E402
from bmsd.protection.persistence import KIND as LATCHED_KIND  # noqa: E402
from bmsd.protection.persistence import VERSION as LATCHED_VERSION  # noqa: E402
from bmsd.system.statefile import read_state  # noqa: E402

SAVE_INTERVAL_S = 0.2


@dataclass
class RoundResult:
    soc_before_pct: float
    soc_after_pct: float | None
    mode_after: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def soc_error_pct(self) -> float | None:
        if self.soc_after_pct is None:
            return None
        return abs(self.soc_after_pct - self.soc_before_pct)


class Daemon:
    """One ``bmsd run`` process whose summary lines are collected by a reader thread."""

    def __init__(self, state_dir: Path, channel: str, initial_soc: float, *extra: str) -> None:
        self.summaries: list[dict[str, str]] = []
        self.estimator_notes: list[str] = []  # how the estimator started
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "bmsd.cli", "run",
                "--config", str(ROOT / "etc" / "sim.toml"),
                "--set", f"state.directory='{state_dir}'",
                "--set", f"can.slaves.channel='{channel}'",
                "--set", "control.summary_log_interval_s=0.1",
                "--set", f"estimation.state_save_interval_s={SAVE_INTERVAL_S}",
                "--set", f"sim.initial_soc={initial_soc:.6f}",
                "--set", "metrics.port=0",
                "--set", "modbus.port=0",
                *extra,
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "SOC/SOH" in line or "not used" in line:
                self.estimator_notes.append(line.strip())
            match = SUMMARY.search(line)
            if match:
                with self._lock:
                    self.summaries.append(match.groupdict())

    def wait_for(self, accept: object, limit_s: float) -> dict[str, str] | None:
        deadline = time.monotonic() + limit_s
        seen = 0
        while time.monotonic() < deadline:
            with self._lock:
                new = self.summaries[seen:]
                seen = len(self.summaries)
            for summary in new:
                if accept(summary):  # type: ignore[operator]
                    return summary
            if self.process.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    def last(self) -> dict[str, str] | None:
        with self._lock:
            return self.summaries[-1] if self.summaries else None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=5)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15)
        self._reader.join(timeout=5)
        return code


def check_state_files(state_dir: Path) -> list[str]:
    """Every state file present loads; a problem is returned in words."""
    problems = []
    for name, kind, version in (
        ("estimates.json", STATE_KIND, STATE_VERSION),
        ("latched-faults.json", LATCHED_KIND, LATCHED_VERSION),
        (BALANCING_FILE, BALANCING_KIND, BALANCING_VERSION),
    ):
        path = state_dir / name
        if path.exists():
            result = read_state(path, kind, version)
            if not result.ok:
                problems.append(f"{name}: {result.problem}")
    return problems


def leftovers(state_dir: Path, running_pid: int | None = None) -> list[str]:
    """Temporary files of interrupted writes; those of ``running_pid`` may be a write in
    progress, not a leftover."""
    own = f".{running_pid}.tmp"
    return sorted(
        p.name for p in state_dir.glob(".*.tmp") if running_pid is None or not p.name.endswith(own)
    )


def has_soc(summary: dict[str, str]) -> bool:
    return summary["soc_pct"] is not None


def crash_rounds(
    state_dir: Path,
    channel: str,
    rounds: int,
    rng: random.Random,
    first_extra: tuple[str, ...] = (),
    ready: object = has_soc,
) -> list[RoundResult]:
    """``rounds`` kill -9 / restart cycles after a first run (started with ``first_extra``)
    has reached ``ready``; the first start may begin from OCV."""
    results: list[RoundResult] = []
    daemon = Daemon(state_dir, channel, 0.55, *first_extra)
    if daemon.wait_for(lambda m: has_soc(m) and ready(m), 60) is None:  # type: ignore[operator]
        daemon.kill()
        raise SystemExit("the first daemon never got ready")
    for _ in range(rounds):
        time.sleep(rng.uniform(0.3, 1.5))
        daemon.kill()
        last = daemon.last()
        assert last is not None and last["soc_pct"] is not None
        soc_before = float(last["soc_pct"])
        problems = check_state_files(state_dir)
        daemon = Daemon(state_dir, channel, soc_before / 100.0)
        after = daemon.wait_for(has_soc, 60)
        result = RoundResult(
            soc_before,
            None if after is None else float(after["soc_pct"]),
            None if after is None else after["mode"],
            problems,
        )
        if after is None:
            result.problems.append("no SOC after the restart")
        elif (error := result.soc_error_pct) is not None and error > 0.5:
            result.problems.append(
                f"SOC {error:.2f} % away from before the kill "
                f"({'; '.join(daemon.estimator_notes) or 'restored'})"
            )
        left = leftovers(state_dir, daemon.process.pid)
        if left:
            result.problems.append(f"temporary files left: {', '.join(left)}")
        results.append(result)
    if daemon.stop() != 0:
        results[-1].problems.append("the last daemon did not stop cleanly")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--latched-rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state", type=Path, default=Path("/tmp/bmsd-crash-loop"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.state, ignore_errors=True)
    started = time.monotonic()
    soc_results = crash_rounds(args.state / "soc", "crash-soc", args.rounds, rng)
    silent = "sim.faults=[{kind='silent_module', start_s=1.0, module=1}]"
    latch_results = crash_rounds(
        args.state / "latch",
        "crash-latch",
        args.latched_rounds,
        rng,
        ("--set", silent),
        lambda m: m["mode"] == "fault",
    )
    # The first run latched a fault; the restarts run without its cause, so only the latch
    # can keep them in fault.
    for result in latch_results:
        if result.mode_after != "fault":
            result.problems.append(f"latched fault lost: mode {result.mode_after} after restart")

    errors = sorted(e for r in soc_results if (e := r.soc_error_pct) is not None)
    elapsed_s = time.monotonic() - started
    print(f"crash loop: {len(soc_results)} kill -9 rounds with the pack cycling, "
          f"{len(latch_results)} with a latched fault, {elapsed_s:.0f} s")  # fmt: skip
    if errors:
        p95 = errors[min(len(errors) - 1, int(0.95 * len(errors)))]
        print(f"  SOC after restart vs before the kill: max {errors[-1]:.3f} %, "
              f"p95 {p95:.3f} %  (limit 0.5 %)")  # fmt: skip
    failures = [
        (phase, i, problem)
        for phase, results in (("soc", soc_results), ("latch", latch_results))
        for i, result in enumerate(results)
        for problem in result.problems
    ]
    print(f"  failures: {len(failures)}")
    for phase, i, problem in failures:
        print(f"    {phase} round {i}: {problem}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
