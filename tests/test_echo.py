"""labkit echo, the RTT probe with microsecond resolution, on real namespaces (and its options and summaries).

The path is three namespaces ech-evse -> ech-gw -> ech-cpo joined by veths (tests/shaping/shaping_topo.py),
built once for the module; a known delay is added by the real userspace engine on the gateway
(``shaping.apply`` with a profile, as the bench does), losses by netfilter in the CPO namespace. Nothing is
mocked: the probe's ICMP sockets, the kernel's timestamps and answers, ping, the engine are all real; the
only stand-in is ``ip netns exec`` for SSH (LocalNetnsRemote), as in the shaping tests.

Tolerances, stated once: echo's median and ping's median agree within 0.6 ms above 100 ms (ping rounds
each reply to the nearest whole ms: +-0.5 ms, plus 0.1 ms for two different packets through the engine);
echo's mean and ping's own average (computed by ping from microseconds) within 0.3 ms.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labkit import echo as E
from labkit.bench import probes
from tests.conftest import ROOT, needs_root

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "shaping"))
from shaping_topo import CPO_ADDR, EVSE_ADDR, LocalNetnsRemote, Topo, profiles_from, sh  # noqa: E402

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

PROFILES = profiles_from("""
profiles:
  echo150:
    description: 150 ms added to every round trip, 75 ms each way
    both: {delay: "75 ms"}
  echo600:
    description: 600 ms added to every round trip (a VSAT hop), 300 ms each way
    both: {delay: "300 ms"}
  echo-up120:
    description: 120 ms on the uplink only
    uplink: {delay: "120 ms"}
    downlink: none
""")


def run_echo_cli(args: list[str], ns: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m labkit.cli.echo`` (what ``labkit echo`` runs), in a namespace when given."""
    cmd = [PY, "-m", "labkit.cli.echo", *args]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def rows_of(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


def report_of(err: str) -> dict:
    line = [ln for ln in err.splitlines() if ln.startswith("labkit echo: {")][-1]
    return json.loads(line.split(": ", 1)[1])


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    if not ROOT:
        pytest.skip("needs root: creates network namespaces, veths and netfilter rules")
    t = Topo("ech", tmp_path_factory.mktemp("echo-hosts"), str(Path(PY).with_name("labkit")))
    try:
        t.up()
        yield t
    finally:
        t.down()


class Remote(LocalNetnsRemote):
    """LocalNetnsRemote plus ``run_many`` (labkit.remote.Remote's: the command per host, in parallel)."""

    def run_many(self, hosts, command, *, sudo=False, check=True, timeout=None):
        out, threads = {}, []
        for h in hosts:
            cmd = command(h) if callable(command) else command

            def one(h=h, cmd=cmd):
                out[h.name] = self.run(h, cmd, check=check, timeout=timeout)

            threads.append(threading.Thread(target=one))
            threads[-1].start()
        for t in threads:
            t.join()
        return out


@pytest.fixture
def labkit_of(topo):
    """Set the labkit command of the EVSE and CPO hosts for one test (the gateway keeps the real one)."""
    saved = {h.name: h.labkit for h in topo.inventory.hosts}

    def set_to(path: str) -> None:
        for h in (topo.inventory.cpo, *topo.inventory.evses):
            h.labkit = path

    yield set_to
    for h in topo.inventory.hosts:
        h.labkit = saved[h.name]


@pytest.fixture
def remote(topo):
    from labkit import shaping

    r = Remote(topo)
    yield r
    shaping.clear(r, topo.inventory)
    r.stop(topo.inventory.gateway, "shaper", timeout=2)


# -- options ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["-c", "0"], "--count"), (["-c", "-3"], "--count"), (["-c", "x"], "'--count'"),
    (["-i", "0"], "--interval"), (["-i", "0.0001"], "--interval"), (["-i", "nan"], "--interval"),
    (["-i", "inf"], "--interval"), (["-W", "0"], "--wait"), (["-W", "-1"], "--wait"), (["-W", "nan"], "--wait"),
    (["-s", "8"], "--size"), (["-s", "70000"], "--size"), (["--direction", "sideways"], "--direction"),
    (["--socket", "tcp"], "--socket"), (["--stamps", "gps"], "--stamps"), (["--bogus"], "--bogus"),
])
def test_bad_options_are_refused_with_exit_2(args, says):
    base = ["127.0.0.1", "--direction", "up"]
    if "--direction" in args:
        base = ["127.0.0.1"]
    r = run_echo_cli(base + args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == ""  # not even the CSV header
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labkit: error: ") and says in lines[0], r.stderr


def test_an_output_nowhere_is_refused_with_exit_2(tmp_path):
    r = run_echo_cli(["127.0.0.1", "--direction", "up", "-o", str(tmp_path / "no such dir" / "echo.csv")])
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1 and "--output" in r.stderr


def test_missing_direction_is_refused_on_one_line():
    r = run_echo_cli(["127.0.0.1"])
    assert r.returncode == 2 and r.stderr.splitlines() == ["labkit: error: labkit echo: Missing option '--direction'."]


@needs_root
@pytest.mark.parametrize("dest", ["no-such-host.invalid", "::1", "", "10.1.2.3.4"])
def test_bad_destination_is_refused_with_exit_2(topo, dest):
    # inside a namespace with no route out: a name lookup cannot leave the machine
    r = run_echo_cli([dest, "--direction", "up"], ns=topo.ns["evse1"])
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "not an IPv4 address" in r.stderr, r.stderr


def test_registered_as_labkit_echo(capfd):
    from labkit.cli import main

    assert main(["echo", "--help"]) == 0
    assert "microsecond" in capfd.readouterr().out
    assert main(["echo", "127.0.0.1", "--direction", "up", "-c", "0"]) == 2
    assert capfd.readouterr().err.splitlines() == ["labkit: error: --count: 0 is not a whole number of probes "
                                                   "from 1 to 10000000"]


# -- the RTT itself -------------------------------------------------------------------------------------
def test_rounding_is_up_to_the_microsecond():
    assert E.rtt_ms_text(150_000_000) == "150.000"
    assert E.rtt_ms_text(150_000_001) == "150.001"  # never below: 1 ns over is the next microsecond
    assert E.rtt_ms_text(149_999_999) == "150.000"
    assert E.rtt_ms_text(999) == "0.001" and E.rtt_ms_text(602_345_678) == "602.346"


def test_a_clock_step_between_send_and_reply_falls_back_to_the_monotonic_bracket():
    def probe(step_ns=0, rx_shift_ns=0):
        p = E.Probe(1, mono_send=1_000_000, real_send=5_000_000_000, offset_send=4_999_000_000,
                    tx_snd=5_000_030_000)
        p.rx_kernel = 5_150_100_000 + rx_shift_ns - step_ns
        p.rx_user, p.mono_recv, p.offset_recv = p.rx_kernel + 40_000, 151_200_000, 4_999_000_000 - step_ns
        p.answered = True
        return p

    assert probe().rtt() == (150_070_000, "kernel")  # rx kernel - tx driver stamp
    # the wall clock stepped back 10 ms between send and reply: the stamps would read 140 ms
    assert probe(step_ns=10_000_000).rtt() == (150_200_000, "bracket")
    # an inconsistent pair (the stamps wider than the user-space bracket around them): the bracket
    assert probe(rx_shift_ns=2_000_000).rtt() == (150_200_000, "bracket")
    # without a kernel transmit stamp, the time taken before sendto
    p = probe()
    p.tx_snd = None
    assert p.rtt() == (150_100_000, "kernel") and p.t_send() == 5_000_000_000


@needs_root
@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("profile, added_ms", [("echo150", 150.0), ("echo600", 600.0)])
def test_microseconds_above_100ms_never_below_the_delay_and_agrees_with_ping(topo, remote, profile, added_ms):
    from labkit import shaping

    shaping.apply(remote, topo.inventory, PROFILES.get(profile), engine="userspace")
    count, interval = 40, 0.05
    ns = topo.ns["evse1"]
    echo = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "labkit.cli.echo", CPO_ADDR, "-c", str(count),
                             "-i", str(interval), "-W", "3", "--direction", "up", "--src", "evse1", "--dst", "cpo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    ping = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "3",
                           CPO_ADDR], capture_output=True, text=True, timeout=60)
    out, err = echo.communicate(timeout=60)
    assert echo.returncode == 0, err
    rows = rows_of(out)
    assert [int(r["seq"]) for r in rows] == list(range(1, count + 1))
    assert all(r["lost"] == "0" for r in rows), rows
    assert all(re.fullmatch(r"\d+\.\d{3}", r["rtt_ms"]) for r in rows)
    rtts = [float(r["rtt_ms"]) for r in rows]
    # never below the configured added delay (nor below ping's own minimum, rounded down to its grid)
    assert min(rtts) >= added_ms, min(rtts)
    # microsecond resolution: the RTTs are not on ping's whole-millisecond grid
    off_grid = [x for x in rtts if abs(x - round(x)) >= 0.001]
    assert len(off_grid) >= 0.9 * count and len(set(rtts)) >= 20, rtts
    # ... where ping's are (the problem this probe solves)
    ping_rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", ping.stdout)]
    assert len(ping_rtts) == count and all(x == int(x) for x in ping_rtts), ping_rtts
    # agreement with ping: medians within 0.6 ms; mean against ping's own microsecond average within 0.3 ms
    assert abs(statistics.median(rtts) - statistics.median(ping_rtts)) <= 0.6
    ping_avg = float(re.search(r"= [\d.]+/([\d.]+)/", ping.stdout).group(1))
    assert abs(statistics.fmean(rtts) - ping_avg) <= 0.3, (statistics.fmean(rtts), ping_avg)
    rep = report_of(err)
    assert rep["stamps"]["rtt"]["bracket"] == 0 and rep["stamps"]["rx"]["kernel"] == count
    assert rep["stamps"]["tx"]["user"] == 0  # every send stamped by the kernel here (veth stamps in the driver)


@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_lost_probes_are_rows_and_do_not_hold_back_the_next(topo):
    rule = ["INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-m", "statistic", "--mode", "nth",
            "--every", "4", "--packet", "3", "-j", "DROP"]
    ipt = f"ip netns exec {topo.ns['cpo']} iptables -w"
    sh(f"{ipt} -A {' '.join(rule)}")
    try:
        count, interval, wait = 20, 0.1, 1.5
        t0 = time.monotonic()
        r = run_echo_cli([CPO_ADDR, "-c", str(count), "-i", str(interval), "-W", str(wait), "--direction", "up"],
                         ns=topo.ns["evse1"])
        elapsed = time.monotonic() - t0
    finally:
        sh(f"{ipt} -D {' '.join(rule)}")
    assert r.returncode == 0, r.stderr
    rows = rows_of(r.stdout)
    assert [int(x["seq"]) for x in rows] == list(range(1, count + 1))
    assert [int(x["seq"]) for x in rows if x["lost"] == "1"] == [4, 8, 12, 16, 20]
    assert all(x["rtt_ms"] == "" for x in rows if x["lost"] == "1")
    assert all(x["rtt_ms"] != "" for x in rows if x["lost"] == "0")
    # every probe, lost or not, was sent on time: t_wall is the send time, one interval apart
    sent = [float(x["t_wall"]) for x in rows]
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert all(abs(g - interval) < 0.03 for g in gaps), gaps
    # the run lasts (count - 1) x interval + one wait, not a wait per lost probe (5 x 1.5 s)
    assert elapsed < (count - 1) * interval + wait + 2.0, elapsed
    rep = report_of(r.stderr)
    assert rep["packet_loss_count"] == 5 and rep["sent"] == count and rep["packet_transmit"] == count


@needs_root
@pytest.mark.root
def test_no_reply_at_all_is_every_row_lost_and_exit_1(topo):
    rule = "INPUT -p icmp --icmp-type echo-request -j DROP"
    ipt = f"ip netns exec {topo.ns['cpo']} iptables -w"
    sh(f"{ipt} -A {rule}")
    try:
        r = run_echo_cli([CPO_ADDR, "-c", "3", "-i", "0.05", "-W", "0.5", "--direction", "up"], ns=topo.ns["evse1"])
    finally:
        sh(f"{ipt} -D {rule}")
    assert r.returncode == 1
    rows = rows_of(r.stdout)
    assert [(x["seq"], x["lost"], x["rtt_ms"]) for x in rows] == [("1", "1", ""), ("2", "1", ""), ("3", "1", "")]
    assert all(x["t_wall"] for x in rows)


@needs_root
@pytest.mark.root
def test_output_file_holds_the_rows(topo, tmp_path):
    out = tmp_path / "dir with space" / "echo.csv"
    out.parent.mkdir()
    r = run_echo_cli([EVSE_ADDR, "-c", "3", "-i", "0.02", "--direction", "down", "--src", "cpo", "--dst", "evse1",
                      "-o", str(out)], ns=topo.ns["cpo"])
    assert r.returncode == 0 and r.stdout == "", r.stderr
    rows = rows_of(out.read_text())
    assert [(x["src"], x["dst"], x["direction"], x["seq"], x["lost"]) for x in rows] == \
        [("cpo", "evse1", "down", str(i), "0") for i in (1, 2, 3)]


@needs_root
@pytest.mark.root
def test_interrupted_run_keeps_the_probes_sent_as_rows(topo):
    p = subprocess.Popen(["ip", "netns", "exec", topo.ns["evse1"], PY, "-m", "labkit.cli.echo", CPO_ADDR,
                          "-c", "1000", "-i", "0.02", "--direction", "up"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    rows = rows_of(out)
    assert 10 <= len(rows) < 1000
    assert [int(x["seq"]) for x in rows] == list(range(1, len(rows) + 1))
    rep = report_of(err)
    assert rep["interrupted"] and rep["packet_transmit"] == len(rows) == rep["sent"]


# -- both directions, over the bench's own call ---------------------------------------------------------
@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_run_echo_both_directions_through_the_gateway(topo, remote, labkit_of, tmp_path):
    from labkit import shaping
    from labkit.analysis.load import read_csv

    shaping.apply(remote, topo.inventory, PROFILES.get("echo-up120"), engine="userspace")
    # the labkit command at a path a shell would mangle unquoted: spaces, quotes, a command substitution
    odd = tmp_path / "lab kit's $(touch PWNED) dir"
    odd.mkdir()
    wrapper = odd / "labkit"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = echo ] && shift\nPYTHONPATH={REPO} exec {PY} -m labkit.cli.echo "$@"\n')
    wrapper.chmod(0o755)
    inv = topo.inventory
    evse, cpo = inv.evses[0], inv.cpo
    labkit_of(str(wrapper))
    cell = tmp_path / "cells" / "echo-up120__n1x1__r1"
    count = 15
    rows = probes.run_echo(remote, cell, evse, cpo, count, 0.05, 2.0)
    assert not list(Path(".").glob("PWNED")) and not list(odd.parent.glob("PWNED"))
    up = [r for r in rows if r["direction"] == "up"]
    down = [r for r in rows if r["direction"] == "down"]
    assert [(r["src"], r["dst"]) for r in up] == [("evse1", "cpo")] * count
    assert [(r["src"], r["dst"]) for r in down] == [("cpo", "evse1")] * count
    assert [r["seq"] for r in up] == [r["seq"] for r in down] == list(range(1, count + 1))
    # both round trips cross the gateway's delayed uplink once, whichever host sends
    for r in rows:
        assert r["lost"] == 0 and 120.0 <= r["rtt_ms"] < 200.0, r
    assert sum(abs(r["rtt_ms"] - round(r["rtt_ms"])) >= 0.001 for r in rows) >= 0.9 * len(rows)
    for stem in ("evse1-cpo", "cpo-evse1"):
        raw = (cell / "echo" / f"{stem}.csv").read_text()
        assert raw.startswith("src,dst,direction,seq,t_wall,rtt_ms,lost\n") and len(raw.splitlines()) == count + 1
        summary = json.loads((cell / "echo" / f"{stem}.json").read_text())
        assert summary["packet_transmit"] == count and summary["packet_receive"] == count
        assert summary["rtt_min"] >= 120.0 and summary["probe"]["socket"] == "icmp-raw"
    # echo.csv: the results format's columns, 3 decimals, read back by the analysis with nothing rejected
    probes.write_echo_csv(cell / "echo.csv", rows)
    text = (cell / "echo.csv").read_text().splitlines()
    assert text[0] == "src,dst,direction,seq,t_wall,rtt_ms,lost" and len(text) == 2 * count + 1
    assert all(re.fullmatch(r"\d+\.\d{3}", line.split(",")[5]) for line in text[1:])
    problems: list = []
    frame = read_csv(cell / "echo.csv", "echo", tmp_path, problems)
    assert problems == [] and len(frame) == 2 * count
    assert sorted(frame["rtt_ms"].tolist()) == sorted(r["rtt_ms"] for r in rows)


@needs_root
@pytest.mark.root
def test_run_echo_with_the_installed_labkit_command(topo, remote, tmp_path):
    inv = topo.inventory
    assert Path(inv.cpo.labkit).name == "labkit" and Path(inv.cpo.labkit).exists()
    rows = probes.run_echo(remote, tmp_path / "cell", inv.evses[0], inv.cpo, 3, 0.02, 1.0)
    assert sorted((r["direction"], r["seq"], r["lost"]) for r in rows) == \
        [("down", 1, 0), ("down", 2, 0), ("down", 3, 0), ("up", 1, 0), ("up", 2, 0), ("up", 3, 0)]


@needs_root
@pytest.mark.root
def test_run_echo_fails_loudly_when_the_prober_cannot_run(topo, remote, labkit_of, tmp_path):
    from labkit.errors import RemoteError

    inv = topo.inventory
    labkit_of(str(tmp_path / "no such labkit"))
    with pytest.raises(RemoteError, match="labkit echo failed") as exc:
        probes.run_echo(remote, tmp_path / "cell", inv.evses[0], inv.cpo, 3, 0.05, 1.0)
    assert "\n" not in str(exc.value) and "evse1" in str(exc.value) and "cpo" in str(exc.value)
    assert json.loads((tmp_path / "cell" / "echo" / "evse1-cpo.json").read_text())["error"]


def test_echo_rows_fill_in_what_a_cut_short_prober_never_printed():
    text = ("src,dst,direction,seq,t_wall,rtt_ms,lost\n"
            "evse1,cpo,up,1,1796000000.000100,150.071,0\n"
            "evse1,cpo,up,2,1796000000.050100,,1\n"
            "evse1,cpo,up,3,1796000000.1001")  # torn
    rows = probes.parse_echo(text, 4, "evse1", "cpo", "up")
    assert [(r["seq"], r["lost"], r["rtt_ms"]) for r in rows] == [(1, 0, 150.071), (2, 1, ""), (3, 1, ""), (4, 1, "")]
    with pytest.raises(ValueError):
        probes.parse_echo("labkit: error: something\n", 4, "evse1", "cpo", "up")


# -- sockets: the datagram ICMP socket of an unprivileged user, raw for root --------------------------------
@needs_root
@pytest.mark.root
def test_datagram_socket_unprivileged_and_raw_fallback(topo):
    ns = topo.ns["evse1"]
    grp = "/proc/sys/net/ipv4/ping_group_range"
    before = topo.exec("evse1", f"cat {grp}").stdout.strip()
    # the probe module with the system's Python, standard library only (no click, no venv), as nobody
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from labkit import echo; "
              "rows = []; s = echo.run(sys.argv[2], count=5, interval_s=0.02, wait_s=1, direction='up', "
              "write_row=rows.append); print(json.dumps([s['socket'], [r['rtt_ms'] for r in rows]]))")
    nobody = f"ip netns exec {ns} setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -I -c"
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3 for the unprivileged run")
    try:
        # a fresh namespace admits no group to datagram ICMP sockets: root falls back to a raw socket ...
        r = run_echo_cli([CPO_ADDR, "-c", "3", "-i", "0.02", "--direction", "up"], ns=ns)
        assert r.returncode == 0 and report_of(r.stderr)["socket"] == "icmp-raw"
        r = run_echo_cli([CPO_ADDR, "-c", "3", "-i", "0.02", "--direction", "up", "--socket", "dgram"], ns=ns)
        assert r.returncode == 1 and r.stdout == "" and "ping_group_range" in r.stderr
        assert len(r.stderr.splitlines()) == 1
        # ... and an unprivileged user has neither
        r = subprocess.run(f"{nobody} {shlex.quote(script)} {REPO} {CPO_ADDR}", shell=True, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0 and "ping_group_range" in r.stderr and "CAP_NET_RAW" in r.stderr, r.stderr
        # admitted by ping_group_range (Ubuntu's default admits every group): a datagram socket, kernel-stamped
        topo.exec("evse1", "sysctl -qw 'net.ipv4.ping_group_range=0 2147483647'")
        r = subprocess.run(f"{nobody} {shlex.quote(script)} {REPO} {CPO_ADDR}", shell=True, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        kind, rtts = json.loads(r.stdout)
        assert kind == "icmp-dgram" and len(rtts) == 5 and all(re.fullmatch(r"\d+\.\d{3}", x) for x in rtts)
        r = run_echo_cli([CPO_ADDR, "-c", "3", "-i", "0.02", "--direction", "down"], ns=ns)
        assert r.returncode == 0 and report_of(r.stderr)["socket"] == "icmp-dgram"
    finally:
        topo.exec("evse1", f"sysctl -qw 'net.ipv4.ping_group_range={before}'")


# -- the ping summary without pingparsing ---------------------------------------------------------------
PING_TEXT = """PING 192.168.10.10 (192.168.10.10) 56(84) bytes of data.
[1795460550.840545] 64 bytes from 192.168.10.10: icmp_seq=1 ttl=63 time=574 ms
[1795460551.041309] 64 bytes from 192.168.10.10: icmp_seq=2 ttl=63 time=602 ms
[1795460551.245315] no answer yet for icmp_seq=3
[1795460551.449328] 64 bytes from 192.168.10.10: icmp_seq=4 ttl=63 time=618 ms
[1795460551.449400] 64 bytes from 192.168.10.10: icmp_seq=4 ttl=63 time=619 ms (DUP!)

--- 192.168.10.10 ping statistics ---
5 packets transmitted, 3 received, +1 duplicates, 40% packet loss, time 813ms
rtt min/avg/max/mdev = 574.120/603.310/618.904/16.110 ms
"""

#: what pingparsing's as_dict() gave (ping/*.json of earlier runs): every key is still there
PINGPARSING_KEYS = {"destination", "packet_transmit", "packet_receive", "packet_loss_count", "packet_loss_rate",
                    "rtt_min", "rtt_avg", "rtt_max", "rtt_mdev", "packet_duplicate_count", "packet_duplicate_rate"}


def test_ping_summary_from_the_rows_keeps_the_old_keys():
    s = probes.summarize_ping(PING_TEXT)
    assert PINGPARSING_KEYS <= set(s)
    assert (s["destination"], s["packet_transmit"], s["packet_receive"], s["packet_loss_count"]) == \
        ("192.168.10.10", 5, 3, 2)
    assert s["packet_loss_rate"] == 40.0 and s["packet_duplicate_count"] == 1
    assert (s["rtt_min"], s["rtt_max"], s["rtt_median"]) == (574.0, 618.0, 602.0)
    assert s["rtt_avg"] == pytest.approx(598.0) and s["rtt_mdev"] == pytest.approx(18.1842, abs=1e-4)
    assert s["ping_reported"] == {"min": 574.12, "avg": 603.31, "max": 618.904, "mdev": 16.11}
    # the count asked for wins over what ping says it sent (a ping cut short still has its lost probes)
    assert probes.summarize_ping(PING_TEXT, 8)["packet_loss_count"] == 5
    assert probes.summarize_ping("")["packet_transmit"] == 0 and probes.summarize_ping("")["rtt_min"] is None


def test_probes_needs_no_pingparsing():
    code = ("import sys; sys.modules['pingparsing'] = None; from labkit.bench import probes; "
            f"s = probes.summarize_ping({PING_TEXT!r}); assert s['packet_receive'] == 3; "
            "assert 'pingparsing' not in [m for m in sys.modules if sys.modules[m] is not None]; print('ok')")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
