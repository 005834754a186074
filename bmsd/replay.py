"""Replay: feed a recorded CAN log through the live pipeline on the log's own clock.

The same decoder, store and Controller run as in the daemon; only the clock differs: frame
receive times are the log's timestamps, and ticks fall every ``tick_s`` of log time. It runs as
fast as the machine allows and writes one JSON line per pack state and per event. The bus's
health is judged as live: recorded error frames drive the controller state (error-passive,
bus-off) and the error-frame and unknown-frame rates, so a recorded bus-off replays to the
same fault (a .blf or .csv recording: .asc and .log keep no error class). A recording holds
no trace of the live daemon reopening a failed interface, which resets the state it follows:
a replayed bus-off lasts until an error frame reports the controller restarted or
error-active again (longer, never shorter, than live).

The log's clock is checked, since a corrupt timestamp must not hang the replay or fake time:

- a timestamp that is not a finite number (``nan``, ``inf``), or so large that a tick no longer
  advances it, is an error naming the file and the frame (1-based, in log order);
- a jump forward longer than :func:`max_gap_s` (60 s, or ten times the longest acquisition
  timeout if that is longer: every comm-loss timeout has long tripped by then) is a gap: the
  replay ticks on to the gap bound, writes a ``replay_gap`` event and resumes ticking at the
  frame after the gap, instead of writing every tick in between (a recording stopped and
  started again, or a clock step, is hours of identical stale states);
- a frame up to :data:`MAX_BACKWARD_S` older than the one before (out-of-order logging by a
  multi-channel logger) is taken as received at the newest time seen, and counted; a larger
  step back (logs concatenated) is an error: replay each log on its own.

A log that python-can cannot parse (truncated or corrupt BLF, a malformed line) is an error
naming the file, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import can

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import BusStats, count_error_frame
from bmsd.canbus.codec import FrameDecoder
from bmsd.canbus.errorframes import (
    CAN_ERROR_FRAME_RATE,
    CAN_UNKNOWN_FRAME_RATE,
    CounterRate,
    error_level,
)
from bmsd.canbus.protocol import load_protocol
from bmsd.config import RECORD_SUFFIXES, Config
from bmsd.control.controller import Controller
from bmsd.control.export import event_record, fault_event_record, state_record
from bmsd.errors import BmsdError
from bmsd.model.bms import ContactorCommand
from bmsd.model.events import Event
from bmsd.model.state import PackState
from bmsd.model.topology import Topology


@dataclass(slots=True)
class ReplayResult:
    frames: int
    ticks: int
    stats: BusStats
    last_state: PackState | None
    gaps: int = 0  # forward jumps longer than max_gap_s, not ticked through
    reordered: int = 0  # frames older than the one before, taken at the newest time


MIN_GAP_S = 60.0
MAX_BACKWARD_S = 1.0  # out-of-order logging by a multi-channel logger, not a clock going back


def max_gap_s(config: Config) -> float:
    """The longest stretch of log time without frames that is still ticked through."""
    acq = config.acquisition
    longest = max(
        acq.module_timeout_s,
        acq.temp_timeout_s,
        acq.current_sensor_timeout_s,
        acq.switchbox_timeout_s,
    )
    return max(MIN_GAP_S, 10.0 * longest)


def _messages(log_path: Path) -> Iterator[can.Message]:
    """The log's messages; anything python-can raises while parsing becomes a BmsdError.

    Only the reader is guarded: an error in the pipeline itself is a bug and stays one."""
    index = 0
    try:
        with can.LogReader(str(log_path)) as reader:
            for message in reader:
                index += 1
                yield message
    except Exception as exc:  # IndexError, struct.error, zlib.error, ...: all a corrupt log
        where = f" after frame {index}" if index else ""
        reason = str(exc) or type(exc).__name__
        raise BmsdError(f"{log_path}: cannot read log{where}: {reason}") from exc


def _checked_time(log_path: Path, index: int, timestamp: float, tick_s: float) -> float:
    if not math.isfinite(timestamp):
        raise BmsdError(f"{log_path}: frame {index}: timestamp {timestamp} is not a finite number")
    if math.ulp(timestamp) * 100.0 > tick_s:  # the tick clock would stall or round badly
        raise BmsdError(f"{log_path}: frame {index}: timestamp {timestamp:g} s is absurdly large")
    return timestamp


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

    # The bus's health as the daemon judges it: the controller state the recorded error
    # frames report, and the error-frame and unknown-frame rates over the bus's window.
    window_s = config.can[config.acquisition.bus].rate_window_s
    error_rate, unknown_rate = CounterRate(window_s), CounterRate(window_s)

    def start(at: float) -> Controller:
        started = Controller.from_config(config, topology, store, at)
        started.external.register(
            CAN_ERROR_FRAME_RATE, lambda now_s: error_rate.update(now_s, stats.error_frames)
        )
        started.external.register(
            CAN_UNKNOWN_FRAME_RATE,
            lambda now_s: unknown_rate.update(now_s, stats.unknown_frames + stats.decode_errors),
        )
        return started

    def tick(at: float) -> None:
        nonlocal last_state
        assert controller is not None
        state, events = controller.step(
            at,
            at,
            recorded_command=recorded,
            bus_error_level=error_level(stats.controller_state),
        )
        last_state = state
        for fault_event in state.fault_events:
            out.write(json.dumps(fault_event_record(fault_event)) + "\n")
        for event in events:
            out.write(json.dumps(event_record(event)) + "\n")
        if state.tick % every == 0:
            out.write(json.dumps(state_record(state)) + "\n")

    gap_limit_s = max_gap_s(config)
    gaps = 0
    reordered = 0
    newest: float | None = None
    messages = _messages(log_path)
    # The generator runs python-can's reader and nothing else: BmsdError only from there.
    for index, message in enumerate(messages, start=1):
        timestamp = _checked_time(log_path, index, float(message.timestamp), tick_s)
        if newest is not None and timestamp < newest:
            if newest - timestamp > MAX_BACKWARD_S:
                raise BmsdError(
                    f"{log_path}: frame {index}: time goes back {newest - timestamp:g} s "
                    "(logs joined together?); replay each log on its own"
                )
            reordered += 1
            timestamp = newest
        if next_tick is None:
            next_tick = timestamp + tick_s
            controller = start(timestamp)
        elif newest is not None and timestamp - newest > gap_limit_s:
            # Tick through the comm-loss timeouts, then skip the silence.
            while next_tick <= newest + gap_limit_s:
                tick(next_tick)
                next_tick += tick_s
            gaps += 1
            gap = Event(
                next_tick,
                "replay_gap",
                f"no frames for {timestamp - newest:g} s of log time (frame {index}): "
                f"ticking resumes at {timestamp:.6f}",
                {"gap_s": timestamp - newest, "frame": index},
            )
            out.write(json.dumps(event_record(gap)) + "\n")
            next_tick = timestamp
        newest = timestamp
        while timestamp >= next_tick:
            tick(next_tick)
            next_tick += tick_s
        if message.is_error_frame:
            count_error_frame(stats, message)
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
    if next_tick is not None:
        tick(next_tick)
    ticks = 0 if controller is None else controller.tick
    return ReplayResult(
        frames=frames,
        ticks=ticks,
        stats=stats,
        last_state=last_state,
        gaps=gaps,
        reordered=reordered,
    )
