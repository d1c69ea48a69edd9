"""Fixtures of the hosts backend's tests: machines made by tests/hosts/machines.py (not by labkit)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from machines import Machines, sweep_stale  # noqa: E402


@pytest.fixture(scope="module")
def machines():
    """1 CPO, 1 gateway and 4 EVSE machines, each with its own sshd; removed afterwards, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, a user, sudoers and sshd")
    sweep_stale()  # what a killed earlier run left
    m = Machines(n_evse=4)
    try:
        m.build()
        yield m
    finally:
        failed = m.teardown()
        assert not failed, failed
        left = m.leftovers()
        assert not left, f"left behind: {left}"
