"""Golden-trace scenarios of the inverter profiles: one scripted run per profile.

A base PackState comes from the closed loop (simulated pack and real pipeline on simulated
time) with every value a profile reads scripted (cells, temperatures, current, limits, SOC),
so the traces do not move with the pipeline's tuning; the scenario then edits it phase by
phase and drives a real :class:`~bmsd.publish.inverter.link.InverterLink` on a scripted
clock, a new state every 100 ms, the way the daemon does:

====== ========= =====================================================================
phase  time (s)  state
====== ========= =====================================================================
normal 0 - 3     contactors closed, limits as the pipeline made them
taper  3 - 6     CCL tapers 40 -> 10 A (the charge is ending), force charge clear
alarm  6 - 9     cell over-voltage warning active, CCL 0 (charge stopped)
fault  9 - 12    BMS fault: cell over-voltage fatal, mode fault
stale  12 - 16   no new state: the sender falls silent after stale_after_s
====== ========= =====================================================================

Request-driven profiles get the inverter's requests every second (type 0, and type 2 at the
start). The trace is candump's log format, ``(time) inverter ID#DATA``, inverter frames
included. ``python tests/inverter_golden.py`` rewrites the stored traces in tests/data/.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import can
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bmsd.config import load_config
from bmsd.model.bms import BmsMode
from bmsd.model.faults import FaultLevel, FaultState, LevelState
from bmsd.model.limits import Contributor, Limits
from bmsd.model.snapshot import Extremes
from bmsd.model.state import PackState
from bmsd.model.topology import Location
from bmsd.publish.inverter.link import InverterLink, LinkSettings
from bmsd.publish.inverter.profile import load_profile
from bmsd.publish.inverter.service import pack_info
from bmsd.publish.inverter.values import PackInfo
from bmsd.sim.closed_loop import ClosedLoop

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
PROFILES = ("pylontech_lv", "sma_si", "victron", "pylontech_hv")
PHASES = (("normal", 0.0), ("taper", 3.0), ("alarm", 6.0), ("fault", 9.0), ("stale", 12.0))
END_S = 16.0
STEP_S = 0.1


def trace_path(profile: str) -> Path:
    return DATA / f"inverter_{profile}.log"


def _scripted(state: PackState) -> PackState:
    """Every value a profile reads, scripted: the traces do not move when the pipeline's
    estimation or limits change (only the structure of PackState comes from the closed loop)."""
    snap = state.snapshot
    cells = np.array(
        [3.300 + 0.001 * (i % 7) + 0.0005 * (i // 16) for i in range(snap.cell_voltage_v.size)]
    )
    temps = np.array([24.5 + 0.1 * (j % 5) + 0.2 * (j // 4) for j in range(snap.temp_c.size)])
    cells_per_module = cells.size // snap.module_age_s.size
    temps_per_module = temps.size // snap.module_age_s.size

    def extremes(values: np.ndarray, per_module: int) -> Extremes:
        low, high = int(values.argmin()), int(values.argmax())
        return Extremes(
            min_value=float(values[low]),
            min_location=Location(0, low // per_module, low % per_module),
            max_value=float(values[high]),
            max_location=Location(0, high // per_module, high % per_module),
            mean=float(values.mean()),
            valid_count=int(values.size),
        )

    snapshot = dataclasses.replace(
        snap,
        cell_voltage_v=cells,
        cell_voltage_valid=np.ones(cells.size, dtype=np.bool_),
        temp_c=temps,
        temp_valid=np.ones(temps.size, dtype=np.bool_),
        cell_voltage=extremes(cells, cells_per_module),
        temperature=extremes(temps, temps_per_module),
        pack_current_a=-19.9,
        pack_voltage_v=round(float(cells.sum()), 3),
    )

    def one(name: str, value: float) -> tuple[Contributor, ...]:
        return (Contributor(name, value, "scripted"),)

    limits = Limits(
        charge_voltage_v=220.5,
        charge_current_a=47.0,
        discharge_current_a=47.0,
        discharge_voltage_v=180.0,
        cvl_contributors=one("configured", 220.5),
        ccl_contributors=one("ramp", 47.0),
        dcl_contributors=one("ramp", 47.0),
        dvl_contributors=one("configured", 180.0),
    )
    assert state.estimates is not None
    estimates = dataclasses.replace(
        state.estimates,
        pack_soc=0.553,
        soh_capacity=0.987,
        pack_capacity_ah=276.4,
        equivalent_full_cycles=12.3,
    )
    return dataclasses.replace(
        state,
        snapshot=snapshot,
        limits=limits,
        estimates=estimates,
        mode=BmsMode.CLOSED,
        faults=FaultState(()),
    )


def base_state() -> tuple[PackState, PackInfo]:
    config = load_config(
        ROOT / "etc" / "sim.toml",
        (
            "sim.physics_step_s=0.05",
            "sim.load.kind='constant'",
            "sim.load.current_a=-20.0",
            "sim.inverter=''",
        ),
    )
    state = _scripted(ClosedLoop(config).run(3.0))
    # The simulated pack: 280 Ah LFP cells of 3.2 V nominal (etc/cells/lfp_280ah.toml).
    info = pack_info(config, 280.0, 3.2)
    return state, info


def phase_of(t: float) -> str:
    name = PHASES[0][0]
    for phase, start in PHASES:
        if t >= start - 1e-9:
            name = phase
    return name


def _with_ccl(state: PackState, ccl_a: float) -> PackState:
    limits = state.limits
    taper = Contributor("cell_voltage", ccl_a, "scripted taper")
    contributors = (*(c for c in limits.ccl_contributors if c.value >= ccl_a), taper)
    return dataclasses.replace(
        state,
        limits=dataclasses.replace(limits, charge_current_a=ccl_a, ccl_contributors=contributors),
    )


def scripted_state(base: PackState, t: float) -> PackState | None:
    """The state published at scenario time ``t`` (None: nothing published, stale phase)."""
    phase = phase_of(t)
    state = dataclasses.replace(base, tick=base.tick + round(t / STEP_S), time_s=t, wall_time=t)
    if phase == "normal":
        return state
    if phase == "taper":
        return _with_ccl(state, round(40.0 - 10.0 * (t - 3.0), 1))
    if phase == "alarm":
        warning = LevelState("cell_voltage_high", FaultLevel.WARNING, active=True, tripped=True)
        return dataclasses.replace(_with_ccl(state, 0.0), faults=FaultState((warning,)))
    if phase == "fault":
        fatal = LevelState("cell_voltage_high", FaultLevel.FATAL, active=True, latched=True)
        return dataclasses.replace(
            _with_ccl(state, 0.0), mode=BmsMode.FAULT, faults=FaultState((fatal,))
        )
    return None


def requests(profile_name: str, t: float) -> list[can.Message]:
    """The inverter's requests at ``t`` (request-driven profiles, once a second)."""
    if profile_name != "pylontech_hv" or abs(t - round(t)) > 1e-9:
        return []
    kinds = [0, 2] if round(t) == 0 else [0]
    return [
        can.Message(arbitration_id=0x4200, is_extended_id=True, data=bytes([k]) + bytes(7))
        for k in kinds
    ]


def run_scenario(
    profile_name: str, base: PackState, info: PackInfo
) -> Iterator[tuple[float, can.Message, PackState | None]]:
    """(time, frame, state in force) for every frame on the bus, both directions."""
    profile = load_profile(ROOT / "etc" / "inverters" / f"{profile_name}.toml")
    link = InverterLink(
        profile_name,
        profile,
        info,
        LinkSettings(stale_after_s=profile.spec.stale_after_s),
        started_at=0.0,
    )
    in_force: PackState | None = None
    t = 0.0
    next_state_s = 0.0
    while t < END_S - 1e-9:
        if t >= next_state_s - 1e-9:
            state = scripted_state(base, next_state_s)
            if state is not None:
                link.on_state(state)
                in_force = state
            next_state_s = round(next_state_s + STEP_S, 6)
        for request in requests(profile_name, t):
            link.on_frame(request, t)
            yield t, request, in_force
        for frame in link.poll(t):
            yield t, frame, in_force
        t = min(link.next_wakeup(t), next_state_s, math.floor(t + 1.0 + 1e-9))


def format_line(t: float, message: can.Message) -> str:
    width = 8 if message.is_extended_id else 3
    data = bytes(message.data).hex().upper()
    return f"({t:010.6f}) inverter {message.arbitration_id:0{width}X}#{data}"


def render(profile_name: str, base: PackState, info: PackInfo) -> str:
    return "".join(
        format_line(t, message) + "\n" for t, message, _ in run_scenario(profile_name, base, info)
    )


def parse_line(line: str) -> tuple[float, int, bool, bytes]:
    stamp, _channel, frame = line.split()
    ident, _, data = frame.partition("#")
    return float(stamp.strip("()")), int(ident, 16), len(ident) == 8, bytes.fromhex(data)


if __name__ == "__main__":
    state, pack = base_state()
    DATA.mkdir(exist_ok=True)
    for name in PROFILES:
        trace_path(name).write_text(render(name, state, pack), encoding="ascii")
        print(f"wrote {trace_path(name)}")
