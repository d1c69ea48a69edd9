#!/usr/bin/env python3
"""The userspace engine's own addition to a delay: ping RTT minus (base RTT + configured delay), two ways.

The engine learns of a packet when it reads it from NFQUEUE, some time after the kernel queued it (the
*pickup*: waking the engine's thread and the netlink read). With ``arrival: read`` the configured delay
starts at that read, so the pickup is added to every packet's delay in each direction; with ``arrival:
kernel`` (the default) it starts at the kernel's timestamp of the packet and the pickup is part of the delay.
The release is late too: a timed sleep wakes 0.2 ms late on this VM, so after an idle spell (sparse
traffic, such as these pings) the releaser wakes ``spin_us`` early and yields the CPU in a loop to the due
time. This script measures three
variants on the same path, alternating: ``read`` (no spin), ``kernel`` (no spin) and ``kernel+spin`` (the
default), and prints the median and p90 excess of ping's RTT over base + 2 x delay, with the engine's own
pickup figures, and how late a plain timed wait wakes on this host.

The path is three namespaces (EVSE host, gateway, CPO host; benchmarks/sim_netns.py), every packet in both
directions through one NFQUEUE each and the real ``labkit shaper run``; no rate limit (HTB is not involved).
Needs root.

    .venv/bin/python benchmarks/engine_pickup.py [--delay-ms 15] [--count 200] [--interval 0.05] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_netns import path3, sh  # noqa: E402

LABKIT = str(Path(sys.executable).with_name("labkit"))


def ping(p, count: int, interval: float) -> list[float]:
    r = subprocess.run(p.cmd(p.evse, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", p.cpo_addr),
                       capture_output=True, text=True, timeout=count * interval + 60)
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", r.stdout)]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


#: name -> engine settings (spin_us absent: the engine's default)
VARIANTS = {"read": {"arrival": "read", "spin_us": 0}, "kernel": {"arrival": "kernel", "spin_us": 0},
            "kernel+spin": {"arrival": "kernel"}}


def run_engine(p, workdir: Path, variant: str, delay_ms: float, count: int, interval: float) -> dict:
    status = workdir / f"status-{variant}.json"
    status.unlink(missing_ok=True)
    cfg = workdir / f"shaper-{variant}.json"
    cfg.write_text(json.dumps({
        "profile": f"bench-{delay_ms}ms", "seed": 1, "status_file": str(status), **VARIANTS[variant],
        "queues": {"0": {"direction": "uplink", "delay_ms": delay_ms, "maxlen": 1024},
                   "1": {"direction": "downlink", "delay_ms": delay_ms, "maxlen": 1024}}}))
    proc = subprocess.Popen(p.cmd(p.gw, LABKIT, "shaper", "run", "--config", str(cfg)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if status.exists() and json.loads(status.read_text() or "{}").get("state") == "running":
                break
            if proc.poll() is not None:
                raise SystemExit(f"engine exited: {proc.stderr.read()}")
            time.sleep(0.1)
        rtts = ping(p, count, interval)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    st = json.loads(status.read_text())
    assert st["arrival"] == VARIANTS[variant]["arrival"], st
    return {"rtts": rtts, "queues": {q["direction"]: q for q in st["queues"]}, "spins": st.get("spins", 0),
            "spin_us": st.get("spin_us", 0)}


def wait_overshoot(n: int = 200, wait_s: float = 0.015) -> list[float]:
    """How late a timed ``threading.Event.wait`` wakes here (us), with the 1 us timer slack the releaser asks for:
    the floor under the engine's release lateness on this host."""
    from labkit.nfq.engine import _tight_timer_slack

    _tight_timer_slack()
    ev = threading.Event()
    out = []
    for _ in range(n):
        t = time.monotonic_ns()
        ev.wait(wait_s)
        out.append((time.monotonic_ns() - t) / 1e3 - wait_s * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, default=15.0, help="delay per direction (ms)")
    ap.add_argument("--count", type=int, default=200, help="pings per measurement")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between pings")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the variants")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    a = ap.parse_args()
    variants = a.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        ap.error(f"--variants: unknown {', '.join(unknown)} (allowed: {', '.join(VARIANTS)})")
    if os.geteuid() != 0:
        raise SystemExit("engine_pickup.py: needs root (namespaces, iptables, NFQUEUE)")
    tag = "p"
    with path3(tag) as p, tempfile.TemporaryDirectory(prefix="engine-pickup-") as tmp:
        base = statistics.median(ping(p, a.count, a.interval))
        e_up, e_cpo = f"sme{tag}1", f"smc{tag}1"  # the gateway's interfaces towards the EVSE and the CPO
        sh("ip", "netns", "exec", p.gw, "iptables", "-w", "-A", "FORWARD", "-i", e_up, "-o", e_cpo,
           "-j", "NFQUEUE", "--queue-num", "0")
        sh("ip", "netns", "exec", p.gw, "iptables", "-w", "-A", "FORWARD", "-i", e_cpo, "-o", e_up,
           "-j", "NFQUEUE", "--queue-num", "1")
        expected = base + 2 * a.delay_ms
        print(f"base RTT median {base:.3f} ms; delay {a.delay_ms} ms each way; expected RTT {expected:.3f} ms; "
              f"{a.count} pings every {a.interval} s; load {os.getloadavg()[0]:.2f}")
        rows: dict[str, list] = {v: [] for v in variants}
        for r in range(a.rounds):
            for arrival in variants:
                res = run_engine(p, Path(tmp), arrival, a.delay_ms, a.count, a.interval)
                excess = [x - expected for x in res["rtts"]]
                pk = [res["queues"][d]["pickup"]["median_ms"] for d in ("uplink", "downlink")]
                rows[arrival].append((statistics.median(excess), pct(excess, 0.9), min(res["rtts"]), pk))
                print(f"  round {r + 1} {arrival:11}: excess p50 {statistics.median(excess):+.3f} ms, "
                      f"p90 {pct(excess, 0.9):+.3f} ms, min RTT {min(res['rtts']):.3f} ms, n {len(res['rtts'])}; "
                      f"pickup p50 up/down {pk[0]}/{pk[1]} ms; spin {res['spin_us']:.0f} us, {res['spins']} spins; "
                      f"load {os.getloadavg()[0]:.2f}")
        ov = wait_overshoot()
        print(f"timed wait (Event.wait 15 ms) wakes late by p50 {statistics.median(ov):.0f} us, "
              f"p90 {pct(ov, 0.9):.0f} us")
        print("summary (median over rounds):")
        for arrival, rs in rows.items():
            print(f"  {arrival:11}: excess p50 {statistics.median(x[0] for x in rs):+.3f} ms, "
                  f"p90 {statistics.median(x[1] for x in rs):+.3f} ms, lowest RTT {min(x[2] for x in rs):.3f} ms "
                  f"(never below {2 * a.delay_ms:.3f})")


if __name__ == "__main__":
    main()
