"""The simulated pack under the real pipeline: bleeding removes charge from exactly the cells
balancing commands, the slaves' feedback matches, the Ah counted by the master agree with the
simulated resistors, and the boards warm up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmsd.config import load_config
from bmsd.sim.closed_loop import ClosedLoop

ROOT = Path(__file__).resolve().parents[3]


def test_bleeding_converges_the_commanded_cells(tmp_path: Path) -> None:
    config = load_config(
        ROOT / "etc" / "sim.toml",
        (f"state.directory='{tmp_path}'", "balancing.measure_window_s=0.0"),
    )
    loop = ClosedLoop(config)
    loop.keep_trace = False
    charge_before = np.asarray(loop.pack.cells.charge_ah).copy()
    # The first plan comes at start from OCV in LFP's plateau, where the estimate cannot rank
    # the cells; etc/sim.toml re-plans each minute, from an estimate that has converged.
    loop.run(62.0)
    # Then cells bleed continuously.
    bled_by_master = []
    for _ in range(12):
        state = loop.run(5.0)
        assert state.balancing is not None
        bled_by_master.append(state.balancing.bled_total_ah)
        assert state.balancing.feedback_mismatch_modules == 0
    assert state.balancing.active
    sim_bled = np.asarray(loop.pack.bled_ah)
    assert sim_bled.sum() > 0.0
    # The master counts the nominal 0.1 A; the simulated 33 Ω resistor draws V/R ≈ 0.1 A.
    assert state.balancing.bled_total_ah == pytest.approx(sim_bled.sum(), rel=0.05)
    # Bled cells lost exactly their bleed against the others (same series current).
    lost = charge_before - np.asarray(loop.pack.cells.charge_ah)
    never = sim_bled == 0.0
    common = float(np.median(lost[never]))
    bled = sim_bled > 0.0
    assert lost[bled] - common == pytest.approx(sim_bled[bled], abs=2e-4)
    # The cells the plan picked first include the injected high cells (module 0 cell 3: +5 %).
    assert sim_bled[3] > 0.0
    # Board heat: a module with bleeding cells is warmer than ambient (the top-first band
    # bleeds only the fullest cells, a few per board, so the rise is small after a minute).
    assert float(np.max(loop.pack.board_temp_c)) > config.sim.ambient_temp_c + 0.1
    assert bled_by_master == sorted(bled_by_master)
