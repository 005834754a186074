"""CAN faults against the running daemon on its simulated pack (issue 10, reliability).

Error frames as SocketCAN delivers them (class bits in the identifier, controller flags in
data[1]) are injected on the slaves' virtual bus: error-passive raises the CAN bus warning,
bus-off the fatal fault that opens the contactors and latches; a restart clears the level
but the latch holds until a reset. A babbling node floods the bus as fast as python-can can
push (unknown ids, malformed frames of known ids, module frames from an unconfigured node):
every frame is counted, the real modules' data keeps arriving, the configured faults raise and
clear, and the control tick keeps running.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import can

from bmsd.app import Daemon
from bmsd.canbus.errorframes import ControllerState
from bmsd.config import load_config
from bmsd.control.controller import Command
from bmsd.model.bms import BmsMode, Request
from bmsd.model.state import PackState

ROOT = Path(__file__).resolve().parents[2]
TICK_S = 0.1
COMM_LOSS = ("module_comm_loss", "current_sensor_comm_loss", "switchbox_comm_loss")
# Faults a flood must not raise: the comm-loss fatals (1.5 s, 2 s). Their warnings (0.5 s,
# 1 s) and the contactor-feedback check (0.5 s) are timing thresholds on the simulated pack,
# which shares this process (and its GIL) with the daemon and the flooding node, on a machine
# shared with other test runs: at load 9-13 on 2 cores they tripped here without any flood.
# That the modules' frames keep arriving is checked by counting them instead.
MUST_NOT_SET = {f"{fault}.fatal" for fault in COMM_LOSS}
# Faults the CAN faults under test may cause; any other is the machine's, not the test's.
CAN_FAULTS = {"can_bus_error", "can_error_frame_rate", "can_unknown_frame_rate"}

# linux/can/error.h, written out here (not taken from bmsd)
CAN_ERR_CRTL, CAN_ERR_BUSOFF, CAN_ERR_RESTARTED = 0x4, 0x40, 0x100
CAN_ERR_PROT, CAN_ERR_BUSERROR = 0x8, 0x80
CRTL_TX_WARNING, CRTL_TX_PASSIVE, CRTL_ACTIVE = 0x08, 0x20, 0x40


# The loop-overrun fault is a timing threshold (0.5 s for its fatal level): on a machine shared
# with other test runs it would judge the machine, not the CAN faults (it latched here at load
# 13 without any flood). These tests leave it out; the flood tests count ticks instead.
NO_OVERRUN_FAULT = "protection.faults.control_loop_overrun.enabled=false"


def overrides(tmp_path: Path, *extra: str) -> tuple[str, ...]:
    return (
        f"can.slaves.channel='canfaults-slaves-{tmp_path.name}'",
        f"can.inverter.channel='canfaults-inverter-{tmp_path.name}'",
        f"state.directory='{tmp_path / 'state'}'",
        "control.summary_log_interval_s=0",
        "metrics.port=0",
        "modbus.port=0",
        *extra,
    )


@dataclass
class Run:
    """A daemon running on the test's event loop, with every state it published."""

    daemon: Daemon
    states: list[PackState] = field(default_factory=list)

    @property
    def latest(self) -> PackState:
        return self.states[-1]

    def active(self) -> set[str]:
        return {level.key for level in self.latest.faults.active()} if self.states else set()

    def ever_set(self) -> set[str]:
        return {
            f"{event.fault_id}.{event.level.label}"
            for state in self.states
            for event in state.fault_events
            if event.kind == "set"
        }

    async def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)


async def _with_daemon(config_overrides: tuple[str, ...], scenario: Callable[[Run], object]) -> Run:
    daemon = Daemon(load_config(ROOT / "etc" / "sim.toml", config_overrides))
    run = Run(daemon)
    daemon.loop.on_tick.append(run.states.append)
    task = asyncio.create_task(daemon.run())
    try:
        await run.until(
            lambda: bool(run.states) and run.latest.mode is BmsMode.CLOSED, 30.0, "closed"
        )
        await scenario(run)  # type: ignore[misc]
    finally:
        daemon.request_stop()
        await task
    return run


def _error_frame(can_id: int, ctrl_flags: int = 0) -> can.Message:
    return can.Message(
        arbitration_id=can_id,
        is_error_frame=True,
        is_extended_id=False,
        data=[0, ctrl_flags, 0, 0, 0, 0, 0, 0],
    )


def test_error_frames_drive_the_can_bus_fault(tmp_path: Path) -> None:
    channel = f"canfaults-slaves-{tmp_path.name}"

    async def scenario(run: Run) -> None:
        daemon = run.daemon
        slaves = daemon.buses["slaves"]
        injector = can.Bus(interface="virtual", channel=channel)
        try:
            # A protocol error and a warning: counted, no fault.
            injector.send(_error_frame(CAN_ERR_PROT | CAN_ERR_BUSERROR))
            injector.send(_error_frame(CAN_ERR_CRTL, CRTL_TX_WARNING))
            await run.until(lambda: slaves.stats.error_frames == 2, 5.0, "2 error frames")
            assert slaves.stats.controller_state is ControllerState.WARNING
            await asyncio.sleep(6 * TICK_S)
            assert not any(key.startswith("can_bus_error") for key in run.active())

            # Error-passive: the warning after its 3-sample debounce, not the fatal.
            injector.send(_error_frame(CAN_ERR_CRTL, CRTL_TX_PASSIVE))
            await run.until(lambda: "can_bus_error.warning" in run.active(), 5.0, "warning")
            assert daemon.bus_error_level() == 1
            await asyncio.sleep(15 * TICK_S)  # longer than the fatal's debounce and delay
            assert "can_bus_error.fatal" not in run.active()

            # Back to error-active: the warning clears (3 good samples).
            injector.send(_error_frame(CAN_ERR_CRTL, CRTL_ACTIVE))
            await run.until(lambda: "can_bus_error.warning" not in run.active(), 5.0, "clear")
            assert daemon.bus_error_level() == 0

            # Bus-off: fatal after 3 samples and its 1 s delay; the contactors open.
            sent_at = time.monotonic()
            injector.send(_error_frame(CAN_ERR_BUSOFF))
            await run.until(lambda: "can_bus_error.fatal" in run.active(), 10.0, "fatal")
            assert time.monotonic() - sent_at >= 1.0  # the configured set delay
            await run.until(lambda: run.latest.mode is BmsMode.FAULT, 5.0, "fault mode")
            assert not run.latest.contactor_command.plus
            assert not run.latest.contactor_command.minus

            # A passive report while bus-off does not bring it back; a restart does.
            injector.send(_error_frame(CAN_ERR_CRTL, CRTL_TX_PASSIVE))
            await asyncio.sleep(5 * TICK_S)
            assert daemon.bus_error_level() == 2
            injector.send(_error_frame(CAN_ERR_RESTARTED))
            await run.until(lambda: daemon.bus_error_level() == 0, 5.0, "restarted")
            # Fatal levels latch: the fault stays until an explicit reset, then clears.
            await asyncio.sleep(10 * TICK_S)
            assert "can_bus_error.fatal" in {lvl.key for lvl in run.latest.faults.latched()}
            assert run.latest.mode is BmsMode.FAULT
            reply = await daemon.loop.submit(Command(Request.RESET, "test"))
            assert reply.answer.value == "accepted", reply
            await run.until(
                lambda: not any(key.startswith("can_bus_error") for key in run.active()),
                5.0,
                "reset",
            )

            by_class = slaves.stats.error_frames_by_class
            assert slaves.stats.error_frames == 7
            assert by_class == Counter(
                {"controller": 4, "protocol": 1, "bus_error": 1, "bus_off": 1, "restarted": 1}
            )
        finally:
            injector.shutdown()

    run = asyncio.run(_with_daemon(overrides(tmp_path, NO_OVERRUN_FAULT), scenario))
    assert run.ever_set() >= {"can_bus_error.warning", "can_bus_error.fatal"}
    assert not run.ever_set() & MUST_NOT_SET


def test_a_noisy_bus_raises_the_error_rate_warning(tmp_path: Path) -> None:
    """Bus errors at 20/s for 2 s (a bad termination): the rate warning, nothing more."""
    channel = f"canfaults-slaves-{tmp_path.name}"

    async def scenario(run: Run) -> None:
        injector = can.Bus(interface="virtual", channel=channel)
        try:
            for _ in range(40):
                injector.send(_error_frame(CAN_ERR_PROT | CAN_ERR_BUSERROR))
                await asyncio.sleep(0.05)
            await run.until(lambda: "can_error_frame_rate.warning" in run.active(), 5.0, "set")
            # Window 2 s + clear delay 1 s after the last one.
            await run.until(
                lambda: "can_error_frame_rate.warning" not in run.active(), 8.0, "clear"
            )
        finally:
            injector.shutdown()

    run = asyncio.run(
        _with_daemon(
            overrides(
                tmp_path,
                "can.slaves.rate_window_s=2.0",
                "protection.faults.can_error_frame_rate.warning.clear_delay_s=1.0",
                NO_OVERRUN_FAULT,
            ),
            scenario,
        )
    )
    assert run.daemon.buses["slaves"].stats.error_frames == 40
    # Bus errors alone (no state change) raise the rate warning only, never the bus fault.
    can_faults = {key for key in run.ever_set() if key.split(".")[0] in CAN_FAULTS}
    assert can_faults == {"can_error_frame_rate.warning"}


# A saturated 500 kbit/s bus: an 8-byte standard frame is 111 bits plus stuff bits and the
# 3-bit interframe space, about 125 bits: 4,000 frames/s; 4,500 leaves no room for doubt.
BUS_FULL_RATE = 4500.0


@dataclass
class Flood:
    """A babbling node: sends a cycle of frames at ``rate`` frames/s (0: as fast as python-can
    pushes them) for ``duration_s``."""

    channel: str
    cycle: list[tuple[str, can.Message]]
    duration_s: float
    rate: float = BUS_FULL_RATE
    sent: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def run(self) -> None:
        bus = can.Bus(interface="virtual", channel=self.channel)
        try:
            start = time.monotonic()
            end = start + self.duration_s
            for count, (kind, message) in enumerate(itertools.cycle(self.cycle)):
                if count % 32 == 0:
                    now = time.monotonic()
                    if now >= end:
                        break
                    if self.rate > 0 and count > (now - start) * self.rate:
                        time.sleep(count / self.rate - (now - start))
                bus.send(message)
                self.sent[kind] += 1
            self.elapsed_s = time.monotonic() - start
        finally:
            bus.shutdown()


def stats_dropped(run: Run) -> int:
    return run.daemon.buses["slaves"].stats.rx_dropped


def _unknown_and_malformed() -> list[tuple[str, can.Message]]:
    cycle: list[tuple[str, can.Message]] = []
    for k in range(16):
        # ids no device of the protocol uses, 11- and 29-bit
        cycle.append(
            ("unknown", can.Message(arbitration_id=0x400 + k, data=bytes(8), is_extended_id=False))
        )
        cycle.append(("unknown", can.Message(arbitration_id=0x18FF5000 + k, data=bytes(8))))
    # known ids with a payload too short to decode: module 1's cell voltages, the current
    cycle.append(
        ("malformed", can.Message(arbitration_id=0x101, data=b"\x01\x02\x03", is_extended_id=False))
    )
    cycle.append(
        ("malformed", can.Message(arbitration_id=0x521, data=b"\x00", is_extended_id=False))
    )
    return cycle


def _unconfigured_node() -> list[tuple[str, can.Message]]:
    # node ids 9 and 200 are not in pack.module_node_ids ([1, 2, 3, 4])
    return [
        ("stranger", can.Message(arbitration_id=base + node, data=bytes(8), is_extended_id=False))
        for base in (0x100, 0x200, 0x300)
        for node in (9, 200)
    ]


async def _flood(run: Run, flood: Flood) -> tuple[int, float, int]:
    """Run the flood in a thread; returns (ticks during it, its duration, module frames)."""
    stats = run.daemon.buses["slaves"].stats
    ticks_before = run.daemon.loop.stats.ticks
    modules_before = stats.frames_by_message["SLAVE_CELL_VOLTAGES"]
    thread = threading.Thread(target=flood.run, name="babbler")
    thread.start()
    await asyncio.to_thread(thread.join)
    ticks = run.daemon.loop.stats.ticks - ticks_before
    return ticks, flood.elapsed_s, stats.frames_by_message["SLAVE_CELL_VOLTAGES"] - modules_before


def test_a_babbling_node_is_counted_and_warned_about_and_the_tick_goes_on(tmp_path: Path) -> None:
    channel = f"canfaults-slaves-{tmp_path.name}"
    flood = Flood(channel, _unknown_and_malformed(), duration_s=4.0)
    result: dict[str, float] = {}

    async def scenario(run: Run) -> None:
        stats = run.daemon.buses["slaves"].stats
        quiet_before = stats.frames_by_message["SLAVE_CELL_VOLTAGES"]
        await asyncio.sleep(flood.duration_s)
        quiet = stats.frames_by_message["SLAVE_CELL_VOLTAGES"] - quiet_before
        unknown_before, errors_before = stats.unknown_frames, stats.decode_errors
        ticks, elapsed_s, module_frames = await _flood(run, flood)
        result.update(ticks=ticks, elapsed_s=elapsed_s, module_frames=module_frames, quiet=quiet)
        # Every frame counted once everything queued is delivered.
        await run.until(
            lambda: (
                stats.unknown_frames - unknown_before == flood.sent["unknown"]
                and stats.decode_errors - errors_before == flood.sent["malformed"]
            ),
            60.0,
            "every flood frame counted",
        )
        assert stats.unknown_frames - unknown_before == flood.sent["unknown"]
        assert stats.decode_errors - errors_before == flood.sent["malformed"]
        assert "can_unknown_frame_rate.warning" in run.ever_set()
        # After the flood: the window (2 s) empties, then the clear delay (1 s).
        await run.until(
            lambda: "can_unknown_frame_rate.warning" not in run.active(), 10.0, "warning clear"
        )

    run = asyncio.run(
        _with_daemon(
            overrides(
                tmp_path,
                "can.slaves.rate_window_s=2.0",
                "protection.faults.can_unknown_frame_rate.warning.clear_delay_s=1.0",
                NO_OVERRUN_FAULT,
            ),
            scenario,
        )
    )
    sent = flood.sent.total()
    print(
        f"flood: {sent} frames in {result['elapsed_s']:.2f} s "
        f"({sent / result['elapsed_s']:.0f}/s), {result['ticks']:.0f} ticks"
    )
    assert sent / result["elapsed_s"] > 1000, "the flood was not a flood"
    # The tick kept running: a generous bound (the machine is shared), no timing assertion.
    assert result["ticks"] >= 0.5 * result["elapsed_s"] / TICK_S
    # The real modules' frames kept arriving: during the flood at least half as many cell
    # voltage frames as in as long a quiet time just before it, none dropped, no comm-loss
    # fatal; the flood itself raised only its warning.
    assert result["module_frames"] >= 0.5 * result["quiet"] > 0, result
    assert not run.ever_set() & MUST_NOT_SET
    assert stats_dropped(run) == 0
    can_faults = {key for key in run.ever_set() if key.split(".")[0] in CAN_FAULTS}
    assert can_faults == {"can_unknown_frame_rate.warning"}


def test_module_frames_from_an_unconfigured_node_trip_the_module_count_fault(
    tmp_path: Path,
) -> None:
    channel = f"canfaults-slaves-{tmp_path.name}"
    flood = Flood(channel, _unconfigured_node(), duration_s=3.0)

    async def scenario(run: Run) -> None:
        stats = run.daemon.buses["slaves"].stats
        before = stats.unexpected_module_frames
        await _flood(run, flood)
        await run.until(
            lambda: stats.unexpected_module_frames - before == flood.sent["stranger"],
            60.0,
            "every stranger frame counted",
        )
        await run.until(lambda: run.latest.mode is BmsMode.FAULT, 5.0, "fault mode")

    run = asyncio.run(_with_daemon(overrides(tmp_path, NO_OVERRUN_FAULT), scenario))
    assert "module_count_mismatch.fatal" in run.ever_set()
    assert not run.ever_set() & MUST_NOT_SET
    assert stats_dropped(run) == 0
    assert flood.sent["stranger"] > 1000
