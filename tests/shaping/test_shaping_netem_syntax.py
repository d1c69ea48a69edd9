"""Every netem-engine command line of every shipped profile is accepted by the real tc.

This kernel has no sch_netem, so the netem engine cannot run here. tc parses a command completely before
asking the kernel, so a command it cannot parse fails with its usage text (exit 1), while a well-formed netem
command fails only with the kernel's "Specified qdisc kind is unknown" (exit 2). Where the kernel has netem
the commands simply succeed. Either way the command lines are proven well-formed and the HTB parts applied.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from labkit import tc
from labkit.profiles import load_profiles

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tc"),
                                                   reason="needs root and tc")]
NS = "shtc"


@pytest.fixture
def veth():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2"], check=True)
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def _tc(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(f"ip netns exec {NS} {cmd}", shell=True, capture_output=True, text=True)


def test_netem_command_lines_parse(veth):
    checked = 0
    for p in load_profiles().profiles.values():
        plan = tc.plan(p, uplink_iface="eth1", downlink_iface="eth2", engine="netem")
        for direction, cmds in plan.tc.items():
            _tc(f"tc qdisc del dev {plan.ifaces[direction]} root")
            for cmd in cmds:
                r = _tc(cmd)
                if "netem" in cmd:
                    assert r.returncode == 0 or "Specified qdisc kind is unknown" in r.stderr, (p.name, cmd, r.stderr)
                    assert "Usage" not in r.stderr and "What is" not in r.stderr, (p.name, cmd, r.stderr)
                    checked += 1
                else:
                    assert r.returncode == 0, (p.name, cmd, r.stderr)
    assert checked >= 20
