"""fit-cell recovers known ECM parameters from a synthetic HPPC trace; the CLI commands work
on good CSV files and fail with a clear message (no traceback) on bad ones."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest

from bmsd.errors import BmsdError, ConfigError
from bmsd.estimation import EstimationConfig, Estimator, commands
from bmsd.estimation.fit import fit_cell, ocv_leave_one_out_v, ocv_table_error_v
from bmsd.estimation.trace import Trace, read_trace, write_trace
from bmsd.model.cell import CellModel
from bmsd.sim.cells import SimCellArray

CELLS_DIR = Path(__file__).resolve().parents[3] / "etc" / "cells"


def hppc_trace(model: CellModel, *, blocks: int = 9) -> Trace:
    """Synthetic HPPC on the simulator plant: full, pulses and 10 % steps with rests, to empty."""
    sim = SimCellArray(
        model, 1, capacity_spread_pct=0.0, resistance_spread_pct=0.0, initial_soc=1.0,
        soc_spread_pct=0.0, ambient_temp_c=25.0, seed=0,
    )  # fmt: skip
    c = model.info.capacity_ah
    plan: list[tuple[float, int]] = [(0.0, 1800)]
    for _ in range(blocks):
        plan += [(-c, 10), (0.0, 40), (0.75 * c, 10), (0.0, 40), (-0.5 * c, 720), (0.0, 1800)]
    plan += [(-0.5 * c, 700), (0.0, 1800)]
    times, currents, voltages = [], [], []
    t = 0.0
    rng = np.random.default_rng(0)
    for current, seconds in plan:
        for _ in range(seconds):
            sim.step(1.0, current)
            t += 1.0
            times.append(t)
            currents.append(current)
            voltages.append(float(sim.terminal_voltage_v()[0]) + rng.normal(0.0, 0.0005))
    n = len(times)
    return Trace(
        "synthetic", np.array(times), np.array(currents), np.array(voltages), np.full(n, 25.0)
    )


@pytest.fixture(scope="module")
def nmc() -> CellModel:
    # A cell without self-discharge and with unit efficiency: the charge balance is exact.
    import dataclasses

    from bmsd.model.cell import load_cell_file

    file = load_cell_file(CELLS_DIR / "nmc_100ah.toml")
    info = dataclasses.replace(
        file.cell, self_discharge_pct_per_month=0.0, coulombic_efficiency=1.0
    )
    return CellModel(dataclasses.replace(file, cell=info))


@pytest.fixture(scope="module")
def trace(nmc: CellModel) -> Trace:
    return hppc_trace(nmc)


def test_fit_recovers_r0_r1_tau_and_ocv(nmc: CellModel, trace: Trace) -> None:
    result = fit_cell(trace, rc_pairs=1, capacity_ah=nmc.info.capacity_ah)
    fitted = CellModel(result.cell_file)
    for soc in (0.3, 0.5, 0.7):
        assert float(fitted.r0_ohm(soc, 25.0)) == pytest.approx(
            float(nmc.r0_ohm(soc, 25.0)), rel=0.1
        )
        assert float(fitted.r1_ohm(soc, 25.0)) == pytest.approx(
            float(nmc.r1_ohm(soc, 25.0)), rel=0.25
        )
        ocv_error = float(fitted.ocv_v(soc, 25.0) - nmc.ocv_v(soc, 25.0))
        assert abs(ocv_error) < 0.01
    assert result.tau_s[0] == pytest.approx(float(nmc.tau1_s(0.5, 25.0)), rel=0.25)
    # The error is dominated by the last 10 % (steep OCV end between two rests).
    assert result.rmse_v < 0.025
    # The fit error travels in the cell file: the estimator's model error (docs/estimation.md).
    assert result.cell_file.cell.model_error_v == pytest.approx(result.rmse_v, abs=1e-6)
    assert Estimator(fitted, 1, 1, EstimationConfig()).model_error_v == pytest.approx(
        result.rmse_v, abs=1e-6
    )
    # So does the OCV table's own error at rests (leave-one-out), used for relaxed rests.
    # Without a slow segment each rest is predicted across a 20 % gap: a conservative figure.
    assert 0.0 < result.ocv_error_v < 0.025
    assert result.cell_file.cell.ocv_error_v == pytest.approx(result.ocv_error_v, abs=1e-6)
    estimator = Estimator(fitted, 1, 1, EstimationConfig())
    assert estimator.ocv_error_v == pytest.approx(result.ocv_error_v, abs=1e-6)


def test_leave_one_out_predicts_each_interior_rest_from_its_neighbours() -> None:
    soc = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    voltage = np.array([3.0, 3.5, 3.7, 3.9, 4.2])
    # 0.25 from 3.0 and 3.7: 3.35 (−0.15); 0.5 from 3.5 and 3.9: 3.7 (0); 0.75: 3.95 (+0.05).
    errors = ocv_leave_one_out_v(soc, voltage, soc)
    assert errors == pytest.approx([-0.15, 0.0, 0.05])


@pytest.mark.parametrize(
    ("errors_v", "sigma_v"),
    [
        ([], 0.0),
        ([0.001, -0.002], 0.0),  # fewer than 3: not known
        ([0.001, -0.002, 0.003], 1.4826 * 0.002),
        ([0.001, -0.002, 0.003, 0.5], 1.4826 * 0.0025),  # a steep end does not dominate
    ],
)
def test_ocv_table_error_is_a_robust_sigma(errors_v: list[float], sigma_v: float) -> None:
    assert ocv_table_error_v(np.array(errors_v)) == pytest.approx(sigma_v)


def test_fit_without_rests_is_a_clear_error() -> None:
    t = np.arange(1.0, 200.0)
    trace = Trace("norest", t, np.full(t.size, -10.0), np.full(t.size, 3.7), np.full(t.size, 25.0))
    with pytest.raises(BmsdError, match="rests"):
        fit_cell(trace)


def parser() -> tuple[argparse.ArgumentParser, dict[str, commands.Handler]]:
    root = argparse.ArgumentParser(prog="bmsd")
    sub = root.add_subparsers(dest="command", required=True)
    handlers = commands.register(sub)
    return root, handlers


def run(argv: list[str]) -> int:
    root, handlers = parser()
    args = root.parse_args(argv)
    return handlers[args.command](args)


def test_fit_cell_then_estimate_on_good_csv(tmp_path: Path, nmc: CellModel, trace: Trace) -> None:
    csv_path = tmp_path / "hppc.csv"
    write_trace(csv_path, trace)
    cell_path = tmp_path / "cell.toml"
    assert run(["fit-cell", str(csv_path), "-o", str(cell_path), "--rc", "2"]) == 0
    model = CellModel.load(cell_path)  # what fit-cell writes, the normal loader reads
    assert model.has_second_rc
    assert cell_path.read_text().startswith("# Cell file written by `bmsd fit-cell`")
    out = tmp_path / "soc.csv"
    assert run(["estimate", "--cell", str(cell_path), str(csv_path), "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "time_s,soc,soc_std"
    assert len(lines) == len(trace) + 1
    final_soc = float(lines[-1].split(",")[1])
    assert final_soc < 0.1  # the trace ends empty


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty file"),
        ("a,b,c\n1,2,3\n", "header"),
        ("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n1,x,3.7,25\n", "line 3"),
        ("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n0,1,3.7,25\n", "increase"),
        ("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n1,1,nan,25\n", "not finite"),
        ("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n1,1\n", "fields"),
        ("time_s,current_a,voltage_v,temp_c\n0,1,3700,25\n1,1,3.7,25\n", "implausible"),
        ("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n", "two data rows"),
        # Finite but absurd: these overflowed the estimator into a NaN SOC with exit 0.
        ("time_s,current_a,voltage_v,temp_c\n0,0,3.3,25\n1,1e308,3.29,25\n", "line 3"),
        ("time_s,current_a,voltage_v,temp_c\n0,0,3.3,25\n1,1e308,3.29,25\n", "current_a"),
        ("time_s,current_a,voltage_v,temp_c\n0,0,3.3,25\n1e300,-1,3.29,25\n", "time_s"),
        ("time_s,current_a,voltage_v,temp_c\n0,0,3.3,25\n1e7,-1,3.29,25\n", "jumps"),
        ("time_s,current_a,voltage_v,temp_c\n0,0,3.3,25\n1,-1,3.29,1e6\n", "temp_c"),
    ],
)
def test_bad_csv_is_a_config_error_naming_file_and_line(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_trace(path)
    text = str(info.value)
    assert str(path) in text and reason in text


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b"\xef\xbb\xbftime_s,current_a,voltage_v,temp_c\r\n0,0,3.3,25\r\n1,1,3.3,25\r\n"
    )
    assert len(read_trace(path)) == 2


def test_estimate_never_writes_a_non_finite_soc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backstop behind the trace bounds, for whatever else makes the filter diverge.
    from bmsd.estimation import commands

    def diverged(*_: object, **__: object) -> tuple[np.ndarray, np.ndarray]:
        return np.array([0.5, math.nan]), np.array([0.01, math.nan])

    monkeypatch.setattr(commands, "estimate_trace", diverged)
    path = tmp_path / "t.csv"
    path.write_text("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n1,1,3.7,25\n")
    out = tmp_path / "soc.csv"
    argv = ["estimate", "--cell", str(CELLS_DIR / "nmc_100ah.toml"), str(path), "-o", str(out)]
    with pytest.raises(BmsdError, match="not finite from time_s 1"):
        run(argv)
    assert not out.exists()


def test_temperature_may_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time_s,current_a,voltage_v,temp_c\n0,1,3.7,\n1,1,3.7,25\n")
    trace = read_trace(path)
    assert np.isnan(trace.temp_c[0]) and trace.temp_c[1] == 25.0


def test_cli_errors_exit_nonzero_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,current_a,voltage_v,temp_c\n0,1,3.7,25\n1,x,3.7,25\n")
    code = (
        "import sys, argparse\n"
        "from bmsd.errors import ConfigError, BmsdError\n"
        "from bmsd.estimation import commands\n"
        "p = argparse.ArgumentParser(prog='bmsd'); s = p.add_subparsers(dest='command')\n"
        "h = commands.register(s); a = p.parse_args(sys.argv[1:])\n"
        "try:\n    sys.exit(h[a.command](a))\n"
        "except ConfigError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n"
        "except BmsdError as e:\n    print(e, file=sys.stderr); sys.exit(1)\n"
    )
    for argv in (
        ["fit-cell", str(bad), "-o", str(tmp_path / "c.toml")],
        [
            "estimate",
            "--cell",
            str(CELLS_DIR / "nmc_100ah.toml"),
            str(bad),
            "-o",
            str(tmp_path / "o.csv"),
        ],
        [
            "estimate",
            "--cell",
            str(tmp_path / "missing.toml"),
            str(bad),
            "-o",
            str(tmp_path / "o.csv"),
        ],
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert done.stderr.strip()
