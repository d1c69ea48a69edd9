"""The hosts backend's discovery against the fixture's machines: real sshd, real sudo, real namespaces."""

from __future__ import annotations

import re
import time

import pytest
from machines import sh

from labkit import pathcheck
from labkit.backends.hosts import discover
from labkit.errors import ConfigError
from labkit.remote import Remote

pytestmark = pytest.mark.root


@pytest.mark.parametrize("fmt,addresses", [("yaml", True), ("ini", False)])
def test_discover_finds_interfaces_and_the_path_crosses_the_gateway(machines, tmp_path, fmt, addresses):
    path = machines.inventory(fmt, addresses=addresses, path=tmp_path / f"inv.{'yml' if fmt == 'yaml' else 'ini'}")
    t0 = time.monotonic()
    inv = discover(path, lab="t1")
    took = time.monotonic() - t0
    assert took < 10
    assert [(h.name, h.role) for h in inv.hosts] == [("cpo", "cpo"), ("gw", "gateway"), ("evse1", "evse"),
                                                     ("evse2", "evse"), ("evse3", "evse"), ("evse4", "evse")]
    for h in inv.hosts:
        m = machines.machine(h.name)
        assert (h.ssh_host, h.user, h.sudo) == (m.mgmt, machines.user, True)
        assert h.addresses == m.data and h.ifaces == m.ifaces
        assert h.known_hosts == str(machines.known_hosts)
    assert [h.index for h in inv.evses] == [1, 2, 3, 4]
    # labkit's own path check, over SSH as the non-root user, accepts these machines
    with Remote(inv) as remote:
        evidence = pathcheck.check(remote, inv)
    assert evidence["ok"] and {p["src"] for p in evidence["pairs"]} == {"cpo", "evse1", "evse2", "evse3", "evse4"}


def refused(machines, tmp_path, expect: str, **kw) -> str:
    path = machines.inventory("ini", path=tmp_path / "inv.ini", **kw)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        discover(path, lab="t1", connect_timeout=5)
    msg = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in msg
    assert re.match(rf"^{re.escape(str(path))}:\d+: host ", msg), msg
    assert re.search(expect, msg), msg
    assert time.monotonic() - t0 < 15
    return msg


def test_unreachable_host(machines, tmp_path):
    refused(machines, tmp_path, r"host evse2: cannot reach .*:2 over SSH", extra={"evse2": {"ansible_port": 2}})


def test_wrong_key(machines, tmp_path):
    other = tmp_path / "other_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    refused(machines, tmp_path, r"host gw: cannot reach .*(Authentication failed|authentication)",
            extra={"gw": {"ansible_ssh_private_key_file": str(other)}})


def test_unknown_host_key(machines, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(machines.known_hosts.read_text().replace(machines.machine("cpo").mgmt + " ", "10.9.9.9 "))
    refused(machines, tmp_path, r"host cpo: cannot reach .*host key not in .*known_hosts",
            extra={"cpo": {"labkit_known_hosts": str(kh)}})


def test_no_sudo(machines, tmp_path):
    refused(machines, tmp_path, rf"host evse1: no passwordless sudo for {machines.nosudo_user}",
            extra={"evse1": {"ansible_user": machines.nosudo_user}})


def test_given_address_not_on_the_host(machines, tmp_path):
    refused(machines, tmp_path, r"host evse2: labkit_evse_address 192.168.20.99 is on none of its interfaces",
            extra={"evse2": {"labkit_evse_address": "192.168.20.99"}})


def test_gateway_with_one_interface(machines, tmp_path):
    gw = machines.machine("gw")
    sh("ip", "-n", gw.ns, "addr", "add", "192.168.20.77/24", "dev", "eth1")
    try:
        refused(machines, tmp_path, r"host gw: a gateway needs one interface per data network, but eth1 holds",
                extra={"gw": {"labkit_evse_address": "192.168.20.77"}})
    finally:
        sh("ip", "-n", gw.ns, "addr", "del", "192.168.20.77/24", "dev", "eth1")


def test_two_addresses_in_the_data_network_need_the_variable(machines, tmp_path):
    e = machines.machine("evse1")
    sh("ip", "-n", e.ns, "addr", "add", "192.168.20.78/24", "dev", "eth1")
    try:
        refused(machines, tmp_path, r"host evse1: holds several addresses in the evse network .* "
                r"set labkit_evse_address", addresses=False)
    finally:
        sh("ip", "-n", e.ns, "addr", "del", "192.168.20.78/24", "dev", "eth1")


def test_hostile_paths_are_only_paths(machines, tmp_path, monkeypatch):
    """Key and known_hosts paths with shell syntax in them are read as files, never run."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "it's $(touch pwned) `touch pwned2`"
    d.mkdir()
    key, kh = d / "key; touch pwned3", d / "known hosts $HOME"
    key.write_bytes(machines.key_file.read_bytes())
    key.chmod(0o600)
    kh.write_bytes(machines.known_hosts.read_bytes())
    extra = {m.name: {"ansible_ssh_private_key_file": str(key), "labkit_known_hosts": str(kh)}
             for m in machines.machines}
    path = machines.inventory("yaml", path=d / "inv $(touch pwned4).yml", extra=extra)
    inv = discover(path, lab="t1")
    assert {h.key_file for h in inv.hosts} == {str(key)} and {h.known_hosts for h in inv.hosts} == {str(kh)}
    assert sorted(p.name for p in tmp_path.rglob("pwned*")) == []
    assert sorted(p.name for p in d.iterdir()) == sorted([key.name, kh.name, path.name])


@pytest.mark.parametrize("fmt", ["yaml", "ini"])
def test_fixture_inventories_read_as_ansible_reads_them(machines, tmp_path, fmt):
    from test_hosts_inventory import _ansible_inventory, ansible_list

    if _ansible_inventory() is None:
        pytest.skip("ansible-inventory not installed (set LABKIT_ANSIBLE_INVENTORY to its path)")
    from labkit.hostsinventory import read_inventory

    path = machines.inventory(fmt, path=tmp_path / f"inv.{'yml' if fmt == 'yaml' else 'ini'}")
    theirs, ours = ansible_list(path, tmp_path), read_inventory(path)
    assert {h: ours.vars_of(h) for h in ours.host_vars} == theirs["_meta"]["hostvars"]
    for role in ("cpo", "gateway", "evse"):
        assert theirs[role]["hosts"] == ours.members(role)


def test_routes_that_bypass_the_gateway_are_refused_with_the_fix(machines, tmp_path):
    e, cpo = machines.machine("evse1"), machines.machine("cpo")
    # no route at all
    sh("ip", "-n", e.ns, "route", "del", "192.168.10.0/24")
    try:
        refused(machines, tmp_path, r"host evse1: has no route to the cpo network 192.168.10.0/24; add one through "
                r"the gateway: ip route replace 192.168.10.0/24 via 192.168.20.1 dev eth1$")
        # a route through another router (the management network's)
        sh("ip", "-n", e.ns, "route", "add", "192.168.10.0/24", "via", str(machines.mgmt_net[254]), "dev", "mgmt0")
        refused(machines, tmp_path, rf"host evse1: routes the cpo network 192.168.10.0/24 via "
                rf"{machines.mgmt_net[254]} dev mgmt0, not through the gateway 192.168.20.1 dev eth1; fix with: "
                r"ip route replace 192.168.10.0/24 via 192.168.20.1 dev eth1$")
    finally:
        sh("ip", "-n", e.ns, "route", "replace", "192.168.10.0/24", "via", "192.168.20.1", "dev", "eth1")
    # the CPO on the EVSE network too: a second interface that bypasses the gateway
    sh("ip", "link", "add", "lkhbyp0", "netns", cpo.ns, "type", "veth", "peer", "name", "byp1", "netns",
       machines.switch)
    try:
        sh("ip", "-n", machines.switch, "link", "set", "byp1", "master", "evse", "up")
        sh("ip", "-n", cpo.ns, "addr", "add", "192.168.20.99/24", "dev", "lkhbyp0")
        sh("ip", "-n", cpo.ns, "link", "set", "lkhbyp0", "up")
        refused(machines, tmp_path, r"host cpo: holds 192.168.20.99 on lkhbyp0 in the evse network 192.168.20.0/24: "
                r"its traffic to that network would not cross the gateway")
    finally:
        sh("ip", "-n", cpo.ns, "link", "del", "lkhbyp0", check=False)
    assert discover(machines.inventory("ini", path=tmp_path / "ok.ini"), lab="t1").cpo.ifaces == {"cpo": "eth1"}


def test_cli_hosts_check(machines, tmp_path, capsys):
    from labkit.cli import main

    path = machines.inventory("yaml", addresses=False, path=tmp_path / "inv.yml")
    assert main(["hosts", "check", "-i", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "6 hosts ready (cpo, gateway, 4 evse); EVSE<->CPO traffic crosses the gateway"
    gw = next(line for line in out if line.startswith("gw "))
    assert "cpo 192.168.10.1 on eth1, evse 192.168.20.1 on eth2" in gw and "(sudo)" in gw
    bad = machines.inventory("ini", path=tmp_path / "bad.ini", extra={"evse2": {"ansible_port": 2}})
    assert main(["hosts", "check", "-i", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"labkit: error: {bad}:") and "host evse2: cannot reach" in err
    assert main(["hosts", "check", "-i", str(path), "--cpo-net", "192.168.20.0/24"]) == 2
    assert "overlaps" in capsys.readouterr().err


def test_new_host_keys_only_when_asked_and_changed_keys_never(machines, tmp_path):
    cpo, e1 = machines.machine("cpo"), machines.machine("evse1")
    full = machines.known_hosts.read_text().splitlines()
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(f"{ln}\n" for ln in full if not ln.startswith(cpo.mgmt + " ")))
    extra = {m.name: {"labkit_known_hosts": str(kh)} for m in machines.machines}
    path = machines.inventory("yaml", path=tmp_path / "inv.yml", extra=extra)
    with pytest.raises(ConfigError, match="host cpo: cannot reach .*host key not in"):
        discover(path, lab="t1", connect_timeout=5)
    learnt = tmp_path / "lab" / "known_hosts"
    inv = discover(path, lab="t1", accept_new_keys=learnt)
    assert {h.known_hosts for h in inv.hosts} == {str(learnt)}
    assert sorted(learnt.read_text().splitlines()) == sorted(full)  # the cpo's key, learnt, is the real one
    assert learnt.stat().st_mode & 0o777 == 0o600
    assert kh.read_text().count("\n") == len(full) - 1  # the user's file is left alone
    # a key that differs from the one known for that address: refused even when new keys are accepted
    e1_key = next(ln for ln in full if ln.startswith(e1.mgmt + " ")).split(" ", 1)[1]
    kh.write_text("".join(f"{ln}\n" for ln in full if not ln.startswith(cpo.mgmt + " ")) + f"{cpo.mgmt} {e1_key}\n")
    with pytest.raises(ConfigError, match=r"inv.yml:\d+: host cpo: host key changed: .* not accepting it"):
        discover(path, lab="t1", accept_new_keys=tmp_path / "lab2" / "known_hosts")


def test_routes_added_when_asked_journalled_and_undone(machines, tmp_path, home):
    from labkit.hostchanges import HostChanges
    from labkit.labdir import LabDir

    e = machines.machine("evse2")
    path = machines.inventory("ini", path=tmp_path / "inv.ini")
    sh("ip", "-n", e.ns, "route", "del", "192.168.10.0/24")
    try:
        labdir = LabDir("t1")
        labdir.create()
        inv = discover(path, lab="t1", add_routes=labdir)
        assert [(x["host"], x["dst"], x["via"], x["dev"], x["before"]) for x in HostChanges(labdir, None).entries()] \
            == [("evse2", "192.168.10.0/24", "192.168.20.1", "eth1", None)]
        assert "192.168.10.0/24 via 192.168.20.1 dev eth1" in sh("ip", "-n", e.ns, "route").stdout
        with Remote(inv) as remote:
            pathcheck.check(remote, inv)
            assert HostChanges(labdir, remote).undo() == []
        assert "192.168.10.0/24" not in sh("ip", "-n", e.ns, "route").stdout
        refused(machines, tmp_path, r"host evse2: has no route to the cpo network")
    finally:
        sh("ip", "-n", e.ns, "route", "replace", "192.168.10.0/24", "via", "192.168.20.1", "dev", "eth1")
