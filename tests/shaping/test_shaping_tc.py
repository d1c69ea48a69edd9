"""The pure tc command builder: the exact commands for each case, under both engines, without root."""

import pytest
from shaping_topo import profiles_from

from labkit import tc
from labkit.profiles import load_profiles

PROFILES = profiles_from("""
profiles:
  rate-only:
    description: rate only
    both: {rate: "1 Mbit/s"}
  delay-only:
    description: delay only, one direction
    uplink: {delay: "100 ms"}
    downlink: none
  amps:
    description: rate and delay (slow.sh AMPS)
    uplink: {rate: "14 kbyte/s", delay: "250 ms"}
    downlink: none
  jitter:
    description: normal jitter with a rate
    both: {rate: "10 Mbit/s", delay: "20 ms", jitter: "5 ms", distribution: normal}
  jitter-reorder:
    description: uniform jitter, reordering allowed, no rate
    both: {delay: "20 ms", jitter: "5 ms", reorder: true}
  loss:
    description: loss, corruption, duplication
    both: {rate: "1 Mbit/s", loss: "1 %", corrupt: "0.5 %", duplicate: "2 %"}
  lte:
    description: both directions, asymmetric
    uplink: {rate: "8 Mbit/s", delay: "25 ms"}
    downlink: {rate: "20 Mbit/s", delay: "25 ms"}
""")

HTB = "tc qdisc add dev {i} root handle 1: htb default 10"
CLASS = "tc class add dev {i} parent 1: classid 1:10 htb rate {r}bit ceil {r}bit burst {b}b cburst {b}b quantum 1514"


def cmds(name, iface, direction, engine):
    return tc.tc_commands(PROFILES.get(name), iface, direction, engine)


@pytest.mark.parametrize("engine", tc.ENGINES)
def test_rate_only(engine):
    assert cmds("rate-only", "eth1", "uplink", engine) == [
        HTB.format(i="eth1"),
        CLASS.format(i="eth1", r=1000000, b=3028),
        "tc qdisc add dev eth1 parent 1:10 handle 10: pfifo limit 32",
    ]


def test_delay_only():
    assert cmds("delay-only", "eth1", "uplink", "netem") == [
        "tc qdisc add dev eth1 root handle 10: netem limit 41538 delay 100000us"]
    assert cmds("delay-only", "eth2", "downlink", "netem") == []
    # userspace: the delay is the engine's; tc has nothing to do
    assert cmds("delay-only", "eth1", "uplink", "userspace") == []
    p = tc.plan(PROFILES.get("delay-only"), uplink_iface="eth1", downlink_iface="eth2", engine="userspace")
    assert p.rules == ["iptables -w -N LABKIT-SHAPE",
                       "iptables -w -A LABKIT-SHAPE -i eth2 -o eth1 -j NFQUEUE --queue-num 0",
                       "iptables -w -I FORWARD 1 -j LABKIT-SHAPE"]
    assert p.engine_config["queues"] == {"0": {
        "direction": "uplink", "delay_ms": 100.0, "jitter_ms": 0.0, "distribution": "uniform", "reorder": False,
        "loss_pct": 0.0, "corrupt_pct": 0.0, "duplicate_pct": 0.0, "maxlen": 41538}}


def test_rate_and_delay():
    assert cmds("amps", "eth1", "uplink", "netem") == [
        HTB.format(i="eth1"),
        CLASS.format(i="eth1", r=112000, b=3028),
        "tc qdisc add dev eth1 parent 1:10 handle 10: netem limit 20925 delay 250000us",
    ]
    # 112 kbit/s: the queue floor is 2 s of frames (19), not 32 packets
    assert cmds("amps", "eth1", "uplink", "userspace") == [
        HTB.format(i="eth1"),
        CLASS.format(i="eth1", r=112000, b=3028),
        "tc qdisc add dev eth1 parent 1:10 handle 10: pfifo limit 19",
    ]
    assert cmds("amps", "eth2", "downlink", "netem") == []


def test_jitter_keeps_order_unless_asked():
    assert cmds("jitter", "eth1", "uplink", "netem")[-1] == (
        "tc qdisc add dev eth1 parent 1:10 handle 10: netem limit 1042 delay 20000us 5000us distribution normal "
        "rate 100gbit")
    assert cmds("jitter", "eth1", "uplink", "netem")[1] == CLASS.format(i="eth1", r=10000000, b=5000)
    assert cmds("jitter-reorder", "eth1", "uplink", "netem") == [
        "tc qdisc add dev eth1 root handle 10: netem limit 10577 delay 20000us 5000us"]


def test_loss_corrupt_duplicate():
    assert cmds("loss", "eth2", "downlink", "netem")[-1] == (
        "tc qdisc add dev eth2 parent 1:10 handle 10: netem limit 1032 loss random 1% corrupt 0.5% duplicate 2%")
    assert cmds("loss", "eth2", "downlink", "userspace")[-1] == (
        "tc qdisc add dev eth2 parent 1:10 handle 10: pfifo limit 32")
    cfg = tc.engine_config(PROFILES.get("loss"), seed=7, status_file="/s.json")
    assert cfg["seed"] == 7 and set(cfg["queues"]) == {"0", "1"}
    assert cfg["queues"]["1"]["loss_pct"] == 1.0 and cfg["queues"]["1"]["duplicate_pct"] == 2.0


def test_both_directions():
    p = tc.plan(PROFILES.get("lte"), uplink_iface="eth1", downlink_iface="eth2", engine="netem")
    assert p.tc == {
        "uplink": [HTB.format(i="eth1"), CLASS.format(i="eth1", r=8000000, b=5000),
                   "tc qdisc add dev eth1 parent 1:10 handle 10: netem limit 1034 delay 25000us"],
        "downlink": [HTB.format(i="eth2"), CLASS.format(i="eth2", r=20000000, b=12500),
                     "tc qdisc add dev eth2 parent 1:10 handle 10: netem limit 1083 delay 25000us"],
    }
    assert p.rules == [] and p.engine_config is None
    u = tc.plan(PROFILES.get("lte"), uplink_iface="eth1", downlink_iface="eth2", engine="userspace")
    assert u.tc["downlink"][-1] == "tc qdisc add dev eth2 parent 1:10 handle 10: pfifo limit 83"
    assert u.rules == ["iptables -w -N LABKIT-SHAPE",
                       "iptables -w -A LABKIT-SHAPE -i eth2 -o eth1 -j NFQUEUE --queue-num 0",
                       "iptables -w -A LABKIT-SHAPE -i eth1 -o eth2 -j NFQUEUE --queue-num 1",
                       "iptables -w -I FORWARD 1 -j LABKIT-SHAPE"]
    assert u.engine_config["queues"]["0"]["maxlen"] == 1000
    assert u.engine_config["queues"]["1"]["maxlen"] == 1000


def test_clear():
    assert tc.clear_tc_commands("eth1") == ["tc qdisc del dev eth1 root"]
    assert tc.clear_nfqueue_rules() == ["iptables -w -D FORWARD -j LABKIT-SHAPE", "iptables -w -F LABKIT-SHAPE",
                                        "iptables -w -X LABKIT-SHAPE"]


def test_unshaped_profile_needs_nothing():
    p = tc.plan(load_profiles().get("none"), uplink_iface="eth1", downlink_iface="eth2", engine="userspace")
    assert p.tc == {"uplink": [], "downlink": []} and p.rules == [] and p.engine_config is None


def test_no_ambiguous_units_in_any_shipped_command():
    ps = load_profiles()
    for p in ps.profiles.values():
        for engine in tc.ENGINES:
            plan = tc.plan(p, uplink_iface="eth1", downlink_iface="eth2", engine=engine)
            text = " ".join(c for cs in plan.tc.values() for c in cs)
            assert "bps" not in text and "kbit " not in text, (p.name, text)


def test_interface_names_are_quoted():
    assert cmds("rate-only", "eth 1", "uplink", "netem")[0] == "tc qdisc add dev 'eth 1' root handle 1: htb default 10"


def test_bad_engine_or_direction():
    with pytest.raises(ValueError, match="unknown engine"):
        cmds("amps", "eth1", "uplink", "ebpf")
    with pytest.raises(ValueError, match="unknown direction"):
        cmds("amps", "eth1", "sideways", "netem")
