"""Logging set-up: the journal (structured fields) under systemd, else text or JSON on stderr.

Call sites pass fields as ``extra={"fields": {...}}``. On stderr the text format appends them as
``key=value`` and the JSON format as keys; in the journal each becomes a field of its own
(``fault`` → ``FAULT_ID``, ``module`` → ``MODULE``, ``cell`` → ``CELL``, ``mode`` →
``BMSD_MODE``, see ``JOURNAL_FIELDS``; anything else ``BMSD_<KEY>``), so
``journalctl FAULT_ID=cell_voltage_high`` finds every message about one fault.

Repeated messages are rate-limited per logger and message template (not per formatted text,
so a failing sensor logging a new value every tick still counts as one message): after
``burst`` records in a window the rest are dropped and counted, and one summary line says how
many were suppressed once the window has passed. ``LogSetup.apply`` can be called again with
a new config (reload): levels, format, target and limits change without losing the counts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bmsd.config import LoggingConfig

log = logging.getLogger(__name__)

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

# Our field names → journal field names (journal fields are upper case letters, digits, _).
JOURNAL_FIELDS = {
    "fault": "FAULT_ID",
    "level": "FAULT_LEVEL",
    "change": "FAULT_CHANGE",
    "module": "MODULE",
    "cell": "CELL",
    "sensor": "SENSOR",
    "string": "STRING",
    "mode": "BMSD_MODE",
}

# A record with this attribute set (``extra={RATE_LIMIT_EXEMPT: True}``) is never rate-limited:
# for messages that are paced already, such as the periodic pack summary.
RATE_LIMIT_EXEMPT = "bmsd_rate_limit_exempt"

# At most this many distinct message keys are tracked; beyond it the oldest windows go.
_MAX_TRACKED_KEYS = 1000


def journal_field_name(key: str) -> str:
    """The journal field a structured log field is stored under."""
    known = JOURNAL_FIELDS.get(key)
    if known is not None:
        return known
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    return f"BMSD_{name}"


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


@dataclass(slots=True)
class _Window:
    started_s: float
    passed: int = 0
    suppressed: int = 0
    level: int = logging.INFO
    template: str = ""


class RateLimitFilter(logging.Filter):
    """Lets ``burst`` records per (logger, level, template) through per window; counts the rest.

    The summary of a window with suppressed records is logged when the next record with the
    same key arrives after the window, or by :meth:`flush` (called about once a second by the
    daemon), whichever comes first.
    """

    SUMMARY_ATTR = "bmsd_rate_limit_summary"

    def __init__(
        self, burst: int, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self.suppressed_total = 0
        # Records also come from other threads (CAN reader, config reload); re-entrant because
        # a summary is logged (and filtered) while the lock is held.
        self._lock = threading.RLock()

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            self.burst <= 0
            or getattr(record, self.SUMMARY_ATTR, False)
            or getattr(record, RATE_LIMIT_EXEMPT, False)
        ):
            return True
        with self._lock:
            return self._count(record)

    def _count(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        key = (record.name, record.levelno, str(record.msg))
        window = self._windows.get(key)
        if window is not None and now - window.started_s >= self.interval_s:
            self._close(key, window)
            window = None
        if window is None:
            if len(self._windows) >= _MAX_TRACKED_KEYS:
                self.flush(force=True)
            window = _Window(now, level=record.levelno, template=str(record.msg))
            self._windows[key] = window
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        self.suppressed_total += 1
        return False

    def flush(self, *, force: bool = False) -> None:
        """Summarise and forget every window that has passed (all of them with ``force``)."""
        with self._lock:
            now = self._clock()
            for key, window in list(self._windows.items()):
                if force or now - window.started_s >= self.interval_s:
                    self._close(key, window)

    def _close(self, key: tuple[str, int, str], window: _Window) -> None:
        del self._windows[key]
        if not window.suppressed:
            return
        elapsed_s = max(self._clock() - window.started_s, 0.0)
        logging.getLogger(key[0]).log(
            window.level,
            "suppressed %d repeated message(s) in %.0f s: %r",
            window.suppressed,
            elapsed_s,
            window.template,
            extra={
                self.SUMMARY_ATTR: True,
                "fields": {"suppressed": window.suppressed, "template": window.template},
            },
        )


def _journal_handler() -> logging.Handler:
    """systemd-python's JournalHandler, with our fields as journal fields."""
    from systemd.journal import JournalHandler

    class _BmsdJournalHandler(JournalHandler):  # type: ignore[misc]
        def emit(self, record: logging.LogRecord) -> None:
            fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
            if fields:
                # A copy: other handlers must not see the journal's field names.
                record = logging.makeLogRecord(record.__dict__)
                for key, value in fields.items():
                    setattr(record, journal_field_name(key), value)
            super().emit(record)

    handler: logging.Handler = _BmsdJournalHandler(SYSLOG_IDENTIFIER="bmsd")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def journal_wanted(target: str, environ: Mapping[str, str]) -> bool:
    """Whether logs go to the journal: asked for, or started by systemd with a journal."""
    if target != "auto":
        return target == "journal"
    stream = environ.get("JOURNAL_STREAM", "")
    if stream:
        # systemd sets it to "device:inode" of the stream it connected stderr to.
        try:
            device, inode = (int(part) for part in stream.split(":"))
            stat = os.fstat(sys.stderr.fileno())
        except (ValueError, OSError):
            pass
        else:
            if (stat.st_dev, stat.st_ino) == (device, inode):
                return True
    return bool(environ.get("INVOCATION_ID")) and JOURNAL_SOCKET.exists()


class LogSetup:
    """Owns the root logger's handler and rate limiter; ``apply`` (re)configures them."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self.limiter = RateLimitFilter(0, 60.0)
        self.handler: logging.Handler | None = None
        self.target = ""
        self._leveled: set[str] = set()
        self._last_flush_s = 0.0

    def apply(self, config: LoggingConfig) -> None:
        self.configure(
            config.level,
            config.format,
            target=config.target,
            loggers=config.loggers,
            burst=config.rate_limit_burst,
            interval_s=config.rate_limit_interval_s,
        )

    def configure(
        self,
        level: str,
        fmt: str,
        *,
        target: str = "stderr",
        loggers: Mapping[str, str] | None = None,
        burst: int = 0,
        interval_s: float = 60.0,
    ) -> None:
        target_now = "stderr"
        problem = ""
        if journal_wanted(target, self._environ):
            try:
                handler = _journal_handler()
                target_now = "journal"
            except ImportError as exc:
                problem = f"journal logging needs systemd-python ({exc}); logging to stderr"
        if target_now == "stderr":
            handler = logging.StreamHandler(sys.stderr)
            if fmt == "json":
                handler.setFormatter(_JsonFormatter())
            else:
                handler.setFormatter(
                    _TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
                )
        self.limiter.burst = burst
        self.limiter.interval_s = interval_s
        handler.addFilter(self.limiter)
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
        root.setLevel(level.upper())
        for name in self._leveled - set(loggers or {}):
            logging.getLogger(name).setLevel(logging.NOTSET)
        for name, logger_level in (loggers or {}).items():
            logging.getLogger(name).setLevel(logger_level.upper())
        self._leveled = set(loggers or {})
        self.handler = handler
        self.target = target_now
        if problem:
            log.warning(problem)

    def housekeeping(self, now_s: float) -> None:
        """Log due rate-limit summaries (at most once a second; cheap when nothing is due)."""
        if now_s - self._last_flush_s >= 1.0:
            self._last_flush_s = now_s
            self.limiter.flush()

    def close(self) -> None:
        """Log every pending summary (at shutdown)."""
        self.limiter.flush(force=True)


def configure_logging(level: str, fmt: str) -> LogSetup:
    """Configure the root logger once, on stderr (replaces earlier handlers)."""
    setup = LogSetup()
    setup.configure(level, fmt)
    return setup
