"""The balancing coordinator: one step per control tick, from the snapshot to a BalancingState.

Responsibility: hold balancing's state between ticks (the strategy's memory, the operator's
enable, the rest timer, the last command, the Ah bled per cell, the voltages last measured with
bleeding off) and combine a strategy (:mod:`bmsd.balancing.strategies`) with the conditions
(:mod:`bmsd.balancing.conditions`) into the per-cell bleed command of the tick. It also judges
the slaves' feedback against the command, proposes the charge-current hold that lets balancing
finish near the top of charge, and saves and restores its counters. No clock, no I/O except
:meth:`Balancer.save` / :meth:`Balancer.load`, which go through the atomic state files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bmsd.balancing.conditions import (
    PackConditions,
    board_duty,
    duty_on,
    limit_per_module,
    pack_gate,
    rest_since,
)
from bmsd.balancing.settings import BalancingConfig
from bmsd.balancing.strategies import (
    CellView,
    Decision,
    FloatArray,
    Memory,
    SocPlan,
    make_strategy,
)
from bmsd.model.balancing import BalancingState
from bmsd.model.bms import Answer, BmsMode, Reply, Request
from bmsd.model.estimates import Estimates
from bmsd.model.snapshot import PackSnapshot
from bmsd.model.topology import Topology
from bmsd.system.statefile import read_state, set_aside, write_state
from bmsd.system.statewriter import StateJob

STATE_KIND = "balancing"
STATE_VERSION = 1
STATE_FILE = "balancing.json"
SECONDS_PER_HOUR = 3600.0


class Balancer:
    """Balancing for one pack; :meth:`step` once per tick with the time passed in."""

    def __init__(
        self,
        config: BalancingConfig,
        topology: Topology,
        module_timeout_s: float,
        *,
        feedback_available: bool = True,
    ) -> None:
        """``feedback_available``: the slave protocol reports which cells bleed; the Ah are then
        counted from what the slaves report, else from the command."""
        self.config = config
        self.strategy = make_strategy(config)
        self.enabled = config.enabled_at_start
        self._topology = topology
        self._module_timeout_s = module_timeout_s
        self._feedback_available = feedback_available
        cells = topology.cell_count
        self._memory = Memory()
        self._bled_ah: FloatArray = np.zeros(cells)
        self._command = np.zeros(cells, dtype=np.bool_)
        self._command_changed_at = np.full(topology.module_count, -math.inf)
        self._clean_v: FloatArray = np.full(cells, np.nan)
        self._clean_valid = np.zeros(cells, dtype=np.bool_)
        self._rest_since_s: float | None = None
        self._last_s: float | None = None
        self._last_save_s: float | None = None
        self._hold_a: float | None = None

    @property
    def configured(self) -> bool:
        return self.config.strategy != "none"

    @property
    def command(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """The per-cell bleed command of the last step (read-only copy)."""
        return self._command.copy()

    @property
    def bled_ah(self) -> FloatArray:
        return self._bled_ah.copy()

    @property
    def plan(self) -> SocPlan | None:
        return self._memory.plan

    @property
    def charge_hold_a(self) -> float | None:
        """Charge current limit to hold the pack at near the top while balancing finishes."""
        return self._hold_a

    def bleeding_now(self, snapshot: PackSnapshot) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """The cells that bled since the last step: what fresh slaves report, else the command."""
        if not self._feedback_available:
            return self._command.copy()
        fresh = np.asarray(snapshot.module_age_s <= self._module_timeout_s, dtype=np.bool_)
        fresh_cells = np.repeat(fresh, self._topology.cells_per_module)
        return np.asarray(snapshot.balancing_feedback, dtype=np.bool_) & fresh_cells

    def bleed_current_a(self, snapshot: PackSnapshot) -> FloatArray:
        """Bleed current per cell since the last step, A (for the estimator's prediction)."""
        return np.where(self.bleeding_now(snapshot), self.config.bleed_current_a, 0.0)

    def answer(self, request: Request) -> Reply:
        """Operator balancing on/off (Modbus, CLI)."""
        if not self.configured:
            return Reply(request, Answer.ILLEGAL, "no balancing configured")
        if request is Request.BALANCING_ON:
            self.enabled = True
            return Reply(request, Answer.ACCEPTED, f"balancing ({self.config.strategy}) enabled")
        if request is Request.BALANCING_OFF:
            self.enabled = False
            return Reply(request, Answer.ACCEPTED, "balancing disabled")
        return Reply(request, Answer.ILLEGAL, f"not a balancing request: {request.value}")

    # -- the tick ----------------------------------------------------------------------------

    def step(
        self,
        now_s: float,
        snapshot: PackSnapshot,
        estimates: Estimates | None,
        *,
        mode: BmsMode,
        blocking_faults: tuple[str, ...],
        data_ok: bool,
    ) -> BalancingState:
        """Account for the bleeding since the last step, then decide this tick's command."""
        config, topology = self.config, self._topology
        per_module = topology.cells_per_module
        if self._last_s is None:
            # Whatever the slaves do at start (left over from a previous run) gets a grace time.
            self._command_changed_at[:] = now_s
        dt_s = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s if self._last_s is None else max(self._last_s, now_s)
        fresh = np.asarray(snapshot.module_age_s <= self._module_timeout_s, dtype=np.bool_)
        fresh_cells = np.repeat(fresh, per_module)
        feedback = np.asarray(snapshot.balancing_feedback, dtype=np.bool_)

        # What really bled since the last tick: the slaves' report if they give one.
        really = self.bleeding_now(snapshot)
        self._bled_ah = self._bled_ah + really * (config.bleed_current_a * dt_s / SECONDS_PER_HOUR)

        mismatch = self._mismatch(now_s, feedback, fresh)
        self._remember_clean_voltages(snapshot, feedback, fresh_cells)
        self._rest_since_s = rest_since(self._rest_since_s, snapshot.pack_current_a, now_s, config)

        view = CellView(
            now_s=now_s,
            voltage_v=self._clean_v,
            voltage_valid=self._clean_valid & np.asarray(snapshot.cell_voltage_valid),
            bled_ah=self._bled_ah,
            soc=None if estimates is None else estimates.soc,
            soc_std=None if estimates is None else estimates.soc_std,
            capacity_ah=None if estimates is None else estimates.capacity_ah,
            capacity_std_ah=None if estimates is None else estimates.capacity_std_ah,
            anchored_at_s=math.nan if estimates is None else estimates.anchored_at_s,
        )
        decision, memory = self.strategy.decide(view, self._memory)
        self._memory = memory
        gate = pack_gate(
            config,
            PackConditions(
                enabled=self.enabled,
                mode=mode,
                blocking_faults=blocking_faults,
                data_ok=data_ok,
                current_a=snapshot.pack_current_a,
                rest_since_s=self._rest_since_s,
                now_s=now_s,
            ),
        )
        command, module_reason = self._command_for(now_s, decision, gate, snapshot, fresh)
        changed = (command != self._command).reshape(-1, per_module).any(axis=1)
        self._command_changed_at[changed] = now_s
        self._command = command
        self._hold_a = self._charge_hold(decision, snapshot)

        if gate:
            reason = f"off: {gate}" + (f" ({decision.reason})" if decision.needed else "")
        elif command.any():
            reason = f"bleeding {int(command.sum())} cells: {decision.reason}"
        elif decision.wanted.any():
            reason = f"paused: {module_reason or 'duty cycle off-phase'} ({decision.reason})"
        else:
            reason = decision.reason
        bleeding = command.copy()
        bleeding.flags.writeable = False
        bled = self._bled_ah.copy()
        bled.flags.writeable = False
        remaining = decision.remaining_ah.copy()
        remaining.flags.writeable = False
        return BalancingState(
            strategy=config.strategy,
            enabled=self.enabled,
            active=bool(command.any()),
            reason=reason,
            bleeding=bleeding,
            bled_ah=bled,
            feedback_mismatch_modules=mismatch,
            spread=decision.spread,
            spread_unit="share" if config.strategy == "soc" else "V",
            remaining_ah=remaining if config.strategy == "soc" else None,
            charge_hold_a=self._hold_a,
        )

    def _mismatch(
        self,
        now_s: float,
        feedback: np.ndarray[Any, np.dtype[np.bool_]],
        fresh: np.ndarray[Any, np.dtype[np.bool_]],
    ) -> int:
        """Fresh modules whose feedback differs from a command older than the grace time."""
        if not self._feedback_available:
            return 0
        per_module = self._topology.cells_per_module
        differs = (feedback != self._command).reshape(-1, per_module).any(axis=1)
        settled = now_s - self._command_changed_at >= self.config.feedback_grace_s
        return int(np.count_nonzero(differs & settled & fresh))

    def _remember_clean_voltages(
        self,
        snapshot: PackSnapshot,
        feedback: np.ndarray[Any, np.dtype[np.bool_]],
        fresh_cells: np.ndarray[Any, np.dtype[np.bool_]],
    ) -> None:
        """Keep, per module, the voltages of the last tick its cells did not bleed."""
        per_module = self._topology.cells_per_module
        quiet_module = np.asarray(
            ~(feedback | self._command).reshape(-1, per_module).any(axis=1), dtype=np.bool_
        )
        if self.config.measure_window_s <= 0.0:
            # No measurement windows configured: the live voltages (with the bleed drop).
            quiet_module = np.ones_like(quiet_module)
        quiet = np.repeat(quiet_module, per_module) & fresh_cells
        valid = np.asarray(snapshot.cell_voltage_valid, dtype=np.bool_)
        self._clean_v = np.where(quiet, snapshot.cell_voltage_v, self._clean_v)
        self._clean_valid = np.where(quiet, valid, self._clean_valid & fresh_cells)

    def _command_for(
        self,
        now_s: float,
        decision: Decision,
        gate: str,
        snapshot: PackSnapshot,
        fresh: np.ndarray[Any, np.dtype[np.bool_]],
    ) -> tuple[np.ndarray[Any, np.dtype[np.bool_]], str]:
        config, per_module = self.config, self._topology.cells_per_module
        cells = self._topology.cell_count
        if gate or not decision.wanted.any():
            return np.zeros(cells, dtype=np.bool_), ""
        duty = board_duty(config, snapshot.module_board_temp_c)
        request = np.asarray(snapshot.module_measurement_request, dtype=np.bool_)
        module_on = np.array(
            [
                bool(fresh[m]) and not bool(request[m]) and duty_on(config, now_s, float(duty[m]))
                for m in range(self._topology.module_count)
            ],
            dtype=np.bool_,
        )
        wanted = decision.wanted & np.repeat(module_on, per_module)
        command = limit_per_module(
            wanted, decision.priority, per_module, config.max_cells_per_module
        )
        reason = ""
        if not module_on.any():
            if not (duty > 0.0).any():
                reason = "board temperature at the limit or unknown"
            elif request.any():
                reason = "slaves measuring"
        return command, reason

    def _charge_hold(self, decision: Decision, snapshot: PackSnapshot) -> float | None:
        config = self.config
        # Lowering CCL is always safe, so the hold does not wait for the bleed conditions.
        if config.hold_charge_current_a <= 0.0 or not self.enabled or not decision.needed:
            return None
        cells = snapshot.cell_voltage
        if cells is None or cells.max_value < config.top_start_cell_v:
            return None
        return config.hold_charge_current_a

    # -- persistence -------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        plan = self._memory.plan
        return {
            "cell_count": int(self._bled_ah.size),
            "strategy": self.config.strategy,
            "bled_ah": [round(float(v), 7) for v in self._bled_ah],
            "plan": None
            if plan is None
            else {
                "anchored_at_s": None
                if math.isnan(plan.anchored_at_s)
                else float(plan.anchored_at_s),
                "target_ah": [round(float(v), 7) for v in plan.target_ah],
                "bled_at_plan_ah": [round(float(v), 7) for v in plan.bled_at_plan_ah],
                "excess_ah": [round(float(v), 7) for v in plan.excess_ah],
                "capacity_ah": [round(float(v), 5) for v in plan.capacity_ah],
            },
        }

    def restore_state(self, payload: dict[str, Any]) -> str:
        """Take over saved counters; a problem (other pack, damaged values) gives its reason
        and leaves the counters at zero."""
        count = self._bled_ah.size
        try:
            if int(payload["cell_count"]) != count:
                return f"saved for {payload['cell_count']} cells, the pack has {count}"
            bled = np.asarray(payload["bled_ah"], dtype=np.float64)
            if bled.shape != (count,) or not np.all(np.isfinite(bled)) or (bled < 0).any():
                return "bled_ah damaged"
            if (bled > _MAX_BLED_AH).any():
                return f"bled_ah beyond {_MAX_BLED_AH:g} Ah"
            plan: SocPlan | None = None
            saved = payload.get("plan")
            if saved is not None and payload.get("strategy") == self.config.strategy:
                arrays = [
                    np.asarray(saved[key], dtype=np.float64)
                    for key in ("target_ah", "bled_at_plan_ah", "excess_ah", "capacity_ah")
                ]
                if any(a.shape != (count,) or not np.all(np.isfinite(a)) for a in arrays):
                    return "plan damaged"
                target, at_plan, excess, capacity = arrays
                if not _plan_plausible(target, at_plan, excess, capacity, bled):
                    return "plan damaged (values no plan can have)"
                anchored = saved.get("anchored_at_s")
                if anchored is not None and not math.isfinite(float(anchored)):
                    return "plan damaged (anchor time not finite)"
                plan = SocPlan(
                    made_at_s=-math.inf,
                    anchored_at_s=math.nan if anchored is None else float(anchored),
                    target_ah=target,
                    bled_at_plan_ah=at_plan,
                    excess_ah=excess,
                    capacity_ah=capacity,
                )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            # OverflowError: Infinity or a 400-digit int where a count or an Ah value belongs.
            return f"damaged ({type(exc).__name__}: {str(exc)[:80]})"
        self._bled_ah = bled
        self._memory = Memory(plan=plan)
        return ""

    def save(self, path: Path) -> None:
        write_state(path, STATE_KIND, STATE_VERSION, self.export_state())

    def state_job(self, path: Path) -> StateJob:
        """This tick's counters and plan, for the background writer (bmsd.system.statewriter)."""
        return StateJob(path, STATE_KIND, STATE_VERSION, self.export_state(), "balancing state")

    def load(self, path: Path) -> str:
        """Restore from ``path``; the reason it was not used, or "" when it was."""
        result = read_state(path, STATE_KIND, STATE_VERSION)
        if result.payload is None:
            return result.problem
        refused = self.restore_state(result.payload)
        if refused:
            set_aside(path)  # the next save would overwrite it: keep it for the post-mortem
        return refused

    def save_due(self, now_s: float) -> bool:
        """True once per ``save_interval_s`` (the first call only starts the interval)."""
        if self._last_save_s is None:
            self._last_save_s = now_s
            return False
        if now_s - self._last_save_s >= self.config.save_interval_s:
            self._last_save_s = now_s
            return True
        return False


# Bled charge per cell over a pack's life is a few capacities; this is far beyond any and
# keeps a damaged counter from reaching the publishers.
_MAX_BLED_AH = 1e9
# The file rounds Ah to 5..7 decimals.
_ROUNDING_AH = 1e-4


def _plan_plausible(
    target: FloatArray,
    at_plan: FloatArray,
    excess: FloatArray,
    capacity: FloatArray,
    bled: FloatArray,
) -> bool:
    """A restored plan bleeds at most what a plan could ask: never more than a capacity
    (a damaged target would bleed one cell without end), counted from a past bled count."""
    if (capacity <= 0).any() or (capacity > _MAX_BLED_AH).any():
        return False
    limit = capacity + _ROUNDING_AH
    for values in (target, excess):
        if (values < 0).any() or (values > limit).any():
            return False
    return not ((at_plan < 0).any() or (at_plan > bled + _ROUNDING_AH).any())


__all__ = ["STATE_FILE", "Balancer"]
