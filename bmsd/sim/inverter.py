"""A simulated inverter that speaks an inverter profile from the inverter's side.

It is the simulated pack's load: :meth:`SimulatedInverter.current_a` is the current it draws,
its demand (a load profile: PV surplus, household load) clipped to what the battery allows in
the frames it received — CCL and DCL, the enable flags, CVL (no charging at or above it) —
and 0 when the battery's frames stop for longer than its own timeout (as a Victron GX after
3 s). It sends what the real inverter sends: the keep-alive (Pylontech and Victron 0x305
zeros, the Sunny Island's 0x305 telemetry) or, for request-driven profiles, the requests
(Pylontech HV 0x4200, type 0 every period and type 2 every tenth).

Misbehaving modes for tests: ``ignore_limits`` draws the demand whatever the battery says;
``silent`` sends nothing (a dead inverter, for the keep-alive supervision).

It decodes with the profile's own DBC and mapping (it is a simulator, not a checker: the
golden-trace tests decode independently). Time is the simulation's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import can

from bmsd.publish.inverter.profile import Profile
from bmsd.sim.load import LoadProfile

log = logging.getLogger(__name__)

# The battery values the simulated inverter acts on.
_ACTED_ON = (
    "charge_voltage_v",
    "charge_current_a",
    "discharge_current_a",
    "charge_enable",
    "discharge_enable",
    "charge_forbidden",
    "discharge_forbidden",
    "voltage_v",
    "soc_pct",
)


@dataclass(slots=True)
class ReceivedLimits:
    charge_voltage_v: float = math.nan
    charge_current_a: float = 0.0
    discharge_current_a: float = 0.0
    charge_enable: bool = False
    discharge_enable: bool = False
    voltage_v: float = math.nan
    soc_pct: float = math.nan
    limits_at_s: float = -math.inf  # when the frame with the current limits last arrived


class SimulatedInverter:
    """The inverter side of a profile; a :class:`~bmsd.sim.load.LoadProfile` for the pack."""

    def __init__(
        self,
        profile: Profile,
        demand: LoadProfile,
        *,
        ignore_limits: bool = False,
        silent: bool = False,
        period_s: float = 1.0,
        timeout_s: float = 3.0,
    ) -> None:
        self.profile = profile
        self.demand = demand
        self.ignore_limits = ignore_limits
        self.silent = silent
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.received = ReceivedLimits()
        self.frames_received = 0
        self._next_send_s = 0.0
        self._sent_cycles = 0
        self._decoders = self._build_decoders()
        self._limits_frame = self._frame_with("charge_current_a")

    def _build_decoders(self) -> dict[tuple[int, bool], tuple[Any, dict[str, Any]]]:
        spec = self.profile.spec
        decoders: dict[tuple[int, bool], tuple[Any, dict[str, Any]]] = {}
        for name in self.profile.sent_frames():
            message = self.profile.message(name)
            sources = {
                signal: source
                for signal, source in spec.frames[name].signals.items()
                if source.field in _ACTED_ON
            }
            if sources:
                key = (message.frame_id + spec.id_offset, message.is_extended_frame)
                decoders[key] = (message, sources)
        return decoders

    def _frame_with(self, field: str) -> tuple[int, bool] | None:
        for key, (_, sources) in self._decoders.items():
            if any(source.field == field for source in sources.values()):
                return key
        return None

    def handle_frame(self, message: can.Message, time_s: float) -> None:
        """A frame from the battery."""
        key = (message.arbitration_id, message.is_extended_id)
        found = self._decoders.get(key)
        if found is None:
            return
        self.frames_received += 1
        dbc_message, sources = found
        data = bytes(message.data).ljust(dbc_message.length, b"\0")
        decoded = dbc_message.decode(data, decode_choices=False, scaling=True)
        raw = dbc_message.decode(data, decode_choices=False, scaling=False)
        got = self.received
        for signal, source in sources.items():
            field = source.field
            if source.true_raw is not None or source.false_raw is not None:
                on = 1 if source.true_raw is None else source.true_raw
                flag = int(raw[signal]) == on
                if field == "charge_forbidden":
                    got.charge_enable = not flag
                elif field == "discharge_forbidden":
                    got.discharge_enable = not flag
                elif field in ("charge_enable", "discharge_enable"):
                    setattr(got, field, flag)
                continue
            value = (float(decoded[signal]) - source.offset) / source.scale
            if field in ("charge_enable", "discharge_enable"):
                setattr(got, field, value >= 0.5)
            else:
                setattr(got, field, value)
        if key == self._limits_frame:
            got.limits_at_s = time_s
            if (
                self._frame_with("charge_enable") is None
                and self._frame_with("charge_forbidden") is None
            ):
                # No enable flags in this profile (SMA, Victron): the limits are the enables.
                got.charge_enable = got.charge_current_a > 0
                got.discharge_enable = got.discharge_current_a > 0

    def current_a(self, time_s: float) -> float:
        """The current drawn at ``time_s`` (positive charges the battery)."""
        wanted = self.demand.current_a(time_s)
        if self.ignore_limits:
            return wanted
        got = self.received
        if time_s - got.limits_at_s > self.timeout_s:
            return 0.0  # the inverter's own timeout: no battery, no power
        if wanted > 0.0:
            if not got.charge_enable:
                return 0.0
            if not math.isnan(got.voltage_v) and got.voltage_v >= got.charge_voltage_v:
                return 0.0
            return min(wanted, got.charge_current_a)
        if not got.discharge_enable:
            return 0.0
        return max(wanted, -got.discharge_current_a)

    def due_frames(self, time_s: float, battery_current_a: float = 0.0) -> list[can.Message]:
        """Keep-alives or requests due at ``time_s``."""
        if self.silent or time_s < self._next_send_s:
            return []
        self._next_send_s = time_s + self.period_s
        self._sent_cycles += 1
        spec = self.profile.spec
        frames: list[can.Message] = []
        if spec.request is not None:
            message = self.profile.message(spec.request.message)
            types = sorted(int(t) for t in spec.request.answers)
            # The ensemble request every period, the others every tenth period.
            kinds = [types[0]] + (types[1:] if self._sent_cycles % 10 == 1 else [])
            for kind in kinds:
                data = message.encode({spec.request.signal: kind}, strict=True)
                frames.append(
                    can.Message(
                        arbitration_id=message.frame_id,
                        is_extended_id=message.is_extended_frame,
                        data=data,
                    )
                )
        elif spec.keepalive is not None:
            message = self.profile.message(spec.keepalive.message)
            values = {s.name: 0.0 for s in message.signals}
            got = self.received
            # The Sunny Island's 0x305 is telemetry: its own view of the battery.
            for signal in message.signals:
                if signal.name == "Voltage" and not math.isnan(got.voltage_v):
                    values["Voltage"] = got.voltage_v
                elif signal.name == "Current":
                    values["Current"] = -battery_current_a  # the SI counts charging negative
                elif signal.name == "SOC" and not math.isnan(got.soc_pct):
                    values["SOC"] = got.soc_pct
                elif signal.name == "Temperature":
                    values["Temperature"] = 25.0
            data = message.encode(values, strict=False)
            frames.append(
                can.Message(
                    arbitration_id=message.frame_id,
                    is_extended_id=message.is_extended_frame,
                    data=data,
                )
            )
        return frames
