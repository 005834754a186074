"""cli.main reports bmsd's own errors clearly, also when a TaskGroup wraps them in a group."""

from __future__ import annotations

import argparse

import pytest

from bmsd import cli
from bmsd.errors import BmsdError, ConfigError, ConfigIssue

ISSUE = ConfigIssue("load.csv", "line 3", "time_s 1.0 is not after the previous 2.0")


def run_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> int:
    def handler(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "check-config", handler)
    return cli.main(["check-config", "unused.toml"])


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError([ISSUE]),
        ExceptionGroup("unhandled errors in a TaskGroup", [ConfigError([ISSUE])]),
        ExceptionGroup("outer", [ExceptionGroup("inner", [ConfigError([ISSUE])])]),
        ExceptionGroup("two", [ConfigError([ISSUE]), BmsdError("bus gone")]),
    ],
    ids=["plain", "group", "nested-group", "with-another-bmsd-error"],
)
def test_a_config_error_exits_2_with_its_issues(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException
) -> None:
    assert run_raising(monkeypatch, exc) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"  {ISSUE}" in err
    assert "Traceback" not in err and "ExceptionGroup" not in err


def test_a_grouped_bmsd_error_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    group = ExceptionGroup("tasks", [BmsdError("bus gone")])
    assert run_raising(monkeypatch, group) == cli.EXIT_FAILURE
    assert capsys.readouterr().err == "bmsd: bus gone\n"


def test_a_group_with_a_foreign_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    group = ExceptionGroup("tasks", [ConfigError([ISSUE]), ValueError("a bug")])
    with pytest.raises(ExceptionGroup):  # a bug is not dressed up as a config problem
        run_raising(monkeypatch, group)
