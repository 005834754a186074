"""``bmsd check-config`` as a user runs it: a real process, its exit code, stdout and stderr.

Every shipped config under etc/ must pass; a broken config must exit 2 naming every problem;
``--set`` overrides given on the command line are applied and validated.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc"
SHIPPED = sorted(ETC.glob("*.toml"))


def check_config(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bmsd.cli", "check-config", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a guard against a hang, not an assertion on speed
        check=False,
    )


def _absolute_defaults() -> str:
    return f'"{ETC}/protection/diagnostics.toml", "{ETC}/protection/lfp.toml"'


def edited_sim_config(directory: Path, *edits: tuple[str, str]) -> Path:
    """etc/sim.toml with (pattern, replacement) edits, each of which must apply exactly once.

    The cell, protocol, fault table and limit files are pointed at etc/ by absolute path.
    """
    text = (ETC / "sim.toml").read_text(encoding="utf-8")
    edits = (
        (r'^cell_file = "', f'cell_file = "{ETC}/'),
        (r'^protocol = "', f'protocol = "{ETC}/'),
        (r'"protection/diagnostics\.toml", "protection/lfp\.toml"', _absolute_defaults()),
        (r'"limits/lfp\.toml"', f'"{ETC}/limits/lfp.toml"'),
        (r'^profile = "', f'profile = "{ETC}/'),
        *edits,
    )
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, count=0, flags=re.MULTILINE)
        assert count == 1, f"{pattern!r} matched {count} times in etc/sim.toml"
    path = directory / "broken.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_there_are_shipped_configs() -> None:
    assert {p.name for p in SHIPPED} >= {"sim.toml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_passes(path: Path) -> None:
    result = check_config(path.relative_to(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK\n")
    assert "cell file  " + str(ETC / "cells") in result.stdout  # relative to the config file
    assert re.search(r"^  node ids   \d", result.stdout, re.MULTILINE)
    assert result.stderr == ""


def test_three_problems_exit_2_and_are_all_named(tmp_path: Path) -> None:
    path = edited_sim_config(
        tmp_path,
        (r"^\[pack\]\n", "[pack]\ncell_count = 64\n"),  # unknown key
        (r"^tick_s = 0\.1", 'tick_s = "fast"'),  # wrong type
        # over-voltage info level below the under-voltage info level (2.90 V in lfp.toml)
        (r"\Z", "\n[protection.faults.cell_voltage_high.info]\nthreshold = 2.85\n"),
    )
    result = check_config(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "3 problem(s)" in result.stderr
    for key, reason in (
        ("pack.cell_count", "unknown key"),
        ("control.tick_s", "expected a number"),
        ("protection.faults.cell_voltage_high.info.threshold", "2.85 must lie above every"),
    ):
        assert f"{path}: {key}: {reason}" in result.stderr


def test_set_changes_the_summary() -> None:
    result = check_config(
        "etc/sim.toml",
        "--set",
        "control.tick_s=0.05",
        "--set",
        "pack.modules_per_string=2",
        "--set",
        "pack.module_node_ids=[7, 9]",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  tick       50 ms$", result.stdout, re.MULTILINE)
    assert "1 string(s) x 2 modules x 16 cells" in result.stdout
    assert re.search(r"^  node ids   7, 9$", result.stdout, re.MULTILINE)


def test_set_can_fix_a_broken_file(tmp_path: Path) -> None:
    path = edited_sim_config(tmp_path, (r"^tick_s = 0\.1", 'tick_s = "fast"'))
    assert check_config(path).returncode == 2
    result = check_config(path, "--set", "control.tick_s=0.2")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  tick       200 ms$", result.stdout, re.MULTILINE)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("control.tick_ms=50", "etc/sim.toml: control.tick_ms: unknown key"),
        ("control.tick_s=fast", "etc/sim.toml: control.tick_s: expected a number"),
        ("control.tick_s", "--set: control.tick_s: expected section.key=value"),
    ],
)
def test_bad_set_exits_2(override: str, expected: str) -> None:
    result = check_config("etc/sim.toml", "--set", override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stdout == ""


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = check_config(tmp_path / "absent.toml")
    assert result.returncode == 2
    assert f"{tmp_path / 'absent.toml'}: <top level>: file not found" in result.stderr


def test_a_timeout_the_switch_box_frame_cannot_carry_is_refused() -> None:
    # The command frame's timeout signal tops out at 2.55 s: a longer timeout would fail to
    # encode on every tick and the contactors would never close, found only on site.
    result = check_config(ETC / "sim.toml", "--set", "protection.contactors.command_timeout_s=3.0")
    assert result.returncode == 2
    assert "sim.toml: protection.contactors.command_timeout_s:" in result.stderr
    assert "2.55" in result.stderr
    fits = check_config(ETC / "sim.toml", "--set", "protection.contactors.command_timeout_s=2.5")
    assert fits.returncode == 0, fits.stderr
