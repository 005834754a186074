"""One inverter link: the generic sender and receiver of a profile, without I/O or a clock.

:class:`InverterLink` is told about each new PackState (:meth:`on_state`) and each frame the
inverter sends (:meth:`on_frame`), and is polled with the monotonic time (:meth:`poll`) for
the frames to send now. It schedules periodic frames on their period (or every frame on each
new PackState), answers requests (Pylontech HV), keeps a minimum spacing between frames (the
Sunny Island's 200 ms), and falls silent while the newest PackState is older than the
profile's ``stale_after_s``: a hung control loop must let the inverter's own timeout trip.
Frames are encoded at the moment they leave, from the newest state.

The asyncio task that drives a link and the bus it sends on live in
:mod:`bmsd.publish.inverter.service`; tests and golden traces drive the same link with a
scripted clock.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import can
import cantools

from bmsd.model.state import PackState
from bmsd.publish.inverter.profile import Profile, SignalSpec, raw_to_physical, signal_range
from bmsd.publish.inverter.supervision import (
    KeepaliveAction,
    LimitWindow,
    keepalive_overdue_s,
    keepalive_stop,
)
from bmsd.publish.inverter.values import FIELDS, PackInfo, battery_values, force_charge_step

log = logging.getLogger(__name__)

SendOn = Literal["period", "state"]
TIME_EPS_S = 1e-9  # due times computed by addition may miss an equal poll time by an ulp


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Per-inverter choices (from ``[inverters.NAME]``), with the profile's as defaults."""

    send_on: SendOn = "period"
    stale_after_s: float = 1.0
    keepalive_timeout_s: float | None = None  # None: keep-alive not supervised
    keepalive_action: KeepaliveAction = "warn"
    keepalive_grace_s: float = 30.0
    startup_grace_s: float = 120.0
    limit_check: bool = True
    limit_margin_a: float = 5.0
    limit_response_s: float = 10.0


@dataclass(slots=True)
class LinkStats:
    """Counters of one link (read by the metrics collector)."""

    frames_sent: Counter[str]
    requests: int = 0
    unknown_requests: int = 0
    bad_frames: int = 0  # a request or keep-alive id whose data does not decode: dropped
    keepalives: int = 0
    clamped: int = 0
    stale_polls: int = 0
    send_errors: int = 0


def _char_signals(message: Any) -> list[Any]:
    return sorted((s for s in message.signals if s.name.startswith("Char")), key=lambda s: s.start)


class ProfileEncoder:
    """Encodes a profile's frames from battery values, clamped to each signal's range."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        spec = profile.spec
        self._messages = {name: profile.message(name) for name in spec.frames}
        self.clamped = 0

    def signal_values(self, name: str, values: dict[str, float]) -> dict[str, float]:
        """Physical value of every signal of frame ``name``."""
        spec = self.profile.spec
        frame = spec.frames[name]
        message = self._messages[name]
        out: dict[str, float] = {s.name: 0.0 for s in message.signals}
        if frame.text:
            text = frame.text.replace("{manufacturer}", spec.manufacturer)
            for index, signal in enumerate(_char_signals(message)):
                out[signal.name] = float(ord(text[index])) if index < len(text) else 0.0
        signals = {s.name: s for s in message.signals}
        for signal_name, source in frame.signals.items():
            out[signal_name] = self._value(signals[signal_name], source, values)
        return out

    def _value(self, signal: Any, source: SignalSpec, values: dict[str, float]) -> float:
        if source.raw is not None:
            return raw_to_physical(signal, source.raw)
        if source.value is not None:
            return source.value
        value = values.get(source.field, math.nan)
        if FIELDS[source.field].flag and (
            source.true_raw is not None or source.false_raw is not None
        ):
            on = 1 if source.true_raw is None else source.true_raw
            off = 0 if source.false_raw is None else source.false_raw
            return raw_to_physical(signal, on if value >= 0.5 else off)
        if math.isnan(value):
            if source.invalid_raw is not None:
                return raw_to_physical(signal, source.invalid_raw)
            value = 0.0  # physical 0 (0 A, 0 V), never a raw 0 that an offset makes -3000 A
        else:
            value = value * source.scale + source.offset
        low, high = signal_range(signal)
        if not low <= value <= high:
            self.clamped += 1
            value = min(max(value, low), high)
        return value

    def encode(self, name: str, values: dict[str, float]) -> can.Message:
        spec = self.profile.spec
        message = self._messages[name]
        data = bytes(message.encode(self.signal_values(name, values), strict=False))
        length = spec.frames[name].length or message.length
        return can.Message(
            arbitration_id=message.frame_id + spec.id_offset,
            is_extended_id=message.is_extended_frame,
            data=data[:length],
            dlc=length,
        )


class InverterLink:
    """The sender and receiver logic of one configured inverter."""

    def __init__(
        self,
        name: str,
        profile: Profile,
        info: PackInfo,
        settings: LinkSettings,
        started_at: float,
    ) -> None:
        self.name = name
        self.profile = profile
        self.info = info
        self.settings = settings
        self.started_at = started_at
        self.encoder = ProfileEncoder(profile)
        spec = profile.spec
        self._periodic = spec.trigger == "periodic"
        self._frames = profile.sent_frames()
        self._next_due: dict[str, float] = {name: started_at for name in self._frames}
        self._queue: list[str] = []
        self._last_sent_at = -math.inf
        self.state: PackState | None = None
        self.force_charge = (False, False)
        self.keepalive_seen_at: float | None = None
        self.stats = LinkStats(frames_sent=Counter())
        self.limit_window = LimitWindow(settings.limit_response_s)
        self.stale = False
        keepalive = spec.keepalive
        self._keepalive_id: int | None = None
        self._keepalive_extended: bool | None = None
        self._keepalive_message: Any = None
        if keepalive is not None:
            message = profile.message(keepalive.message)
            self._keepalive_message = message
            self._keepalive_id = message.frame_id
            self._keepalive_extended = None if keepalive.any_id_type else message.is_extended_frame
        request = spec.request
        self._request: tuple[Any, str, dict[int, tuple[str, ...]]] | None = None
        if request is not None:
            message = profile.message(request.message)
            answers = {
                int(key): tuple(f for f in frames if f in self._frames)
                for key, frames in request.answers.items()
            }
            self._request = (message, request.signal, answers)

    # -- inputs ---------------------------------------------------------------------------

    def on_state(self, state: PackState) -> None:
        """A new PackState: update force-charge hysteresis; with send_on "state", send all."""
        self.state = state
        spec = self.profile.spec.force_charge
        soc = math.nan if state.estimates is None else 100.0 * state.estimates.pack_soc
        one, two = self.force_charge
        self.force_charge = (
            force_charge_step(soc, one, spec.level_1_on_pct, spec.level_1_off_pct),
            force_charge_step(soc, two, spec.level_2_on_pct, spec.level_2_off_pct),
        )
        if self._periodic and self.settings.send_on == "state":
            for frame in self._frames:
                self._enqueue(frame)

    def on_frame(self, message: can.Message, received_at: float) -> bool:
        """A frame from the inverter; True if this profile knows its id.

        Only a frame that decodes as the expected request or keep-alive refreshes the
        keep-alive: garbage with the right id must not keep a dead inverter's limits up. A
        frame that does not decode is counted (``stats.bad_frames``) and dropped."""
        frame_id = message.arbitration_id
        if self._request is not None:
            request_message, signal, answers = self._request
            if (
                frame_id == request_message.frame_id
                and message.is_extended_id == request_message.is_extended_frame
            ):
                decoded = self._decode(request_message, message)
                if decoded is None:
                    return True
                frames = answers.get(int(decoded[signal]))
                if frames is None:
                    self.stats.unknown_requests += 1
                    return True
                # An answerable request also shows the inverter is alive.
                self.keepalive_seen_at = received_at
                self.stats.requests += 1
                if self.state is not None and not self._is_stale(received_at):
                    for frame in frames:
                        self._enqueue(frame)
                return True
        if (
            self._keepalive_id is not None
            and frame_id == self._keepalive_id
            and (
                self._keepalive_extended is None
                or message.is_extended_id == self._keepalive_extended
            )
        ):
            assert self._keepalive_message is not None
            if self._decode(self._keepalive_message, message) is None:
                return True
            self.keepalive_seen_at = received_at
            self.stats.keepalives += 1
            return True
        return False

    def _decode(self, expected: Any, message: can.Message) -> dict[str, Any] | None:
        """``message`` decoded as the DBC message ``expected``; None (counted) if it does not."""
        try:
            decoded: dict[str, Any] = expected.decode(bytes(message.data), decode_choices=False)
        except (cantools.database.DecodeError, ValueError, KeyError, TypeError) as exc:
            # cantools' DecodeError is not a ValueError (45.x: bases cantools.Error only).
            self.stats.bad_frames += 1
            # A flood of these is held back by the daemon's log rate limiter (system/logs.py).
            log.warning("inverter %s: bad frame %s dropped: %s", self.name, message, exc)
            return None
        return decoded

    # -- output ---------------------------------------------------------------------------

    def poll(self, now: float) -> list[can.Message]:
        """The frames to send at ``now`` (empty while the state is stale or missing)."""
        if self._is_stale(now):
            if not self.stale:
                log.warning(
                    "inverter %s: PackState stale (older than %.1f s): sending stopped",
                    self.name,
                    self.settings.stale_after_s,
                )
            self.stale = True
            self.stats.stale_polls += 1
            self._queue.clear()
            self._reschedule(now, enqueue=False)  # the frames due now are skipped, not owed
            return []
        if self.stale:
            log.info("inverter %s: PackState fresh again: sending resumed", self.name)
            self.stale = False
            for frame in self._next_due:  # the inverter went without: the whole set at once
                self._next_due[frame] = now
        self._reschedule(now, enqueue=True)
        spacing = self.profile.spec.min_spacing_s
        out: list[can.Message] = []
        state = self.state
        assert state is not None
        values: dict[str, float] | None = None
        while self._queue and now >= self._last_sent_at + spacing - TIME_EPS_S:
            frame = self._queue.pop(0)
            if values is None:
                values = self.values(now)
            out.append(self.encoder.encode(frame, values))
            self.stats.frames_sent[frame] += 1
            self._last_sent_at = now
            if spacing > 0:
                break
        if values is not None:
            self.limit_window.record(now, values["charge_current_a"], values["discharge_current_a"])
        self.stats.clamped = self.encoder.clamped
        return out

    def _reschedule(self, now: float, *, enqueue: bool) -> None:
        """Move every periodic frame due at ``now`` to its next period (no catch-up burst)."""
        if not self._periodic:
            return
        for frame in self._frames:
            due = self._next_due[frame]
            if due <= now + TIME_EPS_S:
                if enqueue:
                    self._enqueue(frame)
                period = self.profile.spec.frames[frame].period_s
                nxt = due + period
                self._next_due[frame] = nxt if nxt > now else now + period

    def next_wakeup(self, now: float) -> float:
        """When :meth:`poll` next has something to do."""
        if self._queue:
            return max(now, self._last_sent_at + self.profile.spec.min_spacing_s)
        if self._periodic and self._next_due:
            return max(now, min(self._next_due.values()))
        return math.inf

    def values(self, now: float) -> dict[str, float]:
        """Battery values for the newest state, with the supervision stop applied."""
        assert self.state is not None
        return battery_values(
            self.state,
            self.info,
            discharge_positive=self.profile.spec.current_sign == "discharge_positive",
            force_charge=self.force_charge,
            stop_reason=self.stop_reason(now),
        )

    # -- supervision ----------------------------------------------------------------------

    def keepalive_overdue_s(self, now: float) -> float | None:
        timeout = self.settings.keepalive_timeout_s
        if timeout is None:
            return None
        return keepalive_overdue_s(
            now, self.started_at, self.keepalive_seen_at, timeout, self.settings.startup_grace_s
        )

    def stop_reason(self, now: float) -> str:
        overdue = self.keepalive_overdue_s(now)
        if keepalive_stop(overdue, self.settings.keepalive_action, self.settings.keepalive_grace_s):
            return "inverter keep-alive lost"
        return ""

    def allowed_currents(self, now: float) -> tuple[float, float] | None:
        """(charge, discharge) the inverter may draw now (highest sent within the response
        time), or None when the limits check is off or nothing was sent yet."""
        if not self.settings.limit_check:
            return None
        return self.limit_window.allowed(now)

    def _is_stale(self, now: float) -> bool:
        state = self.state
        return state is None or now - state.time_s > self.settings.stale_after_s

    def _enqueue(self, frame: str) -> None:
        if frame not in self._queue:
            self._queue.append(frame)


def frames_of(messages: Sequence[can.Message]) -> list[tuple[int, bytes]]:
    """(id, data) pairs, for tests and traces."""
    return [(m.arbitration_id, bytes(m.data)) for m in messages]
