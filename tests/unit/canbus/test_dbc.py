"""Every shipped DBC loads in strict mode, every message round-trips, slave ids leave room.

The DBC files are globbed, so a DBC added to ``dbc/`` is covered without touching this file.
Each message is encoded and decoded with its signals at their minimum, maximum and a mid value
(on the signal's own raster of scale and offset), and must come back within one LSB. The slave
protocol adds the node id (times the protocol's stride) to the frame id of every slave message;
the whole range for node ids 0 to 255 must stay clear of every other message of every DBC.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cantools
import cantools.database
import pytest

from bmsd.canbus.protocol import load_protocol

ROOT = Path(__file__).resolve().parents[3]
DBC_DIR = ROOT / "dbc"
DBC_FILES = sorted(DBC_DIR.glob("*.dbc"))
SLAVE_DBC = DBC_DIR / "bmsd_slave.dbc"
SLAVE_PROTOCOL = ROOT / "etc" / "protocols" / "bmsd-slave.toml"
NODE_IDS = range(256)
MAX_STANDARD_ID = 0x7FF
MAX_EXTENDED_ID = 0x1FFF_FFFF


def _load(path: Path) -> Any:
    return cantools.database.load_file(str(path), strict=True)


def _all_messages() -> list[tuple[str, Any]]:
    return [(path.name, message) for path in DBC_FILES for message in _load(path).messages]


MESSAGES = _all_messages()


def _raw_limits(signal: Any) -> tuple[int, int]:
    """The raw integer range the signal's bits can hold."""
    if signal.is_float:
        raise AssertionError("float signals need their own test")  # none shipped today
    if signal.is_signed:
        return -(1 << (signal.length - 1)), (1 << (signal.length - 1)) - 1
    return 0, (1 << signal.length) - 1


def _physical_limits(signal: Any) -> tuple[float, float]:
    """Physical min and max: the DBC range where given, else what the bits can hold."""
    raw_low, raw_high = _raw_limits(signal)
    ends = sorted((raw_low * signal.scale + signal.offset, raw_high * signal.scale + signal.offset))
    low = ends[0] if signal.minimum is None else max(ends[0], signal.minimum)
    high = ends[1] if signal.maximum is None else min(ends[1], signal.maximum)
    return low, high


def _on_raster(signal: Any, physical: float, rounding: Any) -> float:
    """The physical value nearest ``physical`` that the signal can carry exactly."""
    raw = rounding((physical - signal.offset) / signal.scale)
    return float(raw * signal.scale + signal.offset)


def _test_values(signal: Any) -> dict[str, float]:
    low, high = _physical_limits(signal)
    # Round inwards so the DBC's own range check (strict encode) still accepts the value.
    low_value = _on_raster(signal, low, math.ceil)
    if low_value < low:
        low_value += signal.scale
    high_value = _on_raster(signal, high, math.floor)
    if high_value > high:
        high_value -= signal.scale
    mid_value = _on_raster(signal, (low + high) / 2.0, round)
    return {"min": low_value, "max": high_value, "mid": mid_value}


def _signal_sets(message: Any) -> list[tuple[dict[str, Any], list[Any]]]:
    """(fixed multiplexer values, signals present) for each layout of the message."""
    if not message.is_multiplexed():
        return [({}, list(message.signals))]
    layouts = []
    for mux in (s for s in message.signals if s.is_multiplexer):
        for mux_id in sorted(
            {
                i
                for s in message.signals
                if s.multiplexer_signal == mux.name
                for i in s.multiplexer_ids
            }
        ):
            present = [
                s
                for s in message.signals
                if s.name != mux.name and (s.multiplexer_ids is None or mux_id in s.multiplexer_ids)
            ]
            layouts.append(({mux.name: mux_id}, present))
    return layouts


def test_there_are_dbc_files() -> None:
    assert SLAVE_DBC in DBC_FILES
    assert len(DBC_FILES) >= 3


@pytest.mark.parametrize("path", DBC_FILES, ids=lambda p: p.name)
def test_dbc_loads_in_strict_mode(path: Path) -> None:
    database = _load(path)
    assert database.messages, f"{path.name} has no messages"
    for message in database.messages:
        limit = MAX_EXTENDED_ID if message.is_extended_frame else MAX_STANDARD_ID
        assert 0 <= message.frame_id <= limit
        assert message.length <= 8, "bmsd speaks classic CAN only"


@pytest.mark.parametrize(
    ("dbc_name", "message"), MESSAGES, ids=[f"{d}:{m.name}" for d, m in MESSAGES]
)
@pytest.mark.parametrize("which", ["min", "max", "mid"])
def test_message_round_trip(dbc_name: str, message: Any, which: str) -> None:
    for fixed, signals in _signal_sets(message):
        values: dict[str, Any] = dict(fixed)
        for signal in signals:
            values[signal.name] = _test_values(signal)[which]
        data = message.encode(values, scaling=True, strict=True)
        assert len(data) == message.length
        decoded = message.decode(data, decode_choices=False, scaling=True)
        for signal in signals:
            assert decoded[signal.name] == pytest.approx(
                values[signal.name], abs=abs(signal.scale)
            ), f"{dbc_name}:{message.name}.{signal.name} at {which}"


def test_round_trip_values_span_the_range() -> None:
    # Guard the helper itself: min < mid < max for every multi-valued signal.
    for _dbc_name, message in MESSAGES:
        for signal in message.signals:
            values = _test_values(signal)
            assert values["min"] <= values["mid"] <= values["max"]
            if signal.length > 1:
                assert values["min"] < values["max"]


def _slave_stride() -> int:
    return load_protocol(SLAVE_PROTOCOL).mapping.modules.node_id_stride


def test_slave_frame_ids_leave_room_for_every_node_id() -> None:
    stride = _slave_stride()
    slave = _load(SLAVE_DBC)
    slave_keys = {(m.frame_id, m.is_extended_frame) for m in slave.messages}
    # Claimed frame ids: every other message once, every slave message once per node id.
    claimed: dict[tuple[int, bool], str] = {}
    for dbc_name, message in MESSAGES:
        if dbc_name.startswith("inverter_"):
            continue  # inverter profiles live on the inverter's own bus, one profile per bus
        key = (message.frame_id, message.is_extended_frame)
        is_slave = dbc_name == SLAVE_DBC.name and key in slave_keys
        offsets = [node * stride for node in NODE_IDS] if is_slave else [0]
        limit = MAX_EXTENDED_ID if message.is_extended_frame else MAX_STANDARD_ID
        for offset in offsets:
            frame_id = message.frame_id + offset
            assert frame_id <= limit, (
                f"{message.name} with node id {offset // stride} is beyond the id range"
            )
            id_key = (frame_id, message.is_extended_frame)
            owner = f"{dbc_name}:{message.name}+{offset // stride if is_slave else '-'}"
            assert id_key not in claimed, f"0x{frame_id:X}: {claimed[id_key]} and {owner}"
            claimed[id_key] = owner


def test_slave_protocol_messages_are_in_the_slave_dbc() -> None:
    # The node-id check above only means something if the slave messages are the ones the
    # protocol maps per module.
    modules = load_protocol(SLAVE_PROTOCOL).mapping.modules
    names = {m.name for m in _load(SLAVE_DBC).messages}
    per_module = [modules.cell_voltages.message, modules.temperatures.message]
    for optional in (modules.status, modules.balancing_feedback, modules.balancing_command):
        if optional is not None:
            per_module.append(optional.message)
    assert set(per_module) <= names
