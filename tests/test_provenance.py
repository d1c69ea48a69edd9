"""The host facts every run records (labkit.bench.provenance), gathered by the real shell script."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from labkit.bench.provenance import HOST_SCRIPT, _parse

SBIN = "/usr/sbin:/sbin"


@pytest.mark.skipif(not shutil.which("tc", path=SBIN) or not shutil.which("sysctl", path=SBIN),
                    reason="needs tc and sysctl in an sbin directory, as Debian and Ubuntu install them")
def test_sbin_tools_found_with_an_unprivileged_path():
    """An SSH user's PATH (vagrant's on a VM) has no sbin: tc, sysctl and modinfo must still be found."""
    proc = subprocess.run(["sh", "-c", HOST_SCRIPT], capture_output=True, text=True,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    facts = _parse(proc.stdout)
    assert facts["tc"].startswith("tc utility"), facts
    assert facts["tcp_congestion_control"], facts
    assert facts["kernel"] and int(facts["cpus"]) >= 1
    assert facts["netem"] in ("module", "builtin", "absent")
