"""docs/can-profiles.md is current, and documents every frame and signal of every profile."""

from __future__ import annotations

from pathlib import Path

import cantools

from bmsd.publish.inverter.docs import ORDER, OUTPUT, render_can_profiles
from bmsd.publish.inverter.values import FIELDS

ROOT = Path(__file__).resolve().parents[3]


def test_can_profiles_doc_is_current() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == render_can_profiles(), (
        "docs/can-profiles.md is stale: run python -m bmsd.docs_gen"
    )


def test_every_frame_signal_and_field_is_documented() -> None:
    text = OUTPUT.read_text(encoding="utf-8")
    for name in ORDER:
        database = cantools.database.load_file(str(ROOT / "dbc" / f"inverter_{name}.dbc"))
        for message in database.messages:
            assert f"`{message.name}`" in text
            for signal in message.signals:
                assert f"`{signal.name}`" in text
    for field in FIELDS:
        assert f"`{field}`" in text
