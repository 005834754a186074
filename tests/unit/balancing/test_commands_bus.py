"""Balancing commands and feedback round-trip over a python-can virtual bus.

The master side encodes with :class:`BalancingSender`/:class:`FrameEncoder` and sends on one
bus object; the simulated slaves receive on another object of the same virtual channel, obey,
and send their feedback frames back, which the real decoder and store turn into the
snapshot's ``balancing_feedback``. A slave stops by its own timeout when the commands stop.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import can
import numpy as np

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.balancing.commands import BalancingSender
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder, FrameEncoder
from bmsd.canbus.protocol import load_protocol
from bmsd.config import load_config
from bmsd.model.balancing import BalancingState
from bmsd.model.topology import Topology
from bmsd.sim.runner import build_simulated_pack

ROOT = Path(__file__).resolve().parents[3]


def state(bleeding: np.ndarray) -> BalancingState:  # type: ignore[type-arg]
    return BalancingState(
        strategy="voltage",
        enabled=True,
        active=bool(bleeding.any()),
        reason="test",
        bleeding=bleeding,
        bled_ah=np.zeros(bleeding.size),
    )


def test_command_and_feedback_round_trip_and_slave_timeout() -> None:
    channel = f"bal-{uuid.uuid4().hex}"
    config = load_config(
        ROOT / "etc" / "sim.toml",
        (f'can.slaves.channel="{channel}"', "balancing.strategy=voltage"),
    )
    topology = Topology.from_config(config.pack)
    protocol = load_protocol(config.path(config.acquisition.protocol))
    pack = build_simulated_pack(config, protocol, topology)
    store = ReadingStore(topology)
    ingest = Ingest(FrameDecoder(protocol, topology), store, BusStats())
    builder = SnapshotBuilder(topology, config.acquisition, 0.0)
    sender = BalancingSender(config.balancing, topology, FrameEncoder(protocol, topology))
    master = can.Bus(interface="virtual", channel=channel)
    slaves = can.Bus(interface="virtual", channel=channel)
    try:
        wanted = np.zeros(topology.cell_count, dtype=np.bool_)
        wanted[[0, 5, 17, 63]] = True  # cells on modules 0, 1 and 3, first and last cell

        def exchange(seconds: float, command: BalancingState | None) -> None:
            steps = round(seconds / 0.01)
            for _ in range(steps):
                if command is not None:
                    for frame in sender.frames(command, pack.time_s):
                        master.send(frame)
                while (message := slaves.recv(timeout=0)) is not None:
                    pack.handle_frame(message)
                for frame in pack.advance(0.01):
                    slaves.send(frame)
                while (message := master.recv(timeout=0)) is not None:
                    ingest.on_frame(message, pack.time_s)

        exchange(1.0, state(wanted))
        assert pack.bleeding.tolist() == wanted.tolist()
        snapshot = builder.build(store, 1, pack.time_s)
        assert snapshot.balancing_feedback.tolist() == wanted.tolist()
        # Refreshed, not only sent on change: every 0.5 s for every module.
        sent_before = sender.frames_sent
        exchange(1.0, state(wanted))
        assert sender.frames_sent - sent_before == 2 * topology.module_count
        # The master dies: the slaves stop by their own 2 s timeout, and report it.
        exchange(1.5, None)
        assert pack.bleeding.any()
        exchange(1.0, None)
        assert not pack.bleeding.any()
        snapshot = builder.build(store, 2, pack.time_s)
        assert not snapshot.balancing_feedback.any()
        assert pack.bled_ah[[0, 5, 17, 63]].min() > 0.0
        assert pack.bled_ah[[1, 2, 3]].max() == 0.0
    finally:
        master.shutdown()
        slaves.shutdown()
