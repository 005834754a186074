"""An independent decoder of the inverter protocols, written from ../shared/protocols.md
(sections A-D) with ``struct`` and bit arithmetic -- deliberately not from bmsd's DBCs or
profile files, so a mistake in a DBC (offset, scale, sign, bit position) is caught.

``decode(profile, frame_id, data)`` returns a dict of named values in SI units (V, A, °C, %),
flags as bools; unknown ids give an empty dict.
"""

from __future__ import annotations

import struct
from typing import Any

# protocols.md B.3: the 2-bit fields of 0x35A, byte by byte, bits 0-1, 2-3, 4-5, 6-7.
SMA_FIELDS = (
    ("general", "high_voltage", "low_voltage", "high_temp"),
    ("low_temp", "charge_high_temp", "charge_low_temp", "high_current"),
    ("high_charge_current", "contactor", "short_circuit", "bms_internal"),
    ("cell_imbalance",),
)

# protocols.md D.3: alarm and protection word bits of 0x4250.
HV_WORD_BITS = (
    "cell_low_voltage", "cell_high_voltage", "pile_low_voltage", "pile_high_voltage",
    "charge_low_temp", "charge_high_temp", "discharge_low_temp", "discharge_high_temp",
    "charge_over_current", "discharge_over_current", "module_low_voltage", "module_high_voltage",
)  # fmt: skip


def _bit(byte: int, bit: int) -> bool:
    return bool((byte >> bit) & 1)


def _ascii(data: bytes) -> str:
    return data.decode("ascii").rstrip("\0")


def _limits_351(data: bytes) -> dict[str, Any]:
    cvl, ccl, dcl = struct.unpack_from("<Hhh", data)
    out: dict[str, Any] = {"cvl_v": cvl / 10, "ccl_a": ccl / 10, "dcl_a": dcl / 10}
    if len(data) >= 8:
        out["dvl_v"] = struct.unpack_from("<H", data, 6)[0] / 10
    return out


def _measurements_356(data: bytes) -> dict[str, Any]:
    voltage, current, temp = struct.unpack_from("<hhh", data)
    return {"voltage_v": voltage / 100, "current_a": current / 10, "temp_c": temp / 10}


def _sma_35a(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, offset in (("alarm", 0), ("warning", 4)):
        for index, names in enumerate(SMA_FIELDS):
            byte = data[offset + index]
            for pair, name in enumerate(names):
                out[f"{kind}.{name}"] = (byte >> (2 * pair)) & 0b11  # 1 raised, 2 cleared
    return out


def decode_pylon_lv(frame_id: int, data: bytes) -> dict[str, Any]:
    if frame_id == 0x351:
        return _limits_351(data)
    if frame_id == 0x355:
        soc, soh = struct.unpack_from("<HH", data)
        return {"soc_pct": soc, "soh_pct": soh}
    if frame_id == 0x356:
        return _measurements_356(data)
    if frame_id == 0x359:
        b = data
        return {
            "protection.over_voltage": _bit(b[0], 1),
            "protection.under_voltage": _bit(b[0], 2),
            "protection.over_temp": _bit(b[0], 3),
            "protection.under_temp": _bit(b[0], 4),
            "protection.discharge_over_current": _bit(b[0], 7),
            "protection.charge_over_current": _bit(b[1], 0),
            "protection.system_error": _bit(b[1], 3),
            "alarm.high_voltage": _bit(b[2], 1),
            "alarm.low_voltage": _bit(b[2], 2),
            "alarm.high_temp": _bit(b[2], 3),
            "alarm.low_temp": _bit(b[2], 4),
            "alarm.discharge_high_current": _bit(b[2], 7),
            "alarm.charge_high_current": _bit(b[3], 0),
            "alarm.internal_comm_fail": _bit(b[3], 3),
            "module_count": b[4],
            "pn": bytes(b[5:7]).decode("ascii"),
            "unused_bits": (b[0] & 0b01100001) | (b[1] & 0b11110110) << 8
            | (b[2] & 0b01100001) << 16 | (b[3] & 0b11110110) << 24,
        }  # fmt: skip
    if frame_id == 0x35C:
        b = data[0]
        return {
            "charge_enable": _bit(b, 7),
            "discharge_enable": _bit(b, 6),
            "force_charge_1": _bit(b, 5),
            "force_charge_2": _bit(b, 4),
            "full_charge": _bit(b, 3),
            "reserved": b & 0b111,
        }
    if frame_id == 0x35E:
        return {"name": data.decode("ascii")}
    return {}


def decode_sma(frame_id: int, data: bytes) -> dict[str, Any]:
    if frame_id == 0x351:
        return _limits_351(data)
    if frame_id == 0x355:
        soc, soh, hires = struct.unpack_from("<HHH", data)
        return {"soc_pct": soc, "soh_pct": soh, "soc_hires_pct": hires / 100, "soc_raw": soc}
    if frame_id == 0x356:
        return _measurements_356(data)
    if frame_id == 0x35A:
        return _sma_35a(data)
    if frame_id == 0x35E:
        return {"name": _ascii(data)}
    if frame_id == 0x35F:
        kind, version, capacity, maker = struct.unpack_from("<HHHH", data)
        return {"battery_type": kind, "bms_version": version, "capacity_ah": capacity,
                "manufacturer_id": maker}  # fmt: skip
    return {}


def decode_victron(frame_id: int, data: bytes) -> dict[str, Any]:
    if frame_id == 0x35F:
        product, major, minor, capacity, hardware = struct.unpack_from("<HBBHH", data)
        return {"product_id": product, "firmware": (major, minor), "capacity_ah": capacity,
                "hardware_version": hardware}  # fmt: skip
    if frame_id in (0x370, 0x371):
        return {"bms_name": _ascii(data)}
    if frame_id == 0x372:
        online, block_charge, block_discharge, offline = struct.unpack_from("<HHHH", data)
        return {
            "modules_online": online,
            "modules_blocking_charge": block_charge,
            "modules_blocking_discharge": block_discharge,
            "modules_offline": offline,
        }
    if frame_id == 0x373:
        vmin, vmax, tmin, tmax = struct.unpack_from("<HHHH", data)
        return {"cell_voltage_min_v": vmin / 1000, "cell_voltage_max_v": vmax / 1000,
                "cell_temp_min_c": tmin - 273.15, "cell_temp_max_c": tmax - 273.15}  # fmt: skip
    return decode_sma(frame_id, data)


def decode_pylon_hv(frame_id: int, data: bytes) -> dict[str, Any]:
    base = frame_id & ~0xF  # the battery address is added to the base id (D.1)
    if base == 0x4210:
        voltage, current, temp, soc, soh = struct.unpack_from("<HHHBB", data)
        return {"voltage_v": voltage / 10, "current_a": (current - 30000) / 10,
                "temp_c": (temp - 1000) / 10, "soc_pct": soc, "soh_pct": soh}  # fmt: skip
    if base == 0x4220:
        cvl, dvl, ccl, dcl = struct.unpack_from("<HHHH", data)
        return {"cvl_v": cvl / 10, "dvl_v": dvl / 10, "ccl_a": (ccl - 30000) / 10,
                "dcl_a": (30000 - dcl) / 10}  # fmt: skip
    if base == 0x4230:
        vmax, vmin, nmax, nmin = struct.unpack_from("<HHHH", data)
        return {"cell_voltage_max_v": vmax / 1000, "cell_voltage_min_v": vmin / 1000,
                "cell_voltage_max_no": nmax, "cell_voltage_min_no": nmin}  # fmt: skip
    if base in (0x4240, 0x4270):
        tmax, tmin, nmax, nmin = struct.unpack_from("<HHHH", data)
        kind = "cell" if base == 0x4240 else "module"
        return {f"{kind}_temp_max_c": (tmax - 1000) / 10, f"{kind}_temp_min_c": (tmin - 1000) / 10,
                f"{kind}_temp_max_no": nmax, f"{kind}_temp_min_no": nmin}  # fmt: skip
    if base == 0x4250:
        status = data[0]
        cycles, errors, alarm, protection = struct.unpack_from("<HBHH", data, 1)
        out: dict[str, Any] = {
            "basic_status": status & 0b111,
            "force_charge": _bit(status, 3),
            "balance_charge": _bit(status, 4),
            "cycles": cycles,
            "error.internal_comm": _bit(errors, 2),
            "error.relay_check": _bit(errors, 5),
            "error.other": _bit(errors, 7),
        }
        for bit, name in enumerate(HV_WORD_BITS):
            out[f"alarm.{name}"] = _bit(alarm, bit)
            out[f"protection.{name}"] = _bit(protection, bit)
        return out
    if base == 0x4260:
        vmax, vmin, nmax, nmin = struct.unpack_from("<HHHH", data)
        return {"module_voltage_max_v": vmax / 1000, "module_voltage_min_v": vmin / 1000,
                "module_voltage_max_no": nmax, "module_voltage_min_no": nmin}  # fmt: skip
    if base == 0x4280:
        return {"charge_forbidden": data[0] == 0xAA, "discharge_forbidden": data[1] == 0xAA}
    if base == 0x4290:
        return {"fault_extension": data[0]}
    if base == 0x7320:
        modules, series, cells, level, capacity = struct.unpack_from("<HBBHH", data)
        return {
            "module_quantity": modules,
            "modules_in_series": series,
            "cells_per_module": cells,
            "voltage_level_v": level,
            "capacity_ah": capacity,
        }
    if base in (0x7330, 0x7340):
        return {"name_part": _ascii(data)}
    if base == 0x7310:
        return {"hardware_version": data[0], "software": (data[4], data[5])}
    return {}


DECODERS = {
    "pylontech_lv": decode_pylon_lv,
    "sma_si": decode_sma,
    "victron": decode_victron,
    "pylontech_hv": decode_pylon_hv,
}


def decode(profile: str, frame_id: int, data: bytes) -> dict[str, Any]:
    return DECODERS[profile](frame_id, bytes(data))
