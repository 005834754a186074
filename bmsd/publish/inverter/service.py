"""The inverters of a daemon: one link per configured inverter, driven from the event loop.

The service builds an :class:`~bmsd.publish.inverter.link.InverterLink` per enabled
``[inverters.NAME]``, hands each bus's received frames to the links on that bus, tells the
links about each new PackState (a control-loop tick hook), and runs one task that sends what
the links have due, sleeping until the next due time. Frames leave from the event loop, never
through kernel-side periodic sending: a hung daemon falls silent.

Supervision enters the fault table through ``Controller.external``:
``inverter_keepalive_overdue_s`` (the most overdue keep-alive, past its timeout) and
``inverter_limit_excess_a`` (measured current beyond the limits sent to all inverters, past
the margin), each None while not judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import can

from bmsd.canbus.bus import CanInterface
from bmsd.config import Config, InverterConfig
from bmsd.control.supervision import ExternalInputs
from bmsd.model.bms import BmsMode
from bmsd.model.state import PackState
from bmsd.publish.inverter.link import InverterLink, LinkSettings
from bmsd.publish.inverter.profile import Profile, load_profile
from bmsd.publish.inverter.supervision import limit_excess_a, worst
from bmsd.publish.inverter.values import PackInfo

log = logging.getLogger(__name__)

KEEPALIVE_INPUT = "inverter_keepalive_overdue_s"
LIMIT_INPUT = "inverter_limit_excess_a"


def pack_info(config: Config, cell_capacity_ah: float, cell_nominal_v: float) -> PackInfo:
    pack = config.pack
    return PackInfo(
        modules_per_string=pack.modules_per_string,
        strings=pack.strings,
        cells_per_module=pack.cells_per_module,
        temps_per_module=pack.temps_per_module,
        nominal_capacity_ah=cell_capacity_ah * pack.cells_in_parallel * pack.strings,
        nominal_voltage_v=cell_nominal_v * pack.modules_per_string * pack.cells_per_module,
        fault_quantities={key: spec.quantity for key, spec in config.protection.faults.items()},
    )


def link_settings(inverter: InverterConfig, profile: Profile) -> LinkSettings:
    """The link's settings: the config's where given, else the profile's."""
    spec = profile.spec
    supervision = inverter.supervision
    timeout: float | None = None
    if supervision.keepalive and spec.keepalive is not None:
        timeout = supervision.keepalive_timeout_s or spec.keepalive.timeout_s
    return LinkSettings(
        send_on=inverter.send_on,
        stale_after_s=spec.stale_after_s,  # the config's override is merged into the profile
        keepalive_timeout_s=timeout,
        keepalive_action=supervision.keepalive_action,
        keepalive_grace_s=supervision.keepalive_grace_s,
        startup_grace_s=supervision.startup_grace_s,
        limit_check=supervision.limit_check,
        limit_margin_a=supervision.limit_margin_a,
        limit_response_s=supervision.limit_response_s,
    )


@dataclass(slots=True)
class _Entry:
    link: InverterLink
    bus: str


class InverterService:
    """Every enabled inverter of a config, its links and the task that sends for them."""

    def __init__(
        self,
        config: Config,
        info: PackInfo,
        started_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.entries: dict[str, _Entry] = {}
        for name, inverter in config.inverters.items():
            if not inverter.enabled:
                continue
            profile = load_profile(config.path(inverter.profile), inverter.profile_overrides())
            settings = link_settings(inverter, profile)
            self.entries[name] = _Entry(
                InverterLink(name, profile, info, settings, started_at), inverter.bus
            )
        self._latest: PackState | None = None
        self._wake = asyncio.Event()

    @property
    def links(self) -> list[InverterLink]:
        return [entry.link for entry in self.entries.values()]

    def buses(self) -> set[str]:
        return {entry.bus for entry in self.entries.values()}

    def receiver(
        self, bus_name: str, interface: CanInterface, *, count: bool = True
    ) -> Callable[[can.Message, float], None]:
        """The frame callback of a bus: each inverter on it sees every frame. ``count``:
        count frames no inverter knows as unknown (off when another receiver shares the bus)."""
        links = [e.link for e in self.entries.values() if e.bus == bus_name]
        stats = interface.stats
        wake = self._wake

        def on_frame(message: can.Message, received_at: float) -> None:
            known = False
            for link in links:
                try:
                    known = link.on_frame(message, received_at) or known
                except Exception:  # a frame no link can handle is counted and dropped
                    # A bug, not bad data (that is counted inside the link): logged each time.
                    log.exception("inverter %s: frame %s dropped", link.name, message)
                    link.stats.bad_frames += 1
                    known = True
            if known:
                wake.set()
            elif count:
                stats.unknown_frames += 1

        return on_frame

    def on_state(self, state: PackState) -> None:
        """Control-loop tick hook."""
        self._latest = state
        for entry in self.entries.values():
            entry.link.on_state(state)
        self._wake.set()

    def register_supervision(self, external: ExternalInputs) -> None:
        if not self.entries:
            return
        external.register(KEEPALIVE_INPUT, self.keepalive_overdue_s)
        external.register(LIMIT_INPUT, self.limit_excess_a)

    def keepalive_overdue_s(self, now: float) -> float | None:
        return worst([link.keepalive_overdue_s(now) for link in self.links])

    def limit_excess_a(self, now: float) -> float | None:
        """Measured current beyond the sum of the limits sent to every checked inverter, past
        the largest margin; None when not judged (no check, nothing sent, no current,
        contactors not closed)."""
        state = self._latest
        if state is None or state.snapshot.pack_current_a is None:
            return None
        if state.mode is not BmsMode.CLOSED:
            # Precharge current and the opening after a fault are the battery's own doing;
            # with the contactors open no inverter can draw current.
            return None
        allowed = [(link, link.allowed_currents(now)) for link in self.links]
        checked = [(link, a) for link, a in allowed if a is not None]
        if not checked:
            return None
        charge = sum(a[0] for _, a in checked)
        discharge = sum(a[1] for _, a in checked)
        margin = max(link.settings.limit_margin_a for link, _ in checked)
        return limit_excess_a(state.snapshot.pack_current_a, charge, discharge) - margin

    async def run(self, buses: dict[str, CanInterface], stop: asyncio.Event) -> None:
        """Send what is due until ``stop``; sleep until the next due time or a wake-up."""
        if not self.entries:
            return
        while not stop.is_set():
            now = self._clock()
            wakeup = float("inf")
            for entry in self.entries.values():
                link = entry.link
                try:
                    messages = link.poll(now)
                except Exception:  # a bug in one profile must not stop the daemon
                    # Nothing goes out for this poll: the inverter's own timeout is the
                    # fail-safe; the error is logged every time, never silenced.
                    log.exception("inverter %s: building frames failed", link.name)
                    link.stats.send_errors += 1
                    messages = []
                for message in messages:
                    if not buses[entry.bus].send(message):
                        link.stats.send_errors += 1
                wakeup = min(wakeup, link.next_wakeup(now))
            self._wake.clear()
            timeout = min(max(wakeup - self._clock(), 0.0), 0.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        log.info("inverter sender stopped")
