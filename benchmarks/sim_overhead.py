#!/usr/bin/env python3
"""The simulators' own cost: OCPP RTT minus ping RTT, one station, unshaped three-namespace path.

Usage: sudo .venv/bin/python benchmarks/sim_overhead.py [--meter-values 1000] [--ocpp 1.6] [--validation sync]

Builds CSMS <-> gateway <-> EVSE namespaces (benchmarks/sim_netns.py), starts ``labkit csms`` in the CSMS
namespace and ``labkit fleet --stations 1 --scenario thesis-2021`` in the EVSE namespace, while ``ping``
runs from the EVSE to the CSMS at the meter-value pace (every 100 ms). Prints the percentiles of the
OCPP RTT, of ping, the overhead (OCPP percentile minus ping median), the CSMS's own handling time, and the
load average.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_netns import path3

from labkit.sim.samples import read_rows

LABKIT = str(Path(sys.executable).with_name("labkit"))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def wait_listening(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    line = proc.stdout.readline()
    if "listening" not in line:
        raise SystemExit(f"csms did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}")
    return line


def ws_floor(p, args: argparse.Namespace, out: Path, kind: str = "ws") -> list[float]:
    """A bare echo over the same path and pacing, frames the size of the MeterValues calls (ms).

    kind "ws": a WebSocket echo (websockets); "tcp": a plain TCP echo (asyncio streams), no WebSocket."""
    rows = [r for r in read_rows(out / "calls.csv") if r["outcome"] == "ok" and r["action"] == "MeterValues"]
    req = int(statistics.median(int(r["req_bytes"]) for r in rows))
    resp = int(statistics.median(int(r["resp_bytes"]) for r in rows))
    script = str(Path(__file__).resolve().with_name("ws_floor.py"))
    if kind == "tcp":
        server_argv = ["tcp-server", p.cpo_addr, "9002", str(resp), str(req), args.loop]
        client_argv = ["tcp-client", f"{p.cpo_addr}:9002", str(args.meter_values), args.meter_interval, str(req),
                       str(resp), args.loop]
    else:
        server_argv = ["server", p.cpo_addr, "9001", str(resp), args.loop]
        client_argv = ["client", f"ws://{p.cpo_addr}:9001/", str(args.meter_values), args.meter_interval, str(req),
                       args.loop]
    server = subprocess.Popen(p.cmd(p.cpo, sys.executable, script, *server_argv), stdout=subprocess.PIPE, text=True)
    try:
        if "listening" not in server.stdout.readline():
            raise SystemExit(f"ws_floor {kind} server did not start")
        client = subprocess.run(p.cmd(p.evse, sys.executable, script, *client_argv), capture_output=True, text=True,
                                check=True)
    finally:
        server.terminate()
        server.wait(10)
    return [int(x) / 1e6 for x in client.stdout.split()][3:]


def run(args: argparse.Namespace, out: Path) -> dict:
    with path3("o") as p:
        if args.nice or args.cpus:
            orig = p.cmd
            prefix = (["nice", "-n", str(args.nice)] if args.nice else []) + (
                ["taskset", "-c", args.cpus] if args.cpus else []
            )

            def wrapped(ns: str, *argv: str) -> list[str]:
                return orig(ns, *prefix, *argv)

            p.cmd = wrapped  # type: ignore[method-assign]
        csms = subprocess.Popen(
            p.cmd(
                p.cpo,
                LABKIT,
                "csms",
                "--listen",
                f"{p.cpo_addr}:9000",
                "--validation",
                args.validation,
                "--loop",
                args.loop,
                "--max-rate",
                "100000",  # back to back, one station sends thousands a second: not a flood here
                "--out",
                str(out / "csms.csv"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_listening(csms)
            ping = subprocess.Popen(
                p.cmd(
                    p.evse,
                    "ping",
                    "-i",
                    "0.1",
                    "-c",
                    str(int(args.meter_values * float(args.meter_interval) * 10 + 40)),
                    p.cpo_addr,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            fleet = subprocess.run(
                p.cmd(
                    p.evse,
                    LABKIT,
                    "fleet",
                    "--url",
                    f"ws://{p.cpo_addr}:9000/",
                    "--stations",
                    "1",
                    "--scenario",
                    "thesis-2021",
                    "--ocpp",
                    args.ocpp,
                    "--meter-values",
                    str(args.meter_values),
                    "--meter-interval",
                    args.meter_interval,
                    "--step-interval",
                    args.meter_interval,
                    *(["--jitter", "0"] if float(args.meter_interval) == 0 else []),
                    "--validation",
                    args.validation,
                    "--loop",
                    args.loop,
                    "--out",
                    str(out / "calls.csv"),
                    "--events",
                    str(out / "events.csv"),
                ),
                capture_output=True,
                text=True,
            )
            elapsed = time.monotonic() - t0
            ping.terminate()
            ping_out = ping.communicate()[0]
            if fleet.returncode != 0:
                raise SystemExit(f"fleet failed: {fleet.stderr}")
        finally:
            csms.terminate()
            csms.wait(10)
        floor = ws_floor(p, args, out) if args.floor else []
        tcp_floor = ws_floor(p, args, out, "tcp") if args.floor else []
    rtts = [float(r["rtt_ms"]) for r in read_rows(out / "calls.csv") if r["outcome"] == "ok"]
    warm = rtts[3:]  # the first calls load the schema validators
    pings = [float(m) for m in re.findall(r"time=([\d.]+) ms", ping_out)]
    handle = [float(r["handle_ms"]) for r in read_rows(out / "csms.csv") if r["outcome"] == "ok"][3:]
    return {
        "ocpp": warm,
        "ping": pings,
        "handle": handle,
        "floor": floor,
        "tcp_floor": tcp_floor,
        "elapsed": elapsed,
        "errors": sum(1 for r in read_rows(out / "calls.csv") if r["outcome"] != "ok"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meter-values", type=int, default=1000)
    ap.add_argument("--ocpp", default="1.6")
    ap.add_argument("--validation", default="fast", choices=["fast", "sync", "async", "off"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    ap.add_argument(
        "--cpus",
        default="",
        help="run csms, fleet and ping on these CPUs (taskset list, e.g. 0: no cross-CPU wake-ups)",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run csms, fleet and ping at this nice value (e.g. -10: less preemption by other tenants)",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="then time a bare WebSocket echo and a bare TCP echo (ws_floor.py) the same way: what the transport "
        "costs without OCPP",
    )
    ap.add_argument(
        "--meter-interval",
        default="0.1",
        help="pause after each reply, s (0.1: thesis-2021; 0: back to back, warm caches)",
    )
    args = ap.parse_args()
    print(
        f"# sim_overhead: 1 station, thesis-2021 ({args.meter_values} meter values, "
        f"{args.meter_interval} s after each reply), OCPP {args.ocpp}, "
        f"validation {args.validation}, nice {args.nice}, cpus {args.cpus or 'any'}; {os.cpu_count()} CPUs; "
        f"load average before "
        f"{os.getloadavg()[0]:.2f}"
    )
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="sm-overhead-") as d:
            r = run(args, Path(d))
        o, pg, h = r["ocpp"], r["ping"], r["handle"]
        pm = statistics.median(pg)
        print(
            f"run {i + 1}: {len(o)} OCPP calls (errors {r['errors']}), {len(pg)} pings, {r['elapsed']:.1f} s, "
            f"load average after {os.getloadavg()[0]:.2f}"
        )
        print(f"  ping RTT ms        p50 {pm:.3f}  p99 {pct(pg, 0.99):.3f}")
        print(
            f"  OCPP RTT ms        p50 {pct(o, 0.5):.3f}  p90 {pct(o, 0.9):.3f}  p99 {pct(o, 0.99):.3f}  "
            f"max {max(o):.3f}"
        )
        print(f"  CSMS handling ms   p50 {pct(h, 0.5):.3f}  p99 {pct(h, 0.99):.3f}")
        print(
            f"  overhead ms (OCPP pXX - ping p50)   p50 {pct(o, 0.5) - pm:.3f}  p99 {pct(o, 0.99) - pm:.3f}"
            f"   [targets: p50 <= 0.5, p99 <= 2]"
        )
        if r["floor"]:
            f = r["floor"]
            print(
                f"  bare WebSocket echo RTT ms (same path, pacing and frame sizes; no OCPP)   p50 {pct(f, 0.5):.3f}  "
                f"p99 {pct(f, 0.99):.3f}"
            )
            t = r["tcp_floor"]
            print(f"  bare TCP echo RTT ms (same path, pacing and sizes; no WebSocket)   p50 {pct(t, 0.5):.3f}  "
                  f"p99 {pct(t, 0.99):.3f}")
            print(
                f"  transport floor (echo p50 - ping p50) {pct(f, 0.5) - pm:.3f} ms, of which Python and the event "
                f"loop over TCP {pct(t, 0.5) - pm:.3f} ms and WebSocket framing {pct(f, 0.5) - pct(t, 0.5):.3f} ms; "
                f"labkit's OCPP layers on top (OCPP p50 - echo p50) {pct(o, 0.5) - pct(f, 0.5):.3f} ms"
            )


if __name__ == "__main__":
    main()
