"""The fleet's scenarios: ``thesis-2021`` (the dissertation's charger) and ``session`` (a charging session).

``thesis-2021`` reproduces the charger of Rosa Neto (2021), netoalceu/OCPP_PUCCAMP: BootNotification, a
Heartbeat every 2 s (the next one 2 s after the previous reply), Authorize, start of a transaction,
1000 meter values with one sampled value each, 100 ms after the previous reply, stop; the original also
slept 100 ms between its state-machine steps. What the original did wrongly and how it is mapped here:

* It spoke OCPP 2.0 (ocpp 0.6.4's ``v20``) and "started" and "stopped" the transaction by sending
  ``RequestStartTransaction`` and ``RequestStopTransaction`` from the charger to the CPO. Those are
  CSMS-initiated messages (1.6: RemoteStart/RemoteStopTransaction), answered by the charger, not sent
  by it. Here the charger says what a charger says: 1.6 StartTransaction / StopTransaction; 2.0.1
  TransactionEvent Started / Ended.
* Its meter values were 2.0 ``MeterValues`` with ``evseId`` 123 and no transaction: in 2.0.1 meter
  values of a transaction travel in ``TransactionEvent`` (Updated, MeterValuePeriodic); in 1.6 in
  ``MeterValues`` with the ``transactionId``. That is what is sent here (so in 2.0.1 the thesis's
  "MeterValues" timings correspond to the ``TransactionEvent`` rows).
* Its stations were separate containers; here they share an event loop, so their pauses carry a small
  seeded jitter (``--jitter``, default 20 %) to keep them from locking into step (Station.pause).
* Its state machine sent one more meter value than configured (it counted down to zero inclusively);
  here exactly ``meter_values`` are sent.
* It started the transaction whatever Authorize answered. Here an answer other than Accepted (or a
  CallError) ends the station's scenario before the transaction, recorded as an ``authorize_rejected``
  event; no answer at all (offline, timeout) does not (``Station.authorize``).

``session``: Boot, StatusNotification Available, then per session: think time (exponential, mean
``think_time_s``), plug-in (1.6 Preparing / 2.0.1 Occupied), Authorize (refused: back to Available, the
session ends there), start, 1.6 Charging, meter values
every ``meter_interval_s`` on a fixed cadence with energy, power, current, voltage and SoC (labkit.sim.ev),
until the EV is full, ``charge_time_s`` has passed or the run's duration ends, stop, 1.6 Finishing, then
Available. Repeated ``sessions`` times (0: until ``duration_s``). Heartbeats at the interval the CSMS gave in
its BootNotification reply unless ``heartbeat_s`` is set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit.sim.ev import EV, Meter
from labkit.sim.messages import Sample

if TYPE_CHECKING:
    from labkit.sim.station import Station


@dataclass
class ScenarioParams:
    """Scenario parameters (seconds, counts). Defaults depend on the scenario (see ``DEFAULTS``)."""

    heartbeat_s: float | None = None
    meter_values: int = 1000
    meter_interval_s: float = 0.1
    step_interval_s: float = 0.1
    sessions: int = 1
    think_time_s: float = 60.0
    charge_time_s: float = 3600.0
    max_power_w: float = 11_000.0
    id_tag: str = "LABKIT01"


DEFAULTS: dict[str, dict[str, Any]] = {
    "thesis-2021": {"heartbeat_s": 2.0, "meter_values": 1000, "meter_interval_s": 0.1, "step_interval_s": 0.1},
    "session": {
        "heartbeat_s": None,
        "meter_interval_s": 30.0,
        "step_interval_s": 1.0,
        "sessions": 1,
        "think_time_s": 60.0,
        "charge_time_s": 3600.0,
    },
}


async def boot_by_deadline(st: Station) -> bool:
    """BootNotification until accepted; False when the fleet's ``--duration`` ends first (a station that cannot
    connect, refused or without a route, stops at the deadline like the others)."""
    deadline = st.fleet.deadline
    if deadline is None:
        await st.boot()
        return True
    try:
        await asyncio.wait_for(st.boot(), timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return False
    return True


async def thesis_2021(st: Station, p: ScenarioParams) -> None:
    d = st.dialect
    if not await boot_by_deadline(st):
        return
    st.start_heartbeat(p.heartbeat_s or 2.0, immediately=True)
    await st.pause(p.step_interval_s)
    if not await st.authorize(p.id_tag):  # refused: no transaction (recorded as authorize_rejected)
        st.stop_heartbeat()
        return
    await st.pause(p.step_interval_s)
    tx = st.new_tx(p.id_tag, 0)
    action, build = d.tx_start(tx)
    await st.tx(action, build, on_result=lambda r: d.on_tx_start_result(tx, r))
    await st.pause(p.step_interval_s)
    energy = 0.0
    for _ in range(p.meter_values):
        energy += 10.0
        await st.tx(*d.tx_meter(tx, Sample(energy_wh=energy), one=True))
        await st.pause(p.meter_interval_s)
    await st.tx(*d.tx_stop(tx, int(energy), "Local"))
    st.stop_heartbeat()


async def session(st: Station, p: ScenarioParams) -> None:
    d = st.dialect
    rng = st.rng
    deadline = st.fleet.deadline

    def over() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if not await boot_by_deadline(st):
        return
    st.start_heartbeat(p.heartbeat_s or st.boot_interval_s or 300.0)
    await st.call_status("Available")
    meter = Meter(rng, register_wh=rng.uniform(0, 1e6))
    done = 0
    while (p.sessions == 0 or done < p.sessions) and not over():
        think = rng.expovariate(1.0 / p.think_time_s) if p.think_time_s > 0 else 0.0
        if deadline is not None:
            think = min(think, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(think)
        if over():
            break
        done += 1
        ev = EV.arrive(rng, p.max_power_w)
        await st.call_status("Preparing")
        if not await st.authorize(p.id_tag):  # refused: this session ends before it starts
            await st.call_status("Available")
            continue
        tx = st.new_tx(p.id_tag, int(meter.register_wh))
        action, build = d.tx_start(tx)
        await st.tx(action, build, on_result=lambda r, tx=tx: d.on_tx_start_result(tx, r))
        await st.call_status("Charging")
        start = time.monotonic()
        k = 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, start + k * p.meter_interval_s - time.monotonic()))
            sample = meter.advance(ev, p.meter_interval_s)
            await st.tx(*d.tx_meter(tx, sample))
            if ev.full or time.monotonic() - start >= p.charge_time_s or over():
                break
        await st.tx(*d.tx_stop(tx, int(meter.register_wh), "EVDisconnected" if ev.full else "Local"))
        await st.call_status("Finishing")
        await st.call_status("Available")
    st.stop_heartbeat()


SCENARIOS: dict[str, Callable[[Station, ScenarioParams], Awaitable[None]]] = {
    "thesis-2021": thesis_2021,
    "session": session,
}


def expected_calls(name: str, p: ScenarioParams) -> int | None:
    """Scenario calls per station, heartbeats excluded (None when it depends on time or chance)."""
    if name == "thesis-2021":
        return 4 + p.meter_values
    return None
