"""The fixture's machines are real: sshd per namespace, a non-root user with sudo, routes through the gateway."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
from machines import CPO_NET, Machines, routes_overlapping

pytestmark = pytest.mark.root


def ssh(machines: Machines, name: str, command: str) -> subprocess.CompletedProcess:
    """OpenSSH's client, strict host keys, no user configuration: a second opinion beside labkit's paramiko."""
    m = machines.machine(name)
    argv = ["ssh", "-F", "/dev/null", "-i", str(machines.key_file), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={machines.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-l", machines.user, m.mgmt, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_each_machine_answers_as_the_user_with_sudo(machines):
    assert machines.build_seconds < 10
    for m in machines.machines:
        r = ssh(machines, m.name, "hostname; id -un; sudo -n true && echo sudo-ok; sudo -n ip -o -4 addr show")
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[:3] == [m.name, machines.user, "sudo-ok"]
        for net, addr in m.data.items():
            assert any(f"{m.ifaces[net]}    inet {addr}/" in line for line in out), (m.name, out)
    # each machine has its own /tmp (nothing of this machine's, nothing of the others')
    r = [ssh(machines, m.name, f"echo {m.name} > /tmp/who; ls -A /tmp") for m in machines.machines]
    assert [x.stdout.split() for x in r] == [["who"]] * len(machines.machines)
    assert [ssh(machines, m.name, "cat /tmp/who").stdout.strip() for m in machines.machines] == \
        [m.name for m in machines.machines]


def test_management_subnet_reached_only_through_the_fixtures_bridge(machines):
    assert ipaddress.IPv4Network(machines.mgmt_net).subnet_of(ipaddress.IPv4Network("10.236.0.0/16"))
    hits = routes_overlapping(machines.mgmt_net)  # the subnet's route, and the local table's entries
    assert f"{machines.mgmt_net} dev {machines.bridge}" in hits
    assert all(h.endswith(f" dev {machines.bridge}") for h in hits), hits


def test_wrong_key_and_unknown_host_key_are_refused(machines, tmp_path):
    bad = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(bad)], check=True)
    m = machines.machine("cpo")
    base = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
            "-l", machines.user]
    r = subprocess.run(base + ["-i", str(bad), "-o", "StrictHostKeyChecking=yes",
                               "-o", f"UserKnownHostsFile={machines.known_hosts}", m.mgmt, "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied" in r.stderr
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    r = subprocess.run(base + ["-i", str(machines.key_file), "-o", "StrictHostKeyChecking=yes",
                               "-o", f"UserKnownHostsFile={empty}", "-o", "GlobalKnownHostsFile=/dev/null",
                               m.mgmt, "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Host key verification failed" in r.stderr


def test_evse_route_to_the_cpo_crosses_the_gateway(machines):
    gw, cpo = machines.machine("gw"), machines.machine("cpo")
    for m in machines.machines:
        if m.role != "evse":
            continue
        r = ssh(machines, m.name, f"ip -o -4 route get {cpo.data['cpo']}; ip -4 route show default | wc -l;"
                f" sudo -n ping -n -c 1 -W 2 -t 1 {cpo.data['cpo']}; sudo -n ping -n -c 1 -W 2 -t 2 {cpo.data['cpo']}"
                " && echo reached")
        lines = r.stdout.splitlines()
        assert f"via {gw.data['evse']} dev eth1" in lines[0], lines
        assert lines[1] == "0"  # no default route
        assert f"From {gw.data['evse']} icmp_seq=1 Time to live exceeded" in r.stdout  # TTL 1 dies on gw
        assert lines[-1] == "reached"
    r = ssh(machines, "gw", "cat /proc/sys/net/ipv4/ip_forward; ip -o -4 addr show | grep -c ' eth[12] '")
    assert r.stdout.split() == ["1", "2"]
    assert ipaddress.IPv4Address(cpo.data["cpo"]) in CPO_NET


def test_teardown_leaves_nothing(tmp_path):
    m = Machines(n_evse=1)
    try:
        m.build()
        assert m.leftovers()
        path = m.inventory("ini")
        assert path.read_text().startswith("[cpo]\ncpo ansible_host=")
    finally:
        assert m.teardown() == []
    assert m.leftovers() == []


def test_what_a_killed_fixture_left_is_swept(tmp_path):
    """SIGKILL the process that built machines (its sshd live on); the next sweep removes everything."""
    import os
    import signal
    import sys
    from pathlib import Path

    from machines import sweep_stale

    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from machines import Machines; "
            "m = Machines(n_evse=1).build(); print(m.tok, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent)], stdout=subprocess.PIPE,
                            text=True)
    try:
        tok = proc.stdout.readline().strip()
        assert len(tok) == 4, tok
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    m = Machines.__new__(Machines)
    Machines.__init__(m, base=Path(f"/run/lkh-{tok}"))
    m.tok, m.user, m.nosudo_user, m.sudoers = tok, f"lkh{tok}", f"lkh{tok}n", Path(f"/etc/sudoers.d/lkh-{tok}")
    assert len(m.leftovers()) >= 5  # namespaces, links, users, files
    assert tok in sweep_stale()
    assert m.leftovers() == []
    sshd = subprocess.run(["pgrep", "-f", f"/run/lkh-{tok}/"], capture_output=True, text=True).stdout
    assert sshd == ""
