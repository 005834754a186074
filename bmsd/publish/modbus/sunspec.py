"""SunSpec battery models at holding register 40000, laid out from pysunspec2's model files.

The layout is never retyped: the point list (name, type, size, scale-factor point, access) of
models 1, 802, 803, 804 and 805 is read from the JSON model definitions shipped in the
``pysunspec2`` package (the same files as sunspec/models), and the repeating groups are
instantiated for the pack: one 803 string group per string, one 804 model per string with one
module group per module of that string, one 805 model per module with one cell group per
cell. This module only says which bmsd value feeds which point; every point it leaves out is
served as SunSpec's "unimplemented" marker of its type.

Layout: "SunS" at 40000, then [ID][L][body] per model, then the end marker 0xFFFF, 0.
Indices in the SunSpec points (strings, modules, cells) are 1-based, as SunSpec devices count.
Scale factors are fixed per pack (chosen at start so the largest value fits its type).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bmsd.model.bms import BmsMode
from bmsd.model.state import PackState
from bmsd.publish.modbus.registers import BMS_MODE_CODES, MapView
from bmsd.publish.modbus.writes import WriteKind

BASE_ADDRESS = 40000
MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL = 0xFFFF
MODELS = (1, 802, 803, 804, 805)

UNIMPLEMENTED: dict[str, int] = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "sunssf": 0x8000,
    "count": 0,
    "acc16": 0,
    "pad": 0,
    "int32": 0x8000_0000,
    "uint32": 0xFFFF_FFFF,
    "enum32": 0xFFFF_FFFF,
    "bitfield32": 0xFFFF_FFFF,
    "acc32": 0,
    "float32": 0x7FC0_0000,
}
"""pysunspec2's "unimplemented" value of each point type (sunspec2/mb.py)."""

WRITES: dict[tuple[int, str], WriteKind] = {
    (802, "AlmRst"): WriteKind.FAULT_RESET,
    (802, "SetOp"): WriteKind.CONNECT,
    (802, "CtrlHb"): WriteKind.HEARTBEAT,
}
"""The SunSpec points bmsd accepts writes on; every other point is read-only."""

Value = float | int | str | None


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a model definition (from the JSON file)."""

    name: str
    type: str
    size: int
    sf: str | None
    units: str
    access: str
    mandatory: bool


@dataclass(frozen=True, slots=True)
class GroupDef:
    name: str
    count: str | int
    points: tuple[PointDef, ...]

    @property
    def length(self) -> int:
        return sum(point.size for point in self.points)


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A model's fixed points (ID and L included) and its repeating group, if any."""

    id: int
    name: str
    points: tuple[PointDef, ...]
    group: GroupDef | None

    @property
    def fixed_length(self) -> int:
        """L of the model without repeating groups (excluding ID and L)."""
        return sum(point.size for point in self.points) - 2


def _point(raw: Mapping[str, Any]) -> PointDef:
    return PointDef(
        name=str(raw["name"]),
        type=str(raw["type"]),
        size=int(raw.get("size", 1)),
        sf=raw.get("sf"),
        units=str(raw.get("units", "")),
        access=str(raw.get("access", "R")),
        mandatory=raw.get("mandatory") == "M",
    )


def load_model(model_id: int) -> ModelDef:
    """A model definition from the installed pysunspec2 package."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    group = data["group"]
    groups = group.get("groups", [])
    if len(groups) > 1:
        raise ValueError(f"model {model_id}: more than one repeating group is not supported")
    repeating = None
    if groups:
        sub = groups[0]
        repeating = GroupDef(
            str(sub["name"]), sub.get("count", 0), tuple(_point(p) for p in sub["points"])
        )
    return ModelDef(
        model_id, str(group["name"]), tuple(_point(p) for p in group["points"]), repeating
    )


@dataclass(frozen=True, slots=True)
class PackFacts:
    """Fixed facts the SunSpec models publish (nameplate, identity)."""

    manufacturer: str
    model: str
    version: str
    serial_number: str
    unit_id: int
    nominal_voltage_v: float
    max_charge_current_a: float
    max_discharge_current_a: float


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one point of one model instance sits."""

    address: int  # absolute
    model: int
    instance: int  # string (804) or module (805) number, 0-based; 0 for single models
    group: int | None  # repeating-group instance, 0-based; None for fixed points
    point: PointDef


def _sf_for(maximum: float, limit: int = 32767) -> int:
    """The smallest scale factor (≥ 0) at which ``maximum`` fits a signed 16-bit point."""
    sf = 0
    while maximum / 10**sf > limit:
        sf += 1
    return sf


class SunSpecMap:
    """The SunSpec register image of a pack; encodes a MapView into words."""

    def __init__(self, view_topology: Any, facts: PackFacts, nominal_capacity_ah: float) -> None:
        self.topology = view_topology
        self.facts = facts
        self.nominal_capacity_ah = nominal_capacity_ah
        self.defs = {model_id: load_model(model_id) for model_id in MODELS}
        topo = view_topology
        instances: list[tuple[int, int, int]] = [(1, 0, 0), (802, 0, 0), (803, 0, topo.strings)]
        instances += [(804, s, topo.modules_per_string) for s in range(topo.strings)]
        instances += [(805, m, topo.cells_per_module) for m in range(topo.module_count)]
        self.slots: list[Slot] = []
        self.models: list[tuple[int, int, int, int]] = []  # (model, instance, address, L)
        address = BASE_ADDRESS + 2
        for model_id, instance, repeats in instances:
            definition = self.defs[model_id]
            length = definition.fixed_length
            start = address
            for point in definition.points:
                self.slots.append(Slot(address, model_id, instance, None, point))
                address += point.size
            if definition.group is not None:
                for index in range(repeats):
                    for point in definition.group.points:
                        self.slots.append(Slot(address, model_id, instance, index, point))
                        address += point.size
                length += repeats * definition.group.length
            self.models.append((model_id, instance, start, length))
        self.end_address = address
        self.start = BASE_ADDRESS
        self.length = address + 2 - BASE_ADDRESS
        pack_v = facts.nominal_voltage_v
        max_power_w = max(facts.max_charge_current_a, facts.max_discharge_current_a) * pack_v * 1.3
        self.sf = {
            "AHRtg_SF": _sf_for(nominal_capacity_ah, 65534),
            "WHRtg_SF": _sf_for(nominal_capacity_ah * pack_v, 65534),
            "WChaDisChaMax_SF": _sf_for(max_power_w, 65534),
            "W_SF": _sf_for(max_power_w),
            "SoC_SF": -1,
            "SoH_SF": -1,
            "DoD_SF": -1,
            "DisChaRte_SF": -1,
            "V_SF": -1 if pack_v * 1.3 < 6553 else 0,
            "CellV_SF": -3,
            "A_SF": -1 if max_power_w / pack_v < 3276 else 0,
            "AMax_SF": -1 if max_power_w / pack_v < 3276 else 0,
            "ModTmp_SF": -1,
            "Tmp_SF": -1,
        }
        self.writes: dict[int, WriteKind] = {
            slot.address: WRITES[(slot.model, slot.point.name)]
            for slot in self.slots
            if (slot.model, slot.point.name) in WRITES
        }
        self._by_model: dict[tuple[int, int], list[Slot]] = {}
        for slot in self.slots:
            self._by_model.setdefault((slot.model, slot.instance), []).append(slot)
        self._build_plans()

    # -- encoding -----------------------------------------------------------------------------

    def _build_plans(self) -> None:
        """The static words (marker, ID, L, strings, scale factors, pads, unimplemented
        markers, end) once, and per model instance the points whose values change."""
        template = [0] * self.length
        template[0:2] = MARKER
        static = _Values.static(self)
        self._plans: list[tuple[int, int, list[_Plan]]] = []
        for model_id, instance, _start, length in self.models:
            fixed_static = {**static.get(model_id, {}), "ID": model_id, "L": length}
            plan: list[_Plan] = []
            seen_groups: set[str] = set()
            slots = self._by_model[(model_id, instance)]
            for slot in slots:
                point = slot.point
                offset = slot.address - self.start
                if slot.group is None and (
                    point.type in ("sunssf", "pad", "string") or point.name in fixed_static
                ):
                    value = fixed_static.get(point.name)
                    template[offset : offset + point.size] = self._raw(point, value)
                    continue
                template[offset : offset + point.size] = self._raw(point, None)
                divisor = 10.0 ** self.sf[point.sf] if point.sf else 1.0
                if slot.group is None:
                    plan.append(_Plan(offset, point.name, point.type, point.size, divisor, 0, 1))
                elif point.name not in seen_groups:
                    seen_groups.add(point.name)
                    group = self.defs[model_id].group
                    assert group is not None
                    count = sum(1 for other in slots if other.point is point)
                    plan.append(
                        _Plan(
                            offset, point.name, point.type, point.size, divisor, group.length, count
                        )
                    )
            self._plans.append((model_id, instance, plan))
        end = self.end_address - self.start
        template[end : end + 2] = [END_MODEL, 0]
        self._template = template

    def begin(self, view: MapView) -> SunSpecImage:
        """An image of one state whose models are encoded when first read."""
        return SunSpecImage(self, view)

    def encode(self, view: MapView) -> list[int]:
        """Every model of one state, encoded now."""
        image = self.begin(view)
        image.ensure(0, self.length)
        return image.words

    def encode_model(self, index: int, values: _Values, words: list[int]) -> None:
        model_id, instance, plan = self._plans[index]
        fixed, groups = values.of(model_id, instance)
        for item in plan:
            if item.stride == 0:
                value = fixed.get(item.name)
                if value is not None:
                    words[item.offset : item.offset + item.size] = _words(
                        item.kind, item.size, item.divisor, value
                    )
                continue
            series = groups.get(item.name)
            if series is None:
                continue
            raw = _words_array(item.kind, item.divisor, series)
            stop = item.offset + item.stride * item.count
            if item.size == 1:
                words[item.offset : stop : item.stride] = raw
            else:  # 32-bit: high words, then low words
                words[item.offset : stop : item.stride] = [r >> 16 & 0xFFFF for r in raw]
                words[item.offset + 1 : stop : item.stride] = [r & 0xFFFF for r in raw]

    def _raw(self, point: PointDef, value: Value) -> list[int]:
        kind = point.type
        if kind == "sunssf":
            sf = self.sf.get(point.name)
            return [UNIMPLEMENTED["sunssf"] if sf is None else sf & 0xFFFF]
        if kind == "pad":
            return [0]
        if kind == "string":
            text = "" if value is None else str(value)
            data = text.encode("ascii", "replace")[: 2 * point.size].ljust(2 * point.size, b"\0")
            return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
        if value is None:
            raw = UNIMPLEMENTED[kind]
            return [raw >> 16 & 0xFFFF, raw & 0xFFFF] if point.size == 2 else [raw]
        divisor = 10.0 ** self.sf[point.sf] if point.sf else 1.0
        return _words(kind, point.size, divisor, value)


class _ModuleCache(NamedTuple):
    cells: list[tuple[Value, ...]]
    temps: list[tuple[Value, ...]]
    info: list[tuple[Value, Value]]  # module SOC %, module voltage
    words: list[tuple[_Raw, _Raw, _Raw | None]]  # CellV, CellTmp, CellSt of every cell


class _Raw(list[int]):
    """Words already encoded (a group point's values for every instance)."""


def _row_stats(values: NDArray[np.float64], valid: NDArray[np.bool_]) -> list[tuple[Value, ...]]:
    """:func:`_stats` of every row at once."""
    if values.shape[1] == 0:
        return [(None,) * 5] * values.shape[0]
    ok = valid & np.isfinite(values)
    high = np.argmax(np.where(ok, values, -np.inf), axis=1)
    low = np.argmin(np.where(ok, values, np.inf), axis=1)
    rows = np.arange(values.shape[0])
    counts = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(ok, values, 0.0).sum(axis=1) / counts
    result: list[tuple[Value, ...]] = []
    for row, (h, lo, n, mean) in enumerate(
        zip(high.tolist(), low.tolist(), counts.tolist(), means.tolist(), strict=True)
    ):
        if n == 0:
            result.append((None,) * 5)
        else:
            result.append(
                (float(values[rows[row], h]), h + 1, float(values[rows[row], lo]), lo + 1, mean)
            )
    return result


class SunSpecImage:
    """The SunSpec words of one state. A model is encoded when a read first touches it, so
    no single request pays for the whole map (the control loop shares this thread)."""

    def __init__(self, layout: SunSpecMap, view: MapView) -> None:
        self._layout = layout
        self._values = _Values(view, layout)
        self.words = layout._template[:]
        self._pending = set(range(len(layout.models)))
        self._starts = [start - layout.start for _, _, start, _ in layout.models]

    def ensure(self, first: int, count: int) -> None:
        """Encode every model overlapping words [first, first + count)."""
        if not self._pending:
            return
        index = max(0, bisect.bisect_right(self._starts, first) - 1)
        last = first + count
        while index < len(self._starts) and self._starts[index] < last:
            if index in self._pending:
                self._pending.discard(index)
                self._layout.encode_model(index, self._values, self.words)
            index += 1


@dataclass(frozen=True, slots=True)
class _Plan:
    """A point whose value changes: fixed (stride 0) or one point of every group instance."""

    offset: int
    name: str
    kind: str
    size: int
    divisor: float
    stride: int
    count: int


def _words(kind: str, size: int, divisor: float, value: Value) -> list[int]:
    if isinstance(value, float) and math.isnan(value):
        raw = UNIMPLEMENTED[kind]
    else:
        raw = _clamp(kind, round(float(value) / divisor))  # type: ignore[arg-type]
    return [raw >> 16 & 0xFFFF, raw & 0xFFFF] if size == 2 else [raw & 0xFFFF]


def _words_array(kind: str, divisor: float, series: Sequence[Value] | NDArray[Any]) -> list[int]:
    """Raw values of one point over every group instance (vectorised for arrays)."""
    if isinstance(series, _Raw):
        return series
    if isinstance(series, np.ndarray):
        values = series.astype(np.float64)
        bits = 32 if kind.endswith("32") else 16
        if kind.startswith("int"):
            high = (1 << (bits - 1)) - 1
            low = -high
        else:
            high, low = (1 << bits) - 2, 0
        with np.errstate(invalid="ignore"):
            raw = np.clip(np.rint(values / divisor), low, high)
        marker = UNIMPLEMENTED[kind]
        encoded = np.where(np.isfinite(values), raw, 0).astype(np.int64) & ((1 << bits) - 1)
        result: list[int] = np.where(np.isfinite(values), encoded, marker).tolist()
        return result
    out = []
    for value in series:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(UNIMPLEMENTED[kind])
        else:
            out.append(_clamp(kind, round(float(value) / divisor)))
    return out


def _clamp(kind: str, number: int) -> int:
    if kind.startswith("int"):
        bits = 16 if kind == "int16" else 32
        high = (1 << (bits - 1)) - 1
        return max(-high, min(high, number)) & ((1 << bits) - 1)
    bits = 32 if kind.endswith("32") else 16
    high = (1 << bits) - 2  # below the unimplemented marker
    return max(0, min(high, number))


# -- which bmsd value feeds which point --------------------------------------------------------

SUNSPEC_STATE = {
    BmsMode.INIT: 2,  # INITIALIZING
    BmsMode.STANDBY: 1,  # DISCONNECTED
    BmsMode.PRECHARGE: 2,
    BmsMode.CLOSED: 3,  # CONNECTED
    BmsMode.OPENING: 6,  # SUSPENDING
    BmsMode.FAULT: 99,
}

# Evt1 bit -> (native fault category bit, which flags: "alarm", "warning" or "any")
_EVT1 = (
    (0, 8, "any"),  # communication error
    (1, 2, "alarm"),
    (2, 2, "warning"),
    (3, 3, "alarm"),
    (4, 3, "warning"),
    (5, 4, "alarm"),
    (6, 4, "warning"),
    (7, 5, "alarm"),
    (8, 5, "warning"),
    (9, 0, "alarm"),
    (10, 0, "warning"),
    (11, 1, "alarm"),
    (12, 1, "warning"),
    (17, 6, "any"),  # voltage imbalance warning
    (18, 7, "alarm"),
    (19, 7, "warning"),
    (20, 10, "any"),  # contactor error
)
_OTHER_CATEGORIES = (9, 11, 12, 15)


def evt1_bits(alarm: int, warning: int) -> int:
    """SunSpec Evt1 (models 802/803/804) from the native fault-category flags."""
    bits = 0
    for evt_bit, category, which in _EVT1:
        mask = 1 << category
        hit = {"alarm": alarm & mask, "warning": warning & mask, "any": (alarm | warning) & mask}
        if hit[which]:
            bits |= 1 << evt_bit
    other = sum(1 << c for c in _OTHER_CATEGORIES)
    if alarm & other:
        bits |= 1 << 25
    if warning & other:
        bits |= 1 << 26
    return bits


def _stats(values: NDArray[np.float64], valid: NDArray[np.bool_]) -> tuple[Value, ...]:
    """(max, 1-based index of max, min, index of min, mean) over the valid values."""
    ok = valid & np.isfinite(values)
    if not ok.any():
        return (None, None, None, None, None)
    masked_high = np.where(ok, values, -np.inf)
    masked_low = np.where(ok, values, np.inf)
    high, low = int(np.argmax(masked_high)), int(np.argmin(masked_low))
    return (
        float(values[high]),
        high + 1,
        float(values[low]),
        low + 1,
        float(values[ok].mean()),
    )


class _Values:
    """The values of every model instance for one MapView."""

    def __init__(self, view: MapView, layout: SunSpecMap) -> None:
        self.view = view
        self.layout = layout
        self.state: PackState = view.state
        self.topology = layout.topology
        flags = view.flags
        self.evt1 = evt1_bits(flags.alarm, flags.warning)
        self.closed = self.state.mode is BmsMode.CLOSED
        self._module_cache: _ModuleCache | None = None

    def module_stats(self) -> _ModuleCache:
        """Per module, once per state: (cell-voltage stats, sensor stats, module SOC and
        voltage), and the words of every cell's CellV, CellTmp and CellSt (vectorised)."""
        if self._module_cache is None:
            topo, snap = self.topology, self.state.snapshot
            modules, per = topo.module_count, topo.cells_per_module
            voltages = snap.cell_voltage_v.reshape(modules, per)
            valid = snap.cell_voltage_valid.reshape(modules, per)
            cell_stats = _row_stats(voltages, valid)
            temp_stats = _row_stats(
                snap.temp_c.reshape(modules, topo.temps_per_module),
                snap.temp_valid.reshape(modules, topo.temps_per_module),
            )
            sums = np.where(valid.all(axis=1), voltages.sum(axis=1), np.nan).tolist()
            estimates = self.state.estimates
            socs: list[Value] = (
                [None] * modules
                if estimates is None
                else (estimates.soc.reshape(modules, per).mean(axis=1) * 100.0).tolist()
            )
            sf = self.layout.sf
            cell_v = _words_array(
                "uint16",
                10.0 ** sf["CellV_SF"],
                np.where(snap.cell_voltage_valid, snap.cell_voltage_v, np.nan),
            )
            cell_t = _words_array("int16", 10.0 ** sf["Tmp_SF"], snap.cell_temp_c)
            balancing = self.state.balancing
            cell_st = (
                None
                if balancing is None
                else _words_array("bitfield32", 1.0, balancing.bleeding.astype(np.float64))
            )
            cells = [
                (
                    _Raw(cell_v[m * per : (m + 1) * per]),
                    _Raw(cell_t[m * per : (m + 1) * per]),
                    None if cell_st is None else _Raw(cell_st[m * per : (m + 1) * per]),
                )
                for m in range(modules)
            ]
            self._module_cache = _ModuleCache(
                cell_stats,
                temp_stats,
                [(soc, None if math.isnan(v) else v) for soc, v in zip(socs, sums, strict=True)],
                cells,
            )
        return self._module_cache

    @staticmethod
    def static(layout: SunSpecMap) -> dict[int, dict[str, Value]]:
        """Values that never change for a pack: written into the template once."""
        facts = layout.facts
        topo = layout.topology
        return {
            1: {
                "Mn": facts.manufacturer,
                "Md": facts.model,
                "Opt": "",
                "Vr": facts.version,
                "SN": facts.serial_number,
                "DA": facts.unit_id,
            },
            802: {
                "AHRtg": layout.nominal_capacity_ah,
                "WHRtg": layout.nominal_capacity_ah * facts.nominal_voltage_v,
                "WChaRteMax": facts.max_charge_current_a * facts.nominal_voltage_v,
                "WDisChaRteMax": facts.max_discharge_current_a * facts.nominal_voltage_v,
                "LocRemCtl": 0,  # REMOTE
                "Typ": 4,  # lithium-ion
                "AlmRst": 0,
                "ReqInvState": 0,
                "Evt2": 0,
            },
            803: {"NStr": topo.strings},
            804: {"NMod": topo.modules_per_string},
            805: {"NCell": topo.cells_per_module},
        }

    def of(
        self, model_id: int, instance: int
    ) -> tuple[dict[str, Value], Mapping[str, Sequence[Value] | NDArray[Any]]]:
        if model_id == 1:
            return {}, {}
        if model_id == 802:
            return self._battery(), {}
        if model_id == 803:
            return self._bank()
        if model_id == 804:
            return self._string(instance)
        return self._module(instance)

    def _soc_pct(self, cells: slice | None = None) -> float | None:
        estimates = self.state.estimates
        if estimates is None:
            return None
        if cells is None:
            return estimates.pack_soc * 100.0
        return float(np.mean(estimates.soc[cells])) * 100.0

    def _battery(self) -> dict[str, Value]:
        state, snap, limits = self.state, self.state.snapshot, self.state.limits
        facts = self.layout.facts
        soc = self._soc_pct()
        estimates = state.estimates
        cv = snap.cell_voltage
        current = snap.pack_current_a
        power = (
            None
            if snap.pack_voltage_v is None or current is None
            else snap.pack_voltage_v * current
        )
        charge_state: int
        if not self.closed:
            charge_state = 1  # OFF
        elif soc is not None and soc >= 99.5 and not limits.charge_allowed:
            charge_state = 5  # FULL
        elif soc is not None and soc <= 0.5 and not limits.discharge_allowed:
            charge_state = 2  # EMPTY
        elif current is not None and current > 1.0:
            charge_state = 4  # CHARGING
        elif current is not None and current < -1.0:
            charge_state = 3  # DISCHARGING
        else:
            charge_state = 6  # HOLDING
        flags = self.view.flags
        values: dict[str, Value] = {
            "AHRtg": self.layout.nominal_capacity_ah,
            "WHRtg": self.layout.nominal_capacity_ah * facts.nominal_voltage_v,
            "WChaRteMax": facts.max_charge_current_a * facts.nominal_voltage_v,
            "WDisChaRteMax": facts.max_discharge_current_a * facts.nominal_voltage_v,
            "SoC": soc,
            "DoD": None if soc is None else 100.0 - soc,
            "SoH": None if estimates is None else estimates.soh_capacity * 100.0,
            "NCyc": None if estimates is None else int(estimates.equivalent_full_cycles),
            "ChaSt": charge_state,
            "LocRemCtl": 0,  # REMOTE
            "Hb": int(state.time_s) & 0xFFFF,
            "CtrlHb": self.view.ems_heartbeat_value,
            "AlmRst": 0,
            "Typ": 4,  # lithium-ion
            "State": SUNSPEC_STATE[state.mode],
            "StateVnd": BMS_MODE_CODES[state.mode],
            "Evt1": self.evt1,
            "Evt2": 0,
            "EvtVnd1": flags.latched << 16 | flags.alarm,
            "EvtVnd2": flags.info << 16 | flags.warning,
            "V": snap.pack_voltage_v,
            "VMax": limits.charge_voltage_v,
            "VMin": limits.discharge_voltage_v,
            "A": current,
            "AChaMax": limits.charge_current_a,
            "ADisChaMax": limits.discharge_current_a,
            "W": power,
            "ReqInvState": 0,
            "SetOp": 1 if self.closed else 2,
        }
        if cv is not None:
            values.update(
                CellVMax=cv.max_value,
                CellVMaxStr=cv.max_location.string + 1,
                CellVMaxMod=cv.max_location.module + 1,
                CellVMin=cv.min_value,
                CellVMinStr=cv.min_location.string + 1,
                CellVMinMod=cv.min_location.module + 1,
                CellVAvg=cv.mean,
            )
        return values

    def _string_cells(self, string: int) -> slice:
        per = self.topology.cells_per_string
        return slice(string * per, (string + 1) * per)

    def _string_temps(self, string: int) -> slice:
        per = self.topology.modules_per_string * self.topology.temps_per_module
        return slice(string * per, (string + 1) * per)

    def _string_voltage(self, string: int) -> float | None:
        value = float(self.state.snapshot.string_voltage_sum_v[string])
        return None if math.isnan(value) else value

    def _string_current(self) -> float | None:
        # Only the pack current is measured: a string's current is known for a single string.
        return self.state.snapshot.pack_current_a if self.topology.strings == 1 else None

    def _bank(self) -> tuple[dict[str, Value], Mapping[str, Sequence[Value]]]:
        topo, snap = self.topology, self.state.snapshot
        temps = snap.temperature
        strings = range(topo.strings)
        string_v = [self._string_voltage(s) for s in strings]
        known_v = [(v, s) for s, v in enumerate(string_v) if v is not None]
        fixed: dict[str, Value] = {
            "NStr": topo.strings,
            "NStrCon": topo.strings if self.closed else 0,
            "NCellBal": self._bleeding(slice(None)),
        }
        if temps is not None:
            fixed.update(
                ModTmpMax=temps.max_value,
                ModTmpMaxStr=temps.max_location.string + 1,
                ModTmpMaxMod=temps.max_location.module + 1,
                ModTmpMin=temps.min_value,
                ModTmpMinStr=temps.min_location.string + 1,
                ModTmpMinMod=temps.min_location.module + 1,
                ModTmpAvg=temps.mean,
            )
        if known_v:
            high, low = max(known_v), min(known_v)
            fixed.update(
                StrVMax=high[0],
                StrVMaxStr=high[1] + 1,
                StrVMin=low[0],
                StrVMinStr=low[1] + 1,
                StrVAvg=sum(v for v, _ in known_v) / len(known_v),
            )
        current = self._string_current()
        if current is not None:
            fixed.update(
                StrAMax=current, StrAMaxStr=1, StrAMin=current, StrAMinStr=1, StrAAvg=current
            )
        groups: dict[str, list[Value]] = {name: [] for name in _BANK_GROUP_POINTS}
        for string in strings:
            cells = self._string_cells(string)
            v_stats = _stats(snap.cell_voltage_v[cells], snap.cell_voltage_valid[cells])
            t_stats = self._module_temp_stats(string)
            row: dict[str, Value] = {
                "StrNMod": topo.modules_per_string,
                "StrSt": 1 | (2 if self.closed else 0),
                "StrSoC": self._soc_pct(cells),
                "StrA": current,
                "StrCellVMax": v_stats[0],
                "StrCellVMaxMod": None
                if v_stats[1] is None
                else (int(v_stats[1]) - 1) // topo.cells_per_module + 1,
                "StrCellVMin": v_stats[2],
                "StrCellVMinMod": None
                if v_stats[3] is None
                else (int(v_stats[3]) - 1) // topo.cells_per_module + 1,
                "StrCellVAvg": v_stats[4],
                "StrModTmpMax": t_stats[0],
                "StrModTmpMaxMod": t_stats[1],
                "StrModTmpMin": t_stats[2],
                "StrModTmpMinMod": t_stats[3],
                "StrModTmpAvg": t_stats[4],
                "StrConSt": 1 if self.closed else 0,
                "StrEvt1": self.evt1 & ~(1 << 24),
                "StrEvt2": 0,
            }
            for name in groups:
                groups[name].append(row.get(name))
        return fixed, groups

    def _module_temp_stats(self, string: int) -> tuple[Value, ...]:
        """Max/min/mean module temperature (the hottest sensor of each module) in a string."""
        topo, snap = self.topology, self.state.snapshot
        temps = self._string_temps(string)
        return _module_extremes(snap.temp_c[temps], snap.temp_valid[temps], topo.temps_per_module)

    def _bleeding(self, cells: slice) -> Value:
        balancing = self.state.balancing
        return None if balancing is None else int(np.count_nonzero(balancing.bleeding[cells]))

    def _string(self, string: int) -> tuple[dict[str, Value], Mapping[str, Sequence[Value]]]:
        topo, snap = self.topology, self.state.snapshot
        cells = self._string_cells(string)
        soc = self._soc_pct(cells)
        v_stats = _stats(snap.cell_voltage_v[cells], snap.cell_voltage_valid[cells])
        t_stats = self._module_temp_stats(string)
        per = topo.cells_per_module

        def module_of(index: Value) -> Value:
            return None if index is None else (int(index) - 1) // per + 1

        estimates = self.state.estimates
        fixed: dict[str, Value] = {
            "Idx": string + 1,
            "NMod": topo.modules_per_string,
            "St": 1 | (2 if self.closed else 0),
            "NCellBal": self._bleeding(cells),
            "SoC": soc,
            "DoD": None if soc is None else 100.0 - soc,
            "NCyc": None if estimates is None else int(estimates.equivalent_full_cycles),
            "A": self._string_current(),
            "V": self._string_voltage(string),
            "CellVMax": v_stats[0],
            "CellVMaxMod": module_of(v_stats[1]),
            "CellVMin": v_stats[2],
            "CellVMinMod": module_of(v_stats[3]),
            "CellVAvg": v_stats[4],
            "ModTmpMax": t_stats[0],
            "ModTmpMaxMod": t_stats[1],
            "ModTmpMin": t_stats[2],
            "ModTmpMinMod": t_stats[3],
            "ModTmpAvg": t_stats[4],
            "ConSt": 1 if self.closed else 0,
            "Evt1": self.evt1 & ~(1 << 24),
            "Evt2": 0,
        }
        modules = range(string * topo.modules_per_string, (string + 1) * topo.modules_per_string)
        all_cells, all_temps, module_info, _ = self.module_stats()
        cell_stats = [all_cells[m] for m in modules]
        temp_stats = [all_temps[m] for m in modules]
        groups: dict[str, list[Value]] = {
            "ModNCell": [per] * len(modules),
            "ModSoC": [module_info[m][0] for m in modules],
        }
        for prefix, stats in (("ModCellV", cell_stats), ("ModCellTmp", temp_stats)):
            groups[f"{prefix}Max"] = [s[0] for s in stats]
            groups[f"{prefix}MaxCell"] = [s[1] for s in stats]
            groups[f"{prefix}Min"] = [s[2] for s in stats]
            groups[f"{prefix}MinCell"] = [s[3] for s in stats]
            groups[f"{prefix}Avg"] = [s[4] for s in stats]
        return fixed, groups

    def _module(self, module: int) -> tuple[dict[str, Value], Mapping[str, Sequence[Value]]]:
        topo = self.topology
        per = topo.cells_per_module
        cells = slice(module * per, (module + 1) * per)
        all_cells, all_temps, module_info, raw_cells = self.module_stats()
        v_stats, t_stats = all_cells[module], all_temps[module]
        soc, voltage = module_info[module]
        estimates = self.state.estimates
        fixed: dict[str, Value] = {
            "StrIdx": topo.module_string(module) + 1,
            "ModIdx": module % topo.modules_per_string + 1,
            "SoC": soc,
            "DoD": None if soc is None else 100.0 - float(soc),
            "NCyc": None if estimates is None else int(estimates.equivalent_full_cycles),
            "V": voltage,
            "CellVMax": v_stats[0],
            "CellVMaxCell": v_stats[1],
            "CellVMin": v_stats[2],
            "CellVMinCell": v_stats[3],
            "CellVAvg": v_stats[4],
            "CellTmpMax": t_stats[0],
            "CellTmpMaxCell": t_stats[1],
            "CellTmpMin": t_stats[2],
            "CellTmpMinCell": t_stats[3],
            "CellTmpAvg": t_stats[4],
            "NCellBal": self._bleeding(cells),
        }
        cell_v, cell_t, cell_st = raw_cells[module]
        groups: dict[str, Sequence[Value]] = {"CellV": cell_v, "CellTmp": cell_t}
        if cell_st is not None:
            groups["CellSt"] = cell_st
        return fixed, groups


def _module_extremes(
    temps: NDArray[np.float64], valid: NDArray[np.bool_], per_module: int
) -> tuple[Value, ...]:
    """(hottest module temperature, its 1-based module, coldest, its module, mean)."""
    if per_module == 0 or not valid.any():
        return (None, None, None, None, None)
    modules = temps.size // per_module
    shaped = np.where(valid, temps, np.nan).reshape(modules, per_module)
    with np.errstate(all="ignore"):
        hottest = np.nanmax(np.where(np.isnan(shaped), -np.inf, shaped), axis=1)
        coldest = np.nanmin(np.where(np.isnan(shaped), np.inf, shaped), axis=1)
    ok = np.isfinite(hottest)
    high = int(np.argmax(np.where(ok, hottest, -np.inf)))
    low = int(np.argmin(np.where(ok, coldest, np.inf)))
    return (
        float(hottest[high]),
        high + 1,
        float(coldest[low]),
        low + 1,
        float(np.mean(temps[valid])),
    )


_BANK_GROUP_POINTS = (
    "StrNMod",
    "StrSt",
    "StrConFail",
    "StrSoC",
    "StrSoH",
    "StrA",
    "StrCellVMax",
    "StrCellVMaxMod",
    "StrCellVMin",
    "StrCellVMinMod",
    "StrCellVAvg",
    "StrModTmpMax",
    "StrModTmpMaxMod",
    "StrModTmpMin",
    "StrModTmpMinMod",
    "StrModTmpAvg",
    "StrDisRsn",
    "StrConSt",
    "StrEvt1",
    "StrEvt2",
    "StrEvtVnd1",
    "StrEvtVnd2",
    "StrSetEna",
    "StrSetCon",
)
