"""Balancing: SOC-based vs voltage-threshold on a 16 x 24 pack with a 5 % SOC spread.

For LFP (280 Ah) and NMC (100 Ah) cells, a given bleed current and a daily ESS cycle, prints the
time until the charge imbalance falls under 1 % and the energy bled, for the ``soc`` and the
``voltage`` strategies side by side, with their ratios.

What runs: the real Controller (snapshot, protection, state machine, SOC/SOH estimator,
balancing coordinator, limits) on the simulated pack (cells with 1 % capacity spread, board
heat, slaves obeying the encoded balancing and switch box commands), stepped together at
accelerated time (one tick per ``--tick`` simulated seconds). Readings go into the reading
store directly rather than as CAN frames (the frame path is what bench/can_ingest.py measures);
commands go to the simulated slaves as real encoded frames. The inverter is ideal: it follows
the daily profile within the published CCL/DCL and holds the pack at CVL/DVL (constant
voltage), so every day the pack reaches the top of charge, where voltage balancing can act.

Imbalance = the largest charge a cell holds above the cell with the most room to full, over its
capacity (top alignment, what passive balancing can fix). Initial cell SOCs are spread evenly
over 5 % (shuffled). Energy bled = Σ cell voltage × bleed current × time.

    .venv/bin/python bench/balancing.py                   # 0.1 A, up to 30 days per case
    .venv/bin/python bench/balancing.py --bleed 0.2 --days 20 --chemistry LFP
    .venv/bin/python bench/balancing.py --set balancing.soc_reference_quantile=0.9

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmsd.acquisition.store import ReadingStore  # noqa: E402
from bmsd.balancing.commands import BalancingSender  # noqa: E402
from bmsd.canbus.codec import FrameEncoder  # noqa: E402
from bmsd.canbus.protocol import load_protocol  # noqa: E402
from bmsd.config import load_config  # noqa: E402
from bmsd.control.controller import Controller  # noqa: E402
from bmsd.model.cell import CellModel  # noqa: E402
from bmsd.model.limits import Limits  # noqa: E402
from bmsd.model.readings import (  # noqa: E402
    BalancingFeedback,
    CellVoltageGroup,
    ContactorFeedback,
    ModuleStatus,
    Quantity,
    ScalarReading,
    TemperatureGroup,
)
from bmsd.model.topology import Topology  # noqa: E402
from bmsd.sim.load import EssDayCycle  # noqa: E402
from bmsd.sim.pack import SimulatedPack  # noqa: E402

MODULES, CELLS, TEMPS = 16, 24, 4
SPREAD = 0.05
TARGET = 0.01
MILESTONES = (0.04, 0.03, 0.02, 0.015, TARGET)
NEVER_S = 1e12  # slave frame periods: no frames, readings go to the store directly

CHEMISTRIES = {
    # chemistry: (cell file, protection table, limits file, capacity Ah, nominal V)
    "LFP": ("cells/lfp_280ah.toml", "protection/lfp.toml", "limits/lfp.toml", 280.0, 3.3),
    "NMC": ("cells/nmc_100ah.toml", "protection/nmc.toml", "limits/nmc.toml", 100.0, 3.7),
}


@dataclass(frozen=True)
class Result:
    chemistry: str
    strategy: str
    days_to_target: float | None
    milestones: dict[float, tuple[float, float]]
    """Imbalance threshold -> (days, kWh bled) when the imbalance first fell below it."""
    final_spread: float
    energy_kwh: float
    bled_ah: float
    days_run: float
    wall_s: float


class IdealInverter:
    """The daily profile, kept within the published limits; CV at CVL and DVL."""

    def __init__(self, day: EssDayCycle) -> None:
        self.day = day
        self.limits: Limits | None = None
        self.pack: Any = None

    def current_a(self, time_s: float) -> float:
        limits, pack = self.limits, self.pack
        if limits is None or pack is None:
            return 0.0
        want = self.day.current_a(time_s)
        cells = pack.cells
        soc = np.asarray(cells.soc)
        r0 = cells.cell.r0_ohm(soc, np.asarray(cells.temp_c)) * np.asarray(cells.resistance_factor)
        emf_v = float((np.asarray(cells.ocv_v()) + np.asarray(cells.rc_voltage_v)).sum())
        r_v = float(r0.sum())
        if want > 0.0:
            cv_a = max(0.0, (limits.charge_voltage_v - emf_v) / r_v)
            return min(want, limits.charge_current_a, cv_a)
        cv_a = max(0.0, (emf_v - limits.discharge_voltage_v) / r_v)
        return -min(-want, limits.discharge_current_a, cv_a)


def imbalance(pack: Any) -> float:
    """Largest charge above the cell with most room to full, over capacity (truth)."""
    capacity = np.asarray(pack.cells.capacity_ah)
    room = (1.0 - np.asarray(pack.cells.soc)) * capacity
    return float(((room.max() - room) / capacity).max())


def run_case(
    chemistry: str,
    strategy: str,
    bleed_a: float,
    days: float,
    tick_s: float,
    trace_every_s: float = 0.0,
    extra: tuple[str, ...] = (),
) -> Result:
    cell_file, protection, limits_file, capacity_ah, nominal_v = CHEMISTRIES[chemistry]
    state_dir = tempfile.mkdtemp(prefix="bmsd-bench-balancing-")
    timeout = 3.0 * tick_s
    overrides = (
        f'pack.chemistry="{chemistry}"',
        f'pack.cell_file="{cell_file}"',
        f"pack.modules_per_string={MODULES}",
        f"pack.cells_per_module={CELLS}",
        f"pack.temps_per_module={TEMPS}",
        f"pack.module_node_ids=[{', '.join(str(n) for n in range(1, MODULES + 1))}]",
        f'protection.defaults=["protection/diagnostics.toml", "{protection}"]',
        f'limits.defaults=["{limits_file}"]',
        f"limits.max_charge_current_a={0.5 * capacity_ah}",
        f"limits.max_discharge_current_a={capacity_ah}",
        f"acquisition.module_timeout_s={timeout}",
        f"acquisition.temp_timeout_s={timeout}",
        f"acquisition.current_sensor_timeout_s={timeout}",
        f"acquisition.switchbox_timeout_s={timeout}",
        f'state.directory="{state_dir}"',
        f'balancing.strategy="{strategy}"',
        f"balancing.bleed_current_a={bleed_a}",
        "balancing.measure_window_s=0.0",
        "balancing.soc_max_std=0.03",  # the shipped default, not sim.toml's relaxed value
        f"balancing.feedback_grace_s={2.5 * tick_s}",
        "sim.initial_soc=0.5",
        "sim.soc_spread_pct=0.0",
        "sim.capacity_spread_pct=1.0",
        f"sim.physics_step_s={tick_s}",
        f"sim.cell_period_s={NEVER_S}",
        f"sim.temp_period_s={NEVER_S}",
        f"sim.status_period_s={NEVER_S}",
        f"sim.current_period_s={NEVER_S}",
        f"sim.switchbox_period_s={NEVER_S}",
        f"sim.bleed_resistor_ohm={nominal_v / bleed_a}",
        "sim.soc_offsets=[]",
    )
    if chemistry == "NMC":
        # The voltage strategy's floor is a chemistry value (LibreSolar: NMC ≥ 3.80 V).
        overrides += ("balancing.voltage_min_cell_v=3.8", "balancing.top_start_cell_v=4.0")
    config = load_config(ROOT / "etc" / "sim.toml", overrides + extra)
    topology = Topology.from_config(config.pack)
    protocol = load_protocol(config.path(config.acquisition.protocol))
    day = EssDayCycle(charge_current_a=0.3 * capacity_ah, discharge_current_a=0.16 * capacity_ah)
    inverter = IdealInverter(day)
    cell_model = CellModel.load(config.path(config.pack.cell_file))
    pack = SimulatedPack(config, protocol, cell_model, topology, inverter)
    inverter.pack = pack
    rng = np.random.default_rng(7)
    # Capacities differ by 1 %: the cells are set to hold a 5 % charge imbalance (top aligned).
    offsets = rng.permutation(np.linspace(0.0, SPREAD, topology.cell_count))
    capacity = np.asarray(pack.cells.capacity_ah)
    room_ah = (0.5 + SPREAD / 2 - offsets) * capacity_ah
    pack.cells.set_soc(None, 1.0 - room_ah / capacity)
    pack.cells.relax()
    store = ReadingStore(topology)
    controller = Controller.from_config(config, topology, store, 0.0)
    encoder = FrameEncoder(protocol, topology)
    sender = BalancingSender(config.balancing, topology, encoder)
    energy_wh = 0.0
    reached: float | None = None
    milestones: dict[float, tuple[float, float]] = {}
    started = time.perf_counter()
    ticks = int(days * 86_400.0 / tick_s)
    for counter in range(1, ticks + 1):
        bled_before = pack.bled_ah.copy()
        pack.advance(tick_s)
        now = pack.time_s
        voltage = pack.measured_cell_voltage_v()
        energy_wh += float(((pack.bled_ah - bled_before) * voltage).sum())
        _feed(store, pack, voltage, now, rng)
        state, _events = controller.step(now, now)
        inverter.limits = state.limits
        pack.handle_frame(encoder.contactor_command(state.contactor_command, counter, 2.5))
        # The switch box's own 2.5 s timeout cannot be honoured with minute-long steps: the
        # contactor link is not what this bench measures.
        pack._box_deadline_s = math.inf
        for frame in sender.frames(state.balancing, now):
            pack.handle_frame(frame)
        # Likewise the slaves' own balancing timeout (at most 25.5 s in the DBC) is longer
        # than no step here; the commands themselves are encoded and obeyed as on the bus.
        pack._bleed_deadline_s[:] = math.inf
        if trace_every_s and counter % max(1, round(trace_every_s / tick_s)) == 0:
            bal = state.balancing
            print(
                f"{chemistry} {strategy} day {now / 86_400.0:6.2f}: imbalance "
                f"{imbalance(pack):.3%}, bled {energy_wh / 1000.0:.2f} kWh, "
                f"I {pack.true_current_a:+7.1f} A, cells "
                f"{voltage.min():.3f}..{voltage.max():.3f} V, "
                f"{'' if bal is None else bal.reason[:90]}",
                flush=True,
            )
        spread = imbalance(pack)
        for threshold in MILESTONES:
            if threshold not in milestones and spread < threshold:
                milestones[threshold] = (now / 86_400.0, energy_wh / 1000.0)
        if spread < TARGET:
            reached = now / 86_400.0
            break
    return Result(
        chemistry=chemistry,
        strategy=strategy,
        days_to_target=reached,
        milestones=milestones,
        final_spread=imbalance(pack),
        energy_kwh=energy_wh / 1000.0,
        bled_ah=float(pack.bled_ah.sum()),
        days_run=pack.time_s / 86_400.0,
        wall_s=time.perf_counter() - started,
    )


def _feed(store: ReadingStore, pack: Any, voltage: Any, now: float, rng: Any) -> None:
    """One tick of slave, sensor and switch box readings, as the ingest would store them."""
    temps = np.asarray(pack.cells.temp_c).reshape(MODULES, TEMPS, CELLS // TEMPS).mean(axis=2)
    bleeding = np.asarray(pack.bleeding).reshape(MODULES, CELLS)
    for module in range(MODULES):
        cells = voltage[module * CELLS : (module + 1) * CELLS]
        store.apply(CellVoltageGroup(module, 0, tuple(float(v) for v in cells), now))
        sensors = temps[module] + rng.normal(0.0, 0.1, TEMPS)
        store.apply(TemperatureGroup(module, 0, tuple(float(t) for t in sensors), now))
        board_c = round(float(pack.board_temp_c[module]), 1)
        store.apply(ModuleStatus(module, 0, board_c, False, now))
        mask = sum(1 << k for k in range(CELLS) if bleeding[module, k])
        store.apply(BalancingFeedback(module, 0, CELLS, mask, now))
    current = pack.true_current_a + rng.normal(0.0, 0.05)
    store.apply(ScalarReading(Quantity.PACK_CURRENT_A, current, now))
    store.apply(ScalarReading(Quantity.PACK_VOLTAGE_V, pack.pack_voltage_v, now))
    store.apply(ScalarReading(Quantity.BUS_VOLTAGE_V, pack.bus_voltage_v, now))
    store.apply(ContactorFeedback(pack.minus_closed, pack.plus_closed, pack.precharge_closed, now))


def _case(args: tuple[str, str, float, float, float, float, tuple[str, ...]]) -> Result:
    return run_case(*args)


def _days(result: Result) -> str:
    if result.days_to_target is None:
        return f"> {result.days_run:.1f}"
    return f"{result.days_to_target:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bleed", type=float, default=0.1, help="bleed current per cell, A")
    parser.add_argument("--days", type=float, default=30.0, help="longest run per case, days")
    parser.add_argument(
        "--tick", type=float, default=120.0, help="simulated s per tick (and physics step)"
    )
    parser.add_argument("--chemistry", choices=("LFP", "NMC", "both"), default="both")
    parser.add_argument(
        "--strategy",
        choices=("soc", "voltage", "both"),
        default="both",
        help="run only one strategy (the ratios then need the other's figures from a prior run)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="cases run in parallel")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every case, e.g. balancing.soc_reference_quantile=0.9",
    )
    parser.add_argument(
        "--trace", type=float, default=0.0, help="print each case's state every N hours"
    )
    args = parser.parse_args()
    chemistries = ("LFP", "NMC") if args.chemistry == "both" else (args.chemistry,)
    cases = [
        (chem, strategy, args.bleed, args.days, args.tick, args.trace * 3600.0, tuple(args.set))
        for chem in chemistries
        for strategy in (("soc", "voltage") if args.strategy == "both" else (args.strategy,))
    ]
    print(
        f"16 x 24 pack, {SPREAD:.0%} SOC spread, bleed {args.bleed:g} A/cell, at most 8 cells "
        f"per module, daily ESS cycle to the top of charge; tick {args.tick:g} s simulated"
    )
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        results = pool.map(_case, cases)
    by_key = {(r.chemistry, r.strategy): r for r in results}
    print(
        f"{'chem':4} {'strategy':8} {'days to <1%':>12} {'final':>7} {'bled kWh':>9} "
        f"{'bled Ah':>9} {'wall s':>7}"
    )
    for r in results:
        print(
            f"{r.chemistry:4} {r.strategy:8} {_days(r):>12} {r.final_spread:7.2%} "
            f"{r.energy_kwh:9.2f} {r.bled_ah:9.1f} {r.wall_s:7.0f}"
        )
    for chem in chemistries:
        if (chem, "soc") not in by_key or (chem, "voltage") not in by_key:
            _print_milestones(results)
            continue
        soc, volt = by_key[(chem, "soc")], by_key[(chem, "voltage")]
        print(f"\n{chem}: days and kWh bled until the imbalance first fell below each level")
        print(
            f"{'below':>6} {'soc days':>9} {'soc kWh':>8} {'volt days':>9} {'volt kWh':>9} "
            f"{'time ratio':>11} {'energy ratio':>13}"
        )
        for threshold in MILESTONES:
            a, b = soc.milestones.get(threshold), volt.milestones.get(threshold)
            cells = [_mark(a, soc), _mark(b, volt)]
            ratios = "n/a".rjust(11) + " " + "n/a".rjust(13)
            if a is not None and b is not None:
                ratios = f"{a[0] / b[0]:11.2f} {a[1] / b[1]:13.2f}"
            elif a is not None:
                ratios = f"{'<= ' + format(a[0] / volt.days_run, '.2f'):>11} {'n/a':>13}"
            print(f"{threshold:6.1%} {cells[0]} {cells[1]} {ratios}")


def _print_milestones(results: list[Result]) -> None:
    for r in results:
        print(f"\n{r.chemistry} {r.strategy}: days and kWh until the imbalance fell below")
        for threshold in MILESTONES:
            print(f"{threshold:6.1%} {_mark(r.milestones.get(threshold), r)}")


def _mark(milestone: tuple[float, float] | None, result: Result) -> str:
    if milestone is None:
        return f"{'> ' + format(result.days_run, '.1f'):>9} {'-':>8}"
    return f"{milestone[0]:9.2f} {milestone[1]:8.2f}"


if __name__ == "__main__":
    main()
