"""The daemon under systemd logs to the journal with structured fields.

journald is not running here, so the test gives the daemon a journal socket of its own: in a
private mount namespace (unshare -m) a tmpfs over /run/systemd holds a datagram socket at
/run/systemd/journal/socket, the fixed address systemd-python's handler sends to. The daemon
runs the simulated pack with INVOCATION_ID set (as systemd sets it) and a cell-voltage info
threshold just above the pack's cells, so a real fault event is logged within a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import ROOT

_SCRIPT = r"""
import json, os, signal, socket, subprocess, sys, time
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
state_dir, channel = sys.argv[1], sys.argv[2]
env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
env["INVOCATION_ID"] = "5c2b0a3e7d0e4f6a9d1c2b3a4e5f6071"
daemon = subprocess.Popen(
    [sys.executable, "-m", "bmsd.cli", "run", "--config", "etc/sim.toml",
     "--set", f"state.directory='{state_dir}'", "--set", f"can.slaves.channel='{channel}'",
     "--set", "metrics.port=0", "--set", "modbus.port=0",
     "--set", "protection.faults.cell_voltage_low.info.threshold=3.40"],
    env=env, stderr=subprocess.PIPE, text=True,
)
records, deadline = [], time.monotonic() + 30
sock.settimeout(1.0)
while time.monotonic() < deadline:
    try:
        data = sock.recv(65536)
    except TimeoutError:
        continue
    fields = {}
    for line in data.split(b"\n"):
        if b"=" in line:
            key, value = line.split(b"=", 1)
            fields[key.decode()] = value.decode(errors="replace")
    records.append(fields)
    if fields.get("FAULT_ID") == "cell_voltage_low":
        break
daemon.send_signal(signal.SIGTERM)
_, stderr = daemon.communicate(timeout=15)
print(json.dumps({"records": records, "stderr": stderr, "code": daemon.returncode}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_daemon_logs_fault_events_to_the_journal_with_fields(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    pytest.importorskip("systemd.journal")
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            _SCRIPT,
            str(tmp_path / "state"),
            f"journal-{tmp_path.name}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if result.returncode != 0 and "mount" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["code"] == 0
    records = out["records"]
    assert all(r.get("SYSLOG_IDENTIFIER") == "bmsd" for r in records)
    started = [r for r in records if r.get("MESSAGE", "").startswith("bmsd running")]
    assert started and started[0]["PRIORITY"] == "6" and started[0]["LOGGER"] == "bmsd.app"
    fault = records[-1]
    assert fault.get("FAULT_ID") == "cell_voltage_low", records[-5:]
    assert fault["FAULT_LEVEL"] == "info" and fault["FAULT_CHANGE"] == "set"
    assert fault["PRIORITY"] == "6"
    assert fault["BMSD_THRESHOLD"] == "3.4"
    assert fault["BMSD_MODE"] in {"init", "standby", "precharge", "closed"}
    assert int(fault["MODULE"]) in range(4) and int(fault["CELL"]) in range(16)
    assert fault["STRING"] == "0"
    modules = [r for r in records if r.get("BMSD_EVENT") == "module_online"]
    assert sorted(r["MODULE"] for r in modules) == ["0", "1", "2", "3"]
    # Everything went to the journal: nothing on stderr (under systemd it would be doubled).
    assert out["stderr"] == ""
