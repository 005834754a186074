"""Error types of bmsd: one root, and configuration errors that name file, key and reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class BmsdError(Exception):
    """Root of every error bmsd raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration-like file: where it is and why it is wrong."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '<top level>'}: {self.reason}"


class ConfigError(BmsdError):
    """A file failed validation; carries every issue found, not only the first."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class CanCodecError(BmsdError):
    """A CAN frame could not be encoded or decoded with the loaded DBC files."""
