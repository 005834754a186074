"""The shipped systemd unit: verified by systemd-analyze, hardened to the documented score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import ROOT

UNIT = ROOT / "systemd" / "bmsd.service"
MAX_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd; scripts/setup.sh does)",
)


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_verifies_clean(tmp_path: Path) -> None:
    # The unit names /opt/bmsd/current/venv/bin/bmsd; point that (as install.sh does with
    # PREFIX) at this environment's real bmsd command so verify can check it is executable.
    prefix = tmp_path / "opt" / "bmsd"
    (prefix / "current" / "venv" / "bin").mkdir(parents=True)
    bmsd = Path(sys.executable).parent / "bmsd"
    assert bmsd.exists(), f"no bmsd command next to {sys.executable}"
    (prefix / "current" / "venv" / "bin" / "bmsd").symlink_to(bmsd)
    unit = tmp_path / "bmsd.service"
    unit.write_text(UNIT.read_text().replace("/opt/bmsd/", f"{prefix}/"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def _exposure() -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for bmsd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_exposure_score_is_low_and_documented() -> None:
    score = _exposure()
    assert score <= MAX_EXPOSURE, f"exposure {score} above {MAX_EXPOSURE}"
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert f"exposure level **{score:.1f}**" in docs, "docs/operations.md states another score"


def test_service_contract() -> None:
    settings = _settings()
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "StateDirectory": ["bmsd"],
        "ConfigurationDirectory": ["bmsd"],
        "User": ["bmsd"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"],
        "AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
    }
    for key, value in expected.items():
        assert settings.get(key) == value, f"{key}={settings.get(key)}"
    families = set(settings["RestrictAddressFamilies"][0].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_CAN"}
    watchdog = settings["WatchdogSec"][0]
    assert re.fullmatch(r"\d+s", watchdog) and 2 <= int(watchdog[:-1]) <= 30
    assert "BMSD_DEBUG" not in UNIT.read_text(), "the debug stall hook must never be enabled"
