"""Load profiles: the shapes the simulated inverter asks for, and CSV files with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmsd.errors import ConfigError
from bmsd.sim.load import ConstantLoad, CsvLoad, EssDayCycle, LoadProfile


def integrate_ah(profile: LoadProfile, start_s: float, end_s: float, dt_s: float) -> float:
    times = np.arange(start_s, end_s, dt_s) + dt_s / 2.0
    return sum(profile.current_a(float(t)) for t in times) * dt_s / 3600.0


def test_constant_load() -> None:
    load: LoadProfile = ConstantLoad(-50.0)
    assert load.current_a(0.0) == load.current_a(1e6) == -50.0


def test_day_cycle_shape() -> None:
    day = EssDayCycle(charge_current_a=140.0, discharge_current_a=100.0)
    hour = 3600.0
    assert day.current_a(3 * hour) == 0.0  # night idle
    assert -31.0 < day.current_a(7.5 * hour) < -29.0  # morning: 30 % of discharge
    assert day.current_a(12.5 * hour) == pytest.approx(140.0)  # PV peak
    assert day.current_a(16.5 * hour) == 0.0
    assert day.current_a(19.5 * hour) == pytest.approx(-100.0)  # evening peak
    assert day.current_a(23 * hour) == 0.0
    assert day.current_a((24 + 12.5) * hour) == pytest.approx(140.0)  # repeats


def test_day_cycle_charge_structure_and_totals() -> None:
    day = EssDayCycle(charge_current_a=140.0, discharge_current_a=100.0)
    hour = 3600.0
    assert integrate_ah(day, 0, 6 * hour, 60.0) == 0.0
    assert integrate_ah(day, 6 * hour, 9 * hour, 60.0) < 0.0
    charged = integrate_ah(day, 9 * hour, 16 * hour, 60.0)
    assert charged == pytest.approx(day.charge_ah_per_cycle(), rel=1e-4)
    discharged = -integrate_ah(day, 16 * hour, 24 * hour, 60.0)
    assert discharged > 0.0
    total = integrate_ah(day, 0, 24 * hour, 60.0)
    expected = day.charge_ah_per_cycle() - day.discharge_ah_per_cycle()
    assert total == pytest.approx(expected, rel=1e-4)


def test_day_cycle_time_scale_compresses_the_day() -> None:
    real = EssDayCycle(charge_current_a=140.0, discharge_current_a=100.0)
    fast = EssDayCycle(charge_current_a=140.0, discharge_current_a=100.0, time_scale=144.0)
    assert fast.period_s == pytest.approx(600.0)
    for t in (0.0, 37.0, 250.0, 431.0, 599.0):
        assert fast.current_a(t) == pytest.approx(real.current_a(t * 144.0))
    assert fast.charge_ah_per_cycle() == pytest.approx(real.charge_ah_per_cycle() / 144.0)


def test_day_cycle_rejects_signed_currents() -> None:
    with pytest.raises(ValueError):
        EssDayCycle(charge_current_a=100.0, discharge_current_a=-100.0)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "load.csv"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_CSV = """# a test profile
time_s,current_a
0,0
10,100

20,-50
"""


def test_csv_interpolates_and_holds(tmp_path: Path) -> None:
    load = CsvLoad(write(tmp_path, GOOD_CSV))
    assert load.current_a(5.0) == pytest.approx(50.0)
    assert load.current_a(15.0) == pytest.approx(25.0)
    assert load.current_a(100.0) == pytest.approx(-50.0)
    assert load.current_a(-1.0) == pytest.approx(0.0)


def test_csv_loops(tmp_path: Path) -> None:
    load = CsvLoad(write(tmp_path, GOOD_CSV), loop=True)
    assert load.duration_s == 20.0
    assert load.current_a(25.0) == pytest.approx(50.0)
    assert load.current_a(45.0) == pytest.approx(50.0)


def test_bad_csv_names_every_line_and_reason(tmp_path: Path) -> None:
    text = "time_s,current_a\n0,1\nabc,2\n5,x\n3,1\n7\n8,inf\n"
    with pytest.raises(ConfigError) as caught:
        CsvLoad(write(tmp_path, text))
    issues = {issue.key: issue.reason for issue in caught.value.issues}
    assert "not a number" in issues["line 3"]
    assert "current_a" in issues["line 4"]
    assert "time_s" in issues["line 3"]
    assert "2 columns" in issues["line 6"]
    assert "finite" in issues["line 7"]
    assert len(issues) == 4
    # line 5 (t=3) is fine because line 4 was rejected; an out-of-order time is caught:
    with pytest.raises(ConfigError) as caught:
        CsvLoad(write(tmp_path, "time_s,current_a\n0,1\n5,2\n5,3\n"))
    assert caught.value.issues[0].key == "line 4"
    assert "not after" in caught.value.issues[0].reason
    assert caught.value.issues[0].file == str(tmp_path / "load.csv")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty file"),
        ("time,amps\n0,1\n", "expected header"),
        ("time_s,current_a\n", "no data rows"),
    ],
)
def test_csv_structure_errors(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CsvLoad(write(tmp_path, text))
    assert reason in str(caught.value)


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        CsvLoad(tmp_path / "nope.csv")
