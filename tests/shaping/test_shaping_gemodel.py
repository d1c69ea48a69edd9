"""Bursty loss (Gilbert-Elliott, netem's ``loss gemodel``): the profile spelling, netem's command, the engine's
decision per packet, its statistics against the model's, the read-back, and the validation.

The decision is checked three ways: step by step against the kernel's ``loss_gilb_ell`` (a scripted generator),
over 20,000 packets against the model's 99 % intervals (as the issue asks), and over 100 seeds (the intervals
must hold about 99 times in 100, which also checks the intervals themselves).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess

import pytest
from shaping_topo import profiles_from

from labkit import shaping, tc
from labkit.errors import ConfigError
from labkit.lossmodel import GEParams, GilbertElliott, runs
from labkit.nfq.engine import Engine
from tests.probescripts import UDP_RECV, UDP_SEND

PROFILES = profiles_from("""
profiles:
  bursty:
    description: 5 % loss in bursts of about 4 packets, uplink only
    uplink: {rate: "1 Mbit/s", delay: "20 ms", loss: {mean: "5 %", burst: "4 packets"}}
    downlink: none
  handover:
    description: the issue's example, both directions
    both: {loss: {mean: "1 %", burst: "5 packets"}}
""")

#: the general model (every parameter of netem's gemodel in use), written in the engine's config units
GENERAL = {"p": 1.0, "r": 10.0, "1-h": 70.0, "1-k": 0.2}
N = 20_000


class Scripted(random.Random):
    """A generator that returns the given draws in order (the kernel's two draws per packet)."""

    def __init__(self, draws):
        super().__init__(0)
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)


def test_one_packet_at_a_time_as_the_kernel_decides():
    # net/sched/sch_netem.c loss_gilb_ell: good: (draw < p -> bad), then lost if draw < 1-k;
    # bad: (draw < r -> good), then lost if draw > h, i.e. with probability 1-h. The packet is judged by the
    # state it found: a move to bad does not lose the packet that caused it.
    g = GilbertElliott(GEParams(p=0.3, r=0.4, bad_loss=0.5, good_loss=0.1))
    assert g.bad is False  # netem starts good
    assert g.lose(Scripted([0.29, 0.2])) is False and g.bad is True  # moved to bad; judged good (0.2 >= 1-k)
    assert g.lose(Scripted([0.5, 0.49])) is True and g.bad is True  # stays bad (0.5 >= r); lost (0.49 < 1-h)
    assert g.lose(Scripted([0.39, 0.6])) is False and g.bad is False  # back to good; judged bad: 0.6 >= 1-h
    assert g.lose(Scripted([0.31, 0.09])) is True and g.bad is False  # stays good; lost in good (0.09 < 1-k)


def test_the_simple_model_meets_its_closed_forms():
    g = GEParams.from_mean_burst(0.01, 5)  # the "1 % in bursts of about 5 packets"
    assert (g.p, g.r, g.bad_loss, g.good_loss) == (pytest.approx(0.01 * 0.2 / 0.99), 0.2, 1.0, 0.0)
    assert g.mean_loss() == pytest.approx(0.01) and g.mean_burst() == pytest.approx(5.0)
    # the loss rate of a two-state chain: variance n pi (1 - pi) (1 + lam) / (1 - lam), lam = 1 - p - r
    lam = 1 - g.p - g.r
    sd = g.spread(N)
    assert sd["loss_sd"] == pytest.approx(math.sqrt(0.01 * 0.99 * (1 + lam) / (1 - lam) / N))
    # bursts: geometric lengths (variance (1 - r) / r^2), n pi_good p of them
    assert sd["burst_sd"] == pytest.approx(math.sqrt((1 - g.r) / g.r**2 / (N * (1 - g.stationary_bad()) * g.p)))


def test_the_general_model_figures():
    g = GEParams.from_percent(GENERAL)
    bad = 1 / 11
    assert g.stationary_bad() == pytest.approx(bad)
    assert g.mean_loss() == pytest.approx((1 - bad) * 0.002 + bad * 0.7)
    # a burst starts when a delivered packet is followed by a lost one, whatever the states
    starts = sum(pi * (1 - e) * t * e2 for pi, e, row in ((1 - bad, 0.002, ((0.99, 0.002), (0.01, 0.7))),
                                                           (bad, 0.7, ((0.1, 0.002), (0.9, 0.7))))
                 for t, e2 in row)
    assert g.mean_burst() == pytest.approx(g.mean_loss() / starts)


def _decisions(engine: Engine, queue: int, n: int) -> list[bool]:
    q = engine.queues[queue]
    return [q.lost_now(engine.rng) for _ in range(n)]


def _measured(lost: list[bool]) -> tuple[float, float]:
    r = runs(lost)
    return sum(lost) / len(lost), sum(r) / len(r)


@pytest.mark.parametrize("case", ["profile", "general"])
def test_20000_decisions_of_the_engine_fall_in_the_99_percent_intervals(case):
    # A fixed seed makes this deterministic. A 99 % interval leaves out about one seed in a hundred (for the
    # profile's model seeds 11, 33, 141 and 221 of 0-299 fall outside one of the two): the test below checks
    # that rate over many seeds, so that a model that is wrong on average cannot hide behind a lucky seed.
    if case == "profile":
        # the engine as labkit configures it for a profile: 5 % in bursts of about 4 packets
        cfg = tc.engine_config(PROFILES.get("bursty"), seed=1, status_file="")
        model = PROFILES.get("bursty").uplink.gemodel
    else:
        cfg = {"seed": 1, "queues": {"0": {"direction": "uplink", "gemodel": GENERAL}}}
        model = GEParams.from_percent(GENERAL)
    eng = Engine(cfg)
    loss, burst = _measured(_decisions(eng, 0, N))
    iv = model.interval99(N)
    assert iv["loss"][0] <= loss <= iv["loss"][1], (loss, iv["loss"])
    assert iv["burst"][0] <= burst <= iv["burst"][1], (burst, iv["burst"])
    # the intervals are narrow enough to tell this model from random loss at the same mean (bursts of ~1)
    assert iv["burst"][0] > 1 / (1 - model.mean_loss()) + 0.3


@pytest.mark.parametrize("params", [GEParams.from_mean_burst(0.05, 4), GEParams.from_percent(GENERAL)],
                         ids=["simple", "general"])
def test_the_intervals_hold_about_99_times_in_100(params):
    iv = params.interval99(N)
    inside = {"loss": 0, "burst": 0}
    for seed in range(100):
        g, rng = GilbertElliott(params), random.Random(seed)
        loss, burst = _measured([g.lose(rng) for _ in range(N)])
        inside["loss"] += iv["loss"][0] <= loss <= iv["loss"][1]
        inside["burst"] += iv["burst"][0] <= burst <= iv["burst"][1]
    # Binomial(100, 0.99): 95 or fewer inside has probability 0.0034 if the intervals are right
    assert inside["loss"] >= 96 and inside["burst"] >= 96, inside


def test_the_profile_spelling_is_netems_gemodel():
    d = PROFILES.get("bursty").uplink
    assert (d.loss_pct, d.loss_burst_pkts) == (5.0, 4.0)
    assert d.loss_text == "5 % in bursts of 4 packets"
    # r = 1 / burst; p = mean x r / (1 - mean); every packet lost in the bad state, none in the good one
    assert tc.tc_commands(PROFILES.get("bursty"), "eth1", "uplink", "netem")[-1] == (
        "tc qdisc add dev eth1 parent 1:10 handle 10: netem limit 1946 delay 20000us "
        "loss gemodel 1.31578947368% 25% 100% 0%")
    assert tc.tc_commands(PROFILES.get("handover"), "eth2", "downlink", "netem") == [
        "tc qdisc add dev eth2 root handle 10: netem limit 1000 loss gemodel 0.20202020202% 20% 100% 0%"]
    q = tc.engine_config(PROFILES.get("bursty"), seed=1, status_file="/s")["queues"]["0"]
    assert q["loss_pct"] == 0.0 and q["gemodel"] == {"p": 5 * 25 / 95, "r": 25.0, "1-h": 100.0, "1-k": 0.0}
    # what a profile promises: the mean
    assert PROFILES.get("bursty").expected()["uplink_loss_pct"] == 5.0
    assert PROFILES.get("bursty").summary() == ("up: 1 Mbit/s, 20 ms, loss 5 % in bursts of 4 packets; "
                                                "down: unshaped")
    # it survives the results' round trip (cell.json keeps Profile.to_dict())
    from labkit.profiles import Profile

    p = PROFILES.get("handover")
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@pytest.mark.parametrize("loss,field,message", [
    ('{mean: "1 %"}', "loss.burst", "'burst' is missing"),
    ('{burst: "5 packets"}', "loss.mean", "'mean' is missing"),
    ('{mean: "1 %", burst: "5 packets", p: "1 %"}', "loss.p", "unknown field 'p' (allowed: mean, burst"),
    ('{mean: "150 %", burst: "5 packets"}', "loss.mean", "a percentage must be from 0 to 100"),
    ('{mean: "-1 %", burst: "5 packets"}', "loss.mean", "a percentage must be from 0 to 100"),
    ('{mean: "0 %", burst: "5 packets"}', "loss.mean", "(allowed: above 0 and below 100 %"),
    ('{mean: "100 %", burst: "5 packets"}', "loss.mean", "(allowed: above 0 and below 100 %"),
    ('{mean: "1 kbit/s", burst: "5 packets"}', "loss.mean", "is not a percentage"),
    ('{mean: "1 %", burst: "0.5 packets"}', "loss.burst", "burst '0.5 packets' (allowed: 1 to 1000000 packets"),
    ('{mean: "1 %", burst: 0}', "loss.burst", "burst 0 (allowed: 1 to 1000000 packets"),
    ('{mean: "1 %", burst: "5 ms"}', "loss.burst", "is not a burst length such as \"5 packets\""),
    ('{mean: "1 %", burst: "1e9 packets"}', "loss.burst", "(allowed: 1 to 1000000 packets"),
    ('{mean: "1 %", burst: true}', "loss.burst", "(allowed: 1 to 1000000 packets"),
    # p = mean x r / (1 - mean) must be a probability: 60 % in bursts of 1 needs p = 1.5
    ('{mean: "60 %", burst: 1}', "loss.mean", "needs more than one burst per packet (allowed: a mean of at most "
                                              "50 % for bursts of 1)"),
    ('{mean: "1e-5 %", burst: 1000000}', "loss.mean", "below netem's resolution"),
    ('[1, 2]', "loss", "is not a percentage"),
])
def test_bursty_loss_mistakes_name_file_line_and_field(loss, field, message):
    text = f"profiles:\n  p:\n    description: x\n    uplink:\n      delay: \"5 ms\"\n      loss: {loss}\n" \
           f"    downlink: none\n"
    with pytest.raises(ConfigError) as exc:
        profiles_from(text, "mine.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"mine.yaml:6: profiles.p.uplink.{field}: "), msg
    assert message in msg, msg
    assert exc.value.exit_code == 2 and "\n" not in msg


def test_a_mistake_in_block_style_points_at_its_own_line():
    text = ('profiles:\n  p:\n    description: x\n    both:\n      loss:\n        mean: "1 %"\n'
            '        burst: "0 packets"\n')
    with pytest.raises(ConfigError, match=r"^mine.yaml:7: profiles.p.both.loss.burst: burst '0 packets' "):
        profiles_from(text, "mine.yaml")


@pytest.mark.parametrize("gemodel,message", [
    ({"p": 1, "r": 10, "1-h": 100}, r"queues.0.gemodel: .* \(allowed: \{\"p\", \"r\", \"1-h\", \"1-k\"\}"),
    ({"p": 1, "r": 10, "1-h": 100, "1-k": 0, "h": 1}, r"queues.0.gemodel: .* \(allowed:"),
    ({"p": 1, "r": 101, "1-h": 100, "1-k": 0}, r"queues.0.gemodel.r: 101 \(allowed: 0 to 100\)"),
    ({"p": -0.1, "r": 10, "1-h": 100, "1-k": 0}, r"queues.0.gemodel.p: -0.1 \(allowed: 0 to 100\)"),
    ({"p": 1, "r": 10, "1-h": "100", "1-k": 0}, r"queues.0.gemodel.1-h: '100' \(allowed: 0 to 100\)"),
    ({"p": 1, "r": 10, "1-h": 100, "1-k": float("nan")}, r"queues.0.gemodel.1-k: nan \(allowed: 0 to 100\)"),
    ("p 1 r 10", r"queues.0.gemodel: 'p 1 r 10' \(allowed:"),
])
def test_the_engine_refuses_a_gemodel_it_cannot_run_as_written(gemodel, message):
    with pytest.raises(ValueError, match=message):
        Engine({"queues": {"0": {"direction": "uplink", "gemodel": gemodel}}})
    with pytest.raises(ValueError, match=r"loss_pct and gemodel together"):
        Engine({"queues": {"0": {"direction": "uplink", "loss_pct": 1, "gemodel": GENERAL}}})


def test_the_engine_reports_the_chain_it_runs():
    eng = Engine(tc.engine_config(PROFILES.get("bursty"), seed=1, status_file=""))
    run = eng.queues[0].stats()["running"]
    p_pct = PROFILES.get("bursty").uplink.gemodel.as_percent()["p"]  # the plan carries percent
    assert run["loss"] == 0.0 and run["gemodel"] == {"p": p_pct / 100, "r": 0.25, "1-h": 1.0, "1-k": 0.0}
    assert run["gemodel"]["p"] == pytest.approx(5 / 95 * 0.25, rel=1e-15)


# -- read back -------------------------------------------------------------------------------------------------
# This kernel has no sch_netem, so netem's read-back of a gemodel cannot be captured here. The JSON below is
# what iproute2's q_netem.c prints (from 5.2 on: "loss-gemodel": {"p", "r", "1-h", "1-k"}, each the kernel's
# u32 / (2^32 - 1) printed with %g), written by hand from that code, not captured.
def _netem_qdisc(gemodel: dict | None, loss: float | None = None) -> list[dict]:
    opts: dict = {"limit": 1000, "delay": {"delay": 0, "jitter": 0, "correlation": 0}, "ecn": False, "gap": 0}
    if gemodel is not None:
        opts["loss-gemodel"] = gemodel
    if loss is not None:
        opts["loss-random"] = {"loss": loss, "correlation": 0}
    return [{"kind": "netem", "handle": "10:", "root": True, "refcnt": 2, "options": opts}]


def _verify_handover(qdisc: list[dict]) -> list[str]:
    lay = tc.layout(PROFILES.get("handover"), "downlink", "netem")
    return shaping.verify_direction("downlink", "eth2", lay, qdisc, "")


def test_read_back_of_a_gemodel():
    # 0.20202020202 % as netem holds it (rint of the fraction x (2^32 - 1)) and as %g prints it
    assert _verify_handover(_netem_qdisc({"p": 0.0020202, "r": 0.2, "1-h": 1, "1-k": 0})) == []
    assert _verify_handover(_netem_qdisc({"p": 0.0020203, "r": 0.2, "1-h": 1, "1-k": 0})) == [
        "downlink (eth2) netem loss gemodel p: applied 0.20203 %, planned 0.20202 %"]
    assert _verify_handover(_netem_qdisc({"p": 0.0020202, "r": 0.2, "1-h": 0, "1-k": 0})) == [
        "downlink (eth2) netem loss gemodel 1-h: applied 0 %, planned 100 %"]
    assert _verify_handover(_netem_qdisc({"p": 0.0020202, "r": 0.2, "1-h": 1})) == [
        "downlink (eth2) netem loss gemodel 1-k: applied none, planned 0 %"]
    assert _verify_handover(_netem_qdisc(None, loss=0.01)) == [
        "downlink (eth2) netem loss: applied 1 %, planned 0 %",
        "downlink (eth2) netem loss gemodel: applied none, planned p 0.20202 % r 20 % 1-h 100 % 1-k 0 %"]
    # a gemodel where random loss was planned
    lay = tc.layout(profiles_from("profiles:\n  r:\n    description: x\n    both: {loss: \"1 %\"}\n").get("r"),
                    "downlink", "netem")
    assert shaping.verify_direction("downlink", "eth2", lay, _netem_qdisc({"p": 0.01, "r": 0.2, "1-h": 1, "1-k": 0},
                                                                          loss=0.01), "") == [
        'downlink (eth2) netem loss-gemodel: applied {"1-h": 1, "1-k": 0, "p": 0.01, "r": 0.2}, planned none']


def test_the_engine_check_compares_its_chain_exactly():
    profile = PROFILES.get("handover")
    plan = tc.plan(profile, uplink_iface="eth1", downlink_iface="eth2", engine="userspace", status_file="")
    state = {"directions": {d: {"qdisc": [], "class": ""} for d in tc.DIRECTIONS},
             "rules": [r.split("iptables -w ", 1)[1] for r in plan.rules if " -A " in r],
             "forward_rules": ["-A FORWARD -j LABKIT-SHAPE"]}

    def problems(config):
        eng = Engine(config)
        eng.state = "running"  # as after open(); its socket is not opened here
        status = eng.status()
        for q in status["queues"]:
            q["kernel"] = {}  # bound (this is not the kernel's report: the engine never opened its socket here)
        return shaping.verify(plan, profile, {**state, "engine_process": {"alive": True, "status": status}})

    assert problems(plan.engine_config) == []
    wrong = json.loads(json.dumps(plan.engine_config))
    wrong["queues"]["1"]["gemodel"]["r"] = 25.0
    del wrong["queues"]["0"]["gemodel"]
    wrong["queues"]["0"]["loss_pct"] = 1.0
    assert problems(wrong) == [
        "uplink (eth2 -> eth1, NFQUEUE 0) engine loss: applied 1 %, planned 0 %",
        "uplink (eth2 -> eth1, NFQUEUE 0) engine loss gemodel: applied none, planned p 0.20202 % r 20 % 1-h 100 % "
        "1-k 0 %",
        "downlink (eth1 -> eth2, NFQUEUE 1) engine loss gemodel r: applied 25 %, planned 20 %"]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tc"), reason="needs root and tc")
def test_tc_parses_the_gemodel_command():
    """tc parses netem's options before it asks the kernel: a malformed line fails with its usage text (exit 1),
    a well-formed one only with "Specified qdisc kind is unknown" on this kernel (no sch_netem), or succeeds."""
    ns = "shge"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2"], check=True)
        for name in ("bursty", "handover"):
            for direction in tc.DIRECTIONS:
                subprocess.run(f"ip netns exec {ns} tc qdisc del dev eth1 root", shell=True, capture_output=True)
                for cmd in tc.tc_commands(PROFILES.get(name), "eth1", direction, "netem"):
                    r = subprocess.run(f"ip netns exec {ns} {cmd}", shell=True, capture_output=True, text=True)
                    if "netem" in cmd:
                        assert r.returncode == 0 or "Specified qdisc kind is unknown" in r.stderr, (cmd, r.stderr)
                        assert "Usage" not in r.stderr and "What is" not in r.stderr, (cmd, r.stderr)
        # the check can fail: a fifth number is not netem's
        r = subprocess.run(f"ip netns exec {ns} tc qdisc add dev eth1 root netem loss gemodel 1% 20% 100% 0% 5%",
                           shell=True, capture_output=True, text=True)
        assert r.returncode == 1 and "Usage" in r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# -- the real engine in a namespace topology ----------------------------------------------------------------------
@pytest.mark.root
@pytest.mark.slow
def test_20000_udp_packets_through_the_real_engine(topo, remote):
    import sys

    from shaping_topo import CPO_ADDR

    profile = PROFILES.get("bursty")
    lossy = profiles_from("""
        profiles:
          bursty-up:
            description: 5 % loss in bursts of about 4 packets on the uplink, nothing else
            uplink: {loss: {mean: "5 %", burst: "4 packets"}}
            downlink: none
    """).get("bursty-up")
    assert lossy.uplink.gemodel == profile.uplink.gemodel
    state = shaping.apply(remote, topo.inventory, lossy, engine="userspace", seed=7)
    assert state["verified"]
    run = state["engine_process"]["status"]["queues"][0]["running"]
    assert run["gemodel"]["r"] == 0.25 and run["loss"] == 0.0
    recv = subprocess.Popen(["ip", "netns", "exec", topo.ns["cpo"], sys.executable, "-c", UDP_RECV],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", topo.ns["evse1"], sys.executable, "-c", UDP_SEND, str(N), CPO_ADDR],
                       check=True, timeout=60)
        out, _ = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
    got = set(json.loads(out))
    lost = [i not in got for i in range(N)]
    q = shaping.show(remote, topo.inventory)["engine_process"]["status"]["queues"][0]
    # every missing datagram was dropped by the engine's chain, and only our datagrams crossed the uplink
    assert q["seen"] == N and q["dropped_loss"] == sum(lost), (q["seen"], q["dropped_loss"], sum(lost))
    assert q["kernel"]["dropped_queue_full"] == 0 and q["kernel"]["dropped_socket_full"] == 0, q["kernel"]
    loss, burst = _measured(lost)
    iv = lossy.uplink.gemodel.interval99(N)
    assert iv["loss"][0] <= loss <= iv["loss"][1], (loss, iv["loss"])
    assert iv["burst"][0] <= burst <= iv["burst"][1], (burst, iv["burst"])
    # and it is the very sequence the engine's decision function gives with that seed, packet by packet
    replay = Engine(tc.engine_config(lossy, seed=7, status_file=""))
    assert lost == _decisions(replay, 0, N)
