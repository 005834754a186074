"""Frame codec: CAN frames to readings and commands to frames, through cantools only.

The decoder builds, once, a table from (frame id, extended) to a handler that knows the DBC
message, the module the frame comes from and which readings it feeds; decoding a frame is one
dictionary look-up and one cantools decode. Decoding uses ``decode_choices=False`` (numbers, not
labels) and never ``allow_truncated``: a short frame is an error, not half a reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import can

from bmsd.canbus.protocol import GroupedValues, MaskMessage, Protocol, SignalRef
from bmsd.errors import CanCodecError, ConfigError, ConfigIssue
from bmsd.model.bms import ContactorCommand
from bmsd.model.readings import (
    BalancingFeedback,
    CellVoltageGroup,
    ContactorFeedback,
    ModuleStatus,
    Quantity,
    Reading,
    ScalarReading,
    SensorStatus,
    TemperatureGroup,
    UnexpectedModule,
)
from bmsd.model.topology import Topology

if TYPE_CHECKING:
    from bmsd.config import Config

Signals = dict[str, Any]
Builder = Callable[[Signals, float], list[Reading]]


@dataclass(frozen=True, slots=True)
class _Handler:
    name: str
    message: Any  # cantools Message
    build: Builder
    # False for frames whose signals nobody reads (an unconfigured node's module frames): a
    # babbling stranger then costs a length check, not a cantools decode, per frame.
    decode_signals: bool = True


def _frame_key(frame_id: int, is_extended: bool) -> int:
    # One int key: extended ids get bit 31 so 0x100 standard and 0x100 extended differ.
    return frame_id | (1 << 31) if is_extended else frame_id


class FrameDecoder:
    """Turns received frames into readings, for the configured topology and protocol."""

    def __init__(self, protocol: Protocol, topology: Topology) -> None:
        self._protocol = protocol
        self._topology = topology
        self._handlers: dict[int, _Handler] = {}
        self._owners: dict[int, str] = {}  # frame key -> whose frame, for clash messages
        self._build_module_handlers()
        self._build_sensor_handlers()
        self._build_stranger_handlers()

    @property
    def message_names(self) -> tuple[str, ...]:
        return tuple(sorted({handler.name for handler in self._handlers.values()}))

    def decode_contactor_command(
        self, frame_id: int, is_extended: bool, data: bytes | bytearray
    ) -> tuple[bool, bool, bool] | None:
        """(minus, plus, precharge) of a switch box command frame (ours, seen in a recording);
        None for any other frame or one that does not decode."""
        box = self._protocol.mapping.switchbox
        if box is None:
            return None
        message = self._protocol.message(box.command_message)
        if frame_id != message.frame_id or is_extended != message.is_extended_frame:
            return None
        try:
            signals = message.decode(bytes(data), decode_choices=False)
        except Exception:  # a damaged recorded frame is skipped like any other
            return None
        return (
            bool(signals[box.minus_command_signal]),
            bool(signals[box.plus_command_signal]),
            bool(signals[box.precharge_command_signal]),
        )

    def decode(
        self, frame_id: int, is_extended: bool, data: bytes | bytearray, received_at: float
    ) -> tuple[str, list[Reading]] | None:
        """Decode one frame; None for an id the protocol does not know.

        Raises CanCodecError for a known id whose payload cannot be decoded.
        """
        handler = self._handlers.get(_frame_key(frame_id, is_extended))
        if handler is None:
            return None
        if not handler.decode_signals:
            if len(data) < handler.message.length:  # as cantools: short is an error
                raise CanCodecError(
                    f"{handler.name} (0x{frame_id:X}): {len(data)} bytes, "
                    f"expected {handler.message.length}"
                )
            return handler.name, handler.build({}, received_at)
        try:
            signals = handler.message.decode(bytes(data), decode_choices=False, scaling=True)
        except Exception as exc:  # cantools raises several error types for bad payloads
            raise CanCodecError(f"{handler.name} (0x{frame_id:X}): {exc}") from exc
        try:
            return handler.name, handler.build(signals, received_at)
        except (KeyError, ValueError, TypeError) as exc:
            raise CanCodecError(f"{handler.name} (0x{frame_id:X}): {exc}") from exc

    # -- table building -------------------------------------------------------------------

    def _add(self, frame_id: int, is_extended: bool, handler: _Handler, owner: str) -> None:
        """Register a handler; a clash or an impossible id is a config error of the protocol
        file (exit 2), naming both messages and whose they are."""
        source = str(self._protocol.path)
        if frame_id > (0x1FFFFFFF if is_extended else 0x7FF):
            raise ConfigError(
                [
                    ConfigIssue(
                        source,
                        "modules.node_id_stride",
                        f"{handler.name} of {owner} would be frame id 0x{frame_id:X}, beyond "
                        f"the largest {'29' if is_extended else '11'}-bit id; check "
                        "pack.module_node_ids and modules.node_id_stride",
                    )
                ]
            )
        key = _frame_key(frame_id, is_extended)
        if key in self._handlers:
            other, other_owner = self._handlers[key].name, self._owners[key]
            raise ConfigError(
                [
                    ConfigIssue(
                        source,
                        "modules.node_id_stride",
                        f"frame id 0x{frame_id:X} is claimed by both {other} of {other_owner} "
                        f"and {handler.name} of {owner}; check pack.module_node_ids and "
                        "modules.node_id_stride",
                    )
                ]
            )
        self._handlers[key] = handler
        self._owners[key] = owner

    def _build_module_handlers(self) -> None:
        modules = self._protocol.mapping.modules
        stride = modules.node_id_stride
        for module, node_id in enumerate(self._topology.module_node_ids):
            kinds: list[tuple[str, str, Builder]] = [
                (
                    "cell_voltages",
                    modules.cell_voltages.message,
                    _grouped_builder(
                        modules.cell_voltages,
                        module,
                        self._topology.cells_per_module,
                        CellVoltageGroup,
                    ),
                ),
                (
                    "temperatures",
                    modules.temperatures.message,
                    _grouped_builder(
                        modules.temperatures,
                        module,
                        self._topology.temps_per_module,
                        TemperatureGroup,
                    ),
                ),
            ]
            if modules.status is not None:
                kinds.append(
                    ("status", modules.status.message, _status_builder(modules.status, module))
                )
            if modules.balancing_feedback is not None:
                kinds.append(
                    (
                        "balancing_feedback",
                        modules.balancing_feedback.message,
                        _feedback_builder(
                            modules.balancing_feedback, module, self._topology.cells_per_module
                        ),
                    )
                )
            for kind, message_name, build in kinds:
                message = self._protocol.message(message_name)
                self._add(
                    message.frame_id + node_id * stride,
                    message.is_extended_frame,
                    _Handler(message_name, message, build),
                    f"module {module} (node id {node_id}) as modules.{kind}",
                )

    def _build_stranger_handlers(self) -> None:
        """Module frames of node ids not in the config: seen, counted, never trusted."""
        modules = self._protocol.mapping.modules
        configured = set(self._topology.module_node_ids)
        names = [modules.cell_voltages.message, modules.temperatures.message]
        if modules.status is not None:
            names.append(modules.status.message)
        for name in names:
            message = self._protocol.message(name)
            for node_id in range(256):
                if node_id in configured:
                    continue
                frame_id = message.frame_id + node_id * modules.node_id_stride
                key = _frame_key(frame_id, message.is_extended_frame)
                if key in self._handlers or frame_id > (
                    0x1FFFFFFF if message.is_extended_frame else 0x7FF
                ):
                    continue  # another device's id: that device wins
                self._handlers[key] = _Handler(
                    name, message, _stranger_builder(node_id), decode_signals=False
                )

    def _build_sensor_handlers(self) -> None:
        mapping = self._protocol.mapping
        sensor = mapping.current_sensor
        per_message: dict[str, list[Builder]] = {}

        def scalar(ref: SignalRef, quantity: Quantity) -> None:
            def build(signals: Signals, received_at: float) -> list[Reading]:
                value = float(signals[ref.signal]) * ref.scale + ref.offset
                return [ScalarReading(quantity, value, received_at)]

            per_message.setdefault(ref.message, []).append(build)

        scalar(sensor.current, Quantity.PACK_CURRENT_A)
        if sensor.pack_voltage is not None:
            scalar(sensor.pack_voltage, Quantity.PACK_VOLTAGE_V)
        if sensor.temperature is not None:
            scalar(sensor.temperature, Quantity.SENSOR_TEMP_C)
        for ref in sensor.error_signals:

            def status(signals: Signals, received_at: float, ref: SignalRef = ref) -> list[Reading]:
                return [SensorStatus(ref.message, int(signals[ref.signal]), received_at)]

            per_message.setdefault(ref.message, []).append(status)
        box = mapping.switchbox
        if box is not None:

            def feedback(signals: Signals, received_at: float) -> list[Reading]:
                return [
                    ContactorFeedback(
                        minus_closed=bool(signals[box.minus_closed_signal]),
                        plus_closed=bool(signals[box.plus_closed_signal]),
                        precharge_closed=bool(signals[box.precharge_closed_signal]),
                        received_at=received_at,
                    )
                ]

            per_message.setdefault(box.feedback_message, []).append(feedback)
            if box.bus_voltage is not None:
                scalar(box.bus_voltage, Quantity.BUS_VOLTAGE_V)
        for message_name, builders in per_message.items():
            message = self._protocol.message(message_name)
            self._add(
                message.frame_id,
                message.is_extended_frame,
                _Handler(message_name, message, _combine(builders)),
                "the current sensor or switch box",
            )


def _combine(builders: Sequence[Builder]) -> Builder:
    if len(builders) == 1:
        return builders[0]

    def build(signals: Signals, received_at: float) -> list[Reading]:
        readings: list[Reading] = []
        for builder in builders:
            readings.extend(builder(signals, received_at))
        return readings

    return build


def _grouped_builder(
    grouped: GroupedValues,
    module: int,
    count: int,
    kind: type[CellVoltageGroup] | type[TemperatureGroup],
) -> Builder:
    names = grouped.value_signals
    per_group = len(names)
    scale, offset, group_signal = grouped.scale, grouped.offset, grouped.group_signal

    def build(signals: Signals, received_at: float) -> list[Reading]:
        first = int(signals[group_signal]) * per_group
        if first >= count:
            raise ValueError(f"group {first // per_group} is beyond the module's {count} values")
        values = tuple(float(signals[name]) * scale + offset for name in names[: count - first])
        return [kind(module, first, values, received_at)]

    return build


def _stranger_builder(node_id: int) -> Builder:
    def build(signals: Signals, received_at: float) -> list[Reading]:
        return [UnexpectedModule(node_id, received_at)]

    return build


def _status_builder(status: Any, module: int) -> Builder:
    flags_signal = status.error_flags_signal
    temp_signal = status.board_temp_signal
    request_signal = status.measurement_request_signal

    def build(signals: Signals, received_at: float) -> list[Reading]:
        return [
            ModuleStatus(
                module=module,
                error_flags=int(signals[flags_signal]) if flags_signal else 0,
                board_temp_c=float(signals[temp_signal]) if temp_signal else None,
                measurement_request=bool(signals[request_signal]) if request_signal else False,
                received_at=received_at,
            )
        ]

    return build


def _feedback_builder(mask: MaskMessage, module: int, cells: int) -> Builder:
    size = mask.group_size

    def build(signals: Signals, received_at: float) -> list[Reading]:
        first = int(signals[mask.group_signal]) * size
        if first >= cells:
            raise ValueError(f"balancing group {first // size} is beyond the module's cells")
        return [
            BalancingFeedback(
                module, first, min(size, cells - first), int(signals[mask.mask_signal]), received_at
            )
        ]

    return build


class FrameEncoder:
    """Builds the frames the master sends: switch box commands and balancing commands."""

    def __init__(self, protocol: Protocol, topology: Topology) -> None:
        self._protocol = protocol
        self._topology = topology

    @property
    def has_switchbox(self) -> bool:
        return self._protocol.mapping.switchbox is not None

    @property
    def has_balancing_command(self) -> bool:
        return self._protocol.mapping.modules.balancing_command is not None

    def switchbox_command(
        self, *, minus: bool, plus: bool, precharge: bool, counter: int, timeout_s: float
    ) -> can.Message:
        box = self._protocol.mapping.switchbox
        if box is None:
            raise CanCodecError("the protocol file has no switch box")
        message = self._protocol.message(box.command_message)
        values: dict[str, int | float] = {
            box.minus_command_signal: int(minus),
            box.plus_command_signal: int(plus),
            box.precharge_command_signal: int(precharge),
        }
        if box.counter_signal:
            values[box.counter_signal] = counter % 256
        if box.timeout_signal:
            values[box.timeout_signal] = timeout_s
        return _encode(message, values, message.frame_id)

    def contactor_command(
        self, command: ContactorCommand, counter: int, timeout_s: float
    ) -> can.Message:
        """The switch box command frame for a state machine's contactor command."""
        return self.switchbox_command(
            minus=command.minus,
            plus=command.plus,
            precharge=command.precharge,
            counter=counter,
            timeout_s=timeout_s,
        )

    def balancing_command(
        self, module: int, bleeding: Sequence[bool], timeout_s: float
    ) -> list[can.Message]:
        """One frame per group of cells; bit k set asks cell group * size + k to bleed."""
        mask_map = self._protocol.mapping.modules.balancing_command
        if mask_map is None:
            raise CanCodecError("the protocol file has no balancing command")
        message = self._protocol.message(mask_map.message)
        node_id = self._topology.module_node_ids[module]
        frame_id = message.frame_id + node_id * self._protocol.mapping.modules.node_id_stride
        frames = []
        for group, first in enumerate(range(0, len(bleeding), mask_map.group_size)):
            bits = 0
            for k, flag in enumerate(bleeding[first : first + mask_map.group_size]):
                if flag:
                    bits |= 1 << k
            values: dict[str, int | float] = {
                mask_map.group_signal: group,
                mask_map.mask_signal: bits,
            }
            if mask_map.timeout_signal:
                values[mask_map.timeout_signal] = timeout_s
            frames.append(_encode(message, values, frame_id))
        return frames


def unsendable_settings(
    encoder: FrameEncoder, contactor_timeout_s: float, balancing_timeout_s: float | None
) -> list[tuple[str, str]]:
    """(config key, reason) for each timeout the protocol's frames cannot carry.

    A value outside its signal's range would fail to encode on every tick: the contactors
    would never close (safe, but found only on site), so the config is refused at start."""
    problems: list[tuple[str, str]] = []
    try:
        if encoder.has_switchbox:
            encoder.switchbox_command(
                minus=False, plus=False, precharge=False, counter=0, timeout_s=contactor_timeout_s
            )
    except CanCodecError as exc:
        problems.append(("protection.contactors.command_timeout_s", str(exc)))
    if balancing_timeout_s is not None and encoder.has_balancing_command:
        try:
            encoder.balancing_command(0, [False], balancing_timeout_s)
        except CanCodecError as exc:
            problems.append(("balancing.slave_timeout_s", str(exc)))
    return problems


def check_sendable(config: Config, encoder: FrameEncoder, source: str) -> None:
    """Raise ConfigError (naming ``source``) when a configured timeout cannot be sent."""
    balancing_timeout_s = (
        None if config.balancing.strategy == "none" else config.balancing.slave_timeout_s
    )
    problems = unsendable_settings(
        encoder, config.protection.contactors.command_timeout_s, balancing_timeout_s
    )
    if problems:
        raise ConfigError([ConfigIssue(source, key, reason) for key, reason in problems])


def _encode(message: Any, values: dict[str, int | float], frame_id: int) -> can.Message:
    full: dict[str, int | float] = {signal.name: 0 for signal in message.signals}
    full.update(values)
    try:
        data = message.encode(full, scaling=True, strict=True)
    except Exception as exc:
        raise CanCodecError(f"cannot encode {message.name}: {exc}") from exc
    return can.Message(arbitration_id=frame_id, is_extended_id=message.is_extended_frame, data=data)
