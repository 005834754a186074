"""Property-based fuzzing of frame ingestion: any frame is decoded, counted or dropped.

Random payloads of every length on every id the slave protocol knows, random standard and
extended ids, and remote frames go through the real decoder (the shipped DBCs) into the
reading store. Ingestion must never raise, every frame must land in exactly one counter, and
the snapshot built afterwards must only call valid what lies inside the plausible ranges.
"""

from __future__ import annotations

import os
from pathlib import Path

import can
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsd.acquisition.ingest import Ingest
from bmsd.acquisition.snapshot import SnapshotBuilder
from bmsd.acquisition.store import ReadingStore
from bmsd.canbus.bus import BusStats
from bmsd.canbus.codec import FrameDecoder
from bmsd.canbus.protocol import load_protocol
from bmsd.config import load_config
from bmsd.model.topology import Topology

ROOT = Path(__file__).resolve().parents[3]
CONFIG = load_config(ROOT / "etc" / "sim.toml")
TOPOLOGY = Topology.from_config(CONFIG.pack)
PROTOCOL = load_protocol(CONFIG.path(CONFIG.acquisition.protocol))
KNOWN = sorted({(m.frame_id, m.is_extended_frame) for m in PROTOCOL.database.messages})

known_frames = st.tuples(
    st.sampled_from(KNOWN), st.binary(min_size=0, max_size=8), st.booleans()
).map(
    lambda t: can.Message(
        arbitration_id=t[0][0], is_extended_id=t[0][1], data=t[1], is_remote_frame=t[2] and not t[1]
    )
)
random_frames = st.builds(
    lambda extended, frame_id, data: can.Message(
        arbitration_id=frame_id & (0x1FFFFFFF if extended else 0x7FF),
        is_extended_id=extended,
        data=data,
    ),
    st.booleans(),
    st.integers(min_value=0, max_value=0x1FFFFFFF),
    st.binary(max_size=8),
)


@settings(
    max_examples=int(os.environ.get("BMSD_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(frames=st.lists(st.one_of(known_frames, random_frames), min_size=1, max_size=60))
def test_any_frame_is_decoded_or_counted_and_dropped(frames: list[can.Message]) -> None:
    store = ReadingStore(TOPOLOGY)
    stats = BusStats()
    ingest = Ingest(FrameDecoder(PROTOCOL, TOPOLOGY), store, stats)
    for index, frame in enumerate(frames):
        ingest.on_frame(frame, 1.0 + index * 1e-3)
    decoded = sum(stats.frames_by_message.values())
    assert decoded + stats.unknown_frames + stats.decode_errors == len(frames)

    snapshot = SnapshotBuilder(TOPOLOGY, CONFIG.acquisition, 0.0).build(store, 1, 1.1)
    v_low, v_high = CONFIG.acquisition.cell_voltage_range_v
    volts = snapshot.cell_voltage_v[snapshot.cell_voltage_valid]
    assert np.all((volts >= v_low) & (volts <= v_high))
    t_low, t_high = CONFIG.acquisition.temp_range_c
    temps = snapshot.temp_c[snapshot.temp_valid]
    assert np.all((temps >= t_low) & (temps <= t_high))
    if snapshot.pack_current_a is not None:
        a_low, a_high = CONFIG.acquisition.current_range_a
        assert a_low <= snapshot.pack_current_a <= a_high
