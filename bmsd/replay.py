"""Replay: feed a recorded CAN log through the live pipeline on the log's own clock.

The same decoder, store and Controller run as in the daemon; only the clock differs: frame
receive times are the log's timestamps, and ticks fall every ``tick_s`` of log time. It runs as
fast as the machine allows and writes one JSON line per pack state and per event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import can

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder
from bmsd.canbus.protocol import load_protocol
from bmsd.config import RECORD_SUFFIXES, Config
from bmsd.control.controller import Controller
from bmsd.control.export import event_record, fault_event_record, state_record
from bmsd.errors import BmsdError
from bmsd.model.bms import ContactorCommand
from bmsd.model.state import PackState
from bmsd.model.topology import Topology


@dataclass(slots=True)
class ReplayResult:
    frames: int
    ticks: int
    stats: BusStats
    last_state: PackState | None


def replay_log(config: Config, log_path: Path, out: TextIO, *, every: int = 1) -> ReplayResult:
    """Replay ``log_path``; write every ``every``-th state and all events to ``out``."""
    if log_path.suffix.lower() not in RECORD_SUFFIXES:
        raise BmsdError(f"{log_path}: unsupported log format (use {', '.join(RECORD_SUFFIXES)})")
    if not log_path.is_file():
        raise BmsdError(f"{log_path}: file not found")
    topology = Topology.from_config(config.pack)
    protocol = load_protocol(config.path(config.acquisition.protocol))
    store = ReadingStore(topology)
    stats = BusStats()
    ingest = Ingest(FrameDecoder(protocol, topology), store, stats)
    controller: Controller | None = None
    tick_s = config.control.tick_s
    next_tick: float | None = None
    frames = 0
    last_state: PackState | None = None

    decoder = FrameDecoder(protocol, topology)
    recorded: ContactorCommand | None = None

    def tick(at: float) -> None:
        nonlocal last_state
        assert controller is not None
        state, events = controller.step(at, at, recorded_command=recorded)
        last_state = state
        for fault_event in state.fault_events:
            out.write(json.dumps(fault_event_record(fault_event)) + "\n")
        for event in events:
            out.write(json.dumps(event_record(event)) + "\n")
        if state.tick % every == 0:
            out.write(json.dumps(state_record(state)) + "\n")

    try:
        reader = can.LogReader(str(log_path))
        for message in reader:
            timestamp = float(message.timestamp)
            if next_tick is None:
                next_tick = timestamp + tick_s
                controller = Controller.from_config(config, topology, store, timestamp)
            while timestamp >= next_tick:
                tick(next_tick)
                next_tick += tick_s
            if message.is_error_frame:
                stats.error_frames += 1
                continue
            if not message.is_rx:
                # Our own frames: the contactor commands tell what the live daemon decided.
                stats.tx_frames += 1
                seen = decoder.decode_contactor_command(
                    message.arbitration_id, message.is_extended_id, message.data
                )
                if seen is not None:
                    recorded = ContactorCommand(*seen)
                continue
            frames += 1
            stats.rx_frames += 1
            ingest.on_frame(message, timestamp)
    except (ValueError, OSError, EOFError) as exc:
        raise BmsdError(f"{log_path}: cannot read log: {exc}") from exc
    if next_tick is not None:
        tick(next_tick)
    ticks = 0 if controller is None else controller.tick
    return ReplayResult(frames=frames, ticks=ticks, stats=stats, last_state=last_state)
