"""bmsd answers reads from its own images, not through pymodbus's datastore: the answers must be
those the datastore gives for the same device, and the response bytes those pymodbus packs."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)
from pymodbus.simulator.simruntime import SimRuntime

from bmsd.config import load_config
from bmsd.control.supervision import ExternalInputs
from bmsd.model.state import PackState
from bmsd.model.topology import Topology
from bmsd.publish.modbus.server import (
    ModbusServer,
    _HoldingResponse,
    _InputResponse,
    _ReadHolding,
    build_server,
)

ROOT = Path(__file__).resolve().parents[3]


def _server(state: PackState) -> ModbusServer:
    async def submit(command: object) -> object:
        raise AssertionError("a read never submits a command")

    config = load_config(ROOT / "etc" / "sim.toml", ("modbus.enabled=true",))
    server = build_server(
        config,
        Topology.from_config(config.pack),
        280.0,
        lambda: state,
        submit,  # type: ignore[arg-type]
        ExternalInputs(),
    )
    assert server is not None and server._sunspec is not None
    server._clock = lambda: state.time_s  # the state is always fresh
    return server


def _edges(addresses: list[int]) -> list[int]:
    """Every first and last address of a run of served addresses, and their neighbours."""
    served = set(addresses)
    edges = {0, 0xFFFF}
    for address in served:
        if address - 1 not in served or address + 1 not in served:
            edges.update((address - 1, address, address + 1))
    return sorted(a for a in edges if 0 <= a <= 0xFFFF)


def test_reads_answer_as_the_pymodbus_datastore_does(
    closed_state: tuple[PackState, object],
) -> None:
    state, _ = closed_state
    server = _server(state)
    device = server.device()
    device.action = None  # the reference: pymodbus's own address checks and registers
    reference = SimRuntime(device)
    sunspec = server._sunspec
    assert sunspec is not None
    holding = server._holding_addresses + list(range(sunspec.start, sunspec.start + sunspec.length))
    cases = 0
    for function_code, addresses in ((4, server._input_addresses), (3, holding)):
        for address in _edges(addresses):
            for count in (1, 2, 3, 17, 124, 125):
                if address + count > 0x10000:
                    continue
                ours = server.read(function_code, address, count)
                theirs = asyncio.run(reference.async_getValues(function_code, address, count))
                if isinstance(theirs, ExcCodes):
                    assert ours == theirs, (function_code, address, count)
                else:
                    assert isinstance(ours, list) and len(ours) == count, (address, count)
                cases += 1
    assert cases > 400  # every edge of the sim pack's map


def test_reads_serve_the_images_encoded_once_per_state(
    closed_state: tuple[PackState, object],
) -> None:
    state, _ = closed_state
    newest = [state]
    server = _server(state)
    server._latest = lambda: newest[0]
    sunspec = server._sunspec
    assert sunspec is not None
    words = server.read(3, sunspec.start, 125)
    assert isinstance(words, list) and words[:2] == [0x5375, 0x6E53]  # "SunS"
    image = server._sunspec_image
    assert image is not None
    image.ensure(0, sunspec.length)
    assert words == image.words[:125]
    assert server.read(4, 0, 10) == server._input[:10] and any(server._input[:10])
    assert server.read(3, sunspec.start + 125, 125) == image.words[125:250]
    assert server.stats.encodings == 1
    newest[0] = dataclasses.replace(state, tick=state.tick + 1)
    server.read(4, 0, 10)
    assert server.stats.encodings == 2 and server._sunspec_image is not image


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (_HoldingResponse, ReadHoldingRegistersResponse),
        (_InputResponse, ReadInputRegistersResponse),
    ],
)
def test_responses_pack_as_pymodbus_does(ours: type, theirs: type) -> None:
    for count in (1, 2, 64, 125):
        words = [(k * 40503) & 0xFFFF for k in range(count)]
        words[0] = 0xFFFF
        words[-1] = 0
        assert ours(registers=words).encode() == theirs(registers=words).encode()


def test_bad_counts_and_stale_states_are_answered_with_exceptions(
    closed_state: tuple[PackState, object],
) -> None:
    state, _ = closed_state
    server = _server(state)
    assert server.read(4, 0, 0) == ExcCodes.ILLEGAL_VALUE
    assert server.read(4, 0, 126) == ExcCodes.ILLEGAL_VALUE
    assert server.read(3, 0xFFFF, 2) == ExcCodes.ILLEGAL_VALUE
    server._clock = lambda: state.time_s + server.config.max_state_age_s + 0.1
    assert server.read(4, 0, 10) == ExcCodes.DEVICE_FAILURE
    request = _ReadHolding()
    request.decode(bytes.fromhex("9c400005"))  # 40000, 5 registers
    request.transaction_id, request.dev_id = 77, 1
    answer = server.read_response(request)
    assert answer.function_code == 0x83 and answer.exception_code == ExcCodes.DEVICE_FAILURE
    assert answer.transaction_id == 77 and answer.dev_id == 1
