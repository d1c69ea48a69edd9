"""The read-back refuses what is not the plan, on a real data path (namespaces, real tc, iptables, NFQUEUE and
the real userspace engine): an engine started with another config, values changed by hand afterwards.

Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import shlex
import statistics
import time

import pytest
from shaping_topo import profiles_from
from test_shaping_netns import ping

from labkit import shaping, tc

pytestmark = [pytest.mark.root, pytest.mark.slow]

PROFILES = profiles_from("""
profiles:
  up40:
    description: uplink only, rate and delay
    uplink: {rate: "1 Mbit/s", delay: "40 ms"}
    downlink: none
  sym:
    description: both directions
    both: {rate: "20 Mbit/s", delay: "15 ms"}
  jitter:
    description: normal jitter, order kept
    uplink: {delay: "20 ms", jitter: "2 ms", distribution: normal}
    downlink: none
  lossy:
    description: 20 % loss on the uplink only
    uplink: {loss: "20 %"}
    downlink: none
""")


def kinds(state, direction):
    return [q["kind"] for q in state["directions"][direction]["qdisc"] if q["kind"] != "noqueue"]


def assert_cleared(remote, topo):
    shown = shaping.show(remote, topo.inventory)
    assert kinds(shown, "uplink") == [] and kinds(shown, "downlink") == [] and shown["rules"] == []
    assert not shown["engine_process"].get("alive")


@pytest.mark.parametrize("profile,queue,key,value,message", [
    ("up40", "0", "delay_ms", 30.0, "uplink (eth2 -> eth1, NFQUEUE 0) engine delay: applied 30 ms, planned 40 ms"),
    ("jitter", "0", "distribution", "uniform",
     "uplink (eth2 -> eth1, NFQUEUE 0) engine distribution: applied uniform, planned normal"),
    ("jitter", "0", "reorder", True, "uplink (eth2 -> eth1, NFQUEUE 0) engine reorder: applied True, planned False"),
    ("lossy", "0", "loss_pct", 2.0, "uplink (eth2 -> eth1, NFQUEUE 0) engine loss: applied 2 %, planned 20 %"),
    ("sym", "1", "maxlen", 900,
     "downlink (eth1 -> eth2, NFQUEUE 1) engine queue length: applied 900 packets, planned 1000 packets"),
])
def test_apply_refuses_an_engine_that_runs_another_config(topo, remote, monkeypatch, profile, queue, key, value,
                                                          message):
    real_start = shaping._start_engine

    def start_wrong(remote_, gw, config, config_path, status_path):
        config = json.loads(json.dumps(config))
        config["queues"][queue][key] = value
        return real_start(remote_, gw, config, config_path, status_path)

    monkeypatch.setattr(shaping, "_start_engine", start_wrong)
    with pytest.raises(shaping.ShapingError) as exc:
        shaping.apply(remote, topo.inventory, PROFILES.get(profile), engine="userspace")
    text = str(exc.value)
    assert text == f"profile {profile!r} on gw does not read back as planned, the link was cleared: {message}", text
    assert_cleared(remote, topo)
    assert len(ping(topo, 5)) == 5  # the link is unshaped again, not dead


def _gw(topo, cmd: str) -> None:
    topo.exec("gw", f"sh -c {shlex.quote(cmd)}")


def test_reverify_refuses_values_changed_by_hand(topo, remote):
    prof = PROFILES.get("sym")
    state = shaping.apply(remote, topo.inventory, prof, engine="userspace")
    lay = state["plan"]["layouts"]["uplink"]
    assert lay["htb"]["burst_bytes"] == 7500 and lay["leaf"] == {"kind": "pfifo", "limit": 50}
    assert shaping.reverify(remote, topo.inventory, prof)["verified"]

    def refused(fragment: str) -> None:
        with pytest.raises(shaping.ShapingError) as exc:
            shaping.reverify(remote, topo.inventory, prof)
        assert "the link no longer holds what the profile plans (nothing was changed): " in str(exc.value)
        assert str(exc.value).endswith(fragment), str(exc.value)

    cls = "tc class change dev eth1 parent 1: classid 1:10 htb rate {r}bit ceil 20000000bit burst 7500b cburst 7500b"
    _gw(topo, cls.format(r=10_000_000) + " quantum 1514")
    refused("uplink (eth1) htb rate: applied 10 Mbit/s, planned 20 Mbit/s")
    # a change that leaves out the quantum resets it to rate / r2q (2.5 MB/s / 10, capped by HTB at 200000)
    _gw(topo, cls.format(r=20_000_000))
    refused("uplink (eth1) htb quantum: applied 200000 bytes, planned 1514 bytes")
    _gw(topo, cls.format(r=20_000_000) + " quantum 1514")
    assert shaping.reverify(remote, topo.inventory, prof)["verified"]  # put back exactly: accepted again

    _gw(topo, "tc qdisc change dev eth2 parent 1:10 handle 10: pfifo limit 5")
    refused("downlink (eth2) pfifo limit: applied 5 packets, planned 50 packets")
    _gw(topo, "tc qdisc change dev eth2 parent 1:10 handle 10: pfifo limit 50")

    _gw(topo, f"iptables -w -D {tc.CHAIN} -i eth1 -o eth2 -j NFQUEUE --queue-num 1")
    refused(f"rules in {tc.CHAIN}: applied ['-A {tc.CHAIN} -i eth2 -o eth1 -j NFQUEUE --queue-num 0'], planned "
            f"['-A {tc.CHAIN} -i eth2 -o eth1 -j NFQUEUE --queue-num 0', "
            f"'-A {tc.CHAIN} -i eth1 -o eth2 -j NFQUEUE --queue-num 1']")
    _gw(topo, f"iptables -w -A {tc.CHAIN} -i eth1 -o eth2 -j NFQUEUE --queue-num 1")
    assert shaping.reverify(remote, topo.inventory, prof)["verified"]

    # nothing above changed what reverify found: a wrong link stays as it is until someone applies again
    base_ok = statistics.median(ping(topo, 10))
    assert base_ok >= 30
    pid = int((topo.workdir / "gw" / "shaper.pid").read_text())
    _gw(topo, f"kill -KILL {pid}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and remote.run(topo.inventory.gateway, f"kill -0 {pid}", check=False).ok:
        time.sleep(0.1)  # SIGKILL takes a moment; a zombie left unreaped counts as dead (shaping._alive_cmd)
    with pytest.raises(shaping.ShapingError,
                       match=r"userspace engine: applied dead \(its last report says running\), planned running"):
        shaping.reverify(remote, topo.inventory, prof)
    shaping.clear(remote, topo.inventory)


def test_reverify_refuses_an_engine_restarted_by_hand_with_another_config(topo, remote, tmp_path):
    prof = PROFILES.get("lossy")
    shaping.apply(remote, topo.inventory, prof, engine="userspace", seed=3)
    gw = topo.inventory.gateway
    config_path, status_path = shaping._paths(gw)
    config = json.loads(open(config_path).read())
    assert config["queues"]["0"]["loss_pct"] == 20.0
    config["queues"]["0"]["loss_pct"] = 5.0
    other = tmp_path / "other.json"
    other.write_text(json.dumps(config))
    remote.stop(gw, shaping.ENGINE_PROC)
    remote.start(gw, shaping.ENGINE_PROC, f"{gw.labkit} shaper run --config {other}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = shaping._engine_status(remote, gw)
        if st and st.get("state") == "running" and st["queues"][0]["running"]["loss"] == 0.05:
            break
        time.sleep(0.1)
    with pytest.raises(shaping.ShapingError) as exc:
        shaping.reverify(remote, topo.inventory, prof, seed=3)
    assert str(exc.value).endswith("uplink (eth2 -> eth1, NFQUEUE 0) engine loss: applied 5 %, planned 20 %")
    with pytest.raises(shaping.ShapingError, match=r"userspace engine seed: applied 3, planned 4"):
        shaping.reverify(remote, topo.inventory, prof, seed=4)
    shaping.clear(remote, topo.inventory)


def test_the_engine_reports_what_it_runs(topo, remote):
    state = shaping.apply(remote, topo.inventory, PROFILES.get("jitter"), engine="userspace")
    q = state["engine_process"]["status"]["queues"][0]
    assert q["running"] == {"direction": "uplink", "delay_ns": 20_000_000, "jitter_ns": 2_000_000,
                            "distribution": "normal", "reorder": False, "loss": 0.0, "gemodel": None, "corrupt": 0.0,
                            "duplicate": 0.0, "maxlen": state["plan"]["engine_config"]["queues"]["0"]["maxlen"],
                            "copy_mode": "meta"}
    assert "kernel" in q  # bound: the kernel lists the queue in /proc/net/netfilter/nfnetlink_queue
    shaping.clear(remote, topo.inventory)
