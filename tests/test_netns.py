"""The netns backend for real: namespaces, veths, bridges, one sshd per host, Fabric over SSH, teardown.

Everything here creates real kernel objects and real sshd processes (needs root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import clocks, gwchannel, lifecycle, pathcheck
from labkit.errors import RemoteError
from labkit.labdir import LabDir
from labkit.model import load_spec
from tests.conftest import links, namespaces, needs_root, run_cli

pytestmark = [needs_root]


def _sshd_pids(labdir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"sshd -f {labdir}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _snapshot_outside() -> set[str]:
    """Files labkit could plausibly leave outside the lab directory. /run/labkit is the machine's runtime
    directory (its lock; labkit.machine): what a lab registers there is looked at file by file."""
    seen = set()
    for d in ("/run/netns", "/etc/netns", "/tmp", "/var/run"):
        p = Path(d)
        if p.exists():
            seen |= {str(x) for x in p.iterdir() if "pytest-of" not in x.name and x.name != "labkit"}
    settings = Path("/run/labkit/settings")
    if settings.exists():
        seen |= {str(x) for x in settings.rglob("*")}
    return seen


def assert_nothing_left(name: str, before_ns: set[str], before_links: set[str], home: Path) -> None:
    assert {n for n in namespaces() - before_ns if n.startswith(f"lk-{name}-")} == set()
    assert {link for link in links() - before_links if link.startswith(f"lk{name}")} == set()
    assert _sshd_pids(home / "labs" / name) == []


def test_up_status_ssh_down(home, lab, capfd):
    before_ns, before_links, before_files = namespaces(), links(), _snapshot_outside()
    root_wmem = Path("/proc/sys/net/ipv4/tcp_wmem").read_text()
    assert run_cli("up", "--name", lab, "--backend", "netns", "--evse", "3") == 0
    out = capfd.readouterr().out
    assert f"lab '{lab}' is up on netns: 5 hosts" in out

    ns = {n for n in namespaces() if n.startswith(f"lk-{lab}-")}
    assert ns == {f"lk-{lab}-{h}" for h in ("sw", "cpo", "gw", "evse1", "evse2", "evse3")}

    handle = lifecycle.open_lab(lab)
    inv = handle.inventory
    assert [h.name for h in inv.hosts] == ["cpo", "gw", "evse1", "evse2", "evse3"]
    assert inv.gateway.ifaces == {"cpo": "eth1", "evse": "eth2"}
    # every host answers over SSH through Fabric, with strict host keys, and is itself
    with handle.remote() as remote:
        res = remote.run_many(inv.hosts, "hostname; ip -j -4 addr show eth1")
        for h in inv.hosts:
            lines = res[h.name].stdout.splitlines()
            assert lines[0] == h.name
            addrs = [a["local"] for i in json.loads(lines[1]) for a in i["addr_info"]]
            assert list(h.addresses.values())[0] in addrs
        # the gateway forwards, the others do not
        fwd = remote.run_many(inv.hosts, "cat /proc/sys/net/ipv4/ip_forward")
        assert {n: r.stdout.strip() for n, r in fwd.items()} == {
            "cpo": "0", "gw": "1", "evse1": "0", "evse2": "0", "evse3": "0"}
        # endpoints get TCP buffers for long fat paths, inside their own namespace only
        assert remote.run("evse1", "sysctl -n net.ipv4.tcp_rmem").stdout.split()[-1] == "33554432"
        # ... and CUBIC, whatever this machine runs (the bench's TCP figures depend on it)
        assert remote.run("cpo", "sysctl -n net.ipv4.tcp_congestion_control").stdout.strip() == "cubic"
        assert Path("/proc/sys/net/ipv4/tcp_wmem").read_text() == root_wmem
        # EVSE -> CPO over the data network works and crosses one router (TTL 63)
        # (-c 1 -w 5 tries every 0.5 s until the first reply: one lost packet on a loaded machine proves nothing)
        ping = remote.run("evse2", f"ping -n -c 1 -i 0.5 -w 5 {inv.cpo.addresses['cpo']}").stdout
        assert "ttl=63" in ping
        # the management network carries no route to the other data network
        assert "192.168.10.0/24 via 192.168.20.1 dev eth1" in remote.run("evse1", "ip route").stdout
        assert "default" not in remote.run("evse1", "ip route").stdout
        # a namespace shares this machine's clock: the offset measured over SSH is 0 within its uncertainty
        offsets = clocks.measure_all(remote, ["gw", "evse1"])
        for off in offsets.values():
            assert abs(off.offset_s) <= off.uncertainty_s + 1e-6 and off.uncertainty_s < 0.02, off
        # the gateway's open channels (labkit.gwchannel): a shell that answers output, status and clock, also
        # after output with no final newline; a tc batch that runs changes in order and reports a refused one
        with gwchannel.GatewayChannels(remote, inv.gateway) as chan:
            got = chan.shell("printf 'a\\nb'; exit_soon() { return 3; }; exit_soon")
            assert (got["stdout"], got["exited"]) == ("a\nb", 3) and got["sent"] <= got["returned"]
            got = chan.shell("echo out; echo err >&2; printf 'no newline' >&2")
            assert (got["stdout"], got["stderr"], got["exited"]) == ("out", "err\nno newline", 0)
            errfile = Path(chan.shell('echo "$lkerr"')["stdout"])
            assert errfile.is_file() and oct(errfile.stat().st_mode & 0o777) == "0o600"
            assert chan.shell("hostname")["stdout"] == "gw"
            chan.tc_batch(["tc qdisc add dev lo root handle 1: htb default 10",
                           "tc class add dev lo parent 1: classid 1:10 htb rate 1000000bit"])
            assert "rate 1Mbit" in chan.shell("tc class show dev lo")["stdout"]
            # a refusal names the change and tc's reason, and is over when the call returns: the next batch
            # does not see its error (a marker on tc's output did that now and then; errors come on their own
            # SSH stream), so a refusal followed at once by a good change, many times over
            for _ in range(40):
                with pytest.raises(gwchannel.ChannelError) as refused:
                    chan.tc_batch(["tc class change dev lo parent 1: classid 1:10 htb rate 1000000bit",
                                   "tc class change dev lo parent 1: classid 1:99 htb rate 2000000bit"])
                assert str(refused.value).startswith(
                    "gw: tc refused a change: tc class change dev lo parent 1: classid 1:99 htb rate 2000000bit: ")
                assert "Command failed" not in str(refused.value)
                chan.tc_batch(["tc class change dev lo parent 1: classid 1:10 htb rate 1000000bit"])
            chan.tc_batch(["tc qdisc del dev lo root"])  # the channel still works after a refusal
            assert "htb" not in chan.shell("tc qdisc show dev lo")["stdout"]
            assert gwchannel.ViaShell(remote, chan).run("gw", "cat /proc/sys/net/ipv4/ip_forward").stdout == "1\n"
            with pytest.raises(RemoteError, match="exit 1"):
                gwchannel.ViaShell(remote, chan).run("gw", "false")
        deadline = time.monotonic() + 10  # the shell sees the end of its input and removes its file
        while errfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not errfile.exists()

    # the lab's own key: the machine's own SSH identity plays no part, and a wrong host key is refused
    key = Path(inv.cpo.key_file)
    assert key.parent == home / "labs" / lab / "keys" and oct(key.stat().st_mode & 0o777) == "0o600"
    evidence = json.loads((home / "labs" / lab / "pathcheck.json").read_text())
    assert evidence["ok"] and len(evidence["pairs"]) == 6
    assert all(p["reply_ttl"] == 63 for p in evidence["pairs"])

    assert run_cli("status", "--lab", lab) == 0
    capfd.readouterr()
    assert run_cli("status", "--lab", lab, "--json") == 0
    st = json.loads(capfd.readouterr().out)
    assert all(h["reachable"] == "ok" for h in st["hosts"])

    assert run_cli("ssh", "--lab", lab, "evse3", "hostname") == 0
    assert capfd.readouterr().out.strip().endswith("evse3")
    assert run_cli("ssh", "--lab", lab, "evse3", "exit", "7") == 7
    assert run_cli("ssh", "--lab", lab, "nohost", "true") == 2

    assert run_cli("down", "--lab", lab) == 0
    assert_nothing_left(lab, before_ns, before_links, home)
    assert _snapshot_outside() - before_files == set()
    # down is idempotent
    assert run_cli("down", "--lab", lab) == 0
    assert "nothing to remove" in capfd.readouterr().out


def test_wrong_host_key_is_refused(home, lab):
    lifecycle.up(load_spec(overrides={"name": lab, "backend": "netns"}), check_path=False)
    handle = lifecycle.open_lab(lab)
    kh = Path(handle.inventory.cpo.known_hosts)
    lines = kh.read_text().splitlines()
    # give the CPO's address the gateway's key
    cpo_addr = handle.inventory.cpo.ssh_host
    gw_key = next(line.split(" ", 1)[1] for line in lines if line.startswith(handle.inventory.gateway.ssh_host + " "))
    kh.write_text("\n".join(f"{cpo_addr} {gw_key}" if line.startswith(cpo_addr + " ") else line
                            for line in lines) + "\n")
    from labkit.errors import RemoteError

    with handle.remote() as remote, pytest.raises(RemoteError, match="host key"):
        remote.run("cpo", "true")


def test_path_check_refuses_a_management_shortcut(home, lab):
    handle = lifecycle.up(load_spec(overrides={"name": lab, "backend": "netns", "evse": 2}))
    inv = handle.inventory
    cpo_data = inv.cpo.addresses["cpo"]
    with handle.remote() as remote:
        pathcheck.check(remote, inv)  # passes as built
        # a second path: the CPO's data address also answers on the management network
        remote.run("cpo", f"ip addr add {cpo_data}/32 dev mgmt0")
        remote.run("evse2", f"ip route add {cpo_data}/32 dev mgmt0")
        with pytest.raises(pathcheck.PathError, match="evse2 reaches cpo .* via a direct route dev mgmt0"):
            pathcheck.check(remote, inv)


def test_path_check_retries_a_lost_probe_and_refuses_a_silent_gateway(home, lab):
    """Real probes through a real gateway whose netfilter drops the ICMP it would send back."""
    handle = lifecycle.up(load_spec(overrides={"name": lab, "backend": "netns"}), check_path=False)
    inv = handle.inventory
    evse, cpo, gw = inv.evses[0], inv.cpo, inv.gateway
    first_only = "-m statistic --mode nth --every 1000 --packet 0 -j DROP"
    with handle.remote() as remote:
        ev = pathcheck.check_pair(remote, evse, cpo, "evse", "cpo", gw)
        assert (ev["ttl1_tries"], ev["reply_tries"], ev["ttl1_expired_at"]) == (1, 1, gw.addresses["evse"])
        # the gateway loses its first "time exceeded" and the first echo reply it forwards: tried again, not fatal
        remote.run(gw, f"iptables -I OUTPUT -p icmp --icmp-type time-exceeded {first_only}", sudo=True)
        remote.run(gw, f"iptables -I FORWARD -p icmp --icmp-type echo-reply {first_only}", sudo=True)
        ev = pathcheck.check_pair(remote, evse, cpo, "evse", "cpo", gw)
        assert (ev["ttl1_tries"], ev["reply_tries"], ev["ttl1_expired_at"]) == (2, 2, gw.addresses["evse"])
        # a gateway that never answers the TTL-1 probe: refused after every try, saying so
        remote.run(gw, "iptables -I OUTPUT -p icmp --icmp-type time-exceeded -j DROP", sudo=True)
        with pytest.raises(pathcheck.PathError, match=rf"did not expire at the gateway .*no answer to "
                                                      rf"{pathcheck.ATTEMPTS} tries"):
            pathcheck.check_pair(remote, evse, cpo, "evse", "cpo", gw)


def test_two_labs_coexist(home, lab):
    other = lab[:-1] + ("x" if lab[-1] != "x" else "y")
    try:
        a = lifecycle.up(load_spec(overrides={"name": lab, "backend": "netns"}), check_path=False)
        b = lifecycle.up(load_spec(overrides={"name": other, "backend": "netns"}), check_path=True)
        assert a.inventory.details["mgmt"] != b.inventory.details["mgmt"]
        # same data addresses, separate namespaces
        assert a.inventory.cpo.addresses == b.inventory.cpo.addresses
        with a.remote() as ra, b.remote() as rb:
            assert ra.run("cpo", "hostname").stdout.strip() == "cpo"
            assert rb.run("evse1", "hostname").stdout.strip() == "evse1"
        assert run_cli("up", "--name", lab, "--backend", "netns") == 2  # already exists
    finally:
        run_cli("down", "--lab", other)


def _kill_up_midway(home: Path, lab: str, marker: str, evse: int) -> None:
    """Start `labkit up` in a subprocess and SIGKILL it as soon as the journal holds ``marker``."""
    env = dict(os.environ, LABKIT_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "-q", "up", "--name", lab, "--backend", "netns",
                             "--evse", str(evse)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = home / "labs" / lab / "state.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if state.exists() and marker in state.read_text():
                break
            if proc.poll() is not None:
                pytest.fail(f"labkit up finished before the journal held {marker!r}")
            time.sleep(0.005)
        else:
            pytest.fail(f"journal never held {marker!r}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("marker", ['"kind": "netns"', '"kind": "link"', '"kind": "sshd"'])
def test_sigkill_during_up_then_down_leaves_nothing(home, lab, marker):
    before_ns, before_links, before_files = namespaces(), links(), _snapshot_outside()
    _kill_up_midway(home, lab, marker, evse=20)
    assert LabDir(lab, home).journal(), "the journal survives the crash"
    assert run_cli("down", "--lab", lab) == 0
    assert_nothing_left(lab, before_ns, before_links, home)
    assert _snapshot_outside() - before_files == set()
    # and the name can be used again
    assert run_cli("up", "--name", lab, "--backend", "netns", "--evse", "2") == 0


def test_failed_up_rolls_back(home, lab, monkeypatch):
    """A failure after placement (here: SSH never answers) removes everything that was created."""
    from labkit import remote as remote_mod
    from labkit.errors import RemoteError

    before_ns, before_links = namespaces(), links()

    def never(self, hosts=None, timeout=60.0, progress=None):
        raise RemoteError("1 host(s) never answered over SSH (simulated)")

    # Simulated failure: the real sshd does start; what is under test is the rollback after it.
    monkeypatch.setattr(remote_mod.Remote, "wait", never)
    assert run_cli("up", "--name", lab, "--backend", "netns", "--evse", "2") == 1
    assert_nothing_left(lab, before_ns, before_links, home)
    assert not (home / "labs" / lab / "inventory.json").exists()
