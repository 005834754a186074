"""The soak benchmark's pure parts: durations, the streaming RSS fit, histogram quantiles, the
load cycle and the parsing of a scrape (bench/soak.py; the run itself: tests/integration)."""

from __future__ import annotations

import dataclasses
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from tests_support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import soak


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        (" 2m ", 120.0),
    ],
)
def test_durations_take_s_m_h(text: str, seconds: float) -> None:
    assert soak.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1d", "-5m", "0", "1h30m", "ten"])
def test_bad_durations_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        soak.parse_duration(text)


def test_streaming_fit_matches_numpy_least_squares_and_its_standard_error() -> None:
    rng = random.Random(3)
    xs = [i / 360.0 for i in range(400)]  # 10 s samples, in hours
    ys = [60.0 + 0.8 * x + rng.gauss(0.0, 0.3) for x in xs]
    fit = soak.LinearFit()
    for x, y in zip(xs, ys, strict=True):
        fit.add(x, y)
    (slope, _), cov = np.polyfit(xs, ys, 1, cov="unscaled")
    residuals = np.asarray(ys) - np.polyval(np.polyfit(xs, ys, 1), xs)
    stderr = math.sqrt(float(residuals @ residuals) / (len(xs) - 2) * cov[0][0])
    assert fit.slope == pytest.approx(slope, rel=1e-9)
    assert fit.slope_stderr == pytest.approx(stderr, rel=1e-6)
    assert fit.n == 400


def test_fit_has_no_slope_before_two_points_nor_an_error_before_three() -> None:
    fit = soak.LinearFit()
    assert fit.slope is None and fit.slope_stderr is None
    fit.add(0.0, 1.0)
    assert fit.slope is None
    fit.add(1.0, 3.0)
    assert fit.slope == pytest.approx(2.0) and fit.slope_stderr is None
    fit.add(2.0, 5.0)
    assert fit.slope_stderr == pytest.approx(0.0)


BUCKETS = [(0.001, 50.0), (0.002, 90.0), (0.005, 99.0), (0.01, 100.0), (math.inf, 100.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.001),  # rank 50: the top of the first bucket
        (0.25, 0.0005),  # inside the first bucket, from 0
        (0.7, 0.0015),  # rank 70: half-way through (0.001, 0.002]
        (0.99, 0.005),
        (0.995, 0.0075),
        (1.0, 0.01),
    ],
)
def test_histogram_quantile_interpolates_as_prometheus(q: float, expected: float) -> None:
    assert soak.histogram_quantile(q, BUCKETS) == pytest.approx(expected)


def test_histogram_quantile_in_the_inf_bucket_gives_the_highest_bound_and_none_when_empty() -> None:
    overflow = [(0.1, 90.0), (2.0, 95.0), (math.inf, 100.0)]
    assert soak.histogram_quantile(0.99, overflow) == 2.0
    assert soak.histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert soak.histogram_quantile(0.99, []) is None


def test_bucket_difference_leaves_the_observations_after_the_warmup() -> None:
    warm = [(0.001, 10.0), (0.01, 20.0), (math.inf, 30.0)]
    end = [(0.001, 15.0), (0.01, 40.0), (math.inf, 60.0)]
    assert soak.bucket_difference(end, warm) == [(0.001, 5.0), (0.01, 20.0), (math.inf, 30.0)]
    assert soak.bucket_difference(end, []) == end


def test_load_cycle_charges_longer_than_it_discharges_and_joins_smoothly() -> None:
    points = soak.cycle_profile(600.0, 140.0, 120.0)
    times = [t for t, _ in points]
    assert times[0] == 0.0 and times[-1] == 600.0 and times == sorted(times)
    assert points[0][1] == points[-1][1] == 0.0  # CsvLoad(loop=True) repeats without a step
    assert max(i for _, i in points) == 140.0 and min(i for _, i in points) == -120.0
    grid = np.linspace(0.0, 600.0, 60_001)
    current = np.interp(grid, times, [i for _, i in points])
    charge_s = float(np.count_nonzero(current > 0)) / 100.0
    discharge_s = float(np.count_nonzero(current < 0)) / 100.0
    assert charge_s > discharge_s > 0.3 * 600.0


SCRAPE = """\
# TYPE bmsd_control_ticks_total counter
bmsd_control_ticks_total 1200.0
# TYPE bmsd_control_missed_ticks_total counter
bmsd_control_missed_ticks_total 3.0
# TYPE bmsd_control_tick_lateness_seconds histogram
bmsd_control_tick_lateness_seconds_bucket{le="0.001"} 1000.0
bmsd_control_tick_lateness_seconds_bucket{le="+Inf"} 1200.0
bmsd_control_tick_lateness_seconds_count 1200.0
bmsd_control_tick_lateness_seconds_sum 1.5
# TYPE bmsd_control_tick_duration_seconds histogram
bmsd_control_tick_duration_seconds_bucket{le="0.005"} 1100.0
bmsd_control_tick_duration_seconds_bucket{le="+Inf"} 1200.0
bmsd_control_tick_duration_seconds_count 1200.0
bmsd_control_tick_duration_seconds_sum 4.2
# TYPE process_cpu_seconds counter
process_cpu_seconds_total 37.5
# TYPE bmsd_control_tick_lateness_max_seconds gauge
bmsd_control_tick_lateness_max_seconds 0.35
# TYPE bmsd_fault_events_total counter
bmsd_fault_events_total{fault="control_loop_overrun",level="warning",event="set"} 2.0
bmsd_fault_events_total{fault="control_loop_overrun",level="warning",event="clear"} 2.0
# TYPE bmsd_fault_active gauge
bmsd_fault_active{fault="control_loop_overrun",level="warning"} 0.0
bmsd_fault_active{fault="module_comm_loss",level="warning"} 1.0
# TYPE bmsd_mode gauge
bmsd_mode{mode="closed"} 1.0
bmsd_mode{mode="fault"} 0.0
# TYPE bmsd_soc_ratio gauge
bmsd_soc_ratio 0.93
# TYPE bmsd_charge_current_limit_amperes gauge
bmsd_charge_current_limit_amperes 112.5
# TYPE bmsd_modbus_requests counter
bmsd_modbus_requests_total{function="read_input_registers"} 40.0
bmsd_modbus_requests_total{function="read_holding_registers"} 2.0
# TYPE bmsd_modbus_errors counter
bmsd_modbus_errors_total{function="read_input_registers",exception="illegal_data_address"} 1.0
# TYPE bmsd_inverter_frames_sent counter
bmsd_inverter_frames_sent_total{inverter="hybrid",frame="a"} 10.0
bmsd_inverter_frames_sent_total{inverter="hybrid",frame="b"} 5.0
"""


def test_a_scrape_gives_the_soak_figures() -> None:
    sample = soak.parse_metrics(SCRAPE)
    assert (sample.ticks, sample.missed_ticks) == (1200.0, 3.0)
    assert sample.lateness_buckets == [(0.001, 1000.0), (math.inf, 1200.0)]
    assert sample.lateness_max_s == 0.35
    assert sample.fault_sets == {"control_loop_overrun/warning": 2.0}
    assert sample.faults_active == ("module_comm_loss/warning",)
    assert (sample.mode, sample.soc, sample.ccl_a, sample.dcl_a) == ("closed", 0.93, 112.5, None)
    assert (sample.modbus_requests, sample.modbus_errors) == (42.0, 1.0)
    assert sample.modbus_errors_by == {"read_input_registers/illegal_data_address": 1.0}
    assert (sample.inverter_frames, sample.inverter_requests) == (15.0, 0.0)
    assert (sample.cpu_s, sample.tick_run_sum_s) == (37.5, 4.2)
    assert sample.tick_run_buckets == [(0.005, 1100.0), (math.inf, 1200.0)]


UNIT_TEXT = """\
[Service]
Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
Environment="GREETING=a b" PYTHONUNBUFFERED=0
Nice=-5
"""


def test_the_soak_runs_the_daemon_with_the_units_environment() -> None:
    # As systemd reads Environment=: assignments add up, a later one wins, quotes keep spaces.
    assert dict(soak.unit_environment(UNIT_TEXT)) == {
        "PYTHONUNBUFFERED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GREETING": "a b",
    }
    # An empty Environment= clears what came before.
    assert soak.unit_environment(UNIT_TEXT + "Environment=\nEnvironment=X=1\n") == (("X", "1"),)
    # The shipped unit's own lines are read (the soak measures the daemon as it is deployed).
    shipped = dict(soak.unit_environment())
    assert shipped["PYTHONUNBUFFERED"] == "1"
    assert shipped["PYTHONMALLOC"] == "malloc"  # Python's objects where the heap trim reaches
    # What systemd would not take is skipped, not passed on: an unbalanced quote, no name.
    assert soak.unit_environment('Environment="A=1\nEnvironment==x 2B=y C=3\n') == (("C", "3"),)


def test_cost_figures_are_taken_between_the_warm_up_and_the_last_sample(tmp_path: Path) -> None:
    base = soak.parse_metrics(SCRAPE)
    later = dataclasses.replace(
        base,
        cpu_s=base.cpu_s + 60.0,  # type: ignore[operator]
        tick_run_sum_s=base.tick_run_sum_s + 2.0,
        tick_run_buckets=[(0.005, 1100.0 + 990.0), (math.inf, 1200.0 + 1000.0)],
    )
    run = soak.Soak(soak.SoakOptions(duration_s=600.0), tmp_path)
    run._warm_sample, run._warm_elapsed_s = base, 300.0
    run._last, run._last_elapsed_s = later, 500.0
    run._figures()
    result = run.result
    assert result.cpu_after_warmup_percent == pytest.approx(30.0)  # 60 s of CPU in 200 s
    assert result.tick_run_mean_s == pytest.approx(0.002)  # 2 s over 1000 ticks
    # 990 of the 1000 ticks ran within 5 ms: the 99th percentile is that bucket's bound.
    assert result.tick_run_p99_s == pytest.approx(0.005)


def test_the_soak_docs_name_every_option_and_no_other() -> None:
    import re

    document = (ROOT / "docs" / "reliability.md").read_text()
    start = document.index("## 5. Soak")
    end = document.find("\n## ", start + 1)
    text = document[start : None if end < 0 else end]
    parser = soak.build_parser()
    options = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
    assert options - mentioned == set(), "options missing from docs/reliability.md (soak)"
    assert mentioned - options == set(), "docs/reliability.md (soak) names unknown options"


@pytest.mark.parametrize(
    ("changes", "unmet"),
    [
        ({}, []),
        ({"rss_growth_mib_per_h": 0.3, "rss_growth_stderr_mib_per_h": 0.2}, []),  # within noise
        ({"rss_growth_mib_per_h": 0.5, "rss_growth_stderr_mib_per_h": 0.2}, ["RSS grows"]),
        # The second half decides when it has samples: a heap that settled late is no leak...
        (
            {
                "rss_growth_mib_per_h": 0.5,
                "rss_growth_stderr_mib_per_h": 0.2,
                "rss_late_growth_mib_per_h": 0.0,
                "rss_late_growth_stderr_mib_per_h": 0.01,
                "rss_late_fit_samples": 150,
            },
            [],
        ),
        # ... and growth that goes on late is one, even if the whole-run slope hides it.
        (
            {
                "rss_growth_mib_per_h": 0.1,
                "rss_growth_stderr_mib_per_h": 0.2,
                "rss_late_growth_mib_per_h": 0.4,
                "rss_late_growth_stderr_mib_per_h": 0.1,
                "rss_late_fit_samples": 150,
            },
            ["RSS grows +0.40"],
        ),
        ({"missed_ticks": 4, "missed_ticks_after_warmup": 0}, []),  # start-up only
        ({"missed_ticks_after_warmup": 1}, ["1 ticks missed"]),
        ({"fault_sets": {"control_loop_overrun/warning": 3}}, []),
        ({"fault_sets": {"control_loop_overrun/fatal": 1}}, ["fatal faults"]),
    ],
)
def test_targets_judge_growth_by_its_standard_error_missed_ticks_and_fatal_faults(
    changes: dict[str, object], unmet: list[str]
) -> None:
    result = soak.SoakResult(rss_growth_mib_per_h=0.0, rss_growth_stderr_mib_per_h=0.1)
    for name, value in changes.items():
        setattr(result, name, value)
    found = result.unmet_targets()
    assert len(found) == len(unmet)
    for text, start in zip(found, unmet, strict=True):
        assert start in text
