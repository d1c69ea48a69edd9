#!/usr/bin/env python3
"""How many stations this machine carries at thesis-2021 load while the median overhead stays <= 5 ms.

Usage: sudo .venv/bin/python benchmarks/sim_capacity.py [--sizes 50,100,200,300,400] [--meter-values 200]

For each size N: builds the CSMS <-> gateway <-> EVSE namespaces (benchmarks/sim_netns.py), starts
``labkit csms`` (CSMS namespace) and ``labkit fleet --stations N --scenario thesis-2021`` (EVSE namespace;
Heartbeat every 2 s, meter values 100 ms after each reply), pings alongside, and reports the OCPP RTT
percentiles of the steady phase (after every station has started), the overhead (OCPP p50 minus ping p50),
the calls per second carried, and the CPU time of the CSMS and the fleet over the run (one core = 100 %).
Both simulators are single-threaded asyncio processes, so the first to reach 100 % is the limit.
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
from sim_overhead import LABKIT, pct, wait_listening

from labkit.sim.samples import read_rows

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def child_pid(pid: int) -> int:
    """``ip netns exec`` execs the command, so the pid is the process itself."""
    return pid


def launcher(args: argparse.Namespace, out: Path, name: str) -> list[str]:
    """``labkit`` or, with --profile, ``python -m cProfile -o <out>/<name>.prof -m labkit``."""
    if not args.profile:
        return [LABKIT]
    return [sys.executable, "-m", "cProfile", "-o", str(out / f"{name}.prof"), "-m", "labkit"]


CATEGORIES = (
    ("socket send/recv syscalls", ("method 'send' of '_socket", "method 'recv' of '_socket", "sock_send", "sock_recv")),
    ("waiting in epoll (idle)", ("method 'poll' of 'select.epoll'", "run_once' of 'uvloop", "uvloop.Loop' objects")),
    ("ocpp library", ("/ocpp/",)),
    ("websockets", ("/websockets/",)),
    ("json / schema validation", ("/json/", "fastjsonschema", "<string>")),
    ("labkit.sim", ("/labkit/sim/",)),
    ("asyncio event loop", ("/asyncio/", "_asyncio")),
)


def profile_summary(path: Path, top: int = 12) -> str:
    import pstats

    st = pstats.Stats(str(path))
    total = sum(v[2] for v in st.stats.values())
    shares = dict.fromkeys([c for c, _ in CATEGORIES] + ["other"], 0.0)
    rows = []
    for (fname, line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
        label = f"{fname}:{line}({func})" if fname != "~" else func
        for cat, needles in CATEGORIES:
            if any(n in label for n in needles):
                shares[cat] += tt
                break
        else:
            shares["other"] += tt
        rows.append((tt, label))
    rows = [r for r in rows if "epoll" not in r[1]]
    rows.sort(reverse=True)
    idle = shares.pop("waiting in epoll (idle)")
    busy = total - idle
    out = [f"    busy {busy:.1f} s of {total:.1f} s profiled; shares of the busy time:"]
    out += [f"    {cat:<28} {100 * t / busy:5.1f} %" for cat, t in shares.items()]
    out += [f"    {tt:7.2f} s  {label[-110:]}" for tt, label in rows[:top]]
    return "\n".join(out)


def run_size(n: int, args: argparse.Namespace, out: Path) -> dict:
    with path3("c") as p:
        if args.nice:
            p.prefix = ("nice", "-n", str(args.nice))
        csms = subprocess.Popen(
            p.cmd(
                p.cpo,
                *launcher(args, out, "csms"),
                "csms",
                "--listen",
                f"{p.cpo_addr}:9000",
                "--validation",
                args.validation,
                "--loop",
                args.loop,
                "--out",
                str(out / "csms.csv"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_listening(csms)
            ramp_s = n / args.ramp
            total_est = ramp_s + args.meter_values * 0.101 + 2
            ping = subprocess.Popen(
                p.cmd(p.evse, "ping", "-i", "0.1", "-c", str(int(total_est * 10)), p.cpo_addr),
                stdout=subprocess.PIPE,
                text=True,
            )
            fleet = subprocess.Popen(
                p.cmd(
                    p.evse,
                    *launcher(args, out, "fleet"),
                    "fleet",
                    "--url",
                    f"ws://{p.cpo_addr}:9000/",
                    "--stations",
                    str(n),
                    "--ramp",
                    str(args.ramp),
                    "--scenario",
                    "thesis-2021",
                    "--ocpp",
                    args.ocpp,
                    "--meter-values",
                    str(args.meter_values),
                    "--validation",
                    args.validation,
                    "--loop",
                    args.loop,
                    "--jitter",
                    args.jitter,
                    "--out",
                    str(out / "calls.csv"),
                    "--events",
                    str(out / "events.csv"),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            c0, f0 = cpu_s(csms.pid), 0.0
            time.sleep(0.5)
            try:
                f0 = cpu_s(fleet.pid)
            except FileNotFoundError:
                pass
            c_last, f_last = c0, f0
            while fleet.poll() is None:
                time.sleep(0.5)
                try:
                    c_last, f_last = cpu_s(csms.pid), cpu_s(fleet.pid)
                except FileNotFoundError:
                    break
            elapsed = time.monotonic() - t0
            ferr = fleet.stderr.read()
            ping.terminate()
            ping_out = ping.communicate()[0]
        finally:
            csms.terminate()
            csms.wait(20)
    rows = list(read_rows(out / "calls.csv"))
    t_wall0 = min(float(r["t_wall"]) for r in rows)
    steady = [float(r["rtt_ms"]) for r in rows if r["outcome"] == "ok" and float(r["t_wall"]) > t_wall0 + ramp_s + 1.0]
    pings = [float(m) for m in re.findall(r"time=([\d.]+) ms", ping_out)]
    errors = sum(1 for r in rows if r["outcome"] != "ok")
    return {
        "n": n,
        "rows": len(rows),
        "steady": steady,
        "ping_p50": statistics.median(pings) if pings else float("nan"),
        "errors": errors,
        "elapsed": elapsed,
        "rate": len(rows) / elapsed,
        "csms_cpu": 100 * (c_last - c0) / elapsed,
        "fleet_cpu": 100 * (f_last - f0) / elapsed,
        "rc": fleet.returncode,
        "stderr": ferr.strip()[-300:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,100,200,300,400")
    ap.add_argument("--meter-values", type=int, default=200)
    ap.add_argument("--ramp", type=float, default=100.0, help="stations started per second")
    ap.add_argument("--ocpp", default="1.6")
    ap.add_argument("--validation", default="fast")
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--nice", type=int, default=0, help="run csms, fleet and ping at this nice value")
    ap.add_argument("--jitter", default="0.2", help="the fleet's --jitter (fraction)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run both simulators under cProfile and print where their time goes (slower)",
    )
    args = ap.parse_args()
    if args.profile:
        args.loop = "asyncio"  # uvloop's internals are invisible to cProfile
    print(
        f"# sim_capacity: thesis-2021 ({args.meter_values} meter values), OCPP {args.ocpp}, validation "
        f"{args.validation}, loop {args.loop}, jitter {args.jitter}, nice {args.nice}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'N':>5} {'calls/s':>8} {'p50_ms':>7} {'p90_ms':>7} {'p99_ms':>7} {'ping':>6} {'ovh50':>7} "
        f"{'errors':>6} {'csms%':>6} {'fleet%':>6} {'load':>5}"
    )
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="sm-cap-") as d:
            r = run_size(n, args, Path(d))
            if args.profile:
                for name in ("fleet", "csms"):
                    if (Path(d) / f"{name}.prof").exists():
                        r[f"profile_{name}"] = profile_summary(Path(d) / f"{name}.prof")
        s = r["steady"]
        print(
            f"{n:>5} {r['rate']:>8.0f} {pct(s, 0.5):>7.2f} {pct(s, 0.9):>7.2f} {pct(s, 0.99):>7.2f} "
            f"{r['ping_p50']:>6.3f} {pct(s, 0.5) - r['ping_p50']:>7.2f} {r['errors']:>6} {r['csms_cpu']:>6.0f} "
            f"{r['fleet_cpu']:>6.0f} {os.getloadavg()[0]:>5.2f}",
            flush=True,
        )
        if r["rc"] != 0:
            print(f"      fleet exit {r['rc']}: {r['stderr']}")
        for name in ("fleet", "csms"):
            if f"profile_{name}" in r:
                print(f"  {name} (cProfile, share of its own time):\n{r[f'profile_{name}']}")


if __name__ == "__main__":
    main()
