"""Bus recordings: the last run's file is kept, files rotate by size within a disk bound, and a
failing disk stops the recording but never the bus (real files, real python-can writers and
readers, a real file-size limit in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import can
import pytest

from bmsd.canbus.record import CHECK_EVERY_FRAMES, RETRY_AFTER_S, FrameRecorder

ROOT = Path(__file__).resolve().parents[3]


def _frame(sequence: int) -> can.Message:
    return can.Message(
        timestamp=1_000.0 + sequence / 1000,
        arbitration_id=0x100 + sequence % 16,
        data=sequence.to_bytes(4, "big"),
        is_extended_id=False,
    )


def _record(recorder: FrameRecorder, sequences: range) -> FrameRecorder:
    """Open, write one frame per sequence number, stop."""
    recorder.open()
    for sequence in sequences:
        recorder.write(_frame(sequence))
    recorder.stop()
    return recorder


def _sequences(path: Path) -> list[int]:
    with can.LogReader(str(path)) as reader:
        return [int.from_bytes(message.data, "big") for message in reader]


def test_a_restart_sets_the_last_runs_recording_aside(tmp_path: Path) -> None:
    path = tmp_path / "slaves.asc"
    _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=5), range(10))
    second = _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=5), range(100, 105))

    (aside,) = second.files()
    assert aside.name.startswith("slaves.") and aside.suffix == ".asc"
    assert _sequences(aside) == list(range(10))
    assert _sequences(path) == list(range(100, 105))


@pytest.mark.parametrize(
    ("suffix", "max_bytes", "total"),
    [
        (".asc", 20_000, 20_000),
        (".log", 20_000, 20_000),
        (".csv", 20_000, 20_000),
        (".trc", 20_000, 20_000),
        # BLF compresses in 128 KiB blocks: a limit past one block, frames for several files.
        (".blf", 400_000, 150_000),
    ],
)
def test_files_rotate_by_size_and_the_oldest_are_deleted(
    tmp_path: Path, suffix: str, max_bytes: int, total: int
) -> None:
    path = tmp_path / f"slaves{suffix}"
    keep_files = 3
    recorder = _record(
        FrameRecorder("slaves", path, max_bytes=max_bytes, keep_files=keep_files), range(total)
    )

    aside = recorder.files()
    assert len(aside) == keep_files - 1
    kept = [sequence for file in [*aside, path] for sequence in _sequences(file)]
    # What is kept is the newest stretch, whole and in order across the files.
    assert kept == list(range(total - len(kept), total))
    assert len(kept) < total
    for file in aside:
        # Set aside at most a check (256 frames) past the limit; a BLF file as python-can
        # counts it (compressed, plus the block not compressed yet), so smaller on disk.
        assert file.stat().st_size < max_bytes * 2
        if suffix != ".blf":
            assert file.stat().st_size >= max_bytes


def test_rotation_off_keeps_one_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "slaves.log"
    recorder = _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=2), range(5_000))
    assert recorder.files() == []
    assert _sequences(path) == list(range(5_000))


@pytest.mark.parametrize("suffix", [".asc", ".blf", ".csv", ".log"])
def test_starts_without_a_frame_do_not_push_out_a_recording(tmp_path: Path, suffix: str) -> None:
    """A crash loop (a start failing before the first frame) leaves files with only the
    format's header: they are deleted, not set aside, so the real run stays."""
    path = tmp_path / f"slaves{suffix}"
    _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=2), range(7))
    for _ in range(3):
        _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=2), range(0))
    last = _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=2), range(50, 52))
    (aside,) = last.files()
    assert _sequences(aside) == list(range(7))
    assert _sequences(path) == [50, 51]


def test_age_is_read_from_the_number_not_the_clock(tmp_path: Path) -> None:
    """The run before a power cut was recorded with the clock ahead (no battery-backed clock:
    set by NTP, then lost at the cut): its stamp sorts after today's, yet it is the newest
    and is kept, and the oldest is deleted."""
    path = tmp_path / "slaves.asc"
    _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=2), range(3))
    oldest = path.with_name("slaves.000001.20991231T235959Z.asc")
    path.rename(oldest)
    _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=3), range(10, 15))
    restarted = _record(FrameRecorder("slaves", path, max_bytes=0, keep_files=2), range(20, 22))

    (aside,) = restarted.files()
    assert not oldest.exists()
    assert aside.name.startswith("slaves.000002.")
    assert _sequences(aside) == list(range(10, 15))


def test_a_recording_removed_from_under_the_daemon_is_begun_again(tmp_path: Path) -> None:
    path = tmp_path / "slaves.log"
    recorder = FrameRecorder("slaves", path, max_bytes=0, keep_files=2)
    recorder.open()
    for sequence in range(10):
        recorder.write(_frame(sequence))
    path.unlink()  # an operator's clean-up, or a log rotation tool
    for sequence in range(10, 600):
        recorder.write(_frame(sequence))
    recorder.stop()
    # Noticed within a check's 256 frames; from then on the frames are in a file again.
    found = _sequences(path)
    assert found == list(range(found[0], 600)) and found[0] <= 10 + CHECK_EVERY_FRAMES


def test_a_recording_that_cannot_begin_is_retried_and_the_bus_is_not_stopped(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    now = [0.0]
    errors: list[int] = []
    recorder = FrameRecorder(
        "slaves",
        blocker / "slaves.asc",
        max_bytes=0,
        keep_files=2,
        on_error=lambda: errors.append(1),
        clock=lambda: now[0],
    )
    recorder.open()  # no exception: the daemon starts and runs its bus
    assert not recorder.is_recording and errors == [1]
    recorder.write(_frame(1))
    assert errors == [1]  # not an error per frame
    blocker.unlink()  # fixed by the integrator
    now[0] = RETRY_AFTER_S
    recorder.write(_frame(2))
    recorder.write(_frame(3))
    recorder.stop()
    assert errors == [1]
    assert _sequences(blocker / "slaves.asc") == [2, 3]


def test_a_frame_the_writer_refuses_stops_the_recording_not_the_caller(tmp_path: Path) -> None:
    """python-can's BLF writer raises struct.error on an identifier beyond 32 bits, which a
    raw driver could deliver. It must not escape into frame delivery."""
    errors: list[int] = []
    recorder = FrameRecorder(
        "slaves", tmp_path / "slaves.blf", max_bytes=0, keep_files=2,
        on_error=lambda: errors.append(1),
    )  # fmt: skip
    recorder.open()
    recorder.write(_frame(1))
    odd = can.Message(arbitration_id=0x1_0000_0000, data=[1], is_extended_id=True, check=False)
    recorder.write(odd)
    recorder.stop()
    assert errors == [1] and not recorder.is_recording


FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    import can
    import bmsd.canbus.record as record_module
    from bmsd.canbus.bus import CanInterface
    from bmsd.config import BusConfig

    record_module.RETRY_AFTER_S = 0.3  # the daemon's minute, shortened for the test

    record = Path(sys.argv[1])
    limit_bytes = 64 * 1024
    # A file-size limit stands in for a full disk: a write past it fails with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))

    async def main():
        config = BusConfig(interface="virtual", channel="record-full", record_max_mb=0)
        interface = CanInterface("slaves", config, record)
        interface.open()
        received = []
        interface.start_receiving(
            asyncio.get_running_loop(), lambda message, _at: received.append(message)
        )
        sender = can.Bus(interface="virtual", channel="record-full")

        async def send(first, count):
            for sequence in range(first, first + count):
                sender.send(can.Message(arbitration_id=0x200, data=sequence.to_bytes(4, "big"),
                                        is_extended_id=False))
            for _ in range(500):
                if len(received) == first + count:
                    break
                await asyncio.sleep(0.01)

        total = 6000
        await send(0, total)
        # The bus also keeps sending while its recording is stopped.
        sent = interface.send(can.Message(arbitration_id=0x300, data=[1], is_extended_id=False))
        result = {
            "received": len(received),
            "in_order": [int.from_bytes(m.data, "big") for m in received] == list(range(total)),
            "record_errors": interface.stats.record_errors,
            "sent": sent,
            "bus_up": interface.is_up,
            "size": record.stat().st_size,
        }
        # Space is freed; after the retry delay the next frame begins a new file.
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        await asyncio.sleep(0.4)
        await send(total, 100)
        result["record_errors_after"] = interface.stats.record_errors
        interface.close()
        sender.shutdown()
        print(json.dumps(result))

    asyncio.run(main())
    """
)


def test_a_full_disk_stops_the_recording_not_the_bus(tmp_path: Path) -> None:
    record = tmp_path / "slaves.asc"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(record)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["received"] == 6000 and result["in_order"]
    assert result["sent"] is True and result["bus_up"] is True
    # One failure, then silence until the retry: not an error per frame.
    assert result["record_errors"] == 1
    assert result["size"] <= 64 * 1024
    assert "recording of bus slaves to" in done.stderr and "stopped" in done.stderr
    # Resumed: the partial file is set aside whole, the new one holds the frames since.
    assert result["record_errors_after"] == 1
    assert "recording of bus slaves resumed" in done.stderr
    (aside,) = FrameRecorder("slaves", record, max_bytes=0, keep_files=2).files()
    partial = _sequences(aside)
    assert partial and partial == list(range(len(partial)))
    assert _sequences(record) == list(range(6000, 6100))
