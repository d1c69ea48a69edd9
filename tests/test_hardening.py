"""labkit runs as root: lab names that are paths, lab directories others prepared, shell quoting of paths, SSH
connections that pile up, and the user's own SSH configuration (issue 13). Real namespaces, sshd and processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from labkit import lifecycle
from labkit.errors import LabkitError
from labkit.inventory import Inventory
from labkit.remote import Remote
from tests.conftest import namespaces, needs_root, run_cli

pytestmark = [needs_root]

NOBODY = 65534


def _labkit(*args: str, home: Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], env=dict(os.environ, LABKIT_HOME=str(home)),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


# -- names are names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["down", "--lab", "../../victim"],
    ["down", "--lab", "/tmp"],
    ["status", "--lab", "../x"],
    ["ssh", "--lab", "a/b", "cpo", "true"],
    ["shape", "--lab", "..", "--clear"],
    ["bench", "--lab", "../../victim", "none"],
])
def test_a_lab_name_is_never_a_path(home, tmp_path, capsys, argv):
    """`labkit down --lab ../../somewhere` removed files outside LABKIT_HOME: a lab name is checked as a name."""
    victim = home / "victim"
    victim.mkdir(parents=True)
    (victim / "state.jsonl").write_text('{"kind": "netns", "name": "lk-x-cpo"}\n')
    (victim / "lab.json").write_text("{}")
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid lab name" in err[0], err
    assert (victim / "state.jsonl").exists() and (victim / "lab.json").exists()


# -- the lab directory is a trust boundary ------------------------------------------------------------------
@pytest.mark.slow
def test_a_lab_directory_another_user_can_write_is_refused(tmp_path):
    """A LABKIT_HOME (or a lab directory in it) that a non-root user prepared, or a path on the way to it that
    others can write, is refused before anything is created; a private directory under /tmp is fine."""
    before = namespaces()
    # 1. a home owned by another user
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    # 2. a directory on the way that everyone can write (no sticky bit)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    # 3. a lab directory prepared in advance by another user, whose keys/ they keep
    prepared = tmp_path / "prepared"
    (prepared / "labs" / "lab" / "keys").mkdir(parents=True)
    os.chown(prepared / "labs" / "lab" / "keys", NOBODY, NOBODY)
    for home, culprit in [(theirs, f"{theirs} is owned by uid {NOBODY}"),
                          (open_dir / "home", f"{open_dir} is writable by group and others"),
                          (prepared, f"{prepared / 'labs' / 'lab' / 'keys'} is owned by uid {NOBODY}")]:
        proc = _labkit("up", "--backend", "netns", home=home)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and culprit in err[0], err
        assert namespaces() == before
    assert not (open_dir / "home").exists()


@pytest.mark.slow
def test_sshd_checks_modes_strictly_and_authorized_keys_come_from_a_root_path(home, lab):
    """The hosts' sshd runs with StrictModes yes (no need to turn it off wherever LABKIT_HOME is): its
    authorized_keys is copied into a root-owned tmpfs inside the host's own mount namespace."""
    assert run_cli("up", "--name", lab, "--backend", "netns") == 0
    cfg = (home / "labs" / lab / "hosts" / "cpo" / "sshd_config").read_text()
    assert "StrictModes yes" in cfg and "AuthorizedKeysFile /etc/ssh/authorized_keys" in cfg
    handle = lifecycle.open_lab(lab)
    with handle.remote() as r:
        out = r.run("cpo", "stat -c '%U %a' /etc/ssh /etc/ssh/authorized_keys; findmnt -n -o FSTYPE /etc/ssh").stdout
    assert out.split() == ["root", "755", "root", "600", "tmpfs"]
    # the machine's own /etc/ssh is untouched outside the lab's namespaces
    assert subprocess.run(["findmnt", "-n", "/etc/ssh"], capture_output=True).returncode != 0


# -- SSH connections ----------------------------------------------------------------------------------------
def _ssh_connections(ports: set[int] = frozenset({22})) -> int:
    return sum(1 for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port in ports)


@pytest.mark.slow
def test_failed_ssh_probes_close_their_connections(home, lab, tmp_path):
    """With a host key that does not match, every probe of `Remote.wait` failed and left its connection open
    (15 -> 75 connections in 4 s): each failed attempt now closes what it opened."""
    assert run_cli("up", "--name", lab, "--backend", "netns") == 0
    handle = lifecycle.open_lab(lab)
    wrong = tmp_path / "known_hosts"
    lines = Path(handle.inventory.cpo.known_hosts).read_text().splitlines()
    keys = [ln.split(None, 1)[1] for ln in lines]
    wrong.write_text("".join(f"{ln.split()[0]} {keys[(i + 1) % len(keys)]}\n" for i, ln in enumerate(lines)))
    inv = Inventory(lab=lab, backend="netns",
                    hosts=[replace(h, known_hosts=str(wrong)) for h in handle.inventory.hosts])
    before = _ssh_connections()
    samples = []
    with Remote(inv, connect_timeout=2) as remote:
        import threading

        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(_ssh_connections())
                time.sleep(0.1)

        t = threading.Thread(target=sample)
        t.start()
        try:
            with pytest.raises(LabkitError, match="host key does not match"):
                remote.wait(inv.hosts, timeout=4)
        finally:
            stop.set()
            t.join()
    assert max(samples) <= before + len(inv.hosts), samples
    assert _ssh_connections() <= before


@pytest.mark.slow
def test_the_users_ssh_config_does_not_apply_to_lab_connections(home, lab, tmp_path, monkeypatch):
    """Fabric loaded ~/.ssh/config for lab connections: a `Host *` ProxyJump there applied to the lab."""
    assert run_cli("up", "--name", lab, "--backend", "netns") == 0
    fake_home = tmp_path / "userhome"
    (fake_home / ".ssh").mkdir(parents=True)
    (fake_home / ".ssh" / "config").write_text("Host *\n  ProxyJump nobody@127.0.0.1:1\n  Port 2222\n  User nobody\n")
    monkeypatch.setenv("HOME", str(fake_home))
    handle = lifecycle.open_lab(lab)
    with handle.remote() as r:
        assert r.run("evse1", "hostname").stdout.strip() == "evse1"


# -- shell quoting ------------------------------------------------------------------------------------------
WEIRD = "lab home's $(touch x)"


@pytest.mark.slow
def test_the_main_job_in_a_lab_home_with_a_space_a_quote_and_a_command(tmp_path):
    """up, bench (a reduced plan), report and down with LABKIT_HOME (and the results) under a directory named
    with a space, a single quote and `$(touch x)`: everything works and `x` is never created anywhere."""
    base = tmp_path / WEIRD
    base.mkdir()
    home = base / "home"
    name = "q" + os.urandom(3).hex()
    cwds = [tmp_path, base, Path("/"), Path.home()]
    try:
        up = _labkit("up", "--name", name, "--backend", "netns", "--evse", "2", home=home, cwd=base)
        assert up.returncode == 0, up.stderr
        bench = _labkit("bench", "--lab", name, "4g", "--evse", "2", "--ping-count", "10", "--ping-interval", "0.05",
                        "--iperf-seconds", "1", "--udp-seconds", "1", "--meter-values", "5", "--meter-interval",
                        "0.05", "--pcap", home=home, cwd=base)
        assert bench.returncode == 0, bench.stderr
        run = next((base / "results").iterdir())
        m = json.loads((run / "manifest.json").read_text())
        assert m["status"] == "complete"
        calls = (run / "cells" / "4g__n2x1__r1" / "ocpp" / "calls-evse2.csv").read_text()
        assert calls.count("\n") > 5
        report = _labkit("report", str(run), home=home, cwd=base)
        assert report.returncode == 0, report.stderr
        assert (run / "report" / "report.md").exists()
    finally:
        down = _labkit("down", "--lab", name, home=home, cwd=base)
    assert down.returncode == 0, down.stderr
    for d in cwds:
        assert not (d / "x").exists(), d
    assert not list(tmp_path.rglob("x")), list(tmp_path.rglob("x"))
    assert {n for n in namespaces() if n.startswith(f"lk-{name}-")} == set()
    shutil.rmtree(base, ignore_errors=True)


# -- secrets ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_password_is_nowhere_in_results_lab_directory_or_ps(tmp_path):
    """A bench with OCPP Basic auth (security profile 1): the password works (every station connects), and a
    grep over `ps` output during the run, the run's results directory and the lab directory finds it nowhere."""
    import secrets as _secrets

    password = "pw-" + _secrets.token_hex(12)
    pwfile = tmp_path / "ocpp-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    name = "s" + os.urandom(3).hex()
    up = _labkit("up", "--name", name, "--backend", "netns", "--evse", "2", home=home)
    assert up.returncode == 0, up.stderr
    seen_in_ps = []
    try:
        proc = subprocess.Popen([sys.executable, "-m", "labkit", "bench", "--lab", name, "none", "--evse", "2",
                                 "--baselines", "none", "--meter-values", "40", "--meter-interval", "0.05",
                                 "--password-file", str(pwfile)],
                                env=dict(os.environ, LABKIT_HOME=str(home)), cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        polls = 0
        while proc.poll() is None:
            ps = subprocess.run(["ps", "-eww", "e", "-o", "pid,args"], capture_output=True, text=True).stdout
            polls += 1
            if password in ps:
                seen_in_ps.append([ln for ln in ps.splitlines() if password in ln])
            time.sleep(0.2)
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        assert polls > 10
    finally:
        _labkit("down", "--lab", name, home=home)
    assert seen_in_ps == []
    run = next((work / "results").iterdir())
    m = json.loads((run / "manifest.json").read_text())
    assert m["plan"]["auth"] == "basic" and m["status"] == "complete"
    calls = (run / "cells" / "none__n2x1__r1" / "ocpp" / "calls-evse1.csv").read_text()
    assert calls.count(",ok,") >= 40  # the password was accepted
    for root in (run, home):
        hits = subprocess.run(["grep", "-rla", "--", password, str(root)], capture_output=True, text=True).stdout
        assert hits == "", hits
    # nothing of it left on the host side either (netns hosts share this machine's /tmp)
    assert not list(Path("/tmp").glob(f"labkit-secret-{name}.*"))
