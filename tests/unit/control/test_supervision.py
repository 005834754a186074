"""External supervision inputs: providers are asked with the tick's time, one owner per name."""

from __future__ import annotations

import pytest

from bmsd.control.supervision import ExternalInputs


def test_providers_are_asked_with_the_time_given() -> None:
    inputs = ExternalInputs()
    last_seen_s = 10.0
    inputs.register("heartbeat_age_s", lambda now: now - last_seen_s)
    inputs.register("not_judged", lambda now: None)
    assert inputs.values(12.5) == {"heartbeat_age_s": 2.5, "not_judged": None}
    assert inputs.values(20.0)["heartbeat_age_s"] == 10.0


def test_a_name_has_one_owner() -> None:
    inputs = ExternalInputs()
    inputs.register("keepalive_age_s", lambda now: 0.0)
    with pytest.raises(ValueError, match="keepalive_age_s"):
        inputs.register("keepalive_age_s", lambda now: 1.0)
