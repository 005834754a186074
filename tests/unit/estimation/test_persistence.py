"""Estimator state survives restarts; every bad file is reported and never half-loaded."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bmsd.estimation import EstimationConfig, Estimator
from bmsd.estimation.estimator import STATE_KIND, STATE_VERSION
from bmsd.model.cell import CellModel
from bmsd.system.statefile import write_state

CELL = CellModel.load(Path(__file__).resolve().parents[3] / "etc" / "cells" / "nmc_100ah.toml")


def make(count: int = 3) -> Estimator:
    return Estimator(CELL, count, 1, EstimationConfig())


def run_a_while(estimator: Estimator) -> None:
    n = estimator.cell_count
    estimator.set_soc(np.linspace(0.4, 0.6, n), 0.01)
    voltage = np.full(n, 3.75)
    for k in range(100):
        estimator.step(float(k), -20.0, voltage, np.ones(n, bool), np.full(n, 25.0), False)


def test_round_trip_keeps_soc_and_counters(tmp_path: Path) -> None:
    path = tmp_path / "estimates.json"
    first = make()
    run_a_while(first)
    first.save(path)
    second = make()
    assert second.load(path) == ""
    assert np.allclose(second.soc, first.soc, atol=1e-5)
    assert np.allclose(second.soc_std, first.soc_std, atol=1e-4)
    assert second.discharge_throughput_ah == pytest.approx(first.discharge_throughput_ah)
    assert np.allclose(second.capacity.capacity_ah, first.capacity.capacity_ah)


def test_missing_file_gives_a_reason(tmp_path: Path) -> None:
    estimator = make()
    before = estimator.soc.copy()
    assert "no state file" in estimator.load(tmp_path / "absent.json")
    assert np.array_equal(estimator.soc, before)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: b"", "empty"),
        (lambda data: data[: len(data) // 2], "corrupt"),
        (lambda data: b"\x00" * len(data), "zeroed"),
        (lambda data: data.replace(b"soc_std", b"soc_sTd"), "checksum"),
    ],
)
def test_corrupt_or_partial_file_is_refused(tmp_path: Path, mangle: object, reason: str) -> None:
    path = tmp_path / "estimates.json"
    source = make()
    run_a_while(source)
    source.save(path)
    path.write_bytes(mangle(path.read_bytes()))  # type: ignore[operator]
    estimator = make()
    before = estimator.soc.copy()
    problem = estimator.load(path)
    assert reason in problem
    assert np.array_equal(estimator.soc, before)


def test_too_old_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "estimates.json"
    make().save(path)
    document = json.loads(path.read_text())
    document["written_at"] = time.time() - 30 * 86400
    path.write_text(json.dumps(document))
    assert "too old" in make().load(path)


def test_wrong_cell_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "estimates.json"
    make(3).save(path)
    assert "cell count changed" in make(4).load(path)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("soc", [0.5, 0.5], "values"),
        ("soc", [0.5, float("nan"), 0.5], "non-finite"),
        ("soc", [0.5, 7.0, 0.5], "out of range"),
        ("capacity_ah", [100.0, -1.0, 100.0], "capacity outside"),
        ("soc_std", "x", "malformed"),
        # Found by review: each raised OverflowError (a crash loop) or was used (NaN SOC).
        ("cell_count", float("inf"), "malformed"),
        ("nominal_ah", 10**400, "malformed"),
        ("soc", [10**400, 0.5, 0.5], "malformed"),
        ("current_offset_std_a", 1e308, "offset uncertainty"),
        ("current_offset_a", 1e300, "current offset beyond"),
        ("current_offset_a", 10**400, "malformed"),
        ("current_offset_a", -2.5, "current offset beyond"),  # > 0.02C of 100 Ah
        ("current_offset_std_a", 0.0, "offset uncertainty"),
        ("soc_std", [0.01, 0.0, 0.01], "out of range"),
        ("capacity_ah", [100.0, 1e-300, 100.0], "capacity outside"),
        ("capacity_ah", [100.0, 1e300, 100.0], "capacity outside"),
        ("resistance_growth", [1.0, 1e300, 1.0], "resistance growth outside"),
        ("resistance_growth", [1.0, 0.01, 1.0], "resistance growth outside"),
        ("resistance_variance", [0.1, -1.0, 0.1], "negative"),
        ("capacity_samples", [1.0, -1.0, 1.0], "negative"),
        ("charge_throughput_ah", 1e300, "charge_throughput_ah outside"),
        ("discharge_energy_wh", -1.0, "discharge_energy_wh outside"),
        ("strings", "two", "malformed"),
        ("pack_soc", 10**400, "malformed"),
    ],
)
def test_implausible_payload_is_refused(key: str, value: object, reason: str) -> None:
    source = make()
    payload = source.export_state()
    payload[key] = value
    estimator = make()
    assert reason in estimator.restore_state(payload)


def test_plausible_numbers_that_overflow_together_are_refused_and_nothing_changes() -> None:
    """Finite sums whose products overflow: the capacity fit turns NaN after restoring."""
    payload = make().export_state()
    for key in ("capacity_sum_xx", "capacity_sum_xy", "capacity_sum_xt", "capacity_sum_tt"):
        payload[key] = [1e300, 1e300, 1e300]
    estimator = make()
    before = estimator.export_state()
    assert "not finite after restoring" in estimator.restore_state(payload)
    assert estimator.export_state() == before


def test_the_reviewed_absurd_offset_file_is_refused(tmp_path: Path) -> None:
    """The review's case: a sealed file, offset 1e300 A; it gave a NaN SOC, contactors closed."""
    path = tmp_path / "estimates.json"
    payload = make().export_state()
    payload["current_offset_a"] = 1e300
    write_state(path, STATE_KIND, STATE_VERSION, payload)
    estimator = make()
    data = path.read_bytes()
    assert "current offset beyond" in estimator.load(path)
    assert np.all(np.isfinite(estimator.soc))
    assert (tmp_path / "estimates.json.bad").read_bytes() == data, "kept for the post-mortem"


def test_missing_key_is_refused() -> None:
    payload = make().export_state()
    del payload["soc"]
    assert "malformed" in make().restore_state(payload)


def test_export_is_json_and_file_format_is_versioned(tmp_path: Path) -> None:
    estimator = make()
    run_a_while(estimator)
    json.dumps(estimator.export_state(), allow_nan=False)
    path = tmp_path / "other_version.json"
    write_state(path, STATE_KIND, STATE_VERSION + 1, estimator.export_state())
    assert "version" in make().load(path)


def test_offline_time_widens_uncertainty_and_applies_self_discharge() -> None:
    source = make()
    run_a_while(source)
    payload = source.export_state()
    restored = make()
    assert restored.restore_state(payload, age_s=30 * 86400) == ""
    assert np.all(restored.soc < source.soc)
    assert np.all(restored.soc_std > source.soc_std)


def test_save_due_follows_the_interval() -> None:
    estimator = make()
    assert estimator.save_due(0.0)
    assert not estimator.save_due(1.0)
    assert estimator.save_due(EstimationConfig().state_save_interval_s + 0.1)


def test_kill_and_restart_keeps_soc(tmp_path: Path) -> None:
    """What a kill -9 leaves (the last periodic save) restores within 0.5 % SOC."""
    path = tmp_path / "estimates.json"
    estimator = make()
    run_a_while(estimator)
    estimator.save(path)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    restarted = make()
    assert restarted.load(path) == ""
    assert np.all(np.abs(restarted.soc - estimator.soc) < 0.005)


def test_reported_pack_soc_and_capacity_offset_terms_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "estimates.json"
    first = make()
    run_a_while(first)
    first.pack.value = 0.4321  # the value inverters saw (may lag the per-cell value)
    first.capacity.sum_ty = first.capacity.sum_ty + 0.5
    first.save(path)
    second = make()
    assert second.load(path) == ""
    assert second.pack.value == pytest.approx(0.4321)
    assert np.allclose(second.capacity.sum_ty, first.capacity.sum_ty)
    assert np.allclose(second.capacity.capacity_ah, first.capacity.capacity_ah)


def test_older_state_without_the_new_keys_still_loads() -> None:
    first = make()
    run_a_while(first)
    payload = first.export_state()
    for key in ("pack_soc", "capacity_sum_xt", "capacity_sum_tt", "capacity_sum_ty"):
        del payload[key]
    second = make()
    assert second.restore_state(payload) == ""
    assert second.pack.value is None  # restarts from the per-cell value at the next tick
    assert np.allclose(second.soc, first.soc, atol=1e-5)
