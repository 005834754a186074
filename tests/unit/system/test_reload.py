"""Which config changes a reload applies at run time and which it leaves for a restart."""

from __future__ import annotations

from dataclasses import replace

from tests_support import ROOT

from bmsd.config import Config, load_config
from bmsd.system.reload import RUNTIME_KEYS, changed_keys, plan_reload


def _config(*overrides: str) -> Config:
    return load_config(ROOT / "etc" / "sim.toml", overrides)


def test_no_change_no_keys() -> None:
    running = _config()
    plan = plan_reload(running, _config())
    assert plan.applied == () and plan.restart_needed == ()
    assert plan.config == running


def test_run_time_keys_apply_and_the_rest_waits_for_a_restart() -> None:
    running = _config()
    loaded = _config(
        "logging.level='debug'",
        "logging.loggers={'bmsd.canbus'='warning'}",
        "service.status_interval_s=7.0",
        "control.summary_log_interval_s=1.0",
        "control.tick_s=0.05",
        "protection.faults.cell_voltage_high.fatal.threshold=3.62",
        "pack.module_node_ids=[5, 6, 7, 8]",
    )
    plan = plan_reload(running, loaded)
    assert set(plan.applied) == {
        "logging.level",
        "logging.loggers.bmsd.canbus",
        "service.status_interval_s",
        "control.summary_log_interval_s",
    }
    assert set(plan.restart_needed) == {
        "control.tick_s",
        "protection.faults.cell_voltage_high.fatal.threshold",
        "pack.module_node_ids",
    }
    # The running config takes exactly the run-time changes.
    assert plan.config.logging == loaded.logging
    assert plan.config.service == loaded.service
    assert plan.config.control.summary_log_interval_s == 1.0
    assert plan.config.control.tick_s == running.control.tick_s
    assert plan.config.protection == running.protection
    assert plan.config.pack == running.pack


def test_changed_keys_names_added_and_removed_table_entries() -> None:
    running = _config()
    buses = dict(running.can)
    assert "meter" not in buses
    buses["meter"] = replace(buses["slaves"], channel="other")
    assert changed_keys(running, replace(running, can=buses)) == ["can.meter"]
    del buses["slaves"]
    assert changed_keys(running, replace(running, can=buses)) == ["can.meter", "can.slaves"]


def test_runtime_keys_are_documented_in_operations() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for key in RUNTIME_KEYS:
        assert f"`{key}`" in text, f"docs/operations.md does not say that {key} reloads"
