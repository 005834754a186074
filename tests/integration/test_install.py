"""scripts/install.sh and scripts/uninstall.sh in a scratch root: nothing outside tmp_path.

PREFIX, CONFDIR, UNITDIR and BINDIR point into tmp_path, and the system user goes into a
scratch passwd/group/shadow (useradd --prefix), so the real /etc, /opt and accounts are never
touched; systemctl is not called for a unit directory other than /etc/systemd/system.
Each install builds a real virtual environment with pip (from pip's cache when warm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests_support import ROOT

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd (passwd package)"),
]


def _env(tmp_path: Path) -> dict[str, str]:
    accounts = tmp_path / "accounts"
    if not accounts.exists():
        (accounts / "etc").mkdir(parents=True)
        for name in ("passwd", "group", "shadow", "gshadow"):
            lines = [
                line
                for line in Path("/etc", name).read_text().splitlines()
                if line.startswith(("root:", "nogroup:", "nobody:"))
            ]
            (accounts / "etc" / name).write_text("\n".join(lines) + "\n")
    return {
        **os.environ,
        "PREFIX": str(tmp_path / "opt" / "bmsd"),
        "CONFDIR": str(tmp_path / "etc" / "bmsd"),
        "UNITDIR": str(tmp_path / "etc" / "systemd" / "system"),
        "BINDIR": str(tmp_path / "bin"),
        "STATEDIR": str(tmp_path / "var" / "lib" / "bmsd"),
        "ACCOUNTS_ROOT": str(accounts),
        "PYTHONPATH": "",
    }


def _run(script: str, tmp_path: Path, *args: str) -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / script), *args],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_install_upgrade_uninstall_keep_config_and_state(tmp_path: Path) -> None:
    out = _run("install.sh", tmp_path)
    passwd = (tmp_path / "accounts" / "etc" / "passwd").read_text()
    assert "\nbmsd:x:" in passwd and ":/usr/sbin/nologin" in passwd
    config = tmp_path / "etc" / "bmsd" / "bmsd.toml"
    assert config.read_text() == (ROOT / "etc" / "bmsd.toml").read_text()
    assert "adapt it to the pack before starting" in out
    assert "not enabled" in out  # no systemctl on a scratch unit directory
    current = (tmp_path / "opt" / "bmsd" / "current").resolve()
    unit = tmp_path / "etc" / "systemd" / "system" / "bmsd.service"
    assert f"ExecStart={tmp_path}/opt/bmsd/current/venv/bin/bmsd run --config {config}" in (
        unit.read_text()
    )
    bmsd = tmp_path / "bin" / "bmsd"
    checked = subprocess.run(
        [str(bmsd), "check-config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr  # the tables are found through the links
    assert "12 modules x 16 cells" in checked.stdout
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr

    # The operator's config and the daemon's state survive an upgrade.
    config.write_text(config.read_text() + "\n# commissioned 2026-11-24\n")
    edited = config.read_text()
    state = tmp_path / "var" / "lib" / "bmsd"
    state.mkdir(parents=True)
    (state / "latched.json").write_text('{"cell_voltage_high.fatal": 1}')
    out = _run("install.sh", tmp_path)
    assert "keeping the existing" in out
    assert config.read_text() == edited
    upgraded = (tmp_path / "opt" / "bmsd" / "current").resolve()
    assert upgraded != current and current.exists(), "the previous release is kept"
    assert (tmp_path / "etc" / "bmsd" / "protection").resolve() == (
        upgraded / "share" / "etc" / "protection"
    )

    out = _run("uninstall.sh", tmp_path)
    assert not (tmp_path / "opt" / "bmsd").exists() and not unit.exists() and not bmsd.exists()
    assert config.read_text() == edited
    assert (state / "latched.json").exists()
    assert "\nbmsd:x:" in (tmp_path / "accounts" / "etc" / "passwd").read_text()
    assert not (tmp_path / "etc" / "bmsd" / "protection").exists()

    _run("uninstall.sh", tmp_path, "--purge")
    assert not config.exists() and not state.exists()
    assert "\nbmsd:x:" not in (tmp_path / "accounts" / "etc" / "passwd").read_text()
