"""Hostile Modbus TCP clients against bmsd's server, shared by the test and the benchmark.

Raw-socket attackers (asyncio streams on loopback), each an attack *kind* with a share of the
frame budget:

- ``random_bytes``: random byte strings of 1..300 bytes (no framing at all)
- ``random_pdu``: a valid MBAP header with a random PDU of 1..253 bytes, answer awaited
- ``truncated_mbap``: 1..6 bytes of an MBAP header, then the connection is closed
- ``bad_length``: MBAP length field 0, 1, 255 or 65535, with and without that many bytes
- ``wrong_protocol``: a valid read with a protocol id other than 0
- ``unknown_function``: every function code bmsd does not serve (0..127 but 3, 4, 6, 16),
  with plausible data, answer awaited (must be an exception)
- ``bad_read``: FC 03/04 beyond the map and with count 0, 126, 65535 or random
- ``unpermitted_write``: FC 5, 6, 15, 16, 22 and 23 on every writable register (and a few
  others) with random values; any non-exception answer is a write that was accepted
- ``no_read``: valid 125-register reads sent back to back by a client that never reads the
  answers (the server must not buffer them without bound)
- ``slowloris``: many connections sending one byte of a valid request every few seconds
- ``connect_storm``: hundreds of connects per second, half of them sending half a frame,
  half of them closed with a reset
- ``pipelined``: bursts of 2..40 of the requests above (bad reads, unknown functions,
  unpermitted writes, random PDUs) and wrong-protocol frames sent in one write: every request
  must be answered, in order, with its own transaction id

While they run, :func:`good_client` reads a block of input registers with the real pymodbus
client and checks every answer. Everything random comes from one seed, printed by the callers,
so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from bmsd.config import Config
from bmsd.model.topology import Topology
from bmsd.publish.modbus.registers import REGISTERS, mapped_addresses
from bmsd.publish.modbus.sunspec import PackFacts, SunSpecMap

WRITE_FUNCTIONS = (5, 6, 15, 16, 22, 23)
SERVED_FUNCTIONS = (3, 4, 6, 16)

# Share of the frame budget per kind (slowloris and connect_storm are paced, not budgeted,
# except that a storm connection with half a frame counts as one frame).
SHARES: dict[str, float] = {
    "random_bytes": 0.20,
    "random_pdu": 0.07,
    "truncated_mbap": 0.03,
    "bad_length": 0.16,
    "wrong_protocol": 0.12,
    "unknown_function": 0.07,
    "bad_read": 0.08,
    "unpermitted_write": 0.10,
    "no_read": 0.10,
    "connect_storm": 0.02,
    "pipelined": 0.05,
}
KINDS = (*SHARES, "slowloris")

REPLY_TIMEOUT_S = 3.0
# Every pipelined request must be answered: a generous timeout, as for the good client (on a
# loaded test machine the daemon's threads can wait seconds for a core).
PIPELINE_REPLY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is and what its map looks like."""

    host: str
    port: int
    unit: int
    writable: tuple[int, ...]  # holding registers bmsd accepts writes on (when permitted)
    input_end: int  # first input register past the map
    holding_end: int  # first holding register past the SunSpec models


def target_of(config: Config, host: str, port: int) -> Target:
    """The target for a daemon of this config (its map computed by bmsd's own tables)."""
    topology = Topology.from_config(config.pack)
    facts = PackFacts("x", "x", "x", "x", config.modbus.unit_id, 1.0, 1.0, 1.0)
    sunspec = SunSpecMap(topology, facts, 100.0)
    writable = sorted(
        {r.address for r in REGISTERS if r.writable and r.space == "holding"} | set(sunspec.writes)
    )
    return Target(
        host,
        port,
        config.modbus.unit_id,
        tuple(writable),
        mapped_addresses("input", topology)[-1] + 1,
        sunspec.start + sunspec.length,
    )


@dataclass(slots=True)
class KindStats:
    """What one attack kind did and what it got back."""

    frames: int = 0
    bytes: int = 0
    connections: int = 0
    closed_by_server: int = 0  # reset or EOF from the server
    replies: int = 0
    no_reply: int = 0  # an answer was awaited and none came
    exceptions: Counter[int] = field(default_factory=Counter)  # by exception code
    writes_accepted: int = 0  # non-exception answers to a write function code
    wrong_answers: int = 0  # normal answers where an exception was due, or malformed ones
    elapsed_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)  # why a connection ended early

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(slots=True)
class GoodStats:
    """The well-behaved client's view."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    ticks_seen: set[int] = field(default_factory=set)
    reconnects: int = 0
    stale: int = 0  # exception 04: the newest state was too old (control loop late)

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def mbap(tid: int, pdu: bytes, unit: int, *, protocol: int = 0, length: int | None = None) -> bytes:
    """An MBAP header and PDU; ``length`` overrides the length field."""
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid & 0xFFFF, protocol, size & 0xFFFF, unit) + pdu


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(transaction id, function code, rest of the PDU) of one answer."""
    header = await reader.readexactly(7)
    tid, length = struct.unpack(">H2xH", header[:6])
    if length < 2:
        raise ValueError(f"answer with MBAP length {length}")
    body = await reader.readexactly(length - 1)
    return tid, body[0], body[1:]


def _expected_read_ok(function: int, address: int, count: int, target: Target) -> bool:
    """Whether a read must be answered normally (else an exception is due)."""
    if not 1 <= count <= 125:
        return False
    end = target.input_end if function == 4 else target.holding_end
    return address + count <= end


class Campaign:
    """Runs the attack kinds against one target until their budgets are spent."""

    def __init__(
        self,
        target: Target,
        seed: int,
        frames: int,
        *,
        deadline_s: float = 120.0,
        min_duration_s: float = 0.0,
        shares: dict[str, float] | None = None,
        slowloris_connections: int = 24,
        slowloris_interval_s: float = 2.0,
        storm_per_s: float = 300.0,
    ) -> None:
        self.target = target
        self.seed = seed
        self.rng = random.Random(seed)
        chosen = SHARES if shares is None else shares
        self.quota = {kind: max(1, round(frames * share)) for kind, share in chosen.items()}
        self.deadline_s = deadline_s
        self.min_duration_s = min_duration_s
        self.slowloris_connections = slowloris_connections
        self.slowloris_interval_s = slowloris_interval_s
        self.storm_per_s = storm_per_s
        self.stats = {kind: KindStats() for kind in KINDS}
        self._tid = 0
        self._stop = asyncio.Event()
        self._deadline = 0.0

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.stats.values())

    @property
    def writes_accepted(self) -> int:
        return sum(s.writes_accepted for s in self.stats.values())

    def _next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def _rng(self, kind: str, worker: int) -> random.Random:
        # One generator per worker from the seed: the frames of a kind do not depend on how
        # the workers interleave.
        return random.Random(f"{self.seed}/{kind}/{worker}")

    async def run(self) -> None:
        self._deadline = time.monotonic() + self.deadline_s
        started = time.monotonic()
        runners: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "random_pdu": lambda: self._lockstep("random_pdu", self._random_pdu, workers=2),
            "unknown_function": lambda: self._lockstep(
                "unknown_function", self._unknown_function, workers=2
            ),
            "bad_read": lambda: self._lockstep("bad_read", self._bad_read, workers=2),
            "unpermitted_write": lambda: self._lockstep(
                "unpermitted_write", self._unpermitted_write, workers=3
            ),
            "random_bytes": lambda: self._fire("random_bytes", self._random_bytes),
            "bad_length": lambda: self._fire("bad_length", self._bad_length),
            "wrong_protocol": lambda: self._fire("wrong_protocol", self._wrong_protocol),
            "no_read": lambda: self._fire("no_read", self._no_read, read=False),
            "truncated_mbap": self._truncated,
            "pipelined": self._pipelined,
            "connect_storm": self._storm,
        }
        budgeted = [runners[kind]() for kind in self.quota]
        paced = asyncio.ensure_future(self._slowloris())
        try:
            await asyncio.gather(*budgeted)
            rest_s = self.min_duration_s - (time.monotonic() - started)
            if rest_s > 0:
                await asyncio.sleep(rest_s)
        finally:
            self._stop.set()
            await paced

    def _done(self, kind: str) -> bool:
        return (
            self.stats[kind].frames >= self.quota[kind]
            or time.monotonic() > self._deadline
            or self._stop.is_set()
        )

    async def _connect(self, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.target.host, self.target.port)
            except OSError:
                await asyncio.sleep(0.05)
                if time.monotonic() > self._deadline:
                    raise
                continue
            self.stats[kind].connections += 1
            return reader, writer

    @staticmethod
    async def _close(writer: asyncio.StreamWriter, *, reset: bool = False) -> None:
        if reset:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # closed by the server already
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    # -- lockstep kinds: one request, its answer awaited -------------------------------------

    async def _lockstep(
        self,
        kind: str,
        make: Callable[[random.Random], tuple[bytes, Callable[[int, bytes], None]]],
        *,
        workers: int,
    ) -> None:
        async def worker(index: int) -> None:
            rng = self._rng(kind, index)
            stats = self.stats[kind]
            reader, writer = await self._connect(kind)
            try:
                while not self._done(kind):
                    frame, check = make(rng)
                    try:
                        writer.write(frame)
                        await writer.drain()
                        stats.frames += 1
                        stats.bytes += len(frame)
                        _tid, function, rest = await asyncio.wait_for(
                            _read_reply(reader), REPLY_TIMEOUT_S
                        )
                    except TimeoutError:
                        # No answer (a frame pymodbus drops silently): start afresh, the
                        # stream may hold half a frame.
                        stats.no_reply += 1
                        await self._close(writer)
                        reader, writer = await self._connect(kind)
                        continue
                    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                        stats.closed_by_server += 1
                        stats.errors[type(exc).__name__] += 1
                        await self._close(writer)
                        reader, writer = await self._connect(kind)
                        continue
                    stats.replies += 1
                    if function & 0x80:
                        stats.exceptions[rest[0] if rest else -1] += 1
                    check(function, rest)
            finally:
                await self._close(writer)

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(workers)))
        self.stats[kind].elapsed_s = time.monotonic() - started

    def _random_pdu(self, rng: random.Random) -> tuple[bytes, Callable[[int, bytes], None]]:
        pdu = rng.randbytes(rng.randint(1, 253))
        return mbap(self._next_tid(), pdu, self.target.unit), self._check_write(
            "random_pdu", pdu[0]
        )

    def _unknown_function(self, rng: random.Random) -> tuple[bytes, Callable[[int, bytes], None]]:
        function = rng.choice([f for f in range(128) if f not in SERVED_FUNCTIONS])
        data = struct.pack(">HH", rng.randrange(0x10000), rng.randint(0, 130))
        data += rng.randbytes(rng.randint(0, 20))
        stats = self.stats["unknown_function"]

        def check(answer: int, rest: bytes) -> None:
            if answer != function | 0x80 or rest[:1] != b"\x01":
                stats.wrong_answers += 1
            if answer == function and function in WRITE_FUNCTIONS:
                stats.writes_accepted += 1

        return mbap(self._next_tid(), bytes([function]) + data, self.target.unit), check

    def _bad_read(self, rng: random.Random) -> tuple[bytes, Callable[[int, bytes], None]]:
        target = self.target
        function = rng.choice((3, 4))
        end = target.input_end if function == 4 else target.holding_end
        count = rng.choice((0, 126, 65535, rng.randint(1, 125), rng.randint(126, 65535)))
        address = rng.choice(
            (end, end + rng.randrange(1000), 0xFFFF, rng.randrange(0x10000), max(end - 3, 0))
        )
        stats = self.stats["bad_read"]
        ok = _expected_read_ok(function, address, count, target)

        def check(answer: int, rest: bytes) -> None:
            if ok and answer == function and rest[:1] == bytes([2 * count]):
                return
            if not ok and answer == function | 0x80 and rest[:1] in (b"\x02", b"\x03"):
                return
            # A read inside the SunSpec range may also touch an unmapped hole (exception 02);
            # a valid read may find the state too old on a loaded machine (04, never stale
            # numbers).
            if ok and answer == function | 0x80 and rest[:1] in (b"\x02", b"\x04"):
                return
            stats.wrong_answers += 1

        pdu = struct.pack(">BHH", function, address, count)
        return mbap(self._next_tid(), pdu, target.unit), check

    def _unpermitted_write(self, rng: random.Random) -> tuple[bytes, Callable[[int, bytes], None]]:
        target = self.target
        function = rng.choice(WRITE_FUNCTIONS)
        address = rng.choice((*target.writable, *target.writable, rng.randrange(0x10000)))
        value = rng.choice((0, 1, 2, 0xFF00, rng.randrange(0x10000)))
        if function == 5:
            pdu = struct.pack(">BHH", 5, address, rng.choice((0xFF00, 0)))
        elif function == 6:
            pdu = struct.pack(">BHH", 6, address, value)
        elif function == 15:
            pdu = struct.pack(">BHHBB", 15, address, 8, 1, rng.randrange(256))
        elif function == 16:
            count = rng.randint(1, 4)
            values = [rng.choice((0, 1, 2, rng.randrange(0x10000))) for _ in range(count)]
            pdu = struct.pack(f">BHHB{count}H", 16, address, count, 2 * count, *values)
        elif function == 22:
            pdu = struct.pack(">BHHH", 22, address, 0, rng.randrange(0x10000))
        else:
            pdu = struct.pack(">BHHHHBH", 23, address, 1, address, 1, 2, rng.randrange(0x10000))
        return mbap(self._next_tid(), pdu, target.unit), self._check_write(
            "unpermitted_write", function
        )

    def _check_write(self, kind: str, function: int) -> Callable[[int, bytes], None]:
        stats = self.stats[kind]

        def check(answer: int, rest: bytes) -> None:
            if function in WRITE_FUNCTIONS and answer == function:
                stats.writes_accepted += 1

        return check

    async def _pipelined(self) -> None:
        kind = "pipelined"
        rng = self._rng(kind, 0)
        stats = self.stats[kind]
        makers = (self._bad_read, self._unknown_function, self._unpermitted_write, self._random_pdu)
        started = time.monotonic()
        reader, writer = await self._connect(kind)
        try:
            while not self._done(kind):
                frames: list[bytes] = []
                expected: list[tuple[int, Callable[[int, bytes], None]]] = []
                for _ in range(rng.randint(2, 40)):
                    if rng.random() < 0.05:  # dropped by the server, unanswered
                        frames.append(self._wrong_protocol(rng))
                        continue
                    frame, check = rng.choice(makers)(rng)
                    frames.append(frame)
                    expected.append((struct.unpack(">H", frame[:2])[0], check))
                burst = b"".join(frames)
                try:
                    writer.write(burst)
                    await writer.drain()
                    stats.frames += len(frames)
                    stats.bytes += len(burst)
                    for tid, check in expected:
                        got, function, rest = await asyncio.wait_for(
                            _read_reply(reader), PIPELINE_REPLY_TIMEOUT_S
                        )
                        stats.replies += 1
                        if got != tid:  # out of order, or another request's answer
                            stats.wrong_answers += 1
                        if function & 0x80:
                            stats.exceptions[rest[0] if rest else -1] += 1
                        check(function, rest)
                except TimeoutError:
                    stats.no_reply += 1
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    stats.closed_by_server += 1
                    stats.errors[type(exc).__name__] += 1
                else:
                    continue
                await self._close(writer)
                reader, writer = await self._connect(kind)
        finally:
            await self._close(writer)
        stats.elapsed_s = time.monotonic() - started

    # -- fire-and-forget kinds: frames sent, answers read and dropped -----------------------

    async def _fire(
        self, kind: str, make: Callable[[random.Random], bytes], *, read: bool = True
    ) -> None:
        rng = self._rng(kind, 0)
        stats = self.stats[kind]
        started = time.monotonic()
        while not self._done(kind):
            reader, writer = await self._connect(kind)
            drain = asyncio.ensure_future(self._discard(reader)) if read else None
            try:
                # A connection carries a random number of frames, then the next one starts.
                for _ in range(rng.randint(1, 400)):
                    if self._done(kind):
                        break
                    frame = make(rng)
                    writer.write(frame)
                    stats.frames += 1
                    stats.bytes += len(frame)
                    if read:
                        await writer.drain()
                    elif writer.transport.get_write_buffer_size() > 1 << 20:
                        break  # the server stopped reading us: fine, start again
                    await asyncio.sleep(0)
                    if writer.is_closing() or reader.at_eof():
                        break
            except OSError:
                stats.closed_by_server += 1
            finally:
                if drain is not None:
                    drain.cancel()
                if reader.at_eof():
                    stats.closed_by_server += 1
                await self._close(writer, reset=rng.random() < 0.5)
        stats.elapsed_s = time.monotonic() - started

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    def _random_bytes(self, rng: random.Random) -> bytes:
        return rng.randbytes(rng.randint(1, 300))

    def _bad_length(self, rng: random.Random) -> bytes:
        length = rng.choice((0, 1, 255, 65535))
        pdu = struct.pack(">BHH", 4, 0, 10)
        if rng.random() < 0.5:  # with that many bytes (as far as a frame can hold them)
            body = bytes([4]) + rng.randbytes(max(length - 2, 0))
            return mbap(self._next_tid(), body, self.target.unit, length=length)
        return mbap(self._next_tid(), pdu, self.target.unit, length=length)

    def _wrong_protocol(self, rng: random.Random) -> bytes:
        pdu = struct.pack(">BHH", rng.choice((3, 4, 6)), 0, 2)
        protocol = rng.randint(1, 0xFFFF)
        return mbap(self._next_tid(), pdu, self.target.unit, protocol=protocol)

    def _no_read(self, rng: random.Random) -> bytes:
        pdu = struct.pack(">BHH", 3, 40000, 125)
        return mbap(self._next_tid(), pdu, self.target.unit)

    async def _truncated(self) -> None:
        kind = "truncated_mbap"
        rng = self._rng(kind, 0)
        stats = self.stats[kind]
        started = time.monotonic()

        async def one() -> None:
            while not self._done(kind):
                frame = mbap(self._next_tid(), struct.pack(">BHH", 4, 0, 2), self.target.unit)
                cut = frame[: rng.randint(1, 6)]
                _reader, writer = await self._connect(kind)
                try:
                    writer.write(cut)
                    await writer.drain()
                    stats.frames += 1
                    stats.bytes += len(cut)
                    if rng.random() < 0.1:  # some stay a while with their half header
                        await asyncio.sleep(rng.uniform(0.0, 0.5))
                except OSError:
                    stats.closed_by_server += 1
                finally:
                    await self._close(writer, reset=rng.random() < 0.5)

        await asyncio.gather(*(one() for _ in range(8)))
        stats.elapsed_s = time.monotonic() - started

    # -- paced kinds --------------------------------------------------------------------------

    async def _storm(self) -> None:
        """Connects at ``storm_per_s``; half send half a frame; half end with a reset."""
        kind = "connect_storm"
        rng = self._rng(kind, 0)
        stats = self.stats[kind]
        started = time.monotonic()
        period_s = 1.0 / self.storm_per_s
        next_at = started

        async def one(half_frame: bool, reset: bool) -> None:
            try:
                _reader, writer = await self._connect(kind)
            except OSError:
                return
            try:
                if half_frame:
                    frame = mbap(self._next_tid(), struct.pack(">BHH", 4, 0, 2), 1)
                    writer.write(frame[: len(frame) // 2])
                    await writer.drain()
                    stats.frames += 1
                    stats.bytes += len(frame) // 2
            except OSError:
                stats.closed_by_server += 1
            finally:
                await self._close(writer, reset=reset)

        pending: set[asyncio.Task[None]] = set()
        while not self._done(kind):
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += period_s
            task = asyncio.ensure_future(one(rng.random() < 0.5, rng.random() < 0.5))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if len(pending) > 200:  # never more than this many in flight
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.gather(*pending)
        stats.elapsed_s = time.monotonic() - started

    async def _slowloris(self) -> None:
        """Connections sending a valid request one byte every ``slowloris_interval_s``; a
        connection the server closes is opened again, until the campaign ends."""
        kind = "slowloris"
        stats = self.stats[kind]
        started = time.monotonic()

        async def one(index: int) -> None:
            rng = self._rng(kind, index)
            while not self._stop.is_set():
                frame = mbap(self._next_tid(), struct.pack(">BHH", 4, 0, 2), self.target.unit)
                try:
                    reader, writer = await asyncio.open_connection(
                        self.target.host, self.target.port
                    )
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                stats.connections += 1
                try:
                    for byte in frame:
                        writer.write(bytes([byte]))
                        await writer.drain()
                        stats.bytes += 1
                        with contextlib.suppress(TimeoutError):
                            data = await asyncio.wait_for(
                                reader.read(1),
                                self.slowloris_interval_s * rng.uniform(0.8, 1.2),
                            )
                            if not data:
                                raise ConnectionResetError("closed by the server")
                        if self._stop.is_set():
                            break
                    else:
                        stats.frames += 1  # a whole frame got through (too slow a timeout)
                        stats.wrong_answers += 1
                except (OSError, ConnectionResetError):
                    stats.closed_by_server += 1
                finally:
                    await self._close(writer)
                # Back again after a while, as a slowloris does (not a connect storm).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.slowloris_interval_s)

        await asyncio.gather(*(one(i) for i in range(self.slowloris_connections)))
        stats.elapsed_s = time.monotonic() - started


# -- the well-behaved client --------------------------------------------------------------------


async def good_client(
    target: Target,
    stop: asyncio.Event,
    stats: GoodStats,
    *,
    period_s: float = 0.02,
    count: int = 10,
    timeout_s: float = 3.0,
) -> None:
    """Reads input registers 0..count-1 with pymodbus until ``stop``; checks each answer:
    map version 1, the tick (heartbeat register) never going back, a valid BMS state and
    data_ok flag. Exception 04 (state too old) is counted apart: it is the right answer
    while the control loop is late; anything else, or no answer, is a failure."""
    # No automatic reconnect: a connection the server closes must show as a reconnect here.
    client = AsyncModbusTcpClient(
        target.host, port=target.port, timeout=timeout_s, retries=0, reconnect_delay=0
    )
    await client.connect()
    last_tick: int | None = None
    try:
        while not stop.is_set():
            if not client.connected:
                stats.reconnects += 1
                await client.connect()
            started = time.perf_counter()
            try:
                reply = await client.read_input_registers(0, count=count, device_id=target.unit)
            except Exception as exc:  # every failure is a finding
                transport = client.ctx.transport if client.ctx else None
                local = transport.get_extra_info("sockname") if transport else None
                stats.failures.append(f"{time.time():.3f} {local} {type(exc).__name__}: {exc}")
                await asyncio.sleep(period_s)
                continue
            stats.latencies_s.append(time.perf_counter() - started)
            stats.requests += 1
            if reply.isError():
                if reply.exception_code == 4:
                    # A stalled control loop (a loaded machine): no stale numbers, as designed.
                    stats.stale += 1
                else:
                    stats.failures.append(f"exception {reply}")
            else:
                words = reply.registers
                tick = words[1]
                if words[0] != 1:
                    stats.failures.append(f"map_version {words[0]}")
                if words[2] > 5:
                    stats.failures.append(f"bms_state {words[2]}")
                if words[5] > 1:
                    stats.failures.append(f"data_ok {words[5]}")
                if last_tick is not None and (tick - last_tick) % 0x10000 > 0x8000:
                    stats.failures.append(f"tick went back {last_tick} -> {tick}")
                last_tick = tick
                stats.ticks_seen.add(tick)
            await asyncio.sleep(period_s)
    finally:
        client.close()


async def until_served(stats: GoodStats, requests: int = 5, limit_s: float = 30.0) -> None:
    """Until the good client has had ``requests`` answers."""
    deadline = time.monotonic() + limit_s
    while stats.requests < requests:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the good client was not served: {stats.failures[:3]}")
        await asyncio.sleep(0.05)


# -- the daemon under attack --------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


MODBUS_LISTENING = re.compile(r"modbus: serving unit \d+ on [\d.]+:(\d+)")
METRICS_LISTENING = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class DaemonProcess:
    """``bmsd run`` on etc/sim.toml in a child process, ports chosen by the kernel (found in
    its log), its stderr kept line by line."""

    def __init__(self, root: Path, state_dir: Path, channel: str, *extra: str) -> None:
        import subprocess
        import sys
        import threading

        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "bmsd.cli", "run",
                "--config", str(root / "etc" / "sim.toml"),
                "--set", f"state.directory='{state_dir}'",
                "--set", f"can.slaves.channel='{channel}'",
                "--set", "control.summary_log_interval_s=0",
                "--set", "metrics.port=0",
                "--set", "modbus.port=0",
                *(arg for setting in extra for arg in ("--set", setting)),
            ],
            cwd=root,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line)

    def log_since(self, index: int) -> list[str]:
        with self._lock:
            return self.lines[index:]

    def ports(self, limit_s: float = 30.0) -> tuple[int, int]:
        """(Modbus port, metrics port) once both listen."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            text = "".join(self.log_since(0))
            modbus = MODBUS_LISTENING.search(text)
            metrics = METRICS_LISTENING.search(text)
            if modbus and metrics:
                return int(modbus.group(1)), int(metrics.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("the daemon did not start listening:\n" + text[-3000:])

    def stop(self) -> int:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode


def fetch_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def wait_ready(target: Target, limit_s: float = 60.0, closed_within_s: float = 30.0) -> int:
    """Until the server answers with a fresh state, and the simulated pack is closed (BMS
    state 3) or ``closed_within_s`` has passed (on a loaded machine a comm-loss fault can
    keep it open; the attack is the same). Returns the BMS state."""
    started = time.monotonic()
    client = AsyncModbusTcpClient(target.host, port=target.port, timeout=3, retries=0)
    state: int | None = None
    try:
        while time.monotonic() - started < limit_s:
            if not client.connected:
                await client.connect()
            with contextlib.suppress(Exception):
                reply = await client.read_input_registers(0, count=3, device_id=target.unit)
                if not reply.isError():
                    state = int(reply.registers[2])
                    if state == 3 or time.monotonic() - started > closed_within_s:
                        return state
            await asyncio.sleep(0.2)
    finally:
        client.close()
    raise RuntimeError(f"the server did not answer with a fresh state (BMS state {state})")
