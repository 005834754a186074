"""Reaction time: an over-limit cell voltage on the bus to the contactor-open command frame.

Two processes on a CAN link (python-can ``serial`` over a socat pty pair, as on a gateway
without the simulator inside the daemon):

- the **plant** (a child process of this script): the simulated pack (default 4 modules x 16
  cells, about 300 frames/s) sending full slave traffic and obeying the switch box commands.
  On request it sends one crafted cell-voltage frame carrying 3.90 V at once (and keeps
  reporting it, as a real over-voltage persists), timestamps it, and timestamps the first switch
  box command frame that opens everything. Both timestamps are taken in the plant, one clock.
- the **daemon** (this process): bmsd with a 10 ms control tick and the over-voltage fault's
  debounce and delay set to zero. After each trial it resets the fault and the pack closes again.

It also times one control tick (Controller.step) for 384 and 1,536 cells with full data.

Why not 16 x 24 over the link: python-can's ``serial`` interface reads a frame byte by byte in
Python, and at the ~1,700 frames/s of a 16 x 24 pack the pty link backlogs by seconds, which
measures the link, not bmsd. On a gateway the bus is SocketCAN (read without that overhead,
bench/can_ingest.py); here the larger packs enter through the tick cost instead.

    .venv/bin/python bench/reaction.py               # 1,000 trials (about 10 minutes)
    .venv/bin/python bench/reaction.py --trials 100  # shorter

Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import can

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmsd.app import Daemon  # noqa: E402
from bmsd.canbus.protocol import load_protocol  # noqa: E402
from bmsd.config import Config, load_config  # noqa: E402
from bmsd.control.controller import Command  # noqa: E402
from bmsd.model.bms import Answer, BmsMode, Request  # noqa: E402
from bmsd.model.topology import Topology  # noqa: E402
from bmsd.sim.closed_loop import ClosedLoop  # noqa: E402
from bmsd.sim.runner import build_simulated_pack  # noqa: E402
from bmsd.system.logs import configure_logging  # noqa: E402

SIM = ROOT / "etc" / "sim.toml"
OVER_V = 3.90


def pack_overrides(modules: int, cells: int) -> tuple[str, ...]:
    ids = ", ".join(str(n) for n in range(1, modules + 1))
    return (
        f"pack.modules_per_string={modules}",
        f"pack.cells_per_module={cells}",
        "pack.temps_per_module=8",
        f"pack.module_node_ids=[{ids}]",
    )


def reaction_config(
    channel: str, state_dir: Path, modules: int, cells: int, switch_ms: float
) -> Config:
    return load_config(
        SIM,
        (
            *pack_overrides(modules, cells),
            f"control.thread_switch_interval_s={switch_ms / 1000.0}",
            "can.slaves.interface='serial'",
            f"can.slaves.channel='{channel}'",
            "sim.enabled=false",
            f"state.directory='{state_dir}'",
            "metrics.enabled=false",
            "control.tick_s=0.01",
            "control.summary_log_interval_s=0",
            "sim.load.kind='constant'",
            "sim.load.current_a=0.0",  # below the break current: open at once
            "sim.switchbox_period_s=0.01",
            # 384 LFP cells in series are ~1.27 kV: a 50 ohm precharge resistor keeps the
            # inrush (25 A) under the precharge over-current fault.
            "sim.precharge_resistor_ohm=50.0",
            "sim.physics_step_s=0.01",
            "protection.faults.cell_voltage_high.fatal.debounce_samples=1",
            "protection.faults.cell_voltage_high.fatal.set_delay_s=0.0",
        ),
    )


# -- the plant process ---------------------------------------------------------------------------


def plant_main(channel: str, state_dir: Path, modules: int, cells: int, switch_ms: float) -> None:
    """Simulated pack on ``channel``; stdin "inject" -> stdout "<sent> <opened>" (monotonic s)."""
    config = reaction_config(channel, state_dir, modules, cells, switch_ms)
    # The plant stands in for the wire and the slave boards: give its threads the same short
    # interpreter-lock switch interval as the daemon, so the link adds as little as it can.
    sys.setswitchinterval(config.control.thread_switch_interval_s)
    topology = Topology.from_config(config.pack)
    protocol = load_protocol(config.path(config.acquisition.protocol))
    pack = build_simulated_pack(config, protocol, topology)
    bus = can.Bus(interface="serial", channel=channel)
    box_message = protocol.message("SWITCHBOX_COMMAND")
    cell_message = protocol.message("SLAVE_CELL_VOLTAGES")
    over = can.Message(
        arbitration_id=cell_message.frame_id + config.pack.module_node_ids[0],
        is_extended_id=False,
        data=cell_message.encode(
            {"CellGroup": 0, "CellVoltage0": OVER_V, "CellVoltage1": 3.3, "CellVoltage2": 3.3,
             "AliveCounter": 0}
        ),
    )  # fmt: skip
    received: queue.Queue[can.Message] = queue.Queue()
    lock = threading.Lock()
    trial: dict[str, float | None] = {"sent": None}

    def receive() -> None:  # timestamps every frame the moment it arrives
        while True:
            frame = bus.recv(timeout=0.05)
            if frame is None:
                continue
            at = time.monotonic()
            if frame.arbitration_id == box_message.frame_id:
                with lock:
                    sent = trial["sent"]
                    if sent is not None:
                        signals = box_message.decode(bytes(frame.data))
                        closed = (
                            signals["ContactorMinusCmd"]
                            or signals["ContactorPlusCmd"]
                            or signals["PrechargeCmd"]
                        )
                        if not closed:
                            print(f"{sent:.6f} {at:.6f}", flush=True)
                            trial["sent"] = None
            received.put(frame)

    def commands() -> None:
        for line in sys.stdin:
            with lock:
                if line.strip() == "inject":
                    bus.send(over)
                    trial["sent"] = time.monotonic()
                    # An over-voltage persists: the module keeps reporting it from now on.
                    pack.override_cell_voltage(0, OVER_V)
                elif line.strip() == "release":
                    pack.override_cell_voltage(0, None)

    gc.collect()
    gc.freeze()  # as the daemon does: no long collector pauses in the timestamping process
    threading.Thread(target=receive, daemon=True).start()
    threading.Thread(target=commands, daemon=True).start()
    step_s = config.sim.physics_step_s
    last = time.monotonic()
    while True:
        time.sleep(step_s)
        now = time.monotonic()
        elapsed, last = min(now - last, 1.0), now
        while not received.empty():
            pack.handle_frame(received.get_nowait())
        with lock:
            for frame in pack.advance(elapsed):
                bus.send(frame)


# -- the daemon side ------------------------------------------------------------------------------


async def run_trials(
    trials: int,
    channel: str,
    plant: subprocess.Popen[str],
    state_dir: Path,
    modules: int,
    cells: int,
    switch_ms: float,
) -> list[float]:
    daemon = Daemon(reaction_config(channel, state_dir, modules, cells, switch_ms))
    task = asyncio.create_task(daemon.run())
    assert plant.stdin is not None and plant.stdout is not None
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    stdout = plant.stdout

    def read_lines() -> None:  # a daemon thread: never holds up the end of the run
        for line in stdout:
            loop.call_soon_threadsafe(lines.put_nowait, line)

    threading.Thread(target=read_lines, daemon=True).start()
    results: list[float] = []
    try:
        for _ in range(trials):
            if not await _closed(daemon):
                state = daemon.hub.latest
                raise RuntimeError(
                    f"the pack did not close: {None if state is None else state.mode_reason}, "
                    f"faults {[] if state is None else [f.key for f in state.faults.active()]}"
                )
            await asyncio.sleep(random.uniform(0.0, 0.02))  # a random phase against the tick
            plant.stdin.write("inject\n")
            plant.stdin.flush()
            line = await asyncio.wait_for(lines.get(), 5.0)
            sent, opened = (float(value) for value in line.split())
            results.append(opened - sent)
            state = daemon.hub.latest
            if state is None or state.limits.charge_current_a or state.limits.discharge_current_a:
                raise RuntimeError("the contactors opened but the limits are not zero")
            await _wait_mode(daemon, BmsMode.FAULT, 5.0)
            plant.stdin.write("release\n")
            plant.stdin.flush()
            for _attempt in range(50):  # until the module reports the real voltage again
                await asyncio.sleep(0.1)
                reply = await daemon.loop.submit(Command(Request.RESET, "bench/reaction.py"))
                if reply.answer is Answer.ACCEPTED:
                    break
    finally:
        daemon.request_stop()
        await task
    return results


RECOVERIES = [0]


async def _closed(daemon: Daemon) -> bool:
    """Wait for CLOSED; if something else went wrong (an overloaded machine stalls the loop and
    trips control_loop_overrun), reset and ask to close, and count it."""
    for attempt in range(4):
        if await _wait_mode(daemon, BmsMode.CLOSED, 10.0):
            return True
        RECOVERIES[0] += 1
        await daemon.loop.submit(Command(Request.RESET, f"bench/reaction.py recovery {attempt}"))
        await daemon.loop.submit(Command(Request.CLOSE, "bench/reaction.py recovery"))
    return False


async def _wait_mode(daemon: Daemon, mode: BmsMode, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = daemon.hub.latest
        if state is not None and state.mode is mode:
            return True
        await asyncio.sleep(0.01)
    return False


def tick_cost(modules: int, cells: int, ticks: int) -> list[float]:
    """Seconds per Controller.step with a store full of simulated data."""
    config = load_config(SIM, (*pack_overrides(modules, cells), "sim.physics_step_s=0.02"))
    loop = ClosedLoop(config)
    loop.run(2.0)  # fill the store, close the contactors
    controller = loop.controller
    durations = []
    now = loop.time_s
    for _ in range(ticks):
        now += config.control.tick_s
        start = time.perf_counter()
        controller.step(now, now)
        durations.append(time.perf_counter() - start)
    return durations


def quantiles_ms(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
    return f"p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   max {ordered[-1] * 1000:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=1000, help="ticks timed per pack size")
    parser.add_argument("--modules", type=int, default=4, help="modules of the reaction pack")
    parser.add_argument("--cells", type=int, default=16, help="cells per module of that pack")
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=1.0,
        help="control.thread_switch_interval_s of daemon and plant, ms (Python's default: 5)",
    )
    parser.add_argument("--plant", help=argparse.SUPPRESS)  # the child process's channel
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("error", "text")
    if args.plant:
        plant_main(args.plant, Path(args.state), args.modules, args.cells, args.switch_interval_ms)
        return

    print("one control tick (Controller.step), full data, contactors closed:")
    for modules, cells in ((16, 24), (64, 24)):
        durations = tick_cost(modules, cells, args.ticks)
        print(f"  {modules * cells:5d} cells: {quantiles_ms(durations)}   (budget: a 10 ms tick)")

    if shutil.which("socat") is None:
        print("\nreaction: needs socat (apt-get install socat)")
        return
    with tempfile.TemporaryDirectory(prefix="bmsd-reaction-") as tmp:
        end_plant, end_daemon = Path(tmp) / "plant", Path(tmp) / "daemon"
        socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={end_plant}", f"pty,raw,echo=0,link={end_daemon}"],
            stderr=subprocess.DEVNULL,
        )
        while not (end_plant.exists() and end_daemon.exists()):
            time.sleep(0.05)
        plant = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--plant",
                str(end_plant),
                "--state",
                tmp,
                "--modules",
                str(args.modules),
                "--cells",
                str(args.cells),
                "--switch-interval-ms",
                str(args.switch_interval_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            results = asyncio.run(
                run_trials(
                    args.trials,
                    str(end_daemon),
                    plant,
                    Path(tmp),
                    args.modules,
                    args.cells,
                    args.switch_interval_ms,
                )
            )
        finally:
            plant.kill()
            socat.kill()
    print(
        f"\nreaction, over-voltage frame -> contactor-open frame, 10 ms tick, "
        f"{args.modules * args.cells} cells, fault delay 0, {len(results)} trials,\n"
        f"full slave traffic of that pack from the simulated pack in another process "
        f"(serial link over a socat pty):"
    )
    print(f"  {quantiles_ms(results)}   (target: p99 under 10 ms)")
    print(f"  recoveries (the pack had to be reset and closed outside a trial): {RECOVERIES[0]}")


if __name__ == "__main__":
    main()
