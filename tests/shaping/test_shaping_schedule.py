"""Schedules: phases of profiles (and outages) over time, switched in place on the gateway.

Pure parts: the schedule's spelling and validation (file, line, field; exit status 2, nothing applied), the
common frame of its phases, the exact ``tc ... change`` commands between phases, and the engine taking new
parameters in place (in-process, without its socket). Real parts (root): the change commands on this kernel
(HTB and pfifo change in place; netem's are parsed by tc, the kernel has no sch_netem), and a two-phase
schedule on the real userspace engine in a namespace topology, measured by pings every 10 ms and a TCP
connection that crosses the switch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import deque

import pytest
from shaping_topo import CPO_ADDR, profiles_from

from labkit import schedules, shaping, tc
from labkit.errors import ConfigError
from labkit.nfq.engine import Engine
from tests.probescripts import TCP_CLIENT, TCP_SERVER

PROFILES_TEXT = """
profiles:
  rtt20:
    description: 20 ms added RTT
    both: {delay: "10 ms"}
  rtt200:
    description: 200 ms added RTT
    both: {delay: "100 ms"}
  slow:
    description: a rate limit on the uplink, bursty loss on the downlink
    uplink: {rate: "1 Mbit/s", delay: "50 ms", jitter: "5 ms"}
    downlink: {delay: "50 ms", loss: {mean: "2 %", burst: "3 packets"}}
  fast:
    description: no rate limit, no loss
    uplink: {delay: "10 ms"}
    downlink: none
schedules:
  two:
    description: the issue's test
    phases: rtt20 2 s -> rtt200 2 s
  handover-ish:
    repeat: true
    phases:
      - fast 1 s
      - slow 500 ms
      - outage 0.5 s
"""
PROFILES = profiles_from(PROFILES_TEXT)


def test_a_schedule_as_written():
    s = PROFILES.schedule("two")
    assert [(p.profile, p.duration_s) for p in s.phases] == [("rtt20", 2.0), ("rtt200", 2.0)]
    assert s.text == "rtt20 2s -> rtt200 2s" and not s.repeat and s.cycle_s == 4.0
    h = PROFILES.schedule("handover-ish")
    assert [(p.label, p.duration_s) for p in h.phases] == [("fast", 1.0), ("slow", 0.5), ("outage", 0.5)]
    assert h.repeat and h.text == "fast 1s -> slow 0.5s -> outage 0.5s (repeat)"
    # the line of every phase of a list, and of the schedule
    assert h.phase_lines == (24, 25, 26) and h.origin == "test-profiles.yaml:21"
    # the outage's link underneath: the next profile phase, wrapping round when the schedule repeats
    assert [schedules.underlying(h, PROFILES, i).name for i in range(3)] == ["fast", "slow", "fast"]
    shipped = __import__("labkit.profiles", fromlist=["load_profiles"]).load_profiles()
    assert shipped.schedule("handover").text == "4g 120s -> gprs 60s -> outage 20s -> 4g"
    assert schedules.underlying(shipped.schedule("handover"), shipped, 2).name == "4g"
    last = profiles_from(PROFILES_TEXT.replace("phases: rtt20 2 s -> rtt200 2 s", "phases: rtt20 2 s -> outage 1 s"))
    assert schedules.underlying(last.schedule("two"), last, 1).name == "rtt20"  # the link comes back as it was


def _err(schedules_text: str, profiles: str = "") -> str:
    base = "profiles:\n  a:\n    description: a\n    both: {delay: \"10 ms\"}\n" + profiles + "schedules:\n"
    with pytest.raises(ConfigError) as exc:
        profiles_from(base + textwrap.indent(schedules_text, "  "), "mine.yaml").schedule("s")
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("text,message", [
    ("s:\n  phases:\n    - a 2 s\n    - x 2 s\n",
     "mine.yaml:9: schedules.s.phases[1]: phase 2 'x 2 s': unknown profile 'x'"),
    ("s:\n  phases: a 2 s -> aa 1 s\n", "mine.yaml:7: schedules.s.phases[1]: phase 2 'aa 1 s': unknown profile 'aa' "
                                        "(did you mean 'a'?)"),
    ("s:\n  phases:\n    - a 2 s\n    - a 0 s\n", "mine.yaml:9: schedules.s.phases[1]: phase 2 'a 0 s': duration "
                                                 "'0 s' (allowed: 100 ms to 7 days)"),
    ("s:\n  phases: a -5 s -> a\n", "mine.yaml:7: schedules.s.phases[0]: phase 1 'a -5 s': duration '-5 s' "
                                    "(allowed: 100 ms to 7 days)"),
    ("s:\n  phases: a 1e999 s\n", "phase 1 'a 1e999 s': duration '1e999 s' (allowed: 100 ms to 7 days)"),
    ("s:\n  phases: a 2 weeks\n", "'2 weeks' is not a duration such as \"60 s\" (units: ms, s, min, h)"),
    ("s:\n  phases: a 2 s -> a -> a 1 s\n", "phase 2 'a' has no duration: only the last phase may go without one"),
    ("s:\n  repeat: true\n  phases: a 2 s -> a\n", "mine.yaml:8: schedules.s.phases[1]: phase 2 'a' has no "
                                                   "duration: every phase of a repeating schedule needs one"),
    ("s:\n  phases: a 2 s -> outage\n", "phase 2 'outage': an outage needs a duration"),
    ("s:\n  phases: outage 2 s\n", "mine.yaml:7: schedules.s.phases: a schedule needs at least one profile phase"),
    ("s:\n  phases: []\n", "schedules.s.phases: a schedule needs at least one phase"),
    ("s:\n  phases: {a: 2 s}\n", "is not a list of phases"),
    ("s:\n  phases: a 2 s -> $(reboot) 1 s\n", "phase 2 '$(reboot) 1 s': '$(reboot)' is not a profile name"),
    ("s:\n  phases: [a 2 s, 5]\n", "mine.yaml:7: schedules.s.phases[1]: phase 2 '5': 5 is not a phase"),
    ("s:\n  phases: [a 2 s, [a]]\n", "phase 2 \"['a']\": ['a'] is not a phase"),
    ("s:\n  phases: a 2 s\n  repeat: maybe\n", "mine.yaml:8: schedules.s.repeat: "),
    ("s:\n  phases: a 2 s\n  loop: true\n", "mine.yaml:8: schedules.s.loop: unknown field"),
    ("../s:\n  phases: a 2 s\n", "mine.yaml:5: schedules: invalid schedule name '../s'"),
])
def test_schedule_mistakes_name_file_line_and_field(text, message):
    assert message in _err(text)


def test_phases_that_cannot_change_in_place_are_refused():
    extra = ("  j1:\n    description: j\n    both: {delay: \"20 ms\", jitter: \"5 ms\"}\n"
             "  j2:\n    description: j\n    both: {delay: \"20 ms\", jitter: \"5 ms\", reorder: true}\n"
             "  j3:\n    description: j\n    both: {delay: \"20 ms\", jitter: \"2 ms\", distribution: normal}\n")
    assert _err("s:\n  phases: j1 1 s -> j2 1 s\n", extra).startswith(
        "mine.yaml:16: schedules.s.phases: uplink: jitter reorders in some phases and not in others (j1 keeps "
        "order, j2 reorders); a schedule cannot switch reordering in place")
    assert "jitter distributions differ (j1 uniform, j3 normal)" in _err("s:\n  phases: j1 1 s -> j3 1 s\n", extra)
    with pytest.raises(ConfigError, match=r"'outage' is not a profile name: schedules use it for a cut link"):
        profiles_from("profiles:\n  outage:\n    description: x\n    both: none\n")
    with pytest.raises(ConfigError, match=r"unknown schedule 'tow' \(did you mean 'two'\?\)") as exc:
        PROFILES.schedule("tow")
    assert exc.value.exit_code == 2


def test_a_schedule_in_a_file_of_its_own():
    import tempfile
    from pathlib import Path

    from labkit.profiles import load_profiles

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "schedules.yaml"
        f.write_text("schedules:\n  commute:\n    phases: 4g 30 s -> lte 10 s -> gprs 1 min -> outage 5 s\n"
                     "    repeat: true\n")
        s = load_profiles([f]).schedule("commute")
        assert s.cycle_s == 105.0 and s.phases[1].profile == "lte"  # an alias of 4g
        # a later file that redefines a profile is checked when the schedule is used
        g = Path(d) / "later.yaml"
        g.write_text("profiles:\n  gprs:\n    description: gprs that reorders\n"
                     "    both: {delay: \"300 ms\", jitter: \"40 ms\", distribution: normal, reorder: true}\n")
        with pytest.raises(ConfigError, match=r"schedules.yaml:3: schedules.commute.phases: uplink: jitter reorders"):
            load_profiles([f, g]).schedule("commute")


# -- the common frame and the changes between phases ------------------------------------------------------------
def _plans(engine: str, names=("fast", "slow")) -> list[tc.Plan]:
    profs = [PROFILES.get(n) for n in names]
    frame = tc.frame_for(profs)
    return [tc.plan(p, uplink_iface="eth1", downlink_iface="eth2", engine=engine, frame=frame,
                    control_file="/w/shaper-next.json") for p in profs]


def test_the_frame_keeps_one_tree_for_every_phase():
    frame = tc.frame_for([PROFILES.get("fast"), PROFILES.get("slow")])
    # the engine's queues: the longest delay line of the two phases (slow's, with the acknowledgements of an
    # unlimited other direction: labkit.tc.delay_line_packets)
    assert frame.uplink == tc.DirFrame(htb=True, delay_line=True, order_rate=True, reorder=False, packet_copy=False,
                                       maxlen=4816)
    assert frame.downlink == tc.DirFrame(htb=False, delay_line=True, order_rate=False, maxlen=16773)
    fast, slow = _plans("netem")
    # 'fast' sets no rate on the uplink: its HTB class is open (100 Gbit/s) with a FIFO of 1000 behind netem
    assert fast.tc["uplink"][1] == ("tc class add dev eth1 parent 1: classid 1:10 htb rate 100000000000bit ceil "
                                    "100000000000bit burst 12500000b cburst 12500000b quantum 1514")
    assert fast.tc["uplink"][2] == ("tc qdisc add dev eth1 parent 1:10 handle 10: netem limit 5385 delay 10000us "
                                    "rate 100gbit")
    # ... and 'fast' leaves the downlink undelayed: netem stays as the root with nothing to do
    assert fast.tc["downlink"] == ["tc qdisc add dev eth2 root handle 10: netem limit 1000"]
    assert tc.switch_commands(fast, slow) == [
        "tc class change dev eth1 parent 1: classid 1:10 htb rate 1000000bit ceil 1000000bit burst 3028b cburst "
        "3028b quantum 1514",
        "tc qdisc change dev eth1 parent 1:10 handle 10: netem limit 4848 delay 50000us 5000us corrupt 0% "
        "rate 100gbit",
        "tc qdisc change dev eth2 root handle 10: netem limit 16773 delay 50000us loss gemodel 0.680272108844% "
        "33.3333333333% 100% 0% corrupt 0%"]
    assert tc.switch_commands(slow, slow) == []  # nothing differs, nothing is sent
    # the userspace engine: the same HTB and FIFO tree, both directions through the engine in every phase
    ufast, uslow = _plans("userspace")
    assert ufast.rules == uslow.rules == [
        "iptables -w -N LABKIT-SHAPE", "iptables -w -A LABKIT-SHAPE -i eth2 -o eth1 -j NFQUEUE --queue-num 0",
        "iptables -w -A LABKIT-SHAPE -i eth1 -o eth2 -j NFQUEUE --queue-num 1",
        "iptables -w -I FORWARD 1 -j LABKIT-SHAPE"]
    assert tc.switch_commands(ufast, uslow) == [
        "tc class change dev eth1 parent 1: classid 1:10 htb rate 1000000bit ceil 1000000bit burst 3028b cburst "
        "3028b quantum 1514",
        "tc qdisc change dev eth1 parent 1:10 handle 10: pfifo limit 32"]
    assert ufast.engine_config["control_file"] == "/w/shaper-next.json"
    assert ufast.engine_config["queues"]["1"] == {
        "direction": "downlink", "delay_ms": 0.0, "jitter_ms": 0.0, "distribution": "uniform", "reorder": False,
        "loss_pct": 0.0, "corrupt_pct": 0.0, "duplicate_pct": 0.0, "maxlen": 16773, "copy_packet": False}


def test_only_phases_of_one_frame_switch_in_place():
    fast, _ = _plans("netem")
    alone = tc.plan(PROFILES.get("slow"), uplink_iface="eth1", downlink_iface="eth2", engine="netem")
    with pytest.raises(ValueError, match="only two phases of one schedule"):
        tc.switch_commands(fast, alone)
    with pytest.raises(ValueError, match="differ in structure"):
        tc.change_commands(tc.Layout(), fast.layouts["uplink"], "eth1")
    assert tc.change_commands(fast.layouts["uplink"], fast.layouts["uplink"], "eth 1") == []
    quoted = tc.change_commands(fast.layouts["uplink"], _plans("netem")[1].layouts["uplink"], "eth 1")
    assert all(" dev 'eth 1' " in c for c in quoted)


# -- the engine takes new parameters in place --------------------------------------------------------------------
def _engine(tmp_path, plan: tc.Plan) -> Engine:
    cfg = json.loads(json.dumps(plan.engine_config))
    cfg["control_file"] = str(tmp_path / "next.json")
    return Engine(cfg)


def _stage(tmp_path, plan: tc.Plan, seq: int, **changes) -> None:
    queues = json.loads(json.dumps(plan.engine_config["queues"]))
    for key, value in changes.items():
        num, field = key.split("__")
        queues[num][field] = value
    (tmp_path / "next.json").write_text(json.dumps({"seq": seq, "profile": plan.profile, "queues": queues}))


def test_the_engine_swaps_parameters_and_keeps_what_waits(tmp_path):
    ufast, uslow = _plans("userspace")
    eng = _engine(tmp_path, ufast)
    up = eng.queues[0]
    for i in range(5):  # packets already waiting, with their due times
        eng._schedule(up, 1_000_000 * i, i, 0, None)
    waiting = list(up.pending)
    _stage(tmp_path, uslow, 3)
    assert eng.reload() is True
    assert list(up.pending) == waiting  # nothing dropped, nothing re-timed
    assert up.running() == {**uslow_running(uslow, 0), "copy_mode": "meta"}
    assert eng.queues[1].gemodel is not None and eng.queues[1].gemodel.bad is False  # a new chain starts good
    st = eng.status()
    assert (st["profile"], st["params"]["seq"], st["params"]["reloads"], st["params"]["error"]) == ("slow", 3, 1, None)
    # the next packet gets the new delay: 50 ms +- 5 ms, never before the ones ahead of it
    eng._schedule(up, 10_000_000, 9, 0, None)
    assert 55_000_000 <= up.pending[-1][0] <= 65_000_000


def uslow_running(plan: tc.Plan, num: int) -> dict:
    return Engine({"queues": {str(num): plan.engine_config["queues"][str(num)]}}).queues[num].running() | {
        "copy_mode": "meta"}


@pytest.mark.parametrize("changes,error", [
    ({"0__maxlen": 99}, "seq 4: queues.0.maxlen: 99 differs from the running 4816 (it cannot change in place)"),
    ({"1__reorder": True}, "seq 4: queues.1.reorder: True differs from the running False"),
    ({"1__direction": "uplink"}, "seq 4: queues.1.direction: 'uplink' differs"),
    ({"1__corrupt_pct": 1.0}, "seq 4: queues.1.copy_mode: 'packet' differs from the running 'meta'"),
    ({"0__delay_ms": -1}, "seq 4: queues.0.delay_ms: -1 (allowed: 0 to 3.6e+06)"),
    ({"0__loss_pct": 1, "0__gemodel": {"p": 1, "r": 1, "1-h": 1, "1-k": 1}}, "loss_pct and gemodel together"),
])
def test_the_engine_refuses_parameters_it_cannot_take_in_place(tmp_path, changes, error):
    ufast, uslow = _plans("userspace")
    eng = _engine(tmp_path, ufast)
    before = {n: q.running() for n, q in eng.queues.items()}
    _stage(tmp_path, uslow, 4, **changes)
    assert eng.reload() is False
    assert {n: q.running() for n, q in eng.queues.items()} == before  # the old parameters stay, whole
    st = eng.status()["params"]
    assert error in st["error"] and st["seq"] == 0 and st["refused"] == 1


def test_the_engine_refuses_a_malformed_control_file(tmp_path):
    ufast, _ = _plans("userspace")
    eng = _engine(tmp_path, ufast)
    for text, error in (("{", "Expecting property name"), ('{"seq": -1, "profile": "x", "queues": {}}', "seq: -1"),
                        ('{"seq": 1, "profile": "x", "queues": {"0": {"direction": "uplink"}}}',
                         "seq 1: queues [0] differ from the ones bound [0, 1]"),
                        ('{"seq": 1, "profile": "x", "queues": {}, "rm": 1}', "expected {seq, profile, queues}")):
        (tmp_path / "next.json").write_text(text)
        assert eng.reload() is False and error in eng.params["error"], (text, eng.params["error"])
    (tmp_path / "next.json").unlink()
    assert eng.reload() is False and "No such file" in eng.params["error"]


# -- the CLI: validated before anything is touched ---------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--schedule", "nope"], "unknown schedule 'nope'"),
    (["--schedule", "two", "--clear"], "give exactly one of PROFILE, --clear, --show or --schedule"),
    (["rtt20", "--cycles", "2"], "--cycles goes with --schedule"),
    (["--schedule", "bad"], "p.yaml:28: schedules.bad.phases[1]: phase 2 'rtt20 0 ms': duration '0 ms' (allowed: "
                            "100 ms to 7 days)"),
])
def test_labkit_shape_schedule_refuses_before_touching_the_lab(monkeypatch, capsys, tmp_path, args, message):
    from labkit.cli import main
    from labkit.cli import shape as cli_shape

    f = tmp_path / "p.yaml"
    bad = "  bad:\n    phases: rtt20 1 s -> rtt20 0 ms\n" if "bad" in args else ""
    f.write_text(PROFILES_TEXT + bad)
    touched = []
    monkeypatch.setattr(cli_shape, "_lab", lambda lab: touched.append(lab))
    monkeypatch.setattr(cli_shape, "_remote", lambda inv: touched.append(inv))
    assert main(["shape", *args, "--profiles", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert touched == []


# -- on this kernel: HTB and pfifo change in place; netem's changes parse -----------------------------------------
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tc"), reason="needs root and tc")
def test_the_change_commands_on_this_kernel():
    ns = "shsch"
    run = lambda cmd: subprocess.run(f"ip netns exec {ns} {cmd}", shell=True, capture_output=True, text=True)  # noqa: E731
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2"], check=True)
        ufast, uslow = _plans("userspace")
        for c in ufast.tc["uplink"]:
            assert run(c).returncode == 0, c
        for old, new in ((ufast, uslow), (uslow, ufast)):
            for c in tc.switch_commands(old, new):
                r = run(c)
                assert r.returncode == 0, (c, r.stderr)
            q, cl = run("tc -j qdisc show dev eth1").stdout, run("tc -d -j class show dev eth1").stdout
            assert shaping.verify_direction("uplink", "eth1", new.layouts["uplink"], json.loads(q),
                                            shaping._json_or_text(cl)) == []
        # netem (not in this kernel): tc parses the whole line before the kernel answers
        nfast, nslow = _plans("netem")
        for c in tc.switch_commands(nfast, nslow) + tc.switch_commands(nslow, nfast):
            r = run(c)
            assert r.returncode in (0, 2) and "Usage" not in r.stderr and "What is" not in r.stderr, (c, r.stderr)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# -- a schedule on the real engine --------------------------------------------------------------------------------
def _echo(topo, count: int, interval_s: float, out) -> subprocess.Popen:
    """labkit's own ICMP echo probe from the EVSE host to the CPO host, one probe every ``interval_s`` (iputils
    ping spaces ``-i 0.01`` at about 16 ms here; labkit echo paces probe i at start + i x interval and stamps
    each send in the kernel), its rows written to the file ``out`` (a pipe nobody reads would stall it)."""
    return subprocess.Popen(["ip", "netns", "exec", topo.ns["evse1"], sys.executable, "-m", "labkit", "echo", CPO_ADDR,
                             "-c", str(count), "-i", str(interval_s), "-W", "1", "--direction", "up", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pings(text: str) -> list[tuple[float, float | None]]:
    """labkit echo's CSV -> [(send time, RTT ms or None when lost)], in send order."""
    rows = list(csv.DictReader(io.StringIO(text)))
    return [(float(r["t_wall"]), float(r["rtt_ms"]) if r["lost"] == "0" else None) for r in rows]


@pytest.mark.root
@pytest.mark.slow
def test_two_phases_switch_within_50_ms_and_keep_tcp(topo, remote, tmp_path):
    """20 ms then 200 ms of added RTT: the switch, seen by pings every 10 ms, is within 50 ms of the planned
    time; a TCP connection through the gateway carries on across it."""
    sch = PROFILES.schedule("two")
    server = subprocess.Popen(["ip", "netns", "exec", topo.ns["cpo"], sys.executable, "-c", TCP_SERVER],
                              stdout=subprocess.PIPE, text=True)
    started: dict = {}

    def on_phase(rec):
        if rec.index == 0:  # the first phase holds: start the measurements (3.5 s, across the switch at 2 s)
            started["ping"] = _echo(topo, 350, 0.01, tmp_path / "echo.csv")
            started["tcp"] = subprocess.Popen(["ip", "netns", "exec", topo.ns["evse1"], sys.executable, "-c",
                                               TCP_CLIENT, CPO_ADDR, "3.5"], stdout=subprocess.PIPE, text=True)

    try:
        assert server.stdout.readline().strip() == "ready"
        result = schedules.run(remote, topo.inventory, sch, PROFILES, engine="userspace", on_phase=on_phase)
        started["ping"].wait(timeout=30)
        ping_out = (tmp_path / "echo.csv").read_text()
        client = json.loads(started["tcp"].communicate(timeout=30)[0])
        srv = json.loads(server.communicate(timeout=30)[0])
    finally:
        for p in [server, *started.values()]:
            if p.poll() is None:
                p.kill()
    assert result["ended_by"] == "end" and result["engine"] == "userspace"
    first, second = result["phases"]
    assert second["verified"] and second["problems"] == [] and second["switch"]["switch"]["seq"] == 1
    planned = second["planned_start"]
    # the runner's own record: applied on the gateway (the engine's swap) within 50 ms of the plan
    assert 0 <= second["latency_ms"] <= 50, second
    assert first["applied_end"] == second["applied_start"]
    # pings: a request that saw the old uplink delay comes back in under 155 ms (10 + 10, or 10 + 100 when
    # only its reply met the new delay); a request after the switch takes 200 ms
    pings = _pings(ping_out)
    assert len(pings) == 350 and all(rtt is not None for _, rtt in pings), pings
    # probes every 10 ms: kernel send stamps 10 ms apart (a late send only when the machine stalls)
    gaps = [b - a for (a, _), (b, _) in zip(pings, pings[1:], strict=False)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.010, abs=0.0005) and max(gaps) < 0.025, max(gaps)
    new = [s for s, rtt in pings if rtt >= 155]
    first_new = min(new)
    last_old = max(s for s, rtt in pings if rtt < 155)
    assert last_old < first_new, "a ping after the switch saw the old delay"
    assert all(rtt >= 155 for s, rtt in pings if s > first_new)
    assert planned - 0.050 <= last_old and first_new <= planned + 0.050, (last_old - planned, first_new - planned)
    # consistent with the engine's own time of the swap: every old request was read before it
    engine_at = second["engine_at"]
    assert last_old <= engine_at <= first_new + 0.050, (last_old - engine_at, first_new - engine_at)
    # the TCP connection carried on across the switch: no reset, every byte echoed, one connection
    assert client["error"] is None and srv["error"] is None, (client, srv)
    assert client["sent"] == client["echoed"] == srv["bytes"] > 10_000 and srv["other_connections"] == 0
    # the engine: one reload, no packet dropped by the kernel's queue
    st = shaping.show(remote, topo.inventory)["engine_process"]["status"]
    assert st["params"]["seq"] == 1 and st["params"]["reloads"] == 1 and st["profile"] == "rtt200"
    assert all(q["kernel"]["dropped_queue_full"] == 0 and q["dropped_loss"] == 0 for q in st["queues"])


@pytest.mark.root
@pytest.mark.slow
def test_a_repeating_schedule_with_an_outage(topo, remote, tmp_path):
    """fast 1 s -> slow 0.5 s -> outage 0.5 s, twice: every phase on time and read back, pings answered
    except during the outages, nothing of the outage left afterwards."""
    sch = PROFILES.schedule("handover-ish")
    record = tmp_path / "schedule.json"
    seen = deque()
    started: dict = {}

    def on_phase(rec):
        seen.append(rec)
        if not started:
            started["ping"] = _echo(topo, 190, 0.02, tmp_path / "echo.csv")

    result = schedules.run(remote, topo.inventory, sch, PROFILES, engine="userspace", on_phase=on_phase,
                           record=record, max_cycles=2, seed=3)
    started["ping"].wait(timeout=30)
    ping_out = (tmp_path / "echo.csv").read_text()
    assert json.loads(record.read_text())["ended_by"] == result["ended_by"] == "end"
    phases = result["phases"]
    assert [(p["cycle"], p["label"], p["profile"]) for p in phases] == [
        (0, "fast", "fast"), (0, "slow", "slow"), (0, "outage", "fast"),
        (1, "fast", "fast"), (1, "slow", "slow"), (1, "outage", "fast")]
    assert all(p["verified"] for p in phases)
    assert all(0 <= p["latency_ms"] <= 50 for p in phases[1:]), [p["latency_ms"] for p in phases]
    # planned starts follow the schedule from the first phase on: 0, 1, 1.5, 2, 3, 3.5 s
    t0 = phases[0]["planned_start"]
    assert [round(p["planned_start"] - t0, 6) for p in phases] == [0, 1, 1.5, 2, 3, 3.5]
    # during an outage no ping comes back (its request dropped, or its reply; the fast link underneath is
    # already in place); pings sent well away from the outages all come back. The rule surely held from the
    # clock after its insertion to the clock before its removal (iptables-nft takes 14-18 ms to return from a
    # deletion here, and the rule stops matching before it returns)
    outages = [(p["applied_start"], p["applied_end"]) for p in phases if p["outage"]]
    assert all(a is not None and b is not None and 0.45 <= b - a <= 0.55 for a, b in outages), outages
    held = [(p["switch"]["outage"]["gateway_time"],
             (nxt["switch"]["restore"] if nxt else p["switch"]["end"])["gateway_before"])
            for p, nxt in zip(phases, phases[1:] + [None], strict=True) if p["outage"]]
    assert len(held) == 2 and all(0.4 < b - a < 0.5 for a, b in held), held
    probes = _pings(ping_out)
    assert len(probes) == 190
    assert not [s for s, rtt in probes if rtt is not None and any(a < s < b for a, b in held)]
    # away from the outages (a probe up to 110 ms before a cut may lose its reply in it) every probe came back
    assert [s for s, rtt in probes if rtt is None and not any(a - 0.15 < s < b + 0.01 for a, b in outages)] == []
    assert len([s for s, rtt in probes if rtt is None]) >= 40  # about 2 x 0.5 s of 20 ms probes were cut
    shown = shaping.show(remote, topo.inventory)
    assert not any("labkit-outage" in r for r in shown["forward_rules"])
    assert shown["engine_process"]["status"]["profile"] == "fast" and result["holds"] == "fast"
