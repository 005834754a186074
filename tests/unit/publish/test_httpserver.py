"""The bounded HTTP server of the metrics endpoint: real sockets on loopback.

What an operator relies on: scrapes are answered; a client that trickles its request or never
sends it loses its connection at the deadline and frees the worker; a flood of connections is
closed (and counted) instead of starting threads; closing the server ends its workers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bmsd.publish.httpserver import BoundedWSGIServer

BODY = b"metric_total 1\n"


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


@contextmanager
def serving(*, workers: int, timeout_s: float, backlog: int = 8) -> Iterator[BoundedWSGIServer]:
    server = BoundedWSGIServer(
        ("127.0.0.1", 0),
        socket.AF_INET,
        workers=workers,
        request_timeout_s=timeout_s,
        backlog=backlog,
        name="test-http",
    )
    server.set_app(_app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _get(port: int, timeout_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _closed_within(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closed ``sock`` (reads until EOF or reset)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_a_scrape_is_answered() -> None:
    with serving(workers=2, timeout_s=5.0) as server:
        reply = _get(server.server_port)
    assert reply.startswith(b"HTTP/1.0 200 OK")
    assert reply.endswith(BODY)


def test_a_trickling_client_is_cut_at_the_request_deadline() -> None:
    """One byte every 0.2 s never completes the request line: cut at 1 s, not per byte."""
    with serving(workers=1, timeout_s=1.0) as server:
        slow = socket.create_connection(("127.0.0.1", server.server_port))
        started = time.monotonic()
        closed = False
        try:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" * 4:
                slow.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > 4.0:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            assert _closed_within(slow, 5.0) < 5.0
        slow.close()
        assert time.monotonic() - started < 4.0, "the trickling client kept its worker"
        # The single worker is free again: an ordinary scrape is served.
        assert _get(server.server_port).endswith(BODY)


def test_a_silent_client_frees_the_worker_at_the_deadline() -> None:
    with serving(workers=1, timeout_s=0.5) as server:
        silent = socket.create_connection(("127.0.0.1", server.server_port))
        held_s = _closed_within(silent, 5.0)
        silent.close()
        assert 0.4 < held_s < 2.0
        assert _get(server.server_port).endswith(BODY)


def test_a_flood_beyond_the_queue_is_closed_and_counted_without_new_threads() -> None:
    with serving(workers=1, timeout_s=1.5, backlog=2) as server:
        threads_before = threading.active_count()
        holder = socket.create_connection(("127.0.0.1", server.server_port))
        time.sleep(0.2)  # the worker is now waiting for the holder's request
        flood = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(10)]
        deadline = time.monotonic() + 5.0
        while server.rejected < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.rejected == 8  # two wait in the queue, the other eight are closed
        assert threading.active_count() == threads_before
        for sock in flood[2:]:
            assert _closed_within(sock, 2.0) < 2.0
        for sock in (holder, *flood):
            sock.close()
        # Once the holder's deadline passes, the queue drains and scrapes are served again
        # (a scrape that comes while the closed flood still fills the queue is itself
        # refused, as Prometheus's next scrape would be retried).
        deadline = time.monotonic() + 10.0
        while not _get(server.server_port, timeout_s=10.0).endswith(BODY):
            assert time.monotonic() < deadline, "scrapes were not served again"
            time.sleep(0.1)


def test_many_concurrent_scrapes_are_served_by_the_fixed_pool() -> None:
    with serving(workers=2, timeout_s=5.0, backlog=64) as server:
        threads_before = threading.active_count()
        replies: list[bytes] = []

        def scrape() -> None:
            replies.append(_get(server.server_port))

        clients = [threading.Thread(target=scrape) for _ in range(40)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(10)
        assert len(replies) == 40
        assert all(reply.endswith(BODY) for reply in replies)
        assert server.rejected == 0
        # Only the 40 client threads came and went: the server started none.
        assert threading.active_count() == threads_before


def test_closing_the_server_ends_its_workers() -> None:
    with serving(workers=3, timeout_s=1.0) as server:
        workers = [t for t in threading.enumerate() if t.name.startswith("test-http-worker")]
        assert len(workers) == 3
        assert _get(server.server_port).endswith(BODY)
    for worker in workers:
        worker.join(2)
        assert not worker.is_alive()


@pytest.mark.parametrize(
    ("workers", "timeout_s", "backlog"), [(0, 1.0, 8), (1, 0.0, 8), (1, 1.0, 0)]
)
def test_impossible_sizes_are_refused(workers: int, timeout_s: float, backlog: int) -> None:
    with pytest.raises(ValueError):
        BoundedWSGIServer(
            ("127.0.0.1", 0),
            socket.AF_INET,
            workers=workers,
            request_timeout_s=timeout_s,
            backlog=backlog,
        )
