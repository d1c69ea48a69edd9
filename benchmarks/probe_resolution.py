#!/usr/bin/env python3
"""labkit echo against ping on a path with a known added delay; and the probe mechanisms compared.

Part 1 (``--delays``, default 150 and 600 ms of added RTT): the real userspace engine (``labkit shaper
run``) on the gateway namespace delays each direction by half the added RTT; ``labkit echo`` and iputils
``ping`` run at the same time from the EVSE namespace to the CPO, same count, interval and packet size,
started together, so probe i of one and of the other cross the engine within a fraction of a millisecond
of each other. Printed per delay: each probe's n, lost, median, p10, p90, min, max, standard deviation,
how many distinct values and what share of the RTTs sit on a whole millisecond; the median and p90 of
echo minus ping over the pairs (probe i with probe i); the lowest RTT of each against the added delay.

Part 2 (``--mechanisms``, no added delay): the alternatives for the probe itself, alternating, each
against the same path: ICMP echo with the kernel's send and receive stamps (labkit echo, the default),
ICMP echo with user-space clock reads (``--stamps user``), iputils ping, and a UDP echo answered by a
Python server process in the CPO namespace (the client stamped by the kernel like labkit echo: what is
left is the server's wake-up and handling). Printed: median and p90 of each, and of its excess over the
kernel-stamped ICMP echo. ``--load N`` runs N busy loops (niced, for the part's duration only) to show
what a busy host does to each.

The path is three namespaces (benchmarks/sim_netns.py). Needs root.

    .venv/bin/python benchmarks/probe_resolution.py [--delays 150,600] [--count 200] [--interval 0.05]
        [--mechanisms] [--rounds 3] [--load 0]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_netns import path3, sh  # noqa: E402

PY = sys.executable
LABKIT = str(Path(sys.executable).with_name("labkit"))
REPO = Path(__file__).resolve().parents[1]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def echo_cmd(p, count: int, interval: float, wait: float, stamps: str = "kernel") -> list[str]:
    return p.cmd(p.evse, PY, "-m", "labkit.cli.echo", p.cpo_addr, "-c", str(count), "-i", str(interval),
                 "-W", str(wait), "--direction", "up", "--src", "evse", "--dst", "cpo", "--stamps", stamps)


def parse_echo(text: str) -> list[float | None]:
    return [float(r["rtt_ms"]) if r["lost"] == "0" else None for r in csv.DictReader(io.StringIO(text))]


def ping_cmd(p, count: int, interval: float, wait: float) -> list[str]:
    return p.cmd(p.evse, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(int(max(1, wait))),
                 p.cpo_addr)


def parse_ping(text: str, count: int) -> tuple[list[float | None], dict[str, float]]:
    got = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms", text)}
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    stats = dict(zip(("min", "avg", "max", "mdev"), map(float, m.groups()), strict=True)) if m else {}
    return [got.get(i) for i in range(1, count + 1)], stats


def describe(xs: list[float]) -> str:
    on_grid = sum(1 for x in xs if abs(x - round(x)) < 5e-4) / len(xs)
    return (f"n {len(xs)}, median {statistics.median(xs):.3f}, p10 {pct(xs, 0.1):.3f}, p90 {pct(xs, 0.9):.3f}, "
            f"min {min(xs):.3f}, max {max(xs):.3f}, stdev {statistics.pstdev(xs):.3f} ms; "
            f"{len(set(xs))} distinct values, {100 * on_grid:.0f} % on a whole ms")


# -- the engine ------------------------------------------------------------------------------------------
def start_engine(p, workdir: Path, delay_ms_each: float) -> subprocess.Popen:
    status = workdir / "status.json"
    status.unlink(missing_ok=True)
    cfg = workdir / "shaper.json"
    cfg.write_text(json.dumps({
        "profile": f"bench-{delay_ms_each}ms", "seed": 1, "status_file": str(status),
        "queues": {"0": {"direction": "uplink", "delay_ms": delay_ms_each, "maxlen": 1024},
                   "1": {"direction": "downlink", "delay_ms": delay_ms_each, "maxlen": 1024}}}))
    proc = subprocess.Popen(p.cmd(p.gw, LABKIT, "shaper", "run", "--config", str(cfg)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        if status.exists() and json.loads(status.read_text() or "{}").get("state") == "running":
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"engine exited: {proc.stderr.read()}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("engine did not start")


def stop_engine(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def nfqueue_rules(p, tag: str, add: bool) -> None:
    e_up, e_cpo = f"sme{tag}1", f"smc{tag}1"
    op = "-A" if add else "-D"
    sh("ip", "netns", "exec", p.gw, "iptables", "-w", op, "FORWARD", "-i", e_up, "-o", e_cpo,
       "-j", "NFQUEUE", "--queue-num", "0", check=add)
    sh("ip", "netns", "exec", p.gw, "iptables", "-w", op, "FORWARD", "-i", e_cpo, "-o", e_up,
       "-j", "NFQUEUE", "--queue-num", "1", check=add)


def together(p, count: int, interval: float, wait: float) -> tuple[list, list, dict]:
    """labkit echo and ping started at the same moment; per-probe RTTs (None: lost) of each."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    e = subprocess.Popen(echo_cmd(p, count, interval, wait), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    g = subprocess.Popen(ping_cmd(p, count, interval, wait), stdout=subprocess.PIPE, text=True)
    eo, ee = e.communicate(timeout=count * interval + wait + 60)
    go, _ = g.communicate(timeout=count * interval + wait + 60)
    if not eo.startswith("src,"):
        raise SystemExit(f"labkit echo failed: {ee.strip()}")
    meta = json.loads(ee.strip().splitlines()[-1].split(": ", 1)[1])
    pr, pstats = parse_ping(go, count)
    meta["ping_stats"] = pstats
    return parse_echo(eo), pr, meta


def part1(p, tag: str, delays: list[float], count: int, interval: float) -> None:
    base_e, base_p, _ = together(p, 50, 0.02, 2)
    be = statistics.median([x for x in base_e if x is not None])
    bp = statistics.median([x for x in base_p if x is not None])
    print(f"unshaped path: echo median {be:.3f} ms, ping median {bp:.3f} ms (50 probes each)")
    nfqueue_rules(p, tag, True)
    try:
        with tempfile.TemporaryDirectory(prefix="probe-res-") as tmp:
            for d in delays:
                proc = start_engine(p, Path(tmp), d / 2)
                try:
                    echo, ping, meta = together(p, count, interval, 2 + 3 * d / 1000)
                finally:
                    stop_engine(proc)
                es = [x for x in echo if x is not None]
                ps = [x for x in ping if x is not None]
                pairs = [a - b for a, b in zip(echo, ping, strict=True) if a is not None and b is not None]
                print(f"\nadded RTT {d:g} ms ({d / 2:g} ms each way), {count} probes every {interval} s, "
                      f"load {os.getloadavg()[0]:.2f}")
                print(f"  echo: {describe(es)}; lost {echo.count(None)}; stamps {meta['stamps']['tx']} / "
                      f"{meta['stamps']['rtt']}; socket {meta['socket']}")
                print(f"  ping: {describe(ps)}; lost {ping.count(None)}; ping's own avg/mdev "
                      f"{meta['ping_stats'].get('avg')}/{meta['ping_stats'].get('mdev')} ms")
                print(f"  echo - ping, probe by probe ({len(pairs)} pairs): median {statistics.median(pairs):+.3f} ms, "
                      f"p90 {pct(pairs, 0.9):+.3f} ms, p10 {pct(pairs, 0.1):+.3f} ms; "
                      f"medians {statistics.median(es) - statistics.median(ps):+.3f} ms, "
                      f"p90s {pct(es, 0.9) - pct(ps, 0.9):+.3f} ms; "
                      f"means {statistics.fmean(es) - meta['ping_stats'].get('avg', float('nan')):+.3f} ms "
                      f"(against ping's own microsecond average)")
                print(f"  lowest RTT: echo {min(es):.3f}, ping {min(ps):.3f} (added {d:g}; never below it: "
                      f"{'yes' if min(es) >= d else 'NO'})")
    finally:
        nfqueue_rules(p, tag, False)


# -- part 2: the mechanisms ------------------------------------------------------------------------------
UDP_SERVER = textwrap.dedent("""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 9977))
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)
""")

UDP_CLIENT = textwrap.dedent("""
    # a UDP echo client stamped by the kernel at both ends, exactly as labkit echo stamps ICMP
    import select, socket, struct, sys, time
    from labkit import echo as E
    dst, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, E.SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, E.SO_TIMESTAMPING, E.SOF_TIMESTAMPING_TX_SOFTWARE
                 | E.SOF_TIMESTAMPING_SOFTWARE | E.SOF_TIMESTAMPING_OPT_ID)
    s.connect((dst, 9977))
    out = []
    for i in range(count):
        t0 = time.monotonic()
        s.send(struct.pack("!I", i) + bytes(52))
        tx = rx = None
        deadline = time.monotonic() + 2
        while (tx is None or rx is None) and time.monotonic() < deadline:
            select.select([s], [], [], 0.1)
            try:
                _d, anc, _f, _a = s.recvmsg(256, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
                for lvl, typ, blob in anc:
                    if typ == E.SO_TIMESTAMPING:
                        sec, ns = struct.unpack_from("@ll", blob); tx = sec * 10**9 + ns
            except BlockingIOError:
                pass
            try:
                _d, anc, _f, _a = s.recvmsg(256, 256, socket.MSG_DONTWAIT)
                for lvl, typ, blob in anc:
                    if typ == E.SO_TIMESTAMPNS:
                        sec, ns = struct.unpack_from("@ll", blob); rx = sec * 10**9 + ns
            except BlockingIOError:
                pass
        out.append("" if tx is None or rx is None else E.rtt_ms_text(rx - tx))
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    print("\\n".join(out))
""")


def run_udp(p, count: int, interval: float) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(p.cmd(p.evse, PY, "-c", UDP_CLIENT, p.cpo_addr, str(count), str(interval)),
                         capture_output=True, text=True, env=env, timeout=count * (interval + 2) + 30)
    return [float(x) for x in out.stdout.split() if x]


def part2(p, count: int, interval: float, rounds: int, load: int) -> None:
    server = subprocess.Popen(p.cmd(p.cpo, PY, "-c", UDP_SERVER))
    hogs = [subprocess.Popen(["nice", "-n", "5", PY, "-c", "while True: pass"]) for _ in range(load)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    got: dict[str, list[float]] = {k: [] for k in ("icmp kernel stamps", "icmp user stamps", "ping", "udp echo")}
    try:
        time.sleep(0.3)
        for _ in range(rounds):
            for stamps in ("kernel", "user"):
                r = subprocess.run(echo_cmd(p, count, interval, 2, stamps), capture_output=True, text=True, env=env)
                got[f"icmp {stamps} stamps"] += [x for x in parse_echo(r.stdout) if x is not None]
            r = subprocess.run(ping_cmd(p, count, interval, 2), capture_output=True, text=True)
            got["ping"] += [x for x in parse_ping(r.stdout, count)[0] if x is not None]
            got["udp echo"] += run_udp(p, count, interval)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        server.kill()
        server.wait()
    ref = got["icmp kernel stamps"]
    print(f"\nmechanisms, no added delay, {rounds} x {count} probes every {interval} s each, "
          f"{load} busy loop(s); excess over the kernel-stamped ICMP echo's median / p90:")
    for name, xs in got.items():
        excess = statistics.median(xs) - statistics.median(ref)
        print(f"  {name:19}: n {len(xs)}, median {statistics.median(xs):.3f}, p90 {pct(xs, 0.9):.3f}, "
              f"p99 {pct(xs, 0.99):.3f}, max {max(xs):.3f} ms; "
              f"excess {excess:+.3f} / {pct(xs, 0.9) - pct(ref, 0.9):+.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delays", default="150,600", help="added RTTs to measure, ms, comma-separated ('' = none)")
    ap.add_argument("--count", type=int, default=200, help="probes per measurement")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between probes")
    ap.add_argument("--mechanisms", action="store_true", help="also compare the probe mechanisms (part 2)")
    ap.add_argument("--rounds", type=int, default=3, help="part 2: alternating rounds")
    ap.add_argument("--load", type=int, default=0, help="part 2: busy loops running meanwhile")
    a = ap.parse_args()
    try:
        delays = [float(x) for x in a.delays.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--delays: {a.delays!r} is not a comma-separated list of milliseconds")
    if os.geteuid() != 0:
        raise SystemExit("probe_resolution.py: needs root (namespaces, iptables, NFQUEUE)")
    tag = "r"
    with path3(tag) as p:
        print(f"{socket.gethostname()}: kernel {os.uname().release}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f}")
        if delays:
            part1(p, tag, delays, a.count, a.interval)
        if a.mechanisms:
            part2(p, a.count, a.interval, a.rounds, a.load)


if __name__ == "__main__":
    main()
