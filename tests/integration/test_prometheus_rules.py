"""The shipped alert rules load in promtool, their unit tests pass, and they use real metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests_support import ROOT

from bmsd.publish.inverter import metrics as inverter_metrics
from bmsd.publish.metrics import METRICS
from bmsd.publish.modbus import metrics as modbus_metrics

RULES = ROOT / "docs" / "prometheus" / "bmsd-rules.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "bmsd-rules.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: scripts/setup.sh")

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Families the custom collectors of the Modbus server and the inverter links yield, named in
# their source (counter families gain "_total" when served).
COLLECTED = {
    name
    for module in (inverter_metrics, modbus_metrics)
    for name in re.findall(r'"(bmsd_[a-z0-9_]+)"', Path(str(module.__file__)).read_text())
}


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def known_metric(name: str) -> bool:
    names = {spec.name for spec in METRICS}
    if name in COLLECTED or name.removesuffix("_total") in COLLECTED:
        return True
    return name in names or any(name.removesuffix(suffix) in names for suffix in HISTOGRAM_SUFFIXES)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", str(RULES), cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_uses_only_exported_metrics() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    required = {"severity"}
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert name in fired, f"{name} has no test case where it fires"
            assert required <= set(rule["labels"]), name
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
            assert {"summary", "description"} <= set(rule["annotations"]), name
            for metric in re.findall(r"\bbmsd_[a-z0-9_]+", rule["expr"]):
                assert known_metric(metric), f"{name} uses {metric}, which bmsd does not export"
