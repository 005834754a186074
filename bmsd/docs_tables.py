"""Generated regions of hand-written documents: tables rendered from the code and data files.

A document marks a region with ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->``; :func:`update_regions` rewrites what lies between from the
renderers below, and tests/unit/test_docs.py fails when a region is stale. ``python -m
bmsd.docs_gen`` refreshes every generated document.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

from bmsd.model.faults import FaultLevel
from bmsd.protection.quantities import QUANTITIES, QUANTITY_BY_NAME, THRESHOLD_RANGES
from bmsd.protection.table import FaultSpec
from bmsd.schema import parse

ROOT = Path(__file__).resolve().parents[1]
PROTECTION_DIR = ROOT / "etc" / "protection"
SAFETY_DOC = ROOT / "docs" / "safety.md"


def render_quantities() -> str:
    lines = [
        "| Quantity | Trips when | Unit | Thresholds allowed | Meaning |",
        "|---|---|---|---|---|",
    ]
    for quantity in QUANTITIES:
        relation = "above" if quantity.direction == "above" else "below"
        low, high = THRESHOLD_RANGES[quantity.name]
        lines.append(
            f"| `{quantity.name}` | {relation} | {quantity.unit or '–'} | {low:g} to {high:g} "
            f"| {quantity.description} |"
        )
    return "\n".join(lines)


def _level_cell(spec: FaultSpec, level: FaultLevel) -> str:
    found = dict(spec.levels()).get(level)
    if found is None:
        return "–"
    parts = [f"{found.threshold:g}"]
    if found.hysteresis:
        parts.append(f"±{found.hysteresis:g}")
    timing = f"{found.debounce_samples}×"
    if found.set_delay_s:
        timing += f"+{found.set_delay_s:g}s"
    if found.clear_delay_s:
        timing += f", clear {found.clear_delay_s:g}s"
    if found.latch or level is FaultLevel.FATAL:
        timing += ", latch"
    return f"{' '.join(parts)} ({timing})"


def render_fault_table(path: Path) -> str:
    with path.open("rb") as handle:
        raw = tomllib.load(handle)
    faults = {
        fault_id: parse(FaultSpec, data, source=str(path), prefix=fault_id)
        for fault_id, data in raw.items()
    }
    lines = [
        "| Fault | Quantity | Blocks | Info | Warning | Fatal |",
        "|---|---|---|---|---|---|",
    ]
    for fault_id, spec in faults.items():
        unit = QUANTITY_BY_NAME[spec.quantity].unit
        unit_text = f" [{unit}]" if unit else ""
        lines.append(
            f"| `{fault_id}` | `{spec.quantity}`{unit_text} | {spec.blocks} | "
            + " | ".join(_level_cell(spec, level) for level in FaultLevel)
            + " |"
        )
    return "\n".join(lines)


REGIONS: dict[str, Callable[[], str]] = {
    "quantities": render_quantities,
    "faults-diagnostics": lambda: render_fault_table(PROTECTION_DIR / "diagnostics.toml"),
    "faults-lfp": lambda: render_fault_table(PROTECTION_DIR / "lfp.toml"),
    "faults-nmc": lambda: render_fault_table(PROTECTION_DIR / "nmc.toml"),
}

_REGION = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def render_regions(text: str) -> str:
    """``text`` with every known generated region re-rendered."""

    def replace(match: re.Match[str]) -> str:
        render = REGIONS.get(match.group("name"))
        if render is None:
            return match.group(0)
        return f"{match.group(1)}{render()}\n{match.group(4)}"

    return _REGION.sub(replace, text)


def update_regions(path: Path = SAFETY_DOC) -> bool:
    """Rewrite the generated regions of ``path``; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    rendered = render_regions(text)
    if rendered != text:
        path.write_text(rendered, encoding="utf-8")
        return True
    return False
