"""The pysunspec2 client scans bmsd's SunSpec models and reads every point right.

The server serves one fixed PackState taken from a real daemon run on the simulated pack, so
every value the client reads can be compared exactly with the state it came from.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
import sunspec2.modbus.client as sunspec_client

from bmsd.app import Daemon
from bmsd.config import load_config
from bmsd.control.controller import Command
from bmsd.control.supervision import ExternalInputs
from bmsd.model.bms import Reply
from bmsd.model.state import PackState
from bmsd.publish.modbus.server import build_server

ROOT = Path(__file__).resolve().parents[2]


async def _captured_state(tmp_path: Path) -> tuple[Daemon, PackState]:
    overrides = (
        f"can.slaves.channel='sunspec-{tmp_path.name}'",
        f"state.directory='{tmp_path / 'state'}'",
        "control.summary_log_interval_s=0",
        "modbus.enabled=true",
        "modbus.port=0",
        "metrics.port=0",
        "modbus.max_state_age_s=3600",
        "modbus.serial_number='SIM-0001'",
    )
    daemon = Daemon(load_config(ROOT / "etc" / "sim.toml", overrides))
    task = asyncio.create_task(daemon.run())
    state = None
    for _ in range(200):
        await asyncio.sleep(0.05)
        state = daemon.hub.latest
        if state is not None and state.estimates is not None and state.mode.value == "closed":
            break
    daemon.request_stop()
    await task
    assert state is not None and state.estimates is not None
    return daemon, state


# Mandatory points written by the inverter, which bmsd does not accept: read as unimplemented.
NOT_KNOWN_TO_BMSD = {"SetInvState", "Pad1", "Pad2", "Pad3", "Pad4", "Pad5", "Pad6", "Pad7"}


def _scan(port: int) -> dict[int, list[Any]]:
    device = sunspec_client.SunSpecModbusClientDeviceTCP(
        slave_id=1, ipaddr="127.0.0.1", ipport=port
    )
    try:
        device.scan()
        models = {k: v for k, v in device.models.items() if isinstance(k, int)}
        for instances in models.values():
            for model in instances:
                model.read()
        return models
    finally:
        device.close()


def _close(got: float | None, want: float, resolution: float) -> bool:
    return got is not None and abs(got - want) <= resolution / 2 + 1e-9


def _points(model: Any) -> list[Any]:
    """Every point of a model, fixed and in repeating groups."""
    found = list(model.points.values())
    for group in model.groups.values():
        for instance in group if isinstance(group, list) else [group]:
            found += list(instance.points.values())
    return found


def test_pysunspec2_scans_every_model_and_reads_every_point(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon, state = await _captured_state(tmp_path)

        async def no_commands(command: Command) -> Reply:
            raise AssertionError("no command expected")

        server = build_server(
            daemon.config,
            daemon.topology,
            daemon.cell_capacity_ah,
            lambda: state,
            no_commands,
            ExternalInputs(),
        )
        assert server is not None
        await server.start()
        try:
            models = await asyncio.to_thread(_scan, server.port)
        finally:
            await server.close()
        check(models, state)

    asyncio.run(scenario())


def check(models: dict[int, list[Any]], state: PackState) -> None:
    assert {k: len(v) for k, v in models.items()} == {1: 1, 802: 1, 803: 1, 804: 1, 805: 4}
    snap, limits, est = state.snapshot, state.limits, state.estimates
    assert est is not None

    # Mandatory points are all implemented; units and scale factors come with each point.
    for instances in models.values():
        for model in instances:
            for point in _points(model):
                name = point.pdef["name"]
                if point.pdef.get("mandatory") == "M" and name not in NOT_KNOWN_TO_BMSD:
                    assert point.value is not None, f"{model.model_id}.{point.pdef['name']}"
                if point.pdef.get("sf") and point.value is not None:
                    assert point.cvalue is not None, point.pdef["name"]  # its SF is served

    common = models[1][0].points
    assert common["Mn"].value == "bmsd"
    assert common["SN"].value == "SIM-0001"
    assert common["DA"].value == 1

    battery = models[802][0].points
    cv = snap.cell_voltage
    assert cv is not None and snap.pack_voltage_v is not None and snap.pack_current_a is not None
    expected_802 = {
        "AHRtg": (280.0, 1),
        "SoC": (est.pack_soc * 100, 0.1),
        "SoH": (est.soh_capacity * 100, 0.1),
        "V": (snap.pack_voltage_v, 0.1),
        "VMax": (limits.charge_voltage_v, 0.1),
        "VMin": (limits.discharge_voltage_v, 0.1),
        "A": (snap.pack_current_a, 0.1),
        "AChaMax": (limits.charge_current_a, 0.1),
        "ADisChaMax": (limits.discharge_current_a, 0.1),
        "W": (snap.pack_voltage_v * snap.pack_current_a, 10),
        "CellVMax": (cv.max_value, 0.001),
        "CellVMin": (cv.min_value, 0.001),
        "CellVAvg": (cv.mean, 0.001),
        "CellVMaxMod": (cv.max_location.module + 1, 0),
        "CellVMinMod": (cv.min_location.module + 1, 0),
        "Typ": (4, 0),
        "State": (3, 0),  # CONNECTED
        "LocRemCtl": (0, 0),
    }
    for name, (want, resolution) in expected_802.items():
        assert _close(battery[name].cvalue, want, resolution), (name, battery[name].cvalue, want)
    assert battery["V"].pdef["units"] == "V" and battery["SoC"].pdef["units"] == "%WHRtg"
    assert battery["V_SF"].value == -1 and battery["CellV_SF"].value == -3
    assert battery["ReqW"].value is None  # unimplemented marker
    assert battery["WarrDt"].value is None

    bank = models[803][0]
    temps = snap.temperature
    assert temps is not None
    assert bank.points["NStr"].value == 1
    assert _close(bank.points["ModTmpMax"].cvalue, temps.max_value, 0.1)
    assert _close(bank.points["ModTmpMin"].cvalue, temps.min_value, 0.1)
    strings = bank.groups["string"]
    assert len(strings) == 1
    assert _close(strings[0].points["StrCellVMax"].cvalue, cv.max_value, 0.001)
    assert _close(strings[0].points["StrA"].cvalue, snap.pack_current_a, 0.1)

    string = models[804][0]
    assert string.points["Idx"].value == 1 and string.points["NMod"].value == 4
    assert _close(string.points["V"].cvalue, float(snap.string_voltage_sum_v[0]), 0.1)
    modules_804 = string.groups["lithium_ion_string_module"]
    assert len(modules_804) == 4
    for index, group in enumerate(modules_804):
        cells = snap.cell_voltage_v[index * 16 : (index + 1) * 16]
        assert _close(group.points["ModCellVMax"].cvalue, float(cells.max()), 0.001)
        assert group.points["ModCellVMaxCell"].value == int(cells.argmax()) + 1
        assert _close(group.points["ModCellVMin"].cvalue, float(cells.min()), 0.001)

    balancing = state.balancing
    for module_index, module in enumerate(models[805]):
        assert module.points["ModIdx"].value == module_index + 1
        assert module.points["NCell"].value == 16
        cells = module.groups["lithium-ion-module-cell"]
        assert len(cells) == 16  # the cell count derived from L
        voltages = snap.cell_voltage_v[module_index * 16 : (module_index + 1) * 16]
        cell_temps = snap.cell_temp_c[module_index * 16 : (module_index + 1) * 16]
        assert _close(module.points["V"].cvalue, float(voltages.sum()), 0.1)
        for cell_index, cell in enumerate(cells):
            assert _close(cell.points["CellV"].cvalue, float(voltages[cell_index]), 0.001)
            if not math.isnan(cell_temps[cell_index]):
                assert _close(cell.points["CellTmp"].cvalue, float(cell_temps[cell_index]), 0.1)
            # Bit 0: the cell is bleeding (balancing on in etc/sim.toml).
            flat = module_index * 16 + cell_index
            assert balancing is not None
            assert cell.points["CellSt"].value == int(balancing.bleeding[flat])
            assert cell.points["CellV"].pdef["units"] == "V"


@pytest.mark.parametrize("strings", [2])
def test_layout_lengths_follow_the_model_definitions(strings: int) -> None:
    from bmsd.model.topology import Topology
    from bmsd.publish.modbus.sunspec import PackFacts, SunSpecMap, load_model

    topology = Topology(strings, 3, 24, 8, 1, tuple(range(1, 3 * strings + 1)))
    facts = PackFacts("bmsd", "m", "1", "", 1, 3.2 * 72, 140.0, 280.0)
    layout = SunSpecMap(topology, facts, 560.0)
    lengths = {(model, instance): length for model, instance, _, length in layout.models}
    assert lengths[(1, 0)] == 66
    assert lengths[(802, 0)] == 62
    assert lengths[(803, 0)] == 26 + 32 * strings
    assert lengths[(804, 1)] == 46 + 16 * 3
    assert lengths[(805, 5)] == 42 + 4 * 24
    assert load_model(805).group is not None and load_model(805).group.count == 0
    assert layout.length == 2 + sum(2 + length for length in lengths.values()) + 2
