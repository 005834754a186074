"""PackState and Event as plain JSON-ready dicts (replay output, logs, tools)."""

from __future__ import annotations

import math
from typing import Any

from bmsd.model.balancing import BalancingState
from bmsd.model.events import Event
from bmsd.model.faults import FaultEvent
from bmsd.model.limits import LIMIT_KINDS, LIMIT_UNITS, Limits
from bmsd.model.snapshot import Extremes
from bmsd.model.state import PackState


def _num(value: float | None, digits: int) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def _extremes(extremes: Extremes | None, digits: int) -> dict[str, Any] | None:
    if extremes is None:
        return None
    return {
        "min": round(extremes.min_value, digits),
        "min_at": str(extremes.min_location),
        "max": round(extremes.max_value, digits),
        "max_at": str(extremes.max_location),
        "mean": round(extremes.mean, digits),
        "valid": extremes.valid_count,
    }


def state_record(state: PackState) -> dict[str, Any]:
    snap = state.snapshot
    contactors = snap.contactors
    return {
        "type": "state",
        "tick": state.tick,
        "time_s": round(state.time_s, 6),
        "mode": state.mode.value,
        "mode_reason": state.mode_reason,
        "data_ok": state.data_ok,
        "active_faults": [level.key for level in state.faults.active()],
        "latched_faults": [level.key for level in state.faults.latched()],
        "limits": limits_record(state.limits),
        "soc": None if state.estimates is None else round(state.estimates.pack_soc, 5),
        "soc_std": None if state.estimates is None else round(state.estimates.pack_soc_std, 5),
        "pack_current_a": _num(snap.pack_current_a, 3),
        "pack_voltage_v": _num(snap.pack_voltage_v, 3),
        "bus_voltage_v": _num(snap.bus_voltage_v, 2),
        "pack_voltage_deviation_v": _num(snap.pack_voltage_deviation_v, 3),
        "cell_voltage": _extremes(snap.cell_voltage, 4),
        "temperature": _extremes(snap.temperature, 2),
        "contactors": None
        if contactors is None
        else {
            "minus": contactors.minus_closed,
            "plus": contactors.plus_closed,
            "precharge": contactors.precharge_closed,
        },
        "cell_voltage_v": [
            _num(float(v), 4) if ok else None
            for v, ok in zip(snap.cell_voltage_v, snap.cell_voltage_valid, strict=True)
        ],
        "temp_c": [
            _num(float(t), 2) if ok else None
            for t, ok in zip(snap.temp_c, snap.temp_valid, strict=True)
        ],
        "module_age_s": [_num(float(a), 3) for a in snap.module_age_s],
        "balancing": balancing_record(state.balancing),
    }


def balancing_record(balancing: BalancingState | None) -> dict[str, Any] | None:
    """What balancing does: which cells bleed, the Ah bled per cell, the imbalance left."""
    if balancing is None:
        return None
    return {
        "strategy": balancing.strategy,
        "enabled": balancing.enabled,
        "active": balancing.active,
        "reason": balancing.reason,
        "bleeding": [int(i) for i in balancing.bleeding.nonzero()[0]],
        "bled_ah": [round(float(v), 6) for v in balancing.bled_ah],
        "spread": _num(balancing.spread, 6),
        "spread_unit": balancing.spread_unit,
        "feedback_mismatch_modules": balancing.feedback_mismatch_modules,
        "charge_hold_a": balancing.charge_hold_a,
        "remaining_ah": None
        if balancing.remaining_ah is None
        else [round(float(v), 6) for v in balancing.remaining_ah],
    }


def balancing_text(balancing: BalancingState) -> str:
    """One line: strategy, cells bleeding, imbalance left, Ah bled in total."""
    if math.isnan(balancing.spread):
        spread = "?"
    elif balancing.spread_unit == "V":
        spread = f"{balancing.spread * 1000:.1f}mV"
    else:
        spread = f"{balancing.spread * 100:.3f}%"
    if balancing.active:
        state = f"{balancing.bleeding_count}cells"
    elif balancing.reason.startswith("paused"):
        state = "paused"  # between duty cycles, measuring, or boards too warm
    elif balancing.reason.startswith("off"):
        state = "off"
    else:
        state = "idle"
    left = ""
    if balancing.remaining_ah is not None:
        left = f" left={float(balancing.remaining_ah.sum()):.4f}Ah"
    return (
        f"bal={balancing.strategy}:{state} spread={spread}{left} "
        f"bled={balancing.bled_total_ah:.4f}Ah"
    )


def limits_record(limits: Limits) -> dict[str, Any]:
    """Each limit with the contributor that set it and every contributor's value and reason."""
    record: dict[str, Any] = {}
    for kind in LIMIT_KINDS:
        top = limits.limiting(kind)
        record[kind] = {
            "value": round(limits.value(kind), 3),
            "unit": LIMIT_UNITS[kind],
            "set_by": top.name,
            "reason": top.reason,
            "contributors": {
                c.name: {"value": round(c.value, 3), "reason": c.reason}
                for c in limits.contributors(kind)
            },
        }
    return record


def explain_text(state: PackState) -> str:
    """The limits the daemon sends, each with what set it and every other contributor."""
    limits = state.limits
    lines = [f"mode {state.mode.value} ({state.mode_reason}), tick {state.tick}"]
    active = [level.key for level in state.faults.active()]
    lines.append(f"active faults: {', '.join(active) if active else 'none'}")
    if state.balancing is not None:
        lines.append(f"balancing: {balancing_text(state.balancing)} — {state.balancing.reason}")
    for kind in LIMIT_KINDS:
        lines.append(limits.explain(kind))
        top = limits.limiting(kind)
        for contributor in limits.contributors(kind):
            if contributor is top:
                continue
            lines.append(
                f"    {contributor.name:<14} {contributor.value:10.2f} {LIMIT_UNITS[kind]}  "
                f"{contributor.reason}"
            )
    return "\n".join(lines)


def fault_event_record(event: FaultEvent) -> dict[str, Any]:
    return {
        "type": "fault",
        "time_s": round(event.time_s, 6),
        "change": event.kind,
        "fault": event.fault_id,
        "level": event.level.label,
        "value": event.value,
        "threshold": event.threshold,
        "message": event.message,
    }


def event_record(event: Event) -> dict[str, Any]:
    return {
        "type": "event",
        "time_s": round(event.time_s, 6),
        "kind": event.kind,
        "message": event.message,
        **event.fields,
    }


def summary_line(state: PackState, module_count: int, module_timeout_s: float) -> str:
    """One human line describing the pack (the periodic log line and sd_notify STATUS)."""
    snap = state.snapshot
    parts = [f"tick={state.tick}", f"mode={state.mode.value}"]
    limits = state.limits
    parts.append(
        f"CVL={limits.charge_voltage_v:.1f}V CCL={limits.charge_current_a:.0f}A "
        f"DCL={limits.discharge_current_a:.0f}A"
    )
    estimates = state.estimates
    if estimates is not None:
        parts.append(f"SOC={100 * estimates.pack_soc:.1f}%(±{100 * estimates.pack_soc_std:.1f})")
    parts.append("V=" + ("?" if snap.pack_voltage_v is None else f"{snap.pack_voltage_v:.2f}V"))
    parts.append("I=" + ("?" if snap.pack_current_a is None else f"{snap.pack_current_a:+.1f}A"))
    cells = snap.cell_voltage
    if cells is None:
        parts.append("cells=?")
    else:
        parts.append(
            f"cells={cells.min_value:.3f}..{cells.max_value:.3f}V"
            f"(spread {cells.spread * 1000:.0f}mV)"
        )
    temps = snap.temperature
    if temps is not None:
        parts.append(f"T={temps.min_value:.1f}..{temps.max_value:.1f}C")
    if state.balancing is not None:
        parts.append(balancing_text(state.balancing))
    online = int((snap.module_age_s <= module_timeout_s).sum())
    parts.append(f"modules={online}/{module_count}")
    if snap.contactors is not None:
        c = snap.contactors
        closed = (("-", c.minus_closed), ("P", c.precharge_closed), ("+", c.plus_closed))
        flags = "".join(flag for flag, on in closed if on)
        parts.append(f"contactors={flags or 'open'}")
    return " ".join(parts)
