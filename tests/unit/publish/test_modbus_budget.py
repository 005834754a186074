"""The Modbus server's CPU budget: a token bucket of the server thread's CPU seconds."""

from __future__ import annotations

import pytest

from bmsd.publish.modbus.budget import CpuBudget


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (wall s, cpu s) after a first call at (0, 0); burst 0.1 s, share 0.25
        ([(1.0, 0.25)], [0.0]),  # exactly the share: no pause
        ([(0.0, 0.1)], [0.0]),  # the whole burst at once: still allowed
        ([(0.0, 0.1001)], [pytest.approx(0.0004)]),  # just over: debt / share
        ([(1.0, 0.45)], [pytest.approx(0.4)]),  # 0.1 burst + 0.25 refill - 0.45 = -0.1
        ([(1.0, 0.45), (1.4, 0.45)], [pytest.approx(0.4), 0.0]),  # the pause refills it
        ([(1.0, 0.45), (1.3, 0.45)], [pytest.approx(0.4), pytest.approx(0.1)]),
        ([(10.0, 0.0), (10.0, 0.1)], [0.0, 0.0]),  # idle time fills only up to the burst
        ([(10.0, 0.0), (10.0, 0.2)], [0.0, pytest.approx(0.4)]),
        ([(-1.0, -1.0)], [0.0]),  # clocks going back are no time and no use
    ],
)
def test_pause_follows_the_debt(steps: list[tuple[float, float]], expected: list[float]) -> None:
    budget = CpuBudget(share=0.25, burst_s=0.1)
    assert budget.delay_s(0.0, 0.0) == 0.0
    assert [budget.delay_s(wall, cpu) for wall, cpu in steps] == expected


def test_paused_time_is_counted() -> None:
    budget = CpuBudget(share=0.5, burst_s=0.0)
    budget.delay_s(0.0, 0.0)
    budget.delay_s(1.0, 1.0)  # 0.5 refilled, 1.0 used: 1.0 s to pay back
    assert budget.paused_s == pytest.approx(1.0)


def test_overlapping_pauses_are_counted_once() -> None:
    budget = CpuBudget(share=0.5, burst_s=0.0)
    budget.delay_s(0.0, 0.0)
    assert budget.delay_s(1.0, 1.0) == pytest.approx(1.0)  # paused until 2.0
    assert budget.delay_s(1.5, 1.0) == pytest.approx(0.5)  # still until 2.0
    assert budget.paused_s == pytest.approx(1.0)


def test_a_debt_beyond_the_longest_pause_is_forgiven() -> None:
    budget = CpuBudget(share=0.25, burst_s=0.1, max_pause_s=1.0)
    budget.delay_s(0.0, 0.0)
    assert budget.delay_s(1.0, 5.0) == pytest.approx(1.0)  # not (5 - 0.35) / 0.25 = 18.6 s
    assert budget.delay_s(2.0, 5.0) == 0.0  # paid back by the pause
