"""Pack SOC for inverters: bounded, monotonic in charge, 1 at the first full cell, 0 at the
first empty cell (property-based)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsd.estimation.pack import pack_soc

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
