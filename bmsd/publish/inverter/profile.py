"""Inverter profile files: which DBC frames a profile sends, when, and from which battery value.

A profile (``etc/inverters/*.toml``, commented template ``etc/inverters/TEMPLATE.toml``) names a
DBC in ``dbc/`` and lists the frames to send with their period and, per signal, the battery
value (see :data:`bmsd.publish.inverter.values.FIELDS`) or a constant. It also states the
profile's quirks: the manufacturer string, extended ids and an id offset, the current sign,
the minimum spacing between frames, how old a PackState may be before the sender falls silent,
the keep-alive frame the inverter sends, and, for request-driven profiles (Pylontech HV), which
request answers with which frames. Adding an inverter is a DBC plus a profile file, no code.

Loading checks the profile against its DBC: every frame and signal exists, every value is a
known battery field whose unit the signal's DBC unit agrees with (:mod:`bmsd.canbus.units`),
constants are inside the signal's range, and text fits its signals.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cantools
import cantools.database

from bmsd.canbus.units import quantity_of, unit_problem
from bmsd.errors import ConfigError, ConfigIssue
from bmsd.schema import doc, doc_factory, must_be_positive, must_not_be_negative, parse, read_toml

CurrentSign = Literal["charge_positive", "discharge_positive"]

# Bounds on a profile's numbers; each refuses a value that was accepted and misbehaved.
# Multipliers convert units (0.1 V, -1 for a sign flip, 1000 for mA): 1e-3..1e3 in size covers
# every prefix step a profile needs, and refuses 1e300 (a 36 A limit went out as 3553.5 A).
SCALE_RANGE = (1e-3, 1e3)
OFFSET_MAX = 1e5  # DBC offsets live in the DBC; a profile offset is a small correction
# A period under 10 ms floods the bus (5e-324 s was accepted); over a minute every inverter's
# own timeout trips first.
PERIOD_RANGE_S = (0.01, 60.0)
MAX_MIN_SPACING_S = 1.0  # a longer gap would hold back every frame of the profile
# Limits older than this are not sent: the inverter's own timeout must then trip. A minute
# already lets it run on a stale current limit for that long.
MAX_STALE_AFTER_S = 60.0
MAX_KEEPALIVE_TIMEOUT_S = 3600.0  # the shipped maximum is 600 s (Victron)
MAX_ID_OFFSET = 0x1FFF_FFFF  # the widest (29-bit) CAN id; standard frames are checked at 11 bits
_MAX_ID = {False: 0x7FF, True: 0x1FFF_FFFF}  # by is_extended_frame


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Where one signal's value comes from: a battery field or a constant."""

    field: str = doc("Battery value (see docs/can-profiles.md, 'Battery values')", default="")
    value: float | None = doc("Constant physical value (in the DBC's unit)", default=None)
    raw: int | None = doc("Constant raw value (e.g. 0xFFFF, SMA's 'invalid')", default=None)
    scale: float = doc(
        "Multiplier applied to the field before encoding; 0.001 to 1000 in size (negative "
        "flips the sign)",
        default=1.0,
    )
    offset: float = doc("Added after scaling; within ±100000", default=0.0)
    true_raw: int | None = doc(
        "Flag fields: raw value when the flag is set (default 1)", default=None
    )
    false_raw: int | None = doc("Flag fields: raw value when clear (default 0)", default=None)
    invalid_raw: int | None = doc(
        "Raw value sent when the field is unknown (SMA: 0xFFFF unsigned, 0x8000 signed); "
        "default: the physical value 0",
        default=None,
    )

    def check(self) -> list[tuple[str, str]]:
        given = [bool(self.field), self.value is not None, self.raw is not None]
        if sum(given) != 1:
            return [("", "give exactly one of field, value, raw")]
        problems: list[tuple[str, str]] = []
        low, high = SCALE_RANGE
        if not low <= abs(self.scale) <= high:
            problems.append(("scale", f"must be between {low:g} and {high:g} in size"))
        if not abs(self.offset) <= OFFSET_MAX:
            problems.append(("offset", f"must be within ±{OFFSET_MAX:g}"))
        return problems


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """One frame the profile sends."""

    period_s: float = doc("Send period (periodic profiles); 0.01 to 60", unit="s", default=1.0)
    enabled: bool = doc("Send this frame (optional frames can be switched off)", default=True)
    length: int = doc("Send only the first N data bytes; 0: the DBC's length", default=0)
    text: str = doc(
        "ASCII text for Char0..Char7 signals ('{manufacturer}' is replaced)", default=""
    )
    signals: dict[str, SignalSpec] = doc_factory("Signal name -> source", dict)

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        low, high = PERIOD_RANGE_S
        if not low <= self.period_s <= high:
            problems.append(("period_s", f"must be between {low:g} and {high:g} s"))
        if not 0 <= self.length <= 64:
            problems.append(("length", "must be 0 to 64"))
        return problems


@dataclass(frozen=True, slots=True)
class KeepaliveSpec:
    """A frame the inverter sends regularly; its absence is supervised."""

    message: str = doc("DBC message (sent by the inverter)")
    timeout_s: float = doc("Age after which the keep-alive counts as lost; at most 3600", unit="s")
    any_id_type: bool = doc(
        "Accept it as a standard or an extended frame (some inverters send 0x305 extended)",
        default=False,
    )

    def check(self) -> list[tuple[str, str]]:
        if not 0 < self.timeout_s <= MAX_KEEPALIVE_TIMEOUT_S:
            return [("timeout_s", f"must be above 0 and at most {MAX_KEEPALIVE_TIMEOUT_S:g} s")]
        return []


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """Request-driven profiles: the inverter asks, the battery answers with a burst."""

    message: str = doc("DBC message of the inverter's request")
    signal: str = doc("Signal holding the request type")
    answers: dict[str, tuple[str, ...]] = doc("Request type (as a string) -> frames to answer")

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for key in self.answers:
            if not _is_request_type(key):
                problems.append((f"answers.{key}", "request types are decimal integers"))
        return problems


def _is_request_type(key: str) -> bool:
    """ASCII digits only (isdigit() also takes '²', which int() refuses), and few enough for
    int() (Python refuses over 4300 digits; no request signal is wider than 64 bits)."""
    return key.isascii() and key.isdecimal() and len(key) <= 20


@dataclass(frozen=True, slots=True)
class ForceChargeSpec:
    """Force-charge requests from SOC with hysteresis: set at or below on, clear at or above off."""

    level_1_on_pct: float = doc(
        "Request force charge I at or below this SOC", unit="%", default=5.0
    )
    level_1_off_pct: float = doc("Clear it at or above this SOC", unit="%", default=10.0)
    level_2_on_pct: float = doc(
        "Request force charge II at or below this SOC", unit="%", default=9.0
    )
    level_2_off_pct: float = doc("Clear it at or above this SOC", unit="%", default=13.0)

    def check(self) -> list[tuple[str, str]]:
        problems = must_not_be_negative(self, "level_1_on_pct", "level_2_on_pct")
        for level in (1, 2):
            on = getattr(self, f"level_{level}_on_pct")
            off = getattr(self, f"level_{level}_off_pct")
            if not on < off <= 100.0:
                problems.append((f"level_{level}_off_pct", "must lie above the on level, <= 100"))
        return problems


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A profile file as written."""

    name: str = doc("Short name (file stem), used in logs and metrics")
    title: str = doc("Human name of the protocol")
    dbc: str = doc("DBC file, relative to the profile file")
    sources: str = doc("Where the frame facts come from (protocols.md sections, documents)")
    trigger: Literal["periodic", "request"] = doc(
        "periodic: frames on their period; request: answer the inverter's requests",
        default="periodic",
    )
    manufacturer: str = doc(
        "Manufacturer string the inverter recognises the battery by", default=""
    )
    id_offset: int = doc(
        "Added to every sent frame id (Pylontech HV battery address); every id must stay "
        "within 11 bits (standard frames) or 29 bits (extended)",
        default=0,
    )
    current_sign: CurrentSign = doc(
        "Sign convention of the current sent", default="charge_positive"
    )
    min_spacing_s: float = doc(
        "Minimum time between two sent frames; at most 1", unit="s", default=0.0
    )
    stale_after_s: float = doc(
        "Fall silent when the newest PackState is older than this (the inverter's own "
        "timeout then trips); at most 60",
        unit="s",
        default=1.0,
    )
    frames: dict[str, FrameSpec] = doc_factory("DBC message name -> frame, in sending order", dict)
    keepalive: KeepaliveSpec | None = doc("Keep-alive the inverter sends", default=None)
    request: RequestSpec | None = doc("Request-driven profiles only", default=None)
    force_charge: ForceChargeSpec = doc_factory("Force-charge SOC thresholds", ForceChargeSpec)

    def check(self) -> list[tuple[str, str]]:
        problems = must_not_be_negative(self, "min_spacing_s", "id_offset")
        problems += must_be_positive(self, "stale_after_s")
        if self.min_spacing_s > MAX_MIN_SPACING_S:
            problems.append(("min_spacing_s", f"must be at most {MAX_MIN_SPACING_S:g} s"))
        if self.stale_after_s > MAX_STALE_AFTER_S:
            problems.append(("stale_after_s", f"must be at most {MAX_STALE_AFTER_S:g} s"))
        if self.id_offset > MAX_ID_OFFSET:
            problems.append(("id_offset", f"must be at most 0x{MAX_ID_OFFSET:X} (29 bits)"))
        if self.trigger == "request" and self.request is None:
            problems.append(("request", "a request-driven profile needs a [request] table"))
        if not self.frames:
            problems.append(("frames", "at least one frame is required"))
        return problems


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded profile: its spec and the DBC it was checked against."""

    spec: ProfileSpec
    path: Path
    database: Any  # cantools Database

    def message(self, name: str) -> Any:
        return self.database.get_message_by_name(name)

    def sent_frames(self) -> tuple[str, ...]:
        return tuple(name for name, frame in self.spec.frames.items() if frame.enabled)


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """Shorthand: ``Signal = "field"`` is ``{field = "field"}``, a number is ``{value = n}``."""
    frames = raw.get("frames")
    if not isinstance(frames, dict):
        return raw
    out_frames: dict[str, Any] = {}
    for name, frame in frames.items():
        if isinstance(frame, dict) and isinstance(frame.get("signals"), dict):
            signals = {}
            for signal, source in frame["signals"].items():
                if isinstance(source, str):
                    source = {"field": source}
                elif isinstance(source, (int, float)) and not isinstance(source, bool):
                    source = {"value": source}
                signals[signal] = source
            frame = {**frame, "signals": signals}
        out_frames[name] = frame
    return {**raw, "frames": out_frames}


def load_profile(path: Path, overrides: dict[str, Any] | None = None) -> Profile:
    """Read, validate and check a profile file against its DBC; ConfigError names each problem.

    ``overrides`` is merged over the file first (a config's choices where sources conflict)."""
    raw = _normalise(read_toml(path))
    if overrides:
        from bmsd.schema import deep_merge

        raw = deep_merge(raw, _normalise(overrides))
    spec = parse(ProfileSpec, raw, source=str(path))
    dbc_path = (path.parent / spec.dbc).resolve()
    try:
        database = cantools.database.load_file(str(dbc_path), strict=True)
    except Exception as exc:  # cantools raises many parser error types
        raise ConfigError(
            [ConfigIssue(str(path), "dbc", f"cannot load {dbc_path}: {exc}")]
        ) from exc
    # A scale the site's config sets is a deliberate re-unit (Sol-Ark reads the pack voltage in
    # 0.1 V from a signal the DBC gives in V): judged by quantity, not against the DBC's unit.
    site_scales = {
        (frame, signal)
        for frame, table in (overrides or {}).get("frames", {}).items()
        for signal, source in table.get("signals", {}).items()
        if isinstance(source, dict) and "scale" in source
    }
    issues = [
        ConfigIssue(str(path), key, reason)
        for key, reason in check_against_dbc(spec, database, site_scales)
    ]
    if issues:
        raise ConfigError(issues)
    return Profile(spec, path, database)


def check_against_dbc(
    spec: ProfileSpec, database: Any, site_scales: Set[tuple[str, str]] = frozenset()
) -> list[tuple[str, str]]:
    """(key, reason) for every way the profile disagrees with its DBC.

    ``site_scales``: (frame, signal) whose scale a site set on purpose; their unit is checked
    for the quantity only."""
    from bmsd.publish.inverter.values import FIELDS

    problems: list[tuple[str, str]] = []
    names = {message.name: message for message in database.messages}

    def need(key: str, name: str) -> Any:
        message = names.get(name)
        if message is None:
            problems.append((key, f"no message {name!r} in the DBC"))
        return message

    for name, frame in spec.frames.items():
        message = need(f"frames.{name}", name)
        if message is None:
            continue
        if frame.enabled and spec.id_offset <= MAX_ID_OFFSET:
            frame_id = message.frame_id + spec.id_offset
            max_id = _MAX_ID[bool(message.is_extended_frame)]
            if frame_id > max_id:
                problems.append(
                    (
                        "id_offset",
                        f"{name}'s id 0x{message.frame_id:X} + {spec.id_offset} = 0x{frame_id:X} "
                        f"is beyond the largest {'29' if max_id > 0x7FF else '11'}-bit id "
                        f"0x{max_id:X}",
                    )
                )
        if frame.length and frame.length > message.length:
            problems.append((f"frames.{name}.length", f"longer than the DBC's {message.length}"))
        signals = {signal.name: signal for signal in message.signals}
        if frame.text:
            text = frame.text.replace("{manufacturer}", spec.manufacturer)
            chars = [s for s in signals if s.startswith("Char")]
            if len(text) > len(chars):
                problems.append(
                    (f"frames.{name}.text", f"{len(text)} characters, room for {len(chars)}")
                )
            if not text.isascii():
                problems.append((f"frames.{name}.text", "must be ASCII"))
        for signal_name, source in frame.signals.items():
            key = f"frames.{name}.signals.{signal_name}"
            signal = signals.get(signal_name)
            if signal is None:
                problems.append((key, f"no signal {signal_name!r} in message {name}"))
                continue
            # A signal wholly beyond a shortened frame is simply not sent; one cut in two is
            # an error (half a value on the wire).
            if frame.length and signal.start < frame.length * 8 < signal.start + signal.length:
                problems.append((key, f"is cut by the first {frame.length} bytes sent"))
            if source.field and source.field not in FIELDS:
                problems.append((key, f"unknown battery field {source.field!r}"))
            elif source.field and FIELDS[source.field].unit:
                deliberate = (name, signal_name) in site_scales
                problem = _unit_problem(
                    FIELDS[source.field].unit,
                    signal,
                    None if deliberate else source.scale,
                    source.offset,
                )
                if problem is not None:
                    problems.append((key, f"{problem} (field {source.field!r})"))
            for label, raw_value in (
                ("raw", source.raw),
                ("true_raw", source.true_raw),
                ("false_raw", source.false_raw),
                ("invalid_raw", source.invalid_raw),
            ):
                if raw_value is not None and not _raw_fits(signal, raw_value):
                    problems.append((f"{key}.{label}", f"{raw_value} does not fit the signal"))
            if source.value is not None:
                low, high = signal_range(signal)
                if not low <= source.value <= high:
                    problems.append(
                        (f"{key}.value", f"outside the signal's range {low:g}..{high:g}")
                    )
        unset = [
            s.name
            for s in message.signals
            if s.name not in frame.signals
            and not (frame.text and s.name.startswith("Char"))
            and (not frame.length or s.start + s.length <= frame.length * 8)
        ]
        if unset:
            problems.append((f"frames.{name}.signals", f"no source for {', '.join(unset)}"))
    if spec.keepalive is not None:
        need("keepalive.message", spec.keepalive.message)
    if spec.request is not None:
        message = need("request.message", spec.request.message)
        request_signal = None
        if message is not None:
            request_signal = next(
                (s for s in message.signals if s.name == spec.request.signal), None
            )
            if request_signal is None:
                problems.append(("request.signal", f"no signal {spec.request.signal!r}"))
        for request_type in spec.request.answers:
            if (
                request_signal is not None
                and _is_request_type(request_type)
                and not _raw_fits(request_signal, int(request_type))
            ):
                problems.append(
                    (f"request.answers.{request_type}", "does not fit the request signal")
                )
        for request_type, answer in spec.request.answers.items():
            for frame_name in answer:
                if frame_name not in spec.frames:
                    problems.append(
                        (
                            f"request.answers.{request_type}",
                            f"{frame_name} is not a frame of this profile",
                        )
                    )
    return problems


def _unit_problem(field_unit: str, signal: Any, scale: float | None, offset: float) -> str | None:
    """A field in ``field_unit`` sent into ``signal`` at ``scale`` (None: any): does the DBC
    unit agree?"""
    found = quantity_of(field_unit)
    # A field in bmsd's units (V, A, °C, K) has factor 1; one in % or Ah fits no listed unit.
    quantity = found[0] if found else None
    return unit_problem(signal.unit or "", quantity, scale, sending=True, offset=offset)


def signal_range(signal: Any) -> tuple[float, float]:
    """Physical range the signal's raw bits can carry."""
    bits = signal.length
    if signal.is_signed:
        raw_low, raw_high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        raw_low, raw_high = 0, (1 << bits) - 1
    ends = (raw_low * signal.scale + signal.offset, raw_high * signal.scale + signal.offset)
    return min(ends), max(ends)


def _raw_fits(signal: Any, raw_value: int) -> bool:
    bits = signal.length
    low = -(1 << (bits - 1)) if signal.is_signed else 0
    return bool(low <= raw_value < (1 << bits))


def raw_to_physical(signal: Any, raw_value: int) -> float:
    """Physical value of a raw constant (0xFFFF in a signed field means the bit pattern)."""
    if signal.is_signed and raw_value >= (1 << (signal.length - 1)):
        raw_value -= 1 << signal.length
    return float(raw_value * signal.scale + signal.offset)
