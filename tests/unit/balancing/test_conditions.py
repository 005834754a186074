"""Conditions on bleeding: the pack gate, rest timer, board derating, duty window, heat budget.

Defaults (BalancingConfig): charging above 1 A, rest below 2 A for 600 s, board limit 70 °C with
a 10 °C derating band, duty period 10 s starting with a 1 s measurement window, 8 cells/module.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bmsd.balancing.conditions import (
    PackConditions,
    board_duty,
    duty_on,
    in_measure_window,
    limit_per_module,
    pack_gate,
    rest_since,
)
from bmsd.balancing.settings import BalancingConfig
from bmsd.model.bms import BmsMode

CONFIG = BalancingConfig()


def pack(**fields: object) -> PackConditions:
    base = PackConditions(
        enabled=True,
        mode=BmsMode.CLOSED,
        blocking_faults=(),
        data_ok=True,
        current_a=10.0,
        rest_since_s=None,
        now_s=1000.0,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conditions", "config", "reason"),
    [
        (pack(), CONFIG, ""),
        (pack(enabled=False), CONFIG, "disabled by the operator"),
        (pack(mode=BmsMode.FAULT), CONFIG, "BMS in fault"),
        (pack(blocking_faults=("cell_temp_high.warning",)), CONFIG, "fault active"),
        (pack(data_ok=False), CONFIG, "stale"),
        (pack(current_a=None), CONFIG, "stale"),
        (pack(current_a=float("nan")), CONFIG, "stale"),
        # Charging edge: above 1 A charges; exactly 1 A does not.
        (pack(current_a=1.0001), CONFIG, ""),
        (pack(current_a=1.0), CONFIG, "neither charging nor at rest"),
        (
            pack(current_a=5.0),
            dataclasses.replace(CONFIG, allow_while_charging=False),
            "charging (not allowed",
        ),
        # Rest edge: exactly 600 s below the rest current is rest.
        (pack(current_a=0.0, rest_since_s=400.0), CONFIG, ""),
        (pack(current_a=0.0, rest_since_s=400.1), CONFIG, "waiting for rest"),
        (
            pack(current_a=0.0, rest_since_s=0.0),
            dataclasses.replace(CONFIG, allow_at_rest=False),
            "at rest (not allowed",
        ),
        (pack(current_a=-50.0), CONFIG, "discharging"),
    ],
)
def test_pack_gate(conditions: PackConditions, config: BalancingConfig, reason: str) -> None:
    result = pack_gate(config, conditions)
    if reason:
        assert reason in result
    else:
        assert result == ""


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, 1.9999, 50.0),  # goes below now
        (10.0, -1.9999, 10.0),  # stays below: keeps the start
        (10.0, 2.0, None),  # exactly the threshold is not rest
        (10.0, -2.5, None),
        (10.0, None, None),  # unknown current never rests
    ],
)
def test_rest_since(previous: float | None, current: float | None, expected: float | None) -> None:
    assert rest_since(previous, current, 50.0, CONFIG) == expected


def test_board_duty_derating_edges() -> None:
    temps = np.array([25.0, 60.0, 65.0, 69.99, 70.0, 90.0, np.nan])
    assert board_duty(CONFIG, temps).tolist() == pytest.approx(
        [1.0, 1.0, 0.5, 0.001, 0.0, 0.0, 0.0], abs=1e-9
    )
    no_band = dataclasses.replace(CONFIG, board_derate_band_c=0.0)
    assert board_duty(no_band, np.array([69.9, 70.0])).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("now_s", "duty", "on"),
    [
        (0.0, 1.0, False),  # the measurement window opens every period
        (0.999, 1.0, False),
        (1.0, 1.0, True),  # window ends exactly at 1 s
        (9.999, 1.0, True),
        (10.0, 1.0, False),
        (1.0 + 4.5 - 0.001, 0.5, True),  # half duty: on for 4.5 s after the window
        (1.0 + 4.5, 0.5, False),
        (25.0, 0.0, False),
        (-5.0, 1.0, True),  # phase of negative times wraps (replay clocks may start below 0)
    ],
)
def test_duty_window(now_s: float, duty: float, on: bool) -> None:
    assert duty_on(CONFIG, now_s, duty) is on


def test_measure_window() -> None:
    assert in_measure_window(CONFIG, 20.5) and not in_measure_window(CONFIG, 21.0)
    off = dataclasses.replace(CONFIG, measure_window_s=0.0)
    assert not in_measure_window(off, 20.0) and duty_on(off, 20.0, 1.0)


def test_limit_per_module_keeps_the_highest_priority() -> None:
    wanted = np.array([True, True, True, False, True, False, True, True])
    priority = np.array([1.0, 3.0, 2.0, 9.0, 5.0, 0.0, 5.0, 1.0])
    chosen = limit_per_module(wanted, priority, cells_per_module=4, max_cells=2)
    # Module 0: cells 1 (3.0) and 2 (2.0); module 1: tie 5.0 on cells 4 and 6 (never 5).
    assert chosen.tolist() == [False, True, True, False, True, False, True, False]
    assert limit_per_module(wanted, priority, 4, 4).tolist() == wanted.tolist()
    assert limit_per_module(wanted, priority, 4, 1).sum() == 2
