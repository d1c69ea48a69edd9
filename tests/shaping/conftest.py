"""Fixtures for the shaping tests: profiles written inline, and (root only) a three-namespace data path."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "tc", "iptables", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture
def topo(tmp_path):
    """EVSE -> gateway -> CPO in namespaces sh<pid>-*, removed afterwards whatever happens."""
    why = _can_netns()
    if why:
        pytest.skip(why)
    from shaping_topo import Topo, labkit_bin

    # unique to this run: other suites on this machine build namespaces too
    t = Topo(f"sh{os.getpid() % 100000}", tmp_path / "hosts", labkit_bin())
    try:
        t.up()
        yield t
    finally:
        t.down()


@pytest.fixture
def remote(topo):
    from shaping_topo import LocalNetnsRemote

    r = LocalNetnsRemote(topo)
    yield r
    # stop anything a test left running (its own engine only)
    r.stop(topo.inventory.gateway, "shaper", timeout=2)
