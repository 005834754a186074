"""What the Modbus per-address connection limit counts by."""

from __future__ import annotations

import pytest

from bmsd.publish.modbus.server import address_group


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("192.0.2.8", "192.0.2.8"),  # a neighbour is another host
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack socket: the same host
        ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),  # any address of its /64
        ("2001:db8:1:3::7", "2001:db8:1:3::/64"),  # the next /64 is another
        ("fe80::1%eth0", "fe80::/64"),  # a link-local address with its zone
        ("not-an-address", "not-an-address"),  # a transport that reports a name: as given
    ],
)
def test_address_group(address: str, group: str) -> None:
    assert address_group(address) == group
