"""The local control socket: requests (reset, close, open) from tools on the gateway.

A Unix stream socket in the state directory (mode 0660, so only root and the bmsd group can
use it). One JSON object per line in each direction: ``{"request": "reset", "origin": "..."}``
answered by ``{"answer": "accepted", "reason": "..."}``. The origin recorded in the audit
trail is the caller's own text plus the peer's uid and pid taken from the kernel
(SO_PEERCRED), so a reset is always attributable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from bmsd.control.controller import Command
from bmsd.errors import BmsdError
from bmsd.model.bms import Reply, Request

log = logging.getLogger(__name__)

SOCKET_NAME = "bmsd.sock"
MAX_LINE_BYTES = 4096
CLIENT_TIMEOUT_S = 5.0

Submit = Callable[[Command], Awaitable[Reply]]


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _peer(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return f"uid={uid} pid={pid}"
    except (OSError, AttributeError):
        return "peer unknown"


class ControlServer:
    """Serves the control socket until closed."""

    def __init__(self, path: Path, submit: Submit, explain: Callable[[], str]) -> None:
        self.path = path
        self._submit = submit
        self._explain = explain
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed daemon
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(self.path), limit=2 * MAX_LINE_BYTES
        )
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        try:
            # readline raises ValueError past the reader's limit: the line is never buffered
            # whole; shorter lines are held to MAX_LINE_BYTES in _answer.
            line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT_S)
            response = await self._answer(line, peer)
        except (TimeoutError, asyncio.LimitOverrunError, ValueError):
            response = {"answer": "illegal", "reason": "no valid request line"}
        except Exception:  # a bug must still answer the caller and close the connection
            log.exception("control socket: request from %s failed", peer)
            response = {"answer": "illegal", "reason": "internal error (logged by the daemon)"}
        writer.write((json.dumps(response) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, line: bytes, peer: str) -> dict[str, str]:
        if len(line) > MAX_LINE_BYTES:
            return {"answer": "illegal", "reason": "request too long"}
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise TypeError("the request line is not a JSON object")
            if message.get("request") == "explain":  # a query, not a request to the machine
                return {"answer": "accepted", "reason": self._explain()}
            request = Request(message["request"])
            origin = str(message.get("origin", "unnamed"))[:200]
        except (ValueError, KeyError, TypeError, RecursionError):
            # RecursionError: deeply nested JSON ("[[[[..."), well within the length limit.
            choices = ", ".join(r.value for r in Request)
            return {"answer": "illegal", "reason": f'expected {{"request": one of {choices}}}'}
        reply = await self._submit(Command(request, f"control socket ({origin}; {peer})"))
        return {"answer": reply.answer.value, "reason": reply.reason}


def send_request(
    path: Path, request: Request | str, origin: str, timeout_s: float = 10.0
) -> dict[str, str]:
    """Blocking client used by the CLI; raises BmsdError when no daemon answers.

    ``request`` is a Request, or the query ``"explain"``.
    """
    name = request.value if isinstance(request, Request) else request
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout_s)
            client.connect(str(path))
            client.sendall((json.dumps({"request": name, "origin": origin}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise BmsdError(f"no daemon is running with state directory {path.parent}") from None
    except OSError as exc:
        raise BmsdError(f"cannot reach the daemon at {path}: {exc}") from exc
    try:
        answer = json.loads(data)
    except ValueError:
        raise BmsdError("the daemon sent no valid answer") from None
    if not isinstance(answer, dict):
        raise BmsdError("the daemon sent no valid answer")
    return {str(k): str(v) for k, v in answer.items()}
