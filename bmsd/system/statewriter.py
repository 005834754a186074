"""Background writer for periodic state files, so no fsync ever runs inside a control tick.

The SOC/SOH and balancing states are saved every few seconds. Each save is an atomic write
with two fsyncs (:func:`bmsd.system.statefile.write_state`), and an fsync waits for the disk:
usually a millisecond, but 100 ms or more while another process (a Prometheus TSDB, a log
rotation) flushes. Done in the control loop, that wait is a late or missed tick.

The loop takes the snapshot (``export_state()``, consistent with its tick) and hands it here;
one thread writes it. Only the newest snapshot of each file matters: a newer one replaces a
pending one that was not written yet. A failed write is logged (rate-limited per file) and
counted; the next snapshot tries again. Latched faults are not written here: they are rare and
must be on disk before the daemon goes on (bmsd.protection.persistence).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bmsd.system.statefile import write_state

log = logging.getLogger(__name__)

# One error line per file per this period while its writes keep failing (a full disk).
ERROR_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class StateJob:
    """One snapshot to write: file, format and payload (plain JSON-able data, not shared)."""

    path: Path
    kind: str
    version: int
    payload: dict[str, Any]
    what: str  # for the log: "SOC/SOH state", "balancing state"


@dataclass(slots=True)
class WriterStats:
    """Counters of the writer (read by tests and the soak benchmark)."""

    writes: int = 0
    failures: int = 0
    replaced: int = 0  # snapshots superseded before they were written
    max_write_s: float = 0.0


Write = Callable[[Path, str, int, dict[str, Any]], None]


class StateWriter:
    """One thread writing the newest snapshot of each state file."""

    def __init__(self, write: Write = write_state) -> None:
        self._write = write
        self._pending: dict[Path, StateJob] = {}
        self._busy = False
        self._closed = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_error_log_s: dict[Path, float] = {}
        self.stats = WriterStats()

    def submit(self, job: StateJob) -> None:
        """Queue ``job`` (never blocks on the disk); after :meth:`close` it is written here."""
        with self._condition:
            if self._closed:
                closed = True
            else:
                closed = False
                if job.path in self._pending:
                    self.stats.replaced += 1
                self._pending[job.path] = job
                self._start_locked()
                self._condition.notify_all()
        if closed:
            self._write_one(job)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued snapshot is written; False if ``timeout_s`` passed first."""
        deadline_s = time.monotonic() + timeout_s
        with self._condition:
            while self._pending or self._busy:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0.0:
                    return False
                self._condition.wait(remaining_s)
        return True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what is queued and stop the thread; later submits write synchronously."""
        done = self.flush(timeout_s)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout_s))
        return done

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bmsd-state-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if not self._pending:
                    return  # closed and drained
                jobs = list(self._pending.values())
                self._pending.clear()
                self._busy = True
            try:
                for job in jobs:
                    self._write_one(job)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _write_one(self, job: StateJob) -> None:
        started_s = time.monotonic()
        try:
            self._write(job.path, job.kind, job.version, job.payload)
        except (OSError, ValueError) as exc:
            # ValueError: a NaN in the payload (allow_nan=False); the file keeps its last value.
            self.stats.failures += 1
            last_s = self._last_error_log_s.get(job.path)
            if last_s is None or started_s - last_s >= ERROR_LOG_INTERVAL_S:
                self._last_error_log_s[job.path] = started_s
                log.error("cannot save the %s to %s: %s", job.what, job.path, exc)
            return
        self._last_error_log_s.pop(job.path, None)
        self.stats.writes += 1
        self.stats.max_write_s = max(self.stats.max_write_s, time.monotonic() - started_s)
