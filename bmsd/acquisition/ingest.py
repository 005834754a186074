"""Frame ingestion: decode a received frame and store its readings, counting everything.

A frame with an unknown id or a payload that does not decode is counted and dropped; it
never raises into the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import can

from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder
from bmsd.errors import CanCodecError
from bmsd.model.readings import Reading, UnexpectedModule

log = logging.getLogger(__name__)

# At most one decode-error log line per this many seconds, so a bad node cannot flood the log.
ERROR_LOG_INTERVAL_S = 10.0


class Ingest:
    """Feeds decoded frames of one bus into the reading store."""

    def __init__(
        self,
        decoder: FrameDecoder,
        store: ReadingStore,
        stats: BusStats,
        urgent: Callable[[Reading], bool] | None = None,
        on_urgent: Callable[[], None] | None = None,
    ) -> None:
        self._decoder = decoder
        self._store = store
        self._stats = stats
        self._urgent = urgent
        self._on_urgent = on_urgent
        self._last_error_log = -ERROR_LOG_INTERVAL_S

    def on_frame(self, message: can.Message, received_at: float) -> None:
        try:
            result = self._decoder.decode(
                message.arbitration_id, message.is_extended_id, message.data, received_at
            )
        except CanCodecError as exc:
            self._stats.decode_errors += 1
            self._stats.last_error = str(exc)
            now = time.monotonic()
            if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
                self._last_error_log = now
                log.warning(
                    "dropped undecodable frame: %s (%d so far)", exc, self._stats.decode_errors
                )
            return
        if result is None:
            self._stats.unknown_frames += 1
            return
        name, readings = result
        self._stats.frames_by_message[name] += 1
        if readings and isinstance(readings[0], UnexpectedModule):
            self._stats.unexpected_module_frames += 1
        for reading in readings:
            self._store.apply(reading)
        urgent, wake = self._urgent, self._on_urgent
        if urgent is not None and wake is not None and any(urgent(r) for r in readings):
            wake()
