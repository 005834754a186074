"""sd_notify: tells systemd when bmsd is ready, what it is doing, and that its loop is alive.

Messages go through systemd-python's ``systemd.daemon.notify`` to ``$NOTIFY_SOCKET``; without
that variable (not started by systemd as ``Type=notify``) every call does nothing.

- ``READY=1`` once, when the daemon is up (buses open, state restored, servers listening), and
  again after each reload.
- ``WATCHDOG=1`` only from the control loop's tick hook, so it proves a tick completed: a
  stalled loop stops the pings and systemd kills and restarts the daemon after ``WatchdogSec``.
  Pings are paced at half of ``$WATCHDOG_USEC`` (the usual sd_watchdog_enabled rule), not sent
  every tick.
- ``STATUS=`` the one-line pack summary, at ``service.status_interval_s``.
- ``RELOADING=1`` with ``MONOTONIC_USEC`` at the start of a reload (as systemd's
  ``Type=notify-reload`` expects), ``STOPPING=1`` at shutdown.

A failure to send is logged (rate-limited by the log set-up) and never reaches the control loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

Send = Callable[[str], bool]


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout systemd asks us to keep (None: no watchdog for this process).

    Same rules as sd_watchdog_enabled(3): ``WATCHDOG_USEC`` a positive number of microseconds,
    and ``WATCHDOG_PID``, when set, naming this process.
    """
    text = environ.get("WATCHDOG_USEC", "")
    if not text:
        return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number: watchdog not kept", text)
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 1e6


@dataclass(slots=True)
class Pacer:
    """Due at most once per ``period_s`` (monotonic time passed in); the first call is due."""

    period_s: float
    last_s: float | None = None

    def due(self, now_s: float) -> bool:
        if self.period_s <= 0:
            return False
        if self.last_s is not None and now_s - self.last_s < self.period_s:
            return False
        self.last_s = now_s
        return True


def _systemd_send() -> Send | None:
    try:
        from systemd.daemon import notify
    except ImportError:
        return None

    def send(message: str) -> bool:
        return bool(notify(message))

    return send


class ServiceNotifier:
    """The daemon's side of the sd_notify protocol."""

    def __init__(
        self,
        status_interval_s: float,
        *,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
        send: Send | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.socket = environ.get("NOTIFY_SOCKET", "")
        self._send: Send | None = None
        if self.socket:
            self._send = send if send is not None else _systemd_send()
            if self._send is None:
                log.error(
                    "NOTIFY_SOCKET is set but systemd-python is not installed (install "
                    "bmsd[systemd]): systemd will not learn that bmsd is ready"
                )
        self.watchdog_s = watchdog_interval_s(environ, os.getpid() if pid is None else pid)
        self._watchdog = Pacer(self.watchdog_s / 2 if self.watchdog_s else 0.0)
        self._status = Pacer(status_interval_s)
        self.ready_sent = False
        self.stopping_sent = False
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def set_status_interval(self, status_interval_s: float) -> None:
        self._status.period_s = status_interval_s

    def notify(self, *lines: str) -> None:
        if self._send is None:
            return
        message = "\n".join(lines)
        try:
            self._send(message)
            self.sent += 1
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.socket, exc)

    def ready(self, status: str) -> None:
        """READY=1: start-up (or a reload) is complete."""
        self.ready_sent = True
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic time, before a reload starts."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")

    def stopping(self, status: str = "stopping") -> None:
        """STOPPING=1, once (from the signal handler, or at the end of the run)."""
        if not self.stopping_sent:
            self.stopping_sent = True
            self.notify("STOPPING=1", f"STATUS={status}")

    def tick(self, now_s: float, status: Callable[[], str]) -> None:
        """After each completed control tick: the watchdog ping and the status, when due."""
        if self._send is None or not self.ready_sent or self.stopping_sent:
            return
        lines = []
        if self.watchdog_s is not None and self._watchdog.due(now_s):
            lines.append("WATCHDOG=1")
        if self._status.due(now_s):
            try:
                lines.append(f"STATUS={status()}")
            except Exception:  # a broken status line must not cost the watchdog ping
                log.exception("cannot build the status line")
        if lines:
            self.notify(*lines)
