"""The whole main job on existing machines: ``labkit up -i``, a 1,000-station bench, compare with a netns run,
``labkit down``; each machine is compared, before and after, on what labkit could have left: processes, files,
routes, firewall rules, qdiscs and the settings labkit changes. The machines are the fixture's (tests/hosts/
machines.py: namespaces with their own sshd, a non-root user with sudo), not made by labkit."""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from machines import sh

from labkit.labdir import LabDir
from tests.conftest import run_cli

pytestmark = [pytest.mark.root, pytest.mark.slow]

SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_congestion_control")


def state(m) -> dict[str, object]:
    """What labkit could leave on machine ``m``, read inside its own namespaces (not over SSH)."""

    def run(*argv: str) -> str:
        return sh("nsenter", "-t", str(m.sshd_pid), "-m", "-n", "-u", *argv).stdout

    return {
        "processes": sorted(sh("ip", "netns", "pids", m.ns).stdout.split()),
        "tmp": sorted(run("find", "/tmp", "-xdev").splitlines()),
        "routes": run("ip", "-4", "route", "show", "table", "all"),
        "rules": run("ip", "-4", "rule"),
        "firewall": {t: run("iptables", "-w", "-S", "-t", t) for t in ("filter", "mangle", "nat", "raw")},
        "qdiscs": run("tc", "qdisc", "show"),
        "sysctls": run("sysctl", *SYSCTLS),
    }


def settled(machines, before: dict[str, dict], timeout: float = 15.0) -> dict[str, dict]:
    """The machines' state once the SSH sessions labkit closed have ended (sshd reaps them within moments)."""
    deadline = time.monotonic() + timeout
    while True:
        now = {m.name: state(m) for m in machines.machines}
        if now == before or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


@pytest.fixture
def wheel_cache(monkeypatch):
    """The wheelhouse's dependencies from the cache the VM tests keep (pip download once per machine)."""
    cache = Path("/var/cache/labkit/wheelhouse")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("LABKIT_WHEELHOUSE_CACHE", str(cache))
    except OSError:
        pass


def test_main_job_on_six_existing_machines_leaves_them_as_they_were(machines, home, tmp_path, lab_name, capfd,
                                                                      wheel_cache):
    lab, other = lab_name, lab_name + "n"
    inv = machines.inventory("yaml", path=tmp_path / "inventory.yml")
    shared = sorted(str(p) for p in Path("/opt").iterdir())
    before = {m.name: state(m) for m in machines.machines}
    results = tmp_path / "results"
    try:
        assert run_cli("up", "-i", str(inv), "--name", lab) == 0
        out = capfd.readouterr().out
        assert f"lab '{lab}' is up on hosts: 6 hosts (cpo, gw, 4 evse)" in out
        # a second lab on the same machines is refused: the working directory is the machine's claim
        assert run_cli("up", "-i", str(inv), "--name", other) == 2
        err = capfd.readouterr().err
        assert "host cpo: /tmp/labkit-hosts exists: the machine is in another lab" in err and err.count("\n") == 1
        # labkit runs from the venv the wheelhouse made on each machine, as root through sudo
        with open(home / "labs" / lab / "inventory.json") as fh:
            hosts = json.load(fh)["hosts"]
        assert {h["labkit"] for h in hosts} == {"/tmp/labkit-hosts/labkit/venv/bin/labkit"}
        assert all(h["sudo"] and h["user"] == machines.user for h in hosts)

        assert run_cli("bench", "4g", "--lab", lab, "--evse", "4", "--stations-per-host", "250",
                       "--meter-values", "3", "--ping-count", "10", "--ping-interval", "0.05",
                       "--iperf-seconds", "2", "--udp-seconds", "1", "--results", str(results),
                       "--name", "hosts") == 0
        run = next(p for p in results.iterdir() if p.name.endswith("hosts"))
        m = json.loads((run / "manifest.json").read_text())
        assert m["status"] == "complete" and m["backend"] == "hosts" and m["engine"] == "userspace"
        assert m["backend_details"]["inventory"] == str(inv)
        # each machine's clock offset at the start and at the end (namespaces share this machine's clock)
        for when in ("start", "end"):
            assert set(m["clocks"][when]) == {"cpo", "gw", "evse1", "evse2", "evse3", "evse4"}
            for off in m["clocks"][when].values():
                assert abs(off["offset_s"]) <= off["uncertainty_s"] + 1e-6, off
        cell = run / "cells" / "4g__n4x250__r1"
        calls = []
        for i in range(1, 5):
            with open(cell / "ocpp" / f"calls-evse{i}.csv") as fh:
                calls += list(csv.DictReader(fh))
        # every one of the 1,000 stations made every call of the scenario, each recorded, none failed
        stations = {c["station_id"] for c in calls}
        assert len(stations) == 1000
        per = Counter((c["station_id"], c["action"]) for c in calls if c["outcome"] == "ok")
        for s in stations:
            assert [per[(s, a)] for a in ("BootNotification", "StartTransaction", "MeterValues", "StopTransaction")] \
                == [1, 1, 3, 1], s
        assert Counter(c["outcome"] for c in calls) == {"ok": len(calls)}
        assert all(float(c["rtt_ms"]) >= 40 for c in calls)  # 4g adds 40 ms of RTT
        with open(cell / "ocpp" / "csms.csv") as fh:
            assert sum(1 for r in csv.DictReader(fh) if r["action"] == "StopTransaction") == 1000

        # compare across backends: the same profile on netns
        assert run_cli("up", "--name", other, "--backend", "netns", "--evse", "1") == 0
        assert run_cli("bench", "4g", "--lab", other, "--meter-values", "3", "--ping-count", "10",
                       "--ping-interval", "0.05", "--iperf-seconds", "2", "--udp-seconds", "1",
                       "--results", str(results), "--name", "netns") == 0
        netns_run = next(p for p in results.iterdir() if p.name.endswith("netns"))
        capfd.readouterr()
        assert run_cli("compare", str(run), str(netns_run), "--out", str(tmp_path / "cmp"), "--no-figures") == 0
        text = (tmp_path / "cmp" / "compare.md").read_text()
        assert "| backend | hosts | netns |" in text.replace("  ", " ") or ("hosts" in text and "netns" in text)
    finally:
        run_cli("down", "--lab", other)
        assert run_cli("down", "--lab", lab) == 0
    after = settled(machines, before)
    for name in before:
        for what in before[name]:
            assert after[name][what] == before[name][what], (name, what)
    assert sorted(str(p) for p in Path("/opt").iterdir()) == shared
    assert run_cli("down", "--lab", lab) == 0  # idempotent
    assert "nothing to remove" in capfd.readouterr().out


def test_up_refuses_bad_inventories_with_one_line_and_changes_nothing(machines, home, tmp_path, lab_name, capfd):
    """`labkit up -i`: each refusal is one line naming the inventory (and the host), exit 2, no lab directory
    left, every machine as before. (discover's own refusals are tested one by one in test_hosts_backend.py.)"""
    before = {m.name: state(m) for m in machines.machines}
    good = machines.inventory("yaml", path=tmp_path / "good.yml")
    text = good.read_text()
    nogw = tmp_path / "nogw.yml"
    data = json.loads(text)
    del data["all"]["children"]["gateway"]
    nogw.write_text(json.dumps(data))
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace('"children": {', '"children": {{', 1))
    ini = tmp_path / "broken.ini"
    ini.write_text("[cpo]\ncpo ansible_host=10.0.0.1\n[gateway\n")
    cases = [
        (["-i", str(nogw)], rf"^{nogw}: .*gateway"),
        (["-i", str(broken)], rf"^{broken}:\d+: "),
        (["-i", str(ini)], rf"^{ini}:3: "),
        (["-i", str(machines.inventory("ini", path=tmp_path / "port.ini", extra={"evse3": {"ansible_port": 2}}))],
         rf"^{tmp_path}/port.ini:\d+: host evse3: cannot reach"),
        (["-i", str(machines.inventory("ini", path=tmp_path / "nosudo.ini",
                                       extra={"gw": {"ansible_user": machines.nosudo_user}}))],
         rf"^{tmp_path}/nosudo.ini:\d+: host gw: no passwordless sudo"),
        (["-i", str(good), "--evse", "3"], r"^labkit: error: --evse: the inventory .* has 4 evse hosts, not 3"),
        (["-i", str(good), "--backend", "netns"], r"inventory: an inventory names existing machines"),
    ]
    for args, expect in cases:
        assert run_cli("up", "--name", lab_name, *args) == 2, args
        err = capfd.readouterr().err
        assert err.count("\n") == 1, err
        line = err.removeprefix("labkit: error: ") if not expect.startswith("^labkit") else err
        assert re.search(expect, line), (expect, err)
        assert not LabDir(lab_name).journal() and not LabDir(lab_name).lab_file.exists(), args
    assert settled(machines, before) == before
