"""Recording of a bus's frames to files: a new file at each start and past a size, bounded disk.

A recording is diagnostic: it must neither lose the evidence of the run before a restart nor
fill the gateway's disk, and a failing disk must never stop the bus. So:

- at open, a file left by the previous run is renamed aside, never overwritten (python-can's
  writers truncate): the frames before a crash or a power cut are what an integrator needs.
  A file that holds no frame (a start that failed early: only the format's header) is
  deleted instead, so a crash loop cannot push the real recordings out;
- the current file is renamed aside when it reaches ``max_bytes`` and a new one begun;
  of the files set aside the newest ``keep_files - 1`` are kept, the oldest deleted;
- any failure (cannot open, disk full, a writer refusing a frame) stops the recording, is
  logged and counted; the recording is tried again after ``RETRY_AFTER_S``, in a new file.
  A file deleted or renamed from under the daemon is noticed within ``CHECK_EVERY_FRAMES``
  frames and a new one begun (Linux would go on writing to the unlinked file unseen).

Files set aside are named ``<stem>.<n>.<UTC time><suffix>``
(``slaves.000042.20261124T130500Z.asc``), ``n`` one above the highest there: age is read
from ``n``, not from the clock, which on a gateway without a battery-backed clock can go
back at a restart. Each is a recording ``bmsd replay`` reads.
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

log = logging.getLogger(__name__)

# How often the current file is looked at (size; still the file at its path), in frames: a
# text writer's tell() is not free, and a few hundred frames are a few kilobytes at most.
CHECK_EVERY_FRAMES = 256
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
        if keep_files < 2:
            raise ValueError("keep_files must be at least 2 (the current file and the last one)")
        self.bus_name = bus_name
        self.path = path
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self._on_error = on_error
        self._clock = clock
        self._writer: can.Listener | None = None
        self._inode: tuple[int, int] | None = None  # (device, inode) of the current file
        self._frames_since_check = 0
        self._retry_at: float | None = None  # set while stopped by a failure
        self._aside_pattern = re.compile(
            rf"{re.escape(path.stem)}\.(\d+)\.\d{{8}}T\d{{6}}Z{re.escape(path.suffix)}"
        )

    @property
    def is_recording(self) -> bool:
        return self._writer is not None

    def open(self) -> None:
        """Set aside what the last run left and begin a file; a failure is logged and retried."""
        try:
            self._begin_file()
        except Exception as exc:  # whatever the cause, the bus must run
            self._fail(exc)
            return
        log.info("recording bus %s to %s", self.bus_name, self.path)

    def write(self, message: can.Message) -> None:
        """Record one frame; never raises (a failure stops the recording for a while)."""
        writer = self._writer
        if writer is None:
            if self._retry_at is not None and self._clock() >= self._retry_at:
                self._retry()
            writer = self._writer
            if writer is None:
                return
        try:
            writer(message)
            self._frames_since_check += 1
            if self._frames_since_check >= CHECK_EVERY_FRAMES:
                self._frames_since_check = 0
                self._check_file(writer)
        except Exception as exc:  # a writer's error (OSError, struct.error,
            # OverflowError on an odd frame) must not reach frame delivery
            self._fail(exc)

    def stop(self) -> None:
        """Flush and close the current file (idempotent); a failure is logged, not raised."""
        writer, self._writer = self._writer, None
        self._retry_at = None
        if writer is not None:
            try:
                writer.stop()
            except Exception as exc:  # closing must not stop the daemon's exit
                log.error("closing the recording of bus %s failed: %s", self.bus_name, exc)
                self._on_error()

    def files(self) -> list[Path]:
        """Files set aside, oldest first (the current file not included)."""
        return [path for _, path in self._aside()]

    def _aside(self) -> list[tuple[int, Path]]:
        found: list[tuple[int, Path]] = []
        for candidate in self.path.parent.iterdir():
            match = self._aside_pattern.fullmatch(candidate.name)
            if match is not None:
                found.append((int(match[1]), candidate))
        return sorted(found)

    def _check_file(self, writer: can.Listener) -> None:
        """Begin a new file when the current one was removed or replaced, or is full."""
        try:
            status = self.path.stat()
            moved = (status.st_dev, status.st_ino) != self._inode
        except FileNotFoundError:
            moved = True
        size = getattr(writer, "file_size", None)
        full = self.max_bytes > 0 and callable(size) and size() >= self.max_bytes
        if not (moved or full):
            return
        self._writer = None
        writer.stop()
        self._begin_file()
        if moved:
            log.warning(
                "recording of bus %s: %s was removed or replaced; begun again",
                self.bus_name,
                self.path,
            )
        else:
            log.info("recording of bus %s continues in a new file", self.bus_name)

    def _begin_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            if _holds_frames(self.path):
                self.path.rename(self._aside_name())
            else:
                self.path.unlink()
        self._prune()
        writer = can.Logger(str(self.path))
        status = self.path.stat()
        self._inode = (status.st_dev, status.st_ino)
        self._writer = writer
        self._frames_since_check = 0

    def _aside_name(self) -> Path:
        number = max((number for number, _ in self._aside()), default=0) + 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.path.with_name(f"{self.path.stem}.{number:06d}.{stamp}{self.path.suffix}")

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
            with contextlib.suppress(Exception):
                writer.stop()

    def _retry(self) -> None:
        self._retry_at = None
        try:
            self._begin_file()
        except Exception as exc:  # as in open()
            self._fail(exc)
            return
        log.warning("recording of bus %s resumed in %s", self.bus_name, self.path)


def _holds_frames(path: Path) -> bool:
    """True when the file holds at least one frame, or cannot be read (keep it: evidence)."""
    if path.stat().st_size == 0:
        return False
    try:
        with can.LogReader(str(path)) as reader:
            return next(iter(reader), None) is not None
    except Exception:  # a cut or damaged file is kept for a human to read
        return True
