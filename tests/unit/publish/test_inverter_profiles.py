"""Every shipped inverter profile loads and agrees with its DBC; bad profiles are refused with
file, key and reason; the encoder follows the profile (constants, text, flags, invalid
markers, clamping, shortened frames, id offset)."""

from __future__ import annotations

import math
from pathlib import Path

import cantools
import pytest

from bmsd.errors import ConfigError
from bmsd.model.state import PackState
from bmsd.publish.inverter.link import ProfileEncoder
from bmsd.publish.inverter.profile import load_profile
from bmsd.publish.inverter.values import FIELDS, PackInfo, battery_values

ROOT = Path(__file__).resolve().parents[3]
PROFILES = sorted((ROOT / "etc" / "inverters").glob("*.toml"))


def test_all_profiles_are_shipped() -> None:
    names = {p.stem for p in PROFILES}
    assert {"pylontech_lv", "sma_si", "victron", "pylontech_hv", "TEMPLATE"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_loads_and_matches_its_dbc(path: Path) -> None:
    profile = load_profile(path)
    database = cantools.database.load_file(str(path.parent / profile.spec.dbc), strict=True)
    for name in profile.sent_frames():
        message = database.get_message_by_name(name)
        frame = profile.spec.frames[name]
        covered = set(frame.signals)
        if frame.text:
            covered |= {s.name for s in message.signals if s.name.startswith("Char")}
        limit = frame.length * 8 if frame.length else message.length * 8
        expected = {s.name for s in message.signals if s.start + s.length <= limit}
        assert covered >= expected, f"{name}: {expected - covered} without a source"
        for source in frame.signals.values():
            assert not source.field or source.field in FIELDS


def test_profile_ids_and_types_match_protocols_md() -> None:
    """The frame ids the issue names, with the id type the sources give."""
    expected = {
        "pylontech_lv": ({0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E}, False),
        "sma_si": ({0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F}, False),
        "victron": ({0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x370, 0x371, 0x372, 0x373}, False),
        "pylontech_hv": (
            {
                0x4210,
                0x4220,
                0x4230,
                0x4240,
                0x4250,
                0x4260,
                0x4270,
                0x4280,
                0x4290,
                0x7310,
                0x7320,
                0x7330,
                0x7340,
            },
            True,
        ),
    }
    for name, (ids, extended) in expected.items():
        profile = load_profile(ROOT / "etc" / "inverters" / f"{name}.toml")
        messages = [profile.message(f) for f in profile.sent_frames()]
        assert {m.frame_id for m in messages} == ids, name
        assert all(m.is_extended_frame is extended for m in messages), name


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = f'''
name = "bad"
title = "Bad"
dbc = "{ROOT / "dbc" / "inverter_pylontech_lv.dbc"}"
sources = "test"
'''


SOC_FRAME = '[frames.PYLON_LV_SOC.signals]\nSOC = "soc_pct"\nSOH = "soh_pct"\n'


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ("[frames.NOPE]\nsignals = {}\n", "frames.NOPE", "no message"),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = "soc_pct"\nSOHX = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOHX",
            "no signal",
        ),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = "soc_pct"\nSOH = "state_of_mind"\n',
            "frames.PYLON_LV_SOC.signals.SOH",
            "unknown battery field",
        ),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = "soc_pct"\n',
            "frames.PYLON_LV_SOC.signals",
            "no source for SOH",
        ),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = { raw = 70000 }\nSOH = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOC.raw",
            "does not fit",
        ),
        (
            '[frames.PYLON_LV_NAME]\ntext = "TOO LONG NAME"\n',
            "frames.PYLON_LV_NAME.text",
            "room for 8",
        ),
        (
            "[frames.PYLON_LV_SOC]\nlength = 3\n"
            '[frames.PYLON_LV_SOC.signals]\nSOC = "soc_pct"\nSOH = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOH",
            "cut by the first 3 bytes",
        ),
        (
            'trigger = "request"\n[frames.PYLON_LV_NAME]\ntext = "X"\n',
            "request",
            "needs a [request]",
        ),
        (
            "[frames.PYLON_LV_SOC.signals]\n"
            'SOC = { field = "soc_pct", value = 3 }\nSOH = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOC",
            "exactly one of",
        ),
        *(
            (
                'trigger = "request"\n'
                f'[request]\nmessage = "PYLON_LV_SOC"\nsignal = "SOC"\nanswers = {{ "{key}" = '
                '["PYLON_LV_SOC"] }\n' + SOC_FRAME,
                f"request.answers.{key}",
                reason,
            )
            for key, reason in [
                ("²", "decimal integers"),  # isdigit() but int() refuses it: crashed the link
                ("٣", "decimal integers"),  # a non-ASCII decimal digit
                ("9" * 5000, "decimal integers"),  # int() refuses over 4300 digits
                ("70000", "does not fit the request signal"),
            ]
        ),
        ("id_offset = 0x10000000000\n" + SOC_FRAME, "id_offset", "at most 0x1FFFFFFF"),
        ("id_offset = 0x700\n" + SOC_FRAME, "id_offset", "beyond the largest 11-bit id"),
        ("stale_after_s = 1e300\n" + SOC_FRAME, "stale_after_s", "at most 60 s"),
        ("min_spacing_s = 1e300\n" + SOC_FRAME, "min_spacing_s", "at most 1 s"),
        (
            "[frames.PYLON_LV_SOC]\nperiod_s = 5e-324\n" + SOC_FRAME,
            "frames.PYLON_LV_SOC.period_s",
            "between 0.01 and 60 s",
        ),
        (
            "[frames.PYLON_LV_SOC]\nperiod_s = 1e300\n" + SOC_FRAME,
            "frames.PYLON_LV_SOC.period_s",
            "between 0.01 and 60 s",
        ),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = { field = "soc_pct", scale = 1e300 }\n'
            'SOH = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOC.scale",
            "between 0.001 and 1000 in size",
        ),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = { field = "soc_pct", scale = 0.0 }\n'
            'SOH = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOC.scale",
            "between 0.001 and 1000 in size",
        ),
        (
            '[frames.PYLON_LV_SOC.signals]\nSOC = { field = "soc_pct", offset = -1e300 }\n'
            'SOH = "soh_pct"\n',
            "frames.PYLON_LV_SOC.signals.SOC.offset",
            "within ±100000",
        ),
        # a value into a signal of another quantity, or at a scale its unit refuses
        (
            '[frames.PYLON_LV_LIMITS.signals]\nChargeVoltageLimit = "charge_current_a"\n'
            'ChargeCurrentLimit = "charge_voltage_v"\nDischargeCurrentLimit = '
            '"discharge_current_a"\nDischargeVoltageLimit = "discharge_voltage_v"\n',
            "frames.PYLON_LV_LIMITS.signals.ChargeVoltageLimit",
            "is in 'V', a voltage, not a current (field 'charge_current_a')",
        ),
        (
            '[frames.PYLON_LV_MEASUREMENTS.signals]\nVoltage = "soc_pct"\n'
            'Current = "current_a"\nTemperature = "temp_c"\n',
            "frames.PYLON_LV_MEASUREMENTS.signals.Voltage",
            "is in 'V', a voltage, not this value (field 'soc_pct')",
        ),
        (
            '[frames.PYLON_LV_MEASUREMENTS.signals]\nVoltage = "voltage_v"\n'
            'Current = { field = "current_a", scale = 10.0 }\nTemperature = "temp_c"\n',
            "frames.PYLON_LV_MEASUREMENTS.signals.Current",
            "is in 'A': scale must be 1 (or -1) from A, not 10",
        ),
        (
            '[keepalive]\nmessage = "PYLON_LV_SOC"\ntimeout_s = 1e300\n' + SOC_FRAME,
            "keepalive.timeout_s",
            "at most 3600 s",
        ),
    ],
)
def test_bad_profile_names_file_key_and_reason(
    tmp_path: Path, body: str, key: str, reason: str
) -> None:
    path = _write(tmp_path, BASE + body)
    with pytest.raises(ConfigError) as error:
        load_profile(path)
    assert any(
        issue.file == str(path) and issue.key == key and reason in issue.reason
        for issue in error.value.issues
    ), error.value


def _decode(
    profile_name: str, frame: str, values: dict[str, float], **overrides: object
) -> dict[str, float]:
    profile = load_profile(
        ROOT / "etc" / "inverters" / f"{profile_name}.toml", dict(overrides) or None
    )
    encoder = ProfileEncoder(profile)
    message = encoder.encode(frame, values)
    decoded = profile.message(frame).decode(
        bytes(message.data).ljust(8, b"\0"), decode_choices=False
    )
    return {k: float(v) for k, v in decoded.items()}


def test_encoder_flags_invalid_markers_and_clamping(
    closed_state: tuple[PackState, PackInfo],
) -> None:
    state, info = closed_state
    values = battery_values(state, info)
    alarms = _decode("sma_si", "SMA_ALARMS", values)
    assert all(v == 2 for v in alarms.values()), alarms  # every condition "cleared"
    unknown = dict(values, soc_pct=math.nan, voltage_v=math.nan)
    profile = load_profile(ROOT / "etc" / "inverters" / "sma_si.toml")
    soc = ProfileEncoder(profile).encode("SMA_SOC", unknown)
    assert soc.data[0:2] == b"\xff\xff" and soc.data[4:6] == b"\xff\xff"
    meas = ProfileEncoder(profile).encode("SMA_MEASUREMENTS", unknown)
    assert meas.data[0:2] == b"\x00\x80"
    encoder = ProfileEncoder(profile)
    huge = encoder.encode("SMA_LIMITS", dict(values, charge_current_a=5000.0))
    assert int.from_bytes(huge.data[2:4], "little", signed=True) == 32767
    assert encoder.clamped == 1


def test_encoder_text_length_and_offset(closed_state: tuple[PackState, PackInfo]) -> None:
    state, info = closed_state
    values = battery_values(state, info)
    lv = load_profile(ROOT / "etc" / "inverters" / "pylontech_lv.toml")
    name = ProfileEncoder(lv).encode("PYLON_LV_NAME", values)
    assert bytes(name.data) == b"PYLON   "
    short = load_profile(
        ROOT / "etc" / "inverters" / "pylontech_lv.toml",
        {"frames": {"PYLON_LV_LIMITS": {"length": 6}}},
    )
    limits = ProfileEncoder(short).encode("PYLON_LV_LIMITS", values)
    assert limits.dlc == 6 and len(limits.data) == 6
    hv = load_profile(ROOT / "etc" / "inverters" / "pylontech_hv.toml", {"id_offset": 1})
    frame = ProfileEncoder(hv).encode("PYLON_HV_LIMITS", values)
    assert frame.arbitration_id == 0x4221 and frame.is_extended_id
    dcl_raw = int.from_bytes(frame.data[6:8], "little")
    assert dcl_raw == round(30000 - values["discharge_current_a"] * 10)


@pytest.mark.parametrize(
    "path", [p for p in PROFILES if p.stem != "TEMPLATE"], ids=lambda p: p.stem
)
def test_profile_name_is_its_file_stem(path: Path) -> None:
    assert load_profile(path).spec.name == path.stem


def test_config_overrides_swap_the_pylon_hv_current_limits(
    tmp_path: Path, closed_state: tuple[PackState, PackInfo]
) -> None:
    """A Growatt-style swap (protocols.md D.4) is a config choice, checked on the wire."""
    from bmsd.config import InverterConfig

    inverter = InverterConfig(
        profile="inverters/pylontech_hv.toml",
        bus="inverter",
        signal_fields={
            "PYLON_HV_LIMITS.MaxChargeCurrent": "discharge_current_a",
            "PYLON_HV_LIMITS.MaxDischargeCurrent": "charge_current_a",
        },
        signal_scales={"PYLON_HV_LIMITS.MaxDischargeCurrent": -1.0},
    )
    profile = load_profile(
        ROOT / "etc" / "inverters" / "pylontech_hv.toml", inverter.profile_overrides()
    )
    state, info = closed_state
    values = dict(battery_values(state, info), charge_current_a=12.5, discharge_current_a=40.0)
    frame = ProfileEncoder(profile).encode("PYLON_HV_LIMITS", values)
    assert int.from_bytes(frame.data[4:6], "little") == 30000 + 400  # DCL where CCL was
    assert int.from_bytes(frame.data[6:8], "little") == 30000 - 125  # CCL where DCL was


def test_a_sites_signal_scale_is_a_deliberate_re_unit() -> None:
    """Sol-Ark reads Pylon LV's pack voltage in 0.1 V (docs/can-profiles.md): the config's
    scale is taken, while the same scale written into a profile file is a unit slip."""
    from bmsd.config import InverterConfig

    path = ROOT / "etc" / "inverters" / "pylontech_lv.toml"
    sol_ark = InverterConfig(
        profile=str(path), bus="inverter", signal_scales={"PYLON_LV_MEASUREMENTS.Voltage": 0.1}
    )
    profile = load_profile(path, sol_ark.profile_overrides())
    voltage = profile.spec.frames["PYLON_LV_MEASUREMENTS"].signals["Voltage"]
    assert voltage.scale == 0.1
    # A site may re-unit a value, never send it as another quantity.
    wrong = InverterConfig(
        profile=str(path),
        bus="inverter",
        signal_scales={"PYLON_LV_MEASUREMENTS.Voltage": 0.1},
        signal_fields={"PYLON_LV_MEASUREMENTS.Voltage": "current_a"},
    )
    with pytest.raises(ConfigError, match="a voltage, not a current"):
        load_profile(path, wrong.profile_overrides())


@pytest.mark.parametrize(
    ("field", "offset", "fits"),
    [
        ("cell_temp_min_k", 0.0, True),  # as Victron's profile sends it
        ("cell_temp_min_c", 0.0, False),  # 273 K too cold on the wire
        ("cell_temp_min_c", 273.15, True),  # °C converted by the profile's offset
    ],
)
def test_celsius_and_kelvin_meet_only_through_the_offset(
    field: str, offset: float, fits: bool
) -> None:
    path = ROOT / "etc" / "inverters" / "victron.toml"
    overrides = {
        "frames": {
            "VICTRON_CELL_EXTREMES": {
                "signals": {"MinCellTemp": {"field": field, "offset": offset}}
            }
        }
    }
    if fits:
        load_profile(path, overrides)
    else:
        with pytest.raises(ConfigError, match=r"scale must be 1 and offset 273\.15"):
            load_profile(path, overrides)
