#!/usr/bin/env python3
"""10,000 concurrent stations on the session scenario: OCPP RTT overhead and the simulators' memory.

Usage: sudo .venv/bin/python benchmarks/sim_10k.py [--stations 10000] [--ramp 200] [--steady 150]

Builds the CSMS <-> gateway <-> EVSE namespaces (benchmarks/sim_netns.py) and runs ``labkit csms
--heartbeat-interval 60`` and ``labkit fleet --scenario session --heartbeat 60 --meter-interval 30``
with N stations started at ``--ramp`` per second, then ``--steady`` seconds with all of them connected.
Each simulator raises its soft open-files limit to the hard one (``prlimit`` to 65536 when the hard one
is too low for N; that needs CAP_SYS_RESOURCE). Reports, for the steady
phase: calls, errors, OCPP RTT percentiles, overhead (OCPP percentile minus ping median), and the peak
resident memory (RSS) of the CSMS and the fleet, plus per-station figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_capacity import cpu_s  # noqa: E402
from sim_netns import path3  # noqa: E402
from sim_overhead import LABKIT, pct, wait_listening  # noqa: E402

from labkit.sim.samples import read_rows  # noqa: E402

NOFILE = 65536


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=10000)
    ap.add_argument("--ramp", type=float, default=200.0)
    ap.add_argument("--steady", type=float, default=150.0)
    ap.add_argument("--ocpp", default="1.6")
    ap.add_argument("--validation", default="fast")
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--nice", type=int, default=0, help="run csms, fleet and ping at this nice value")
    ap.add_argument("--keep", default=None, help="copy the CSV and status files into this directory")
    args = ap.parse_args()
    n = args.stations
    ramp_s = n / args.ramp
    duration = ramp_s + args.steady
    print(
        f"# sim_10k: {n} stations, session scenario (heartbeat 60 s, meter values 30 s), OCPP {args.ocpp}, "
        f"validation {args.validation}, loop {args.loop}, nice {args.nice}, ramp {args.ramp:.0f}/s; "
        f"{os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="sm-10k-") as d, path3("k") as p:
        if args.nice:
            p.prefix = ("nice", "-n", str(args.nice))
        out = Path(d)
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lim: list[str] = []
        if hard < n + 100:
            lim = ["prlimit", f"--nofile={NOFILE}:{NOFILE}"]  # needs CAP_SYS_RESOURCE
        print(f"open-files limit {soft}/{hard} (the simulators raise soft to hard)", flush=True)
        csms = subprocess.Popen(
            p.cmd(
                p.cpo,
                *lim,
                LABKIT,
                "csms",
                "--listen",
                f"{p.cpo_addr}:9000",
                "--heartbeat-interval",
                "60",
                "--validation",
                args.validation,
                "--loop",
                args.loop,
                "--out",
                str(out / "csms.csv"),
                "--status",
                str(out / "csms.json"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        fleet = None
        try:
            wait_listening(csms)
            ping = subprocess.Popen(
                p.cmd(p.evse, "ping", "-i", "0.2", "-c", str(int((duration + 30) * 5)), p.cpo_addr),
                stdout=subprocess.PIPE,
                text=True,
            )
            fleet = subprocess.Popen(
                p.cmd(
                    p.evse,
                    *lim,
                    LABKIT,
                    "fleet",
                    "--url",
                    f"ws://{p.cpo_addr}:9000/",
                    "--stations",
                    str(n),
                    "--ramp",
                    str(args.ramp),
                    "--scenario",
                    "session",
                    "--ocpp",
                    args.ocpp,
                    "--heartbeat",
                    "60",
                    "--meter-interval",
                    "30",
                    "--sessions",
                    "0",
                    "--think-time",
                    "10",
                    "--charge-time",
                    "3600",
                    "--duration",
                    str(duration),
                    "--drain-timeout",
                    "5",
                    "--validation",
                    args.validation,
                    "--loop",
                    args.loop,
                    "--out",
                    str(out / "calls.csv"),
                    "--events",
                    str(out / "events.csv"),
                    "--status",
                    str(out / "fleet.json"),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            peak = {"csms": 0, "fleet": 0}
            health: dict = {}
            connected_at = None
            cpu0 = None
            while fleet.poll() is None:
                time.sleep(1.0)
                try:
                    peak["csms"] = max(peak["csms"], rss_bytes(csms.pid))
                    peak["fleet"] = max(peak["fleet"], rss_bytes(fleet.pid))
                    st = json.loads((out / "fleet.json").read_text())
                except (FileNotFoundError, ValueError):
                    continue
                if connected_at is None and st.get("stations_connected", 0) >= n:
                    connected_at = time.monotonic() - t0
                    cpu0 = (time.monotonic(), cpu_s(csms.pid), cpu_s(fleet.pid))
                    print(
                        f"all {n} connected after {connected_at:.1f} s; RSS csms {peak['csms'] / 2**20:.0f} MiB, "
                        f"fleet {peak['fleet'] / 2**20:.0f} MiB",
                        flush=True,
                    )
                if cpu0 is not None and time.monotonic() - cpu0[0] > args.steady - 10 and len(cpu0) == 3:
                    dt = time.monotonic() - cpu0[0]
                    cpu0 = (*cpu0, 100 * (cpu_s(csms.pid) - cpu0[1]) / dt, 100 * (cpu_s(fleet.pid) - cpu0[2]) / dt)
                    # event-loop lag and GC pauses over the last minute of the steady phase
                    health = {
                        name: {
                            k: v
                            for k, v in json.loads((out / f"{name}.json").read_text()).items()
                            if k in ("loop_lag_ms", "gc_pause_ms", "csv_write_max_ms")
                        }
                        for name in ("csms", "fleet")
                    }
            ferr = fleet.stderr.read()
            ping.terminate()
            ping_out = ping.communicate()[0]
            cstatus = json.loads((out / "csms.json").read_text())
        finally:
            if fleet is not None and fleet.poll() is None:
                fleet.terminate()
                fleet.wait(60)
            csms.terminate()
            csms.wait(60)
        if args.keep:
            import shutil

            shutil.copytree(out, args.keep, dirs_exist_ok=True)
        rows = list(read_rows(out / "calls.csv"))
        events = list(read_rows(out / "events.csv"))
        fstatus = json.loads((out / "fleet.json").read_text())
    t_first = min(float(r["t_wall"]) for r in rows)
    # steady: from 5 s after the last station started to 1 s before the duration ends (then every station
    # stops its transaction at once, which is the end of the run, not the load under study)
    steady = [r for r in rows if t_first + ramp_s + 5 < float(r["t_wall"]) < t_first + duration - 1]
    ok = [float(r["rtt_ms"]) for r in steady if r["outcome"] == "ok"]
    errors = {}
    for r in steady:
        if r["outcome"] != "ok":
            errors[r["outcome"]] = errors.get(r["outcome"], 0) + 1
    pings = [float(m) for m in re.findall(r"time=([\d.]+) ms", ping_out)]
    pm = statistics.median(pings)
    disc = sum(1 for e in events if e["event"] == "disconnected")
    print(
        f"fleet exit {fleet.returncode}; stations done {fstatus['stations_done']}/{n}; csms peak connections "
        f"{cstatus['connections_peak']}; disconnects {disc}; {ferr.strip()[-200:]}"
    )
    print(f"steady phase: {len(steady)} calls ({len(steady) / (args.steady - 6):.0f}/s), errors {errors or 0}")
    by_action = {}
    for r in steady:
        by_action[r["action"]] = by_action.get(r["action"], 0) + 1
    print(f"  calls by action: {by_action}")
    print(f"  ping RTT ms       p50 {pm:.3f}  p99 {pct(pings, 0.99):.3f}")
    print(
        f"  OCPP RTT ms       p50 {pct(ok, 0.5):.3f}  p90 {pct(ok, 0.9):.3f}  p99 {pct(ok, 0.99):.3f}  "
        f"max {max(ok):.1f}"
    )
    print(
        f"  overhead ms (OCPP pXX - ping p50)  p50 {pct(ok, 0.5) - pm:.3f}  p99 {pct(ok, 0.99) - pm:.3f}"
        f"   [target p99 <= 20]"
    )
    if len(cpu0 or ()) == 5:
        print(f"  CPU (one core = 100 %) steady: csms {cpu0[3]:.0f} %, fleet {cpu0[4]:.0f} %")
    print(
        f"  peak RSS: csms {peak['csms'] / 2**20:.0f} MiB ({peak['csms'] / n / 1024:.1f} KiB/station), "
        f"fleet {peak['fleet'] / 2**20:.0f} MiB ({peak['fleet'] / n / 1024:.1f} KiB/station)"
    )
    for name, h in health.items():
        print(f"  {name} event loop over the last 60 s of the steady phase: {h}")
    print(f"  load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
