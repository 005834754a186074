"""Pack SOC for inverters: bounded, monotonic in charge, 1 at the first full cell, 0 at the
first empty cell (property-based)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsd.estimation.pack import END_RATE_FACTOR, PackSocTracker, pack_soc

cells = st.integers(min_value=1, max_value=12)


@st.composite
def packs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(cells)
    soc = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    std = np.array(draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n)))
    capacity = np.array(draw(st.lists(st.floats(1.0, 300.0), min_size=n, max_size=n)))
    return soc, std, capacity


@given(packs())
def test_within_bounds_and_finite(pack: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    value, std = pack_soc(*pack)
    assert 0.0 <= value <= 1.0
    assert np.isfinite(std) and std >= 0.0


@settings(max_examples=200)
@given(packs(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_monotonic_in_added_charge(
    pack: tuple[np.ndarray, np.ndarray, np.ndarray], a: float, b: float
) -> None:
    soc, std, capacity = pack
    # Move the same charge through every cell of the string, kept inside [0, 1] for all.
    room = float(np.min((1.0 - soc) * capacity))
    stored = float(np.min(soc * capacity))
    low_ah, high_ah = sorted((-stored + a * (room + stored), -stored + b * (room + stored)))
    first = pack_soc(soc + low_ah / capacity, std, capacity)[0]
    second = pack_soc(soc + high_ah / capacity, std, capacity)[0]
    assert second >= first - 1e-9


@given(packs())
def test_one_when_the_fullest_cell_is_full(pack: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    soc, std, capacity = pack
    room = (1.0 - soc) * capacity
    first = int(np.argmin(room))
    full = np.minimum(soc + room[first] / capacity, 1.0)  # charge until that cell is full
    full[first] = 1.0
    value, _ = pack_soc(full, std, capacity)
    stored = float(np.min(full * capacity))
    assert value == 1.0 or stored <= 1e-9 * float(np.max(capacity))


@given(packs())
def test_zero_when_the_emptiest_cell_is_empty(
    pack: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    soc, std, capacity = pack
    stored = soc * capacity
    first = int(np.argmin(stored))
    empty = np.maximum(soc - stored[first] / capacity, 0.0)  # until that cell is empty
    empty[first] = 0.0
    value, _ = pack_soc(empty, std, capacity)
    assert value == 0.0


def test_single_cell_pack_soc_is_the_cell_soc() -> None:
    value, std = pack_soc(np.array([0.37]), np.array([0.02]), np.array([100.0]))
    assert value == np.float64(0.37)
    assert abs(std - 0.02) < 1e-12


# --- PackSocTracker: the value inverters see -------------------------------------------------

RATE_PER_H = 0.36  # 0.0001 per second: easy numbers below
FRACTION = 0.5


def tracker_at(value: float) -> PackSocTracker:
    tracker = PackSocTracker(RATE_PER_H, FRACTION)
    tracker.update(value, 0.01, 100.0, 0.0, 0.0, 0)
    return tracker


@pytest.mark.parametrize(
    ("start", "target", "charge_ah", "dt_s", "direction", "expected"),
    [
        # Counted charge alone: 1 Ah over a 100 Ah window moves it by 0.01.
        (0.50, 0.51, 1.0, 10.0, 1, 0.51),
        (0.50, 0.49, -1.0, 10.0, -1, 0.49),
        # Charging while the per-cell value fell (a Kalman correction in the plateau): the
        # correction may only slow the rise down to zero, never reverse it.
        (0.50, 0.30, 1.0, 10.0, 1, 0.51),
        # Discharging while the per-cell value rose: never rises.
        (0.50, 0.70, -1.0, 10.0, -1, 0.49),
        # Charging with the per-cell value above: catches up by the bounded drift
        # (0.0001/s · 10 s) plus half of the counted change (0.005).
        (0.50, 0.70, 1.0, 10.0, 1, 0.50 + 0.01 + 0.001 + 0.005),
        # Discharging with the per-cell value below: the same bound, downwards.
        (0.50, 0.30, -1.0, 10.0, -1, 0.50 - 0.01 - 0.001 - 0.005),
        # A small gap is closed exactly (no overshoot).
        (0.50, 0.5105, 1.0, 10.0, 1, 0.5105),
        # At rest both ways, at the drift rate only: 0.0001/s · 100 s.
        (0.50, 0.60, 0.0, 100.0, 0, 0.51),
        (0.50, 0.40, 0.0, 100.0, 0, 0.49),
        (0.50, 0.5005, 0.0, 100.0, 0, 0.5005),
        # A cell full (target 1): the drift is END_RATE_FACTOR times faster.
        (0.95, 1.00, 0.0, 10.0, 0, 0.95 + END_RATE_FACTOR * 0.001),
        (0.05, 0.00, 0.0, 10.0, 0, 0.05 - END_RATE_FACTOR * 0.001),
        # Never outside [0, 1].
        (0.995, 1.0, 5.0, 10.0, 1, 1.0),
        (0.005, 0.0, -5.0, 10.0, -1, 0.0),
        # A count against the stated direction is ignored (offset-corrected noise at a step).
        (0.50, 0.50, -1.0, 10.0, 1, 0.50),
        # Unknown current (direction 0, dt 0): held.
        (0.50, 0.90, 0.0, 0.0, 0, 0.50),
    ],
)
def test_tracker_step_table(
    start: float, target: float, charge_ah: float, dt_s: float, direction: int, expected: float
) -> None:
    tracker = tracker_at(start)
    value, std = tracker.update(target, 0.02, 100.0, charge_ah, dt_s, direction)
    assert value == pytest.approx(expected, abs=1e-12)
    # The uncertainty includes the gap still open to the per-cell value.
    assert std == pytest.approx(math.hypot(0.02, value - target), abs=1e-12)


def test_tracker_starts_at_the_target_clamped() -> None:
    tracker = PackSocTracker(RATE_PER_H, FRACTION)
    assert tracker.update(1.3, 0.0, 10.0, 0.0, 1.0, 0)[0] == 1.0
    tracker.value = None
    assert tracker.update(0.4, 0.0, 10.0, 0.0, 1.0, 0)[0] == 0.4
    tracker.value = None
    assert tracker.update(float("nan"), 0.0, 10.0, 0.0, 1.0, 0)[0] == 0.0


steps = st.lists(
    st.tuples(
        st.floats(-0.5, 1.5, allow_nan=False),  # per-cell target (even out of range)
        st.floats(0.0, 5.0),  # |charge| per step, Ah
        st.floats(0.0, 60.0),  # dt
        st.sampled_from((-1, 0, 1)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200)
@given(st.floats(0.0, 1.0), steps)
def test_tracker_is_bounded_and_never_moves_against_the_current(
    start: float, sequence: list[tuple[float, float, float, int]]
) -> None:
    tracker = tracker_at(start)
    previous = start
    for target, charge, dt_s, direction in sequence:
        value, std = tracker.update(target, 0.01, 50.0, direction * charge, dt_s, direction)
        assert 0.0 <= value <= 1.0
        assert math.isfinite(std)
        if direction > 0:
            assert value >= previous
        elif direction < 0:
            assert value <= previous
        else:
            assert abs(value - previous) <= END_RATE_FACTOR * RATE_PER_H * dt_s / 3600 + 1e-12
        previous = value
