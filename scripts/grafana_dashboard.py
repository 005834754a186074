#!/usr/bin/env python3
"""Writes docs/grafana/bmsd.json, the Grafana dashboard for bmsd, from the panel list below.

The dashboard is data: rows of panels, each with its PromQL. Edit the list here and run
``python scripts/grafana_dashboard.py``; tests/integration/test_grafana_dashboard.py fails when
the JSON is stale and runs every query against a real Prometheus scraping a running daemon.
Variables: ``datasource`` (a Prometheus data source), ``instance`` (one bmsd) and ``string``
(strings of the pack, multi-select).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "bmsd.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # noqa: E741 - the selector every query carries
S = f'{I}, string=~"$string"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Q:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class P:
    title: str
    kind: str
    queries: tuple[Q, ...]
    width: int = 8
    height: int = 8
    unit: str = ""
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


ONE_ZERO = [
    {
        "type": "value",
        "options": {
            "0": {"text": "no", "color": "green", "index": 0},
            "1": {"text": "yes", "color": "red", "index": 1},
        },
    }
]
OPEN_CLOSED = [
    {
        "type": "value",
        "options": {
            "0": {"text": "open", "color": "blue", "index": 0},
            "1": {"text": "closed", "color": "green", "index": 1},
        },
    }
]
LEVELS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "none", "color": "green", "index": 0},
            "1": {"text": "info", "color": "blue", "index": 1},
            "2": {"text": "warning", "color": "orange", "index": 2},
            "3": {"text": "fatal", "color": "red", "index": 3},
        },
    }
]

# fmt: off
ROWS: tuple[tuple[str, tuple[P, ...]], ...] = (
    (
        "Pack overview",
        (
            P("BMS state", "stat", (Q(f"bmsd_mode{{{I}}} == 1", "{{mode}}", True),), 4, 4,
              options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "textMode": "name", "colorMode": "background"},
              description="State of the BMS state machine"),
            P("SOC", "gauge", (Q(f"bmsd_soc_ratio{{{I}}}", "SOC", True),), 4, 4, "percentunit",
              defaults={"min": 0, "max": 1}),
            P("Pack voltage", "stat", (Q(f"bmsd_pack_voltage_volts{{{I}}}", "V", True),), 4, 4,
              "volt"),
            P("Pack current", "stat", (Q(f"bmsd_pack_current_amperes{{{I}}}", "I", True),), 4, 4,
              "amp", description="Positive charges the battery"),
            P("Worst active fault", "stat", (Q(f"bmsd_fault_worst_level{{{I}}}", "", True),),
              4, 4, defaults={"mappings": LEVELS}, options={"colorMode": "background"}),
            P("Data valid", "stat", (Q(f"bmsd_data_valid{{{I}}}", "", True),), 4, 4,
              defaults={"mappings": [{"type": "value", "options": {
                  "0": {"text": "invalid", "color": "red"},
                  "1": {"text": "valid", "color": "green"}}}]},
              options={"colorMode": "background"}),
            P("Voltage and current", "timeseries", (
                Q(f"bmsd_pack_voltage_volts{{{I}}}", "pack voltage"),
                Q(f"bmsd_bus_voltage_volts{{{I}}}", "bus voltage"),
                Q(f"bmsd_pack_current_amperes{{{I}}}", "current"),
            ), 12, 8, options={"legend": {"displayMode": "list", "placement": "bottom"}},
              defaults={"custom": {"axisSoftMin": 0}}),
            P("Power", "timeseries", (Q(f"bmsd_pack_power_watts{{{I}}}", "power"),), 6, 8,
              "watt"),
            P("Contactors", "state-timeline", (
                Q(f"bmsd_contactor_closed{{{I}}}", "{{contactor}} feedback"),
                Q(f"bmsd_contactor_commanded_closed{{{I}}}", "{{contactor}} command"),
            ), 6, 8, defaults={"mappings": OPEN_CLOSED}),
        ),
    ),
    (
        "Limits and why",
        (
            P("Current limits and current", "timeseries", (
                Q(f"bmsd_charge_current_limit_amperes{{{I}}}", "CCL"),
                Q(f"bmsd_discharge_current_limit_amperes{{{I}}}", "DCL"),
                Q(f"abs(bmsd_pack_current_amperes{{{I}}})", "|current|"),
            ), 8, 8, "amp"),
            P("Voltage limits and voltage", "timeseries", (
                Q(f"bmsd_charge_voltage_limit_volts{{{I}}}", "CVL"),
                Q(f"bmsd_discharge_voltage_limit_volts{{{I}}}", "DVL"),
                Q(f"bmsd_pack_voltage_volts{{{I}}}", "pack"),
            ), 8, 8, "volt"),
            P("Limited by (now)", "table", (
                Q(f"bmsd_limit_limiting{{{I}}} == 1", "", True),
            ), 8, 8, description="The contributor that sets each limit now",
              options={"showHeader": True}),
            P("Why is charge current limited: contributors", "timeseries", (
                Q(f'bmsd_limit_contributor_amperes{{{I}, limit="ccl"}}', "{{contributor}}"),
            ), 12, 8, "amp", description="The limit is the lowest line"),
            P("Why is discharge current limited: contributors", "timeseries", (
                Q(f'bmsd_limit_contributor_amperes{{{I}, limit="dcl"}}', "{{contributor}}"),
            ), 12, 8, "amp", description="The limit is the lowest line"),
            P("Limiting contributor over time", "state-timeline", (
                Q(f"bmsd_limit_limiting{{{I}}} == 1", "{{limit}}: {{contributor}}"),
            ), 24, 6),
        ),
    ),
    (
        "Cells",
        (
            P("Cell voltage distribution", "heatmap", (
                Q(f"bmsd_cell_voltage_volts{{{S}}}", "s{{string}} m{{module}} c{{cell}}"),
            ), 12, 9, "volt", description="How many cells sit at each voltage, over time",
              options={"calculate": True, "yAxis": {"unit": "volt"},
                       "color": {"scheme": "Spectral", "mode": "scheme"}}),
            P("Temperature distribution", "heatmap", (
                Q(f"bmsd_temperature_celsius{{{S}}}", "s{{string}} m{{module}} t{{sensor}}"),
            ), 12, 9, "celsius", description="How many sensors read each temperature, over time",
              options={"calculate": True, "yAxis": {"unit": "celsius"},
                       "color": {"scheme": "Turbo", "mode": "scheme"}}),
            P("Cell voltage min / mean / max", "timeseries", (
                Q(f"bmsd_cell_voltage_min_volts{{{I}}}", "min"),
                Q(f"bmsd_cell_voltage_mean_volts{{{I}}}", "mean"),
                Q(f"bmsd_cell_voltage_max_volts{{{I}}}", "max"),
            ), 8, 8, "volt"),
            P("Cell voltage spread", "timeseries", (
                Q(f"bmsd_cell_voltage_spread_volts{{{I}}}", "spread"),
            ), 8, 8, "volt"),
            P("Temperature min / max / spread", "timeseries", (
                Q(f"bmsd_temperature_min_celsius{{{I}}}", "min"),
                Q(f"bmsd_temperature_max_celsius{{{I}}}", "max"),
                Q(f"bmsd_temperature_spread_celsius{{{I}}}", "spread"),
            ), 8, 8, "celsius"),
            P("Cell voltages now", "bargauge", (
                Q(f"bmsd_cell_voltage_volts{{{S}}}", "s{{string}} m{{module}} c{{cell}}", True),
            ), 24, 8, "volt", options={"orientation": "vertical", "displayMode": "gradient"}),
            P("Temperatures now", "bargauge", (
                Q(f"bmsd_temperature_celsius{{{S}}}", "s{{string}} m{{module}} t{{sensor}}",
                  True),
            ), 12, 8, "celsius", options={"orientation": "vertical", "displayMode": "gradient"}),
            P("String voltage (sum of cells)", "timeseries", (
                Q(f"bmsd_string_cell_voltage_sum_volts{{{S}}}", "string {{string}}"),
            ), 12, 8, "volt"),
        ),
    ),
    (
        "SOC and SOH",
        (
            P("Pack SOC ± 1σ", "timeseries", (
                Q(f"bmsd_soc_ratio{{{I}}}", "SOC"),
                Q(f"bmsd_soc_ratio{{{I}}} + bmsd_soc_uncertainty_ratio{{{I}}}", "+1σ"),
                Q(f"bmsd_soc_ratio{{{I}}} - bmsd_soc_uncertainty_ratio{{{I}}}", "-1σ"),
                Q(f"bmsd_soc_average_ratio{{{I}}}", "mean of cells"),
            ), 12, 8, "percentunit"),
            P("SOH", "stat", (
                Q(f"bmsd_soh_capacity_ratio{{{I}}}", "capacity", True),
                Q(f"bmsd_soh_resistance_ratio{{{I}}}", "resistance growth", True),
            ), 6, 4),
            P("Capacity", "stat", (
                Q(f"bmsd_capacity_coulombs{{{I}}} / 3600", "Ah", True),
            ), 6, 4, "amph"),
            P("Cycles and throughput", "stat", (
                Q(f"bmsd_equivalent_full_cycles{{{I}}}", "equivalent full cycles", True),
                Q(f"bmsd_charge_energy_joules_total{{{I}}} / 3.6e6", "charged kWh", True),
                Q(f"bmsd_discharge_energy_joules_total{{{I}}} / 3.6e6", "discharged kWh", True),
            ), 12, 4),
            P("Cell SOC spread", "timeseries", (
                Q(f"min(bmsd_cell_soc_ratio{{{S}}})", "lowest cell"),
                Q(f"max(bmsd_cell_soc_ratio{{{S}}})", "highest cell"),
            ), 12, 8, "percentunit"),
            P("Weakest cells (capacity, Ah)", "bargauge", (
                Q(f"bottomk(8, bmsd_cell_capacity_coulombs{{{S}}} / 3600)",
                  "s{{string}} m{{module}} c{{cell}}", True),
            ), 6, 8, "amph"),
            P("Highest resistance cells", "bargauge", (
                Q(f"topk(8, bmsd_cell_resistance_ohms{{{S}}})",
                  "s{{string}} m{{module}} c{{cell}}", True),
            ), 6, 8, "ohm"),
            P("Current sensor offset", "timeseries", (
                Q(f"bmsd_current_sensor_offset_amperes{{{I}}}", "offset"),
            ), 12, 6, "amp"),
            P("Energy per hour", "timeseries", (
                Q(f"rate(bmsd_charge_energy_joules_total{{{I}}}[{RATE}])", "charging"),
                Q(f"rate(bmsd_discharge_energy_joules_total{{{I}}}[{RATE}])", "discharging"),
            ), 12, 6, "watt"),
        ),
    ),
    (
        "Faults",
        (
            P("Fault timeline", "state-timeline", (
                Q(f"max by (fault) (bmsd_fault_active{{{I}}})", "{{fault}}"),
            ), 16, 10, defaults={"mappings": [{"type": "value", "options": {
                "0": {"text": "ok", "color": "transparent"},
                "1": {"text": "active", "color": "red"}}}]},
              description="Every fault of the table; red while any level is active"),
            P("Latched faults", "stat", (
                Q(f"sum(bmsd_fault_latched{{{I}}})", "latched", True),
            ), 4, 5, options={"colorMode": "background"},
              defaults={"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
            P("Active fault levels", "stat", (
                Q(f"sum(bmsd_fault_active{{{I}}})", "active", True),
            ), 4, 5, options={"colorMode": "background"},
              defaults={"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "orange", "value": 1}]}}),
            P("Fault events in range", "table", (
                Q(f"sum by (fault, level, event) (increase(bmsd_fault_events_total{{{I}}}"
                  "[$__range])) >= 0", "", True),
            ), 8, 5),
        ),
    ),
    (
        "Communication",
        (
            P("CAN frames per second", "timeseries", (
                Q(f"rate(bmsd_can_frames_received_total{{{I}}}[{RATE}])", "{{bus}} received"),
                Q(f"rate(bmsd_can_frames_sent_total{{{I}}}[{RATE}])", "{{bus}} sent"),
            ), 8, 8, "cps"),
            P("CAN errors per second", "timeseries", (
                Q(f"rate(bmsd_can_error_frames_total{{{I}}}[{RATE}])", "{{bus}} error frames"),
                Q(f"rate(bmsd_can_decode_errors_total{{{I}}}[{RATE}])", "{{bus}} undecodable"),
                Q(f"rate(bmsd_can_unknown_frames_total{{{I}}}[{RATE}])", "{{bus}} unknown id"),
                Q(f"rate(bmsd_can_send_errors_total{{{I}}}[{RATE}])", "{{bus}} send errors"),
                Q(f"increase(bmsd_can_bus_errors_total{{{I}}}[{RATE}])", "{{bus}} driver errors"),
            ), 8, 8, "cps"),
            P("Frames by message", "timeseries", (
                Q(f"rate(bmsd_can_message_frames_total{{{I}}}[{RATE}])", "{{bus}} {{message}}"),
            ), 8, 8, "cps"),
            P("Module data age", "timeseries", (
                Q(f"bmsd_module_data_age_seconds{{{S}}}", "s{{string}} m{{module}}"),
                Q(f"bmsd_current_sensor_data_age_seconds{{{I}}}", "current sensor"),
                Q(f"bmsd_contactor_feedback_age_seconds{{{I}}}", "switch box"),
            ), 12, 8, "s"),
            P("CAN receivers", "stat", (
                Q(f"bmsd_can_receiver_up{{{I}}}", "{{bus}}", True),
            ), 6, 8, defaults={"mappings": [{"type": "value", "options": {
                "0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}]},
              options={"colorMode": "background"}),
            P("Module error flags", "stat", (
                Q(f"bmsd_module_error_flags{{{S}}}", "s{{string}} m{{module}}", True),
            ), 6, 8, options={"colorMode": "background"},
              defaults={"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
        ),
    ),
    (
        "Balancing",
        (
            P("Balancing allowed", "stat", (Q(f"bmsd_balancing_enabled{{{I}}}", "", True),), 4, 4,
              defaults={"mappings": [{"type": "value", "options": {
                  "0": {"text": "off", "color": "orange"},
                  "1": {"text": "on", "color": "green"}}}]},
              options={"colorMode": "background"},
              description="Balancing allowed by the configuration and the operator"),
            P("Bleeding", "stat", (Q(f"bmsd_balancing_active{{{I}}}", "", True),), 4, 4,
              defaults={"mappings": [{"type": "value", "options": {
                  "0": {"text": "idle", "color": "blue"},
                  "1": {"text": "bleeding", "color": "green"}}}]},
              options={"colorMode": "background"}),
            P("Cells bleeding", "stat", (
                Q(f"bmsd_balancing_cells_bleeding{{{I}}}", "cells", True),
            ), 4, 4),
            P("Feedback mismatch", "stat", (
                Q(f"bmsd_balancing_feedback_mismatch_modules{{{I}}}", "modules", True),
            ), 4, 4, options={"colorMode": "background"},
              description="Modules whose reported bleeding differs from the command",
              defaults={"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
            P("Charge bled (total)", "stat", (
                Q(f"sum(bmsd_cell_bled_coulombs_total{{{S}}}) / 3600", "Ah", True),
            ), 8, 4, "amph", description="Since the daemon started"),
            P("Cells bleeding per module", "timeseries", (
                Q(f"sum by (string, module) (bmsd_cell_bleeding{{{S}}})",
                  "s{{string}} m{{module}}"),
            ), 8, 8, options={"legend": {"displayMode": "list", "placement": "bottom"}}),
            P("Bleed current per module", "timeseries", (
                Q(f"sum by (string, module) (rate(bmsd_cell_bled_coulombs_total{{{S}}}[{RATE}]))",
                  "s{{string}} m{{module}}"),
            ), 8, 8, "amp", description="Charge bled per second, summed over the module's cells"),
            P("Charge bled per module", "timeseries", (
                Q(f"sum by (string, module) (bmsd_cell_bled_coulombs_total{{{S}}}) / 3600",
                  "s{{string}} m{{module}}"),
            ), 8, 8, "amph", description="Since the daemon started"),
            P("Most bled cells", "bargauge", (
                Q(f"topk(8, bmsd_cell_bled_coulombs_total{{{S}}} / 3600)",
                  "s{{string}} m{{module}} c{{cell}}", True),
            ), 8, 8, "amph"),
            P("Bleeding and feedback over time", "timeseries", (
                Q(f"bmsd_balancing_cells_bleeding{{{I}}}", "cells bleeding"),
                Q(f"bmsd_balancing_feedback_mismatch_modules{{{I}}}", "modules mismatching"),
            ), 16, 8, description="A mismatch: a slave does not bleed as commanded (or bleeds "
              "uncommanded)", defaults={"custom": {"axisSoftMin": 0}}),
        ),
    ),
    (
        "Publishers",
        (
            P("Modbus requests per second", "timeseries", (
                Q(f"sum by (function) (rate(bmsd_modbus_requests_total{{{I}}}[{RATE}]))",
                  "{{function}}"),
            ), 8, 8, "reqps"),
            P("Modbus exception responses per second", "timeseries", (
                Q("sum by (function, exception) "
                  f"(rate(bmsd_modbus_errors_total{{{I}}}[{RATE}]))", "{{function}} {{exception}}"),
            ), 8, 8, "reqps", description="Exception codes: docs/modbus.md"),
            P("Modbus connections", "timeseries", (
                Q(f"bmsd_modbus_connections{{{I}}}", "open"),
                Q(f"increase(bmsd_modbus_connections_refused_total{{{I}}}[{RATE}])", "refused"),
                Q(f"increase(bmsd_modbus_connections_idle_closed_total{{{I}}}[{RATE}])",
                  "closed idle"),
                Q(f"increase(bmsd_modbus_writes_total{{{I}}}[{RATE}])", "writes {{result}}"),
            ), 8, 8),
            P("Inverter keep-alive age", "timeseries", (
                Q(f"bmsd_inverter_keepalive_age_seconds{{{I}}}", "{{inverter}} {{profile}}"),
            ), 8, 8, "s", description="Time since each inverter's last keep-alive or request"),
            P("Inverter frames sent per second", "timeseries", (
                Q("sum by (inverter, frame) "
                  f"(rate(bmsd_inverter_frames_sent_total{{{I}}}[{RATE}]))",
                  "{{inverter}} {{frame}}"),
            ), 8, 8, "cps"),
            P("Inverter requests answered per second", "timeseries", (
                Q(f"rate(bmsd_inverter_requests_total{{{I}}}[{RATE}])", "{{inverter}}"),
            ), 8, 8, "reqps"),
        ),
    ),
    (
        "Daemon health",
        (
            P("Tick duration", "timeseries", (
                Q("histogram_quantile(0.5, sum by (le) (rate("
                  f"bmsd_control_tick_duration_seconds_bucket{{{I}}}[{RATE}])))", "p50"),
                Q("histogram_quantile(0.99, sum by (le) (rate("
                  f"bmsd_control_tick_duration_seconds_bucket{{{I}}}[{RATE}])))", "p99"),
                Q(f"bmsd_control_tick_period_seconds{{{I}}}", "period"),
            ), 8, 8, "s"),
            P("Tick lateness", "timeseries", (
                Q("histogram_quantile(0.99, sum by (le) (rate("
                  f"bmsd_control_tick_lateness_seconds_bucket{{{I}}}[{RATE}])))", "p99"),
                Q(f"rate(bmsd_control_tick_lateness_seconds_sum{{{I}}}[{RATE}]) / "
                  f"rate(bmsd_control_tick_lateness_seconds_count{{{I}}}[{RATE}])", "mean"),
            ), 8, 8, "s"),
            P("Overruns and missed ticks", "timeseries", (
                Q(f"increase(bmsd_control_overruns_total{{{I}}}[{RATE}])", "overruns"),
                Q(f"increase(bmsd_control_missed_ticks_total{{{I}}}[{RATE}])", "missed"),
            ), 8, 8),
            P("State age", "timeseries", (
                Q(f"bmsd_state_age_seconds{{{I}}}", "newest state age"),
                Q(f"scrape_duration_seconds{{{I}}}", "scrape duration"),
            ), 8, 8, "s"),
            P("CPU", "timeseries", (
                Q(f"rate(process_cpu_seconds_total{{{I}}}[{RATE}])", "bmsd"),
            ), 8, 8, "percentunit"),
            P("Memory and files", "timeseries", (
                Q(f"process_resident_memory_bytes{{{I}}}", "resident memory"),
                Q(f"process_open_fds{{{I}}}", "open files"),
            ), 8, 8, "bytes"),
            P("Up and version", "table", (
                Q(f"up{{{I}}}", "", True),
                Q(f"bmsd_build_info{{{I}}}", "", True),
                Q(f"bmsd_pack_info{{{I}}}", "", True),
            ), 24, 6),
        ),
    ),
)
# fmt: on


def _panel(panel: P, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DS,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "refId": chr(ord("A") + index),
            "instant": q.instant,
            "range": not q.instant,
            **({"format": "table"} if panel.kind == "table" else {}),
        }
        for index, q in enumerate(panel.queries)
    ]
    defaults: dict[str, Any] = {"unit": panel.unit} if panel.unit else {}
    defaults.update(panel.defaults)
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    panel_id = 1
    for title, row in ROWS:
        panels.append({
            "id": panel_id, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
        })  # fmt: skip
        panel_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    variables = [
        {
            "name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
        },
        {
            "name": "instance", "label": "bmsd", "type": "query", "datasource": DS,
            "query": {"query": "label_values(bmsd_build_info, instance)", "refId": "instance"},
            "definition": "label_values(bmsd_build_info, instance)",
            "refresh": 2, "sort": 1, "multi": False, "includeAll": False, "current": {},
        },
        {
            "name": "string", "label": "String", "type": "query", "datasource": DS,
            "query": {
                "query": 'label_values(bmsd_string_cell_voltage_sum_volts{instance=~"$instance"}, '
                "string)",
                "refId": "string",
            },
            "definition": 'label_values(bmsd_string_cell_voltage_sum_volts{instance=~"$instance"}, '
            "string)",
            "refresh": 2, "sort": 3, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {},
        },
    ]  # fmt: skip
    return {
        "uid": "bmsd-pack",
        "title": "bmsd battery",
        "description": "bmsd: pack, limits, cells, SOC/SOH, faults, communication, balancing, "
        "publishers, daemon",
        "tags": ["bmsd", "battery", "ess"],
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)
