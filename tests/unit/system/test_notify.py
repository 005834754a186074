"""The pure parts of sd_notify: the watchdog environment and pacing, and what is sent when."""

from __future__ import annotations

import pytest

from bmsd.system.notify import Pacer, ServiceNotifier, watchdog_interval_s


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "5000000"}, 5.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "43"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval_from_environment(
    environ: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval_s(environ, pid=42) == expected


def test_pacer_is_due_once_per_period() -> None:
    pacer = Pacer(1.0)
    assert pacer.due(10.0)
    assert not pacer.due(10.5)
    assert not pacer.due(10.999)
    assert pacer.due(11.0)  # exactly one period later
    assert not pacer.due(11.5)
    assert pacer.due(13.0)  # after a gap: due at once, counted from now
    assert not pacer.due(13.9)
    assert not Pacer(0.0).due(100.0)  # period 0: never


def _notifier(environ: dict[str, str], status_s: float = 2.0) -> tuple[ServiceNotifier, list[str]]:
    sent: list[str] = []

    def send(message: str) -> bool:
        sent.append(message)
        return True

    return ServiceNotifier(status_s, environ=environ, pid=7, send=send), sent


def test_nothing_is_sent_without_notify_socket() -> None:
    notifier, sent = _notifier({"WATCHDOG_USEC": "1000000"})
    notifier.ready("up")
    notifier.tick(1.0, lambda: "s")
    notifier.stopping()
    assert not notifier.enabled
    assert sent == []


def test_watchdog_only_after_ready_and_at_half_the_interval() -> None:
    notifier, sent = _notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}, status_s=0)
    notifier.tick(0.0, lambda: "s")
    assert sent == [], "no ping before READY"
    notifier.ready("up")
    assert sent == ["READY=1\nSTATUS=up"]
    sent.clear()
    for step in range(21):  # 2 s of 100 ms ticks
        notifier.tick(1.0 + step * 0.1, lambda: "s")
    assert sent == ["WATCHDOG=1"] * 5  # at 1.0, 1.5, 2.0, 2.5, 3.0


def test_status_at_its_own_pace_and_nothing_after_stopping() -> None:
    notifier, sent = _notifier({"NOTIFY_SOCKET": "/x"}, status_s=1.0)
    notifier.ready("up")
    sent.clear()
    for step in range(11):
        notifier.tick(step * 0.25, lambda: "mode=closed")
    assert sent == ["STATUS=mode=closed"] * 3  # at 0, 1, 2 s; no watchdog configured
    notifier.stopping()
    notifier.stopping()
    notifier.tick(10.0, lambda: "mode=closed")
    assert sent[3:] == ["STOPPING=1\nSTATUS=stopping"]


def test_reloading_carries_the_monotonic_time() -> None:
    notifier, sent = _notifier({"NOTIFY_SOCKET": "/x"})
    notifier.reloading()
    lines = sent[0].split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


def test_a_failing_socket_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def send(message: str) -> bool:
        raise ConnectionRefusedError(111, "Connection refused")

    notifier = ServiceNotifier(1.0, environ={"NOTIFY_SOCKET": "/gone"}, pid=1, send=send)
    notifier.ready("up")
    assert "sd_notify to /gone failed" in caplog.text


def test_a_broken_status_line_does_not_cost_the_ping(caplog: pytest.LogCaptureFixture) -> None:
    notifier, sent = _notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"})
    notifier.ready("up")
    sent.clear()

    def broken() -> str:
        raise ValueError("no snapshot")

    notifier.tick(5.0, broken)
    assert sent == ["WATCHDOG=1"]
    assert "cannot build the status line" in caplog.text
