"""Cell files: the shipped ones load, bad ones are rejected with every problem named, and the
table look-ups interpolate, clamp and invert as the estimator and simulator expect."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsd.errors import ConfigError
from bmsd.model.cell import CellFile, CellModel, load_cell_file

CELLS_DIR = Path(__file__).resolve().parents[3] / "etc" / "cells"
LFP = CELLS_DIR / "lfp_280ah.toml"
NMC = CELLS_DIR / "nmc_100ah.toml"

GOOD_TOML = """
[cell]
name = "test"
chemistry = "NMC"
capacity_ah = 10.0
nominal_voltage_v = 3.6
min_voltage_v = 3.0
max_voltage_v = 4.2
coulombic_efficiency = 1.0
self_discharge_pct_per_month = 0.0
source = "made up for a test"

[ocv]
soc = [0.0, 0.5, 1.0]
temp_c = [0.0, 25.0]
voltage_v = [[3.0, 3.7, 4.1], [3.1, 3.8, 4.2]]

[resistance]
soc = [0.0, 1.0]
temp_c = [0.0, 25.0]
r0_ohm = [[0.004, 0.002], [0.002, 0.001]]
r1_ohm = [[0.001, 0.001], [0.001, 0.001]]
tau1_s = [[30.0, 30.0], [30.0, 30.0]]

[thermal]
heat_capacity_j_per_k = 200.0
thermal_resistance_k_per_w = 5.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.toml"
    path.write_text(text, encoding="utf-8")
    return path


def issues_by_key(error: ConfigError) -> dict[str, str]:
    return {issue.key: issue.reason for issue in error.issues}


@pytest.mark.parametrize("path", sorted(CELLS_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_cell_file_loads(path: Path) -> None:
    model = CellModel.load(path)
    info = model.info
    soc = np.linspace(0.0, 1.0, 101)
    ocv = model.ocv_v(soc, 25.0)
    # A full rested cell never sits above the charge cut-off, and the curve rises with SOC.
    assert np.all(np.diff(ocv) > 0.0)
    assert ocv[-1] <= info.max_voltage_v
    assert info.source.strip()
    # Resistance rises in the cold (the reason protection derates charging below 15 °C).
    assert model.r0_ohm(0.5, 0.0) > 2.0 * model.r0_ohm(0.5, 25.0)


def test_shipped_cells_have_the_intended_ratings() -> None:
    lfp, nmc = load_cell_file(LFP), load_cell_file(NMC)
    assert (lfp.cell.chemistry, lfp.cell.capacity_ah) == ("LFP", 280.0)
    assert (lfp.cell.min_voltage_v, lfp.cell.max_voltage_v) == (2.5, 3.65)
    assert (nmc.cell.chemistry, nmc.cell.capacity_ah) == ("NMC", 100.0)
    assert CellModel(lfp).r0_ohm(0.5, 25.0) == pytest.approx(0.25e-3)
    assert CellModel(nmc).r0_ohm(0.5, 25.0) == pytest.approx(0.6e-3)


def test_a_good_minimal_file_parses(tmp_path: Path) -> None:
    cell = load_cell_file(write(tmp_path, GOOD_TOML))
    assert cell.ocv.voltage_v[1] == (3.1, 3.8, 4.2)
    assert cell.resistance.r2_ohm is None


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    text = (
        GOOD_TOML.replace("capacity_ah = 10.0", 'capacity_ah = "ten"')  # wrong type
        .replace('source = "made up for a test"', 'source = "x"\ncolour = "blue"')  # unknown key
        .replace("[3.1, 3.8, 4.2]", "[3.1, 3.9, 3.8]")  # OCV row not increasing
        .replace("r0_ohm = [[0.004, 0.002], [0.002, 0.001]]", "r0_ohm = [[0.004], [0.002, 0.001]]")
    )
    with pytest.raises(ConfigError) as caught:
        load_cell_file(write(tmp_path, text))
    issues = issues_by_key(caught.value)
    assert "expected a number" in issues["cell.capacity_ah"]
    assert "unknown key" in issues["cell.colour"]
    assert "strictly increasing" in issues["ocv.voltage_v[1]"]
    assert "expected 2" in issues["resistance.r0_ohm[0]"]
    assert all(issue.file.endswith("cell.toml") for issue in caught.value.issues)
    assert len(caught.value.issues) == 4


def test_cross_field_rules(tmp_path: Path) -> None:
    text = (
        GOOD_TOML.replace("min_voltage_v = 3.0", "min_voltage_v = 4.3")
        .replace("coulombic_efficiency = 1.0", "coulombic_efficiency = 1.2")
        .replace("soc = [0.0, 0.5, 1.0]", "soc = [0.0, 0.6, 0.5]")
        .replace("temp_c = [0.0, 25.0]\nvoltage_v", "temp_c = [0.0]\nvoltage_v")
        .replace("tau1_s = [[30.0, 30.0], [30.0, 30.0]]", "tau1_s = [[30.0, 0.0], [30.0, 30.0]]")
        .replace("[thermal]", "r2_ohm = [[0.001, 0.001], [0.001, 0.001]]\n\n[thermal]")
    )
    with pytest.raises(ConfigError) as caught:
        load_cell_file(write(tmp_path, text))
    issues = issues_by_key(caught.value)
    assert "below max_voltage_v" in issues["cell.min_voltage_v"]
    assert "[0.5, 1]" in issues["cell.coulombic_efficiency"]
    assert "strictly increasing" in issues["ocv.soc"]
    assert "expected 1" in issues["ocv.voltage_v"]
    assert "positive" in issues["resistance.tau1_s[0][1]"]
    assert "together" in issues["resistance.tau2_s"]


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    text = GOOD_TOML.split("[thermal]")[0]
    with pytest.raises(ConfigError) as caught:
        load_cell_file(write(tmp_path, text))
    assert "missing required value" in issues_by_key(caught.value)["thermal"]


def test_two_rc_pairs_are_loaded(tmp_path: Path) -> None:
    text = GOOD_TOML.replace(
        "[thermal]",
        "r2_ohm = [[0.002, 0.002], [0.001, 0.001]]\ntau2_s = [[600.0, 600.0], [500.0, 500.0]]\n\n"
        "[thermal]",
    )
    model = CellModel(load_cell_file(write(tmp_path, text)))
    assert model.has_second_rc
    tau2 = model.tau2_s(0.5, 12.5)
    assert tau2 is not None
    assert float(tau2) == pytest.approx(550.0)


# --- look-ups --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lfp() -> CellModel:
    return CellModel.load(LFP)


@pytest.fixture(scope="module")
def nmc() -> CellModel:
    return CellModel.load(NMC)


def test_ocv_hits_the_table_nodes_and_blends_linearly_in_temperature(nmc: CellModel) -> None:
    table = nmc.file.ocv
    assert nmc.ocv_v(table.soc, 25.0) == pytest.approx(table.voltage_v[1])
    mid = nmc.ocv_v(table.soc, 12.5)
    assert mid == pytest.approx((np.array(table.voltage_v[0]) + table.voltage_v[1]) / 2.0)


def test_lookups_clamp_outside_the_grid(lfp: CellModel) -> None:
    table = lfp.file.ocv
    assert lfp.ocv_v(-0.2, 25.0) == pytest.approx(table.voltage_v[1][0])
    assert lfp.ocv_v(1.3, 25.0) == pytest.approx(table.voltage_v[1][-1])
    assert lfp.ocv_v(0.5, 80.0) == pytest.approx(lfp.ocv_v(0.5, 45.0))
    assert lfp.r0_ohm(0.5, -40.0) == pytest.approx(lfp.r0_ohm(0.5, -10.0))
    assert lfp.soc_from_ocv([2.0, 4.0], 25.0) == pytest.approx([0.0, 1.0])


def test_lookups_are_vectorised_over_a_whole_pack(lfp: CellModel) -> None:
    rng = np.random.default_rng(3)
    soc = rng.uniform(0.0, 1.0, 1536)
    temp_c = rng.uniform(-5.0, 50.0, 1536)
    for values in (
        lfp.ocv_v(soc, temp_c),
        lfp.r0_ohm(soc, temp_c),
        lfp.r1_ohm(soc, temp_c),
        lfp.tau1_s(soc, temp_c),
        lfp.docv_dsoc(soc, temp_c),
        lfp.soc_from_ocv(lfp.ocv_v(soc, temp_c), temp_c),
    ):
        assert values.shape == (1536,)
        assert np.all(np.isfinite(values))
    assert lfp.ocv_v(soc, 25.0)[7] == pytest.approx(float(lfp.ocv_v(soc[7], 25.0)))


@settings(max_examples=200, deadline=None)
@given(
    soc=st.floats(min_value=0.0, max_value=1.0),
    temp_c=st.floats(min_value=-20.0, max_value=60.0),
)
def test_soc_from_ocv_inverts_ocv(soc: float, temp_c: float) -> None:
    for model in (CellModel.load(LFP), CellModel.load(NMC)):
        voltage = model.ocv_v(soc, temp_c)
        assert float(model.soc_from_ocv(voltage, temp_c)) == pytest.approx(soc, abs=1e-9)


def test_docv_dsoc_matches_the_table_slope(lfp: CellModel, nmc: CellModel) -> None:
    # NMC mid-range slope is ~9 mV/%SOC (estimation.md §1.2): 0.9 V per unit SOC.
    assert float(nmc.docv_dsoc(0.5, 25.0)) == pytest.approx(0.929, abs=0.01)
    # On a node, the slope is the central difference of the neighbouring nodes.
    expected = (3.2710 - 3.2650) / 0.1
    assert float(lfp.docv_dsoc(0.55, 25.0)) == pytest.approx(expected)
    assert np.all(lfp.docv_dsoc(np.linspace(-0.1, 1.1, 50), 25.0) > 0.0)


def test_cell_file_is_frozen() -> None:
    cell = load_cell_file(LFP)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.cell.capacity_ah = 1.0  # type: ignore[misc]
    assert isinstance(cell, CellFile)


# Physically implausible values: (id, replacement of GOOD_TOML, key, fragment of the reason).
# Each broke the daemon at run time before it was refused here.
IMPLAUSIBLE = [
    (
        "capacity-denormal",
        ("capacity_ah = 10.0", "capacity_ah = 5e-324"),
        "cell.capacity_ah",
        "0.1",
    ),
    ("capacity-huge", ("capacity_ah = 10.0", "capacity_ah = 1e308"), "cell.capacity_ah", "10000"),
    (
        "capacity-huge-int",
        ("capacity_ah = 10.0", "capacity_ah = 1" + "0" * 400),
        "cell.capacity_ah",
        "out of range",
    ),
    (
        "efficiency-tiny",
        ("coulombic_efficiency = 1.0", "coulombic_efficiency = 5e-324"),
        "cell.coulombic_efficiency",
        "[0.5, 1]",
    ),
    (
        "ocv-soc-denormal-step",
        ("soc = [0.0, 0.5, 1.0]", "soc = [0.0, 5e-324, 1.0]"),
        "ocv.soc",
        "at least 0.0001 apart",
    ),
    (
        "ocv-temp-tiny-step",
        ("temp_c = [0.0, 25.0]\nvoltage_v", "temp_c = [0.0, 0.01]\nvoltage_v"),
        "ocv.temp_c",
        "at least 0.1 apart",
    ),
    (
        "resistance-soc-tiny-step",
        ("soc = [0.0, 1.0]", "soc = [0.0, 0.00001]"),
        "resistance.soc",
        "apart",
    ),
    (
        "ocv-below-window",
        ("[[3.0, 3.7, 4.1]", "[[2.7, 3.7, 4.1]"),
        "ocv.voltage_v[0][0]",
        "2.8..4.4 V",
    ),
    (
        "ocv-above-window",
        ("[3.1, 3.8, 4.2]]", "[3.1, 3.8, 4.5]]"),
        "ocv.voltage_v[1][2]",
        "outside the cell's window",
    ),
    (
        "r0-huge",
        ("r0_ohm = [[0.004,", "r0_ohm = [[1e300,"),
        "resistance.r0_ohm[0][0]",
        "outside 0..1",
    ),
    (
        "r1-over-1-ohm",
        ("r1_ohm = [[0.001,", "r1_ohm = [[1.5,"),
        "resistance.r1_ohm[0][0]",
        "outside 0..1",
    ),
    (
        "tau-tiny",
        ("tau1_s = [[30.0,", "tau1_s = [[5e-324,"),
        "resistance.tau1_s[0][0]",
        "outside 0.01..100000",
    ),
    (
        "tau-huge",
        ("tau1_s = [[30.0,", "tau1_s = [[1e9,"),
        "resistance.tau1_s[0][0]",
        "outside 0.01..100000",
    ),
    (
        "heat-capacity-tiny",
        ("heat_capacity_j_per_k = 200.0", "heat_capacity_j_per_k = 5e-324"),
        "thermal.heat_capacity_j_per_k",
        "between 1 and",
    ),
    (
        "thermal-resistance-huge",
        ("thermal_resistance_k_per_w = 5.0", "thermal_resistance_k_per_w = 1e300"),
        "thermal.thermal_resistance_k_per_w",
        "between 0.01 and 100",
    ),
]


@pytest.mark.parametrize(
    ("replace", "key", "fragment"),
    [pytest.param(r, k, f, id=i) for i, r, k, f in IMPLAUSIBLE],
)
def test_implausible_values_are_refused(
    tmp_path: Path, replace: tuple[str, str], key: str, fragment: str
) -> None:
    assert replace[0] in GOOD_TOML  # the replacement really changes the file
    with pytest.raises(ConfigError) as caught:
        load_cell_file(write(tmp_path, GOOD_TOML.replace(*replace, 1)))
    issues = issues_by_key(caught.value)
    assert key in issues, issues
    assert fragment in issues[key]
    assert len(caught.value.issues) == 1, caught.value.issues


@pytest.mark.parametrize(
    ("replace"),
    [
        ("capacity_ah = 10.0", "capacity_ah = 0.1"),
        ("capacity_ah = 10.0", "capacity_ah = 10000"),
        ("[[3.0, 3.7, 4.1]", "[[2.8, 3.7, 4.1]"),  # exactly at min_voltage_v - 0.2
        ("r0_ohm = [[0.004,", "r0_ohm = [[1.0,"),
        ("soc = [0.0, 0.5, 1.0]", "soc = [0.0, 0.0001, 1.0]"),
    ],
    ids=["capacity-min", "capacity-max", "ocv-at-margin", "r0-1-ohm", "soc-min-step"],
)
def test_values_at_the_bounds_are_accepted(tmp_path: Path, replace: tuple[str, str]) -> None:
    assert replace[0] in GOOD_TOML
    load_cell_file(write(tmp_path, GOOD_TOML.replace(*replace, 1)))


def test_the_config_bounds_a_capacity_override_as_the_cell_file_does() -> None:
    from bmsd.config import CELL_CAPACITY_RANGE_AH
    from bmsd.model.cell import CAPACITY_RANGE_AH

    assert CELL_CAPACITY_RANGE_AH == CAPACITY_RANGE_AH
