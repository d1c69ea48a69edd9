"""Shaping fidelity: does each profile do on the wire what it promises? Prints figures, writes JSON.

For every profile (default: all realistic and slow-* profiles) on an EVSE -> gateway -> CPO path, with the
profile applied by labkit.shaping (userspace engine unless --engine says otherwise):

- ping EVSE -> CPO, at least 100 probes: median RTT against base RTT + the added RTT the profile promises
  (tolerance max(1 ms, 2 %)), and no probe below base minimum + the smallest added delay;
- iperf3 TCP goodput in each direction against the configured rate (pass: >= 90 %, profiles up to 100 Mbit/s);
- iperf3 UDP at half the configured rate: measured loss inside the 99 % binomial interval of the configured loss;
- the engine's own report (packets, drops, release lateness).

The path is a real lab: ``labkit up --name shp1 --backend netns`` (LABKIT_HOME=/tmp/labkit-shaping unless set),
everything over SSH through labkit.remote, ``labkit down`` at the end (``--keep`` leaves it). ``--fixture``
uses the three-namespace stand-in of tests/shaping/topo.py instead. Needs root, iperf3 and ping.

    python benchmarks/shaping_fidelity.py [--only vsat,4g] [--family slow] [--profiles-file F] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scipy.stats import binom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labkit import shaping  # noqa: E402
from labkit.profiles import Profile, load_profiles  # noqa: E402


def _topo_module():
    spec = importlib.util.spec_from_file_location("sh_topo", REPO / "tests" / "shaping" / "shaping_topo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sh_topo"] = mod
    spec.loader.exec_module(mod)
    return mod


topo_mod = _topo_module()
CPO = topo_mod.CPO_ADDR
EVSE = topo_mod.EVSE_ADDR
FRAME_PING = 98  # bytes on the wire of a default ping (84 IP + 14 Ethernet)
UNSHAPED_UDP_BPS = 10_000_000  # UDP rate for a direction without a rate limit


def ping_resolution(ms: float) -> float:
    """iputils ping prints 3 significant digits and truncates: 100-999 ms to 1 ms, 10-99.9 ms to 0.1 ms."""
    return 1.0 if ms >= 100 else (0.1 if ms >= 10 else 0.01 if ms >= 1 else 0.001)


class LabPath:
    """A lab brought up by ``labkit up`` (netns backend): commands over SSH through labkit.remote."""

    def __init__(self, name: str):
        from labkit.inventory import Inventory
        from labkit.labdir import LabDir
        from labkit.remote import Remote

        self.name = name
        self.labdir = LabDir(name)
        self.inventory = Inventory.load(self.labdir.inventory_file)
        self.remote = Remote(self.inventory)

    def exec(self, host: str, cmd: str, timeout: float = 120, check: bool = False):
        return self.remote.run(host, cmd, check=check, timeout=timeout)

    def start_iperf_server(self) -> None:
        self.remote.start("cpo", "iperf3-sh", "iperf3 -s -1 -p 5201")
        time.sleep(0.3)

    def stop_iperf_server(self) -> None:
        self.remote.stop("cpo", "iperf3-sh", timeout=15)

    def down(self) -> None:
        self.remote.close()


class FixturePath:
    """The three-namespace stand-in of tests/shaping/topo.py (before ``labkit up`` existed)."""

    def __init__(self, prefix: str):
        self.topo = topo_mod.Topo(prefix, Path(f"/tmp/labkit-shaping/{prefix}"), topo_mod.labkit_bin()).up()
        self.inventory = self.topo.inventory
        self.remote = topo_mod.LocalNetnsRemote(self.topo)
        self.srv = None

    def exec(self, host: str, cmd: str, timeout: float = 120, check: bool = False):
        return self.topo.exec(host, cmd, timeout=timeout, check=check)

    def start_iperf_server(self) -> None:
        self.srv = subprocess.Popen(["ip", "netns", "exec", self.topo.ns["cpo"], "iperf3", "-s", "-1", "-p", "5201"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def stop_iperf_server(self) -> None:
        try:
            self.srv.wait(15)
        except subprocess.TimeoutExpired:
            self.srv.kill()
            self.srv.wait(5)

    def down(self) -> None:
        self.topo.down()


def ping(topo, count: int, interval: float, timeout_s: float) -> dict:
    r = topo.exec("evse1", f"ping -n -c {count} -i {interval:g} -W {max(2, math.ceil(timeout_s))} {CPO}",
                  timeout=count * interval + timeout_s + 30, check=False)
    rtts = [float(x) for x in re.findall(r"time=([0-9.]+) ms", r.stdout)]
    return {"sent": count, "received": len(rtts), "rtts": rtts,
            "median": statistics.median(rtts) if rtts else None, "min": min(rtts) if rtts else None,
            "max": max(rtts) if rtts else None}


def iperf(topo, *, reverse: bool, udp: bool, rate_bps: int | None, duration: int, omit: int,
          length: int | None = None) -> dict:
    args = [f"iperf3 -c {CPO} -J -t {duration} -O {omit} --connect-timeout 10000"]
    if reverse:
        args.append("-R")
    if udp:
        args.append(f"-u -b {int(rate_bps)} -w 8M")
        if length:
            args.append(f"-l {length}")
    for attempt in range(4):
        # a fresh one-off server per test: a server left in a bad state by a slow link cannot spoil the next
        topo.start_iperf_server()
        try:
            r = topo.exec("evse1", " ".join(args), timeout=duration + omit + 180, check=False)
        finally:
            topo.stop_iperf_server()
        try:
            data = json.loads(r.stdout)
        except json.JSONDecodeError:
            data = {"error": (r.stderr or r.stdout)[-300:]}
        if "error" in data and attempt < 3:
            time.sleep(2)
            continue
        break
    if "error" in data:
        return {"error": data["error"]}
    end = data["end"]
    if udp:
        s = end.get("sum_received") or end["sum"]
        return {"bps": s.get("bits_per_second"), "lost": s.get("lost_packets"), "packets": s.get("packets"),
                "lost_pct": s.get("lost_percent"), "jitter_ms": s.get("jitter_ms")}
    return {"bps": end["sum_received"]["bits_per_second"], "retransmits": end["sum_sent"].get("retransmits")}


def udp_rcvbuf_errors(topo, host: str) -> int:
    """The host's UDP receive-buffer drop counter (/proc/net/snmp, Udp: RcvbufErrors)."""
    r = topo.exec(host, "cat /proc/net/snmp", timeout=30)
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("Udp:")]
    if len(rows) < 2:
        return 0
    return int(dict(zip(rows[0][1:], rows[1][1:], strict=False)).get("RcvbufErrors", 0))


def tcp_plan(p: Profile, rate: int) -> tuple[int, int]:
    """(duration, omit) seconds: long enough for slow start to end and for enough packets at low rates."""
    rtt_s = (p.added_rtt_ms + 1) / 1000.0
    omit = int(min(8, max(2, math.ceil(10 * rtt_s))))
    duration = (20 if rtt_s >= 0.2 else 10) if rate >= 500_000 else 30
    return duration, omit


def binom_interval(n: int, p: float, conf: float = 0.99) -> tuple[int, int]:
    if p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    lo = int(binom.ppf((1 - conf) / 2, n, p))
    hi = int(binom.ppf(1 - (1 - conf) / 2, n, p))
    return lo, hi


def measure(topo, remote, p: Profile, *, engine: str, base: dict, quick: bool, max_rate_tcp: int) -> dict:
    res: dict = {"profile": p.name, "family": p.family, "added_rtt_ms": p.added_rtt_ms,
                 "min_added_rtt_ms": p.min_added_rtt_ms}
    t0 = time.time()
    state = shaping.apply(remote, topo.inventory, p, engine=engine, seed=1)
    res["engine"] = state["engine"]
    res["apply_s"] = round(time.time() - t0, 2)
    # --- ping
    bottleneck = p.bottleneck_bps or 10**10
    interval = max(0.05, 4 * FRAME_PING * 8 / bottleneck)
    # enough probes that the median's own sampling error (jitter in both directions) stays well inside the
    # tolerance: 120 without jitter, 600 with it
    jittered = p.uplink.jitter_ms or p.downlink.jitter_ms
    count = 60 if quick else (600 if jittered else 120)
    pr = ping(topo, count, interval, timeout_s=p.added_rtt_ms / 1000 * 3 + 2)
    expected = base["median"] + p.added_rtt_ms
    tol = max(1.0, 0.02 * expected)
    floor = base["min"] + p.min_added_rtt_ms
    res["ping"] = {"n": pr["received"], "sent": pr["sent"], "median_ms": pr["median"], "min_ms": pr["min"],
                   "max_ms": pr["max"], "expected_ms": round(expected, 3), "tolerance_ms": round(tol, 3),
                   "floor_ms": round(floor, 3),
                   "ok": bool(pr["median"] is not None and abs(pr["median"] - expected) <= tol
                              and pr["min"] + ping_resolution(pr["min"]) >= floor
                              and pr["received"] >= min(100, count))}
    # --- TCP goodput, both directions
    res["tcp"] = {}
    for dname, reverse in (("uplink", False), ("downlink", True)):
        d = p.direction(dname)
        if d.rate_bps is None:
            res["tcp"][dname] = {"rate_bps": None, "skipped": "no rate limit in this direction"}
            continue
        duration, omit = tcp_plan(p, d.rate_bps)
        if quick:
            duration = max(5, duration // 2)
        r = iperf(topo, reverse=reverse, udp=False, rate_bps=None, duration=duration, omit=omit)
        entry = {"rate_bps": d.rate_bps, "duration_s": duration, "omit_s": omit, **r}
        if "bps" in r:
            entry["ratio"] = round(r["bps"] / d.rate_bps, 4)
            entry["ok"] = entry["ratio"] >= 0.90 if d.rate_bps <= max_rate_tcp else None
        res["tcp"][dname] = entry
    # --- UDP loss, both directions, at half the rate
    res["udp"] = {}
    for dname, reverse in (("uplink", False), ("downlink", True)):
        d = p.direction(dname)
        rate = (d.rate_bps or UNSHAPED_UDP_BPS * 2) // 2
        length = 1000 if rate >= 1_000_000 else 200
        duration = 10 if not quick else 5
        if rate < 100_000:
            duration = 20
        receiver = "evse1" if reverse else "cpo"
        before = udp_rcvbuf_errors(topo, receiver)
        r = iperf(topo, reverse=reverse, udp=True, rate_bps=rate, duration=duration, omit=0, length=length)
        entry = {"rate_bps": rate, "loss_pct_configured": d.loss_pct, **r}
        if r.get("packets"):
            # datagrams the receiving host itself dropped (socket buffer full: a busy machine, not the link)
            entry["receiver_drops"] = max(0, udp_rcvbuf_errors(topo, receiver) - before)
            entry["link_lost"] = max(0, r["lost"] - entry["receiver_drops"])
            lo, hi = binom_interval(r["packets"], d.loss_pct / 100.0)
            entry["interval_99"] = [lo, hi]
            entry["ok"] = lo <= entry["link_lost"] <= hi
        res["udp"][dname] = entry
    st = shaping.show(remote, topo.inventory)
    res["engine_report"] = (st.get("engine_process") or {}).get("status")
    return res


def fmt_row(r: dict) -> str:
    pg = r["ping"]
    cells = [f"{r['profile']:16}", f"+{r['added_rtt_ms']:6g}",
             (f"{pg['median_ms']:9.3f}/{pg['expected_ms']:9.3f}±{pg['tolerance_ms']:.2f}"
              if pg["median_ms"] else "no ping"),
             f"min {pg['min_ms']:8.3f}>={pg['floor_ms']:8.3f}" if pg["min_ms"] else "",
             "OK " if pg["ok"] else "BAD"]
    for dname in ("uplink", "downlink"):
        t = r["tcp"][dname]
        if t.get("rate_bps") is None:
            cells.append(f"{dname[:4]} tcp    -   ")
        elif "ratio" in t:
            flag = {True: "ok", False: "LOW", None: "n/a"}[t["ok"]]
            cells.append(f"{dname[:4]} tcp {100 * t['ratio']:5.1f}% {flag}")
        else:
            cells.append(f"{dname[:4]} tcp ERR {t.get('error', '')[:60]}")
    for dname in ("uplink", "downlink"):
        u = r["udp"][dname]
        if "lost" in u:
            flag = "ok" if u["ok"] else "BAD"
            cells.append(f"{dname[:4]} udp {u['link_lost']}(+{u['receiver_drops']} rcv)/{u['packets']} "
                         f"in {u['interval_99']} {flag}")
        else:
            cells.append(f"{dname[:4]} udp ERR {u.get('error', '')[:60]}")
    return "  ".join(cells)


def markdown(path: Path) -> str:
    """A results JSON written by this script as a Markdown table (for docs and reports)."""
    data = json.loads(Path(path).read_text())
    out = [f"base RTT {data['base']['median']:.3f} ms (median), after --clear {data['after_clear']['median']:.3f} ms; "
           f"engine {data['engine']}", "",
           "| profile | added RTT | ping median / expected (tol.) | min / floor | n | TCP up | TCP down | "
           "UDP loss up | UDP loss down | lateness p50/p99/max | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]

    def tcp(t):
        if t.get("rate_bps") is None:
            return "—"
        if "ratio" not in t:
            return "error"
        mark = "" if t["ok"] is not False else " ✗"
        return f"{100 * t['ratio']:.1f} %{mark}"

    def udp(u):
        if "lost" not in u:
            return "error"
        lo, hi = u["interval_99"]
        rcv = f" (+{u['receiver_drops']} rcv)" if u.get("receiver_drops") else ""
        return f"{u.get('link_lost', u['lost'])}/{u['packets']}{rcv} ∈ [{lo}, {hi}]" + ("" if u["ok"] else " ✗")

    for r in data["results"]:
        if "error" in r:
            out.append(f"| {r['profile']} | error: {r['error']} |")
            continue
        pg = r["ping"]
        lat = []
        for q in (r.get("engine_report") or {}).get("queues", []):
            la = q["lateness"]
            if la.get("n"):
                lat.append(f"{la['median_ms']:.2f}/{la['p99_ms']:.2f}/{la['max_ms']:.1f}")
        out.append(f"| {r['profile']} | {r['added_rtt_ms']:g} ms | {pg['median_ms']:.2f} / {pg['expected_ms']:.2f} "
                   f"(±{pg['tolerance_ms']:.2f}){'' if pg['ok'] else ' ✗'} | "
                   f"{pg['min_ms']:.2f} / {pg['floor_ms']:.2f} | "
                   f"{pg['n']} | {tcp(r['tcp']['uplink'])} | {tcp(r['tcp']['downlink'])} | {udp(r['udp']['uplink'])} | "
                   f"{udp(r['udp']['downlink'])} | {'; '.join(lat) or '—'} | {r.get('load', 0):.1f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated profile names")
    ap.add_argument("--family", choices=["realistic", "slow", "custom"], help="only this family")
    ap.add_argument("--profiles-file", action="append", default=[], help="extra profiles file(s)")
    ap.add_argument("--engine", default="userspace", choices=["auto", "netem", "userspace"])
    ap.add_argument("--quick", action="store_true", help="fewer probes, shorter transfers (not for figures)")
    ap.add_argument("--max-rate-tcp", type=int, default=100_000_000, help="goodput criterion applies up to (bit/s)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--lab", default="shp1",
                    help="lab name for labkit up (LABKIT_HOME defaults to /tmp/labkit-shaping)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    ap.add_argument("--fixture", action="store_true", help="use the three-namespace fixture instead of labkit up")
    ap.add_argument("--markdown", metavar="JSON", help="print a results file as a Markdown table and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(Path(args.markdown)))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    ps = load_profiles(args.profiles_file)
    if args.only:
        names = [ps.get(n).name for n in args.only.split(",")]
    else:
        names = [n for n, p in ps.profiles.items()
                 if (args.family is None or p.family == args.family) and p.shaped]
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # clean up on kill
    if args.fixture:
        topo = FixturePath("sh1")
        where = "three-namespace fixture (ip netns exec, no SSH)"
    else:
        os.environ.setdefault("LABKIT_HOME", "/tmp/labkit-shaping")
        from labkit.cli import main as labkit_main
        from labkit.labdir import LabDir

        if not LabDir(args.lab).inventory_file.exists() and labkit_main(["up", "--name", args.lab,
                                                                          "--backend", "netns"]) != 0:
            print("labkit up failed", file=sys.stderr)
            return 1
        topo = LabPath(args.lab)
        for h in topo.inventory.hosts:  # endpoint TCP buffers for the longest, fastest profiles
            if h.role != "gateway":
                topo.exec(h.name, "sysctl -qw net.ipv4.tcp_rmem='4096 131072 33554432' "
                                  "net.ipv4.tcp_wmem='4096 16384 33554432'", check=True)
        where = f"lab {args.lab} (labkit up, netns backend, SSH through labkit.remote)"
    remote = topo.remote
    print(f"path: {where}", flush=True)
    results = []
    started = time.time()
    try:
        time.sleep(0.5)
        shaping.clear(remote, topo.inventory)
        base = ping(topo, 200, 0.01, 2)
        load = os.getloadavg()
        print(f"base RTT EVSE->CPO: median {base['median']:.3f} ms, min {base['min']:.3f} ms "
              f"({base['received']} probes); load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; engine {args.engine}",
              flush=True)
        for name in names:
            p = ps.get(name)
            try:
                r = measure(topo, remote, p, engine=args.engine, base=base, quick=args.quick,
                            max_rate_tcp=args.max_rate_tcp)
            except Exception as exc:  # keep going: one profile's failure is a figure too
                r = {"profile": name, "error": f"{type(exc).__name__}: {exc}"}
                print(f"{name:16} ERROR {r['error']}", flush=True)
                results.append(r)
                continue
            r["load"] = os.getloadavg()[0]
            results.append(r)
            print(fmt_row(r), f" load {r['load']:.2f}", flush=True)
        cleared = shaping.clear(remote, topo.inventory)
        after = ping(topo, 100, 0.01, 2)
        print(f"after --clear: median {after['median']:.3f} ms (base {base['median']:.3f} ms), cleared="
              f"{cleared['cleared']}", flush=True)
    finally:
        try:
            shaping.clear(remote, topo.inventory)
        except Exception:
            pass
        topo.down()
        if not args.fixture and not args.keep:
            from labkit.cli import main as labkit_main

            labkit_main(["down", "--lab", args.lab])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"shaping_fidelity-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}.json"
    path.write_text(json.dumps({"base": {k: v for k, v in base.items() if k != "rtts"},
                                "after_clear": {k: v for k, v in after.items() if k != "rtts"},
                                "engine": args.engine, "results": results}, indent=1, default=str))
    ping_ok = sum(1 for r in results if r.get("ping", {}).get("ok"))
    tcp = [t for r in results for t in r.get("tcp", {}).values() if t.get("ok") is not None]
    udp = [u for r in results for u in r.get("udp", {}).values() if "ok" in u]
    print(f"summary: ping {ping_ok}/{len(results)} ok; tcp >= 90 %: {sum(t['ok'] for t in tcp)}/{len(tcp)}; "
          f"udp loss in interval: {sum(u['ok'] for u in udp)}/{len(udp)}; written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
