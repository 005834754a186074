"""The generated configuration reference is current and documents every key of the config.

Key paths are found here by an independent walk of the config dataclasses (not the generator's
own), so a key the generator skips is caught.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from bmsd.config import Config
from bmsd.docs_gen import render_configuration_reference, type_name

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_configuration_reference()


def walk(cls: type[Any], prefix: str = "", toml: str = "") -> list[tuple[str, str | None]]:
    """Every key below ``cls`` as errors name it (``can.NAME.bitrate``, ``sim.faults[N].kind``),
    with the TOML header of the table it holds (``[can.NAME]``), or None for a plain value."""
    found: list[tuple[str, str | None]] = []
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name == "base_dir":  # set by the loader, not a key of the file
            continue
        path = f"{prefix}.{field.name}" if prefix else field.name
        name = f"{toml}.{field.name}" if toml else field.name
        tp = hints[field.name]
        if get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = [a for a in get_args(tp) if a is not type(None)]
        args = get_args(tp)
        if dataclasses.is_dataclass(tp):
            found += [(path, f"[{name}]"), *walk(typing.cast(type[Any], tp), path, name)]
        elif get_origin(tp) is dict and dataclasses.is_dataclass(args[1]):
            table = f"{name}.NAME"
            found += [(path, f"[{table}]"), *walk(args[1], f"{path}.NAME", table)]
        elif get_origin(tp) is tuple and dataclasses.is_dataclass(args[0]):
            found += [(path, f"[[{name}]]"), *walk(args[0], f"{path}[N]", name)]
        else:
            found.append((path, None))
    return found


def row(rendered: str, path: str) -> str | None:
    return next((line for line in rendered.splitlines() if line.startswith(f"| `{path}` |")), None)


def test_reference_is_up_to_date(rendered: str) -> None:
    current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert current == rendered, (
        "docs/configuration.md is out of date; run `python -m bmsd.docs_gen`"
    )


def test_rendering_is_deterministic(rendered: str) -> None:
    assert render_configuration_reference() == rendered


def test_every_key_and_table_is_documented(rendered: str) -> None:
    found = walk(Config)
    paths = {path for path, _ in found}
    assert {"pack.chemistry", "can.NAME.bitrate", "sim.faults[N].kind"} <= paths
    missing_rows = [path for path, header in found if header is None and not row(rendered, path)]
    assert not missing_rows, f"keys missing from the reference: {missing_rows}"
    sections = [header for _, header in found if header is not None]
    assert "[protection.faults.NAME.fatal]" in sections
    missing = [header for header in sections if f"### `{header}`" not in rendered]
    assert not missing, f"tables missing from the reference: {missing}"
    for path, header in found:  # a nested table also has a row in its parent's section
        if header is not None and "." in path.replace(".NAME", ""):
            assert row(rendered, path), path
    assert "base_dir" not in rendered


def test_every_key_has_type_default_and_description(rendered: str) -> None:
    for path, _ in walk(Config):
        line = row(rendered, path)
        if line is None:  # a top-level table: documented by its section
            continue
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == 5, line
        _, type_name, _, default, description = cells
        assert type_name and default and description, line


def test_example_error_is_real_and_complete(rendered: str) -> None:
    assert "bmsd: invalid configuration (3 problem(s)):" in rendered
    for key in ("pack.cell_count", "control.tick_s", "protection.faults.cell_voltage_high.info"):
        assert f"  bmsd.toml: {key}" in rendered
    assert "$ echo $?\n2\n" in rendered


def test_generated_regions_of_the_safety_document_are_current() -> None:
    from bmsd.docs_tables import REGIONS, SAFETY_DOC, render_regions

    text = SAFETY_DOC.read_text(encoding="utf-8")
    for name in REGIONS:
        assert f"<!-- BEGIN GENERATED: {name} -->" in text, f"region {name} missing"
    assert render_regions(text) == text, "docs/safety.md is stale: run python -m bmsd.docs_gen"


def test_every_shipped_fault_is_documented() -> None:
    import tomllib

    from bmsd.docs_tables import PROTECTION_DIR, SAFETY_DOC

    text = SAFETY_DOC.read_text(encoding="utf-8")
    for table in PROTECTION_DIR.glob("*.toml"):
        with table.open("rb") as handle:
            for fault_id in tomllib.load(handle):
                assert f"`{fault_id}`" in text, f"{fault_id} of {table.name} not in docs/safety.md"


@pytest.mark.parametrize(
    ("tp", "name"),
    [
        (tuple[tuple[float, float], ...], "an array of arrays of 2 numbers"),
        (tuple[int, ...], "an array of integers"),
        (tuple[str, str], "an array of 2 strings"),
        (dict[str, tuple[float, ...]], "a table of arrays of numbers by name"),
        (dict[str, Literal["a", "b"]], 'a table by name, each value one of `"a"`, `"b"`'),
    ],
)
def test_type_names_read_as_english(tp: Any, name: str) -> None:
    assert type_name(tp) == name
