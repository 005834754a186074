"""Protocol files, the frame decoder and encoder, and frame ingestion.

Frames are built with cantools from the shipped DBCs (and, for the IVT current, by hand from
the sensor's documented byte layout), then decoded by :class:`FrameDecoder`; the readings must
say exactly what the frame said, mapped to the right module and cell. Broken protocol files
must fail at load time with a ConfigError that names the offending key.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import can
import pytest

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder, FrameEncoder
from bmsd.canbus.protocol import Protocol, load_protocol
from bmsd.canbus.units import Measured, quantity_of, unit_problem
from bmsd.errors import CanCodecError, ConfigError
from bmsd.model.readings import (
    BalancingFeedback,
    CellVoltageGroup,
    ContactorFeedback,
    ModuleStatus,
    Quantity,
    ScalarReading,
    SensorStatus,
    TemperatureGroup,
)
from bmsd.model.topology import Topology

ROOT = Path(__file__).resolve().parents[3]
PROTOCOL_FILE = ROOT / "etc" / "protocols" / "bmsd-slave.toml"
DBC_DIR = ROOT / "dbc"

NODE_IDS = (7, 42)  # module 0 has node id 7, module 1 node id 42


def topology(cells: int = 8, temps: int = 4, node_ids: tuple[int, ...] = NODE_IDS) -> Topology:
    return Topology(
        strings=1,
        modules_per_string=len(node_ids),
        cells_per_module=cells,
        temps_per_module=temps,
        cells_in_parallel=1,
        module_node_ids=node_ids,
    )


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(PROTOCOL_FILE)


def frame(
    protocol: Protocol, name: str, values: dict[str, Any], node_id: int | None = None
) -> tuple[int, bytes]:
    """Encode a message with cantools; other signals 0. Returns (frame id, payload)."""
    message = protocol.message(name)
    full = {signal.name: 0 for signal in message.signals}
    full.update(values)
    data = message.encode(full, scaling=True, strict=True)
    frame_id = message.frame_id
    if node_id is not None:
        frame_id += node_id * protocol.mapping.modules.node_id_stride
    return frame_id, bytes(data)


# -- protocol files --------------------------------------------------------------------------


def test_shipped_protocol_loads(protocol: Protocol) -> None:
    mapping = protocol.mapping
    assert mapping.modules.cell_voltages.message == "SLAVE_CELL_VOLTAGES"
    assert mapping.current_sensor.current.scale == pytest.approx(0.001)
    assert mapping.switchbox is not None
    # Every DBC of the protocol ended up in the one database.
    names = {message.name for message in protocol.database.messages}
    assert {"SLAVE_CELL_VOLTAGES", "IVT_Msg_Result_I", "SWITCHBOX_FEEDBACK"} <= names


def _variant(tmp_path: Path, edit: tuple[str, str] | None = None, *, copy_dbc: bool = True) -> Path:
    """A copy of the shipped protocol (and its DBCs) in tmp_path, with one text edit."""
    text = PROTOCOL_FILE.read_text()
    if edit is not None:
        old, new = edit
        assert old in text, f"test set-up: {old!r} not in the protocol file"
        text = text.replace(old, new, 1)
    (tmp_path / "protocols").mkdir()
    if copy_dbc:
        (tmp_path / "dbc").mkdir()
        for dbc in DBC_DIR.glob("*.dbc"):
            shutil.copy(dbc, tmp_path / "dbc" / dbc.name)
    path = tmp_path / "protocols" / "slave.toml"
    # The shipped file says ../../dbc/ (relative to etc/protocols/); here it is ../dbc/.
    path.write_text(text.replace("../../dbc/", "../dbc/"))
    return path


def _issue_keys(exc: ConfigError) -> list[str]:
    return [issue.key for issue in exc.issues]


@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        pytest.param(
            ("scale = 0.001                     # mA -> A", "scale = 0.0"),
            "current_sensor.current.scale",
            "between 1e-06 and 1e+06 in size (not 0)",
            id="current-scale-zero",  # the pack current would always read 0 A
        ),
        pytest.param(
            ("scale = 0.001                     # mV -> V", "scale = 1e300"),
            "current_sensor.pack_voltage.scale",
            "in size",
            id="voltage-scale-huge",
        ),
        pytest.param(
            ("scale = 1.0 ", "scale = -1e-9 "),
            "modules.cell_voltages.scale",
            "in size",
            id="cell-scale-tiny",
        ),
        pytest.param(
            ('"CellVoltage1", "CellVoltage2"]', '"CellVoltage0", "CellVoltage2"]'),
            "modules.cell_voltages.value_signals",
            "names a signal twice",
            id="value-signal-twice",
        ),
        pytest.param(
            ('"CellVoltage1", "CellVoltage2"]', '"CellVoltage1", "CellGroup"]'),
            "modules.cell_voltages.value_signals",
            "includes the group signal 'CellGroup'",
            id="group-signal-as-value",
        ),
        pytest.param(
            ("node_id_stride = 1", "node_id_stride = 1099511627776"),
            "modules.node_id_stride",
            "between 1 and 65536",
            id="stride-2-to-40",
        ),
        pytest.param(
            ("node_id_stride = 1", "node_id_stride = 1" + "0" * 400),
            "modules.node_id_stride",
            "out of range",
            id="stride-huge-int",
        ),
        # each measured signal's DBC unit against what it feeds and its scale
        pytest.param(
            (
                'message = "IVT_Msg_Result_I"\nsignal = "IVT_Result_I"\n',
                'message = "IVT_Msg_Result_U2"\nsignal = "IVT_Result_U2"\n',
            ),
            "current_sensor.current",
            "signal 'IVT_Result_U2' of 'IVT_Msg_Result_U2' is in 'mV', a voltage, not a current",
            id="current-from-a-voltage-signal",
        ),
        pytest.param(
            ("scale = 0.001                     # mA -> A", "scale = 1.0"),
            "current_sensor.current",
            "is in 'mA': scale must be 0.001 (or -0.001) to give A, not 1",
            id="milliamps-read-as-amps",  # 1000 times the current: every limit wrong
        ),
        pytest.param(
            (
                "scale = 1.0" + " " * 57 + "# DBC already in V",
                "scale = 1000.0",
            ),
            "modules.cell_voltages",
            "is in 'V': scale must be 1 (or -1) to give V, not 1000",
            id="cell-volts-read-as-millivolts",
        ),
    ],
)
def test_protocol_numbers_and_units_are_checked(
    tmp_path: Path, edit: tuple[str, str], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_protocol(_variant(tmp_path, edit))
    assert _issue_keys(caught.value) == [key], str(caught.value)
    assert reason in str(caught.value)


def test_a_signal_without_a_unit_cannot_be_judged(tmp_path: Path) -> None:
    edit = (
        'value_signals = ["Temperature0", "Temperature1", "Temperature2"]',
        'value_signals = ["Temperature0", "Temperature1", "AliveCounter"]',
    )
    load_protocol(_variant(tmp_path, edit))


def test_variant_helper_builds_a_loadable_copy(tmp_path: Path) -> None:
    assert load_protocol(_variant(tmp_path)).mapping.modules.node_id_stride == 1


@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        pytest.param(
            ('message = "SLAVE_CELL_VOLTAGES"', 'message = "SLAVE_CELL_VOLTS"'),
            "modules.cell_voltages",
            "no message 'SLAVE_CELL_VOLTS'",
            id="unknown-message",
        ),
        pytest.param(
            (
                'message = "SWITCHBOX_FEEDBACK"\nsignal = "BusVoltage"',
                'message = "NOPE"\nsignal = "BusVoltage"',
            ),
            "switchbox.bus_voltage",
            "no message 'NOPE'",
            id="unknown-message-signal-ref",
        ),
        pytest.param(
            ('"CellVoltage2"]', '"CellVoltage9"]'),
            "modules.cell_voltages",
            "has no signal 'CellVoltage9'",
            id="unknown-value-signal",
        ),
        pytest.param(
            ('signal = "IVT_Result_I"\n', 'signal = "IVT_Result_X"\n'),
            "current_sensor.current",
            "has no signal 'IVT_Result_X'",
            id="unknown-current-signal",
        ),
        pytest.param(
            ('signal = "IVT_Result_U1_Status"', 'signal = "Missing_Status"'),
            "current_sensor.error_signals[1]",
            "has no signal 'Missing_Status'",
            id="unknown-error-signal",
        ),
        pytest.param(
            (
                'mask_signal = "BalMask"\ngroup_size = 48\ntimeout',
                'mask_signal = "Mask"\ngroup_size = 48\ntimeout',
            ),
            "modules.balancing_command",
            "has no signal 'Mask'",
            id="unknown-command-signal",
        ),
        pytest.param(
            ('message = "SLAVE_STATUS"\n', ""),
            "modules.status.message",
            "",
            id="missing-message-key",
        ),
    ],
)
def test_protocol_names_must_exist(
    tmp_path: Path, edit: tuple[str, str], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_protocol(_variant(tmp_path, edit))
    assert key in _issue_keys(caught.value), str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("unit", "quantity", "scale", "fits"),
    [
        ("V", "voltage", 1.0, True),
        ("mV", "voltage", 0.001, True),
        (" MV ", "voltage", 0.001, True),  # DBC units are written every which way
        ("mA", "current", -0.001, True),  # a shunt mounted the other way round
        ("degC", "temperature", 1.0, True),
        ("°C", "temperature", 0.1, False),
        ("A", "voltage", 1.0, False),
        ("", "current", 123.0, True),
        ("furlong", "current", 1.0, True),
        ("V", None, 1.0, False),  # a % or Ah value cannot come from a voltage signal
    ],
)
def test_unit_problem(unit: str, quantity: Measured | None, scale: float, fits: bool) -> None:
    assert (unit_problem(unit, quantity, scale) is None) == fits


@pytest.mark.parametrize(
    ("unit", "scale", "fits"),
    [("mV", 1000.0, True), ("mV", 0.001, False), ("kA", 0.001, True), ("V", -1.0, True)],
)
def test_sending_scales_the_other_way(unit: str, scale: float, fits: bool) -> None:
    quantity = quantity_of(unit)
    assert quantity is not None
    assert (unit_problem(unit, quantity[0], scale, sending=True) is None) == fits


def test_missing_dbc_file_names_its_index(tmp_path: Path) -> None:
    path = _variant(tmp_path)
    (tmp_path / "dbc" / "ivt_s.dbc").unlink()
    with pytest.raises(ConfigError) as caught:
        load_protocol(path)
    assert _issue_keys(caught.value) == ["dbc[1]"]
    assert "file not found" in str(caught.value)
    assert "ivt_s.dbc" in str(caught.value)


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda text: text + "\nBO_ this is not a message\n", id="syntax"),
        pytest.param(
            # Strict mode: a signal beyond the end of its 8-byte message.
            lambda text: text.replace("AliveCounter : 56|8@1+", "AliveCounter : 60|8@1+", 1),
            id="signal-outside-message",
        ),
        pytest.param(
            # Strict mode: two signals overlapping.
            lambda text: text.replace("CellVoltage1 : 24|16@1+", "CellVoltage1 : 20|16@1+", 1),
            id="overlapping-signals",
        ),
    ],
)
def test_broken_dbc_names_its_index(tmp_path: Path, breakage: Any) -> None:
    path = _variant(tmp_path)
    dbc = tmp_path / "dbc" / "bmsd_slave.dbc"
    broken = breakage(dbc.read_text())
    assert broken != dbc.read_text()
    dbc.write_text(broken)
    with pytest.raises(ConfigError) as caught:
        load_protocol(path)
    assert _issue_keys(caught.value) == ["dbc[0]"]
    assert "cannot load DBC" in str(caught.value)


def test_missing_protocol_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_protocol(tmp_path / "nope.toml")


# -- decoding --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decoder(protocol: Protocol) -> FrameDecoder:
    return FrameDecoder(protocol, topology())


def decode_one(decoder: FrameDecoder, frame_id: int, data: bytes, at: float = 12.5) -> Any:
    result = decoder.decode(frame_id, False, data, at)
    assert result is not None
    name, readings = result
    assert len(readings) >= 1
    return name, readings


def test_cell_voltages_map_to_module_and_cell(protocol: Protocol, decoder: FrameDecoder) -> None:
    values = {"CellGroup": 1, "CellVoltage0": 3.301, "CellVoltage1": 3.302, "CellVoltage2": 3.303}
    frame_id, data = frame(protocol, "SLAVE_CELL_VOLTAGES", values, node_id=42)
    name, readings = decode_one(decoder, frame_id, data, at=12.5)
    assert name == "SLAVE_CELL_VOLTAGES"
    (reading,) = readings
    assert isinstance(reading, CellVoltageGroup)
    assert reading.module == 1  # node id 42 is the second module
    assert reading.first_cell == 3  # group 1 * 3 values per frame
    assert reading.voltages_v == pytest.approx((3.301, 3.302, 3.303), abs=1e-9)
    assert reading.received_at == 12.5


def test_last_cell_group_is_cut_to_the_module(protocol: Protocol) -> None:
    # 8 cells: group 2 carries cells 6 and 7; the frame's third value has no cell.
    decoder = FrameDecoder(protocol, topology(cells=8))
    values = {"CellGroup": 2, "CellVoltage0": 3.1, "CellVoltage1": 3.2, "CellVoltage2": 3.3}
    frame_id, data = frame(protocol, "SLAVE_CELL_VOLTAGES", values, node_id=7)
    _, (reading,) = decode_one(decoder, frame_id, data)
    assert isinstance(reading, CellVoltageGroup)
    assert (reading.module, reading.first_cell) == (0, 6)
    assert reading.voltages_v == pytest.approx((3.1, 3.2))


@pytest.mark.parametrize("group", [3, 84])
def test_cell_group_beyond_the_module_is_an_error(
    protocol: Protocol, decoder: FrameDecoder, group: int
) -> None:
    values = {"CellGroup": group, "CellVoltage0": 3.3, "CellVoltage1": 3.3, "CellVoltage2": 3.3}
    frame_id, data = frame(protocol, "SLAVE_CELL_VOLTAGES", values, node_id=7)
    with pytest.raises(CanCodecError, match="SLAVE_CELL_VOLTAGES"):
        decoder.decode(frame_id, False, data, 0.0)


def test_temperature_group_beyond_the_module_is_an_error(
    protocol: Protocol, decoder: FrameDecoder
) -> None:
    frame_id, data = frame(protocol, "SLAVE_TEMPERATURES", {"TempGroup": 2}, node_id=7)
    with pytest.raises(CanCodecError, match="SLAVE_TEMPERATURES"):
        decoder.decode(frame_id, False, data, 0.0)


def test_temperatures_signed(protocol: Protocol, decoder: FrameDecoder) -> None:
    values = {"TempGroup": 1, "Temperature0": -12.5, "Temperature1": 41.3, "Temperature2": 99.9}
    frame_id, data = frame(protocol, "SLAVE_TEMPERATURES", values, node_id=7)
    _, (reading,) = decode_one(decoder, frame_id, data)
    assert isinstance(reading, TemperatureGroup)
    assert (reading.module, reading.first_sensor) == (0, 3)
    assert reading.temps_c == pytest.approx((-12.5,))  # 4 sensors: group 1 holds only sensor 3


def test_module_status(protocol: Protocol, decoder: FrameDecoder) -> None:
    values = {"ErrorFlags": 0b1000_0001, "BoardTemperature": -3.2, "MeasurementRequest": 1}
    frame_id, data = frame(protocol, "SLAVE_STATUS", values, node_id=42)
    _, (reading,) = decode_one(decoder, frame_id, data)
    assert isinstance(reading, ModuleStatus)
    assert reading.module == 1
    assert reading.error_flags == 0b1000_0001
    assert reading.board_temp_c == pytest.approx(-3.2)
    assert reading.measurement_request is True


def test_balancing_feedback_mask_bits(protocol: Protocol) -> None:
    # 100 cells: group 2 covers cells 96..99, so only its 4 lowest bits mean anything.
    decoder = FrameDecoder(protocol, topology(cells=100))
    mask = (1 << 0) | (1 << 3) | (1 << 47)
    frame_id, data = frame(
        protocol, "SLAVE_BALANCING_FEEDBACK", {"BalGroup": 2, "BalMask": mask}, node_id=42
    )
    _, (reading,) = decode_one(decoder, frame_id, data)
    assert isinstance(reading, BalancingFeedback)
    assert (reading.module, reading.first_cell, reading.group_size) == (1, 96, 4)
    assert reading.mask == mask
    store = ReadingStore(topology(cells=100))
    store.apply(reading)
    assert list(store.balancing_feedback[1].nonzero()[0]) == [96, 99]
    assert not store.balancing_feedback[0].any()

    frame_id, data = frame(
        protocol, "SLAVE_BALANCING_FEEDBACK", {"BalGroup": 1, "BalMask": mask}, node_id=42
    )
    _, (reading,) = decode_one(decoder, frame_id, data)
    store.apply(reading)
    assert list(store.balancing_feedback[1].nonzero()[0]) == [48, 51, 95, 96, 99]


def test_balancing_feedback_group_beyond_cells_is_an_error(
    protocol: Protocol, decoder: FrameDecoder
) -> None:
    frame_id, data = frame(
        protocol, "SLAVE_BALANCING_FEEDBACK", {"BalGroup": 1, "BalMask": 1}, node_id=7
    )
    with pytest.raises(CanCodecError):
        decoder.decode(frame_id, False, data, 0.0)


def ivt_frame(frame_id: int, mux_id: int, value: int, status: int = 0, count: int = 3) -> bytes:
    """An IVT-S result frame by hand: mux id, status|counter, 32-bit big-endian signed value."""
    return bytes([mux_id, status | (count << 4)]) + value.to_bytes(4, "big", signed=True)


@pytest.mark.parametrize("current_ma", [0, 1, -1, 123_456, -123_456, 2_000_000, -2_147_483_648])
def test_ivt_current_big_endian_signed_milliamps(decoder: FrameDecoder, current_ma: int) -> None:
    name, readings = decode_one(decoder, 0x521, ivt_frame(0x521, 0, current_ma))
    assert name == "IVT_Msg_Result_I"
    scalars = [r for r in readings if isinstance(r, ScalarReading)]
    assert len(scalars) == 1
    assert scalars[0].quantity is Quantity.PACK_CURRENT_A
    assert scalars[0].value == pytest.approx(current_ma / 1000.0)
    status = [r for r in readings if isinstance(r, SensorStatus)]
    assert [(s.source, s.flags) for s in status] == [("IVT_Msg_Result_I", 0)]


def test_ivt_frame_from_cantools_matches_the_byte_layout(protocol: Protocol) -> None:
    _, data = frame(
        protocol, "IVT_Msg_Result_I", {"IVT_Result_I": -70_000, "IVT_Result_I_Status": 0b0100}
    )
    assert data == ivt_frame(0x521, 0, -70_000, status=0b0100, count=0)


@pytest.mark.parametrize("status", [0b0001, 0b0010, 0b0100, 0b1000, 0b1111])
def test_ivt_status_bits(decoder: FrameDecoder, status: int) -> None:
    _, readings = decode_one(decoder, 0x521, ivt_frame(0x521, 0, 5000, status=status))
    (reading,) = [r for r in readings if isinstance(r, SensorStatus)]
    assert reading.flags == status


def test_ivt_voltage_and_temperature(decoder: FrameDecoder) -> None:
    _, readings = decode_one(decoder, 0x522, ivt_frame(0x522, 1, 204_812, status=0b0010))
    by_type = {type(r): r for r in readings}
    assert by_type[ScalarReading].quantity is Quantity.PACK_VOLTAGE_V
    assert by_type[ScalarReading].value == pytest.approx(204.812)
    assert by_type[SensorStatus].source == "IVT_Msg_Result_U1"
    assert by_type[SensorStatus].flags == 0b0010
    _, (temp,) = decode_one(decoder, 0x525, ivt_frame(0x525, 4, -105))
    assert isinstance(temp, ScalarReading)
    assert temp.quantity is Quantity.SENSOR_TEMP_C
    assert temp.value == pytest.approx(-10.5)


@pytest.mark.parametrize(
    ("minus", "plus", "precharge"), [(0, 0, 0), (1, 0, 0), (1, 0, 1), (1, 1, 0), (0, 1, 1)]
)
def test_contactor_feedback_and_bus_voltage(
    protocol: Protocol, decoder: FrameDecoder, minus: int, plus: int, precharge: int
) -> None:
    values = {
        "ContactorMinusClosed": minus,
        "ContactorPlusClosed": plus,
        "PrechargeClosed": precharge,
        "BusVoltage": 812.3,
    }
    frame_id, data = frame(protocol, "SWITCHBOX_FEEDBACK", values)
    name, readings = decode_one(decoder, frame_id, data, at=3.0)
    assert name == "SWITCHBOX_FEEDBACK"
    feedback = [r for r in readings if isinstance(r, ContactorFeedback)]
    assert feedback == [ContactorFeedback(bool(minus), bool(plus), bool(precharge), 3.0)]
    (bus,) = [r for r in readings if isinstance(r, ScalarReading)]
    assert bus.quantity is Quantity.BUS_VOLTAGE_V
    assert bus.value == pytest.approx(812.3)


def test_unknown_ids_return_none(protocol: Protocol, decoder: FrameDecoder) -> None:
    assert decoder.decode(0x050, False, bytes(8), 0.0) is None
    assert decoder.decode(0x4FF, False, bytes(8), 0.0) is None  # no message in 0x400..0x4FF
    # The right id, but extended: a different frame.
    assert decoder.decode(0x521, True, ivt_frame(0x521, 0, 1), 0.0) is None
    # Commands of the master are not readings.
    frame_id, data = frame(protocol, "MASTER_BALANCING_COMMAND", {}, node_id=7)
    assert decoder.decode(frame_id, False, data, 0.0) is None
    assert decoder.decode(0xF0, False, bytes(8), 0.0) is None  # switch box command


def test_unconfigured_node_never_reads_as_a_configured_module(
    protocol: Protocol, decoder: FrameDecoder
) -> None:
    # Node 8 is not in the topology: its frames may be noticed, but never stored as cells.
    for name in ("SLAVE_CELL_VOLTAGES", "SLAVE_TEMPERATURES", "SLAVE_STATUS"):
        frame_id, data = frame(protocol, name, {}, node_id=8)
        result = decoder.decode(frame_id, False, data, 0.0)
        readings = [] if result is None else result[1]
        assert not any(
            isinstance(r, CellVoltageGroup | TemperatureGroup | ModuleStatus) for r in readings
        )


def _mapped_frames(protocol: Protocol) -> list[tuple[str, int, bytes]]:
    """One valid frame of every message the decoder maps (module messages from node 7)."""
    frames = []
    for name, values, node in (
        ("SLAVE_CELL_VOLTAGES", {"CellVoltage0": 3.3}, 7),
        ("SLAVE_TEMPERATURES", {"Temperature0": 25.0}, 7),
        ("SLAVE_STATUS", {}, 7),
        ("SLAVE_BALANCING_FEEDBACK", {}, 7),
        ("IVT_Msg_Result_I", {}, None),
        ("IVT_Msg_Result_U1", {}, None),
        ("IVT_Msg_Result_T", {}, None),
        ("SWITCHBOX_FEEDBACK", {}, None),
    ):
        frame_id, data = frame(protocol, name, values, node_id=node)
        frames.append((name, frame_id, data))
    return frames


def test_every_mapped_message_decodes(protocol: Protocol, decoder: FrameDecoder) -> None:
    names = []
    for name, frame_id, data in _mapped_frames(protocol):
        decoded_name, _ = decode_one(decoder, frame_id, data)
        assert decoded_name == name
        names.append(name)
    assert sorted(names) == list(decoder.message_names)


@pytest.mark.parametrize("keep", [0, 1, 5])
def test_truncated_frames_raise_never_half_a_reading(
    protocol: Protocol, decoder: FrameDecoder, keep: int
) -> None:
    for name, frame_id, data in _mapped_frames(protocol):
        with pytest.raises(CanCodecError, match=re.escape(name)):
            decoder.decode(frame_id, False, data[:keep], 0.0)


def test_frame_id_collision_is_rejected_at_build_time(protocol: Protocol) -> None:
    # Stride 256: cell voltages of node 1 (0x100 + 0x100) land on temperatures of node 0 (0x200).
    modules = dataclasses.replace(protocol.mapping.modules, node_id_stride=256)
    wide = dataclasses.replace(
        protocol, mapping=dataclasses.replace(protocol.mapping, modules=modules)
    )
    with pytest.raises(ConfigError) as caught:
        FrameDecoder(wide, topology(node_ids=(0, 1)))
    (issue,) = caught.value.issues
    assert (issue.file, issue.key) == (str(wide.path), "modules.node_id_stride")
    assert "0x200 is claimed by both" in issue.reason
    assert "of module 0 (node id 0) as modules.temperatures" in issue.reason
    assert "of module 1 (node id 1) as modules.cell_voltages" in issue.reason
    FrameDecoder(wide, topology(node_ids=(0,)))  # one module: no overlap, accepted


def test_duplicate_node_id_is_rejected_at_build_time(protocol: Protocol) -> None:
    with pytest.raises(ConfigError, match="claimed by both"):
        FrameDecoder(protocol, topology(node_ids=(5, 5)))


def test_an_id_beyond_11_bits_is_rejected_at_build_time(protocol: Protocol) -> None:
    modules = dataclasses.replace(protocol.mapping.modules, node_id_stride=0x100)
    wide = dataclasses.replace(
        protocol, mapping=dataclasses.replace(protocol.mapping, modules=modules)
    )
    with pytest.raises(ConfigError, match="beyond the largest 11-bit id"):
        FrameDecoder(wide, topology(node_ids=(9,)))


# -- encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minus", "plus", "precharge", "counter", "timeout_s"),
    [(False, False, False, 0, 0.5), (True, False, True, 7, 0.25), (True, True, False, 300, 2.55)],
)
def test_switchbox_command_round_trip(
    protocol: Protocol, minus: bool, plus: bool, precharge: bool, counter: int, timeout_s: float
) -> None:
    encoder = FrameEncoder(protocol, topology())
    message = encoder.switchbox_command(
        minus=minus, plus=plus, precharge=precharge, counter=counter, timeout_s=timeout_s
    )
    assert isinstance(message, can.Message)
    command = protocol.message("SWITCHBOX_COMMAND")
    assert message.arbitration_id == command.frame_id
    assert not message.is_extended_id
    decoded = command.decode(bytes(message.data), decode_choices=False)
    assert decoded["ContactorMinusCmd"] == int(minus)
    assert decoded["ContactorPlusCmd"] == int(plus)
    assert decoded["PrechargeCmd"] == int(precharge)
    assert decoded["CommandCounter"] == counter % 256
    assert decoded["CommandTimeout"] == pytest.approx(timeout_s)


def test_switchbox_command_out_of_range_timeout_is_an_error(protocol: Protocol) -> None:
    encoder = FrameEncoder(protocol, topology())
    with pytest.raises(CanCodecError, match="SWITCHBOX_COMMAND"):
        encoder.switchbox_command(minus=True, plus=True, precharge=False, counter=0, timeout_s=9.0)


@pytest.mark.parametrize("cells", [5, 48, 49, 100, 144])
def test_balancing_command_round_trip(protocol: Protocol, cells: int) -> None:
    topo = topology(cells=cells)
    encoder = FrameEncoder(protocol, topo)
    asked = [(k % 3 == 0) or k == cells - 1 for k in range(cells)]
    frames = encoder.balancing_command(1, asked, timeout_s=2.0)
    command = protocol.message("MASTER_BALANCING_COMMAND")
    assert len(frames) == -(-cells // 48)
    got = [False] * cells
    for message in frames:
        assert message.arbitration_id == command.frame_id + 42  # module 1 is node 42
        decoded = command.decode(bytes(message.data), decode_choices=False)
        assert decoded["BalTimeout"] == pytest.approx(2.0)
        first = int(decoded["BalGroup"]) * 48
        for k in range(48):
            if (int(decoded["BalMask"]) >> k) & 1:
                assert first + k < cells, "a bit beyond the module's cells"
                got[first + k] = True
    assert got == asked


def test_encoder_output_decodes_in_the_simulated_slave(protocol: Protocol) -> None:
    # The feedback a slave would send for a command decodes to the same cells.
    topo = topology(cells=60)
    encoder = FrameEncoder(protocol, topo)
    decoder = FrameDecoder(protocol, topo)
    asked = [k in (0, 47, 48, 59) for k in range(60)]
    store = ReadingStore(topo)
    for message in encoder.balancing_command(0, asked, timeout_s=1.0):
        decoded = protocol.message("MASTER_BALANCING_COMMAND").decode(bytes(message.data))
        frame_id, data = frame(
            protocol,
            "SLAVE_BALANCING_FEEDBACK",
            {"BalGroup": decoded["BalGroup"], "BalMask": decoded["BalMask"]},
            node_id=7,
        )
        _, readings = decode_one(decoder, frame_id, data)
        for reading in readings:
            store.apply(reading)
    assert list(store.balancing_feedback[0]) == asked


# -- ingest ----------------------------------------------------------------------------------


def _message(frame_id: int, data: bytes, extended: bool = False) -> can.Message:
    return can.Message(arbitration_id=frame_id, is_extended_id=extended, data=data)


def test_ingest_counts_and_drops(protocol: Protocol) -> None:
    topo = topology()
    store = ReadingStore(topo)
    stats = BusStats()
    ingest = Ingest(FrameDecoder(protocol, topo), store, stats)
    good_id, good = frame(
        protocol,
        "SLAVE_CELL_VOLTAGES",
        {"CellGroup": 0, "CellVoltage0": 3.25, "CellVoltage1": 3.26, "CellVoltage2": 3.27},
        node_id=7,
    )
    beyond_id, beyond = frame(protocol, "SLAVE_CELL_VOLTAGES", {"CellGroup": 9}, node_id=42)

    ingest.on_frame(_message(good_id, good), 1.0)
    ingest.on_frame(_message(0x521, ivt_frame(0x521, 0, -2500)), 1.0)
    ingest.on_frame(_message(0x521, ivt_frame(0x521, 0, -2600)), 1.1)
    ingest.on_frame(_message(0x7FF, bytes(8)), 1.2)  # unknown
    ingest.on_frame(_message(good_id, good, extended=True), 1.2)  # unknown (extended)
    ingest.on_frame(_message(good_id, good[:7]), 1.3)  # truncated
    ingest.on_frame(_message(beyond_id, beyond), 1.3)  # group beyond the module

    assert stats.unknown_frames == 2
    assert stats.decode_errors == 2
    assert "SLAVE_CELL_VOLTAGES" in stats.last_error
    assert stats.frames_by_message == {"SLAVE_CELL_VOLTAGES": 1, "IVT_Msg_Result_I": 2}
    # Good frames stored, the bad ones left nothing behind.
    assert list(store.cell_voltage_v[0, :3]) == pytest.approx([3.25, 3.26, 3.27])
    assert list(store.cell_voltage_at[0, :3]) == [1.0, 1.0, 1.0]
    assert store.module_seen_at[0] == 1.0
    assert store.module_seen_at[1] == float("-inf")
    assert store.scalar(Quantity.PACK_CURRENT_A) == (pytest.approx(-2.6), 1.1)


def test_unconfigured_node_frames_are_noticed_counted_and_length_checked(
    protocol: Protocol, decoder: FrameDecoder
) -> None:
    """A stranger's module frame is an UnexpectedModule reading (its signals are not decoded:
    a babbling stranger must stay cheap), a short one a decode error, both counted."""
    store = ReadingStore(topology())
    stats = BusStats()
    ingest = Ingest(decoder, store, stats)
    for name in ("SLAVE_CELL_VOLTAGES", "SLAVE_TEMPERATURES", "SLAVE_STATUS"):
        frame_id, data = frame(protocol, name, {}, node_id=9)
        ingest.on_frame(_message(frame_id, data), 2.0)
        ingest.on_frame(_message(frame_id, data[:3]), 2.1)
        with pytest.raises(CanCodecError, match="3 bytes"):
            decoder.decode(frame_id, False, data[:3], 2.1)
    assert stats.unexpected_module_frames == 3
    assert stats.decode_errors == 3
    assert stats.unknown_frames == 0
    assert store.unexpected_nodes == {9: 2.0}
    # A configured node's frames are not counted as a stranger's.
    frame_id, data = frame(protocol, "SLAVE_STATUS", {}, node_id=7)
    ingest.on_frame(_message(frame_id, data), 2.2)
    assert stats.unexpected_module_frames == 3


@pytest.mark.parametrize(
    ("scale", "offset", "fits"),
    [(1.0, -273.15, True), (1.0, 0.0, False), (0.1, -273.15, False)],
)
def test_a_kelvin_sensor_reads_as_celsius_only_through_the_offset(
    scale: float, offset: float, fits: bool
) -> None:
    assert (unit_problem("K", "temperature", scale, offset=offset) is None) == fits
