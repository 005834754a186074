"""The local control socket answers every line, however malformed, with a JSON reply: real
Unix sockets, the submit function stands in for the control loop (its replies are the loop's
own Reply type)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bmsd.control.controller import Command
from bmsd.control.socket import ControlServer
from bmsd.model.bms import Answer, Reply, Request


async def _exchange(path: Path, line: bytes) -> dict[str, str]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 5.0)
    writer.close()
    return dict(json.loads(answer))


def _serve_one(tmp_path: Path, line: bytes) -> tuple[dict[str, str], list[Command]]:
    """Start a control server, send ``line``, return its answer and what reached the loop."""
    submitted: list[Command] = []

    async def submit(command: Command) -> Reply:
        submitted.append(command)
        return Reply(command.request, Answer.ACCEPTED, "done")

    async def scenario() -> dict[str, str]:
        server = ControlServer(tmp_path / "bmsd.sock", submit, lambda: "all well")
        await server.start()
        try:
            return await _exchange(tmp_path / "bmsd.sock", line)
        finally:
            await server.close()

    return asyncio.run(scenario()), submitted


@pytest.mark.parametrize(
    "line",
    [
        b"[1]\n",
        b'"reset"\n',
        b"42\n",
        b"null\n",
        b"{not json\n",
        b'{"request": "fly"}\n',
        b"\n",
        b"[" * 2000 + b"]" * 2000 + b"\n",  # RecursionError in json, under the length limit
        b'{"request": ' + b"[" * 3000 + b"\n",
        b"[" * 100_000 + b"\n",  # past the reader's limit
        b'{"request": "reset", "origin": "' + b"x" * 5000 + b'"}\n',  # over MAX_LINE_BYTES
    ],
    ids=lambda line: repr(line[:20]) + f"...{len(line)}",
)
def test_a_malformed_request_line_gets_an_illegal_answer(tmp_path: Path, line: bytes) -> None:
    reply, submitted = _serve_one(tmp_path, line)
    assert reply["answer"] == "illegal"
    assert submitted == []


def test_a_valid_request_reaches_the_control_loop(tmp_path: Path) -> None:
    line = b'{"request": "reset", "origin": "commissioning"}\n'
    reply, submitted = _serve_one(tmp_path, line)
    assert reply == {"answer": "accepted", "reason": "done"}
    assert [c.request for c in submitted] == [Request.RESET]
    assert submitted[0].origin.startswith("control socket (commissioning; uid=")
