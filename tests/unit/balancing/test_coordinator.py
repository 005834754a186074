"""The coordinator on real snapshots: conditions stop bleeding, Ah are counted, feedback is
judged, the heat budget and the charge hold apply, and the counters survive a restart."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.balancing.coordinator import Balancer
from bmsd.balancing.settings import BalancingConfig
from bmsd.config import AcquisitionConfig
from bmsd.model.bms import Answer, BmsMode, Request
from bmsd.model.readings import (
    BalancingFeedback,
    CellVoltageGroup,
    ContactorFeedback,
    ModuleStatus,
    Quantity,
    ScalarReading,
    TemperatureGroup,
)
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.topology import Topology

TOPOLOGY = Topology(
    strings=1,
    modules_per_string=2,
    cells_per_module=4,
    temps_per_module=1,
    cells_in_parallel=1,
    module_node_ids=(1, 2),
)
ACQUISITION = AcquisitionConfig(bus="slaves", protocol="x")
# Voltage strategy, no measurement window (the duty cycle is tested on its own).
CONFIG = BalancingConfig(strategy="voltage", measure_window_s=0.0, max_cells_per_module=4)
HIGH = [3.35, 3.35, 3.35, 3.37, 3.35, 3.35, 3.38, 3.39]  # cells 3, 6, 7 above the lowest


class Pack:
    """A reading store fed like the ingest would, and snapshots built from it."""

    def __init__(self) -> None:
        self.store = ReadingStore(TOPOLOGY)
        self.builder = SnapshotBuilder(TOPOLOGY, ACQUISITION, 0.0)
        self.tick = 0

    def feed(
        self,
        now: float,
        volts: list[float] = HIGH,
        *,
        current_a: float = 20.0,
        board_c: tuple[float, float] = (30.0, 30.0),
        feedback: list[bool] | None = None,
        request: tuple[bool, bool] = (False, False),
        silent: tuple[int, ...] = (),
    ) -> PackSnapshot:
        for module in range(2):
            if module in silent:
                continue
            cells = tuple(volts[module * 4 : module * 4 + 4])
            self.store.apply(CellVoltageGroup(module, 0, cells, now))
            self.store.apply(TemperatureGroup(module, 0, (25.0,), now))
            self.store.apply(ModuleStatus(module, 0, board_c[module], request[module], now))
            if feedback is not None:
                mask = sum(1 << k for k in range(4) if feedback[module * 4 + k])
                self.store.apply(BalancingFeedback(module, 0, 4, mask, now))
        self.store.apply(ScalarReading(Quantity.PACK_CURRENT_A, current_a, now))
        self.store.apply(ScalarReading(Quantity.PACK_VOLTAGE_V, sum(volts), now))
        self.store.apply(ContactorFeedback(True, True, False, now))
        self.tick += 1
        return self.builder.build(self.store, self.tick, now)


def step(
    balancer: Balancer,
    snapshot: PackSnapshot,
    *,
    mode: BmsMode = BmsMode.CLOSED,
    faults: tuple[str, ...] = (),
    data_ok: bool = True,
) -> list[bool]:
    state = balancer.step(
        snapshot.time_s,
        snapshot,
        None,
        mode=mode,
        blocking_faults=faults,
        data_ok=data_ok,
    )
    return [bool(flag) for flag in state.bleeding]


EXPECTED = [False, False, False, True, False, False, True, True]


@pytest.mark.parametrize(
    ("case", "bleeds"),
    [
        ({}, True),
        ({"mode": BmsMode.FAULT}, False),
        ({"faults": ("cell_temp_high.warning",)}, False),
        ({"data_ok": False}, False),
    ],
)
def test_fault_and_stale_data_stop_bleeding(case: dict[str, object], bleeds: bool) -> None:
    pack, balancer = Pack(), Balancer(CONFIG, TOPOLOGY, 1.0)
    assert step(balancer, pack.feed(1.0)) == EXPECTED
    result = step(balancer, pack.feed(1.1), **case)  # type: ignore[arg-type]
    assert result == (EXPECTED if bleeds else [False] * 8)


def test_discharge_silent_module_hot_board_and_measurement_request() -> None:
    pack, balancer = Pack(), Balancer(CONFIG, TOPOLOGY, 1.0)
    assert step(balancer, pack.feed(1.0, current_a=-30.0)) == [False] * 8
    # Board of module 1 at its limit: only module 0 bleeds; unknown board temperature likewise.
    assert step(balancer, pack.feed(2.0, board_c=(30.0, 70.0))) == EXPECTED[:4] + [False] * 4
    assert step(balancer, pack.feed(3.0, board_c=(math.nan, 30.0))) == [False] * 4 + EXPECTED[4:]
    # A module asking to measure with bleeding off gets it.
    assert step(balancer, pack.feed(4.0, request=(False, True))) == EXPECTED[:4] + [False] * 4
    # A silent module (readings stale): with data not ok, nothing bleeds anywhere.
    snapshot = pack.feed(6.0, silent=(1,))
    assert step(balancer, snapshot, data_ok=False) == [False] * 8


def test_heat_budget_per_module() -> None:
    config = dataclasses.replace(CONFIG, max_cells_per_module=1)
    pack, balancer = Pack(), Balancer(config, TOPOLOGY, 1.0)
    # Module 1 wants cells 6 and 7: only the highest (7, 3.39 V) bleeds.
    assert step(balancer, pack.feed(1.0)) == [False, False, False, True, False, False, False, True]


def test_bled_ah_counted_from_feedback_and_mismatch_after_grace() -> None:
    pack, balancer = Pack(), Balancer(CONFIG, TOPOLOGY, 1.0)
    step(balancer, pack.feed(0.0, feedback=[False] * 8))
    # The slaves obey: 3 cells bleed for 36 s at 0.1 A = 1 mAh each.
    state = None
    for k in range(1, 37):
        state = balancer.step(
            float(k),
            pack.feed(float(k), feedback=EXPECTED),
            None,
            mode=BmsMode.CLOSED,
            blocking_faults=(),
            data_ok=True,
        )
    assert state is not None and state.feedback_mismatch_modules == 0
    assert state.bled_ah.tolist() == pytest.approx([0.001 if f else 0.0 for f in EXPECTED])
    # Module 1 stops obeying: a mismatch only once the command is older than the grace time.
    balancer2 = Balancer(CONFIG, TOPOLOGY, 1.0)
    pack2 = Pack()
    wrong = EXPECTED[:4] + [False] * 4
    counts = []
    for k in range(5):
        state = balancer2.step(
            float(k),
            pack2.feed(float(k), feedback=wrong),
            None,
            mode=BmsMode.CLOSED,
            blocking_faults=(),
            data_ok=True,
        )
        counts.append(state.feedback_mismatch_modules)
    # Commanded at t=0; grace 2 s: judged from t=2 on.
    assert counts == [0, 0, 1, 1, 1]


def test_operator_requests_and_charge_hold() -> None:
    config = dataclasses.replace(CONFIG, hold_charge_current_a=15.0)
    pack, balancer = Pack(), Balancer(config, TOPOLOGY, 1.0)
    near_top = [v + 0.05 for v in HIGH]  # highest cell 3.44 V, above top_start_cell_v 3.40 V
    step(balancer, pack.feed(1.0, near_top))
    assert balancer.charge_hold_a == 15.0
    step(balancer, pack.feed(2.0, HIGH))  # highest 3.39 V: no hold
    assert balancer.charge_hold_a is None
    reply = balancer.answer(Request.BALANCING_OFF)
    assert reply.answer is Answer.ACCEPTED and not balancer.enabled
    assert step(balancer, pack.feed(3.0, near_top)) == [False] * 8
    assert balancer.charge_hold_a is None
    assert balancer.answer(Request.BALANCING_ON).answer is Answer.ACCEPTED
    assert step(balancer, pack.feed(4.0, near_top)) == EXPECTED
    none = Balancer(BalancingConfig(), TOPOLOGY, 1.0)
    assert none.answer(Request.BALANCING_ON).answer is Answer.ILLEGAL


def test_counters_survive_a_restart_and_damage_is_refused(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, strategy="soc")
    balancer = Balancer(config, TOPOLOGY, 1.0)
    balancer._bled_ah = np.arange(8) * 0.5  # as after days of bleeding
    path = tmp_path / "balancing.json"
    balancer.save(path)
    again = Balancer(config, TOPOLOGY, 1.0)
    assert again.load(path) == ""
    assert again.bled_ah.tolist() == pytest.approx((np.arange(8) * 0.5).tolist())
    other = Topology(1, 1, 4, 1, 1, (1,))
    assert "cells" in Balancer(config, other, 1.0).load(path)
    path.write_text("{ torn", encoding="utf-8")
    fresh = Balancer(config, TOPOLOGY, 1.0)
    assert fresh.load(path) != "" and fresh.bled_ah.tolist() == [0.0] * 8


def _plan(**change: object) -> dict[str, object]:
    plan: dict[str, object] = {
        "anchored_at_s": None,
        "target_ah": [0.5] * 8,
        "bled_at_plan_ah": [0.0] * 8,
        "excess_ah": [0.5] * 8,
        "capacity_ah": [100.0] * 8,
    }
    plan.update(change)
    return plan


def _payload(**change: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "cell_count": 8,
        "strategy": "soc",
        "bled_ah": [1.0] * 8,
        "plan": _plan(),
    }
    payload.update(change)
    return payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # Found by review: each raised OverflowError.
        pytest.param(_payload(cell_count=float("inf"), bled_ah=[]), "damaged", id="count-inf"),
        pytest.param(_payload(bled_ah=[10**400] + [0.0] * 7), "damaged", id="bled-huge-int"),
        pytest.param(_payload(bled_ah=[1e300] * 8), "beyond", id="bled-absurd"),
        pytest.param(_payload(cell_count="x"), "damaged", id="count-string"),
        pytest.param(_payload(plan="oops"), "damaged", id="plan-string"),
        pytest.param(_payload(plan=_plan(target_ah=[1e6] * 8)), "plan damaged", id="target"),
        pytest.param(_payload(plan=_plan(excess_ah=[-1.0] * 8)), "plan damaged", id="excess"),
        pytest.param(_payload(plan=_plan(capacity_ah=[0.0] * 8)), "plan damaged", id="cap-0"),
        pytest.param(
            _payload(plan=_plan(bled_at_plan_ah=[5.0] * 8)), "plan damaged", id="after-bled"
        ),
        pytest.param(_payload(plan=_plan(anchored_at_s=1e999)), "anchor", id="anchor-inf"),
        pytest.param(_payload(plan=_plan(anchored_at_s=10**400)), "damaged", id="anchor-huge"),
    ],
)
def test_restored_values_no_balancer_could_have_are_refused(
    payload: dict[str, object], reason: str
) -> None:
    balancer = Balancer(dataclasses.replace(CONFIG, strategy="soc"), TOPOLOGY, 1.0)
    assert reason in balancer.restore_state(payload)
    assert balancer.bled_ah.tolist() == [0.0] * 8, "nothing taken over"


def test_a_plausible_plan_is_taken_over() -> None:
    balancer = Balancer(dataclasses.replace(CONFIG, strategy="soc"), TOPOLOGY, 1.0)
    assert balancer.restore_state(_payload()) == ""
    assert balancer.bled_ah.tolist() == [1.0] * 8


def test_bleed_current_for_the_estimator_follows_fresh_feedback_or_the_command() -> None:
    pack, balancer = Pack(), Balancer(CONFIG, TOPOLOGY, 1.0)
    step(balancer, pack.feed(0.0, feedback=[False] * 8))
    reported = [True, False, False, True, False, False, False, True]
    snapshot = pack.feed(1.0, feedback=reported)
    # What the slaves report bleeding, at the configured bleed current.
    assert balancer.bleed_current_a(snapshot).tolist() == [0.1 if f else 0.0 for f in reported]
    # A silent module's feedback is stale: its cells count as not bleeding.
    stale = pack.feed(3.5, feedback=reported, silent=(1,))
    assert balancer.bleed_current_a(stale).tolist() == [0.1, 0, 0, 0.1, 0, 0, 0, 0]
    # Without feedback in the protocol, the last command counts.
    blind, blind_pack = Balancer(CONFIG, TOPOLOGY, 1.0, feedback_available=False), Pack()
    step(blind, blind_pack.feed(0.0))
    current = blind.bleed_current_a(blind_pack.feed(1.0, feedback=reported))
    assert current.tolist() == [0.1 if f else 0.0 for f in EXPECTED]
