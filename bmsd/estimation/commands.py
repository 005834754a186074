"""Command-line tools of the estimation package: ``bmsd fit-cell`` and ``bmsd estimate``.

``register(subparsers)`` adds both subcommands to bmsd's argument parser and returns the
handlers by name; the CLI's ``main()`` turns ConfigError (exit 2) and BmsdError (exit 1) into a
message. ``estimate_trace`` is the offline estimator loop, shared with the benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bmsd.errors import BmsdError
from bmsd.estimation.estimator import Estimator
from bmsd.estimation.fit import cell_file_toml, fit_cell
from bmsd.estimation.settings import EstimationConfig
from bmsd.estimation.trace import Trace, read_trace
from bmsd.model.cell import CellModel

FloatArray = NDArray[np.float64]
Handler = Callable[[argparse.Namespace], int]


def estimate_trace(
    cell: CellModel,
    trace: Trace,
    *,
    config: EstimationConfig | None = None,
    initial_soc: float | None = None,
    initial_soc_std: float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Run the estimator over a one-cell trace; return (soc, soc_std) per row.

    Without ``initial_soc`` the first row's voltage is read as an OCV (wide uncertainty).
    """
    cfg = config or EstimationConfig()
    estimator = Estimator(cell, 1, 1, cfg)
    valid = np.ones(1, dtype=np.bool_)
    if initial_soc is None:
        estimator.initialise_from_ocv(trace.voltage_v[:1], trace.temp_c[:1])
    else:
        std = cfg.initial_soc_std if initial_soc_std is None else initial_soc_std
        estimator.set_soc(initial_soc, std)
    soc = np.empty(len(trace))
    std_out = np.empty(len(trace))
    for n in range(len(trace)):
        estimates = estimator.step(
            float(trace.time_s[n]),
            float(trace.current_a[n]),
            trace.voltage_v[n : n + 1],
            valid,
            trace.temp_c[n : n + 1],
            False,
        )
        soc[n] = estimates.soc[0]
        std_out[n] = estimates.soc_std[0]
    return soc, std_out


def cmd_fit_cell(args: argparse.Namespace) -> int:
    trace = read_trace(args.trace)
    result = fit_cell(
        trace,
        rc_pairs=args.rc,
        chemistry=args.chemistry,
        capacity_ah=args.capacity_ah,
        name=args.name or "",
        min_rest_s=args.min_rest_s,
    )
    taus = ", ".join(f"{t:.1f} s" for t in result.tau_s)
    header = "\n".join(
        [
            f"Cell file written by `bmsd fit-cell` on {datetime.date.today().isoformat()}.",
            f"Trace: {args.trace} ({len(trace)} rows, {result.rest_count} rests used for OCV).",
            f"Model: R0 + {args.rc} RC pair(s), time constants {taus}; "
            f"fit RMSE {result.rmse_v * 1000:.2f} mV, max {result.max_error_v * 1000:.1f} mV.",
            f"OCV table error at rests (leave-one-out, robust σ) "
            f"{result.ocv_error_v * 1000:.2f} mV.",
            f"Capacity {result.capacity_ah:.4f} Ah "
            + ("(given)." if args.capacity_ah else "(charge between the first and last rest)."),
            "Efficiency, self-discharge and [thermal] are ASSUMED placeholders; format:",
            "docs/cells.md.",
        ]
    )
    text = cell_file_toml(result.cell_file, header)
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BmsdError(f"cannot write {args.output}: {exc.strerror}") from None
    # Read back through the normal loader: what we wrote must be a valid cell file.
    CellModel.load(args.output)
    print(
        f"fitted {args.output}: capacity {result.capacity_ah:.4f} Ah, tau {taus}, "
        f"fit error RMSE {result.rmse_v * 1000:.2f} mV, max {result.max_error_v * 1000:.1f} mV, "
        f"OCV table error {result.ocv_error_v * 1000:.2f} mV"
    )
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    cell = CellModel.load(args.cell)
    trace = read_trace(args.trace)
    if args.initial_soc is not None and not 0.0 <= args.initial_soc <= 1.0:
        raise BmsdError("--initial-soc must be a fraction between 0 and 1")
    soc, std = estimate_trace(
        cell, trace, initial_soc=args.initial_soc, initial_soc_std=args.initial_soc_std
    )
    bad = ~(np.isfinite(soc) & np.isfinite(std))
    if bad.any():  # a backstop behind read_trace's bounds: never write NaN and exit 0
        row = int(np.argmax(bad))
        raise BmsdError(
            f"{args.trace}: the estimate is not finite from time_s {trace.time_s[row]:g} "
            "on (values the cell model cannot follow); nothing written"
        )
    try:
        with args.output.open("w", encoding="utf-8") as out:
            out.write("time_s,soc,soc_std\n")
            for t, s, d in zip(trace.time_s, soc, std, strict=True):
                out.write(f"{t:.3f},{s:.6f},{d:.6f}\n")
    except OSError as exc:
        raise BmsdError(f"cannot write {args.output}: {exc.strerror}") from None
    print(
        f"estimated {len(trace)} rows: final SOC {soc[-1] * 100:.2f} % "
        f"± {std[-1] * 100:.2f} %, written to {args.output}",
        file=sys.stderr,
    )
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be finite")
    return value


def register(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> dict[str, Handler]:
    """Add ``fit-cell`` and ``estimate`` to bmsd's subcommands; return name → handler."""
    fit = subparsers.add_parser(
        "fit-cell", help="fit a cell file (OCV, R0, RC pairs) from a pulse/HPPC trace CSV"
    )
    fit.add_argument("trace", type=Path, help="CSV with time_s,current_a,voltage_v,temp_c")
    fit.add_argument("-o", "--output", type=Path, required=True, help="cell file to write")
    fit.add_argument("--rc", type=int, choices=(1, 2), default=1, help="RC pairs (default 1)")
    fit.add_argument("--chemistry", choices=("LFP", "NMC"), default="NMC")
    fit.add_argument(
        "--capacity-ah", type=_fraction, default=None, help="capacity (default: from the trace)"
    )
    fit.add_argument("--name", default=None, help="cell name written to the file")
    fit.add_argument(
        "--min-rest-s", type=_fraction, default=600.0, help="shortest rest used as OCV (600)"
    )

    est = subparsers.add_parser("estimate", help="run the SOC estimator offline over a trace CSV")
    est.add_argument("trace", type=Path, help="CSV with time_s,current_a,voltage_v,temp_c")
    est.add_argument("--cell", type=Path, required=True, help="cell file (TOML)")
    est.add_argument("-o", "--output", type=Path, required=True, help="CSV to write")
    est.add_argument(
        "--initial-soc", type=_fraction, default=None, help="start SOC 0..1 (default: from OCV)"
    )
    est.add_argument(
        "--initial-soc-std", type=_fraction, default=None, help="its standard deviation"
    )
    return {"fit-cell": cmd_fit_cell, "estimate": cmd_estimate}


__all__ = ["Handler", "cmd_estimate", "cmd_fit_cell", "estimate_trace", "register"]
