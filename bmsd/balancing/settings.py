"""``[balancing]``: strategy, bleed current, thresholds, conditions, duty cycle and commands.

Every value is documented and range-checked here; cross-checks against the charge limits (a
start threshold the dynamic CVL never lets the cells reach would never start) are made in
:meth:`bmsd.config.Config.check`. The method behind each value: docs/balancing.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bmsd.schema import doc, must_be_positive, must_be_within, must_not_be_negative

StrategyName = Literal["none", "voltage", "soc", "top"]
Alignment = Literal["top", "bottom"]


@dataclass(frozen=True, slots=True)
class BalancingConfig:
    """Passive cell balancing: which cells bleed, when, and how the slaves are commanded."""

    strategy: StrategyName = doc(
        "none: no balancing; voltage: bleed cells above the lowest when the voltage spread "
        "exceeds a threshold; soc: bleed the charge each cell holds above the others, from the "
        "SOC estimator (works in LFP's flat plateau); top: voltage-based near the end of charge",
        default="none",
    )
    enabled_at_start: bool = doc(
        "Balancing is enabled when the daemon starts (else it waits for a balancing-on request)",
        default=True,
    )
    bleed_current_a: float = doc(
        "Bleed current of one cell's resistor at a typical cell voltage: counts the Ah bled and "
        "plans the SOC strategy",
        unit="A",
        default=0.1,
    )
    # --- when ---------------------------------------------------------------------------
    allow_while_charging: bool = doc("Bleed while the pack charges", default=True)
    allow_at_rest: bool = doc("Bleed while the pack rests", default=True)
    charge_current_a: float = doc(
        "Above this pack current the pack counts as charging", unit="A", default=1.0
    )
    rest_current_a: float = doc(
        "Below this |pack current| the pack counts as resting (after rest_time_s)",
        unit="A",
        default=2.0,
    )
    rest_time_s: float = doc(
        "The current must stay below rest_current_a this long before the pack rests",
        unit="s",
        default=600.0,
    )
    board_temp_limit_c: float = doc(
        "No bleeding on a module whose board is at or above this temperature (0 to 125)",
        unit="°C",
        default=70.0,
    )
    board_derate_band_c: float = doc(
        "Below the limit, the duty cycle falls linearly from 100 % to 0 over this band",
        unit="°C",
        default=10.0,
    )
    max_cells_per_module: int = doc(
        "Most cells bleeding at once on one module (the board's heat budget)", default=8
    )
    duty_period_s: float = doc("Period of the bleed duty cycle", unit="s", default=10.0)
    measure_window_s: float = doc(
        "At the start of every duty period, bleeding is off this long so cell voltages are "
        "measured without the bleed current; 0: no window (a module asking for a measurement "
        "in its status is still switched off)",
        unit="s",
        default=1.0,
    )
    ignore_faults: tuple[str, ...] = doc(
        "Fault ids whose warning level does not stop bleeding (any fatal level always does): "
        "balancing's own feedback warning (stopping would make the feedback match and toggle), "
        "a late control tick (a stalled loop stops refreshing, and the slaves time out) and the "
        "cell voltage spread (the imbalance balancing removes)",
        default=("balancing_feedback_mismatch", "control_loop_overrun", "cell_voltage_spread"),
    )
    # --- voltage strategy ---------------------------------------------------------------
    voltage_start_delta_v: float = doc(
        "voltage: start when the highest cell is this far above the lowest", unit="V", default=0.015
    )
    voltage_stop_delta_v: float = doc(
        "voltage: stop when the spread falls to this; cells within it of the lowest never bleed",
        unit="V",
        default=0.005,
    )
    voltage_min_cell_v: float = doc(
        "voltage: bleed only while the lowest cell is at or above this voltage",
        unit="V",
        default=3.30,
    )
    # --- top strategy -------------------------------------------------------------------
    top_start_cell_v: float = doc(
        "top: bleed only while the highest cell is at or above this voltage (end of charge); "
        "must lie below limits.cell_charge_voltage_v, where the dynamic CVL holds it",
        unit="V",
        default=3.40,
    )
    top_delta_v: float = doc(
        "top: cells more than this above the lowest bleed", unit="V", default=0.010
    )
    # --- soc strategy -------------------------------------------------------------------
    soc_alignment: Alignment = doc(
        "soc: align the cells at the top (all full at once; the usual choice for passive "
        "balancing) or at the bottom (all empty at once)",
        default="top",
    )
    soc_reference_quantile: float = doc(
        "soc: the reference is this quantile of the cells (1: the extreme cell). Below 1, the "
        "noise of many SOC estimates does not inflate every cell's excess (less over-bleeding)",
        default=1.0,
    )
    soc_start_spread: float = doc(
        "soc: make a plan when some cell holds more than this share of its capacity above "
        "the reference",
        default=0.005,
    )
    soc_stop_spread: float = doc(
        "soc: bleed each cell down to this share of its capacity above the reference",
        default=0.002,
    )
    soc_max_std: float = doc(
        "soc: plan only from SOC estimates at least this certain (1 sigma, fraction); an "
        "uncertain estimate bleeds nothing",
        default=0.03,
    )
    soc_deadband_sigma: float = doc(
        "soc: each cell keeps this many standard deviations of its SOC difference to the "
        "reference (its and the reference's estimate combined) unbled, when that is more than "
        "soc_stop_spread: an excess within the estimate's noise is not bled (0: no deadband)",
        default=0.5,
    )
    soc_plan_interval_s: float = doc(
        "soc: a bleed budget (the plan) is made from a certain estimate at most this often; it "
        "is bled by counting Ah until done or replaced by the next one",
        unit="s",
        default=86400.0,
    )
    soc_plan_window: float = doc(
        "soc: plans are made only while the average SOC is within this of full (top "
        "alignment) or of empty (bottom): a cell's room to full is (1 - SOC) x capacity, so "
        "near full an error in its capacity estimate hardly matters; 1: at any SOC",
        default=0.15,
    )
    soc_top_first_band: float = doc(
        "soc: only cells whose remaining budget is within this share of capacity of the "
        "largest one bleed, so the fullest cells (which set the usable capacity) go first and "
        "no energy is spent on cells below them yet; 0.5: every cell with a budget bleeds",
        default=0.001,
    )
    # --- charge control -----------------------------------------------------------------
    hold_charge_current_a: float = doc(
        "While balancing is needed and the highest cell is at or above top_start_cell_v, the "
        "charge current limit is held at most at this (the pack stays near CVL so bleeding can "
        "finish); 0: no hold",
        unit="A",
        default=0.0,
    )
    # --- commands -----------------------------------------------------------------------
    command_period_s: float = doc(
        "Resend the balancing command this often (and at once on a change)", unit="s", default=0.5
    )
    slave_timeout_s: float = doc(
        "Timeout sent with each command: a slave stops bleeding by itself without a fresh one",
        unit="s",
        default=2.0,
    )
    feedback_grace_s: float = doc(
        "The slaves' balancing feedback must match a command within this time",
        unit="s",
        default=2.0,
    )
    save_interval_s: float = doc(
        "Save the bled Ah and the SOC plan to the state directory this often",
        unit="s",
        default=60.0,
    )

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        problems += must_be_positive(
            self,
            "bleed_current_a",
            "duty_period_s",
            "command_period_s",
            "slave_timeout_s",
            "feedback_grace_s",
            "save_interval_s",
        )
        problems += must_not_be_negative(
            self,
            "charge_current_a",
            "rest_current_a",
            "rest_time_s",
            "board_derate_band_c",
            "measure_window_s",
            "voltage_stop_delta_v",
            "top_delta_v",
            "soc_stop_spread",
            "soc_deadband_sigma",
            "hold_charge_current_a",
        )
        # Beyond 125 °C: beyond any board's rating.
        problems += must_be_within(self, "board_temp_limit_c", 0.0, 125.0, "°C")
        if self.bleed_current_a > 5.0:
            problems.append(("bleed_current_a", "must be at most 5 A"))
        if self.measure_window_s >= self.duty_period_s:
            problems.append(("measure_window_s", "must be shorter than duty_period_s"))
        if self.slave_timeout_s <= self.command_period_s:
            problems.append(
                ("slave_timeout_s", "must be longer than command_period_s (or slaves would stop)")
            )
        if self.slave_timeout_s > 25.5:
            problems.append(("slave_timeout_s", "must be at most 25.5 s (the DBC signal)"))
        if self.max_cells_per_module < 1:
            problems.append(("max_cells_per_module", "must be at least 1"))
        if not self.voltage_start_delta_v > self.voltage_stop_delta_v:
            problems.append(
                ("voltage_start_delta_v", "must be above voltage_stop_delta_v (the hysteresis)")
            )
        if not 0.0 <= self.soc_stop_spread < self.soc_start_spread <= 0.5:
            problems.append(("soc_start_spread", "must be above soc_stop_spread and at most 0.5"))
        problems += must_be_within(self, "soc_reference_quantile", 0.5, 1.0)
        if self.soc_deadband_sigma > 5.0:
            problems.append(("soc_deadband_sigma", "must be at most 5 (sigma)"))
        if not 60.0 <= self.soc_plan_interval_s <= 30 * 86400.0:
            problems.append(("soc_plan_interval_s", "must be between 60 s and 30 days"))
        if not 0.0 < self.soc_plan_window <= 1.0:
            problems.append(("soc_plan_window", "must be above 0 and at most 1"))
        if not 0.0 < self.soc_top_first_band <= 0.5:
            problems.append(("soc_top_first_band", "must be above 0 and at most 0.5"))
        if not 0.0 < self.soc_max_std <= 0.5:
            problems.append(("soc_max_std", "must be above 0 and at most 0.5"))
        for key in ("voltage_min_cell_v", "top_start_cell_v"):
            problems += must_be_within(self, key, 1.0, 5.0, "V", note=" (a cell voltage)")
        if not self.allow_while_charging and not self.allow_at_rest and self.strategy != "none":
            problems.append(
                ("allow_at_rest", "balancing needs allow_while_charging or allow_at_rest")
            )
        return problems


__all__ = ["Alignment", "BalancingConfig", "StrategyName"]
