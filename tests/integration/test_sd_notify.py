"""sd_notify against a real daemon: a unix datagram socket given as NOTIFY_SOCKET, as systemd
does, with the sender's pid checked from the kernel's credentials (SO_PASSCRED).

The daemon runs the simulated pack (etc/sim.toml) as its own process. Its log goes to a file
(not a pipe nobody drains while the test listens to the socket).
"""

from __future__ import annotations

import array
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests_support import ROOT

WATCHDOG_S = 3.0  # WATCHDOG_USEC given to the daemon; pings are due every WATCHDOG_S / 2
STALL_S = 4.0


@dataclass(frozen=True)
class Notice:
    received_s: float  # monotonic
    pid: int
    fields: dict[str, str]


class NotifySocket:
    """The listening end of the sd_notify protocol, like systemd's."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.notices: list[Notice] = []

    def receive(self, timeout_s: float) -> Notice | None:
        self.sock.settimeout(max(timeout_s, 0.001))
        creds_size = array.array("i", [0, 0, 0]).itemsize * 3
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[:creds_size])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        notice = Notice(time.monotonic(), pid, fields)
        self.notices.append(notice)
        return notice

    def wait_for(self, key: str, timeout_s: float, value: str | None = None) -> Notice:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            notice = self.receive(left)
            if notice and key in notice.fields and value in (None, notice.fields[key]):
                return notice
        raise AssertionError(f"no {key} from the daemon within {timeout_s} s")

    def collect(self, duration_s: float) -> list[Notice]:
        deadline = time.monotonic() + duration_s
        got = []
        while (left := deadline - time.monotonic()) > 0:
            notice = self.receive(left)
            if notice:
                got.append(notice)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_dir() -> Iterator[Path]:
    # A short path: unix socket paths are limited to 107 bytes, pytest's tmp_path can be long.
    directory = Path(tempfile.mkdtemp(prefix="bmsd-notify-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _start(
    config: Path, tmp_path: Path, notify: NotifySocket, *overrides: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)),
        BMSD_DEBUG_STALL_S=str(STALL_S),
    )
    env.pop("WATCHDOG_PID", None)
    env.pop("INVOCATION_ID", None)
    env.pop("JOURNAL_STREAM", None)
    args = [
        sys.executable,
        "-m",
        "bmsd.cli",
        "run",
        "--config",
        str(config),
        "--set",
        f"state.directory='{tmp_path / 'state'}'",
        "--set",
        f"can.slaves.channel='notify-{tmp_path.name}'",
        "--set",
        "metrics.port=0",
        "--set",
        "modbus.port=0",
    ]
    for override in overrides:
        args += ["--set", override]
    log = (tmp_path / "daemon.log").open("wb")
    return subprocess.Popen(args, cwd=ROOT, env=env, stderr=log, stdout=log)


def _log_text(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")


def _wait_log(tmp_path: Path, pattern: str, timeout_s: float, start: int = 0) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.compile(pattern).search(_log_text(tmp_path), start)
        if match:
            return match
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the daemon's log:\n{_log_text(tmp_path)[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _gaps(notices: list[Notice]) -> list[float]:
    pings = [n.received_s for n in notices if n.fields.get("WATCHDOG") == "1"]
    return [b - a for a, b in itertools.pairwise(pings)]


def test_ready_watchdog_status_and_stopping(tmp_path: Path, notify_dir: Path) -> None:
    notify = NotifySocket(notify_dir)
    process = _start(ROOT / "etc" / "sim.toml", tmp_path, notify, "service.status_interval_s=1.0")
    try:
        ready = notify.wait_for("READY", 30)
        assert ready.pid == process.pid, "READY must come from the main process"
        # READY only once the control socket (a server) listens and the state is restored.
        assert (tmp_path / "state" / "bmsd.sock").is_socket()
        _wait_log(tmp_path, r"telling systemd we are ready \(watchdog 3 s\)", 5)

        # Regular pings, paced at half of WATCHDOG_USEC: never more often, never late.
        # (Measured at the receiver on a shared machine: scheduling jitter is allowed for.)
        running = notify.collect(8.0)
        gaps = sorted(_gaps(running))
        period_s = WATCHDOG_S / 2
        assert len(gaps) >= 3, f"too few watchdog pings: {running}"
        assert gaps[0] >= 0.5 * period_s, f"pinged faster than paced: {gaps}"
        assert 0.9 * period_s <= gaps[len(gaps) // 2] <= 1.4 * period_s, f"not paced: {gaps}"
        assert gaps[-1] < WATCHDOG_S, f"a ping came too late for the watchdog: {gaps}"
        statuses = [n.fields["STATUS"] for n in running if "STATUS" in n.fields]
        assert statuses, "no STATUS line"
        assert re.search(r"tick=\d+ mode=\w+ CVL=.* modules=4/4", statuses[-1]), statuses[-1]
        assert all(n.pid == process.pid for n in running)

        # A control tick blocked inside the process (the event loop stalls): no pings.
        os.kill(process.pid, signal.SIGUSR2)
        signalled = time.monotonic()
        stalled = notify.collect(STALL_S + 2.0)
        times = [n.received_s for n in stalled if n.fields.get("WATCHDOG") == "1"]
        assert times, "pings did not resume after the stall"
        first_after = times[0]
        assert first_after - signalled >= STALL_S - 0.5, (
            f"pinged {first_after - signalled:.2f} s into a {STALL_S} s stall"
        )
        assert "debug: blocking the control loop" in _log_text(tmp_path)

        # The whole process stopped (SIGSTOP): silence, then pings again after SIGCONT.
        os.kill(process.pid, signal.SIGSTOP)
        try:
            assert [n for n in notify.collect(2.5) if "WATCHDOG" in n.fields] == []
        finally:
            os.kill(process.pid, signal.SIGCONT)
        notify.wait_for("WATCHDOG", WATCHDOG_S + 1)

        process.send_signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING", 10)
        assert stopping.pid == process.pid
        assert process.wait(timeout=10) == 0
        after_stop = [n for n in notify.notices if n.received_s > stopping.received_s]
        assert not [n for n in after_stop if "WATCHDOG" in n.fields], "pinged after STOPPING"
    finally:
        _stop(process)
        notify.close()


def _copy_config_tree(tmp_path: Path) -> Path:
    """etc/ and dbc/ side by side (the protocol file names DBCs relative to itself)."""
    root = tmp_path / "tree"
    shutil.copytree(ROOT / "etc", root / "etc")
    shutil.copytree(ROOT / "dbc", root / "dbc")
    return root / "etc" / "sim.toml"


def _edit(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))


def test_sighup_reloads_a_good_config_and_rejects_a_bad_one(
    tmp_path: Path, notify_dir: Path
) -> None:
    notify = NotifySocket(notify_dir)
    config = _copy_config_tree(tmp_path)
    process = _start(config, tmp_path, notify)
    try:
        notify.wait_for("READY", 30)
        summaries_before = _log_text(tmp_path).count(" pack tick=")

        # Good: a run-time change (summary period) and one that needs a restart (tick).
        _edit(config, "summary_log_interval_s = 5.0", "summary_log_interval_s = 0.3")
        _edit(config, "tick_s = 0.1", "tick_s = 0.05")
        mark = len(_log_text(tmp_path))
        sent_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        os.kill(process.pid, signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", 10)
        assert reloading.pid == process.pid
        usec = int(reloading.fields["MONOTONIC_USEC"])
        assert sent_usec <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        ready = notify.wait_for("READY", 10)
        assert "need a restart" in ready.fields["STATUS"]
        _wait_log(tmp_path, r"reloaded .*sim\.toml: control\.summary_log_interval_s", 5, mark)
        _wait_log(tmp_path, r"only applied after a restart: control\.tick_s", 5, mark)
        time.sleep(2.0)
        text = _log_text(tmp_path)
        assert text.count(" pack tick=", mark) >= 4, "the new summary period was not applied"
        assert text.count(" pack tick=") > summaries_before

        # Bad: rejected with file, key and reason; the running configuration stays.
        good_text = config.read_text()
        _edit(config, "tick_s = 0.05", "tick_s = 0.001")
        _edit(config, "summary_log_interval_s = 0.3", "summary_log_interval_s = 30.0")
        mark = len(_log_text(tmp_path))
        os.kill(process.pid, signal.SIGHUP)
        notify.wait_for("RELOADING", 10)
        ready = notify.wait_for("READY", 10)
        assert "rejected" in ready.fields["STATUS"]
        rejected = _wait_log(tmp_path, r"reload rejected[^\n]*\n[^\n]*", 5, mark).group(0)
        assert f"{config}: control.tick_s: must be between 0.01 and 10" in rejected
        time.sleep(1.5)
        assert _log_text(tmp_path).count(" pack tick=", mark) >= 3, "old summary period lost"
        assert process.poll() is None
        notify.wait_for("WATCHDOG", WATCHDOG_S)

        # Good again: the log level applies at run time (no more info summaries).
        config.write_text(good_text.replace('level = "info"', 'level = "warning"', 1))
        os.kill(process.pid, signal.SIGHUP)
        notify.wait_for("READY", 10, value="1")
        time.sleep(0.5)
        mark = len(_log_text(tmp_path))
        time.sleep(1.5)
        assert " pack tick=" not in _log_text(tmp_path)[mark:], "log level not applied"

        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", 10)
        assert process.wait(timeout=10) == 0
    finally:
        _stop(process)
        notify.close()
