"""docs/balancing.md names every [balancing] key, every strategy and the shipped warning."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from bmsd.balancing.settings import BalancingConfig, StrategyName

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "balancing.md").read_text(encoding="utf-8")


def test_every_key_and_strategy_is_documented() -> None:
    missing = [f.name for f in dataclasses.fields(BalancingConfig) if f"`{f.name}`" not in DOC]
    assert missing == []
    for strategy in typing.get_args(StrategyName):
        assert f"`{strategy}`" in DOC, strategy


def test_the_documented_warning_is_shipped() -> None:
    table = tomllib.loads((ROOT / "etc" / "protection" / "diagnostics.toml").read_text())
    assert table["balancing_feedback_mismatch"]["quantity"] == "balancing_mismatch_modules"
    assert "`balancing_feedback_mismatch`" in DOC
