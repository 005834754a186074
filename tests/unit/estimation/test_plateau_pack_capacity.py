"""LFP plateau honesty with a real model error, the pack SOC inverters see while the per-cell
estimate is corrected, the rest drift, and capacity learning with a current-sensor offset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bmsd.estimation import EstimationConfig, Estimator
from bmsd.estimation.soh import CapacityLearner
from bmsd.model.cell import CellModel

CELLS_DIR = Path(__file__).resolve().parents[3] / "etc" / "cells"
LFP = CellModel.load(CELLS_DIR / "lfp_280ah.toml")
NMC = CellModel.load(CELLS_DIR / "nmc_100ah.toml")
ONE = np.ones(1, dtype=np.bool_)
T25 = np.full(1, 25.0)


def with_model_error(model: CellModel, error_v: float) -> CellModel:
    info = dataclasses.replace(model.file.cell, model_error_v=error_v)
    return CellModel(dataclasses.replace(model.file, cell=info))


@pytest.mark.parametrize(
    ("file_error_v", "config_error_v", "expected_v"),
    [
        (0.0, None, 0.010),  # neither: the default
        (0.043, None, 0.043),  # the fit RMSE written by fit-cell
        (0.043, 0.02, 0.02),  # configured wins
    ],
)
def test_model_error_comes_from_the_cell_file_fit(
    file_error_v: float, config_error_v: float | None, expected_v: float
) -> None:
    model = with_model_error(LFP, file_error_v)
    estimator = Estimator(model, 1, 1, EstimationConfig(model_error_v=config_error_v))
    assert estimator.model_error_v == pytest.approx(expected_v)


@pytest.mark.parametrize(
    ("file_model_v", "file_ocv_v", "expected_v"),
    [
        (0.043, 0.0, 0.010),  # not known: the default
        (0.043, 0.003, 0.003),  # measured by fit-cell (leave-one-out)
        (0.002, 0.003, 0.002),  # never looser than the model error
        (0.0, 0.0, 0.010),
    ],
)
def test_relaxed_rest_trusts_the_ocv_table_error(
    file_model_v: float, file_ocv_v: float, expected_v: float
) -> None:
    info = dataclasses.replace(LFP.file.cell, model_error_v=file_model_v, ocv_error_v=file_ocv_v)
    model = CellModel(dataclasses.replace(LFP.file, cell=info))
    assert Estimator(model, 1, 1, EstimationConfig()).ocv_error_v == pytest.approx(expected_v)


def ocv_with_error(model: CellModel, soc: float, current_a: float, error_v: float) -> np.ndarray:
    """A measured voltage: OCV + R0·I + a persistent model error (diffusion the ECM lacks)."""
    value = float(model.ocv_v(soc, 25.0)) + float(model.r0_ohm(soc, 25.0)) * current_a
    return np.full(1, value + error_v)


@pytest.mark.parametrize("error_v", [0.03, -0.03])
def test_plateau_model_error_is_not_read_as_soc(error_v: float) -> None:
    """In the LFP plateau, a 30 mV model error (worth tens of %SOC there) must not move the SOC
    away from coulomb counting by more than its uncertainty allows; σ grows honestly. (A
    Gauss-Markov bias treats two hours of one 30 mV error as many independent ones: a few %
    of drift remain, inside the stated σ.)"""
    model = with_model_error(LFP, 0.03)  # what fit-cell would have measured for such a model
    estimator = Estimator(model, 1, 1, EstimationConfig())
    estimator.set_soc(0.55, 0.01)
    capacity = model.info.capacity_ah
    soc, time_s = 0.55, 0.0
    std0 = 0.01
    for k in range(2 * 3600):
        current = (0.2 if (k // 600) % 2 else -0.2) * capacity
        soc += current / 3600.0 / capacity
        time_s += 1.0
        est = estimator.step(
            time_s, current, ocv_with_error(model, soc, current, error_v), ONE, T25, False
        )
    error, std = abs(float(est.soc[0]) - soc), float(est.soc_std[0])
    assert std > std0, "the uncertainty grows where the voltage is mute"
    assert error < 2.0 * std, "and it covers what the model error did to the estimate"
    assert error < 0.06


def test_knee_still_corrects_a_wrong_start() -> None:
    """Where the OCV is steep (LFP below ~15 %), the same filter converges."""
    model = with_model_error(LFP, 0.03)
    estimator = Estimator(model, 1, 1, EstimationConfig())
    true_soc = 0.08
    estimator.set_soc(0.2, 0.15)
    for k in range(1800):
        current = -0.02 * model.info.capacity_ah if k % 60 < 30 else 0.0
        true_soc += current / 3600.0 / model.info.capacity_ah
        est = estimator.step(
            float(k), current, ocv_with_error(model, true_soc, current, 0.0), ONE, T25, False
        )
    assert abs(float(est.soc[0]) - true_soc) < 0.03
    assert float(est.soc_std[0]) < 0.05


def test_pack_soc_never_falls_while_charging_even_when_cells_are_corrected_down() -> None:
    """The per-cell SOC is pulled down (the voltage says lower), the pack SOC keeps rising."""
    model = NMC
    estimator = Estimator(model, 2, 1, EstimationConfig())
    estimator.set_soc(0.7, 0.1)
    capacity = model.info.capacity_ah
    current = 0.2 * capacity
    reported, cells = [], []
    for k in range(1, 1201):
        soc = 0.5 + 0.2 * k / 3600.0  # truly 20 % lower than the start estimate
        voltage = np.full(2, float(model.ocv_v(soc, 25.0) + model.r0_ohm(soc, 25.0) * current))
        est = estimator.step(float(k), current, voltage, np.ones(2, bool), np.full(2, 25.0), False)
        reported.append(est.pack_soc)
        cells.append(float(est.soc[0]))
    assert min(np.diff(cells)) < 0.0, "the scenario must really correct the cells downwards"
    assert min(np.diff(reported)) >= 0.0
    assert all(0.0 <= r <= 1.0 for r in reported)
    # When the current stops, the reported value drifts to the per-cell value (bounded).
    rest_v = np.full(2, float(model.ocv_v(soc, 25.0)))
    for k in range(1201, 1201 + 4 * 3600, 10):
        est = estimator.step(float(k), 0.0, rest_v, np.ones(2, bool), np.full(2, 25.0), False)
    assert est.pack_soc == pytest.approx(float(np.mean(est.soc)), abs=0.01)
    assert est.pack_soc == pytest.approx(soc, abs=0.02)


@pytest.mark.parametrize(
    ("start_std", "max_move_in_10_min"),
    [
        (0.005, 0.1 / 6),  # confident: at most ocv_drift_rate_per_h (0.1/h)
        (0.15, 0.15 * 1.05),  # fresh start: up to about one σ per rest_time_s (600 s)
    ],
)
def test_rest_correction_is_a_drift_scaled_by_uncertainty(
    start_std: float, max_move_in_10_min: float
) -> None:
    model = NMC
    estimator = Estimator(model, 1, 1, EstimationConfig())
    estimator.set_soc(0.3, start_std)
    voltage = np.full(1, float(model.ocv_v(0.6, 25.0)))  # at rest, truly at 60 %
    previous = 0.3
    for k in range(1, 601):
        est = estimator.step(float(k), 0.0, voltage, ONE, T25, False)
        step = float(est.soc[0]) - previous
        assert step <= max(start_std / 600.0, 0.1 / 3600.0) * 1.0001 + 1e-12
        previous = float(est.soc[0])
    moved = previous - 0.3
    assert 0.0 < moved <= max_move_in_10_min


def synthetic_anchors(
    capacity_ah: float, offset_a: float, days: int
) -> list[tuple[float, float, float]]:
    """(time_s, soc, counted net Ah) of an ESS week: full → 30 % in 8 h → full in 12 h."""
    out, net, time_s = [(0.0, 1.0, 0.0)], 0.0, 0.0
    for _ in range(days):
        for soc_to, hours in ((0.3, 8.0), (1.0, 12.0)):
            soc_from = out[-1][1]
            net += (soc_to - soc_from) * capacity_ah + offset_a * hours
            time_s += hours * 3600.0
            out.append((time_s, soc_to, net))
    return out


@pytest.mark.parametrize("offset_c_rate", [0.0, 0.002, -0.002, 0.004])
def test_capacity_is_not_biased_by_a_current_offset(offset_c_rate: float) -> None:
    nominal, true_capacity = 100.0, 85.0
    learner = CapacityLearner(
        np.array([nominal]),
        prior_std=0.1,
        offset_prior_std_a=0.003 * nominal,
        min_swing=0.37,
        forgetting=0.95,
    )
    for time_s, soc, net_ah in synthetic_anchors(true_capacity, offset_c_rate * nominal, 7):
        learner.add_anchor(
            ONE,
            np.array([soc]),
            np.array([0.01]),
            net_ah,
            abs(net_ah),
            time_s,
            0.0005 * nominal,
            0.005,
        )
    assert learner.samples[0] == 14
    assert learner.capacity_ah[0] == pytest.approx(true_capacity, rel=0.01)
    assert learner.offset_a[0] == pytest.approx(offset_c_rate * nominal, abs=0.02)
    assert learner.capacity_std_ah[0] < 0.02 * true_capacity


def test_small_swings_and_single_anchors_give_no_sample() -> None:
    learner = CapacityLearner(
        np.array([100.0]), prior_std=0.1, offset_prior_std_a=0.3, min_swing=0.37, forgetting=0.95
    )
    assert not learner.add_anchor(
        ONE, np.array([1.0]), np.array([0.01]), 0.0, 0.0, 0.0, 0.05, 0.005
    )[0]
    # 30 % swing < 37 %: no sample, but it becomes the new anchor.
    assert not learner.add_anchor(
        ONE, np.array([0.7]), np.array([0.01]), -30.0, 30.0, 3600.0, 0.05, 0.005
    )[0]
    assert learner.capacity_ah[0] == 100.0
    assert learner.add_anchor(
        ONE, np.array([0.2]), np.array([0.01]), -75.0, 75.0, 7200.0, 0.05, 0.005
    )[0]
    assert learner.capacity_ah[0] < 100.0
