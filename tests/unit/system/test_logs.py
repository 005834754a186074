"""Logging: rate limiting of repeated messages, journal field names, target choice, levels."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from tests_support import ROOT

from bmsd.system.logs import (
    JOURNAL_FIELDS,
    RATE_LIMIT_EXEMPT,
    LogSetup,
    RateLimitFilter,
    journal_field_name,
    journal_wanted,
)


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


Captured = tuple[logging.Logger, io.StringIO, RateLimitFilter, Clock]


@pytest.fixture
def captured() -> Iterator[Captured]:
    clock = Clock()
    limiter = RateLimitFilter(3, 10.0, clock=clock)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(limiter)
    logger = logging.getLogger("bmsd.test.ratelimit")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream, limiter, clock
    logger.removeHandler(handler)
    logger.propagate = True


def test_repeated_template_is_limited_and_summarised(captured: Captured) -> None:
    logger, stream, limiter, clock = captured
    for value in range(50):  # a failing sensor: a new value every tick, one template
        logger.warning("sensor %d reads %.1f", 3, value)
        clock.now_s += 0.1
    lines = stream.getvalue().splitlines()
    assert lines == [f"WARNING sensor 3 reads {v}.0" for v in range(3)]
    assert limiter.suppressed_total == 47
    clock.now_s += 10.0
    limiter.flush()
    summary = stream.getvalue().splitlines()[3]
    assert summary.startswith("WARNING suppressed 47 repeated message(s) in 15 s")
    assert "sensor %d reads %.1f" in summary
    limiter.flush()  # nothing more to say
    assert len(stream.getvalue().splitlines()) == 4


def test_new_window_lets_messages_through_again_after_the_summary(captured: Captured) -> None:
    logger, stream, _limiter, clock = captured
    for _ in range(5):
        logger.error("bus %s off", "slaves")
    clock.now_s += 10.0
    logger.error("bus %s off", "slaves")
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["ERROR bus slaves off"] * 3
    assert lines[3].startswith("ERROR suppressed 2 repeated message(s)")
    assert lines[4] == "ERROR bus slaves off"


def test_limits_are_per_template_level_and_exemptions_pass(captured: Captured) -> None:
    logger, stream, _, _ = captured
    for _ in range(5):
        logger.warning("a %s", 1)
        logger.info("a %s", 1)
        logger.warning("b %s", 1)
        logger.info("pack %s", "summary", extra={RATE_LIMIT_EXEMPT: True})
    text = stream.getvalue()
    assert text.count("WARNING a 1") == 3
    assert text.count("INFO a 1") == 3
    assert text.count("WARNING b 1") == 3
    assert text.count("INFO pack summary") == 5


def test_burst_zero_disables_limiting(captured: Captured) -> None:
    logger, stream, limiter, _ = captured
    limiter.burst = 0
    for _ in range(20):
        logger.warning("same")
    assert stream.getvalue().count("same") == 20


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("fault", "FAULT_ID"),
        ("module", "MODULE"),
        ("cell", "CELL"),
        ("mode", "BMSD_MODE"),
        ("level", "FAULT_LEVEL"),
        ("threshold", "BMSD_THRESHOLD"),
        ("node_id", "BMSD_NODE_ID"),
        ("weird-key.x", "BMSD_WEIRD_KEY_X"),
    ],
)
def test_journal_field_names(key: str, field: str) -> None:
    assert journal_field_name(key) == field


def test_journal_chosen_when_stderr_is_the_journal_stream() -> None:
    stat = os.fstat(sys.stderr.fileno())
    assert journal_wanted("auto", {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
    assert not journal_wanted("auto", {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"})
    assert not journal_wanted("auto", {"JOURNAL_STREAM": "garbage"})
    assert not journal_wanted("auto", {})
    assert journal_wanted("journal", {})
    assert not journal_wanted("stderr", {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})


def test_levels_per_logger_apply_and_are_undone() -> None:
    setup = LogSetup(environ={})
    try:
        setup.configure("warning", "text", loggers={"bmsd.canbus": "debug"})
        assert logging.getLogger("bmsd.canbus").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("bmsd.app").getEffectiveLevel() == logging.WARNING
        setup.configure("info", "json", loggers={})
        assert logging.getLogger("bmsd.canbus").getEffectiveLevel() == logging.INFO
        assert setup.target == "stderr"
    finally:
        logging.getLogger("bmsd.canbus").setLevel(logging.NOTSET)
        logging.getLogger().handlers.clear()


# Runs in a private mount namespace: a tmpfs over /run/systemd holds a journal socket of our
# own, so systemd-python's handler sends real native-protocol datagrams to it.
_JOURNAL_SCRIPT = r"""
import json, logging, os, socket, subprocess
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
sock.settimeout(5)
os.environ["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
from bmsd.system.logs import LogSetup
from bmsd.control.loop import _log_fault_event
from bmsd.model.faults import FaultEvent, FaultLevel
setup = LogSetup()
setup.configure("info", "text", target="auto", burst=2, interval_s=60)
event = FaultEvent(
    fault_id="cell_voltage_high", level=FaultLevel.FATAL, kind="set", time_s=1.0,
    value=3.71, threshold=3.65, message="cell 2.5 over-voltage",
)
for _ in range(4):
    _log_fault_event(event)
setup.close()
records = []
while True:
    try:
        data = sock.recv(65536)
    except TimeoutError:
        break
    fields = {}
    for line in data.split(b"\n"):
        if b"=" in line:
            key, value = line.split(b"=", 1)
            fields[key.decode()] = value.decode()
    records.append(fields)
    if "suppressed" in fields.get("MESSAGE", ""):
        break
print(json.dumps({"target": setup.target, "records": records}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_journal_gets_structured_fields_through_systemd_python() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    pytest.importorskip("systemd.journal")
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", _JOURNAL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0 and "mount" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["target"] == "journal"
    records = out["records"]
    assert len(records) == 3, records  # two let through, then the summary
    first = records[0]
    assert first["MESSAGE"] == "cell 2.5 over-voltage"
    assert first["FAULT_ID"] == "cell_voltage_high"
    assert first["FAULT_LEVEL"] == "fatal"
    assert first["FAULT_CHANGE"] == "set"
    assert first["BMSD_VALUE"] == "3.71"
    assert first["PRIORITY"] == "3"  # error
    assert first["SYSLOG_IDENTIFIER"] == "bmsd"
    assert first["LOGGER"] == "bmsd.control.loop"
    assert "suppressed 2 repeated message(s)" in records[2]["MESSAGE"]
    assert records[2]["BMSD_SUPPRESSED"] == "2"


def test_journal_fields_are_documented_in_operations() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for field in JOURNAL_FIELDS.values():
        assert f"`{field}`" in text, f"docs/operations.md does not explain {field}"
