"""The Modbus TCP server: serves the native map and the SunSpec models from the newest state.

Built on pymodbus 3.16's current datastore API: one ``SimDevice`` (which addresses exist, which
are writable) whose async ``action`` hook runs on every write. The server runs in its own thread
with its own event loop, so requests never queue in front of the control tick (they still share
the interpreter lock). Reads never touch the control loop: they take the newest PackState from
the StateHub (a reference read, safe across threads), encode it into register images once per
new state (on the first read after it), and copy the requested window from the image. A state
older than ``max_state_age_s`` (a stalled control loop) is answered with SLAVE DEVICE FAILURE,
never with stale numbers. Writes are checked (enabled, client address, value) and go through the
control loop's command queue.

Reads (FC 03/04) are answered by the request handler straight from the images
(:meth:`ModbusServer.read`) as soon as they are decoded, not in a task through pymodbus's
datastore, whose round trip costs more than the rest of a request (a task and a concurrent
future, four coroutine levels, a Python loop over every requested address, then the hook);
the addresses are checked against a table of served runs made once, with the same
answers (ILLEGAL DATA ADDRESS when any register of the request is not served). The response
packs its words with one ``struct`` call instead of one per register.

pymodbus answers a read of more than 125 registers with ILLEGAL FUNCTION (it fails to decode
the request); the Modbus specification asks for ILLEGAL DATA VALUE, so the read and write
requests are replaced by subclasses that decode any count and check it when served. Only the
function codes bmsd serves (03, 04, 06, 16) are decoded; every other one is ILLEGAL FUNCTION.
The request handler is subclassed to know the client's address (for write permission and the
audit log), to enforce the connection limit and the idle timeout, and to count requests and
errors for the metrics. It also frames its connection's bytes itself: a client may pipeline
requests (several sent before the first answer), and each is answered, in order, with its own
transaction id (pymodbus served one frame per received chunk and dropped chunks over 264
bytes). A frame whose protocol id is not 0 is dropped unanswered, as are bytes whose length
field no Modbus frame can have; both are counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import importlib.metadata
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.decoders import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from bmsd.config import Config
from bmsd.control.controller import Command
from bmsd.control.supervision import ExternalInputs
from bmsd.errors import BmsdError
from bmsd.model.bms import Answer, Reply
from bmsd.model.cell import CellModel
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.publish.modbus.budget import CpuBudget
from bmsd.publish.modbus.config import ModbusConfig
from bmsd.publish.modbus.registers import (
    REGISTERS,
    FaultFlags,
    MapView,
    NativeEncoder,
    PackInfo,
    check_fits,
    fault_bit_of,
    mapped_addresses,
)
from bmsd.publish.modbus.sunspec import PackFacts, SunSpecMap
from bmsd.publish.modbus.writes import (
    HEARTBEAT_INPUT,
    ClientFilter,
    EmsHeartbeat,
    IllegalWriteError,
    WriteKind,
    request_for,
)

log = logging.getLogger(__name__)

MAX_READ_COUNT = 125  # Modbus application protocol, FC 03/04
MAX_WRITE_COUNT = 123  # FC 16

NEW_CONNECTION_GRACE_S = 1.0
# MBAP length field: unit id + PDU (at most 253 bytes), so an ADU is at most 260 bytes.
MIN_MBAP_LENGTH = 2
MAX_MBAP_LENGTH = 254
MBAP_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
# Requests one connection gets served in a row before the others (and the CPU budget) have a
# turn: a client may pipeline requests, and a 64 KiB chunk holds thousands of them.
FRAMES_PER_TURN = 16
# Bytes a connection may have waiting behind a request being served (a write waits for a
# tick); beyond this, reading from it stops until they are served.
MAX_WAITING_BYTES = 4096
MAX_UNREAD_BYTES = 64 * 1024  # answers a client has not read (beyond the kernel's buffers)
SEND_BUFFER_BYTES = 64 * 1024  # the kernel's send buffer of a client connection

FUNCTION_NAMES: dict[int, str] = {
    3: "read_holding_registers",
    4: "read_input_registers",
    6: "write_single_register",
    16: "write_multiple_registers",
}

_CLIENT: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "modbus_client", default=None
)

Submit = Callable[[Command], Coroutine[Any, Any, Reply]]


@dataclass(slots=True)
class ModbusStats:
    """Counters of the server, read by the metrics collector."""

    requests: Counter[int] = field(default_factory=Counter)  # by function code
    errors: Counter[tuple[int, int]] = field(default_factory=Counter)  # (function, exception)
    connections_accepted: int = 0
    connections_refused: int = 0
    connections_idle_closed: int = 0
    connections_evicted: int = 0  # quiet connections closed to admit a new one at the limit
    connections_frame_timeout: int = 0  # closed: bytes that formed no request in time
    connections_busy: int = 0  # refused while the server was over its CPU budget
    connections_not_reading: int = 0  # closed: answers piled up unread
    frames_dropped: int = 0  # frames with a protocol id other than Modbus's, or unframeable bytes
    writes_accepted: int = 0
    writes_refused: int = 0
    encodings: int = 0  # register images built (one per new state that was read)


class _CountChecked:
    """A register read that decodes any count, so that a bad one is answered with ILLEGAL DATA
    VALUE by :meth:`ModbusServer.read` (pymodbus fails to decode it: ILLEGAL FUNCTION)."""

    address: int
    count: int
    function_code: int
    transaction_id: int
    dev_id: int

    def decode(self, data: bytes) -> None:
        self.address, self.count = struct.unpack(">HH", data[:4])


class _ReadHolding(_CountChecked, ReadHoldingRegistersRequest):
    """FC 03 with the count checked."""


class _ReadInput(_CountChecked, ReadInputRegistersRequest):
    """FC 04 with the count checked."""


# One compiled struct per word count: byte count, then the words big-endian.
_WORDS = [struct.Struct(f">B{count}H") for count in range(MAX_READ_COUNT + 1)]


class _PackedWords:
    """A read response that packs its words with one struct call (pymodbus packs each word and
    concatenates the bytes, the largest single cost of a 125-register read)."""

    registers: Sequence[int]

    def encode(self) -> bytes:
        count = len(self.registers)
        return _WORDS[count].pack(2 * count, *self.registers)


class _HoldingResponse(_PackedWords, ReadHoldingRegistersResponse):
    """FC 03 response."""


class _InputResponse(_PackedWords, ReadInputRegistersResponse):
    """FC 04 response."""


class _WriteSingle(WriteSingleRegisterRequest):
    """FC 06 answered with the echo of the request (not a re-read of the register)."""

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        code = await context.async_setValues(
            device_id, self.function_code, self.address, self.registers
        )
        if code:
            return ExceptionResponse(self.function_code, code)
        return WriteSingleRegisterResponse(
            address=self.address,
            registers=list(self.registers),
            dev_id=device_id,
            transaction_id=self.transaction_id,
        )


def _decoder_table() -> dict[int, tuple[type[ModbusPDU], type[ModbusPDU]]]:
    standard = DecodePDU.pdu_table
    return {
        3: (_ReadHolding, standard[3][1]),
        4: (_ReadInput, standard[4][1]),
        6: (_WriteSingle, standard[6][1]),
        16: (WriteMultipleRegistersRequest, standard[16][1]),
    }


def address_group(address: str) -> str:
    """What the per-address connection limit counts by: an IPv4 address (also when mapped into
    IPv6), or an IPv6 address's /64 (one host or site is given a whole /64 and can pick any
    address in it)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Handler(ServerRequestHandler):
    """One client connection: knows its peer and its timeouts, and counts what it serves.

    Two clocks per connection, both on the server's loop time: ``served_s``, when a complete
    request last arrived or was answered (the idle timeout, and which connection yields to a
    new one when the limit is reached; a request being served slowly is not quiet), and
    ``pending_since_s``, since when bytes have been waiting that do not form a request yet
    (the frame timeout). Bytes alone are not activity: a client trickling
    one byte at a time, or sending garbage, would otherwise hold its slot forever.
    """

    def __init__(self, owner: _Server) -> None:
        super().__init__(owner, None, None, None)  # type: ignore[no-untyped-call]
        self.owner = owner
        self.peer: tuple[str, int] | None = None
        self.host: str | None = None  # what the per-address limit counts by (address_group)
        self.connected_s = 0.0
        self.served_s: float | None = None
        self.pending_since_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = b""  # received bytes not served yet
        self._in_flight: asyncio.Task[None] | None = None  # a request awaiting the daemon
        self._turn: asyncio.TimerHandle | None = None  # the next turn, when one is scheduled

    def callback_connected(self) -> None:
        super().callback_connected()
        if self.is_closing:  # closed (server shutting down) before asyncio connected it
            if self.transport is not None:
                self.transport.close()
            return
        peername = self.transport.get_extra_info("peername") if self.transport else None
        self.peer = (str(peername[0]), int(peername[1])) if peername else None
        self.host = address_group(self.peer[0]) if self.peer is not None else None
        owner = self.owner
        config = owner.bmsd.config
        stats = owner.bmsd.stats
        self.connected_s = self.loop.time()
        if owner.bmsd.over_budget(self.connected_s) > 0:
            stats.connections_busy += 1
            log.warning(
                "modbus: connection from %s refused: the server is over its CPU budget",
                _peer_text(self.peer),
            )
            self.close()
            return
        # One host first (it must not take every slot, however well it behaves), then all.
        host = self.host
        per_address = config.max_connections_per_address
        if per_address and host is not None:
            same_host = sum(
                1
                for other in owner.active_connections.values()
                if isinstance(other, _Handler) and other.host == host
            )
            if same_host > per_address and not self._make_room(
                host, f"{per_address} connections from {host} is the limit"
            ):
                return
        if len(owner.active_connections) > config.max_connections and not self._make_room(
            None, f"{config.max_connections} connections is the limit"
        ):
            return
        stats.connections_accepted += 1
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            # Answers are at most 260 bytes: a small kernel buffer bounds what a client that
            # does not read can make this host hold (the default grows to megabytes).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._arm_timer()
        log.debug("modbus: client %s connected", _peer_text(self.peer))

    def _make_room(self, host: str | None, limit_text: str) -> bool:
        """At a limit: replace the quietest connection (of ``host``, or of all), or refuse
        this one. True when this connection may stay."""
        stats = self.owner.bmsd.stats
        victim = self._quietest(host)
        if victim is None:
            stats.connections_refused += 1
            log.warning("modbus: connection from %s refused: %s", _peer_text(self.peer), limit_text)
            self.close()
            return False
        stats.connections_evicted += 1
        log.warning(
            "modbus: closing %s (no request in %.1f s) for %s: %s",
            _peer_text(victim.peer),
            self.connected_s - victim.connected_s,
            _peer_text(self.peer),
            limit_text,
        )
        victim.close()
        return True

    @property
    def quiet_since_s(self) -> float:
        return self.connected_s if self.served_s is None else self.served_s

    def _quietest(self, host: str | None) -> _Handler | None:
        """The connection a new one replaces when a limit is reached (among those of ``host``
        for the per-address limit, else among all): the oldest that has
        never sent a complete request (silent, trickling, garbage); None when every other
        connection is a client that has been served (it keeps its slot until the idle
        timeout, however seldom it polls). A connection younger than
        ``NEW_CONNECTION_GRACE_S`` is not replaced: a client must have the time to send its
        first request, or a connect storm would push out every newcomer."""
        now = self.loop.time()
        candidates = [
            other
            for other in self.owner.active_connections.values()
            if isinstance(other, _Handler)
            and other is not self
            and other.transport is not None  # accepted, its connection_made still to come
            and not other.is_closing
            and other.served_s is None
            and now - other.connected_s >= NEW_CONNECTION_GRACE_S
            and (host is None or other.host == host)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda h: h.connected_s)

    def callback_disconnected(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().callback_disconnected(exc)

    def close(self, reconnect: bool = False) -> None:
        self._cancel_timer()
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._buffer = b""
        super().close(reconnect)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadlines(self) -> tuple[float | None, float | None]:
        """(idle deadline, frame deadline) in loop time; None where none applies."""
        config = self.owner.bmsd.config
        idle = self.quiet_since_s + config.idle_timeout_s if config.idle_timeout_s > 0 else None
        pending = self.pending_since_s
        return idle, None if pending is None else pending + config.frame_timeout_s

    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self.is_closing:
            return
        deadlines = [d for d in self._deadlines() if d is not None]
        if deadlines:
            delay_s = max(min(deadlines) - self.loop.time(), 0.0)
            self._timer = self.loop.call_later(delay_s, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        idle, frame = self._deadlines()
        stats = self.owner.bmsd.stats
        if frame is not None and now >= frame:
            stats.connections_frame_timeout += 1
            log.info(
                "modbus: closing %s, %d byte(s) formed no request in %.1f s",
                _peer_text(self.peer),
                len(self._buffer),
                now - (self.pending_since_s or now),
            )
            self.close()
        elif idle is not None and now >= idle:
            stats.connections_idle_closed += 1
            log.info(
                "modbus: closing %s, no request for %.0f s",
                _peer_text(self.peer),
                now - self.quiet_since_s,
            )
            self.close()
        else:
            self._arm_timer()

    # The request path. pymodbus's own (ModbusProtocol.data_received, then callback_data and
    # handle_later) serves one frame per received chunk: the second of two pipelined requests
    # waited for the client's next bytes, a chunk over 264 bytes was dropped whole, and a
    # request answered after an await took the transaction id of whatever was decoded
    # meanwhile. Here each connection frames its own bytes and serves them in order: reads
    # at once from the register images, anything else (writes) in a task, with the requests
    # behind it waiting until it is answered.

    def data_received(self, data: bytes) -> None:
        if self.is_closing:
            return
        if not self._buffer and self.pending_since_s is None:
            # From the first byte of a request: the frame timeout closes a connection whose
            # bytes never form one (a trickle, garbage).
            now = self.loop.time()
            self.pending_since_s = now
            frame_deadline = now + self.owner.bmsd.config.frame_timeout_s
            if self._timer is None or self._timer.when() > frame_deadline:
                self._arm_timer()
        self._buffer += data
        if self._turn is not None:
            self._flow_control()
            return  # a turn is scheduled: these bytes are served then
        # Over the CPU budget: serve this later and stop reading this client until then (the
        # kernel buffers the rest, and TCP slows the client down).
        delay_s = self.owner.bmsd.over_budget(self.loop.time())
        if delay_s > 0:
            self._schedule_turn(delay_s)
            return
        self._serve_turn()

    def _schedule_turn(self, delay_s: float) -> None:
        self._turn = self.loop.call_later(delay_s, self._take_turn)
        self._flow_control()

    def _take_turn(self) -> None:
        # Held once is enough: held again, a client could wait behind the others without end
        # while they keep the server at its budget (seen: a poller unanswered for 10 s). Each
        # connection still gets at most one turn per hold, which bounds the CPU.
        self._turn = None
        self._serve_turn()

    def _serve_turn(self) -> None:
        """Serve up to FRAMES_PER_TURN complete requests from the buffer, in order."""
        served = 0
        while self._in_flight is None and not self.is_closing:
            if served >= FRAMES_PER_TURN:
                # More are waiting: the loop (other connections) and the budget go first.
                self._schedule_turn(max(self.owner.bmsd.over_budget(self.loop.time()), 0.0))
                return
            frame = self._next_frame()
            if frame is None:
                break
            served += 1
            self._serve_frame(*frame)
        self._flow_control()

    def _flow_control(self) -> None:
        transport = self.transport
        if transport is None or self.is_closing or transport.is_closing():
            return
        if self._turn is not None or len(self._buffer) > MAX_WAITING_BYTES:
            transport.pause_reading()  # type: ignore[attr-defined]
        else:
            transport.resume_reading()  # type: ignore[attr-defined]

    def _next_frame(self) -> tuple[int, int, bytes] | None:
        """The next complete Modbus TCP request (transaction id, unit id, PDU), or None."""
        buffer = self._buffer
        while len(buffer) >= MBAP_HEADER.size:
            transaction, protocol, length, unit = MBAP_HEADER.unpack_from(buffer)
            if not MIN_MBAP_LENGTH <= length <= MAX_MBAP_LENGTH:
                # No Modbus request starts here, and nothing says where the next one does:
                # drop what is there. The frame timeout still runs (only a request stops it).
                self.owner.bmsd.stats.frames_dropped += 1
                self._buffer = b""
                return None
            end = 6 + length
            if len(buffer) < end:
                break  # the rest is still to come
            pdu = buffer[MBAP_HEADER.size : end]
            buffer = buffer[end:]
            if protocol != 0:  # framed, but not Modbus: discarded, unanswered
                self.owner.bmsd.stats.frames_dropped += 1
                continue
            self._buffer = buffer
            return transaction, unit, pdu
        self._buffer = buffer
        return None

    def _serve_frame(self, transaction: int, unit: int, data: bytes) -> None:
        now = self.loop.time()
        self.served_s = now
        # What is left is the start of the next request: its frame timeout starts now.
        self.pending_since_s = now if self._buffer else None
        bmsd = self.owner.bmsd
        pdu = self.framer.decoder.decode(data)
        if pdu is None or isinstance(pdu, ExceptionResponse):
            # Undecodable, or a function code above 0x80 (pymodbus decodes those as exception
            # *responses*): answered with the request's own function code | 0x80.
            function = data[0] & 0x7F
            bmsd.stats.requests[function] += 1
            self._answer(ExceptionResponse(function, ExcCodes.ILLEGAL_FUNCTION), transaction, unit)
            return
        pdu.transaction_id = transaction
        pdu.dev_id = unit
        bmsd.stats.requests[pdu.function_code] += 1
        if unit != bmsd.config.unit_id:
            # Another unit behind a gateway that is not there: "gateway target failed".
            response = ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            self._answer(response, transaction, unit)
        elif isinstance(pdu, _CountChecked):
            self.server_send(bmsd.read_response(pdu), None)
        else:
            self._in_flight = self.loop.create_task(self._serve_later(pdu))

    async def _serve_later(self, pdu: ModbusPDU) -> None:
        """A request through the datastore (a write: it waits for the control loop)."""
        token = _CLIENT.set(self.peer)
        try:
            try:
                response = await pdu.datastore_update(self.server.context, pdu.dev_id)
            except Exception:  # an unexpected failure answers, it must not end the connection
                log.exception("modbus: serving %s failed", type(pdu).__name__)
                response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
            self._answer(response, pdu.transaction_id, pdu.dev_id)
        finally:
            _CLIENT.reset(token)
            self._in_flight = None
            if not self.is_closing and self._turn is None:
                self.served_s = self.loop.time()  # served slowly is not quiet
                self._serve_turn()  # the requests that waited behind this one

    def _answer(self, response: ModbusPDU, transaction: int, unit: int) -> None:
        response.transaction_id = transaction
        response.dev_id = unit
        self.server_send(response, None)

    def server_send(self, pdu: ModbusPDU | None, addr: Any) -> None:
        transport = self.transport
        if transport is None or self.is_closing:
            return  # closed while the request was served (a write waiting for a tick)
        if transport is not None and transport.get_write_buffer_size() > MAX_UNREAD_BYTES:  # type: ignore[attr-defined]
            # The client sends requests but does not read the answers: they would pile up in
            # this process's memory.
            self.owner.bmsd.stats.connections_not_reading += 1
            log.warning(
                "modbus: closing %s, it does not read its answers (%d bytes waiting)",
                _peer_text(self.peer),
                transport.get_write_buffer_size(),  # type: ignore[attr-defined]
            )
            self.close()
            return
        if pdu is not None:
            self.served_s = self.loop.time()
        if isinstance(pdu, ExceptionResponse):
            function = pdu.function_code & 0x7F
            self.owner.bmsd.stats.errors[(function, pdu.exception_code)] += 1
        super().server_send(pdu, addr)  # type: ignore[no-untyped-call]


class _Server(ModbusTcpServer):
    """pymodbus's TCP server with bmsd's request handler and request decoders."""

    def __init__(self, bmsd: ModbusServer, device: SimDevice, address: tuple[str, int]) -> None:
        super().__init__(device, address=address)
        self.bmsd = bmsd
        self.decoder.pdu_table = _decoder_table()
        self.decoder.pdu_sub_table = {}

    def callback_new_connection(self) -> _Handler:
        return _Handler(self)


class ImageSource(Protocol):
    """Something that encodes a MapView into a range of holding registers (SunSpec)."""

    start: int
    length: int
    writes: dict[int, WriteKind]

    def begin(self, view: MapView) -> LazyImage: ...


class LazyImage(Protocol):
    """Words of one state, encoded by region on first read."""

    words: list[int]

    def ensure(self, first: int, count: int) -> None: ...


class ModbusServer:
    """The Modbus TCP server of the daemon."""

    def __init__(
        self,
        config: ModbusConfig,
        latest: Callable[[], PackState | None],
        submit: Submit,
        info: PackInfo,
        *,
        sunspec: ImageSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = 5.0,
    ) -> None:
        problem = check_fits(info.topology)
        if problem:
            raise BmsdError(f"the pack does not fit the Modbus register map: {problem}")
        self.config = config
        self._latest = latest
        self._submit = submit
        self._info = info
        self._clock = clock
        self._sunspec = sunspec
        self.stats = ModbusStats()
        self.budget = CpuBudget(config.max_cpu_share, burst_s=0.1)
        self.heartbeat = EmsHeartbeat(config.ems_heartbeat)
        self._clients = ClientFilter.of(config.writes.allowed_clients)
        self._encoder = NativeEncoder(info.topology)
        topology = info.topology
        self._input_addresses = mapped_addresses("input", topology)
        self._holding_addresses = mapped_addresses("holding", topology)
        self._input_ends = _run_ends(self._input_addresses)
        sunspec_addresses = (
            [] if sunspec is None else list(range(sunspec.start, sunspec.start + sunspec.length))
        )
        self._holding_ends = _run_ends(self._holding_addresses + sunspec_addresses)
        self._input_np = np.zeros(self._input_addresses[-1] + 1, dtype=np.int64)
        self._holding_np = np.zeros(self._holding_addresses[-1] + 1, dtype=np.int64)
        self._input: list[int] = self._input_np.tolist()
        self._holding: list[int] = self._holding_np.tolist()
        self._sunspec_image: LazyImage | None = None
        self._encoded: PackState | None = None
        self._writes: dict[int, WriteKind] = {
            r.address: _NATIVE_WRITES[r.name] for r in REGISTERS if r.writable
        }
        if sunspec is not None:
            self._writes.update(sunspec.writes)
        self._server: _Server | None = None
        self._retry_s = retry_s
        self._retry_task: asyncio.Task[None] | None = None
        self._daemon_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def device(self) -> SimDevice:
        """The pymodbus device: which addresses exist, which are writable, and the hook."""
        holding = _simdata(self._holding_addresses, set(self._writes))
        if self._sunspec is not None:
            sunspec_addresses = range(
                self._sunspec.start, self._sunspec.start + self._sunspec.length
            )
            holding += _simdata(list(sunspec_addresses), set(self._writes))
        return SimDevice(
            id=self.config.unit_id,
            simdata=(
                # Coils and discrete inputs are not served (their function codes are not
                # decoded) but pymodbus needs a block for each.
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                holding,
                _simdata(self._input_addresses, set()),
            ),
            action=self._action,
        )

    async def start(self) -> None:
        """Start the server thread and listen.

        The server has its own thread and event loop, so a burst of requests queues there,
        not in front of the control tick. When the address cannot be bound (in use, or not up
        yet at boot), it is logged and tried again in the background: the pack's protection
        does not depend on Modbus, and an inverter without answers stops by its own timeout.
        """
        self._daemon_loop = asyncio.get_running_loop()
        quiet_pymodbus_log()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="modbus", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start_here())
        except BaseException as exc:  # reported to start(); the thread ends
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close_here())
            loop.close()

    async def _start_here(self) -> None:
        if not await self._listen(first=True):
            self._retry_task = asyncio.create_task(self._keep_trying(), name="modbus listen")

    async def _listen(self, *, first: bool) -> bool:
        server = _Server(self, self.device(), (self.config.host, self.config.port))
        try:
            await server.serve_forever(background=True)
        except (OSError, RuntimeError) as exc:
            server.close()
            if first:
                log.error(
                    "modbus: cannot listen on %s:%d (%s); trying again every %g s",
                    self.config.host,
                    self.config.port,
                    exc,
                    self._retry_s,
                )
            return False
        self._server = server
        log.info(
            "modbus: serving unit %d on %s:%d (writes %s)",
            self.config.unit_id,
            self.config.host,
            self.port,
            "on for " + ", ".join(self.config.writes.allowed_clients)
            if self.config.writes.enabled
            else "off",
        )
        return True

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            if await self._listen(first=False):
                return

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one chosen for port 0)."""
        server = self._server
        if server is not None and server.transport is not None:
            sockets = getattr(server.transport, "sockets", None)
            if sockets:
                return int(sockets[0].getsockname()[1])
        return self.config.port

    @property
    def connections(self) -> int:
        return 0 if self._server is None else len(self._server.active_connections)

    async def close(self) -> None:
        """Stop serving and end the server thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10.0)
        self._loop = self._thread = None

    async def _close_here(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def _on_daemon_loop(self, command: Command) -> Reply:
        """Submit a command to the control loop, which runs on the daemon's event loop."""
        daemon_loop = self._daemon_loop
        assert daemon_loop is not None
        future: concurrent.futures.Future[Reply] = asyncio.run_coroutine_threadsafe(
            self._submit(command), daemon_loop
        )
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def over_budget(self, now_s: float) -> float:
        """Seconds to hold off serving (0 within the CPU budget); server thread only."""
        return self.budget.delay_s(now_s, time.thread_time())

    # -- supervision --------------------------------------------------------------------------

    def heartbeat_supervision(self, now: float) -> float | None:
        """Provider for the controller's external inputs (see bmsd.control.supervision)."""
        return self.heartbeat.supervision(now)

    # -- serving ------------------------------------------------------------------------------

    def _fresh_state(self) -> PackState | None:
        state = self._latest()
        if state is None or self._clock() - state.time_s > self.config.max_state_age_s:
            return None
        return state

    def _refresh(self, state: PackState) -> None:
        """Encode a new state into the images (once per state, on the first read of it)."""
        if state is self._encoded:
            return
        balancing = state.balancing
        view = MapView(
            state=state,
            info=self._info,
            flags=FaultFlags.of(state.faults, self._info.bit_of_fault),
            ems_heartbeat_value=self.heartbeat.value,
            ems_heartbeat_age_s=self.heartbeat.age_s(self._clock()),
            balancing_enabled=None if balancing is None else balancing.enabled,
        )
        self._encoder.encode(view, self._input_np, self._holding_np)
        self._input = self._input_np.tolist()
        self._holding = self._holding_np.tolist()
        if self._sunspec is not None:
            self._sunspec_image = self._sunspec.begin(view)
        self._encoded = state
        self.stats.encodings += 1

    def read(self, function_code: int, address: int, count: int) -> list[int] | ExcCodes:
        """The words of a read of input (FC 04) or holding (FC 03) registers, or the exception
        to answer: a bad count, then any register not served, then a stale state."""
        if not 1 <= count <= MAX_READ_COUNT or address + count > 0x10000:
            return ExcCodes.ILLEGAL_VALUE
        ends = self._input_ends if function_code == 4 else self._holding_ends
        if ends[address] < address + count:
            return ExcCodes.ILLEGAL_ADDRESS
        state = self._fresh_state()
        if state is None:
            return ExcCodes.DEVICE_FAILURE
        self._refresh(state)
        if function_code == 4:
            return self._input[address : address + count]
        sunspec, image = self._sunspec, self._sunspec_image
        if sunspec is not None and image is not None and address >= sunspec.start:
            first = address - sunspec.start
            image.ensure(first, count)
            return image.words[first : first + count]
        return self._holding[address : address + count]

    def read_response(self, request: _CountChecked) -> ModbusPDU:
        """The answer to a read request (called by the request handler for FC 03 and 04)."""
        function_code = request.function_code
        try:
            words = self.read(function_code, request.address, request.count)
        except Exception:  # an encoding bug must not end the connection's handler unanswered
            log.exception(
                "modbus: read of %d registers at %d failed", request.count, request.address
            )
            words = ExcCodes.DEVICE_FAILURE
        response: ModbusPDU
        if isinstance(words, ExcCodes):
            response = ExceptionResponse(function_code, words)
        elif function_code == 4:
            response = _InputResponse(registers=words)
        else:
            response = _HoldingResponse(registers=words)
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        return response

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's hook: writes; reads are served by :meth:`read` before the datastore,
        but one that reached it would be served from the same images."""
        try:
            if set_values is not None and function_code in (6, 16):
                return await self._write(address, cast(list[int], set_values))
            words = self.read(function_code, address, count)
        except Exception:  # a bug here must not reach pymodbus's log (quieted): ours, and 04
            log.exception("modbus: serving FC %d at %d (%d) failed", function_code, address, count)
            return ExcCodes.DEVICE_FAILURE
        if isinstance(words, ExcCodes):
            return words
        offset = address - start_address
        registers[offset : offset + count] = words
        return None

    async def _write(self, address: int, values: list[int]) -> ExcCodes | None:
        peer = _CLIENT.get()
        client = _peer_text(peer)
        writes = self.config.writes
        if not writes.enabled or not self._clients.allows(None if peer is None else peer[0]):
            self.stats.writes_refused += 1
            log.warning(
                "modbus: write of %s at %d from %s refused: %s",
                values,
                address,
                client,
                "writes are disabled" if not writes.enabled else "client not allowed to write",
            )
            return ExcCodes.ILLEGAL_FUNCTION
        kinds = [self._writes.get(address + index) for index in range(len(values))]
        try:
            requests = []
            for kind, value in zip(kinds, values, strict=True):
                if kind is None:
                    raise IllegalWriteError("not a writable register")
                requests.append((kind, value, request_for(kind, value)))
        except IllegalWriteError as exc:
            self.stats.writes_refused += 1
            log.warning(
                "modbus: write of %s at %d from %s refused: %s", values, address, client, exc
            )
            return ExcCodes.ILLEGAL_VALUE
        if self._fresh_state() is None:
            self.stats.writes_refused += 1
            log.warning(
                "modbus: write at %d from %s refused: the control loop is not running",
                address,
                client,
            )
            return ExcCodes.DEVICE_FAILURE
        for kind, value, request in requests:
            if request is None:  # the heartbeat: a value for the supervision, no request
                first = self.heartbeat.last_change_s is None
                self.heartbeat.write(value, self._clock(), client)
                self._encoded = None  # the next read shows it, not the value of this state
                # Not every beat: an EMS writes one every few seconds.
                log.log(
                    logging.INFO if first else logging.DEBUG,
                    "modbus: EMS heartbeat %d from %s%s",
                    value,
                    client,
                    " (supervision starts)" if first and self.config.ems_heartbeat.enabled else "",
                )
                self.stats.writes_accepted += 1
                continue
            log.info("modbus: write %s=%d from %s: %s", kind.value, value, client, request.value)
            try:
                reply = await asyncio.wait_for(
                    self._on_daemon_loop(Command(request, origin=f"modbus {client}")),
                    writes.command_timeout_s,
                )
            except TimeoutError:
                self.stats.writes_refused += 1
                log.error("modbus: %s from %s got no answer in time", request.value, client)
                return ExcCodes.DEVICE_FAILURE
            if reply.answer is Answer.ILLEGAL:
                self.stats.writes_refused += 1
                return ExcCodes.ILLEGAL_VALUE
            self.stats.writes_accepted += 1
        return None


_NATIVE_WRITES: dict[str, WriteKind] = {
    "fault_reset": WriteKind.FAULT_RESET,
    "contactor_request": WriteKind.CONTACTOR,
    "balancing_enable": WriteKind.BALANCING,
    "ems_heartbeat": WriteKind.HEARTBEAT,
}


def _simdata(addresses: list[int], writable: set[int]) -> list[SimData]:
    """pymodbus blocks for a sorted address list: one per run of equal writability."""
    blocks: list[SimData] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            blocks.append(
                SimData(
                    run[0],
                    values=[0] * len(run),
                    datatype=DataType.REGISTERS,
                    readonly=run[0] not in writable,
                )
            )
            run.clear()

    for address in addresses:
        if run and (address != run[-1] + 1 or (address in writable) != (run[0] in writable)):
            flush()
        run.append(address)
    flush()
    return blocks


PYMODBUS_LOGGER = "pymodbus.logging"


class PymodbusLogTemplate(logging.Filter):
    """Gives pymodbus's log records one template per level, and a bounded length.

    pymodbus formats its messages before logging them ("Invalid Modbus protocol id: 4660",
    "Unable to decode frame ..."), so every bad frame from a hostile client is a new message
    text and would pass the daemon's per-template rate limit (bmsd.system.logs) into the
    journal. With the text moved into the arguments, they are rate-limited as one message.
    Its errors carry a hex dump of the last 20 frames (up to half a megabyte): cut.
    """

    TEMPLATE = "pymodbus: %s"
    MAX_CHARS = 500

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.TEMPLATE:
            text = record.getMessage()
            if len(text) > self.MAX_CHARS:
                text = text[: self.MAX_CHARS] + f"... ({len(text)} characters)"
            record.args = (text,)
            record.msg = self.TEMPLATE
        return True


def quiet_pymodbus_log() -> None:
    """pymodbus logs (warning, error) every malformed frame a client sends, and builds a hex
    dump of the last frames for each error before the record reaches any filter: a client
    sending garbage makes the server thread spend its time, and the interpreter lock the
    control loop needs, on text. The server counts what clients get wrong (the metrics), so
    pymodbus's own records are kept to CRITICAL, unless a level was configured for its
    logger ``pymodbus`` (``logging.loggers``, e.g. to debug a client). Process-wide, as the
    logger is."""
    top = logging.getLogger("pymodbus")
    if top.level == logging.NOTSET:
        top.setLevel(logging.CRITICAL)
    logger = logging.getLogger(PYMODBUS_LOGGER)
    if not any(isinstance(f, PymodbusLogTemplate) for f in logger.filters):
        logger.addFilter(PymodbusLogTemplate())


def _run_ends(addresses: list[int]) -> list[int]:
    """For each address 0..0xFFFF, the end (exclusive) of the run of served addresses that
    holds it, or the address itself when it is not served: a read of ``count`` registers at
    ``address`` is served when ``ends[address] >= address + count``."""
    served = bytearray(0x10001)  # one past the last address: never served
    for address in addresses:
        served[address] = 1
    ends = list(range(0x10000))
    end = 0
    for address in range(0xFFFF, -1, -1):
        if served[address]:
            if not served[address + 1]:
                end = address + 1
            ends[address] = end
    return ends


def _peer_text(peer: tuple[str, int] | None) -> str:
    return "unknown client" if peer is None else f"{peer[0]}:{peer[1]}"


def build_server(
    config: Config,
    topology: Topology,
    pack_capacity_ah: float,
    latest: Callable[[], PackState | None],
    submit: Submit,
    external: ExternalInputs,
) -> ModbusServer | None:
    """The daemon's Modbus server from its config (None when disabled); registers the EMS
    heartbeat supervision with the controller's external inputs."""
    modbus = config.modbus
    if not modbus.enabled:
        return None
    info = PackInfo(
        topology,
        pack_capacity_ah,
        {
            fault_id: fault_bit_of(spec.quantity)
            for fault_id, spec in config.protection.faults.items()
        },
    )
    sunspec = None
    if modbus.sunspec:
        cell = CellModel.load(config.path(config.pack.cell_file))
        facts = PackFacts(
            manufacturer=modbus.manufacturer,
            model=modbus.model,
            version=_version(),
            serial_number=modbus.serial_number,
            unit_id=modbus.unit_id,
            nominal_voltage_v=cell.info.nominal_voltage_v * topology.cells_per_string,
            max_charge_current_a=config.limits.max_charge_current_a,
            max_discharge_current_a=config.limits.max_discharge_current_a,
        )
        sunspec = SunSpecMap(topology, facts, pack_capacity_ah)
    server = ModbusServer(modbus, latest, submit, info, sunspec=sunspec)
    external.register(HEARTBEAT_INPUT, server.heartbeat_supervision)
    return server


def _version() -> str:
    try:
        return importlib.metadata.version("bmsd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
