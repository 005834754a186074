"""Command line: ``bmsd run | check-config | replay | sim | faults | explain | fit-cell |
estimate``.

Every command that reads a config accepts ``--set section.key=value`` (repeatable); the
override is validated exactly like the file. Exit codes: 0 success, 1 runtime failure,
2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bmsd.config import Config, load_config
from bmsd.errors import BmsdError, ConfigError
from bmsd.system.logs import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

log = logging.getLogger("bmsd")


def _add_config_args(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    if positional:
        parser.add_argument("config", type=Path, help="configuration file (TOML)")
    else:
        parser.add_argument(
            "--config", "-c", type=Path, required=True, help="configuration file (TOML)"
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set control.tick_s=0.05 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmsd", description="Battery management daemon")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    _add_config_args(run)

    check = commands.add_parser("check-config", help="validate a config and summarise the pack")
    _add_config_args(check, positional=True)

    replay = commands.add_parser("replay", help="replay a recorded CAN log through the pipeline")
    _add_config_args(replay)
    replay.add_argument("log", type=Path, help="CAN log (.asc, .blf, .log, .trc, .csv)")
    replay.add_argument("--output", "-o", type=Path, help="JSON lines output (default: stdout)")
    replay.add_argument("--every", type=int, default=1, help="write every Nth state (default 1)")

    sim = commands.add_parser("sim", help="run the simulated pack alone on the configured bus")
    _add_config_args(sim)

    faults = commands.add_parser(
        "faults", help="list the fault journal and the latched faults; --reset resets them"
    )
    _add_config_args(faults)
    faults.add_argument(
        "--last", type=_entry_count, default=20, help="journal entries to show (0: all)"
    )
    faults.add_argument("--json", action="store_true", help="print JSON lines")
    faults.add_argument(
        "--reset",
        action="store_true",
        help="ask the running daemon to reset latched faults (audited; refused while a cause "
        "is present)",
    )

    explain = commands.add_parser(
        "explain",
        help="print the limits the daemon sends now (or at the end of a replayed log) and why",
    )
    _add_config_args(explain)
    explain.add_argument("log", type=Path, nargs="?", help="CAN log to replay first")

    from bmsd.estimation.commands import register as register_estimation

    ESTIMATION_COMMANDS.update(register_estimation(commands))
    return parser


# Filled by build_parser: the cell characterisation and offline estimation commands.
ESTIMATION_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _load(path: Path, overrides: Sequence[str]) -> Config:
    return load_config(path, tuple(overrides))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config, args.overrides)
    # Deep checks: the protocol file and DBCs, the cell file, the frame-id table.
    from bmsd.canbus.codec import FrameDecoder, FrameEncoder, check_sendable
    from bmsd.canbus.protocol import load_protocol
    from bmsd.model.cell import CellModel
    from bmsd.model.topology import Topology

    topology = Topology.from_config(config.pack)
    protocol = load_protocol(config.path(config.acquisition.protocol))
    decoder = FrameDecoder(protocol, topology)
    check_sendable(config, FrameEncoder(protocol, topology), str(args.config))
    cell = CellModel.load(config.path(config.pack.cell_file))
    print(
        summarise(
            config,
            topology,
            cell.info.nominal_voltage_v,
            cell.info.capacity_ah,
            decoder.message_names,
        )
    )
    return EXIT_OK


def summarise(
    config: Config,
    topology: object,
    nominal_cell_v: float,
    file_capacity_ah: float,
    messages: Sequence[str],
) -> str:
    """The one-screen pack summary printed by ``check-config``."""
    from bmsd.model.topology import Topology

    assert isinstance(topology, Topology)
    pack = config.pack
    capacity_ah = (pack.cell_capacity_ah or file_capacity_ah) * pack.cells_in_parallel
    nominal_v = nominal_cell_v * topology.cells_per_string
    energy_kwh = nominal_v * capacity_ah * pack.strings / 1000
    lines = [
        "configuration OK",
        f"  pack       {pack.chemistry}, {pack.strings} string(s) x {pack.modules_per_string} "
        f"modules x {pack.cells_per_module} cells in series, {pack.cells_in_parallel}p",
        f"             {topology.cell_count} cell groups, "
        f"{topology.temp_count} temperature sensors",
        f"             nominal {nominal_v:.1f} V, {capacity_ah * pack.strings:.0f} Ah, "
        f"{energy_kwh:.1f} kWh",
        f"  cell file  {config.path(pack.cell_file)}",
        f"  node ids   {', '.join(str(n) for n in pack.module_node_ids)}",
        f"  protocol   {config.path(config.acquisition.protocol)} ({len(messages)} messages: "
        f"{', '.join(messages)})",
    ]
    for name, bus in config.can.items():
        record = f", recording to {config.path(bus.record)}" if bus.record else ""
        role = " (slaves)" if name == config.acquisition.bus else ""
        lines.append(
            f"  bus {name:<7}{bus.interface} {bus.channel} @ {bus.bitrate} bit/s{role}{record}"
        )
    faults = config.protection.faults
    enabled = [fid for fid, spec in faults.items() if spec.enabled]
    lines.append(f"  faults     {len(enabled)} enabled of {len(faults)} in the fault table")
    for fault_id in ("cell_voltage_high", "cell_voltage_low"):
        spec = faults.get(fault_id)
        if spec is not None and spec.enabled:
            levels = "/".join(f"{level_spec.threshold:g}" for _, level_spec in spec.levels())
            names = "/".join(level.label for level, _ in spec.levels())
            lines.append(f"  {fault_id:<18} {levels} ({names})")
    lines += [
        f"  timeouts   modules {config.acquisition.module_timeout_s} s, "
        f"current sensor {config.acquisition.current_sensor_timeout_s} s",
        f"  tick       {config.control.tick_s * 1000:.0f} ms",
        f"  state      {config.path(config.state.directory)}",
        f"  simulator  {'on, bus ' + config.sim.bus if config.sim.enabled else 'off'}",
    ]
    for name, inverter in config.inverters.items():
        state = "" if inverter.enabled else " (disabled)"
        simulated = " (simulated)" if config.sim.enabled and config.sim.inverter == name else ""
        lines.append(
            f"  inverter {name}: {inverter.profile} on bus {inverter.bus}{state}{simulated}"
        )
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config, args.overrides)
    import faulthandler

    from bmsd.app import Daemon

    # A hung daemon killed by the systemd watchdog (SIGABRT) leaves a traceback of every thread.
    faulthandler.enable()
    from bmsd.system.logs import LogSetup

    log_setup = LogSetup()
    log_setup.apply(config.logging)
    config_dir = config.path(config.state.directory)
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a regular file there, a file as a parent, no permission
        is_file = config_dir.exists() and not config_dir.is_dir()
        reason = "a file, not a directory" if is_file else exc.strerror or type(exc).__name__
        print(f"bmsd: state.directory {config_dir}: cannot be used ({reason})", file=sys.stderr)
        return EXIT_CONFIG
    daemon = Daemon(
        config, config_path=args.config.resolve(), overrides=args.overrides, log_setup=log_setup
    )
    try:
        asyncio.run(daemon.run())
    finally:
        log_setup.close()
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args.config, args.overrides)
    configure_logging("warning", "text")
    from bmsd.replay import replay_log

    if args.every < 1:
        raise BmsdError("--every must be at least 1")
    if args.output is None:
        result = replay_log(config, args.log, sys.stdout, every=args.every)
    else:
        output: Path = args.output
        if output.exists() and args.log.exists() and output.samefile(args.log):
            raise BmsdError(f"{output}: the output would overwrite the log being replayed")
        try:
            out = output.open("w", encoding="utf-8")
        except OSError as exc:
            raise BmsdError(f"{output}: cannot write output: {exc.strerror or exc}") from exc
        try:
            with out:
                result = replay_log(config, args.log, out, every=args.every)
        except OSError as exc:  # a full disk while writing; reading errors are BmsdErrors
            raise BmsdError(f"{output}: cannot write output: {exc.strerror or exc}") from exc
    extra = f", {result.gaps} gaps skipped" if result.gaps else ""
    if result.reordered:
        extra += f", {result.reordered} frames out of order"
    print(
        f"replayed {result.frames} frames in {result.ticks} ticks "
        f"({result.stats.unknown_frames} unknown, {result.stats.decode_errors} undecodable"
        f"{extra})",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    config = _load(args.config, args.overrides)
    configure_logging(config.logging.level, config.logging.format)
    from bmsd.sim.process import run_standalone_simulator

    asyncio.run(run_standalone_simulator(config))
    return EXIT_OK


def cmd_faults(args: argparse.Namespace) -> int:
    import getpass
    import json
    import socket as socket_module

    from bmsd.control.socket import send_request, socket_path
    from bmsd.model.bms import Request
    from bmsd.protection.journal import read_journal
    from bmsd.protection.persistence import LatchedFaultStore

    config = _load(args.config, args.overrides)
    state_dir = config.path(config.state.directory)
    if args.reset:
        origin = f"bmsd faults --reset by {getpass.getuser()}@{socket_module.gethostname()}"
        answer = send_request(socket_path(state_dir), Request.RESET, origin)
        print(f"reset {answer.get('answer', '?')}: {answer.get('reason', '')}")
        return EXIT_OK if answer.get("answer") == "accepted" else EXIT_FAILURE
    latched, problem = LatchedFaultStore(state_dir).load()
    records = read_journal(state_dir)
    if args.last:
        records = records[-args.last :]
    if args.json:
        for record in records:
            print(json.dumps(record))
        return EXIT_OK
    if problem:
        print(_printable(f"latched-fault file unusable: {problem}"))
    print(_printable(f"latched faults: {', '.join(sorted(latched)) if latched else 'none'}"))
    if not records:
        print(f"fault journal: empty ({state_dir})")
        return EXIT_OK
    lines = [_journal_line(record) for record in records]
    shown = [line for line in lines if line is not None]
    print(f"fault journal ({len(shown)} most recent, oldest first):")
    for line in shown:
        print(line)
    skipped = len(lines) - len(shown)
    if skipped:
        print(
            f"({skipped} journal entr{'y' if skipped == 1 else 'ies'} skipped: fields of the "
            f"wrong type; see {state_dir} or --json)"
        )
    return EXIT_OK


def _entry_count(text: str) -> int:
    """--last: a count of journal entries, 0 for all (a negative one showed none, silently)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or more, not {count}")
    return count


def _journal_line(record: dict[str, object]) -> str | None:
    """One journal entry as a line, or None when a field has the wrong type (a line written
    by another version or damaged): the listing goes on without it."""
    import math
    import time as time_module

    wall_time = record.get("wall_time", 0)
    frame = record.get("freeze_frame") or {}
    if isinstance(wall_time, bool) or not isinstance(wall_time, (int, float)):
        return None
    if not isinstance(frame, dict):
        return None
    try:
        seconds = float(wall_time)
        if not math.isfinite(seconds):
            return None
        stamp = time_module.strftime("%Y-%m-%d %H:%M:%S", time_module.localtime(seconds))
    except (OverflowError, OSError, ValueError):  # beyond the platform's time range
        return None
    context = (
        f"  [cells {frame.get('cell_voltage_min_v')}..{frame.get('cell_voltage_max_v')} V, "
        f"I {frame.get('pack_current_a')} A, mode {frame.get('mode')}]"
        if frame
        else ""
    )
    change = str(record.get("change", "?"))
    return _printable(f"  {stamp}  {change:<13} {record.get('message', '')}{context}")


def _printable(text: str) -> str:
    """Text a terminal can take: a lone surrogate from a "\\ud800" in the file becomes '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def cmd_explain(args: argparse.Namespace) -> int:
    from bmsd.control.export import explain_text

    config = _load(args.config, args.overrides)
    if args.log is None:
        from bmsd.control.socket import send_request, socket_path

        answer = send_request(socket_path(config.path(config.state.directory)), "explain", "cli")
        print(answer.get("reason", ""))
        return EXIT_OK
    configure_logging("warning", "text")
    from bmsd.replay import replay_log

    with open(os.devnull, "w", encoding="utf-8") as sink:
        result = replay_log(config, args.log, sink)
    if result.last_state is None:
        raise BmsdError(f"{args.log}: no frames to replay")
    print(f"at the end of {args.log} ({result.frames} frames, {result.ticks} ticks):")
    print(explain_text(result.last_state))
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "replay": cmd_replay,
    "sim": cmd_sim,
    "faults": cmd_faults,
    "explain": cmd_explain,
}


def _report_config_error(exc: ConfigError) -> int:
    print(f"bmsd: invalid configuration ({len(exc.issues)} problem(s)):", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    return EXIT_CONFIG


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside a (nested) exception group."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = COMMANDS.get(args.command) or ESTIMATION_COMMANDS[args.command]
        return handler(args)
    except ConfigError as exc:
        return _report_config_error(exc)
    except BmsdError as exc:
        print(f"bmsd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BaseExceptionGroup as group:
        # An error raised inside an asyncio TaskGroup arrives wrapped (and possibly nested);
        # ours are reported as usual, anything else keeps its traceback.
        leaves = _leaves(group)
        if not leaves or not all(isinstance(leaf, BmsdError) for leaf in leaves):
            raise
        config_errors = [leaf for leaf in leaves if isinstance(leaf, ConfigError)]
        if config_errors:
            return _report_config_error(
                ConfigError(issue for error in config_errors for issue in error.issues)
            )
        for leaf in leaves:
            print(f"bmsd: {leaf}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
