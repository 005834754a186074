"""Typed loading of TOML data into frozen dataclasses, collecting every error at once.

The configuration, cell files and (later) inverter profiles are all described by frozen
dataclasses. This module walks a dataclass's type hints and turns a parsed TOML mapping into an
instance, reporting unknown keys, wrong types, missing values and failed cross-field checks with
the file, the dotted key path and a reason. It never stops at the first problem.

Supported field types: ``bool``, ``int``, ``float`` (an integer is accepted), ``str``,
``Literal[...]``, ``X | None``, ``tuple[T, ...]``, nested dataclasses, ``dict[str, T]``.

A dataclass may define ``check(self) -> list[tuple[str, str]]`` returning (relative key, reason)
pairs for rules that involve several fields; it only runs when the fields themselves parsed.
Field documentation lives in ``metadata={"doc": ..., "unit": ...}`` (see :func:`doc`) and feeds
the generated configuration reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from bmsd.errors import ConfigError, ConfigIssue

T = TypeVar("T")

_MISSING = object()

# TOML integers are 64-bit (the spec asks parsers to refuse larger ones; tomllib does not).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

# Deepest nesting of tables and arrays accepted in any file or --set value. Real files nest
# under 10 levels; far deeper ones exhaust the interpreter's recursion limit (deepcopy, merge,
# tomllib itself) and would surface as a traceback instead of a clear error.
MAX_NESTING = 32


def doc(text: str, *, unit: str = "", default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with documentation (and an optional default)."""
    metadata = {"doc": text, "unit": unit}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return dataclasses.field(default=default, metadata=metadata)


def doc_factory(text: str, factory: Any, *, unit: str = "") -> Any:
    """A documented dataclass field whose default is built by ``factory``."""
    return dataclasses.field(default_factory=factory, metadata={"doc": text, "unit": unit})


def must_be_positive(obj: object, *keys: str) -> list[tuple[str, str]]:
    """For a ``check()``: (key, reason) for each listed number that is not above zero."""
    return [(key, "must be positive") for key in keys if not getattr(obj, key) > 0]


def must_not_be_negative(obj: object, *keys: str) -> list[tuple[str, str]]:
    """For a ``check()``: (key, reason) for each listed number below zero."""
    return [(key, "must not be negative") for key in keys if getattr(obj, key) < 0]


def must_be_within(
    obj: object, key: str, low: float, high: float, unit: str = "", *, note: str = ""
) -> list[tuple[str, str]]:
    """For a ``check()``: (key, reason) when the number is outside low..high (NaN too)."""
    if low <= getattr(obj, key) <= high:
        return []
    unit_text = f" {unit}" if unit else ""
    return [(key, f"must be between {_number(low)} and {_number(high)}{unit_text}{note}")]


def _number(value: float) -> str:
    """A bound as a reader writes it: 8000000, not 8e+06."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.15g}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _plural(name: str) -> str:
    """The plural of a type's name: its first noun takes the "s" ("arrays of 2 numbers")."""
    for one in ("an array", "a table"):
        if name.startswith(one):
            return one.split(" ")[1] + "s" + name.removeprefix(one)
    return name.removeprefix("a ").removeprefix("an ") + "s"


def type_name(tp: Any, choice: Callable[[Any], str] = json.dumps) -> str:
    """A reader's name for a field type ("a number", "an array of integers", ...).

    ``choice`` writes each choice of a Literal (a TOML string by default).
    """
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        choices = [choice(a) for a in args]
        return "one of " + ", ".join(choices)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return f"{type_name(members[0], choice)}, may be omitted"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "an array of " + _plural(type_name(args[0], choice))
        names = [type_name(a, choice) for a in args]
        if len(set(names)) == 1:
            return f"an array of {len(args)} {_plural(names[0])}"
        return "an array: " + ", ".join(names)
    if origin is dict:
        value = type_name(args[1], choice)
        if value.startswith("one of "):  # "a table of one of "a", "b"s" reads badly
            return f"a table by name, each value {value}"
        return "a table of " + _plural(value) + " by name"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a table"
    raise TypeError(f"no documentation name for type {tp!r}")


def _name_or_value(tp: Any) -> str:
    try:
        return type_name(tp)
    except TypeError:  # a type the reader's names do not cover: the message must still come
        return "a value"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _Parser:
    def __init__(self, source: str, source_of: Callable[[str], str] | None = None) -> None:
        self.source = source
        self.source_of = source_of
        self.issues: list[ConfigIssue] = []

    def error(self, key: str, reason: str) -> object:
        source = self.source if self.source_of is None else self.source_of(key)
        self.issues.append(ConfigIssue(source, key, reason))
        return _MISSING

    def value(self, tp: Any, raw: Any, key: str) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if raw is None:
                return None
            if len(members) == 1:
                return self.value(members[0], raw, key)
            raise TypeError(f"unsupported union {tp}")
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            return self.error(key, f"expected a boolean, got {_describe(raw)}")
        if tp is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                if not _INT_MIN <= raw <= _INT_MAX:
                    return self.error(key, "number out of range")
                return raw
            return self.error(key, f"expected an integer, got {_describe(raw)}")
        if tp is float:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                try:
                    number = float(raw)
                except OverflowError:  # an integer beyond ~1.8e308
                    return self.error(key, "number out of range")
                if number != number or number in (float("inf"), float("-inf")):
                    return self.error(key, "expected a finite number")
                return number
            return self.error(key, f"expected a number, got {_describe(raw)}")
        if tp is str:
            if isinstance(raw, str):
                return raw
            return self.error(key, f"expected a string, got {_describe(raw)}")
        if origin is Literal:
            choices = get_args(tp)
            if raw in choices and type(raw) is type(choices[0]):
                return raw
            return self.error(
                key, f"expected one of {', '.join(repr(c) for c in choices)}, got {raw!r}"
            )
        if origin is tuple:
            args = get_args(tp)
            if not isinstance(raw, list):
                return self.error(key, f"expected an array, got {_describe(raw)}")
            if len(args) == 2 and args[1] is Ellipsis:
                items = [self.value(args[0], item, f"{key}[{i}]") for i, item in enumerate(raw)]
            else:
                if len(raw) != len(args):
                    return self.error(key, f"expected {len(args)} items, got {len(raw)}")
                items = [
                    self.value(arg, item, f"{key}[{i}]")
                    for i, (arg, item) in enumerate(zip(args, raw, strict=True))
                ]
            if any(item is _MISSING for item in items):
                return _MISSING
            return tuple(items)
        if origin is dict:
            key_type, value_type = get_args(tp)
            if key_type is not str:
                raise TypeError("only dict[str, T] is supported")
            if not isinstance(raw, dict):
                return self.error(key, f"expected a table, got {_describe(raw)}")
            result = {
                name: self.value(value_type, item, _join(key, name)) for name, item in raw.items()
            }
            if any(item is _MISSING for item in result.values()):
                return _MISSING
            return result
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if not isinstance(raw, dict):
                return self.error(key, f"expected a table, got {_describe(raw)}")
            return self.dataclass(tp, raw, key)
        raise TypeError(f"unsupported field type {tp!r} at {key}")

    def dataclass(self, cls: type[T], raw: Mapping[str, Any], prefix: str) -> Any:
        hints = get_type_hints(cls)
        fields = {
            f.name: f
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.init and not f.metadata.get("internal")
        }
        for name in raw:
            if name not in fields:
                known = ", ".join(sorted(fields)) or "none"
                self.error(_join(prefix, name), f"unknown key (known keys here: {known})")
        kwargs: dict[str, Any] = {}
        failed = False
        for name, field in fields.items():
            key = _join(prefix, name)
            if name in raw:
                parsed = self.value(hints[name], raw[name], key)
            elif (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            ):
                continue
            else:
                parsed = self.error(key, f"missing required value ({_name_or_value(hints[name])})")
            if parsed is _MISSING:
                failed = True
            else:
                kwargs[name] = parsed
        if failed:
            return _MISSING
        try:
            instance = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            return self.error(prefix, str(exc))
        check = getattr(instance, "check", None)
        if callable(check):
            for rel_key, reason in check():
                self.error(_join(prefix, rel_key), reason)
        return instance


def parse(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    source: str,
    prefix: str = "",
    source_of: Callable[[str], str] | None = None,
) -> T:
    """Build ``cls`` from ``data``; raise :class:`ConfigError` listing every problem.

    ``source_of`` maps a dotted key to the file it came from, for data merged from several
    files; by default every issue names ``source``.
    """
    parser = _Parser(source, source_of)
    result = parser.dataclass(cls, data, prefix)
    if parser.issues or result is _MISSING:
        raise ConfigError(parser.issues or [ConfigIssue(source, prefix, "invalid")])
    return typing.cast(T, result)


def nesting_depth_exceeds(data: Any, limit: int = MAX_NESTING) -> bool:
    """Whether tables and arrays in ``data`` nest deeper than ``limit`` (iterative: a
    recursive walk would itself hit the recursion limit it guards against)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep(source: str) -> ConfigError:
    return ConfigError(
        [ConfigIssue(source, "", f"tables or arrays nested too deeply (over {MAX_NESTING})")]
    )


def check_nesting(data: Any, source: str) -> None:
    """Raise :class:`ConfigError` if ``data`` nests deeper than :data:`MAX_NESTING`."""
    if nesting_depth_exceeds(data):
        raise _too_deep(source)


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a data file (missing, not a regular file, a name the
    OS refuses), or None. A FIFO or device is refused: opening it could block for ever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "file not found"
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, EACCES, an embedded NUL
        return f"cannot read: {getattr(exc, 'strerror', None) or exc}"
    if not stat.S_ISREG(mode):
        return "cannot read: not a regular file"
    return None


# Linux limits (NAME_MAX, PATH_MAX): a longer name fails every system call with ENAMETOOLONG.
_NAME_MAX_BYTES = 255
_PATH_MAX_BYTES = 4095


def path_name_problem(path: Path) -> str | None:
    """Why the OS would refuse ``path`` as a name whatever exists (too long, a NUL byte), or
    None; for paths bmsd creates, which :func:`file_problem` cannot check beforehand."""
    text = str(path)
    if "\x00" in text:
        return "contains a NUL character"
    encoded = os.fsencode(text)
    if len(encoded) > _PATH_MAX_BYTES:
        return f"path longer than {_PATH_MAX_BYTES} bytes ({len(encoded)})"
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > _NAME_MAX_BYTES:
        return f"a path component is longer than {_NAME_MAX_BYTES} bytes ({longest})"
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, translating I/O and syntax errors into :class:`ConfigError`."""
    problem = file_problem(path)
    if problem is not None:
        raise ConfigError([ConfigIssue(str(path), "", problem)])
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"TOML syntax error: {exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(str(path), "", "not UTF-8 text")]) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise _too_deep(str(path)) from None
    check_nesting(data, str(path))
    return data


def load_toml(cls: type[T], path: Path) -> T:
    """Read and parse a TOML file into ``cls``."""
    return parse(cls, read_toml(path), source=str(path))


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in, table by table."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def has_dotted(data: Mapping[str, Any], dotted_key: str) -> bool:
    """Whether ``a.b[2].c`` (list indices ignored) names something present in ``data``."""
    node: Any = data
    for part in dotted_key.split("."):
        name = part.split("[", 1)[0]
        if not isinstance(node, Mapping) or name not in node:
            return False
        node = node[name]
    return True


def set_dotted(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in nested dicts, creating tables on the way (for ``--set``)."""
    parts = dotted_key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError([ConfigIssue("--set", dotted_key, f"{part} is not a table")])
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` where value is a TOML value (bare words are strings)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([ConfigIssue("--set", text, "expected section.key=value")])
    if key.count(".") >= MAX_NESTING:
        raise _too_deep("--set")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        raise _too_deep("--set") from None
    check_nesting(value, "--set")
    return key, value
