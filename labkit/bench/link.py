"""The bench's view of the link: apply a profile (read back), clear it, and what a profile promises.

A thin adapter over labkit.profiles and labkit.shaping so the bench runner does not depend on their
internals.
"""

from __future__ import annotations

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


def clear(remote: Remote, inventory: Inventory, labdir: LabDir) -> dict[str, Any]:
    from labkit import shaping

    return shaping.clear(remote, inventory, labdir=labdir)


def engine_processes(inventory: Inventory) -> dict[str, str]:
    """Pid files of the shaping engine's processes on the gateway (for the monitor)."""
    from labkit import shaping

    return shaping.engine_pidfiles(inventory)
