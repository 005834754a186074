"""Generate the configuration reference, docs/configuration.md, from the config dataclasses.

The reference is derived, never written by hand: one section per TOML table found by walking
:class:`bmsd.config.Config` with :func:`dataclasses.fields`, one row per key with its type, unit,
default and description taken from the field's ``metadata`` (see :func:`bmsd.schema.doc`), and
the table's class docstring as its introduction. The example of a rejected config is produced by
running ``bmsd check-config`` on a broken copy of etc/sim.toml while the document is built.

``python -m bmsd.docs_gen`` rewrites the file; tests/unit/test_docs.py fails when it is stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import io
import json
import re
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from bmsd import cli
from bmsd.config import Config
from bmsd.schema import type_name as schema_type_name

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
MODBUS_OUTPUT = ROOT / "docs" / "modbus.md"
SIM_EXAMPLE = ROOT / "etc" / "sim.toml"

INTERNAL_FIELDS = frozenset({"base_dir"})
"""Fields of the config dataclasses that are not keys of the file."""

# Edits that break a copy of etc/sim.toml in three independent ways, for the example.
_BROKEN_EDITS = (
    (r"^\[pack\]\n", "[pack]\ncell_count = 64\n"),
    (r"^tick_s = [0-9.]+(.*)$", r'tick_s = "fast"\1'),
    (r"\Z", "\n[protection.faults.cell_voltage_high.info]\nthreshold = 2.85\n"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One row of the reference."""

    path: str
    type: str
    unit: str
    default: str
    doc: str


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    """One TOML table of the config file and the dataclass that describes it."""

    toml_path: str
    """The table's name in TOML: ``pack``, ``can.NAME``, ``sim.faults``."""
    path: str
    """The dotted key path errors use for it: ``pack``, ``can.NAME``, ``sim.faults[N]``."""
    cls: type[Any]
    doc: str
    """Documentation of the field that holds the table."""
    unit: str
    """Unit of the holding field, inherited by keys that name none (the limit levels)."""
    required: bool
    kind: Literal["table", "named", "array"]

    @property
    def header(self) -> str:
        """How the table is written in TOML: ``[pack]``, ``[can.NAME]``, ``[[sim.faults]]``."""
        return f"[[{self.toml_path}]]" if self.kind == "array" else f"[{self.toml_path}]"


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _table_of(tp: Any) -> tuple[type[Any], Literal["table", "named", "array"]] | None:
    """The dataclass a field's type makes a table of, and how it is written; None for values."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _table_of(members[0]) if len(members) == 1 else None
    if _is_dataclass_type(tp):
        return tp, "table"
    if origin is dict and _is_dataclass_type(args[1]):
        return args[1], "named"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and _is_dataclass_type(args[0]):
        return args[0], "array"
    return None


def _fields(cls: type[Any]) -> Iterator[tuple[dataclasses.Field[Any], Any]]:
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in INTERNAL_FIELDS:
            continue
        if not field.metadata.get("doc"):
            raise ValueError(f"{cls.__name__}.{field.name} has no documentation (bmsd.schema.doc)")
        yield field, hints[field.name]


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _child_table(field: dataclasses.Field[Any], tp: Any, parent: Table | None) -> Table | None:
    """The table a field of ``parent`` (None: the file itself) holds, or None for a value."""
    target = _table_of(tp)
    if target is None:
        return None
    table_cls, kind = target
    toml_path = f"{parent.toml_path}.{field.name}" if parent else field.name
    path = f"{parent.path}.{field.name}" if parent else field.name
    if kind == "named":
        toml_path += ".NAME"
        path += ".NAME"
    elif kind == "array":
        path += "[N]"
    return Table(
        toml_path=toml_path,
        path=path,
        cls=table_cls,
        doc=str(field.metadata["doc"]),
        unit=str(field.metadata.get("unit", "")) or (parent.unit if parent else ""),
        required=_required(field),
        kind=kind,
    )


def walk_tables(cls: type[Any] = Config, parent: Table | None = None) -> list[Table]:
    """Every table below ``cls`` (the whole file by default), depth first in field order."""
    tables: list[Table] = []
    for field, tp in _fields(cls):
        child = _child_table(field, tp, parent)
        if child is not None:
            tables += [child, *walk_tables(child.cls, child)]
    return tables


def type_name(tp: Any) -> str:
    """A reader's name for a field type, its choices as TOML code ("one of `"LFP"`, ...")."""
    return schema_type_name(tp, choice=lambda value: f"`{json.dumps(value)}`")


def toml_value(value: Any) -> str:
    """A default value written as it would be in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        items = ", ".join(f"{json.dumps(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + items + "}"
    raise TypeError(f"no TOML spelling for default {value!r}")


def _default(field: dataclasses.Field[Any], tp: Any) -> str:
    if _required(field):
        return "required"
    table = _table_of(tp)
    if table is not None:
        return "optional, see below"
    if field.default is not dataclasses.MISSING:
        value: Any = field.default
    else:
        value = typing.cast(Callable[[], Any], field.default_factory)()
    if value is None:
        return "unset (omit the key)"
    return f"`{toml_value(value)}`"


def table_keys(table: Table) -> list[Key]:
    """The rows of one table."""
    keys: list[Key] = []
    for field, tp in _fields(table.cls):
        child = _child_table(field, tp, table)
        if child is None:
            kind = type_name(tp)
        else:
            kind = {
                "table": "a table",
                "named": "tables by name",
                "array": "an array of tables",
            }[child.kind] + f", see `{child.header}`"
        keys.append(
            Key(
                path=f"{table.path}.{field.name}",
                type=kind,
                unit=str(field.metadata.get("unit", "")) or table.unit,
                default=_default(field, tp),
                doc=str(field.metadata["doc"]),
            )
        )
    return keys


def all_key_paths() -> list[str]:
    """Every key path the reference documents, as errors name them (``can.NAME.bitrate``)."""
    return [key.path for table in walk_tables() for key in table_keys(table)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_intro(table: Table) -> str:
    purpose = inspect.cleandoc(table.cls.__doc__ or "").replace("``", "`")
    if table.doc.lower() not in purpose.lower():
        purpose = f"{table.doc}{'' if table.doc.endswith('.') else '.'} {purpose}"
    lines = [purpose]
    if table.kind == "named":
        lines.append(f"Write one `{table.header}` table per entry; `NAME` is the entry's name.")
    elif table.kind == "array":
        lines.append(
            f"Repeat `{table.header}` once per entry. Errors name the entry by its 0-based "
            f"position, e.g. `{table.path.replace('[N]', '[0]')}`."
        )
    else:
        lines.append(f"This table is {'required' if table.required else 'optional'}.")
    return "\n\n".join(lines)


def _section(table: Table) -> str:
    rows = [
        "| key | type | unit | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in table_keys(table):
        rows.append(
            f"| `{key.path}` | {_cell(key.type)} | {_cell(key.unit)} | {_cell(key.default)} "
            f"| {_cell(key.doc)} |"
        )
    return f"### `{table.header}`\n\n{_table_intro(table)}\n\n" + "\n".join(rows) + "\n"


def _break(text: str) -> str:
    for pattern, replacement in _BROKEN_EDITS:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(f"example edit {pattern!r} matched {count} times in etc/sim.toml")
    return text


def rejected_example() -> tuple[str, str]:
    """A diff that breaks etc/sim.toml, and what ``bmsd check-config`` says about the result.

    The command really runs (in-process) on a temporary copy named bmsd.toml; the temporary
    directory is removed from the output so it reads as if run where the file is.
    """
    original = SIM_EXAMPLE.read_text(encoding="utf-8")
    broken = _break(original)
    diff = "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            broken.splitlines(keepends=True),
            fromfile="etc/sim.toml",
            tofile="bmsd.toml",
            n=1,
        )
    )
    with tempfile.TemporaryDirectory(prefix="bmsd-docs-") as tmp:
        directory = Path(tmp)
        for name in ("cells", "protocols", "protection", "limits", "inverters"):
            # so that only the three mistakes are reported
            (directory / name).symlink_to(SIM_EXAMPLE.parent / name, target_is_directory=True)
        path = directory / "bmsd.toml"
        path.write_text(broken, encoding="utf-8")
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(["check-config", str(path)])
        output = stderr.getvalue().replace(f"{directory}/", "")
    if code != cli.EXIT_CONFIG or stdout.getvalue():
        raise RuntimeError(
            f"the broken example was not rejected (exit {code}): {stdout.getvalue()}"
        )
    return diff, f"$ bmsd check-config bmsd.toml\n{output}$ echo $?\n{code}\n"


def _intro() -> str:
    diff, output = rejected_example()
    top_level = [t for f, tp in _fields(Config) if (t := _child_table(f, tp, None)) is not None]
    overview = "\n".join(
        f"- `{t.header}`{'' if t.required else ' (optional)'}: {t.doc}" for t in top_level
    )
    return f"""\
# Configuration reference

<!-- Generated by `python -m bmsd.docs_gen` from bmsd/config.py; do not edit by hand. -->

bmsd reads one [TOML](https://toml.io) file, given with `bmsd run --config FILE` (and the other
commands). Two complete examples ship in `etc/`: `etc/sim.toml` runs the daemon on its built-in
simulated pack, `etc/bmsd.toml` is a starting point for a real gateway. Check a file, and see a
one-screen summary of the pack it describes, with `bmsd check-config FILE`.

The file consists of these tables:

{overview}

## Paths

Relative paths in the file (`pack.cell_file`, `acquisition.protocol`, the fault table files
in `protection.defaults`, `sim.load.csv_file`, `state.directory`, a bus's `record` file) are
relative to the directory of the config file, not to the working directory. The cell file, the
protocol file and, when the simulator uses one, the load CSV must exist; they are checked once
the rest of the file is valid.

## The fault table

`protection.faults` is assembled before validation: the files listed in
`protection.defaults` (shipped in `etc/protection/`) are merged in order, then the config
file's own `[protection.faults.NAME]` tables on top, key by key, so an override needs to give
only the keys it changes. A problem in a key that comes from one of those files names that
file.

## Overrides: `--set`

Every command that reads a config accepts `--set section.key=value`, repeatable, for example
`--set control.tick_s=0.05` or `--set 'pack.module_node_ids=[1, 2]'`. The value is a TOML
value; a bare word that is not valid TOML is taken as a string (`--set logging.level=debug`).
Overrides are applied to the file's contents before validation, in order (a later one wins),
and are checked exactly like the file: an unknown key or a wrong type is rejected. They can
add keys and tables the file does not have (`--set can.inverter.interface=virtual`). A
malformed override (no `=`, or a key that steps into a value that is not a table) is reported
against `--set`.

## Validation

Nothing is guessed: a key the reference below does not list is an error (with the keys that
are allowed there), a value of the wrong type is an error (an integer is accepted where a
number is expected, but `true` is not a number and `inf` and `nan` are rejected), and rules
that involve several keys (limit levels in order, node ids unique, the buses that are named
exist) are checked too. Every problem is reported at once, each with the file, the dotted key
path and a reason, and the command exits with status 2. Keys inside a named table are written
`can.NAME.key`; keys of an array of tables are written `sim.faults[N].key`, `N` counting from 0.

For example, this copy of `etc/sim.toml` has an unknown key, a value of the wrong type and an
over-voltage limit below the under-voltage limit:

```diff
{diff}```

```console
{output}```

## Reference

Types are TOML types; a "number" may be written as an integer. A default of "required" means
the key must be given.
"""


def render_configuration_reference() -> str:
    """The whole of docs/configuration.md."""
    sections = [_section(table) for table in walk_tables()]
    return _intro() + "\n" + "\n".join(sections)


def render_modbus_document() -> str:
    """The whole of docs/modbus.md (register tables of bmsd/publish/modbus/)."""
    from bmsd.publish.modbus.reference import render_modbus_reference, render_sunspec

    return render_modbus_reference(render_sunspec())


def main() -> None:
    """Write docs/configuration.md and docs/can-profiles.md, and refresh the generated
    regions of the other documents."""
    from bmsd.docs_tables import SAFETY_DOC, update_regions

    OUTPUT.write_text(render_configuration_reference(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    MODBUS_OUTPUT.write_text(render_modbus_document(), encoding="utf-8")
    print(f"wrote {MODBUS_OUTPUT.relative_to(ROOT)}", file=sys.stderr)

    from bmsd.publish.inverter import docs as inverter_docs

    print(f"wrote {inverter_docs.write().relative_to(ROOT)}", file=sys.stderr)
    for document in (SAFETY_DOC,):
        if update_regions(document):
            print(f"updated {document.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
