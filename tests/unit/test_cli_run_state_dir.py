"""``bmsd run`` with a state.directory it cannot use: a clear error and exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("relative", "reason"),
    [("afile", "a file, not a directory"), ("afile/sub", "Not a directory")],
)
def test_an_unusable_state_directory_is_named_and_exits_2(
    tmp_path: Path, relative: str, reason: str
) -> None:
    (tmp_path / "afile").write_text("not a directory\n", encoding="utf-8")
    state_dir = tmp_path / relative
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmsd.cli",
            "run",
            "--config",
            str(ROOT / "etc" / "sim.toml"),
            "--set",
            f"state.directory='{state_dir}'",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,  # a guard against a hang, not an assertion on speed
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"state.directory {state_dir}" in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr
