"""Configuration reload (SIGHUP): which changes apply at run time, which need a restart.

Only settings that cannot weaken protection or tear the running pipeline apply at run time:
logging (levels, format, target, rate limits), the sd_notify status period and the summary log
period. Everything else (pack topology, buses, protocol, fault table, limits, estimation,
contactor sequence, tick period, state directory, simulator) was used to build the running
daemon and the state it holds (latched faults, filters, estimator, open buses); changing it
under a running control loop could leave protection half-updated, so those keys are reported
as "needs a restart" and keep their running values until then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

from bmsd.config import Config

# Dotted key prefixes that apply at run time. Keep docs/operations.md in step (it is tested).
RUNTIME_KEYS = ("logging", "service", "control.summary_log_interval_s")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (dataclasses, dicts, values)."""
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        keys: list[str] = []
        for field in dataclasses.fields(old):
            if field.metadata.get("internal"):
                continue
            key = f"{prefix}.{field.name}" if prefix else field.name
            keys += changed_keys(getattr(old, field.name), getattr(new, field.name), key)
        return keys
    if isinstance(old, dict) and isinstance(new, dict):
        keys = []
        for name in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{name}" if prefix else str(name)
            if name not in old or name not in new:
                keys.append(key)
            else:
                keys += changed_keys(old[name], new[name], key)
        return keys
    return [] if old == new else [prefix]


def applies_at_run_time(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in RUNTIME_KEYS)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does: the config to run with now, and the keys it did not apply."""

    config: Config
    applied: tuple[str, ...]
    restart_needed: tuple[str, ...]


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    """The running config with the run-time changes of ``loaded``; the rest is reported."""
    keys = changed_keys(running, loaded)
    applied = tuple(key for key in keys if applies_at_run_time(key))
    restart = tuple(key for key in keys if not applies_at_run_time(key))
    config = replace(
        running,
        logging=loaded.logging,
        service=loaded.service,
        control=replace(
            running.control, summary_log_interval_s=loaded.control.summary_log_interval_s
        ),
    )
    return ReloadPlan(config, applied, restart)
