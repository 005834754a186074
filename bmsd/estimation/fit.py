"""Cell characterisation: fit an ECM cell file from a pulse/HPPC trace (``bmsd fit-cell``).

Protocol assumed (USABC-style HPPC): the trace starts from a full, rested cell (end of a CC-CV
charge) and, unless the capacity is given, ends empty (discharged to the cut-off at a low rate
and rested). Between them, discharge steps alternate with rests of at least ``min_rest_s`` and
pulses. Steps:

1. Coulomb count ``Ah(t)`` (the current of a row flows during the interval ending at it).
2. OCV table: the last voltage of every rest of at least ``min_rest_s`` is an OCV point; its SOC
   is ``1 − (Ah(first rest) − Ah)/capacity``. The capacity is the charge between the first and
   the last rest unless given. The table is made strictly increasing (needed to invert it).
3. Overpotential ``e(t) = V − OCV(SOC(t))``. For fixed time constants the model
   ``e = R0·I + Σ Rk·fk(I; τk)`` (fk: unit-gain first-order filters, exact for piecewise
   constant current) is linear in R0 and Rk: least squares for every τ on a log grid, keep the
   best, refine on a finer grid around it. Then R0 and Rk are refitted per SOC node with the
   same τ, using the samples near that node (kernel weights), where there is enough excitation.

Only numpy is used (the daemon has no scipy). Nothing here knows how the trace was produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bmsd.errors import BmsdError
from bmsd.estimation.trace import Trace
from bmsd.model.cell import CellFile, CellInfo, Chemistry, OcvTable, ResistanceTable, ThermalParams

FloatArray = NDArray[np.float64]

# A sample is "at rest" below this fraction of the largest current in the trace.
_REST_FRACTION = 0.01
# Assumed values that a voltage/current trace cannot give (flagged in the written file).
ASSUMED_EFFICIENCY = 0.999
ASSUMED_SELF_DISCHARGE_PCT = 3.0
ASSUMED_HEAT_CAPACITY_J_PER_K_PER_AH = 19.3  # ≈ 5.4 kJ/K for a 280 Ah prismatic cell
ASSUMED_THERMAL_RESISTANCE_K_PER_W = 1.5
# Slow segments (a quasi-static C/10..C/20 discharge or charge, used as pseudo-OCV more than
# 2 % SOC away from any rest): current at most this fraction of the peak, steady for at least
# _SLOW_MIN_S, used after _SLOW_SETTLE_S; binned per 1 % SOC.
_SLOW_FRACTION = 0.25
_SLOW_MIN_S = 1200.0
_SLOW_SETTLE_S = 300.0
_PSEUDO_OCV_BIN = 0.01
# Minimum excitation (samples with current) for a per-SOC-node resistance refit.
_MIN_NODE_SAMPLES = 30


@dataclass(frozen=True, slots=True)
class FitResult:
    """The fitted cell file and how well it reproduces the trace."""

    cell_file: CellFile
    rmse_v: float
    max_error_v: float
    rest_count: int
    capacity_ah: float
    tau_s: tuple[float, ...]
    ocv_error_v: float = 0.0


def ocv_leave_one_out_v(
    table_soc: FloatArray, table_v: FloatArray, rest_soc: FloatArray
) -> FloatArray:
    """Error of the OCV table at each interior rest, from the table without that rest (V).

    Each rest is predicted by its neighbours (other rests, pseudo-OCV points); the ends are left
    out (predicting them would be extrapolation).
    """
    errors = []
    for soc in rest_soc:
        index = int(np.argmin(np.abs(table_soc - soc)))
        if index == 0 or index == table_soc.size - 1:
            continue
        others = np.arange(table_soc.size) != index
        predicted = np.interp(soc, table_soc[others], table_v[others])
        errors.append(predicted - table_v[index])
    return np.asarray(errors, dtype=np.float64)


def ocv_table_error_v(errors_v: FloatArray) -> float:
    """Robust σ of the leave-one-out errors: 1.4826 × median |error| (0 with fewer than 3).

    The median, not the RMS: at the steep ends a rest is poorly predicted by neighbours a few
    % SOC away, but there a voltage error means little SOC; the typical error is what a relaxed
    rest voltage is worth elsewhere.
    """
    if errors_v.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(errors_v)))


def _filtered(current_a: FloatArray, dt_s: FloatArray, taus_s: FloatArray) -> FloatArray:
    """Unit-gain first-order responses to the current, one column per time constant.

    v[n] = a·v[n−1] + (1 − a)·I[n], a = exp(−dt[n]/τ): the exact RC response to a current held
    over each interval (the same discretisation as the estimator).
    """
    decay = np.exp(-dt_s[:, None] / taus_s[None, :])
    gain = 1.0 - decay
    out = np.empty((current_a.size, taus_s.size))
    state = np.zeros(taus_s.size)
    for n in range(current_a.size):
        state = decay[n] * state + gain[n] * current_a[n]
        out[n] = state
    return out


def _lstsq(columns: FloatArray, target: FloatArray, weight: FloatArray | None = None) -> FloatArray:
    if weight is not None:
        root = np.sqrt(weight)
        columns = columns * root[:, None]
        target = target * root
    solution, *_ = np.linalg.lstsq(columns, target, rcond=None)
    return np.asarray(solution, dtype=np.float64)


def _rests(trace: Trace, min_rest_s: float) -> list[int]:
    """Index of the last sample of every rest lasting at least ``min_rest_s``."""
    limit = _REST_FRACTION * float(np.max(np.abs(trace.current_a)))
    resting = np.abs(trace.current_a) <= limit
    ends: list[int] = []
    start: int | None = None
    for index, rest in enumerate(resting):
        if rest and start is None:
            start = index
        if (not rest or index == resting.size - 1) and start is not None:
            end = index if rest else index - 1
            if trace.time_s[end] - trace.time_s[start] >= min_rest_s:
                ends.append(end)
            start = None
    return ends


def _slow_segments(trace: Trace, dt_s: FloatArray) -> NDArray[np.bool_]:
    """Samples of long low-rate constant-current stretches, after their first 5 minutes."""
    peak = float(np.max(np.abs(trace.current_a)))
    current = trace.current_a
    moving = np.abs(current) > _REST_FRACTION * peak
    low = moving & (np.abs(current) <= _SLOW_FRACTION * peak)
    steady = np.concatenate(([False], np.abs(np.diff(current)) <= 0.02 * peak))
    candidate = low & steady
    out = np.zeros(current.size, dtype=np.bool_)
    start: int | None = None
    for index in range(current.size + 1):
        inside = index < current.size and bool(candidate[index])
        if inside and start is None:
            start = index
        if not inside and start is not None:
            elapsed = np.cumsum(dt_s[start:index]) - dt_s[start]
            settled = elapsed >= _SLOW_SETTLE_S
            if elapsed.size and elapsed[-1] >= _SLOW_MIN_S:
                out[start:index] = settled
            start = None
    return out


def _fit_dynamics(
    current: FloatArray,
    dt_s: FloatArray,
    overpotential: FloatArray,
    use: NDArray[np.bool_],
    rc_pairs: int,
    source: str,
) -> tuple[float, FloatArray, FloatArray]:
    """Best (rmse, taus, [R0, R1, (R2)]) for ``overpotential`` over the ``use`` samples."""

    def evaluate(columns: FloatArray) -> tuple[float, FloatArray]:
        regressors = np.column_stack((current[use], columns[use]))
        params = _lstsq(regressors, overpotential[use])
        if np.any(params <= 0.0):
            return math.inf, params
        residual = overpotential[use] - regressors @ params
        return float(np.sqrt(np.mean(residual**2))), params

    best: tuple[float, FloatArray, FloatArray] = (math.inf, np.zeros(0), np.zeros(0))
    coarse = np.geomspace(1.0, 5000.0, 36)
    filtered = _filtered(current, dt_s, coarse)
    if rc_pairs == 1:
        for i in range(coarse.size):
            if coarse[i] > 1000.0:
                break
            err, params = evaluate(filtered[:, [i]])
            if err < best[0]:
                best = (err, coarse[[i]], params)
    else:
        for i in range(coarse.size):
            for j in range(i + 3, coarse.size):
                err, params = evaluate(filtered[:, [i, j]])
                if err < best[0]:
                    best = (err, coarse[[i, j]], params)
    if not math.isfinite(best[0]):
        raise BmsdError(f"{source}: no positive resistances fit the trace (sign of current?)")
    # Refine each time constant on a finer grid around the best (one pass per constant).
    taus = best[1].copy()
    for k in range(taus.size):
        for candidate in taus[k] * np.geomspace(0.8, 1.25, 9):
            trial = taus.copy()
            trial[k] = candidate
            if trial.size == 2 and trial[1] < 2.0 * trial[0]:
                continue
            err, params = evaluate(_filtered(current, dt_s, trial))
            if err < best[0]:
                best = (err, trial.copy(), params)
        taus = best[1].copy()
    return best


def _increasing(values: FloatArray, min_step: float) -> FloatArray:
    """Smallest change that makes ``values`` strictly increasing by at least ``min_step``."""
    out = values.copy()
    for i in range(1, out.size):
        out[i] = max(out[i], out[i - 1] + min_step)
    return out


def fit_cell(
    trace: Trace,
    *,
    rc_pairs: int = 1,
    chemistry: Chemistry = "NMC",
    capacity_ah: float | None = None,
    name: str = "",
    min_rest_s: float = 600.0,
) -> FitResult:
    """Fit OCV, R0 and 1 or 2 RC pairs to ``trace``; raise BmsdError if it cannot."""
    if rc_pairs not in (1, 2):
        raise BmsdError("--rc must be 1 or 2")
    if not np.any(np.abs(trace.current_a) > 0.0):
        raise BmsdError(f"{trace.source}: the current is zero throughout; nothing to fit")
    dt_s = np.diff(trace.time_s, prepend=trace.time_s[0])
    ah = np.cumsum(trace.current_a * dt_s) / 3600.0
    ends = _rests(trace, min_rest_s)
    if len(ends) < 3:
        raise BmsdError(
            f"{trace.source}: found {len(ends)} rests of at least {min_rest_s:.0f} s; "
            "fitting the OCV table needs at least 3 (start full, rests between steps, end empty)"
        )
    first = ends[0]
    if capacity_ah is None:
        capacity_ah = float(ah[first] - ah[ends[-1]])
        if not capacity_ah > 0.0:
            raise BmsdError(
                f"{trace.source}: the trace does not discharge from its first rest to its last; "
                "give --capacity-ah"
            )
    elif not capacity_ah > 0.0:
        raise BmsdError("--capacity-ah must be positive")
    soc_t = 1.0 - (ah[first] - ah) / capacity_ah
    rest_soc = np.clip(soc_t[ends], 0.0, 1.0)
    rest_v = trace.voltage_v[ends]
    order = np.argsort(rest_soc)
    rest_soc, rest_v = rest_soc[order], rest_v[order]
    keep = np.concatenate(([True], np.diff(rest_soc) > 1e-3))
    rest_soc, rest_v = rest_soc[keep], rest_v[keep]
    if rest_soc.size < 3:
        raise BmsdError(f"{trace.source}: fewer than 3 rests at distinct SOC")
    ocv_v = _increasing(rest_v, 1e-4)
    current = trace.current_a
    # Samples before the first rest belong to the preceding charge: not modelled.
    after_first = np.arange(current.size) > first
    slow = _slow_segments(trace, dt_s)
    # Pass 1: OCV from the rests only; the slow low-rate segments (where the OCV between rests
    # matters most, e.g. the final discharge to empty) are left out of the dynamic fit.
    ocv_t = np.interp(soc_t, rest_soc, ocv_v)
    _, taus, params = _fit_dynamics(
        current, dt_s, trace.voltage_v - ocv_t, after_first & ~slow, rc_pairs, trace.source
    )
    # Pass 2: a slow segment is a quasi-static discharge: V − I·(R0 + ΣRk) is a pseudo-OCV.
    # Its points fill the table where no rest is near (within 2 % SOC).
    r_dc = float(np.sum(params))
    pseudo = slow & after_first
    if pseudo.any():
        bins = np.round(soc_t[pseudo] / _PSEUDO_OCV_BIN) * _PSEUDO_OCV_BIN
        values = trace.voltage_v[pseudo] - current[pseudo] * r_dc
        extra_soc = np.unique(bins)
        extra_v = np.array([values[bins == b].mean() for b in extra_soc])
        far = np.min(np.abs(extra_soc[:, None] - rest_soc[None, :]), axis=1) > 0.02
        inside = (extra_soc > 0.0) & (extra_soc < 1.0)
        table_soc = np.concatenate((rest_soc, extra_soc[far & inside]))
        order = np.argsort(table_soc)
        table_soc = table_soc[order]
        ocv_v = _increasing(np.concatenate((ocv_v, extra_v[far & inside]))[order], 1e-4)
    else:
        table_soc = rest_soc
    ocv_t = np.interp(soc_t, table_soc, ocv_v)
    overpotential = trace.voltage_v - ocv_t
    use = after_first
    rmse_v, taus, params = _fit_dynamics(current, dt_s, overpotential, use, rc_pairs, trace.source)
    columns = _filtered(current, dt_s, taus)
    regressors = np.column_stack((current, columns))
    residual = overpotential[use] - regressors[use] @ params
    max_error_v = float(np.max(np.abs(residual)))

    # Per-SOC-node refit of the resistances (same τ), where the node has enough excitation.
    nodes = rest_soc
    width = max(float(np.max(np.diff(nodes))), 0.05)
    per_node = np.empty((nodes.size, params.size))
    moving = np.abs(current) > _REST_FRACTION * float(np.max(np.abs(current)))
    for i, node in enumerate(nodes):
        weight = np.clip(1.0 - np.abs(soc_t - node) / width, 0.0, 1.0) * use
        if np.count_nonzero((weight > 0) & moving) < _MIN_NODE_SAMPLES:
            per_node[i] = params
            continue
        local = _lstsq(regressors, overpotential, weight)
        per_node[i] = local if np.all(local > 0.0) else params
    # Limit the per-node values to a plausible band around the global fit.
    per_node = np.clip(per_node, params / 3.0, params * 3.0)

    temps = trace.temp_c[np.isfinite(trace.temp_c)]
    temp_c = float(np.median(temps)) if temps.size else 25.0
    soc_grid = tuple(float(round(s, 6)) for s in nodes)
    rows = len(soc_grid)
    ocv_grid = tuple(float(round(s, 6)) for s in table_soc)

    def table(values: FloatArray) -> tuple[tuple[float, ...], ...]:
        return (tuple(float(f"{v:.6g}") for v in values[:rows]),)

    resistance = ResistanceTable(
        soc=soc_grid,
        temp_c=(round(temp_c, 2),),
        r0_ohm=table(per_node[:, 0]),
        r1_ohm=table(per_node[:, 1]),
        tau1_s=table(np.full(rows, taus[0])),
        r2_ohm=table(per_node[:, 2]) if rc_pairs == 2 else None,
        tau2_s=table(np.full(rows, taus[1])) if rc_pairs == 2 else None,
    )
    ocv = OcvTable(
        soc=ocv_grid,
        temp_c=(round(temp_c, 2),),
        voltage_v=(tuple(float(round(v, 5)) for v in ocv_v),),
    )
    ocv_error_v = ocv_table_error_v(ocv_leave_one_out_v(table_soc, ocv_v, rest_soc))
    v_min = math.floor(float(np.min(trace.voltage_v)) * 100.0) / 100.0
    v_max = math.ceil(float(np.max(trace.voltage_v)) * 100.0) / 100.0
    nominal = float(np.interp(0.5, table_soc, ocv_v))
    info = CellInfo(
        name=name or f"fitted from {trace.source}",
        chemistry=chemistry,
        capacity_ah=round(capacity_ah, 6),
        nominal_voltage_v=round(nominal, 4),
        min_voltage_v=v_min,
        max_voltage_v=v_max,
        coulombic_efficiency=ASSUMED_EFFICIENCY,
        self_discharge_pct_per_month=ASSUMED_SELF_DISCHARGE_PCT,
        source=(
            f"bmsd fit-cell from {trace.source}: OCV from {len(ends)} rests, "
            f"R0 and {rc_pairs} RC pair(s) by least squares (fit RMSE {rmse_v * 1000:.2f} mV). "
            "Voltage window = trace extremes. Coulombic efficiency, self-discharge and thermal "
            "data are ASSUMED placeholders."
        ),
        model_error_v=round(rmse_v, 6),
        ocv_error_v=round(ocv_error_v, 6),
    )
    thermal = ThermalParams(
        heat_capacity_j_per_k=round(ASSUMED_HEAT_CAPACITY_J_PER_K_PER_AH * capacity_ah, 3),
        thermal_resistance_k_per_w=ASSUMED_THERMAL_RESISTANCE_K_PER_W,
    )
    cell_file = CellFile(cell=info, ocv=ocv, resistance=resistance, thermal=thermal)
    return FitResult(
        cell_file=cell_file,
        rmse_v=rmse_v,
        max_error_v=max_error_v,
        rest_count=len(ends),
        capacity_ah=capacity_ah,
        tau_s=tuple(float(t) for t in taus),
        ocv_error_v=ocv_error_v,
    )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def cell_file_toml(cell_file: CellFile, header: str) -> str:
    """The cell file as TOML text (the format of docs/cells.md) with a comment header."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    sections = (
        ("cell", cell_file.cell),
        ("ocv", cell_file.ocv),
        ("resistance", cell_file.resistance),
        ("thermal", cell_file.thermal),
    )
    for name, section in sections:
        lines += ["", f"[{name}]"]
        for field in section.__dataclass_fields__:
            value = getattr(section, field)
            if value is None:
                continue
            if isinstance(value, tuple) and value and isinstance(value[0], tuple):
                rows = ",\n".join("  " + _toml_value(row) for row in value)
                lines.append(f"{field} = [\n{rows},\n]")
            else:
                lines.append(f"{field} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


__all__ = ["FitResult", "cell_file_toml", "fit_cell"]
