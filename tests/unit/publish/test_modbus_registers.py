"""The native register table: unique, non-overlapping, documented, and encoded exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bmsd.model.faults import FaultLevel, FaultState, LevelState
from bmsd.model.topology import Topology
from bmsd.protection.quantities import QUANTITY_BY_NAME
from bmsd.publish.modbus.registers import (
    FAULT_BITS,
    MODULE_ARRAYS,
    MODULE_BASE,
    NOT_AVAILABLE,
    OTHER_FAULT_BIT,
    REGISTERS,
    FaultFlags,
    RegType,
    check_fits,
    decode_value,
    encode_array,
    encode_value,
    fault_bit_of,
    mapped_addresses,
)

TOPOLOGY = Topology(
    strings=2,
    modules_per_string=3,
    cells_per_module=24,
    temps_per_module=8,
    cells_in_parallel=1,
    module_node_ids=(1, 2, 3, 4, 5, 6),
)


def test_names_unique_and_addresses_do_not_overlap() -> None:
    assert len({r.name for r in REGISTERS}) == len(REGISTERS)
    for space in ("input", "holding"):
        used: dict[int, str] = {}
        for register in (r for r in REGISTERS if r.space == space):
            for word in range(register.address, register.address + register.words):
                assert word not in used, f"{register.name} overlaps {used[word]} at {word}"
                used[word] = register.name
        if space == "input":
            assert max(used) < MODULE_BASE


def test_every_register_is_described_and_scaled_ones_have_units() -> None:
    for register in REGISTERS:
        assert register.description, register.name
        if register.scale != 1 or register.type == "float32":
            assert register.unit or register.name == "equivalent_full_cycles", register.name
    assert all(r.writable == (r.space == "holding") for r in REGISTERS)


def test_module_blocks_do_not_overlap_for_a_pack() -> None:
    addresses = mapped_addresses("input", TOPOLOGY)
    assert len(addresses) == len(set(addresses))
    cells = TOPOLOGY.cell_count + TOPOLOGY.temp_count
    assert len(addresses) == cells + sum(r.words for r in REGISTERS if r.space == "input")
    for array in MODULE_ARRAYS:
        assert array.count(TOPOLOGY) <= array.capacity


def test_packs_that_do_not_fit_are_named() -> None:
    too_many_temps = Topology(1, 1, 16, 65, 1, (1,))
    assert check_fits(too_many_temps) == "65 temperature values per module (room for 64)"
    assert check_fits(TOPOLOGY) is None


@pytest.mark.parametrize(
    ("type_", "scale", "value", "words"),
    [
        ("u16", 0.1, 614.34, [6143]),
        ("u16", 0.1, 614.35, [6144]),
        ("u16", 1, None, [0xFFFF]),
        ("u16", 1, math.nan, [0xFFFF]),
        ("u16", 1, 70000, [0xFFFE]),  # clamped below the marker
        ("u16", 1, -3, [0]),
        ("s16", 0.1, -12.3, [0x10000 - 123]),
        ("s16", 0.1, None, [0x8000]),
        ("s16", 1, -40000, [0x8001]),  # clamped above the marker
        ("u32", 0.1, 100000.0, [0x0F, 0x4240]),
        ("s32", 1, -2, [0xFFFF, 0xFFFE]),
        ("s32", 1, None, [0x8000, 0x0000]),
        ("float32", 1, 1.5, [0x3FC0, 0x0000]),
        ("float32", 1, None, [0x7FC0, 0x0000]),
    ],
)
def test_encoding_table(
    type_: RegType, scale: float, value: float | None, words: list[int]
) -> None:
    assert encode_value(type_, scale, value) == words


@pytest.mark.parametrize("type_", ["u16", "s16", "u32", "s32", "float32"])
def test_decode_inverts_encode(type_: RegType) -> None:
    for value in (0.0, 1.0, 123.4, 3276.6):
        decoded = decode_value(
            type_,
            0.1 if type_ != "float32" else 1,
            encode_value(type_, 0.1 if type_ != "float32" else 1, value),
        )
        assert decoded == pytest.approx(value, abs=0.051)
    assert decode_value(type_, 1, encode_value(type_, 1, None)) is None
    assert NOT_AVAILABLE[type_] > 0


def test_array_encoding_matches_scalar_encoding() -> None:
    values = np.array([3.3, -5.25, np.nan, 2.0, 70.0])
    valid = np.array([True, True, True, False, True])
    for type_ in ("u16", "s16"):
        got = encode_array(type_, 0.001 if type_ == "u16" else 0.1, values, valid).tolist()
        scale = 0.001 if type_ == "u16" else 0.1
        want = [
            encode_value(type_, scale, float(v) if ok else None)[0]
            for v, ok in zip(values, valid, strict=True)
        ]
        assert got == want


def test_fault_categories_name_real_quantities() -> None:
    for _bit, _label, quantities in FAULT_BITS:
        for quantity in quantities:
            assert quantity in QUANTITY_BY_NAME, quantity
    assert fault_bit_of("cell_voltage_max_v") == 0
    assert fault_bit_of("something_new") == OTHER_FAULT_BIT
    bits = [bit for bit, _, _ in FAULT_BITS]
    assert len(bits) == len(set(bits)) and max(bits) < 16


def test_fault_flags_by_level() -> None:
    levels = (
        LevelState("ov", FaultLevel.WARNING, active=True),
        LevelState("ov", FaultLevel.FATAL, active=False, latched=True),
        LevelState("comm", FaultLevel.INFO, active=True),
        LevelState("comm", FaultLevel.FATAL, active=True, latched=True),
        LevelState("uv", FaultLevel.WARNING, active=False),
    )
    flags = FaultFlags.of(FaultState(levels), {"ov": 0, "comm": 8, "uv": 1})
    assert flags == FaultFlags(info=1 << 8, warning=1 << 0, alarm=1 << 8, latched=1 | 1 << 8)
