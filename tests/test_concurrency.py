"""Labs brought up at the same time: real `labkit up` processes racing for names, subnets and settings.

Real namespaces, sshd and processes. What must hold (issue 13): two `up` of one name give one lab and one
clear refusal, and the loser's rollback never touches the winner's lab; labs of different names never share a
management subnet, also when one is given in a lab file; `down` of one lab leaves the machine-wide settings
others still use; `down` of all leaves nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import links, namespaces, needs_root, run_cli

pytestmark = [needs_root, pytest.mark.slow]

CC_FILE = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


def _labkit(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], env=dict(os.environ, LABKIT_HOME=str(home)),
                          capture_output=True, text=True, timeout=timeout)


def _mgmt(home: Path, name: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(json.loads((home / "labs" / name / "netns.json").read_text())["mgmt"])


def _sshd_pids(home: Path) -> list[int]:
    pids = []
    for pidfile in home.glob("labs/*/hosts/*/sshd.pid"):
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
            pids.append(pid)
        except (ValueError, OSError):
            pass
    return pids


def test_eight_ups_at_once_four_names_twice_each(home):
    """8 `labkit up` at once, 4 names twice each, 10 rounds: every name ends with exactly one working lab
    and one clear refusal, no two labs share a subnet, no lab is lost, and down of all leaves nothing."""
    before_ns, before_links = namespaces(), links()
    tag = secrets.token_hex(2)
    for rnd in range(10):
        names = [f"c{tag}{rnd}{i}" for i in range(4)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            procs = list(pool.map(lambda n: (n, _labkit(home, "up", "--name", n, "--backend", "netns")),
                                  [n for n in names for _ in range(2)]))
        try:
            for name in names:
                results = [p for n, p in procs if n == name]
                ok = [p for p in results if p.returncode == 0]
                refused = [p for p in results if p.returncode != 0]
                assert len(ok) == 1 and len(refused) == 1, (rnd, name, [(p.returncode, p.stderr) for p in results])
                err = refused[0].stderr.strip().splitlines()
                assert len(err) == 1 and err[0].startswith("labkit: error: "), err
                assert "busy" in err[0] or "already exists" in err[0], err
            subnets = [_mgmt(home, n) for n in names]
            for i, a in enumerate(subnets):
                for b in subnets[i + 1:]:
                    assert not a.overlaps(b), (rnd, subnets)
            # no lab was lost: every winner answers on every host over SSH
            for name in names:
                st = _labkit(home, "status", "--lab", name, "--json")
                assert st.returncode == 0, (rnd, name, st.stdout, st.stderr)
                assert all(h["reachable"] == "ok" for h in json.loads(st.stdout)["hosts"])
        finally:
            with ThreadPoolExecutor(max_workers=4) as pool:
                downs = list(pool.map(lambda n: _labkit(home, "down", "--lab", n), names))
        assert all(d.returncode == 0 for d in downs), [d.stderr for d in downs]
    assert {n for n in namespaces() - before_ns if n.startswith(f"lk-c{tag}")} == set()
    assert {link for link in links() - before_links if link.startswith(f"lkc{tag}")} == set()
    assert _sshd_pids(home) == []


def test_a_given_management_subnet_is_taken_once(home, tmp_path):
    """Two labs of different names given the same management subnet, brought up at once: one gets it, the other
    is refused with a clear message naming the subnet (no minute of paramiko tracebacks against the winner)."""
    tag = secrets.token_hex(2)
    net = "10.249.248.0/24"
    files = []
    for i in range(2):
        f = tmp_path / f"lab{i}.yaml"
        f.write_text(f"name: m{tag}{i}\nbackend: netns\nnetworks:\n  mgmt: {net}\n")
        files.append(f)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            procs = list(pool.map(lambda f: _labkit(home, "up", "-f", str(f)), files))
        assert sorted(p.returncode for p in procs) == [0, 2], [p.stderr for p in procs]
        loser = next(p for p in procs if p.returncode)
        assert loser.stderr.strip().count("\n") == 0 and f"networks.mgmt: {net} overlaps" in loser.stderr
        assert "Traceback" not in loser.stderr
    finally:
        for i in range(2):
            run_cli("down", "--lab", f"m{tag}{i}")


def test_down_of_one_lab_keeps_what_another_still_uses(home):
    """tcp_allowed_congestion_control is machine-wide: labkit adds cubic for its namespaces, and puts the old
    value back only when the last lab that needs it goes down."""
    original = CC_FILE.read_text().strip()
    if "cubic" in original.split():  # make the machine look like one that lists only its default
        CC_FILE.write_text(" ".join(x for x in original.split() if x != "cubic") + "\n")
    try:
        before = CC_FILE.read_text().strip()
        tag = secrets.token_hex(2)
        a, b = f"k{tag}a", f"k{tag}b"
        assert run_cli("up", "--name", a, "--backend", "netns") == 0
        try:
            assert "cubic" in CC_FILE.read_text().split()
            assert run_cli("up", "--name", b, "--backend", "netns") == 0
            assert run_cli("down", "--lab", a) == 0
            assert "cubic" in CC_FILE.read_text().split(), "down of one lab removed what the other still uses"
            assert run_cli("down", "--lab", b) == 0
            assert CC_FILE.read_text().strip() == before
        finally:
            run_cli("down", "--lab", a)
            run_cli("down", "--lab", b)
    finally:
        CC_FILE.write_text(original + "\n")
