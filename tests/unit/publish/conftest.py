"""Fixtures of the inverter tests: real PackStates from the closed loop (sim pack + pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmsd.config import load_config
from bmsd.model.state import PackState
from bmsd.publish.inverter.service import pack_info
from bmsd.publish.inverter.values import PackInfo
from bmsd.sim.closed_loop import ClosedLoop

ROOT = Path(__file__).resolve().parents[3]
SIM_CONFIG = ROOT / "etc" / "sim.toml"


@pytest.fixture(scope="session")
def closed_state() -> tuple[PackState, PackInfo]:
    """A state with contactors closed, limits set and SOC estimated (sim pack at 55 % SOC)."""
    config = load_config(
        SIM_CONFIG,
        ("sim.physics_step_s=0.05", "sim.load.kind='constant'", "sim.load.current_a=-20.0"),
    )
    loop = ClosedLoop(config)
    state = loop.run(6.0)
    # The simulated pack: 280 Ah LFP cells of 3.2 V nominal (etc/cells/lfp_280ah.toml).
    info = pack_info(config, 280.0, 3.2)
    return state, info
