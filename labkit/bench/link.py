"""The bench's view of the link: apply a profile (read back), clear it, and what a profile promises.

A thin adapter over labkit.profiles and labkit.shaping so the bench runner does not depend on their
internals.
"""

from __future__ import annotations

import shlex
from typing import Any

from labkit.inventory import Inventory
from labkit.labdir import LabDir
from labkit.remote import Remote


def known_profiles() -> list[str]:
    from labkit import profiles

    return profiles.names()


def spec(name: str) -> dict[str, Any]:
    from labkit import profiles

    return profiles.get(name).as_dict()


def expected(name: str) -> dict[str, Any]:
    """added_rtt_ms, uplink/downlink rate (bit/s) and loss (%) the profile promises."""
    from labkit import profiles

    return profiles.get(name).expected()


def apply(remote: Remote, inventory: Inventory, labdir: LabDir, name: str, engine: str | None = None) -> dict[str, Any]:
    from labkit import shaping

    return shaping.apply(remote, inventory, name, engine=engine, labdir=labdir)


def reverify(remote: Remote, inventory: Inventory, name: str, engine: str | None = None) -> dict[str, Any]:
    """Check that the gateway still holds profile ``name`` as applied, value by value, changing nothing
    (raises ShapingError naming every difference)."""
    from labkit import shaping

    return shaping.reverify(remote, inventory, name, engine=engine)


def clear(remote: Remote, inventory: Inventory, labdir: LabDir) -> dict[str, Any]:
    from labkit import shaping

    return shaping.clear(remote, inventory, labdir=labdir)


def end_state(remote: Remote, inventory: Inventory) -> dict[str, Any]:
    """What the link did during a cell: the read-back (with the engine's own counters: drops, lateness)
    and the gateway's qdisc statistics (sent, dropped, overlimits, backlog) per data interface."""
    import json

    from labkit import shaping

    gw = inventory.gateway
    stats = {}
    for iface in sorted(gw.ifaces.values()):
        out = remote.run(gw, f"tc -s -j qdisc show dev {shlex.quote(iface)}", sudo=True, check=False).stdout
        try:
            stats[iface] = json.loads(out or "[]")
        except json.JSONDecodeError:
            stats[iface] = {"raw": out}
    return {"read_back": shaping.read_back(remote, inventory), "tc_stats": stats}


def engine_processes(inventory: Inventory) -> dict[str, str]:
    """Pid files of the shaping engine's processes on the gateway (for the monitor)."""
    from labkit import shaping

    return shaping.engine_pidfiles(inventory)


def use_profiles_files(files: list[str]) -> None:
    """Read these profiles files (``--profiles``: profiles and schedules) after the shipped profiles.yaml, as
    every labkit command reads ``$LABKIT_PROFILES``: they are appended to it for this process."""
    import os

    from labkit.profiles import PROFILES_ENV

    have = [p for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    extra = [f for f in files if f not in have]
    if extra:
        os.environ[PROFILES_ENV] = os.pathsep.join(have + extra)


def profile_set():
    """The profiles and schedules every bench command reads (shipped + ``$LABKIT_PROFILES``)."""
    from labkit import profiles

    return profiles.default_set()


def schedule(name: str):
    """A schedule by name, checked against the profiles (ConfigError with file, line and field)."""
    return profile_set().schedule(name)


def reverify_schedule(remote: Remote, inventory: Inventory, result: dict[str, Any], sched) -> dict[str, Any]:
    """After a schedule (``labkit.schedules.run``'s ``result``): check that the gateway holds the phase the
    schedule left (``holds``) in the schedule's frame, value by value, changing nothing; raises ShapingError
    naming every difference."""
    import time

    from labkit import schedules, shaping

    ps = profile_set()
    holds = result.get("holds")
    if not holds:
        raise shaping.ShapingError(f"schedule {sched.name!r}: no phase holds the link ({result.get('ended_by')})")
    _frame, by_name = schedules.plans(sched, ps, inventory, result["engine"], result.get("seed", 1))
    state = shaping.read_back(remote, inventory)
    problems = shaping.verify(by_name[holds], ps.get(holds), state)
    state.update({"profile": holds, "schedule": sched.name, "engine": result["engine"], "problems": problems,
                  "verified": not problems, "reverified_at": time.time()})
    if problems:
        raise shaping.ShapingError(f"schedule {sched.name!r} on {inventory.gateway.name}: the link no longer holds "
                                   f"its last phase {holds!r} as planned: {'; '.join(problems)}")
    return state
