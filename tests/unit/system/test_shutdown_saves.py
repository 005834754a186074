"""Shutdown saves (Daemon.save_estimates, Daemon._save_balancing): a state that cannot be
written is logged and the shutdown goes on; it used to escape as a traceback and skip the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from bmsd.app import Daemon


class _Unsaveable:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def save(self, path: Path) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ValueError("Out of range float values are not JSON compliant"), id="nan"),
        pytest.param(OSError(28, "No space left on device"), id="disk-full"),
    ],
)
def test_a_failed_shutdown_save_is_logged_not_raised(
    tmp_path: Path, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = SimpleNamespace(
        controller=SimpleNamespace(
            estimator=_Unsaveable(error), estimator_ready=True, balancer=_Unsaveable(error)
        ),
        estimates_path=tmp_path / "estimates.json",
    )
    with caplog.at_level(logging.ERROR):
        Daemon.save_estimates(daemon)  # type: ignore[arg-type]
        Daemon._save_balancing(daemon, tmp_path / "balancing.json")  # type: ignore[arg-type]
    messages = [record.getMessage() for record in caplog.records]
    assert any("cannot save the SOC/SOH state" in m for m in messages)
    assert any("cannot save the balancing state" in m for m in messages)
