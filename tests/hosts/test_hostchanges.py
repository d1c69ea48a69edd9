"""Changes on machines labkit did not make are journalled first and undone exactly (fixture machines)."""

from __future__ import annotations

import pytest

from labkit.backends.hosts import discover
from labkit.errors import ConfigError, LabkitError
from labkit.hostchanges import HostChanges
from labkit.labdir import LabDir
from labkit.remote import Remote

pytestmark = pytest.mark.root

SNAPSHOT = ("cat /proc/sys/net/ipv4/ip_default_ttl /proc/sys/net/ipv4/tcp_rmem; ip -4 route show table main; "
            "ls -la /tmp | sed 1d | awk '{print $1, $3, $NF}'")


def snapshots(remote, inv):
    return {h.name: remote.run(h, SNAPSHOT).stdout for h in inv.hosts}


def test_changes_are_undone_exactly(machines, tmp_path, home):
    inv = discover(machines.inventory("yaml", path=tmp_path / "inv.yml"), lab="t1")
    labdir = LabDir("t1")
    labdir.create()
    with Remote(inv) as remote:
        # the user's own things, which labkit must leave (a route labkit replaces, a directory it must not take)
        remote.run("evse1", "ip route add 10.97.0.0/24 via 192.168.20.12 dev eth1", sudo=True)
        remote.run("evse1", "mkdir /tmp/mine && touch /tmp/mine/keep")
        try:
            before = snapshots(remote, inv)
            hc = HostChanges(labdir, remote)
            hc.set_sysctl("evse1", "net.ipv4.ip_default_ttl", "33")
            hc.set_sysctl("gw", "net.ipv4.tcp_rmem", "4096 131072 6291456")
            hc.set_sysctl("cpo", "net.ipv4.ip_default_ttl", before["cpo"].split()[0])  # no change: no entry
            hc.route("evse1", "10.97.0.0/24", "192.168.20.1", "eth1")
            hc.route("cpo", "10.98.0.0/24", "192.168.10.1", "eth1")
            hc.make_dir("evse1", "/tmp/labkit-t1")
            remote.run("evse1", "touch /tmp/labkit-t1/results.csv")
            with pytest.raises(LabkitError, match="evse1: cannot create /tmp/mine: .*File exists"):
                hc.make_dir("evse1", "/tmp/mine")
            for bad in ("/tmp/../etc", "tmp/x", "/tmp", "/tmp/x/"):
                with pytest.raises(ConfigError):
                    hc.make_dir("evse1", bad)
            with pytest.raises(ConfigError):
                hc.set_sysctl("gw", "net.ipv4.ip_forward; reboot", "1")
            assert [e["kind"] for e in hc.entries()] == ["host-sysctl", "host-sysctl", "host-route", "host-route",
                                                        "host-dir", "host-dir"]
            during = snapshots(remote, inv)
            assert during["evse1"].startswith("33\n") and "10.97.0.0/24 via 192.168.20.1 dev eth1" in during["evse1"]
            assert "labkit-t1" in during["evse1"] and "10.98.0.0/24 via 192.168.10.1" in during["cpo"]
            assert during["gw"].split()[1:4] == ["4096", "131072", "6291456"]
            assert hc.undo() == []
            assert snapshots(remote, inv) == before
            assert hc.undo() == []  # twice: harmless
            assert snapshots(remote, inv) == before
        finally:
            remote.run("evse1", "ip route del 10.97.0.0/24; rm -rf /tmp/mine", sudo=True, check=False)
