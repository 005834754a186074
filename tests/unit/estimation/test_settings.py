"""[estimation] parses through bmsd.schema: defaults are valid, bad values are named."""

from __future__ import annotations

import dataclasses

import pytest

from bmsd.errors import ConfigError
from bmsd.estimation import EstimationConfig
from bmsd.schema import parse


def test_defaults_pass_their_own_checks() -> None:
    assert EstimationConfig().check() == []
    assert parse(EstimationConfig, {}, source="x.toml") == EstimationConfig()


def test_every_field_is_documented() -> None:
    for field in dataclasses.fields(EstimationConfig):
        assert field.metadata.get("doc"), field.name


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("voltage_noise_v", 15.0, "mV"),
        ("rest_time_s", -1.0, "negative"),
        ("capacity_temp_window_c", [40.0, 10.0], "below"),
        ("rls_forgetting", 0.1, "[0.5, 1]"),
        ("coulombic_efficiency", 1.2, "(0.5, 1]"),
        ("full_voltage_v", 0.5, "between 1 and 5"),
        ("nonsense", 1, "unknown key"),
    ],
)
def test_bad_values_are_reported_with_key(key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(EstimationConfig, {key: value}, source="bmsd.toml", prefix="estimation")
    text = str(info.value)
    assert f"estimation.{key}" in text and reason in text


def test_docs_list_every_config_key() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "estimation.md").read_text()
    for field in dataclasses.fields(EstimationConfig):
        assert f"`{field.name}`" in text, field.name
