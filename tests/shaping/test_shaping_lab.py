"""``labkit shape`` end to end on a real lab: ``labkit up`` (netns backend), SSH, the userspace engine.

Needs root (namespaces, sshd); skipped otherwise. Lab name ``shp2`` in a private LABKIT_HOME.
"""

from __future__ import annotations

import json
import os
import re
import statistics

import pytest

from labkit.cli import main

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and sshd")]

LAB = "shp2"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LABKIT_HOME", str(home))
    assert main(["up", "--name", LAB, "--backend", "netns"]) == 0
    try:
        yield home
    finally:
        main(["down", "--lab", LAB])


def _ping(capfd, count=10) -> list[float]:
    capfd.readouterr()
    main(["ssh", "--lab", LAB, "evse1", "ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", "192.168.10.10"])
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", capfd.readouterr().out)]


def test_shape_show_clear(lab, capfd):
    base = statistics.median(_ping(capfd))
    assert main(["shape", "slow-amps", "--lab", LAB]) == 0
    out = capfd.readouterr().out
    assert "slow-amps applied with the userspace engine, every value verified by read-back" in out
    applied = json.loads((lab / "labs" / LAB / "shaping.json").read_text())
    assert applied["profile"] == "slow-amps" and applied["engine"] == "userspace" and applied["verified"]
    assert applied["expected"]["added_rtt_ms"] == 250
    rtts = _ping(capfd)
    assert len(rtts) == 10 and min(rtts) >= 250 and abs(statistics.median(rtts) - (base + 250)) <= 5
    assert main(["shape", "--show", "--json", "--lab", LAB]) == 0
    shown = json.loads(capfd.readouterr().out)
    assert shown["engine_process"]["alive"]
    assert shown["engine_process"]["status"]["queues"][0]["released"] >= 10
    # re-verify without applying: the same profile passes, another one is refused and nothing changes
    assert main(["shape", "slow-amps", "--verify", "--lab", LAB]) == 0
    assert "holds slow-amps (userspace engine), every value verified by read-back; nothing changed" in \
        capfd.readouterr().out
    assert main(["shape", "slow-gprs", "--verify", "--lab", LAB]) == 1
    err = capfd.readouterr().err
    assert ("profile 'slow-gprs' on gw: the link no longer holds what the profile plans (nothing was changed): "
            "uplink (eth1) htb rate: applied 112 kbit/s, planned 400 kbit/s;") in err
    # a value changed by hand on the gateway is caught
    assert main(["ssh", "--lab", LAB, "gw", "tc", "qdisc", "change", "dev", "eth1", "parent", "1:10", "handle", "10:",
                 "pfifo", "limit", "5"]) == 0
    assert main(["shape", "slow-amps", "--verify", "--lab", LAB]) == 1
    assert "uplink (eth1) pfifo limit: applied 5 packets, planned 19 packets" in capfd.readouterr().err
    assert main(["shape", "slow-amps", "--lab", LAB]) == 0  # applied again: whole
    # a bad profile changes nothing
    assert main(["shape", "Vsat", "--lab", LAB]) == 2
    assert main(["shape", "vsat", "--engine", "netem", "--lab", LAB]) in (0, 2)  # 2 where netem is missing
    assert main(["shape", "--clear", "--lab", LAB]) == 0
    assert not (lab / "labs" / LAB / "shaping.json").exists()
    assert statistics.median(_ping(capfd)) < base + 1.0
