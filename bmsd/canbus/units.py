"""DBC signal units: what they measure, and whether a mapping's scale agrees with them.

A protocol file reads DBC signals into bmsd's units (V, A, °C) as ``value * scale``; an
inverter profile writes bmsd's values into DBC signals the same way. Either is refused at load
when a signal's unit measures another quantity (the pack current mapped to a signal in mV, a
SOC in %, sent into a signal in V) or disagrees with the scale (mA read as A: a thousand times
the current). A signal with no unit, or a unit not listed here, cannot be judged and is taken
as the scale says.
"""

from __future__ import annotations

import math
from typing import Literal

Measured = Literal["voltage", "current", "temperature", "temperature in kelvin"]

# unit (lower case, trimmed) -> the factor that turns a value in it into bmsd's unit. Kelvin
# is a quantity of its own: °C and K differ by an offset no scale can mend (273 K too hot).
UNIT_SCALES: dict[Measured, dict[str, float]] = {
    "voltage": {"v": 1.0, "volt": 1.0, "volts": 1.0, "mv": 1e-3, "kv": 1e3, "uv": 1e-6, "µv": 1e-6},
    "current": {"a": 1.0, "amp": 1.0, "amps": 1.0, "ampere": 1.0, "ma": 1e-3, "ka": 1e3},
    "temperature": {"degc": 1.0, "°c": 1.0, "deg c": 1.0, "celsius": 1.0},
    "temperature in kelvin": {"k": 1.0, "kelvin": 1.0},
}
SI_UNITS: dict[Measured, str] = {
    "voltage": "V",
    "current": "A",
    "temperature": "°C",
    "temperature in kelvin": "K",
}


def quantity_of(unit: str) -> tuple[Measured, float] | None:
    """What a unit measures and its factor to bmsd's unit; None when it is not listed."""
    key = unit.strip().lower()
    for quantity, scales in UNIT_SCALES.items():
        if key in scales:
            return quantity, scales[key]
    return None


KELVIN_OFFSET = 273.15


def unit_problem(
    dbc_unit: str,
    quantity: Measured | None,
    scale: float | None,
    *,
    sending: bool = False,
    offset: float = 0.0,
) -> str | None:
    """Why a signal in ``dbc_unit`` cannot carry a ``quantity`` at ``scale``; None if it can.

    Reading, bmsd's value is ``signal * scale``; sending (``sending``), the signal is
    ``value * scale``. ``quantity`` None: a value in another unit (%, Ah), which no signal in
    a listed unit can carry. The scale is judged by its size (a negative one flips a sensor's
    sign); ``scale`` None: the quantity only. A temperature in °C and a signal in K agree when
    ``offset`` converts (-273.15 reading, +273.15 sending) at a scale of 1.
    """
    found = quantity_of(dbc_unit)
    if found is None:
        return None
    measured, factor = found
    if measured == "temperature in kelvin" and quantity == "temperature":
        converting = KELVIN_OFFSET if sending else -KELVIN_OFFSET
        if math.isclose(offset, converting, abs_tol=0.01) and (
            scale is None or math.isclose(scale, 1.0, rel_tol=1e-6)
        ):
            return None
        return f"is in {dbc_unit!r}: scale must be 1 and offset {converting:g} for °C"
    if measured != quantity:
        wanted = f"a {quantity}" if quantity is not None else "this value"
        return f"is in {dbc_unit!r}, a {measured}, not {wanted}"
    expected = 1.0 / factor if sending else factor
    if scale is None or math.isclose(abs(scale), expected, rel_tol=1e-6):
        return None
    direction = f"from {SI_UNITS[quantity]}" if sending else f"to give {SI_UNITS[quantity]}"
    must = f"scale must be {expected:g} (or {-expected:g}) {direction}"
    return f"is in {dbc_unit!r}: {must}, not {scale:g}"
