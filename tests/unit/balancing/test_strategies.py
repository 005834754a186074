"""Each strategy's decisions on tables of cell states, at every threshold and hysteresis edge.

Defaults (BalancingConfig): voltage start 15 mV, stop 5 mV, lowest cell ≥ 3.300 V; top from
3.400 V (off again below 3.390 V), cells > 10 mV above the lowest; soc plan above 0.5 % of
capacity, bleed down to 0.2 %, only from estimates with σ ≤ 3 %.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bmsd.balancing.settings import BalancingConfig
from bmsd.balancing.strategies import (
    CellView,
    Memory,
    NoBalancing,
    SocBased,
    TopBalancing,
    VoltageThreshold,
    excess_ah,
    make_strategy,
)

CONFIG = BalancingConfig()


def view(volts: list[float], **fields: object) -> CellView:
    count = len(volts)
    base = CellView(
        now_s=100.0,
        voltage_v=np.array(volts, dtype=np.float64),
        voltage_valid=np.ones(count, dtype=np.bool_),
        bled_ah=np.zeros(count),
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("volts", "was_active", "active", "bleeding"),
    [
        # Start edge: a spread of exactly 15 mV starts, just below does not.
        ([3.310, 3.3250], False, True, [False, True]),
        ([3.310, 3.3249], False, False, [False, False]),
        # While active: above the stop spread keeps going; exactly 5 mV stops.
        ([3.310, 3.3151], True, True, [False, True]),
        ([3.310, 3.3150], True, False, [False, False]),
        # Cells within 5 mV of the lowest never bleed, even while active.
        ([3.310, 3.3150, 3.330], False, True, [False, False, True]),
        # Minimum cell voltage edge: the lowest cell exactly at 3.300 V is allowed.
        ([3.300, 3.320], False, True, [False, True]),
        ([3.2999, 3.320], True, False, [False, False]),
    ],
)
def test_voltage_threshold_hysteresis(
    volts: list[float], was_active: bool, active: bool, bleeding: list[bool]
) -> None:
    decision, memory = VoltageThreshold(CONFIG).decide(view(volts), Memory(active=was_active))
    assert memory.active is active
    assert decision.needed is active
    assert decision.wanted.tolist() == bleeding
    assert decision.spread == pytest.approx(max(volts) - min(volts))


def test_voltage_threshold_needs_every_cell() -> None:
    partial = view([3.31, 3.35], voltage_valid=np.array([True, False]))
    decision, memory = VoltageThreshold(CONFIG).decide(partial, Memory(active=True))
    assert not decision.wanted.any() and not memory.active


@pytest.mark.parametrize(
    ("volts", "was_active", "active", "bleeding"),
    [
        # Top start edge: the highest cell exactly at 3.400 V starts.
        ([3.380, 3.400], False, True, [False, True]),
        ([3.380, 3.3999], False, False, [False, False]),
        # Hysteresis: once active, it holds down to 3.390 V.
        ([3.370, 3.390], True, True, [False, True]),
        ([3.370, 3.3899], True, False, [False, False]),
        # Delta edge: exactly 10 mV above the lowest does not bleed, above it does.
        ([3.390, 3.400, 3.4001], False, True, [False, False, True]),
    ],
)
def test_top_balancing(
    volts: list[float], was_active: bool, active: bool, bleeding: list[bool]
) -> None:
    decision, memory = TopBalancing(CONFIG).decide(view(volts), Memory(active=was_active))
    assert memory.active is active
    assert decision.wanted.tolist() == bleeding


def test_excess_top_and_bottom_alignment() -> None:
    soc = np.array([0.50, 0.60, 0.60])
    capacity = np.array([100.0, 100.0, 110.0])
    # Top: room to full 50, 40, 44 Ah; the cell with most room (50) is the reference.
    assert excess_ah(soc, capacity, "top").tolist() == pytest.approx([0.0, 10.0, 6.0])
    # Bottom: charge 50, 60, 66 Ah above the least (50).
    assert excess_ah(soc, capacity, "bottom").tolist() == pytest.approx([0.0, 10.0, 16.0])


def test_excess_quantile_reference_is_never_negative() -> None:
    soc = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    capacity = np.full(5, 100.0)
    # Top, quantile 0.75 of the rooms (100, 90, 80, 70, 60 Ah) is 90 Ah: the emptiest cell
    # (above the reference) bleeds nothing.
    assert excess_ah(soc, capacity, "top", 0.75).tolist() == pytest.approx([0, 0, 10, 20, 30])
    # Bottom, quantile 0.25 of the charges (0 ... 40 Ah) is 10 Ah.
    assert excess_ah(soc, capacity, "bottom", 0.75).tolist() == pytest.approx([0, 0, 10, 20, 30])


# The plan's edges without the deadband and the top-first band (each tested on its own below).
PLAIN = dataclasses.replace(
    CONFIG, soc_deadband_sigma=0.0, soc_top_first_band=0.5, soc_plan_window=1.0
)


def soc_view(
    soc: list[float],
    *,
    std: float | list[float] = 0.01,
    bled: list[float] | None = None,
    now: float = 100.0,
) -> CellView:
    count = len(soc)
    return view(
        [3.30] * count,
        now_s=now,
        soc=np.array(soc),
        soc_std=np.broadcast_to(np.asarray(std, dtype=np.float64), (count,)).copy(),
        capacity_ah=np.full(count, 100.0),
        bled_ah=np.zeros(count) if bled is None else np.array(bled),
        anchored_at_s=5.0,
    )


@pytest.mark.parametrize(
    ("soc", "std", "planned", "targets_ah"),
    [
        # Start edge: a cell exactly 0.5 % above the reference plans (down to 0.2 %).
        ([0.50, 0.505], 0.01, True, [0.0, 0.3]),
        ([0.50, 0.5049], 0.01, False, None),
        # Cells within the stop spread get nothing even in a plan.
        ([0.50, 0.502, 0.53], 0.01, True, [0.0, 0.0, 2.8]),
        # Uncertainty edge: σ exactly 3 % plans, above does not.
        ([0.50, 0.55], 0.03, True, [0.0, 4.8]),
        ([0.50, 0.55], 0.0301, False, None),
    ],
)
def test_soc_plan_thresholds(
    soc: list[float], std: float, planned: bool, targets_ah: list[float] | None
) -> None:
    decision, memory = SocBased(PLAIN).decide(soc_view(soc, std=std), Memory())
    if not planned:
        assert memory.plan is None and not decision.wanted.any()
        return
    assert memory.plan is not None and targets_ah is not None
    assert memory.plan.target_ah.tolist() == pytest.approx(targets_ah)
    assert decision.wanted.tolist() == [t > 0 for t in targets_ah]
    assert decision.remaining_ah.tolist() == pytest.approx(targets_ah)


@pytest.mark.parametrize(
    ("sigma", "std", "target_ah"),
    [
        # σ of the difference = √(σ_cell² + σ_ref²); 1σ of it stays unbled when above 0.2 %.
        (1.0, [0.003, 0.004], 3.0 - 0.5),  # √(0.3² + 0.4²) = 0.5 %
        (2.0, [0.003, 0.004], 3.0 - 1.0),
        (0.0, [0.003, 0.004], 3.0 - 0.2),  # no deadband: the stop spread
        # Below the stop spread, the stop spread rules: 1σ = √2·0.1 % = 0.141 % < 0.2 %.
        (1.0, [0.001, 0.001], 3.0 - 0.2),
        # An excess within the noise bleeds nothing: 3 % − 3σ (3.54 %) is below zero.
        (3.0, [0.00833, 0.00833], 0.0),
    ],
)
def test_soc_deadband_keeps_the_noise_unbled(
    sigma: float, std: list[float], target_ah: float
) -> None:
    config = dataclasses.replace(PLAIN, soc_deadband_sigma=sigma)
    _, memory = SocBased(config).decide(soc_view([0.50, 0.53], std=std), Memory())
    assert memory.plan is not None
    assert memory.plan.target_ah.tolist() == pytest.approx([0.0, target_ah], abs=1e-9)


@pytest.mark.parametrize(
    ("band", "bleeding"),
    [
        # Budgets 2.8, 2.3, 1.8, 0 Ah of 100 Ah: within 0.5 % of the largest.
        (0.005, [False, True, True, False]),
        (0.0049, [False, True, False, False]),
        (0.5, [False, True, True, False]),
        (0.01, [False, True, True, False]),
    ],
)
def test_soc_top_first_band(band: float, bleeding: list[bool]) -> None:
    config = dataclasses.replace(PLAIN, soc_top_first_band=band)
    decision, memory = SocBased(config).decide(soc_view([0.50, 0.53, 0.525, 0.52]), Memory())
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 2.8, 2.3, 1.8])
    assert decision.wanted.tolist()[:2] == bleeding[:2]
    # The third cell (2.3 Ah) is 0.5 % below the top: in the band at 0.5 %, not at 0.49 %.
    assert bool(decision.wanted[2]) is (band >= 0.005)
    assert bool(decision.wanted[3]) is (band >= 0.01)
    assert decision.needed
    # As the top cell is bled down to the next, both bleed.
    narrow = dataclasses.replace(PLAIN, soc_top_first_band=0.001)
    decision, _ = SocBased(narrow).decide(
        soc_view([0.50, 0.53, 0.525, 0.52], bled=[0.0, 0.5, 0.0, 0.0]), memory
    )
    assert decision.wanted.tolist() == [False, True, True, False]


def test_soc_budget_is_kept_for_the_interval_then_re_planned() -> None:
    strategy = SocBased(PLAIN)
    interval = PLAIN.soc_plan_interval_s
    _, memory = strategy.decide(soc_view([0.50, 0.53]), Memory())
    assert memory.plan is not None
    # Within the interval the budget is counted down by the Ah bled, whatever the estimate
    # says now (noise is sampled once per plan).
    decision, memory = strategy.decide(
        soc_view([0.50, 0.54], bled=[0.0, 1.8], now=100.0 + interval - 1.0), memory
    )
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 1.0])
    assert decision.wanted.tolist() == [False, True]
    # The published imbalance falls with the Ah bled: 3 Ah − 1.8 Ah of 100 Ah.
    assert decision.spread == pytest.approx(0.012)
    # All bled before the interval: done, and it waits.
    decision, memory = strategy.decide(
        soc_view([0.50, 0.53], bled=[0.0, 2.8], now=100.0 + interval - 1.0), memory
    )
    assert not decision.wanted.any() and not decision.needed
    assert decision.spread == pytest.approx(0.002)
    # At the interval, a new budget from the estimate (which counts the bleed itself).
    decision, memory = strategy.decide(
        soc_view([0.50, 0.52], bled=[0.0, 2.8], now=100.0 + interval), memory
    )
    assert memory.plan is not None and memory.plan.made_at_s == 100.0 + interval
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 1.8])


def test_soc_budget_in_progress_replaced_at_the_interval() -> None:
    strategy = SocBased(PLAIN)
    interval = PLAIN.soc_plan_interval_s
    _, memory = strategy.decide(soc_view([0.50, 0.53]), Memory())
    # Mid-plan, the estimate (which includes the 1 Ah bled) shows 1.5 % left.
    decision, memory = strategy.decide(
        soc_view([0.50, 0.515], bled=[0.0, 1.0], now=100.0 + interval), memory
    )
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 1.3])
    # Below the start spread but above the stop spread, a plan in progress keeps going ...
    decision, memory = strategy.decide(
        soc_view([0.50, 0.504], bled=[0.0, 1.0], now=100.0 + 2 * interval), memory
    )
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 0.2])
    # ... and at the stop spread it ends; an uncertain estimate keeps the old budget.
    decision, memory = strategy.decide(
        soc_view([0.50, 0.502], bled=[0.0, 1.1], std=0.05, now=100.0 + 3 * interval), memory
    )
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 0.1])
    decision, memory = strategy.decide(
        soc_view([0.50, 0.502], bled=[0.0, 1.1], now=100.0 + 3 * interval), memory
    )
    assert not decision.wanted.any() and memory.plan is not None
    assert "balanced" in decision.reason


def test_soc_plan_survives_a_missing_estimate() -> None:
    strategy = SocBased(PLAIN)
    _, memory = strategy.decide(soc_view([0.50, 0.53]), Memory())
    no_estimate = view([3.3, 3.3], bled_ah=np.array([0.0, 0.5]))
    decision, _ = strategy.decide(no_estimate, memory)
    assert decision.remaining_ah.tolist() == pytest.approx([0.0, 2.3])
    fresh, _ = strategy.decide(no_estimate, Memory())
    assert not fresh.wanted.any() and "no SOC estimate" in fresh.reason


def test_none_and_factory() -> None:
    decision, _ = NoBalancing().decide(view([3.0, 3.5]), Memory())
    assert not decision.wanted.any()
    for name, kind in (
        ("none", NoBalancing),
        ("voltage", VoltageThreshold),
        ("top", TopBalancing),
        ("soc", SocBased),
    ):
        config = dataclasses.replace(CONFIG, strategy=name)  # type: ignore[arg-type]
        assert isinstance(make_strategy(config), kind)
    assert math.isnan(NoBalancing().decide(view([3.3]), Memory())[0].spread)


@pytest.mark.parametrize(("std_now", "replanned"), [(0.0099, True), (0.0100, False)])
def test_soc_budget_replaced_early_by_an_estimate_twice_as_certain(
    std_now: float, replanned: bool
) -> None:
    strategy = SocBased(dataclasses.replace(CONFIG, soc_plan_window=1.0, soc_deadband_sigma=1.0))
    _, memory = strategy.decide(soc_view([0.50, 0.55], std=0.02), Memory())
    assert memory.plan is not None
    # 5 % − 1σ of the difference (√2·2 % = 2.83 %): 2.17 Ah.
    assert memory.plan.target_ah[1] == pytest.approx(5.0 - 100 * math.sqrt(2) * 0.02)
    decision, memory = strategy.decide(soc_view([0.50, 0.55], std=std_now, now=200.0), memory)
    assert memory.plan is not None and (memory.plan.made_at_s == 200.0) is replanned
    expected = 5.0 - 100 * math.sqrt(2) * (std_now if replanned else 0.02)
    assert decision.remaining_ah[1] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("alignment", "soc", "planned"),
    [
        # Top: average SOC 86.5 % is within 15 % of full, 84.5 % is not.
        ("top", [0.85, 0.88], True),
        ("top", [0.83, 0.86], False),
        # Bottom: within 15 % of empty.
        ("bottom", [0.10, 0.13], True),
        ("bottom", [0.15, 0.18], False),
    ],
)
def test_soc_plans_only_near_the_aligned_end(
    alignment: str, soc: list[float], planned: bool
) -> None:
    config = dataclasses.replace(CONFIG, soc_alignment=alignment)
    decision, memory = SocBased(config).decide(soc_view(soc, std=0.001), Memory())
    assert (memory.plan is not None) is planned
    assert bool(decision.wanted.any()) is planned
    if not planned:
        assert "a plan is made within 15%" in decision.reason


def test_room_uncertainty_includes_the_capacity_lever() -> None:
    strategy = SocBased(CONFIG)
    base = soc_view([0.5, 0.9], std=0.003)
    # (1 − SOC)·σQ/Q: 0.5·2 Ah / 100 Ah = 1 % at 50 %, 0.1·2/100 = 0.2 % at 90 %.
    with_capacity = dataclasses.replace(base, capacity_std_ah=np.full(2, 2.0))
    assert strategy.charge_std(with_capacity).tolist() == pytest.approx(
        [math.hypot(0.003, 0.01), math.hypot(0.003, 0.002)]
    )
    assert strategy.charge_std(base).tolist() == pytest.approx([0.003, 0.003])
