"""docs/modbus.md is generated from the register tables and is current."""

from __future__ import annotations

from pathlib import Path

from bmsd.docs_gen import render_modbus_document
from bmsd.publish.modbus.registers import REGISTERS

ROOT = Path(__file__).resolve().parents[3]
DOCUMENT = ROOT / "docs" / "modbus.md"


def test_modbus_document_is_up_to_date() -> None:
    current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
    assert current == render_modbus_document(), (
        "docs/modbus.md is out of date; run `python -m bmsd.docs_gen`"
    )


def test_every_register_is_documented_at_its_address() -> None:
    text = render_modbus_document()
    for register in REGISTERS:
        address = (
            str(register.address)
            if register.words == 1
            else f"{register.address}–{register.address + register.words - 1}"
        )
        assert f"| {address} | `{register.name}` |" in text, register.name
