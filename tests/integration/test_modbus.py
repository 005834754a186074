"""The Modbus server of a running daemon on the simulated pack, read by real clients.

Every register of the native map is read with the pymodbus client over TCP and checked against
the PackState it came from (found by the ``tick`` register read in the same request, or by
reading the tick before and after), using expectations written here from the PackState, not
the server's own value functions. ``mbpoll`` reads a block and gets the same values. Bad input
is sent on raw sockets: exceptions 02, 03, 04, 01, 0B; the connection limit; the idle timeout;
a malformed MBAP frame on one connection while another is served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient

from bmsd.app import Daemon
from bmsd.config import load_config
from bmsd.control.controller import Command
from bmsd.model.bms import Reply
from bmsd.model.state import PackState
from bmsd.publish.modbus.registers import (
    MODULE_ARRAYS,
    MODULE_BASE,
    MODULE_STRIDE,
    REGISTER_BY_NAME,
    REGISTERS,
    PackInfo,
    Register,
    decode_value,
    fault_bit_of,
)
from bmsd.publish.modbus.server import ModbusServer

ROOT = Path(__file__).resolve().parents[2]
UNIT = 1


def _overrides(tmp_path: Path, *extra: str) -> tuple[str, ...]:
    return (
        f"can.slaves.channel='modbus-{tmp_path.name}'",
        f"state.directory='{tmp_path / 'state'}'",
        "control.summary_log_interval_s=0",
        "modbus.enabled=true",
        "modbus.port=0",
        "metrics.port=0",
        # These tests are about Modbus; on a loaded test machine the event loop can stall for
        # half a second, which would open the contactors under them.
        "protection.faults.control_loop_overrun.enabled=false",
        *extra,
    )


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, *extra: str
) -> AsyncIterator[tuple[Daemon, dict[int, PackState]]]:
    """A daemon on the simulated pack with the Modbus server; states by tick."""
    config = load_config(ROOT / "etc" / "sim.toml", _overrides(tmp_path, *extra))
    daemon = Daemon(config)
    states: dict[int, PackState] = {}

    def keep(state: PackState) -> None:
        states[state.tick] = state
        states.pop(state.tick - 200, None)

    daemon.loop.on_tick.append(keep)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(200):  # until the pack is closed and estimated
            await asyncio.sleep(0.05)
            latest = daemon.hub.latest
            if (
                latest is not None
                and latest.estimates is not None
                and latest.mode.value == "closed"
            ):
                break
        yield daemon, states
    finally:
        daemon.request_stop()
        await task


def _port(daemon: Daemon) -> int:
    assert daemon.modbus is not None
    return daemon.modbus.port


# -- what each register must hold, from the PackState -----------------------------------------


def expected_values(
    state: PackState, info_capacity_ah: float, quantity_of: Mapping[str, str]
) -> dict[str, float | None]:
    snap = state.snapshot
    est = state.estimates
    limits = state.limits
    cv = snap.cell_voltage
    temp = snap.temperature
    contactors = snap.contactors
    power = (
        None
        if snap.pack_voltage_v is None or snap.pack_current_a is None
        else snap.pack_voltage_v * snap.pack_current_a
    )
    modes = ["init", "standby", "precharge", "closed", "opening", "fault"]
    command = state.contactor_command
    values: dict[str, float | None] = {
        "map_version": 1,
        "heartbeat": state.tick % 65536,
        "bms_state": modes.index(state.mode.value),
        "contactor_command": command.minus + 2 * command.plus + 4 * command.precharge,
        "contactor_feedback": None
        if contactors is None
        else contactors.minus_closed + 2 * contactors.plus_closed + 4 * contactors.precharge_closed,
        "data_ok": float(state.data_ok),
        "info_flags": _flags_of(state, quantity_of, "info"),
        "warning_flags": _flags_of(state, quantity_of, "warning"),
        "alarm_flags": _flags_of(state, quantity_of, "fatal"),
        "latched_flags": _flags_of(state, quantity_of, "latched"),
        "pack_voltage": snap.pack_voltage_v,
        "pack_current": snap.pack_current_a,
        "pack_power": power,
        "soc": None if est is None else est.pack_soc * 100,
        "soc_uncertainty": None if est is None else est.pack_soc_std * 100,
        "soh": None if est is None else est.soh_capacity * 100,
        "charge_voltage_limit": limits.charge_voltage_v,
        "charge_current_limit": limits.charge_current_a,
        "discharge_current_limit": limits.discharge_current_a,
        "discharge_voltage_limit": limits.discharge_voltage_v,
        "strings": 1,
        "modules_per_string": 4,
        "cells_per_module": 16,
        "temps_per_module": 4,
        "cell_count": 64,
        "invalid_cell_count": int((~snap.cell_voltage_valid).sum()),
        "nominal_capacity": info_capacity_ah,
        "estimated_capacity": None if est is None else est.pack_capacity_ah,
        "charge_energy": None if est is None else est.charge_energy_wh,
        "discharge_energy": None if est is None else est.discharge_energy_wh,
        "charge_throughput": None if est is None else est.charge_throughput_ah,
        "discharge_throughput": None if est is None else est.discharge_throughput_ah,
        "equivalent_full_cycles": None if est is None else est.equivalent_full_cycles,
        # bit 0 allowed, bit 1 bleeding now (balancing is on in etc/sim.toml)
        "balancing": None
        if state.balancing is None
        else int(state.balancing.enabled) | int(state.balancing.active) << 1,
        "balancing_cells": None
        if state.balancing is None
        else int(np.count_nonzero(state.balancing.bleeding)),
        "ems_heartbeat_age": None,  # not supervised
        "unix_time": int(state.wall_time),
        "tick": state.tick,
    }
    for prefix, extremes, last in (("cell_voltage", cv, "cell"), ("temperature", temp, "sensor")):
        assert extremes is not None
        values[f"{prefix}_max"] = extremes.max_value
        values[f"{prefix}_min"] = extremes.min_value
        values[f"{prefix}_average"] = extremes.mean
        for end, location in (("max", extremes.max_location), ("min", extremes.min_location)):
            values[f"{prefix}_{end}_string"] = location.string
            values[f"{prefix}_{end}_module"] = location.module
            values[f"{prefix}_{end}_{last}"] = location.index
    for name in (
        "pack_voltage",
        "pack_current",
        "pack_power",
        "soc",
        "charge_voltage_limit",
        "charge_current_limit",
        "discharge_current_limit",
        "discharge_voltage_limit",
    ):
        values[f"{name}_f"] = values[name]
    return values


def _flags_of(state: PackState, quantity_of: Mapping[str, str], which: str) -> int:
    """The documented fault-category bits (docs/modbus.md) of the state's fault levels."""
    bits = 0
    for level in state.faults.levels:
        hit = level.latched if which == "latched" else level.active and level.level.label == which
        if hit:
            bits |= 1 << fault_bit_of(quantity_of[level.fault_id])
    return bits


def _quantities(daemon: Daemon) -> dict[str, str]:
    return {fault_id: spec.quantity for fault_id, spec in daemon.config.protection.faults.items()}


def check_register(register: Register, words: list[int], want: float | None) -> None:
    got = decode_value(register.type, register.scale, words)
    if want is None:
        assert got is None, f"{register.name}: {got} where not available was expected"
        return
    assert got is not None, f"{register.name}: not available, expected {want}"
    if register.type == "float32":
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6), register.name
    else:
        assert abs(got - want) <= register.scale / 2 + 1e-9, f"{register.name}: {got} vs {want}"


async def read_consistent(
    client: AsyncModbusTcpClient, read: Callable[[], Any]
) -> tuple[int, list[int]]:
    """A read whose image is known to come from one tick: the tick before and after agree."""
    tick_register = REGISTER_BY_NAME["tick"]
    for _ in range(50):
        before = await client.read_input_registers(tick_register.address, count=2, device_id=UNIT)
        result = await read()
        after = await client.read_input_registers(tick_register.address, count=2, device_id=UNIT)
        assert not result.isError(), result
        if before.registers == after.registers:
            tick = before.registers[0] << 16 | before.registers[1]
            return tick, list(result.registers)
    raise AssertionError("no consistent read in 50 attempts")


def test_every_register_matches_the_pack_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(tmp_path) as (daemon, states):
            capacity = daemon.cell_capacity_ah
            client = AsyncModbusTcpClient("127.0.0.1", port=_port(daemon))
            await client.connect()
            try:
                inputs = [r for r in REGISTERS if r.space == "input"]
                checked: set[str] = set()
                for first, last in ((0, 65), (100, 115)):
                    tick, words = await read_consistent(
                        client,
                        lambda first=first, last=last: client.read_input_registers(
                            first, count=last - first + 1, device_id=UNIT
                        ),
                    )
                    want = expected_values(states[tick], capacity, _quantities(daemon))
                    for register in inputs:
                        if first <= register.address <= last:
                            offset = register.address - first
                            check_register(
                                register,
                                words[offset : offset + register.words],
                                want[register.name],
                            )
                            checked.add(register.name)
                assert checked == {r.name for r in inputs}
                for module in range(4):
                    for array in MODULE_ARRAYS:
                        count = 16 if array.name == "cell_voltage" else 4
                        base = MODULE_BASE + MODULE_STRIDE * module + array.offset
                        tick, words = await read_consistent(
                            client,
                            lambda base=base, count=count: client.read_input_registers(
                                base, count=count, device_id=UNIT
                            ),
                        )
                        snap = states[tick].snapshot
                        source = (
                            snap.cell_voltage_v if array.name == "cell_voltage" else snap.temp_c
                        )
                        for index in range(count):
                            got = decode_value(array.type, array.scale, [words[index]])
                            want_value = float(source[module * count + index])
                            assert (
                                got is not None and abs(got - want_value) <= array.scale / 2 + 1e-9
                            )
                holding = await client.read_holding_registers(0, count=4, device_id=UNIT)
                assert holding.registers == [0, 0, 1, 0]  # balancing allowed at start
            finally:
                client.close()

    asyncio.run(scenario())


def _mbpoll(port: int, kind: str, first: int, count: int) -> list[int]:
    output = subprocess.run(
        [
            "mbpoll",
            "-m",
            "tcp",
            "-a",
            str(UNIT),
            "-p",
            str(port),
            "-t",
            kind,
            "-0",
            "-r",
            str(first),
            "-c",
            str(count),
            "-1",
            "-o",
            "2",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    values = []
    for line in output.splitlines():
        if line.startswith("["):
            values.append(int(line.split(":", 1)[1].split()[0]) & 0xFFFF)
    assert len(values) == count, output
    return values


def test_mbpoll_reads_the_same_values(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(tmp_path) as (daemon, states):
            port = _port(daemon)
            capacity = daemon.cell_capacity_ah
            words = await asyncio.to_thread(_mbpoll, port, "3", 0, 66)
            tick = words[64] << 16 | words[65]
            want = expected_values(states[tick], capacity, _quantities(daemon))
            for register in (r for r in REGISTERS if r.space == "input" and r.address < 66):
                check_register(
                    register,
                    words[register.address : register.address + register.words],
                    want[register.name],
                )
            # holding registers (-t 4) through mbpoll as well
            assert await asyncio.to_thread(_mbpoll, port, "4", 0, 4) == [0, 0, 1, 0]

    asyncio.run(scenario())


# -- raw frames --------------------------------------------------------------------------------


def _frame(tid: int, function: int, payload: bytes, unit: int = UNIT) -> bytes:
    return struct.pack(">HHHBB", tid, 0, len(payload) + 2, unit, function) + payload


def _exchange(sock: socket.socket, frame: bytes) -> bytes:
    sock.sendall(frame)
    header = _recv_exactly(sock, 6)
    (length,) = struct.unpack(">H", header[4:6])
    return header + _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def _read(sock: socket.socket, function: int, address: int, count: int, unit: int = UNIT) -> bytes:
    return _exchange(sock, _frame(7, function, struct.pack(">HH", address, count), unit))


def _exception_of(response: bytes) -> int | None:
    function = response[7]
    return response[8] if function & 0x80 else None


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_bad_requests_get_the_right_exceptions(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(tmp_path) as (daemon, _states):
            port = _port(daemon)

            def probe() -> dict[str, int | None]:
                with _connect(port) as sock:
                    return {
                        "ok": _exception_of(_read(sock, 4, 0, 10)),
                        "unmapped": _exception_of(_read(sock, 4, 500, 1)),
                        "into_gap": _exception_of(_read(sock, 4, 60, 10)),
                        "past_cells": _exception_of(_read(sock, 4, MODULE_BASE, 17)),
                        "holding_as_input_space": _exception_of(_read(sock, 3, 10, 1)),
                        "too_many": _exception_of(_read(sock, 4, 0, 126)),
                        "none": _exception_of(_read(sock, 3, 0, 0)),
                        "max_ok": _exception_of(_read(sock, 4, MODULE_BASE, 16)),
                        "coils": _exception_of(_read(sock, 1, 0, 1)),
                        "other_unit": _exception_of(_read(sock, 4, 0, 1, unit=9)),
                        "write_off": _exception_of(
                            _exchange(sock, _frame(8, 6, struct.pack(">HH", 0, 1)))
                        ),
                    }

            found = await asyncio.to_thread(probe)
            assert found == {
                "ok": None,
                "unmapped": 2,
                "into_gap": 2,
                "past_cells": 2,
                "holding_as_input_space": 2,
                "too_many": 3,
                "none": 3,
                "max_ok": None,
                "coils": 1,
                "other_unit": 0x0B,
                "write_off": 1,
            }
            assert daemon.modbus is not None
            errors = daemon.modbus.stats.errors
            assert errors[(4, 2)] == 3 and errors[(4, 3)] == 1 and errors[(6, 1)] == 1

    asyncio.run(scenario())


def test_connection_limit_idle_timeout_and_malformed_frames(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(
            tmp_path, "modbus.max_connections=2", "modbus.idle_timeout_s=1.0"
        ) as (daemon, _states):
            port = _port(daemon)

            def exercise() -> None:
                good = _connect(port)
                bad = _connect(port)
                assert _exception_of(_read(good, 4, 0, 2)) is None
                assert _exception_of(_read(bad, 4, 0, 2)) is None
                # A third connection is over the limit and both others are being served:
                # closed at once (a quiet one would have been replaced, test_modbus_hostile).
                third = _connect(port)
                assert _closed_by_server(third, 2.0)
                third.close()
                # Malformed MBAP frames on one connection: wrong protocol id, absurd length,
                # garbage. The other connection is served throughout.
                for junk in (
                    struct.pack(">HHHBB", 1, 0x1234, 6, UNIT, 4) + b"\x00\x00\x00\x01",
                    struct.pack(">HHHBB", 2, 0, 0xFFFF, UNIT, 4) + b"\x00" * 20,
                    bytes(range(256)) * 3,
                ):
                    bad.sendall(junk)
                    for _ in range(5):
                        response = _read(good, 4, 0, 2)
                        assert _exception_of(response) is None
                bad.close()
                # The freed slot can be used again.
                again = _connect(port)
                assert _exception_of(_read(again, 4, 1000, 16)) is None
                # Idle connections are closed after the timeout; an active one is not.
                assert _closed_by_server(again, 3.0)
                good.close()

            await asyncio.to_thread(exercise)
            assert daemon.modbus is not None
            stats = daemon.modbus.stats
            assert stats.connections_refused == 1
            assert stats.connections_idle_closed >= 1

    asyncio.run(scenario())


def test_one_host_cannot_take_every_connection(tmp_path: Path) -> None:
    """Two connections per address: a third from the same host replaces its quiet one, or is
    refused when both are served; another host (127.0.0.2, still loopback) gets in."""

    async def scenario() -> None:
        async with running_daemon(
            tmp_path, "modbus.max_connections=6", "modbus.max_connections_per_address=2"
        ) as (daemon, _states):
            port = _port(daemon)

            def exercise() -> None:
                first, quiet = _connect(port), _connect(port)
                assert _exception_of(_read(first, 4, 0, 2)) is None
                time.sleep(1.2)  # past the grace a new connection has to send its request
                # The quiet one (never sent a request) makes room for the newcomer.
                second = _connect(port)
                assert _closed_by_server(quiet, 2.0)
                assert _exception_of(_read(second, 4, 0, 2)) is None
                # Both of this host's connections are served: a third is refused.
                third = _connect(port)
                assert _closed_by_server(third, 2.0)
                # Another host is served while this one is at its limit; so are both of ours.
                other = _connect(port, source="127.0.0.2")
                assert _exception_of(_read(other, 4, 0, 2)) is None
                assert _exception_of(_read(first, 4, 0, 2)) is None
                assert _exception_of(_read(second, 4, 0, 2)) is None
                for sock in (first, quiet, second, third, other):
                    sock.close()

            await asyncio.to_thread(exercise)
            assert daemon.modbus is not None
            stats = daemon.modbus.stats
            assert stats.connections_evicted == 1
            assert stats.connections_refused == 1

    asyncio.run(scenario())


def _responses(sock: socket.socket, count: int) -> list[tuple[int, int, bytes]]:
    """``count`` responses as (transaction id, function code, data after it)."""
    found = []
    for _ in range(count):
        header = _recv_exactly(sock, 7)
        tid, _protocol, length, _unit = struct.unpack(">HHHB", header)
        body = _recv_exactly(sock, length - 1)
        found.append((tid, body[0], body[1:]))
    return found


def test_pipelined_requests_are_all_answered_in_order(tmp_path: Path) -> None:
    """A client may send requests without waiting for each answer (Modbus TCP transaction ids
    pair them). Forty reads, a frame of another protocol, a write and a read of what it wrote,
    all in one send of 533 bytes: every request is answered, in order, with its own
    transaction id; the foreign frame is dropped and counted."""

    async def scenario() -> None:
        async with running_daemon(
            tmp_path, "modbus.writes.enabled=true", "modbus.writes.allowed_clients=['127.0.0.1']"
        ) as (daemon, _states):
            port = _port(daemon)
            reads = [_frame(100 + i, 4, struct.pack(">HH", 0, 2)) for i in range(40)]
            foreign = struct.pack(">HHHBB", 150, 0x1234, 6, UNIT, 4) + struct.pack(">HH", 0, 2)
            write = _frame(200, 6, struct.pack(">HH", 3, 4242))  # the EMS heartbeat register
            read_back = _frame(201, 3, struct.pack(">HH", 3, 1))
            last = _frame(202, 4, struct.pack(">HH", 0, 2))
            burst = b"".join([*reads[:20], foreign, *reads[20:], write, read_back, last])

            def exchange() -> list[tuple[int, int, bytes]]:
                with _connect(port) as sock:
                    sock.sendall(burst)
                    return _responses(sock, 43)

            answers = await asyncio.to_thread(exchange)
            assert [tid for tid, _, _ in answers] == [*range(100, 140), 200, 201, 202]
            assert all(function == 4 and data[0] == 4 for _, function, data in answers[:40])
            assert answers[40][1:] == (6, struct.pack(">HH", 3, 4242))  # the write's echo
            assert answers[41][1:] == (3, struct.pack(">BH", 2, 4242))  # it reads its write
            assert answers[42][1] == 4
            assert daemon.modbus is not None
            assert daemon.modbus.stats.frames_dropped == 1
            assert daemon.modbus.heartbeat.value == 4242

    asyncio.run(scenario())


def test_stale_state_is_a_device_failure(tmp_path: Path) -> None:
    """A state older than max_state_age_s is not served: exception 04, then fresh again."""

    async def scenario() -> None:
        async with running_daemon(tmp_path) as (daemon, _states):
            state = daemon.hub.latest
            assert state is not None
            config = daemon.config.modbus
        now = [state.time_s + 0.5]

        async def never(command: Command) -> Reply:
            raise AssertionError("no command expected")

        server = ModbusServer(
            config,
            lambda: state,
            never,
            PackInfo(daemon.topology, 280.0, {}),
            clock=lambda: now[0],
        )
        await server.start()
        try:
            client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
            await client.connect()
            fresh = await client.read_input_registers(0, count=2, device_id=UNIT)
            assert not fresh.isError()
            now[0] = state.time_s + config.max_state_age_s + 0.001
            stale = await client.read_input_registers(0, count=2, device_id=UNIT)
            assert stale.isError() and stale.exception_code == 4
            stale_holding = await client.read_holding_registers(0, count=1, device_id=UNIT)
            assert stale_holding.isError() and stale_holding.exception_code == 4
            now[0] = state.time_s + config.max_state_age_s
            assert not (await client.read_input_registers(0, count=2, device_id=UNIT)).isError()
            client.close()
        finally:
            await server.close()

    asyncio.run(scenario())


def _flags(daemon: Daemon) -> Mapping[str, int]:
    state = daemon.hub.latest
    assert state is not None
    return {level.key: int(level.active) for level in state.faults.levels}


def test_writes_are_permitted_validated_and_go_through_the_command_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")

    async def scenario() -> None:
        async with running_daemon(
            tmp_path,
            "modbus.writes.enabled=true",
            "modbus.writes.allowed_clients=['127.0.0.1']",
        ) as (daemon, _states):
            client = AsyncModbusTcpClient("127.0.0.1", port=_port(daemon))
            await client.connect()
            try:
                opened = await client.write_register(1, 2, device_id=UNIT)  # open
                assert not opened.isError(), opened
                assert daemon.hub.latest is not None
                for _ in range(100):  # opening under load waits up to open_wait_s
                    await asyncio.sleep(0.05)
                    if daemon.hub.latest.mode.value == "standby":
                        break
                latest = daemon.hub.latest
                assert latest.mode.value == "standby", [lv.key for lv in latest.faults.active()]
                state_reg = await client.read_input_registers(2, count=1, device_id=UNIT)
                assert state_reg.registers == [1]
                illegal = await client.write_register(1, 3, device_id=UNIT)
                assert illegal.isError() and illegal.exception_code == 3
                nothing = await client.write_register(0, 1, device_id=UNIT)  # nothing latched
                assert nothing.isError() and nothing.exception_code == 3
                bad_balancing = await client.write_register(2, 2, device_id=UNIT)
                assert bad_balancing.isError() and bad_balancing.exception_code == 3
                stop_balancing = await client.write_register(2, 0, device_id=UNIT)
                assert not stop_balancing.isError(), stop_balancing
                await asyncio.sleep(0.3)
                assert daemon.hub.latest.balancing is not None
                assert not daemon.hub.latest.balancing.enabled
                enable = await client.read_holding_registers(2, count=1, device_id=UNIT)
                assert enable.registers == [0]
                read_only = await client.write_register(10, 1, device_id=UNIT)
                assert read_only.isError() and read_only.exception_code == 2
                closed = await client.write_registers(1, [1], device_id=UNIT)  # close
                assert not closed.isError(), closed
                beat = await client.write_register(3, 42, device_id=UNIT)
                assert not beat.isError()
                # The same requests through SunSpec 802: SetOp (2 DISCONNECT) and CtrlHb.
                layout = daemon.modbus._sunspec if daemon.modbus is not None else None
                assert layout is not None
                set_op = next(a for a, k in layout.writes.items() if k.value == "connect")
                ctrl_hb = next(a for a, k in layout.writes.items() if k.value == "heartbeat")
                assert not (await client.write_register(set_op, 2, device_id=UNIT)).isError()
                bad = await client.write_register(set_op, 7, device_id=UNIT)
                assert bad.isError() and bad.exception_code == 3
                assert not (await client.write_register(ctrl_hb, 43, device_id=UNIT)).isError()
                assert daemon.modbus.heartbeat.value == 43
                read_only_sunspec = await client.write_register(40000, 1, device_id=UNIT)
                assert read_only_sunspec.isError() and read_only_sunspec.exception_code == 2
                assert (
                    await client.read_holding_registers(3, count=1, device_id=UNIT)
                ).registers == [43]  # the last heartbeat, written as SunSpec CtrlHb
            finally:
                client.close()

    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any("request open from modbus 127.0.0.1:" in m and "accepted" in m for m in messages)
    assert any("request close from modbus 127.0.0.1:" in m for m in messages)
    assert sum("request open from modbus 127.0.0.1:" in m for m in messages) == 2
    assert any("refused" in m and "contactor request takes 1" in m for m in messages)


def test_writes_from_a_client_not_listed_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(
            tmp_path,
            "modbus.writes.enabled=true",
            "modbus.writes.allowed_clients=['10.9.8.7']",
        ) as (daemon, _states):
            client = AsyncModbusTcpClient("127.0.0.1", port=_port(daemon))
            await client.connect()
            refused = await client.write_register(1, 2, device_id=UNIT)
            client.close()
            assert refused.isError() and refused.exception_code == 1
            assert daemon.hub.latest is not None and daemon.hub.latest.mode.value == "closed"

    asyncio.run(scenario())


def test_lost_ems_heartbeat_faults_when_configured(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(
            tmp_path,
            "modbus.writes.enabled=true",
            "modbus.writes.allowed_clients=['127.0.0.0/8']",
            "modbus.ems_heartbeat.enabled=true",
            "modbus.ems_heartbeat.timeout_s=0.5",
            "modbus.ems_heartbeat.action='fault'",
        ) as (daemon, _states):
            client = AsyncModbusTcpClient("127.0.0.1", port=_port(daemon))
            await client.connect()
            for beat in range(5):  # on time: no fault
                assert not (await client.write_register(3, beat, device_id=UNIT)).isError()
                await asyncio.sleep(0.2)
            assert _flags(daemon)["ems_heartbeat_lost.fatal"] == 0
            age = await client.read_input_registers(61, count=1, device_id=UNIT)
            assert decode_value("u16", 0.1, age.registers) is not None
            await asyncio.sleep(1.0)  # the EMS falls silent
            flags = _flags(daemon)
            assert flags["ems_heartbeat_lost.fatal"] == 1
            for _ in range(60):  # opening waits for the current to fall, then fault
                assert daemon.hub.latest is not None
                if daemon.hub.latest.mode.value == "fault":
                    break
                await asyncio.sleep(0.05)
            assert daemon.hub.latest.mode.value == "fault"
            alarms = await client.read_input_registers(8, count=2, device_id=UNIT)
            assert alarms.registers[0] & 1 << 12 and alarms.registers[1] & 1 << 12
            client.close()

    asyncio.run(scenario())


def test_lost_ems_heartbeat_derates_when_configured(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_daemon(
            tmp_path,
            "modbus.writes.enabled=true",
            "modbus.writes.allowed_clients=['127.0.0.1']",
            "modbus.ems_heartbeat.enabled=true",
            "modbus.ems_heartbeat.timeout_s=0.5",
        ) as (daemon, _states):
            client = AsyncModbusTcpClient("127.0.0.1", port=_port(daemon))
            await client.connect()
            assert not (await client.write_register(3, 1, device_id=UNIT)).isError()
            await asyncio.sleep(1.2)  # the EMS falls silent
            flags = _flags(daemon)
            assert flags["ems_heartbeat_lost.warning"] == 1
            assert flags["ems_heartbeat_lost.fatal"] == 0
            latest = daemon.hub.latest
            assert latest is not None and latest.mode.value == "closed"
            for kind in ("ccl", "dcl"):  # both directions derated by the warning
                reasons = [c.reason for c in latest.limits.contributors(kind)]
                assert any("ems_heartbeat_lost.warning" in r for r in reasons), reasons
            warnings = await client.read_input_registers(7, count=1, device_id=UNIT)
            assert warnings.registers[0] & 1 << 12
            assert not (await client.write_register(3, 2, device_id=UNIT)).isError()  # back
            for _ in range(40):
                await asyncio.sleep(0.05)
                if _flags(daemon)["ems_heartbeat_lost.warning"] == 0:
                    break
            assert _flags(daemon)["ems_heartbeat_lost.warning"] == 0
            client.close()

    asyncio.run(scenario())


def test_no_deprecation_warnings_from_pymodbus(
    tmp_path: Path, recwarn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """pymodbus announces its deprecated datastore API in its log, not as warnings."""
    caplog.set_level("DEBUG", logger="pymodbus")

    async def scenario() -> None:
        async with running_daemon(tmp_path) as (daemon, _states):
            client = AsyncModbusTcpClient("127.0.0.1", port=_port(daemon))
            await client.connect()
            assert not (await client.read_input_registers(0, count=5, device_id=UNIT)).isError()
            assert not (
                await client.read_holding_registers(40000, count=4, device_id=UNIT)
            ).isError()
            client.close()

    asyncio.run(scenario())
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
    pymodbus_log = [r for r in caplog.records if r.name.startswith("pymodbus")]
    assert pymodbus_log, "pymodbus's log was not captured"
    assert not [r for r in pymodbus_log if "deprecat" in r.getMessage().lower()]


def test_a_busy_port_is_retried_while_the_daemon_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Port taken (another daemon, a lingering socket): logged, retried, then served."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]

    async def scenario() -> None:
        async with running_daemon(tmp_path) as (daemon, _states):
            state = daemon.hub.latest
            assert state is not None

        async def never(command: Command) -> Reply:
            raise AssertionError("no command expected")

        config = dataclasses.replace(daemon.config.modbus, port=port, max_state_age_s=3600.0)
        server = ModbusServer(
            config, lambda: state, never, PackInfo(daemon.topology, 280.0, {}), retry_s=0.2
        )
        await server.start()
        try:
            assert not server.serving
            await asyncio.sleep(0.5)
            assert not server.serving
            blocker.close()
            for _ in range(50):
                await asyncio.sleep(0.1)
                if server.serving:
                    break
            client = AsyncModbusTcpClient("127.0.0.1", port=port)
            await client.connect()
            assert not (await client.read_input_registers(0, count=2, device_id=UNIT)).isError()
            client.close()
        finally:
            await server.close()

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert sum(f"cannot listen on 127.0.0.1:{port}" in m for m in errors) == 1
