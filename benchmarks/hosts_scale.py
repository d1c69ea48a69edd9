#!/usr/bin/env python3
"""Stations carried at thesis-2021 load on the hosts backend, with 1, 2 and 4 EVSE machines.

What it measures: a lab on "existing machines" (tests/hosts/machines.py: 1 CPO, 1 gateway, 4 EVSE machines, each
a network namespace with its own sshd and a sudo user, named by an Ansible inventory) is brought up once with
``labkit up -i``; then for each K EVSE machines and M stations per machine, ``labkit bench none --evse K
--stations-per-host M --scenario thesis-2021`` (MeterValues 100 ms after each reply, Heartbeat every 2 s; one
``labkit fleet`` per EVSE machine, one ``labkit csms`` on the CPO, ``labkit monitor`` everywhere, small ping and
iperf3 baselines first). From each run's files it computes, over the steady phase (every station between its
first and its last MeterValues: from the last station's first to the first station's last):

* stations (K x M), calls per second carried (ok calls sent in the steady phase / its length);
* OCPP RTT p50 and p99 (every ok call of the steady phase), the ping RTT p50 of the same cell (ping.csv, taken
  just before the OCPP phase) and the overhead = OCPP p50 - ping p50 (the figure of docs/simulators.md);
* the CSMS's own handling time p50 (csms.csv), the CPU of the CSMS, of the fleets (sum and busiest) and of the
  gateway's shaping engine when one runs (monitor.csv, % of one core) and the machine's CPU (% of all CPUs);
* the packets the gateway forwards per second (its data interfaces' tx counters, read from outside its namespace
  once a second) and per call;
* failures: calls whose outcome is not ``ok`` and connection losses (events).

Then per K the largest number of stations with p50 overhead <= --limit-ms (5 ms) and no failure, and where the
limit is: the first process at a full core (both simulators are single-threaded asyncio), else the machine's
CPUs. On this 2-core machine every "machine" is a namespace of the same kernel: the CSMS, the fleets, the
gateway's forwarding, the sshds and the monitors all share the same 2 CPUs, so the figures are a floor for
machines of their own; read them as calls per second one box carries, not per machine.

Usage (root; the worktree's labkit must be the one imported)::

    PYTHONPATH=. .venv/bin/python benchmarks/hosts_scale.py [--evse 1,2,4] [--per-host 100,200,300,400] \\
        [--steady 30] [--limit-ms 5] [--past-limit 1] [--tmp-size 1g] [--out DIR]

A K stops after --past-limit sizes above the limit. Each machine's private /tmp (the fixture's 64 MiB tmpfs) is
remounted at --tmp-size first: labkit's venv takes 32 MiB of it and the run's CSV files grow by ~175 bytes per
call on an EVSE machine and ~120 on the CPO (a full one is reported under the row). LABKIT_HOME is private
(DIR/labkit-home); the run directories stay under DIR/runs, the table also in DIR/hosts_scale.json.
``labkit down`` and the machines' teardown always run on the way out (also after an error, Ctrl-C or SIGTERM).
With the defaults (11 bench runs when each K stops at its first size above the limit) it takes about 13 minutes
here.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "hosts")]

from machines import Machines, sweep_stale  # noqa: E402

WHEEL_CACHE = Path("/var/cache/labkit/wheelhouse")  # as tests/hosts/test_hosts_lab.py
RAMP = 50.0  # the fleet's default --ramp (stations started per second); the bench does not set it
METER_INTERVAL = 0.1  # thesis-2021
BASELINES = ["--ping-count", "20", "--ping-interval", "0.05", "--iperf-seconds", "2", "--udp-seconds", "1"]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def num(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


class Labkit:
    """``python -m labkit`` of this worktree with a private LABKIT_HOME; the running child is kept for SIGTERM."""

    def __init__(self, home: Path, log: Path):
        self.env = dict(os.environ, LABKIT_HOME=str(home), PYTHONPATH=str(ROOT))
        if WHEEL_CACHE.is_dir():
            self.env["LABKIT_WHEELHOUSE_CACHE"] = str(WHEEL_CACHE)
        self.log = log
        self.child: subprocess.Popen | None = None

    def __call__(self, *argv: str, timeout: float = 1800) -> tuple[int, float]:
        t0 = time.monotonic()
        with open(self.log, "a") as fh:
            fh.write(f"\n$ labkit {' '.join(argv)}\n")
            fh.flush()
            self.child = subprocess.Popen([sys.executable, "-m", "labkit", *argv], env=self.env, cwd=ROOT,
                                          stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
            try:
                rc = self.child.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                rc = -1
            except BaseException:  # Ctrl-C, SIGTERM: the command stops cleanly first
                self.stop()
                raise
            finally:
                self.child = None
        return rc, time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM to the command this script started (labkit bench stops cleanly on it), then wait."""
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


class GatewayCounter:
    """Packets the gateway machine sends on its data interfaces (what it forwards), sampled once a second from
    outside (``ip -n NS -s link``, the fixture's namespace; nothing runs on the machine): the gateway's packet
    rate at a given OCPP call rate."""

    def __init__(self, ns: str, ifaces: list[str]):
        self.ns, self.ifaces = ns, ifaces
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> int | None:
        proc = subprocess.run(["ip", "-n", self.ns, "-s", "-j", "link", "show"], capture_output=True, text=True)
        try:
            links = json.loads(proc.stdout or "[]")
        except ValueError:
            return None
        return sum(ln["stats64"]["tx"]["packets"] for ln in links if ln.get("ifname") in self.ifaces)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            n = self._read()
            if n is not None:
                self.samples.append((time.time(), n))

    def __enter__(self) -> GatewayCounter:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def rate(self, t0: float, t1: float) -> float:
        """Packets per second forwarded between the first and the last sample inside [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def meter_values(m: int, steady_s: float) -> int:
    """MeterValues per station so the steady phase (all stations started, none finished) lasts ``steady_s``: a
    station sends them for about meter_values x 100 ms, the last starts M / ramp s after the first."""
    return int(math.ceil((steady_s + m / RAMP + 2.0) / METER_INTERVAL))


def analyse(run: Path, k: int, m: int) -> dict:
    """The figures of one run's single cell."""
    man = json.loads((run / "manifest.json").read_text())
    offsets = {h: (c.get("offset_s") or 0.0) for h, c in (man.get("clocks", {}).get("start") or {}).items()
               if isinstance(c, dict)}
    cells = man.get("cells") or []
    cell_id = cells[0]["id"] if cells else ""
    cell = run / "cells" / cell_id
    out = {"K": k, "M": m, "stations": k * m, "run": str(run), "cell": cell_id,
           "status": man.get("status"), "reason": man.get("reason", ""),
           "cell_status": cells[0].get("status") if cells else None}

    def on_controller(host: str, t: float) -> float:
        return t - offsets.get(host, 0.0)  # offset_s: the host's clock minus this machine's

    calls = []
    for f in sorted((cell / "ocpp").glob("calls-*.csv")):
        for r in rows(f):
            t = num(r.get("t_wall"))
            if t is None:
                continue
            calls.append((r.get("station_id", ""), r.get("action", ""), on_controller(r.get("host", ""), t),
                          num(r.get("rtt_ms")), r.get("outcome", ""),
                          (num(r.get("req_bytes")) or 0.0) + (num(r.get("resp_bytes")) or 0.0)))
    out["calls_total"] = len(calls)
    out["failed_calls"] = sum(1 for c in calls if c[4] != "ok")
    lost = 0
    for f in sorted((cell / "ocpp").glob("events-*.csv")):
        lost += sum(1 for r in rows(f) if r.get("event") in ("disconnected", "connect_failed", "tx_dropped",
                                                              "queue_dropped"))
    out["connection_failures"] = lost
    out["failures"] = out["failed_calls"] + lost
    stations = {c[0] for c in calls}
    out["stations_seen"] = len(stations)

    # the steady phase: from the last station's first MeterValues to the first station's last
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for sid, action, t, _rtt, outcome, _b in calls:
        if action == "MeterValues" and outcome == "ok":
            first[sid] = min(first.get(sid, t), t)
            last[sid] = max(last.get(sid, t), t)
    t0 = max(first.values()) if first else float("nan")
    t1 = min(last.values()) if last else float("nan")
    out["steady_note"] = ""
    if not first or not (t1 - t0 >= 5.0):
        # overloaded: stations started too late to overlap for 5 s; take the middle half of the medians instead
        if first:
            a, b = statistics.median(first.values()), statistics.median(last.values())
            t0, t1 = a + (b - a) / 4, b - (b - a) / 4
        out["steady_note"] = "stations overlapped < 5 s: middle of the run used"
    out["steady_s"] = t1 - t0 if first else float("nan")
    steady = [c for c in calls if c[4] == "ok" and t0 <= c[2] <= t1 and c[3] is not None]
    rtts = [c[3] for c in steady]
    out["calls_per_s"] = len(steady) / out["steady_s"] if out["steady_s"] and out["steady_s"] > 0 else float("nan")
    out["ocpp_p50_ms"], out["ocpp_p99_ms"] = pct(rtts, 0.5), pct(rtts, 0.99)
    out["frame_bytes_per_call"] = mean([c[5] for c in steady])  # OCPP-J text, request + response

    pings = [num(r.get("rtt_ms")) for r in rows(cell / "ping.csv") if r.get("lost") in ("0", "False", "false", "")]
    pings = [p for p in pings if p is not None]
    out["ping_p50_ms"] = pct(pings, 0.5)
    echo = [num(r.get("rtt_ms")) for r in rows(cell / "echo.csv") if r.get("lost") in ("0", "False", "false", "")]
    out["echo_p50_ms"] = pct([e for e in echo if e is not None], 0.5)
    out["overhead_p50_ms"] = out["ocpp_p50_ms"] - out["ping_p50_ms"]

    cpo = next((h["name"] for h in man.get("inventory", []) if h.get("role") == "cpo"), "cpo")
    handle = []
    for r in rows(cell / "ocpp" / "csms.csv"):
        t, h = num(r.get("t_wall")), num(r.get("handle_ms"))
        if r.get("outcome") == "ok" and t is not None and h is not None and t0 <= on_controller(cpo, t) <= t1:
            handle.append(h)
    out["csms_handle_p50_ms"] = pct(handle, 0.5)

    cpu: dict[tuple[str, str], list[float]] = {}
    host_cpu: list[float] = []
    rss: dict[tuple[str, str], float] = {}
    for r in rows(cell / "monitor.csv"):
        t = num(r.get("t_wall"))
        if t is None or not (t0 <= on_controller(r.get("host", ""), t) <= t1):
            continue
        proc, host = r.get("process", ""), r.get("host", "")
        if proc == "host":
            if r.get("role") == "cpo":  # every namespace shares this machine's CPUs: one host's rows suffice
                v = num(r.get("host_cpu_pct"))
                if v is not None:
                    host_cpu.append(v)
            continue
        v = num(r.get("cpu_pct"))
        if v is not None:
            cpu.setdefault((proc, host), []).append(v)
        b = num(r.get("rss_bytes"))
        if b is not None:
            rss[(proc, host)] = max(rss.get((proc, host), 0.0), b)
    fleets = {h: mean(v) for (p, h), v in cpu.items() if p == "fleet"}
    out["csms_cpu"] = mean([x for (p, _h), v in cpu.items() if p == "csms" for x in v])
    out["fleet_cpu_sum"] = sum(fleets.values()) if fleets else float("nan")
    out["fleet_cpu_max"] = max(fleets.values()) if fleets else float("nan")
    out["fleet_busiest"] = max(fleets, key=fleets.get) if fleets else ""
    out["engine_cpu"] = mean([x for (p, _h), v in cpu.items() if p in ("engine", "tracer") for x in v])
    out["host_cpu"] = mean(host_cpu)
    out["csms_rss_mib"] = max([b for (p, _h), b in rss.items() if p == "csms"], default=float("nan")) / 2**20
    out["monitor_samples"] = len(host_cpu)
    # a machine whose disk filled (the CSV files): the simulator stops and says so (exit 1), the cell fails
    out["disk_full"] = sorted(f.name for f in (cell / "logs").glob("*.log")
                              if "No space left on device" in f.read_text(errors="replace"))
    out["window"] = (t0, t1)  # on this machine's clock
    return out


def limit_of(r: dict, per_station: float) -> str:
    """Where the limit is in run ``r``: the first process at a full core, else the machine's CPUs, else calls/s
    that stopped growing with the stations (``per_station``: the calls/s of one station below the limit)."""
    parts = []
    if r["csms_cpu"] >= 90:
        parts.append(f"the CSMS process saturates ({r['csms_cpu']:.0f} % of a core; single-threaded)")
    if r["fleet_cpu_max"] >= 90:
        parts.append(f"a fleet process saturates ({r['fleet_busiest']}: {r['fleet_cpu_max']:.0f} % of a core)")
    if r["engine_cpu"] >= 90:
        parts.append(f"the gateway's engine saturates ({r['engine_cpu']:.0f} %)")
    if parts:
        return "; ".join(parts)
    got = r["calls_per_s"] / r["stations"]
    busiest = max((r["csms_cpu"], "the CSMS"), (r["fleet_cpu_max"], f"the fleet on {r['fleet_busiest']}"))
    if r["host_cpu"] >= 80:
        return (f"no process at a full core (CSMS {r['csms_cpu']:.0f} %, fleets {r['fleet_cpu_sum']:.0f} % in all): "
                f"the machine's 2 CPUs, shared by every simulated machine, are {r['host_cpu']:.0f} % busy")
    if got < 0.9 * per_station:
        return (f"the calls/s stopped growing ({got:.1f} per station instead of {per_station:.1f}): the busiest "
                f"process, {busiest[1]} at {busiest[0]:.0f} % of a core, carries no more; the 2 CPUs "
                f"{r['host_cpu']:.0f} % busy")
    return (f"no process at a full core and the CPUs {r['host_cpu']:.0f} % busy (CSMS {r['csms_cpu']:.0f} %, fleets "
            f"{r['fleet_cpu_sum']:.0f} %): waiting for the CPU in bursts (scheduling), not a throughput limit")


HEADER = (f"{'K':>2} {'M':>5} {'stations':>8} {'calls/s':>8} {'steady':>6} {'ping50':>7} {'ocpp50':>7} "
          f"{'ocpp99':>7} {'ovh50':>7} {'csms_h50':>8} {'csms%':>6} {'fleets%':>7} {'fleet_max%':>10} "
          f"{'host%':>6} {'gw_pkt/s':>8} {'pkt/call':>8} {'fail':>5} {'load':>5}")


def fmt_row(r: dict) -> str:
    return (f"{r['K']:>2} {r['M']:>5} {r['stations']:>8} {r['calls_per_s']:>8.0f} {r['steady_s']:>6.1f} "
            f"{r['ping_p50_ms']:>7.3f} {r['ocpp_p50_ms']:>7.2f} {r['ocpp_p99_ms']:>7.1f} {r['overhead_p50_ms']:>7.2f} "
            f"{r['csms_handle_p50_ms']:>8.2f} {r['csms_cpu']:>6.0f} {r['fleet_cpu_sum']:>7.0f} "
            f"{r['fleet_cpu_max']:>10.0f} {r['host_cpu']:>6.0f} {r.get('gw_pkts_per_s', math.nan):>8.0f} "
            f"{r.get('gw_pkts_per_call', math.nan):>8.2f} {r['failures']:>5} {r['load']:>5.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--evse", default="1,2,4", help="EVSE machines per size, a list (at most 4)")
    ap.add_argument("--per-host", default="100,200,300,400", help="stations per EVSE machine, a list")
    ap.add_argument("--steady", type=float, default=30.0, help="seconds of steady phase wanted per run")
    ap.add_argument("--limit-ms", type=float, default=5.0, help="the p50 overhead limit, ms")
    ap.add_argument("--past-limit", type=int, default=1,
                    help="sizes run per K once the overhead is above the limit (then the next K)")
    ap.add_argument("--tmp-size", default="1g",
                    help="size of each fixture machine's private /tmp (a tmpfs; labkit's venv and the run's CSV "
                         "files go there: ~175 bytes per call on an EVSE machine, ~120 per call on the CPO)")
    ap.add_argument("--out", type=Path, default=None, help="results (default: a new /tmp/hosts-scale-* directory)")
    args = ap.parse_args()
    ks = [int(x) for x in args.evse.split(",")]
    ms = sorted(int(x) for x in args.per_host.split(","))
    if os.geteuid() != 0:
        ap.error("needs root: it builds network namespaces, users and sshds")
    if not ks or max(ks) > 4 or min(ks) < 1:
        ap.error("--evse: 1 to 4 EVSE machines")
    out = args.out or Path(tempfile.mkdtemp(prefix="hosts-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    home = out / "labkit-home"
    home.mkdir(mode=0o700, exist_ok=True)
    log = out / "log.txt"
    labkit = Labkit(home, log)
    lab = "hs" + secrets.token_hex(3)
    started = dt.datetime.now(dt.UTC)

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"# hosts_scale {started:%Y-%m-%d %H:%M} UTC: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"lab {lab}, LABKIT_HOME {home}; log {log}", flush=True)
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    results: list[dict] = []
    summary: dict = {"started": started.isoformat(timespec="seconds"), "argv": sys.argv, "cpus": os.cpu_count(),
                     "lab": lab, "runs": results}
    swept = sweep_stale()
    if swept:
        print(f"# removed the leftovers of killed fixtures: {swept}")
    machines = Machines(n_evse=4)
    up = False
    rc_final = 0
    try:
        machines.build()
        for mc in machines.machines:  # the fixture's 64 MiB /tmp holds labkit's venv (32 MiB) and too few calls
            subprocess.run(["nsenter", "-t", str(mc.sshd_pid), "-m", "mount", "-o", f"remount,size={args.tmp_size}",
                            "/tmp"], check=True, capture_output=True)
        print(f"# machines built in {machines.build_seconds:.1f} s: cpo, gw, evse1-4 (user {machines.user}), "
              f"/tmp {args.tmp_size} each", flush=True)
        inv = machines.inventory("yaml", path=out / "inventory.yml")
        up = True  # a failed up rolls back by itself; down then finds nothing, or what a crash left
        rc, secs = labkit("up", "-i", str(inv), "--name", lab)
        summary["up_s"] = round(secs, 1)
        if rc != 0:
            print(f"labkit up -i failed (exit {rc}); see {log}")
            return 1
        print(f"# labkit up -i: {secs:.1f} s", flush=True)
        gw = machines.machine("gw")
        counter = GatewayCounter(gw.ns, list(gw.ifaces.values()))
        print(HEADER, flush=True)
        for k in ks:
            over = 0
            for m in ms:
                mv = meter_values(m, args.steady)
                runs = out / "runs" / f"k{k}-m{m}"
                argv = ["bench", "none", "--lab", lab, "--evse", str(k), "--stations-per-host", str(m),
                        "--scenario", "thesis-2021", "--meter-values", str(mv), *BASELINES,
                        "--results", str(runs), "--name", f"k{k}m{m}"]
                load0 = os.getloadavg()[0]
                with counter:
                    rc, secs = labkit(*argv, timeout=600 + 3 * mv * METER_INTERVAL)
                done = [p for p in runs.iterdir() if (p / "manifest.json").exists()] if runs.exists() else []
                if not done:
                    print(f"{k:>2} {m:>5} bench exit {rc} and no results directory; see {log}", flush=True)
                    rc_final = 1
                    break
                r = analyse(done[0], k, m)
                r["gw_pkts_per_s"] = counter.rate(*r["window"])
                r["gw_pkts_per_call"] = r["gw_pkts_per_s"] / r["calls_per_s"] if r["calls_per_s"] else float("nan")
                r.update(bench_rc=rc, bench_s=round(secs, 1), meter_values=mv, load=max(load0, os.getloadavg()[0]),
                         command="labkit " + " ".join(argv))
                results.append(r)
                print(fmt_row(r), flush=True)
                if rc != 0 or r["status"] != "complete":
                    print(f"      bench exit {rc}, run {r['status']}: {r['reason']}", flush=True)
                if r["disk_full"]:
                    print(f"      a machine's disk filled during the run ({', '.join(r['disk_full'])}): "
                          "raise --tmp-size", flush=True)
                if r["steady_note"]:
                    print(f"      {r['steady_note']}", flush=True)
                (out / "hosts_scale.json").write_text(json.dumps(summary, indent=2, default=str))
                if not r["overhead_p50_ms"] <= args.limit_ms or r["failures"]:  # NaN counts as above
                    over += 1
                    if over >= args.past_limit:
                        break
        print()
        for k in ks:
            mine = [r for r in results if r["K"] == k]
            if not mine:
                continue
            ok = [r for r in mine if r["overhead_p50_ms"] <= args.limit_ms and not r["failures"]
                  and r["status"] == "complete"]
            bad = [r for r in mine if r not in ok]
            best = max(ok, key=lambda r: r["stations"]) if ok else None
            at = bad[0] if bad else mine[-1]
            rates = [r["calls_per_s"] / r["stations"] for r in (ok or mine)]
            where = limit_of(at, statistics.median(rates))
            if best:
                line = (f"K={k}: {best['stations']} stations ({k} x {best['M']}) with p50 overhead "
                        f"{best['overhead_p50_ms']:.2f} ms <= {args.limit_ms:g} ms, {best['calls_per_s']:.0f} calls/s")
            else:
                line = f"K={k}: no size with p50 overhead <= {args.limit_ms:g} ms"
            if bad:
                line += (f"; at {at['stations']} stations: overhead {at['overhead_p50_ms']:.2f} ms, "
                         f"{at['failures']} failures, {at['calls_per_s']:.0f} calls/s; limit: {where}")
            else:
                line += (f"; the limit was not reached up to {at['stations']} stations (CSMS {at['csms_cpu']:.0f} % "
                         f"of a core, busiest fleet {at['fleet_cpu_max']:.0f} %, the 2 CPUs "
                         f"{at['host_cpu']:.0f} % busy)")
            print(line)
            summary.setdefault("per_k", {})[str(k)] = line
    except KeyboardInterrupt:
        print("# interrupted: taking the lab down", flush=True)
        rc_final = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up runs to its end
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if up:
            rc, secs = labkit("down", "--lab", lab, timeout=600)
            summary["down_s"] = round(secs, 1)
            print(f"# labkit down: exit {rc}, {secs:.1f} s", flush=True)
            if rc != 0:
                rc_final = rc_final or 1
        failed = machines.teardown()
        left = machines.leftovers()
        if failed or left:
            print(f"# teardown: could not undo {failed}; left {left}", flush=True)
            rc_final = rc_final or 1
        summary["ended"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (out / "hosts_scale.json").write_text(json.dumps(summary, indent=2, default=str))
        print(f"# results: {out}", flush=True)
    return rc_final


if __name__ == "__main__":
    sys.exit(main())
