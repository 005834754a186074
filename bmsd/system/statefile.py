"""Persistent state files: atomic writes, checksums, and loud but safe recovery.

Every piece of state that must survive a restart or a power cut (latched faults, SOC and SOH
estimates, counters) is one JSON document in the state directory, written atomically: a
temporary file in the same directory, fsync, rename over the old file, fsync of the directory.
A reader therefore sees the old file or the new one, never half of one.

Each file carries a format name, a version, the wall-clock time it was written and a SHA-256
of its payload. Loading never raises for a bad file: a missing, truncated, zeroed, corrupt,
foreign, too new or too old file gives ``None`` and a reason, which the caller logs before
starting from a safe default. The bad file is kept aside (``NAME.bad``) for the post-mortem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What loading a state file gave: the payload, or None and why."""

    payload: dict[str, Any] | None
    problem: str
    age_s: float | None

    @property
    def ok(self) -> bool:
        return self.payload is not None


def _digest(payload_text: str) -> str:
    # surrogatepass: JSON may carry a lone surrogate ("\\ud800"), which strict UTF-8 refuses;
    # such a payload must get a checksum (and then fail a later check), not raise.
    return hashlib.sha256(payload_text.encode("utf-8", "surrogatepass")).hexdigest()


def write_state(path: Path, kind: str, version: int, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically as state file ``path`` of format ``kind``/``version``."""
    payload_text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    document = {
        "kind": kind,
        "version": version,
        "written_at": time.time(),
        "sha256": _digest(payload_text),
        "payload": payload_text,
    }
    data = json.dumps(document).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path, os.getpid())
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_state(
    path: Path,
    kind: str,
    version: int,
    *,
    max_age_s: float | None = None,
    keep_bad_in_place: bool = False,
) -> LoadResult:
    """Load a state file; on any problem return no payload and the reason (never raise).

    ``keep_bad_in_place``: a bad file is copied aside, not moved, so that it is found bad
    again by every load until a good write replaces it (for the latched faults: a restart
    before that write must not find "no file" and start without them).
    """
    _remove_leftovers(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LoadResult(None, "no state file yet", None)
    except OSError as exc:
        return LoadResult(None, f"cannot read: {exc.strerror}", None)
    try:
        problem, document, payload = _parse(data, kind, version)
    except (RecursionError, MemoryError):
        # A payload nested deeper than the parser's stack (a checksum does not make it sane).
        problem, document, payload = "corrupt (nested too deeply)", None, None
    if document is None or payload is None:
        set_aside(path, copy=keep_bad_in_place)
        return LoadResult(None, problem, None)
    age_s = max(0.0, time.time() - float(document["written_at"]))
    if max_age_s is not None and age_s > max_age_s:
        return LoadResult(
            None, f"too old ({age_s / 3600:.1f} h, limit {max_age_s / 3600:.1f} h)", age_s
        )
    return LoadResult(payload, "", age_s)


Parsed = tuple[str, dict[str, Any] | None, dict[str, Any] | None]


def _parse(data: bytes, kind: str, version: int) -> Parsed:
    """The problem ("" when none), the envelope and the payload (both None on a problem)."""
    if not data:
        return "empty (truncated by a power cut?)", None, None
    if not data.strip(b"\x00"):
        return "zeroed (a power cut during a write?)", None, None
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError:  # bad UTF-8, bad JSON, an int past the int-digits limit
        return "corrupt (not valid JSON; truncated?)", None, None
    if not isinstance(document, dict) or not {
        "kind",
        "version",
        "sha256",
        "payload",
        "written_at",
    } <= set(document):
        return "corrupt (fields missing)", None, None
    if document["kind"] != kind:
        return f"not a {kind} file (it is {_shown(document['kind'])})", None, None
    if (
        not isinstance(document["payload"], str)
        or _digest(document["payload"]) != document["sha256"]
    ):
        return "corrupt (checksum mismatch)", None, None
    if document["version"] != version:
        return f"format version {_shown(document['version'])} is not {version}", None, None
    if not _finite_time(document["written_at"]):
        return "corrupt (bad time stamp)", None, None
    try:
        payload = json.loads(document["payload"])
    except ValueError:
        return "corrupt (payload is not JSON)", None, None
    if not isinstance(payload, dict):
        return "corrupt (payload is not an object)", None, None
    try:
        # A lone surrogate ("\\ud800") is valid JSON but not text: it would fail later, when
        # a key is logged or the state written back.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "corrupt (payload text is not valid Unicode)", None, None
    return "", document, payload


def _finite_time(value: object) -> bool:
    """A number usable as a wall-clock time (a 400-digit int overflows float())."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _shown(value: object) -> str:
    """A field from a bad file, short enough for one log line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _temporary_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of writes that a crash or power cut interrupted.

    The file they were meant to replace is intact (the rename never happened); only a writer
    that is still alive may own one, and a state directory has one daemon.
    """
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        pid_text = leftover.name.removeprefix(f".{path.name}.").removesuffix(".tmp")
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            leftover.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_aside(path: Path, *, copy: bool = False) -> None:
    """Keep a bad file for inspection; it will be replaced by the next good write.

    ``copy``: leave the bad file where it is too (see ``read_state``'s keep_bad_in_place).
    """
    aside = path.with_name(path.name + ".bad")
    with contextlib.suppress(OSError):
        if copy:
            shutil.copyfile(path, aside)
        else:
            os.replace(path, aside)
