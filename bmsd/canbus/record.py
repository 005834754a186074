"""Recording of a bus's frames to files: a new file at each start and past a size, bounded disk.

A recording is diagnostic: it must neither lose the evidence of the run before a restart nor
fill the gateway's disk, and a failing disk must not stop the bus. So:

- at open, a file left by the previous run is renamed aside, never overwritten (python-can's
  writers truncate): the frames before a crash or a power cut are what an integrator needs;
- the current file is renamed aside when it reaches ``max_bytes`` and a new one begun;
  of the files set aside the newest ``keep_files - 1`` are kept, the oldest deleted;
- a write that fails (disk full, file removed from under the daemon) stops the recording, is
  logged and counted; the recording is tried again after ``RETRY_AFTER_S``, in a new file.

Files set aside are named ``<stem>.<UTC time>-<n><suffix>`` (``slaves.20261124T130500Z-001.asc``):
sorted by name they are in time order, and each is a recording ``bmsd replay`` reads.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import can

from bmsd.errors import BmsdError

log = logging.getLogger(__name__)

# How often the size of the current file is looked at, in frames: a text writer's tell() is
# not free, and a few hundred frames are a few kilobytes past the limit at most.
SIZE_CHECK_EVERY_FRAMES = 256
RETRY_AFTER_S = 60.0


class FrameRecorder:
    """Writes frames to ``path``, rotated by size, keeping at most ``keep_files`` files."""

    def __init__(
        self,
        bus_name: str,
        path: Path,
        *,
        max_bytes: int,
        keep_files: int,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus_name = bus_name
        self.path = path
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self._on_error = on_error
        self._clock = clock
        self._writer: can.Listener | None = None
        self._frames_since_size_check = 0
        self._retry_at: float | None = None  # set while stopped by a failed write
        self._aside_pattern = re.compile(
            rf"{re.escape(path.stem)}\.(\d{{8}}T\d{{6}}Z)-(\d+){re.escape(path.suffix)}"
        )

    @property
    def is_recording(self) -> bool:
        return self._writer is not None

    def open(self) -> None:
        """Set aside what the last run left and begin a file; a failure here is a clear error."""
        try:
            self._begin_file()
        except (OSError, ValueError) as exc:
            raise BmsdError(f"cannot record bus {self.bus_name!r} to {self.path}: {exc}") from exc
        log.info("recording bus %s to %s", self.bus_name, self.path)

    def write(self, message: can.Message) -> None:
        """Record one frame; never raises (a failed write stops the recording for a while)."""
        writer = self._writer
        if writer is None:
            if self._retry_at is not None and self._clock() >= self._retry_at:
                self._retry()
            writer = self._writer
            if writer is None:
                return
        try:
            writer(message)
            self._frames_since_size_check += 1
            if self.max_bytes > 0 and self._frames_since_size_check >= SIZE_CHECK_EVERY_FRAMES:
                self._frames_since_size_check = 0
                size = _file_size(writer)
                if size is not None and size >= self.max_bytes:
                    self._rotate()
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def stop(self) -> None:
        """Flush and close the current file (idempotent); a failure is logged, not raised."""
        writer, self._writer = self._writer, None
        self._retry_at = None
        if writer is not None:
            try:
                writer.stop()
            except (OSError, ValueError) as exc:
                log.error("closing the recording of bus %s failed: %s", self.bus_name, exc)
                self._on_error()

    def files(self) -> list[Path]:
        """Files set aside, oldest first (the current file not included)."""
        return [path for _, _, path in self._aside()]

    def _aside(self) -> list[tuple[str, int, Path]]:
        found: list[tuple[str, int, Path]] = []
        for candidate in self.path.parent.iterdir():
            match = self._aside_pattern.fullmatch(candidate.name)
            if match is not None:
                found.append((match[1], int(match[2]), candidate))
        return sorted(found)

    def _begin_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self.path.rename(self._aside_name())
        self._prune()
        self._writer = can.Logger(str(self.path))
        self._frames_since_size_check = 0

    def _rotate(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()
        self._begin_file()
        log.info("recording of bus %s continues in a new file", self.bus_name)

    def _aside_name(self) -> Path:
        # Numbered after the highest of the same second, not the first free number: pruning
        # frees low numbers, and names must keep sorting in time order.
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        numbers = [number for found_stamp, number, _ in self._aside() if found_stamp == stamp]
        number = max(numbers, default=0) + 1
        return self.path.with_name(f"{self.path.stem}.{stamp}-{number:03d}{self.path.suffix}")

    def _prune(self) -> None:
        aside = self.files()
        for old in aside[: max(0, len(aside) - (self.keep_files - 1))]:
            old.unlink(missing_ok=True)

    def _fail(self, exc: BaseException) -> None:
        writer, self._writer = self._writer, None
        self._retry_at = self._clock() + RETRY_AFTER_S
        self._on_error()
        log.error(
            "recording of bus %s to %s stopped: %s (tried again in %.0f s)",
            self.bus_name,
            self.path,
            exc,
            RETRY_AFTER_S,
        )
        if writer is not None:
            # The file is already failing; its error was reported above.
            with contextlib.suppress(OSError, ValueError):
                writer.stop()

    def _retry(self) -> None:
        self._retry_at = None
        try:
            self._begin_file()
        except (OSError, ValueError) as exc:
            self._fail(exc)
            return
        log.warning("recording of bus %s resumed in %s", self.bus_name, self.path)


def _file_size(writer: can.Listener) -> int | None:
    size = getattr(writer, "file_size", None)
    return size() if callable(size) else None
