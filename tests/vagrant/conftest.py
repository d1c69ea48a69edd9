"""Fixtures for the Vagrant backend's tests: what is installed here, the locally built test box, and checks
that a lab left nothing behind (VMs, volumes, libvirt networks, vagrant processes).

The VM tests need root, vagrant, vagrant-libvirt and a running libvirtd (``.ci/vagrant.sh`` sets them up).
Where they are missing the tests are skipped with the reason, except under CI (``CI`` set), where a missing
piece is a failure: CI must not pass by running none of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vmhelpers import CACHE, missing_for_vms, require_or_skip  # noqa: E402


@pytest.fixture(scope="session")
def vm_ready():
    require_or_skip(missing_for_vms())


@pytest.fixture(autouse=True)
def shared_wheelhouse(monkeypatch):
    if os.access(CACHE.parent, os.W_OK) or os.access(CACHE, os.W_OK):
        monkeypatch.setenv("LABKIT_WHEELHOUSE_CACHE", str(CACHE / "wheelhouse"))


@pytest.fixture(scope="session")
def test_box(vm_ready, tmp_path_factory):
    """The test box (built once per recipe, cached in /var/cache/labkit) and a lab file that uses it."""
    import time

    from labkit.testbox import build_test_box

    t0 = time.monotonic()
    tb = build_test_box()
    path = tmp_path_factory.mktemp("box") / "box.yaml"
    path.write_text(tb.lab_yaml("qemu"))
    return {"box": tb, "lab_yaml": path, "seconds": round(time.monotonic() - t0, 1)}


