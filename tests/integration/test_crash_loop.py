"""kill -9 at random moments, again and again: state files stay whole, SOC and latches survive.

A short run of bench/crash_loop.py's rounds (the benchmark runs many more): the estimator saves
every 0.2 s, so kills land next to or inside state writes.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tests_support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import crash_loop


def test_soc_and_state_files_survive_repeated_kill_9(tmp_path: Path) -> None:
    results = crash_loop.crash_rounds(
        tmp_path / "state", f"crash-{tmp_path.name}", 4, random.Random()
    )
    assert [r.problems for r in results] == [[]] * 4
    assert all(r.soc_error_pct is not None and r.soc_error_pct <= 0.5 for r in results)


def test_a_latched_fault_survives_repeated_kill_9(tmp_path: Path) -> None:
    silent = "sim.faults=[{kind='silent_module', start_s=1.0, module=1}]"
    results = crash_loop.crash_rounds(
        tmp_path / "state",
        f"latch-{tmp_path.name}",
        3,
        random.Random(),
        ("--set", silent),
        lambda m: m["mode"] == "fault",
    )
    # The restarts run without the injected cause: only the latch keeps them in fault.
    assert [r.mode_after for r in results] == ["fault"] * 3
    assert [r.problems for r in results] == [[]] * 3
