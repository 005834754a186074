"""SunSpec Evt1 from the native fault categories, bit by bit."""

from __future__ import annotations

import pytest

from bmsd.publish.modbus.sunspec import evt1_bits


@pytest.mark.parametrize(
    ("alarm", "warning", "bits"),
    [
        (0, 0, 0),
        (1 << 0, 0, 1 << 9),  # cell over-voltage alarm
        (0, 1 << 0, 1 << 10),  # ... warning
        (1 << 1, 1 << 1, 1 << 11 | 1 << 12),  # under-voltage alarm and warning
        (1 << 2, 0, 1 << 1),  # over-temperature alarm
        (0, 1 << 3, 1 << 4),  # under-temperature warning
        (1 << 4, 0, 1 << 5),  # charge over-current alarm
        (0, 1 << 5, 1 << 8),  # discharge over-current warning
        (0, 1 << 6, 1 << 17),  # voltage imbalance
        (1 << 7, 0, 1 << 18),  # temperature imbalance alarm
        (1 << 8, 0, 1 << 0),  # communication
        (0, 1 << 10, 1 << 20),  # contactor
        (1 << 11, 0, 1 << 25),  # daemon: other alarm
        (0, 1 << 12, 1 << 26),  # EMS heartbeat: other warning
        (1 << 15, 1 << 9, 1 << 25 | 1 << 26),
    ],
)
def test_evt1(alarm: int, warning: int, bits: int) -> None:
    assert evt1_bits(alarm, warning) == bits
