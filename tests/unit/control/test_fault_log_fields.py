"""Fault log lines carry where the fault is (string, module, cell or sensor) and the mode."""

from __future__ import annotations

import logging

import pytest
from tests_support import ROOT

from bmsd.config import load_config
from bmsd.control.loop import _log_fault_event, fault_location
from bmsd.model.faults import FaultEvent, FaultLevel
from bmsd.sim.closed_loop import ClosedLoop


@pytest.fixture(scope="module")
def state():  # type: ignore[no-untyped-def]
    config = load_config(
        ROOT / "etc" / "sim.toml",
        ("sim.physics_step_s=0.05", "sim.load.kind='constant'", "sim.load.current_a=0.0"),
    )
    return ClosedLoop(config).run(2.0)


def _event(kind: str = "set") -> FaultEvent:
    return FaultEvent(1.0, kind, "x", FaultLevel.WARNING, 3.6, 3.55, "x warning set")


def test_cell_voltage_fault_names_the_extreme_cell(state, caplog) -> None:  # type: ignore[no-untyped-def]
    extremes = state.snapshot.cell_voltage
    caplog.set_level(logging.INFO)
    _log_fault_event(_event(), state, "cell_voltage_max_v")
    fields = caplog.records[-1].fields
    where = extremes.max_location
    assert (fields["string"], fields["module"], fields["cell"]) == (
        where.string,
        where.module,
        where.index,
    )
    assert fields["mode"] == state.mode.value
    assert fields["fault"] == "x" and fields["level"] == "warning" and fields["change"] == "set"


@pytest.mark.parametrize(
    ("quantity", "attribute", "side"),
    [
        ("cell_voltage_max_v", "cell_voltage", "max_location"),
        ("cell_voltage_min_v", "cell_voltage", "min_location"),
        ("cell_temp_max_charging_c", "temperature", "max_location"),
        ("cell_temp_min_discharging_c", "temperature", "min_location"),
    ],
)
def test_location_by_quantity(state, quantity: str, attribute: str, side: str) -> None:  # type: ignore[no-untyped-def]
    assert fault_location(quantity, state.snapshot) == getattr(
        getattr(state.snapshot, attribute), side
    )


def test_pack_level_faults_and_clears_name_no_cell(state, caplog) -> None:  # type: ignore[no-untyped-def]
    assert fault_location("current_sensor_silence_s", state.snapshot) is None
    caplog.set_level(logging.INFO)
    _log_fault_event(_event("clear"), state, "cell_voltage_max_v")
    assert "cell" not in caplog.records[-1].fields
