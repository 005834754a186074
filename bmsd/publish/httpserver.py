"""A bounded WSGI HTTP server: a fixed pool of worker threads behind a short queue.

The metrics endpoint used prometheus-client's threading WSGI server, which starts one thread
per connection with no limit: a connection flood on the metrics port made threads (and their
stacks) without bound, and every scrape created and destroyed a thread. This server accepts
on one thread and hands each connection to one of ``workers`` long-lived threads through a
queue of ``backlog`` places. A connection that finds the queue full is closed unanswered and
counted (``rejected``), so threads and memory stay bounded whatever the clients do.

A worker is held by one connection for at most ``request_timeout_s`` while the request
arrives (a deadline over the whole request, not per read: a client trickling one byte at a
time cannot keep a worker) and for at most as long again while the answer drains. One request
per connection (HTTP/1.0, as wsgiref serves); Prometheus reconnects for each scrape.
"""

from __future__ import annotations

import io
import logging
import queue
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger(__name__)

DEFAULT_BACKLOG = 8  # connections waiting for a worker; beyond it they are closed at once
_Connection = tuple[socket.socket, Any]


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until a monotonic deadline, whatever the pace of the bytes."""

    def __init__(self, sock: socket.socket, deadline_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline_s = deadline_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining_s = self._deadline_s - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(remaining_s)
        return self._sock.recv_into(buffer)


class BoundedRequestHandler(WSGIRequestHandler):
    """wsgiref's handler with the server's request deadline and no access-log line."""

    server: BoundedWSGIServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        deadline_s = time.monotonic() + self.server.request_timeout_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline_s))

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        # The request is in: the answer gets a fresh allowance to drain to the client.
        self.connection.settimeout(self.server.request_timeout_s)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        return  # no line per scrape in the journal


class BoundedWSGIServer(WSGIServer):
    """A WSGI server whose threads, queue and per-connection time are all bounded."""

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        *,
        workers: int,
        request_timeout_s: float,
        backlog: int = DEFAULT_BACKLOG,
        name: str = "http",
    ) -> None:
        if workers < 1 or backlog < 1 or request_timeout_s <= 0:
            raise ValueError("workers and backlog must be >= 1, request_timeout_s > 0")
        self.address_family = family
        self.request_queue_size = max(self.request_queue_size, backlog)
        self.request_timeout_s = request_timeout_s
        self.rejected = 0  # connections closed unanswered: every worker busy, queue full
        self._waiting: queue.Queue[_Connection | None] = queue.Queue(maxsize=backlog)
        self._workers: list[threading.Thread] = []  # server_close runs if the bind fails
        super().__init__(address, BoundedRequestHandler)
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-worker-{index}", daemon=True)
            for index in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._waiting.put_nowait((request, client_address))
        except queue.Full:
            self.rejected += 1
            self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self._waiting.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception as exc:  # a client's fault (reset, timeout): its connection only
                log.debug("HTTP connection from %s ended: %r", client_address, exc)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        """Stop accepting, let the workers finish their connection, close the waiting ones."""
        super().server_close()
        while True:
            try:
                item = self._waiting.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        for _ in self._workers:
            self._waiting.put(None)
        for worker in self._workers:
            worker.join(timeout=self.request_timeout_s)
