#!/usr/bin/env python3
"""10,000 stations in OCPP security profile 3 (wss://, a client certificate each) against profile 1 (Basic
auth over ws://), side by side: do they all connect, how fast, and what TLS costs in CPU and memory.

Usage (as root: network namespaces)::

    .venv/bin/python benchmarks/sim_tls_10k.py [--stations 10000] [--ramp 200] [--steady 60]
        [--profiles 1,3] [--tls-version 1.3|1.2|any] [--cert-dir DIR] [--connect-timeout 120]
        [--json FILE] [--keep DIR]

What it does, for each profile in ``--profiles`` (1 then 3 by default), one after the other in one run:
builds the CSMS <-> gateway <-> EVSE namespaces (benchmarks/sim_netns.py, fresh for each profile), starts
``labkit csms --heartbeat-interval 60`` in the CSMS namespace and ``labkit fleet --scenario session
--heartbeat 60 --meter-interval 30`` with N stations (``--stations``) started at ``--ramp`` per second in
the EVSE namespace, waits until all N are connected at once (the fleet's status file), keeps them
``--steady`` seconds more, then stops the fleet and the CSMS (SIGTERM, by pid) and removes the namespaces.

* Profile 1: ``ws://``, HTTP Basic auth, the password in a 0600 file (``--password-file`` on both sides).
* Profile 3: ``wss://``, ``labkit csms --security-profile 3 --tls-cert/--tls-key --client-ca``, ``labkit
  fleet --ca --cert-dir --tls-version`` (1.3 by default; ``any`` lets the CSMS choose). The certificates are
  made first with ``labkit.sim.tlsca`` (timed): a CA, the CSMS's certificate with the CSMS's address in its
  subjectAltName, one EC P-256 key and certificate per station; in a temporary directory removed at the
  end, or in ``--cert-dir`` (which must not already hold a CA; kept).

What it measures, per profile (the printed table, and everything in ``--json FILE``):

* time to all connected: from the fleet's first ``connecting`` event to the moment the N-th station had
  its first ``connected`` (events file); the ideal is (N-1)/ramp. ``all at once``: whether the fleet's
  status file saw N stations connected at the same time (within ``--connect-timeout`` s after the ramp).
* connect rate: stations reaching their first connection per second, the median over the 1-s bins of
  that interval (the last, partial bin left out), and N over the whole time.
* failures: ``connect_failed`` events before the stop (attempts, distinct stations, the reasons as the
  fleet wrote them), the CSMS's refused handshakes (csms.csv ``refused`` rows, by code) and the
  disconnections before the stop.
* set-up of each connection: the medians of the fleet's ``handshake`` events (``tcp_ms``, ``tls_ms``,
  ``ws_ms``, their sum, its p99, the TLS handshake's bytes; ``labkit.resultsformat.parse_detail``) and of
  the ``booted`` events (BootNotification RTT, time from the TCP connect to the accepted boot).
* CPU seconds (user + system, /proc/<pid>/stat) of the CSMS and of the fleet during the ramp (from the
  fleet's first status file, i.e. after its start-up, to all connected), per connection, as % of one core
  on average and over the busiest 5 s, during the steady phase (% of one core), and over the whole life of
  each process (``wait4``'s rusage). How long each waited on a run queue for a CPU during the ramp
  (/proc/<pid>/schedstat): seconds the process was ready to run and another one ran. Peak RSS
  (``wait4``'s ru_maxrss, the high-water mark, reached while the stop closes every connection) and per
  station, and the RSS when all were connected and just before the stop.
* steady phase (from 5 s after all connected to the stop): calls/s, errors, OCPP RTT p50/p99.
* certificate generation for N stations (profile 3 only): seconds and CPU seconds for the CA and the
  server certificate, and for the N client certificates.
* the machine: load average before and after each profile, and the CPU the whole machine spent meanwhile
  (/proc/stat, as cores busy on average, over the ramp and over the profile's whole run with the namespaces'
  set-up and the stop): the two simulators, softirq (mostly the veths and the gateway's forwarding),
  everything else (other people's work on this machine, and this script), and steal time taken by the
  hypervisor.

How to read it: the ratio column is profile 3 / profile 1. The connect rate is bounded by the ramp: if
profile 3 keeps up, its median rate equals profile 1's and the cost shows only as CPU per connection
(the TLS 1.3 handshake with a client certificate: ECDHE, two ECDSA signatures and two certificate
verifications, plus one ``SSLContext`` per station loaded in the fleet) and as the longer ``tls_ms``. When
a process reaches 100 % of a core during the ramp, handshakes queue, ``tls_ms`` grows and, beyond the
10-s open timeout, attempts fail (``connect_failed`` ... ``TimeoutError``) and back off; then lower
``--ramp``. When the set-up times grow while neither process uses a full core, look at the run-queue
wait and at "everything else": the processes were ready and the machine's CPUs were busy with other
work. Memory per station in profile 3 includes each connection's TLS state on both sides and, in the
fleet, each station's SSLContext. The machine is shared: compare profiles within one run, read absolute
figures with the load and the other CPU use printed with them. ``--json`` also holds a once-a-second
timeline (connected, CPU, run-queue wait, RSS, the machine's CPU) of each profile.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_capacity import TICK, cpu_s  # noqa: E402
from sim_netns import path3  # noqa: E402
from sim_overhead import LABKIT, pct, wait_listening  # noqa: E402

from labkit.resultsformat import parse_detail  # noqa: E402
from labkit.sim import tlsca  # noqa: E402
from labkit.sim.samples import read_rows  # noqa: E402

NOFILE = 65536
PORTS = {1: 9000, 3: 9443}
ID_PREFIX = "cs"


# -- processes ------------------------------------------------------------------------------------------------
def proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM) in bytes; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_or_nan(pid: int) -> float:
    try:
        return cpu_s(pid)
    except OSError:
        return float("nan")


def reap(proc: subprocess.Popen, block: bool) -> dict | None:
    """``wait4`` the process (our child: ``ip netns exec`` execs the command, so this is labkit itself):
    None while it runs (``block`` False), else its exit code, CPU seconds and peak RSS."""
    pid, status, ru = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss * 1024}


def stop(proc: subprocess.Popen, timeout: float = 90.0) -> dict:
    """SIGTERM, wait up to ``timeout`` s (then SIGKILL), reap: its exit figures."""
    if proc.returncode is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = reap(proc, block=False)
            if got is not None:
                return got
            time.sleep(0.2)
        proc.kill()
        got = reap(proc, block=True)
        got["killed"] = True
        return got
    return {"rc": proc.returncode, "cpu_s": float("nan"), "maxrss": 0}


def runq_wait_s(pid: int) -> float:
    """Seconds the process's main thread has waited on a run queue for a CPU (/proc/<pid>/schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def sample(t: float, csms: subprocess.Popen, fleet: subprocess.Popen, connected: int) -> dict:
    """One point of the timeline: both processes' CPU, run-queue wait and RSS, and the whole machine's CPU."""
    m = machine_cpu()
    return {"t": round(t, 2), "connected": connected,
            "csms_cpu": cpu_or_nan(csms.pid), "fleet_cpu": cpu_or_nan(fleet.pid),
            "csms_wait": runq_wait_s(csms.pid), "fleet_wait": runq_wait_s(fleet.pid),
            "csms_rss": proc_status(csms.pid, "VmRSS"), "fleet_rss": proc_status(fleet.pid, "VmRSS"),
            "busy": m["busy"], "softirq": m["softirq"], "steal": m["steal"]}


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine so far (/proc/stat, all CPUs): busy, softirq (+ irq), steal, total."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest and guest_nice are inside user and nice)
    total = sum(f[:8])
    return {"busy": (total - f[3] - f[4] - f[7]) / TICK, "softirq": (f[5] + f[6]) / TICK, "steal": f[7] / TICK,
            "total": total / TICK}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- certificates -----------------------------------------------------------------------------------------------
def make_pki(directory: Path, n: int, address: str) -> dict:
    """CA, server certificate (``address`` in its SAN) and N station certificates, timed."""
    t0 = time.perf_counter()
    ca = tlsca.make_ca(directory, "labkit-bench")
    cert, key = tlsca.server_cert(ca, directory, ["csms.lab"], [address])
    t1, c1 = time.perf_counter(), time.process_time()
    tlsca.client_certs(ca, directory, tlsca.station_ids(ID_PREFIX, n))
    t2, c2 = time.perf_counter(), time.process_time()
    return {
        "dir": str(directory),
        "ca": str(ca.cert_path),
        "server_cert": str(cert),
        "server_key": str(key),
        "ca_server_s": t1 - t0,
        "stations_s": t2 - t1,
        "stations_cpu_s": c2 - c1,
        "ms_per_station": (t2 - t1) / n * 1e3,
    }


# -- one profile ----------------------------------------------------------------------------------------------
def commands(profile: int, p, args: argparse.Namespace, out: Path, pki: dict | None, pwfile: Path,
             lim: list[str], duration: float) -> tuple[list[str], list[str]]:
    port = PORTS[profile]
    csms = [LABKIT, "csms", "--listen", f"{p.cpo_addr}:{port}", "--heartbeat-interval", "60",
            "--validation", args.validation, "--loop", args.loop,
            "--out", str(out / "csms.csv"), "--status", str(out / "csms.json")]
    fleet = [LABKIT, "fleet", "--stations", str(args.stations), "--ramp", str(args.ramp), "--id-prefix", ID_PREFIX,
             "--scenario", "session", "--ocpp", args.ocpp, "--heartbeat", "60", "--meter-interval", "30",
             "--sessions", "0", "--think-time", "10", "--charge-time", "3600", "--duration", f"{duration:.0f}",
             "--drain-timeout", "5", "--validation", args.validation, "--loop", args.loop,
             "--out", str(out / "calls.csv"), "--events", str(out / "events.csv"),
             "--status", str(out / "fleet.json")]
    if profile == 1:
        csms += ["--security-profile", "1", "--password-file", str(pwfile)]
        fleet += ["--url", f"ws://{p.cpo_addr}:{port}/", "--password-file", str(pwfile)]
    else:
        assert pki is not None
        csms += ["--security-profile", "3", "--tls-cert", pki["server_cert"], "--tls-key", pki["server_key"],
                 "--client-ca", pki["ca"]]
        fleet += ["--url", f"wss://{p.cpo_addr}:{port}/", "--ca", pki["ca"], "--cert-dir", pki["dir"]]
        if args.tls_version != "any":
            fleet += ["--tls-version", args.tls_version]
    return p.cmd(p.cpo, *lim, *csms), p.cmd(p.evse, *lim, *fleet)


def run_profile(profile: int, args: argparse.Namespace, work: Path, pki: dict | None, pwfile: Path) -> dict:
    n = args.stations
    ramp_s = n / args.ramp if args.ramp > 0 else 0.0
    # the fleet's own deadline is only a backstop: this script stops it (SIGTERM) after the steady phase
    duration = ramp_s + args.connect_timeout + args.steady + 60
    out = work / f"profile{profile}"
    out.mkdir()
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lim = ["prlimit", f"--nofile={NOFILE}:{NOFILE}"] if hard < n + 100 else []  # needs CAP_SYS_RESOURCE
    res: dict = {"profile": profile, "stations": n, "ramp_per_s": args.ramp, "nofile": NOFILE if lim else hard}
    load0 = os.getloadavg()
    m0 = machine_cpu()
    with path3(f"t{profile}") as p:
        csms_cmd, fleet_cmd = commands(profile, p, args, out, pki, pwfile, lim, duration)
        cerr = open(out / "csms.stderr", "w")  # noqa: SIM115 - closed below
        ferr = open(out / "fleet.stderr", "w")  # noqa: SIM115
        csms = subprocess.Popen(csms_cmd, stdout=subprocess.PIPE, stderr=cerr, text=True)
        fleet = None
        try:
            res["csms_listening"] = wait_listening(csms).strip()
            csms_cpu0 = cpu_s(csms.pid)
            fleet = subprocess.Popen(fleet_cmd, stdout=subprocess.DEVNULL, stderr=ferr, text=True)
            t_fleet = time.monotonic()
            res.update(monitor(args, out, csms, fleet, t_fleet, ramp_s, csms_cpu0))
            res["t_stop_wall"] = time.time()
            res["fleet_exit"] = stop(fleet, timeout=60 + args.connect_timeout) if fleet.returncode is None else \
                res.pop("fleet_exit_early")
            res["csms_exit"] = stop(csms)
        finally:
            if fleet is not None and fleet.returncode is None:
                fleet.kill()
                reap(fleet, block=True)
            if csms.returncode is None:
                csms.kill()
                reap(csms, block=True)
            cerr.close()
            ferr.close()
    m1 = machine_cpu()
    res["load_before"], res["load_after"] = load0, os.getloadavg()
    ncpu = os.cpu_count() or 1
    wall = (m1["total"] - m0["total"]) / ncpu  # seconds elapsed (CPU-seconds of all CPUs / CPUs)
    sims = res["csms_exit"]["cpu_s"] + res["fleet_exit"]["cpu_s"]
    d = {k: m1[k] - m0[k] for k in m0}
    res["machine"] = {
        "wall_s": wall,
        "busy_cores": d["busy"] / wall,
        "simulators_cores": sims / wall,
        "softirq_cores": d["softirq"] / wall,  # mostly the veths and the gateway's forwarding
        "other_cores": (d["busy"] - d["softirq"] - sims) / wall,  # every other process, ours included
        "steal_cores": d["steal"] / wall,
    }
    res["fleet_stderr"] = (out / "fleet.stderr").read_text()[-2000:].strip()
    res["csms_stderr"] = (out / "csms.stderr").read_text()[-2000:].strip()
    res.update(analyse(out, n, res))
    if args.keep:
        shutil.copytree(out, Path(args.keep) / out.name, dirs_exist_ok=True)
    return res


def monitor(args: argparse.Namespace, out: Path, csms: subprocess.Popen, fleet: subprocess.Popen, t_fleet: float,
            ramp_s: float, csms_cpu0: float) -> dict:
    """Follow the run: CPU at the fleet's first status (its start-up done), at all connected and at the end of
    the steady phase; the largest simultaneous connection count; stop when the steady phase is over or when
    not all connected in time."""
    n = args.stations
    r: dict = {"all_at_once": False, "max_connected": 0}
    ramp0 = None  # (t, csms cpu, fleet cpu) when the fleet's status file first appears
    allc = None
    give_up = t_fleet + ramp_s + args.connect_timeout + 30  # +30: the fleet's start-up (checking N cert files)
    last_print = 0.0
    timeline: list[dict] = []  # once a second (sample())
    r["timeline"] = timeline
    while True:
        time.sleep(0.5)
        got = reap(fleet, block=False)
        if got is not None:
            r["fleet_exit_early"] = got
            r["stopped_because"] = f"the fleet exited by itself (status {got['rc']})"
            break
        now = time.monotonic()
        st = read_json(out / "fleet.json")
        if st is None:
            if now > give_up:
                r["stopped_because"] = "the fleet wrote no status file"
                break
            continue
        if ramp0 is None:
            ramp0 = (now, cpu_s(csms.pid), cpu_s(fleet.pid))
            r["fleet_startup_s"] = now - t_fleet
            r["fleet_startup_cpu_s"] = ramp0[2]
            r["csms_cpu_before_ramp_s"] = ramp0[1] - csms_cpu0
        connected = st.get("stations_connected", 0)
        r["max_connected"] = max(r["max_connected"], connected)
        if not timeline or now - t_fleet - timeline[-1]["t"] >= 1.0:
            timeline.append(sample(now - t_fleet, csms, fleet, connected))
        if now - last_print >= 10:
            last_print = now
            print(f"  {now - t_fleet:5.0f} s: {st.get('stations_started', 0)} started, {connected} connected, "
                  f"failures {sum(st.get('connect_failures', {}).values())}, "
                  f"CPU csms {cpu_or_nan(csms.pid):.0f} s fleet {cpu_or_nan(fleet.pid):.0f} s, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        if allc is None and connected >= n:
            allc = (now, cpu_s(csms.pid), cpu_s(fleet.pid))
            r["all_at_once"] = True
            r["all_connected_monitor_s"] = now - t_fleet
            r["rss_at_all_connected"] = {"csms": proc_status(csms.pid, "VmRSS"), "fleet": proc_status(fleet.pid,
                                                                                                     "VmRSS")}
            r["ramp_cpu_s"] = {"csms": allc[1] - ramp0[1], "fleet": allc[2] - ramp0[2]}
            r["t_all_wall_monitor"] = time.time()
            print(f"  all {n} connected {now - t_fleet:.1f} s after the fleet started", flush=True)
        if allc is not None and now - allc[0] >= args.steady:
            dt = now - allc[0]
            r["steady_s"] = dt
            r["steady_cpu_pct"] = {"csms": 100 * (cpu_s(csms.pid) - allc[1]) / dt,
                                   "fleet": 100 * (cpu_s(fleet.pid) - allc[2]) / dt}
            r["stopped_because"] = "steady phase over"
            r["csms_status"] = read_json(out / "csms.json")
            r["fleet_status"] = st
            break
        if allc is None and now > give_up:
            r["ramp_cpu_s"] = {"csms": cpu_s(csms.pid) - ramp0[1], "fleet": cpu_s(fleet.pid) - ramp0[2]}
            r["stopped_because"] = (f"not all connected {now - t_fleet:.0f} s after the fleet started "
                                    f"(ramp {ramp_s:.0f} s + --connect-timeout {args.connect_timeout:.0f} s + 30 s)")
            r["csms_status"] = read_json(out / "csms.json")
            r["fleet_status"] = st
            print(f"  {r['stopped_because']}: {connected} connected", flush=True)
            break
    return r


# -- analysis -----------------------------------------------------------------------------------------------------
def analyse(out: Path, n: int, res: dict) -> dict:
    t_stop = res["t_stop_wall"]
    events = [e for e in read_rows(out / "events.csv") if float(e["t_wall"]) < t_stop]
    a: dict = {}
    connecting = [float(e["t_wall"]) for e in events if e["event"] == "connecting"]
    first_conn: dict[str, float] = {}
    for e in events:
        if e["event"] == "connected" and e["station_id"] not in first_conn:
            first_conn[e["station_id"]] = float(e["t_wall"])
    a["stations_connected_ever"] = len(first_conn)
    t0 = min(connecting) if connecting else float("nan")
    times = sorted(first_conn.values())
    if len(times) >= n:
        t_all = times[n - 1]
        a["time_to_all_s"] = t_all - t0
    else:
        t_all = times[-1] if times else t0
        a["time_to_all_s"] = None
    a["time_to_last_connected_s"] = (times[-1] - t0) if times else None
    # connect rate: first connections per 1-s bin from the first attempt to the last first connection
    span = t_all - t0
    bins = collections.Counter(int(t - t0) for t in times)
    full = int(span)  # bins 0 .. full-1 are whole seconds inside the span
    counts = [bins.get(i, 0) for i in range(full)] if full >= 1 else [len(times)]
    a["connect_rate_median"] = statistics.median(counts) if counts else 0
    a["connect_rate_p10"] = pct(counts, 0.1)
    a["connect_rate_overall"] = len(times) / span if span > 0 else float("nan")
    failed = [e for e in events if e["event"] == "connect_failed"]
    a["connect_failed"] = len(failed)
    a["connect_failed_stations"] = len({e["station_id"] for e in failed})
    a["connect_failed_reasons"] = dict(collections.Counter(e["detail"][:120] for e in failed).most_common(10))
    a["disconnects"] = sum(1 for e in events if e["event"] == "disconnected")
    a["disconnect_reasons"] = dict(collections.Counter(e["detail"][:120] for e in events
                                                       if e["event"] == "disconnected").most_common(5))
    refused = collections.Counter()
    steady_calls = []
    t_steady0 = (res.get("t_all_wall_monitor") or t_all) + 5
    for r in read_rows(out / "csms.csv"):
        if r["outcome"] == "refused":
            refused[r["error_code"]] += 1
    a["csms_refused"] = dict(refused)
    # set-up of each connection (handshake events) and the first boot (booted events)
    hs = [parse_detail(e["detail"]) for e in events if e["event"] == "handshake"]
    booted = [parse_detail(e["detail"]) for e in events if e["event"] == "booted"]

    def col(rows: list[dict], key: str) -> list[float]:
        return [float(d[key]) for d in rows if d.get(key) not in (None, "")]

    setup = {k: col(hs, k) for k in ("tcp_ms", "tls_ms", "ws_ms", "tls_out", "tls_in")}
    totals = [sum(float(d.get(k) or 0) for k in ("tcp_ms", "tls_ms", "ws_ms")) for d in hs]
    a["handshakes"] = len(hs)
    a["tls_versions"] = dict(collections.Counter(d.get("tls", "") for d in hs))
    a["ciphers"] = dict(collections.Counter(d.get("cipher", "") for d in hs if d.get("cipher")))
    a["setup_p50"] = {k: (statistics.median(v) if v else None) for k, v in setup.items()}
    a["setup_p50"]["total_ms"] = statistics.median(totals) if totals else None
    a["setup_total_p90_ms"] = pct(totals, 0.9) if totals else None
    a["setup_total_p99_ms"] = pct(totals, 0.99) if totals else None
    a["setup_total_max_ms"] = max(totals) if totals else None
    a["boot_ms_p50"] = statistics.median(col(booted, "boot_ms")) if booted else None
    a["boot_ms_p99"] = pct(col(booted, "boot_ms"), 0.99) if booted else None
    a["since_connect_ms_p50"] = statistics.median(col(booted, "since_connect_ms")) if booted else None
    a["since_connect_ms_p99"] = pct(col(booted, "since_connect_ms"), 0.99) if booted else None
    # from the once-a-second samples: the busiest 5 s of each process during the ramp, how long each waited for
    # a CPU, what the rest of the machine used meanwhile, and the RSS before the stop
    tl = res.get("timeline") or []
    t_allc = res.get("all_connected_monitor_s") or (tl[-1]["t"] if tl else 0)
    ramp_tl = [x for x in tl if x["t"] <= t_allc + 1]
    for name in ("csms", "fleet"):
        best = None  # no 5-s window in a ramp shorter than that
        for j in range(len(ramp_tl)):
            k = j
            while k + 1 < len(ramp_tl) and ramp_tl[k]["t"] - ramp_tl[j]["t"] < 5:
                k += 1
            dt = ramp_tl[k]["t"] - ramp_tl[j]["t"]
            if dt >= 4:
                pct5 = 100 * (ramp_tl[k][f"{name}_cpu"] - ramp_tl[j][f"{name}_cpu"]) / dt
                best = pct5 if best is None else max(best, pct5)
        a[f"{name}_ramp_busiest_5s_pct"] = best
    if len(ramp_tl) >= 2:
        first, last = ramp_tl[0], ramp_tl[-1]
        dt = last["t"] - first["t"]
        a["ramp_runq_wait_s"] = {k: last[f"{k}_wait"] - first[f"{k}_wait"] for k in ("csms", "fleet")}
        sims = sum(last[f"{k}_cpu"] - first[f"{k}_cpu"] for k in ("csms", "fleet"))
        a["ramp_machine"] = {"busy_cores": (last["busy"] - first["busy"]) / dt,
                             "softirq_cores": (last["softirq"] - first["softirq"]) / dt,
                             "other_cores": (last["busy"] - first["busy"] - (last["softirq"] - first["softirq"])
                                             - sims) / dt,
                             "steal_cores": (last["steal"] - first["steal"]) / dt}
    if tl:
        a["rss_before_stop"] = {"csms": tl[-1]["csms_rss"], "fleet": tl[-1]["fleet_rss"]}
    # the steady phase's calls
    if res.get("steady_s"):
        t_end = t_stop - 1
        for r in read_rows(out / "calls.csv"):
            if t_steady0 < float(r["t_wall"]) < t_end:
                steady_calls.append(r)
        ok = [float(r["rtt_ms"]) for r in steady_calls if r["outcome"] == "ok"]
        a["steady_calls_per_s"] = len(steady_calls) / max(t_end - t_steady0, 1e-9)
        a["steady_errors"] = dict(collections.Counter(r["outcome"] for r in steady_calls if r["outcome"] != "ok"))
        a["steady_rtt_p50_ms"] = pct(ok, 0.5)
        a["steady_rtt_p99_ms"] = pct(ok, 0.99)
    return a


# -- report -------------------------------------------------------------------------------------------------------
def fmt(v: object, spec: str) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def rows_of(r: dict, pki: dict | None, n: int) -> list[tuple[str, object, str]]:
    """(label, value, format) for one profile's column."""
    mib = 2**20
    ce, fe = r["csms_exit"], r["fleet_exit"]
    ramp = r.get("ramp_cpu_s") or {}
    steady = r.get("steady_cpu_pct") or {}
    p50 = r.get("setup_p50") or {}
    out = [
        ("stations ever connected", r["stations_connected_ever"], "d"),
        ("all N connected at once (status)", "yes" if r["all_at_once"] else f"no, max {r['max_connected']}", ""),
        ("time to all connected, s", r["time_to_all_s"], ".1f"),
        ("  ideal: (N-1)/ramp, s", (n - 1) / r["ramp_per_s"] if r["ramp_per_s"] > 0 else 0.0, ".1f"),
        ("connect rate, median /s", r["connect_rate_median"], ".0f"),
        ("connect rate, p10 of 1-s bins /s", r["connect_rate_p10"], ".0f"),
        ("connect rate, N / time /s", r["connect_rate_overall"], ".1f"),
        ("connect_failed events", r["connect_failed"], "d"),
        ("  stations with a failure", r["connect_failed_stations"], "d"),
        ("CSMS refused handshakes", sum(r["csms_refused"].values()), "d"),
        ("disconnects before the stop", r["disconnects"], "d"),
        ("set-up p50: tcp_ms", p50.get("tcp_ms"), ".2f"),
        ("set-up p50: tls_ms", p50.get("tls_ms"), ".2f"),
        ("set-up p50: ws_ms", p50.get("ws_ms"), ".2f"),
        ("set-up p50: total ms", p50.get("total_ms"), ".2f"),
        ("set-up total p90 ms", r["setup_total_p90_ms"], ".1f"),
        ("set-up total p99 ms", r["setup_total_p99_ms"], ".1f"),
        ("set-up total max ms", r["setup_total_max_ms"], ".0f"),
        ("TLS handshake bytes out/in p50", None if p50.get("tls_out") is None
         else f"{p50['tls_out']:.0f}/{p50['tls_in']:.0f}", ""),
        ("BootNotification RTT p50 ms", r["boot_ms_p50"], ".2f"),
        ("BootNotification RTT p99 ms", r["boot_ms_p99"], ".1f"),
        ("connect start -> booted p50 ms", r["since_connect_ms_p50"], ".2f"),
        ("connect start -> booted p99 ms", r["since_connect_ms_p99"], ".1f"),
        ("CSMS CPU s, ramp", ramp.get("csms"), ".1f"),
        ("fleet CPU s, ramp", ramp.get("fleet"), ".1f"),
        ("CSMS CPU ms per connection, ramp", None if not ramp else ramp["csms"] / n * 1e3, ".2f"),
        ("fleet CPU ms per connection, ramp", None if not ramp else ramp["fleet"] / n * 1e3, ".2f"),
        ("CSMS CPU % of a core, ramp", None if not ramp or not r.get("time_to_all_s")
         else 100 * ramp["csms"] / r["time_to_all_s"], ".0f"),
        ("fleet CPU % of a core, ramp", None if not ramp or not r.get("time_to_all_s")
         else 100 * ramp["fleet"] / r["time_to_all_s"], ".0f"),
        ("CSMS CPU %, busiest 5 s of the ramp", r.get("csms_ramp_busiest_5s_pct"), ".0f"),
        ("fleet CPU %, busiest 5 s of the ramp", r.get("fleet_ramp_busiest_5s_pct"), ".0f"),
        ("CSMS waiting for a CPU s, ramp", (r.get("ramp_runq_wait_s") or {}).get("csms"), ".1f"),
        ("fleet waiting for a CPU s, ramp", (r.get("ramp_runq_wait_s") or {}).get("fleet"), ".1f"),
        ("machine busy cores, ramp", (r.get("ramp_machine") or {}).get("busy_cores"), ".2f"),
        ("  everything else, ramp", (r.get("ramp_machine") or {}).get("other_cores"), ".2f"),
        ("fleet start-up CPU s", r.get("fleet_startup_cpu_s"), ".1f"),
        ("CSMS CPU % steady", steady.get("csms"), ".0f"),
        ("fleet CPU % steady", steady.get("fleet"), ".0f"),
        ("CSMS CPU s, whole life", ce["cpu_s"], ".1f"),
        ("fleet CPU s, whole life", fe["cpu_s"], ".1f"),
        ("CSMS peak RSS MiB", ce["maxrss"] / mib, ".0f"),
        ("fleet peak RSS MiB", fe["maxrss"] / mib, ".0f"),
        ("CSMS RSS MiB, all connected", (r.get("rss_at_all_connected") or {}).get("csms", 0) / mib, ".0f"),
        ("fleet RSS MiB, all connected", (r.get("rss_at_all_connected") or {}).get("fleet", 0) / mib, ".0f"),
        ("CSMS RSS MiB, before the stop", (r.get("rss_before_stop") or {}).get("csms", 0) / mib, ".0f"),
        ("fleet RSS MiB, before the stop", (r.get("rss_before_stop") or {}).get("fleet", 0) / mib, ".0f"),
        ("CSMS peak RSS KiB/station", ce["maxrss"] / 1024 / n, ".1f"),
        ("fleet peak RSS KiB/station", fe["maxrss"] / 1024 / n, ".1f"),
        ("steady calls/s", r.get("steady_calls_per_s"), ".0f"),
        ("steady errors", sum((r.get("steady_errors") or {}).values()) if "steady_errors" in r else None, "d"),
        ("steady OCPP RTT p50 ms", r.get("steady_rtt_p50_ms"), ".2f"),
        ("steady OCPP RTT p99 ms", r.get("steady_rtt_p99_ms"), ".1f"),
        ("cert generation s, CA + server", None if r["profile"] != 3 or not pki else pki["ca_server_s"], ".3f"),
        ("cert generation s, N stations", None if r["profile"] != 3 or not pki else pki["stations_s"], ".2f"),
        ("  CPU s (ms/station)", None if r["profile"] != 3 or not pki
         else f"{pki['stations_cpu_s']:.2f} ({pki['ms_per_station']:.3f})", ""),
        ("load average before / after", f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}", ""),
        (f"machine busy cores (of {os.cpu_count() or 1})", r["machine"]["busy_cores"], ".2f"),
        ("  csms + fleet", r["machine"]["simulators_cores"], ".2f"),
        ("  softirq (forwarding, veths)", r["machine"]["softirq_cores"], ".2f"),
        ("  everything else", r["machine"]["other_cores"], ".2f"),
        ("steal cores", r["machine"]["steal_cores"], ".2f"),
    ]
    return out


def table(results: dict[int, dict], pki: dict | None, n: int) -> tuple[str, dict]:
    cols = sorted(results)
    rows = {p: rows_of(results[p], pki, n) for p in cols}
    labels = [lab for lab, _, _ in rows[cols[0]]]
    width = max(len(lab) for lab in labels) + 2
    head = f"{'':<{width}}" + "".join(f"{'profile ' + str(p):>16}" for p in cols)
    both = len(cols) == 2
    if both:
        head += f"{'ratio ' + str(cols[1]) + '/' + str(cols[0]):>12}"
    lines = [head, "-" * len(head)]
    ratios: dict = {}
    for i, lab in enumerate(labels):
        line = f"{lab:<{width}}"
        vals = []
        for p in cols:
            _, v, spec = rows[p][i]
            line += f"{fmt(v, spec):>16}"
            vals.append(v)
        if both:
            a, b = vals
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == a and b == b and a > 0:
                ratios[lab.strip()] = b / a
                line += f"{b / a:>12.2f}"
            else:
                line += f"{'':>12}"
        lines.append(line)
    return "\n".join(lines), ratios


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=10000)
    ap.add_argument("--ramp", type=float, default=200.0, help="stations started per second")
    ap.add_argument("--steady", type=float, default=60.0, help="seconds with all connected, then stop")
    ap.add_argument("--connect-timeout", type=float, default=120.0,
                    help="seconds after the ramp to wait for all to be connected before giving up")
    ap.add_argument("--profiles", default="1,3", help="comma-separated, run in this order: 1, 3 or both")
    ap.add_argument("--tls-version", choices=("1.3", "1.2", "any"), default="1.3", help="profile 3: the fleet's")
    ap.add_argument("--cert-dir", default=None,
                    help="make the certificates here and keep them (default: a temporary directory)")
    ap.add_argument("--ocpp", default="1.6")
    ap.add_argument("--validation", default="fast")
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--keep", default=None, help="copy each profile's CSV, status and stderr files here")
    args = ap.parse_args()
    profiles = [int(x) for x in args.profiles.split(",") if x.strip()]
    if not profiles or any(p not in PORTS for p in profiles):
        ap.error("--profiles: 1, 3 or 1,3")
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces)")
    n = args.stations
    print(f"# sim_tls_10k: {n} stations, session scenario (heartbeat 60 s, meter values 30 s), OCPP {args.ocpp}, "
          f"ramp {args.ramp:.0f}/s, steady {args.steady:.0f} s, profiles {profiles}, TLS {args.tls_version}; "
          f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: dict[int, dict] = {}
    pki = None
    with tempfile.TemporaryDirectory(prefix="sm-tls-") as d:
        work = Path(d)
        pwfile = work / "password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(18) + "\n")
        if 3 in profiles:
            cert_dir = Path(args.cert_dir) if args.cert_dir else work / "pki"
            if (cert_dir / "ca.pem").exists():
                ap.error(f"--cert-dir {cert_dir} already holds a CA: give an empty or new directory")
            from sim_netns import CPO_ADDR

            pki = make_pki(cert_dir, n, CPO_ADDR)
            print(f"certificates for {n} stations: {pki['stations_s']:.2f} s ({pki['stations_cpu_s']:.2f} s CPU, "
                  f"{pki['ms_per_station']:.3f} ms each); CA + server {pki['ca_server_s'] * 1e3:.1f} ms; "
                  f"server SAN csms.lab, {CPO_ADDR}", flush=True)
        for prof in profiles:
            print(f"profile {prof}: load average {os.getloadavg()[0]:.2f}", flush=True)
            r = run_profile(prof, args, work, pki, pwfile)
            results[prof] = r
            print(f"profile {prof}: {r['csms_listening']}; stopped: {r['stopped_because']}; fleet exit "
                  f"{r['fleet_exit']['rc']}, csms exit {r['csms_exit']['rc']}", flush=True)
            if r["fleet_stderr"]:
                print(f"  fleet stderr: {r['fleet_stderr'][-400:]}")
            for why, k in r["connect_failed_reasons"].items():
                print(f"  connect_failed x{k}: {why}")
            for code, k in r["csms_refused"].items():
                print(f"  csms refused x{k}: {code}")
            for why, k in r["disconnect_reasons"].items():
                print(f"  disconnected x{k}: {why}")
            cs = r.get("csms_status") or {}
            if cs.get("tls_handshake_failures"):
                print(f"  csms TLS handshake failures: {cs['tls_handshake_failures']}")
            print(f"  handshakes {r['handshakes']}, TLS {r['tls_versions']}, ciphers {r['ciphers']}", flush=True)
    text, ratios = table(results, pki, n)
    print()
    print(text)
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; the machine is shared "
          f"(see 'everything else' and 'steal' above)")
    ok = all(r["time_to_all_s"] is not None and r["all_at_once"] for r in results.values())
    if args.json:
        doc = {
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "cpus": os.cpu_count(),
            "certificates": pki,
            "profiles": {str(p): r for p, r in results.items()},
            "ratios": ratios,
            "all_connected": ok,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
