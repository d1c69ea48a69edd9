"""SYNTHETIC results directories for the analysis tests and benchmarks (not measurements!).

``make_run(root, ...)`` writes a directory in the format of docs/results.md, as `labkit bench` would, but
with made-up numbers from a small closed-loop simulation: each station sends its OCPP calls one after the
other (plus a Heartbeat loop); each call crosses an uplink FIFO at the profile's rate and delay, a CSMS
with a finite service rate, and a downlink FIFO back, so queueing, CPU saturation at N=50 and the RTT a
profile adds all show up with realistic shapes. It also writes lost pings, CallErrors, timeouts, an
incomplete cell with a torn CSV line, an outage with reconnection events, and monitor samples; in format
/2 (the default) also labkit's echo probe (echo.csv), message ids, connection numbers and transaction keys,
with transaction faults on request (``tx_faults``: a duplicate delivery, a lost message), and the event
loop, validation mode and versions the simulators report. ``fmt="labkit-results/1"`` writes the old format.
``security`` sweeps OCPP security variants (one cell per link profile x fleet x variant, ids ending in the
variant's label, an outage in each variant's cell of the outage profile) and, like ``handshakes``, writes
every connection's ``handshake`` event (TCP, TLS and WebSocket set-up times from the profile's round trip:
TLS 1.2 two round trips, TLS 1.3 and a resumed session one) and each station's ``booted`` event.

Every directory it writes says so: run ids and labels carry ``synthetic``, and manifest.json has
``"synthetic": true``. Nothing here may be presented as a measurement.

    python tests/analysis/synthetic.py OUT_DIR [--plan tests|thesis-reduced]
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from labkit import resultsformat as RF

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class SynthProfile:
    """Made-up profile values (one-way delays; rates in bit/s, None = not limited)."""

    up_delay_ms: float = 0.0
    down_delay_ms: float = 0.0
    up_rate_bps: float | None = None
    down_rate_bps: float | None = None
    jitter_ms: float = 0.0
    loss_pct: float = 0.0  # per direction

    @property
    def added_rtt_ms(self) -> float:
        return self.up_delay_ms + self.down_delay_ms


PROFILES: dict[str, SynthProfile] = {
    "none": SynthProfile(),
    "4g": SynthProfile(25, 25, 10e6, 40e6, jitter_ms=3),
    "3g": SynthProfile(50, 50, 1.5e6, 4e6, jitter_ms=6),
    "gprs": SynthProfile(150, 150, 40e3, 80e3, jitter_ms=20, loss_pct=0.5),
    "vsat": SynthProfile(300, 300, 2e6, 10e6, jitter_ms=8, loss_pct=0.3),
    # the dissertation's slow.sh settings: one way (EVSE->CPO) only, tc "kbps" = kilobytes per second
    "slow-amps": SynthProfile(250, 0, 112e3, None),
    "slow-gprs": SynthProfile(200, 0, 400e3, None),
    "slow-3g": SynthProfile(200, 0, 8e6, None),
    "slow-4g": SynthProfile(100, 0, 80e6, None),
    "slow-vsat": SynthProfile(500, 0, 40e6, None),
}

PLANS = {
    "tests": {"profiles": ["none", "4g", "vsat", "slow-gprs", "slow-vsat"],
              "fleets": [(1, 1), (10, 1), (1, 25), (2, 25)], "meter_values": 30, "ping_count": 40},
    "thesis-reduced": {"profiles": ["none", "slow-amps", "slow-gprs", "slow-3g", "slow-4g", "slow-vsat"],
                       "fleets": [(1, 1), (10, 1), (5, 5), (10, 5)], "meter_values": 100, "ping_count": 100},
}

REQ_BYTES = {"BootNotification": 190, "StatusNotification": 140, "Authorize": 70, "StartTransaction": 160,
             "MeterValues": 270, "StopTransaction": 150, "Heartbeat": 57, "DataTransfer": 120}
RESP_BYTES = {"BootNotification": 110, "StatusNotification": 20, "Authorize": 90, "StartTransaction": 120,
              "MeterValues": 20, "StopTransaction": 60, "Heartbeat": 70, "DataTransfer": 90}
CSMS_SVC_MS = {"BootNotification": 2.2, "StatusNotification": 1.0, "Authorize": 1.3, "StartTransaction": 1.8,
               "MeterValues": 1.4, "StopTransaction": 1.6, "Heartbeat": 0.8, "DataTransfer": 0.5}
OUTAGE = (2.0, 6.0)  # start and duration (s) of the outage, from the start of the OCPP phase
OVERHEAD = 40  # WebSocket + TCP/IP header bytes per frame
#: TLS handshake bytes (out, in) by (security profile, TLS version, resumed), as docs/simulators.md measured them
TLS_BYTES = {(2, "1.2", False): (239, 936), (2, "1.2", True): (568, 141), (2, "1.3", False): (305, 850),
             (2, "1.3", True): (597, 241), (3, "1.2", False): (1193, 1849), (3, "1.2", True): (853, 141),
             (3, "1.3", False): (1298, 1328), (3, "1.3", True): (1024, 241)}
TX = RF.TX_ACTIONS["1.6"]  # the simulated actions are 1.6's
V1 = "labkit-results/1"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


# -- the OCPP closed-loop simulation ---------------------------------------------------------------------
class _Fifo:
    def __init__(self, rate_bps: float | None):
        self.rate = rate_bps
        self.free = 0.0

    def through(self, t: float, nbytes: int) -> float:
        tx = 0.0 if not self.rate else (nbytes + OVERHEAD) * 8 / self.rate
        start = max(t, self.free)
        self.free = start + tx
        return self.free


def _make_sim(prof, hosts, sph, meter_values, t_start, rng, hb_s=2.0, outage=None):
    n = len(hosts) * sph
    up, down = _Fifo(prof.up_rate_bps), _Fifo(prof.down_rate_bps)
    state = {"csms_free": 0.0, "seq": 0}
    svc_scale = 1.0 + n / 40.0
    p_loss = 1 - (1 - prof.loss_pct / 100) ** 2
    rto_s = max(0.2, 2 * (prof.added_rtt_ms + 1) / 1000)
    stations = [(h, f"{h}-cs{j + 1:03d}") for h in hosts for j in range(sph)]
    script = (["BootNotification", "StatusNotification", "Authorize", "StartTransaction", "DataTransfer"]
              + ["MeterValues"] * meter_values + ["StopTransaction", "StatusNotification"])
    calls, events, csms_rows = [], [], []
    busy: dict[tuple[str, int], float] = {}
    heap: list = []

    def push(t, kind, data):
        state["seq"] += 1
        heapq.heappush(heap, (t, state["seq"], kind, data))

    def jitter() -> float:
        return abs(rng.normal(0, prof.jitter_ms)) / 1000 if prof.jitter_ms else 0.0

    def add_busy(host: str, t: float, secs: float) -> None:
        key = (host, int(t - t_start))
        busy[key] = busy.get(key, 0.0) + secs

    def one_call(i: int, action: str, t: float) -> tuple[float, float]:
        """Network + CSMS; returns (time the response is parsed, CSMS handling ms)."""
        h, _ = stations[i]
        arrive = up.through(t, REQ_BYTES[action]) + prof.up_delay_ms / 1000 + jitter() + 30e-6
        svc = CSMS_SVC_MS[action] / 1000 * svc_scale * rng.gamma(4, 0.25)
        start = max(arrive, state["csms_free"])
        state["csms_free"] = start + svc
        add_busy("cpo", start, svc)
        handle_ms = (state["csms_free"] - arrive) * 1000
        back = down.through(state["csms_free"], RESP_BYTES[action]) + prof.down_delay_ms / 1000 + jitter() + 30e-6
        fleet = 0.0006 * (1 + n / 25) * rng.lognormal(0, 0.35)
        add_busy(h, back, fleet)
        done = back + fleet
        if rng.random() < p_loss:
            done += rto_s
        return done, handle_ms

    return stations, script, calls, events, csms_rows, busy, heap, push, one_call


def security_label(sec: dict) -> str:
    """A security variant's label as labkit bench names it: sp0, sp1, sp3-tls13, sp2-tls12-nores."""
    if sec["profile"] < 2:
        return f"sp{sec['profile']}"
    return f"sp{sec['profile']}-tls{sec['tls_version'].replace('.', '')}" + ("" if sec.get("resumption") else "-nores")


def handshake_detail(prof: SynthProfile, sec: dict | None, resumed: bool,
                     rng: np.random.Generator) -> tuple[str, float]:
    """A made-up ``handshake`` event detail and the set-up's length (s): TCP one round trip, TLS 1.2 two
    (one when resumed), TLS 1.3 one, the WebSocket upgrade one, plus a little CPU and the TLS bytes'
    serialisation at the link's rates."""
    def rtt() -> float:
        return prof.added_rtt_ms + 0.1 + abs(rng.normal(0, prof.jitter_ms))

    tcp = rtt()
    ws = rtt() + 0.4
    if sec is None or sec["profile"] < 2:
        return f"tcp_ms={tcp:.3f} ws_ms={ws:.3f} tls=none", (tcp + ws) / 1000
    v = sec["tls_version"]
    out_b, in_b = TLS_BYTES[(sec["profile"], v, resumed)]
    rounds = 2 if v == "1.2" and not resumed else 1
    ser = sum(b * 8 / r * 1000 for b, r in ((out_b, prof.up_rate_bps), (in_b, prof.down_rate_bps)) if r)
    tls = sum(rtt() for _ in range(rounds)) + (0.3 if resumed else 1.5) + ser
    cipher = "TLS_AES_256_GCM_SHA384" if v == "1.3" else "ECDHE-ECDSA-AES128-GCM-SHA256"
    return (f"tcp_ms={tcp:.3f} tls_ms={tls:.3f} ws_ms={ws:.3f} tls=TLSv{v} cipher={cipher} resumed={int(resumed)} "
            f"tls_out={out_b} tls_in={in_b}"), (tcp + tls + ws) / 1000


def make_cell_ocpp(prof: SynthProfile, hosts: list[str], sph: int, meter_values: int, t_start: float,
                   rng: np.random.Generator, *, hb_s: float = 2.0, outage: tuple[float, float] | None = None,
                   timeout_p: float = 0.0, duplicates: int = 0, losses: int = 0, handshakes: bool = False,
                   security: dict | None = None):
    """Simulate one cell's OCPP phase. Returns (calls, events, csms, busy, t_end); rows are tuples.

    calls: (host, station, action, t, rtt_ms, outcome, error, attempt, queued_ms, message_id, connection,
    tx_key); events: (host, station, t, event, detail, downtime_ms, connection); csms: (t, station, action,
    handle_ms, outcome, error, message_id, connection, tx_key). As the fleet does, a transaction message
    whose call timed out or lost its connection is sent again (same tx_key, new message id, attempt + 1).
    ``duplicates``: that many MeterValues of the first station lose their answer (the CSMS handled them)
    and are sent again: the CSMS handles them twice. ``losses``: that many MeterValues of the first station
    time out unhandled and are given up (``tx_dropped``). ``handshakes``: a ``handshake`` event after every
    ``connected``/``reconnected`` (for ``security``, a dict as in cell.json, with TLS for profiles 2 and 3;
    a reconnection resumes its TLS session when ``resumption``) and a ``booted`` event after each station's
    first BootNotification; their made-up times come from a random stream of their own."""
    stations, script, calls, events, csms_rows, busy, heap, push, one_call = _make_sim(
        prof, hosts, sph, meter_values, t_start, rng, hb_s, outage)
    offline_until: dict[int, float] = {}
    conn = dict.fromkeys(range(len(stations)), 1)
    mids = {"n": 0}
    faults = {"dup": duplicates, "loss": losses}

    def mid(sid: str) -> str:
        mids["n"] += 1
        return f"{sid}-m{mids['n']:06d}"

    def key(sid: str, action: str, payload: dict) -> str:
        return RF.tx_key(sid, action, json.dumps(payload, separators=(",", ":"))) if action in TX else ""

    hrng = np.random.default_rng(int(t_start * 1000) % 2**32) if handshakes else None
    connect_start: dict[int, float] = {}
    booted: set[int] = set()

    def handshake(i: int, t: float, resumed: bool) -> float:
        """Write the handshake event of station i's connection made at t; returns when it began."""
        h, sid = stations[i]
        detail, took = handshake_detail(prof, security, resumed, hrng)
        events.append((h, sid, t + 1e-4, "handshake", detail, "", conn[i]))
        connect_start[i] = t - took
        return t - took

    for i, (h, sid) in enumerate(stations):
        t = t_start + rng.uniform(0, 1.0)
        began = handshake(i, t, False) if handshakes else t - 0.01
        events.append((h, sid, min(began, t - 0.01), "connecting", "", "", 1))
        events.append((h, sid, t, "connected", "", "", 1))
        push(t, "send", (i, 0, 1, None))
        push(t + hb_s * rng.uniform(0.5, 1.0), "hb", (i,))
    done_stations = 0
    t_end = t_start
    while heap:
        t, _, kind, data = heapq.heappop(heap)
        if kind == "hb":
            (i,) = data
            if done_stations >= len(stations):
                continue
            if not (outage and outage[0] - 0.05 <= t < offline_until.get(i, outage[1] + 5)):
                h, sid = stations[i]
                done, handle = one_call(i, "Heartbeat", t)
                m = mid(sid)
                calls.append((h, sid, "Heartbeat", t, (done - t) * 1000, "ok", "", 1, None, m, conn[i], ""))
                csms_rows.append((t, sid, "Heartbeat", handle, "ok", "", m, conn[i], ""))
            push(t + hb_s, "hb", (i,))
            continue
        if kind == "queued":
            i, created = data
            h, sid = stations[i]
            done, handle = one_call(i, "MeterValues", t)
            m, k = mid(sid), key(sid, "MeterValues", {"queued": round(created, 3)})
            calls.append((h, sid, "MeterValues", t, (done - t) * 1000, "ok", "", 1, (t - created) * 1000, m,
                          conn[i], k))
            csms_rows.append((t, sid, "MeterValues", handle, "ok", "", m, conn[i], k))
            continue
        i, step, attempt, queued = data
        h, sid = stations[i]
        if step >= len(script):
            done_stations += 1
            t_end = max(t_end, t)
            continue
        action = script[step]
        k = key(sid, action, {"step": step})
        m = mid(sid)
        if outage and outage[0] - 0.05 <= t < outage[1] and attempt == 1:
            detect = outage[0] + rng.uniform(1.0, 3.0)
            back = outage[1] + rng.uniform(0.5, 4.0)
            offline_until[i] = back
            calls.append((h, sid, action, t, None, "connection_lost", "ConnectionClosedError", attempt, None, m,
                          conn[i], k))
            events.append((h, sid, detect, "disconnected", "keepalive ping timeout", "", conn[i]))
            conn[i] += 1
            events.append((h, sid, back, "reconnected", "", round((back - outage[0]) * 1000, 1), conn[i]))
            if handshakes:
                handshake(i, back, bool(security and security["profile"] >= 2 and security.get("resumption")))
            n_q = int(min(50, (back - t) / 0.1))
            events.append((h, sid, back + 0.001, "queue_flushed", str(n_q), "", conn[i]))
            push(back, "send", (i, step, attempt + 1, (back - t) * 1000))
            for q in range(n_q):
                push(back + 0.002 * (q + 1), "queued", (i, t + 0.1 * (q + 1)))
            continue
        fault = i == 0 and attempt == 1 and action == "MeterValues" and step >= 7
        if fault and faults["dup"]:
            # the answer is lost: the CSMS handled it, the station times out and sends it again
            faults["dup"] -= 1
            done, handle = one_call(i, action, t)
            calls.append((h, sid, action, t, None, "timeout", "", attempt, queued, m, conn[i], k))
            csms_rows.append((t, sid, action, handle, "ok", "", m, conn[i], k))
            push(done + 1.0, "send", (i, step, attempt + 1, None))
            continue
        if fault and faults["loss"] and step >= 9:
            # the request never reaches the CSMS; the station gives it up
            faults["loss"] -= 1
            calls.append((h, sid, action, t, None, "timeout", "", attempt, queued, m, conn[i], k))
            events.append((h, sid, t + 1.0, "tx_dropped", f"{action} after 1 timeouts", "", conn[i]))
            push(t + 1.0, "send", (i, step + 1, 1, None))
            continue
        if rng.random() < timeout_p:
            calls.append((h, sid, action, t, None, "timeout", "TimeoutError", attempt, queued, m, conn[i], k))
            # a transaction message is sent again (OCPP's TransactionMessageAttempts); other calls are not
            push(t + 30.0, "send", (i, step, attempt + 1, None) if k else (i, step + 1, 1, None))
            continue
        done, handle = one_call(i, action, t)
        if action == "DataTransfer":
            calls.append((h, sid, action, t, (done - t) * 1000, "call_error", "NotImplemented", attempt, queued, m,
                          conn[i], k))
            csms_rows.append((t, sid, action, handle, "call_error", "NotImplemented", m, conn[i], k))
        else:
            calls.append((h, sid, action, t, (done - t) * 1000, "ok", "", attempt, queued, m, conn[i], k))
            csms_rows.append((t, sid, action, handle, "ok", "", m, conn[i], k))
            if handshakes and action == "BootNotification" and i not in booted:
                booted.add(i)
                events.append((h, sid, done, "booted", f"boot_ms={(done - t) * 1000:.3f} "
                               f"since_connect_ms={(done - connect_start[i]) * 1000:.3f}", "", conn[i]))
        think = 0.1 if action == "MeterValues" else 0.05
        push(done + think, "send", (i, step + 1, 1, None))
    return calls, events, csms_rows, busy, t_end


# -- files -----------------------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _fmt(v, nd=3):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return v


def _iperf_json(proto: str, rate_bps: float | None, rtt_ms: float, loss_pct: float, duration: int,
                rng: np.random.Generator, t: float, omit: int = 0) -> dict:
    cap = rate_bps if rate_bps else 2.4e9  # the unshaped netns path through the userspace engine
    eff = 0.955 if rate_bps else 1.0
    if proto == "tcp":
        ramp = max(1, math.ceil(rtt_ms / 150))  # slow start over long RTTs
        intervals = []
        for k in range(duration):
            frac = min(1.0, (k + 1) / (ramp + 1)) if k < ramp else 1.0
            bps = cap * eff * frac * rng.normal(1, 0.01)
            intervals.append({"sum": {"start": float(k), "end": float(k + 1), "seconds": 1.0,
                                      "bytes": int(bps / 8), "bits_per_second": bps, "omitted": k < omit,
                                      "sender": True}})
        mean = float(np.mean([i["sum"]["bits_per_second"] for i in intervals if not i["sum"]["omitted"]]))
        return {"start": {"timestamp": {"timesecs": int(t)}, "test_start": {"protocol": "TCP", "duration": duration},
                          "target_bitrate": 0},
                "intervals": intervals,
                "end": {"sum_sent": {"seconds": float(duration), "bits_per_second": mean * 1.01,
                                     "retransmits": int(rng.integers(0, 20)), "sender": True},
                        "sum_received": {"seconds": float(duration), "bits_per_second": mean, "sender": True}}}
    target = rate_bps or 100e6
    lost = loss_pct * rng.normal(1, 0.1) if loss_pct else 0.0
    intervals = [{"sum": {"start": float(k), "end": float(k + 1), "seconds": 1.0,
                          "bits_per_second": target * (1 - lost / 100), "omitted": False}} for k in range(duration)]
    pk = int(target * duration / 8 / 1470)
    return {"start": {"timestamp": {"timesecs": int(t)}, "test_start": {"protocol": "UDP", "duration": duration},
                      "target_bitrate": int(target)},
            "intervals": intervals,
            "end": {"sum": {"seconds": float(duration), "bits_per_second": target * (1 - lost / 100),
                            "jitter_ms": abs(rng.normal(0.05 + (3 if rate_bps and rate_bps < 1e6 else 0), 0.01)),
                            "lost_packets": int(pk * lost / 100), "packets": pk, "lost_percent": lost},
                    "sum_sent": {"seconds": float(duration), "bits_per_second": target}}}


def make_run(root: Path, *, plan: str = "tests", seed: int = 7, backend: str = "netns",
             engine: str = "userspace", ocpp_version: str = "1.6", label: str = "synthetic",
             incomplete: bool = True, outage: bool = True, base_rtt_ms: float = 0.08,
             profiles: list[str] | None = None, fleets: list[tuple[int, int]] | None = None,
             meter_values: int | None = None, baselines: str = "first", t0: float = T0,
             fmt: str = RF.FORMAT, tx_faults: dict[str, tuple[int, int]] | None = None,
             event_loop: str = "uvloop", validation: str = "fast", versions: dict[str, str] | None = None,
             security: list[dict] | None = None, handshakes: bool | None = None) -> Path:
    """Write a SYNTHETIC results directory under ``root``, laid out as labkit.bench.runner writes one
    (baselines once per profile by default, float phase times, merged monitor.csv, ...); returns its path.

    ``fmt``: the format to write (``labkit-results/1``: no echo.csv, no message ids, connections or
    transaction keys, no event loop). ``tx_faults``: cell id -> (duplicate deliveries, lost messages) of
    the cell's first station. ``event_loop``, ``validation``, ``versions``: what the simulators report.
    ``security``: the OCPP security variants to sweep, each ``{"profile": 0-3, "tls_version": "1.2"|"1.3"|None,
    "resumption": bool|None}`` (None: no sweep, cells without ``security`` as before); ``handshakes``:
    write handshake and booted events (default: when ``security`` is given)."""
    cfg = dict(PLANS[plan])
    v1 = fmt == V1
    tx_faults = tx_faults or {}
    vers = {"python": "3.11.9", "labkit": "0.1.0", "ocpp": "2.1.0", "websockets": "15.0.1",
            "uvloop": "0.21.0" if event_loop == "uvloop" else "", **(versions or {})}
    # as labkit.sim.settings.provenance says it: uvloop's version, "" for asyncio or a missing uvloop
    loop_version = vers["uvloop"] if event_loop == "uvloop" else ""
    profiles = profiles or cfg["profiles"]
    fleets = fleets or cfg["fleets"]
    mv = meter_values if meter_values is not None else cfg["meter_values"]
    ping_count = cfg["ping_count"]
    rng = np.random.default_rng(seed)
    run_id = datetime.fromtimestamp(t0, UTC).strftime("%Y%m%dT%H%M%SZ") + f"-lab1-{label}"
    run_dir = Path(root) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cells = []
    t = t0
    secs: list[dict | None] = [None]
    if security:
        secs = [{**sec, "label": security_label(sec)} for sec in security]
    handshakes = bool(security) if handshakes is None else handshakes

    def suffix(sec: dict | None) -> str:
        return f"__{sec['label']}" if sec else ""

    outage_cell = None
    if outage:
        outage_cell = next((f"{p}__n{h}x{s}__r1" for p in profiles if p in ("4g", "vsat", "slow-4g")
                            for h, s in fleets if h * s >= 10), None)
    outage_cells = {outage_cell + suffix(sec) for sec in secs} if outage_cell else set()
    incomplete_cell = (f"{profiles[-1]}__n{fleets[-1][0]}x{fleets[-1][1]}__r1" + suffix(secs[-1])
                       if incomplete else None)
    max_hosts = max(h for h, _ in fleets)
    for pname in profiles:
        prof = PROFILES[pname]
        for i_fleet, (sec, (hosts_n, sph)) in enumerate((sec, f) for sec in secs for f in fleets):
            cid = f"{pname}__n{hosts_n}x{sph}__r1" + suffix(sec)
            cdir = run_dir / "cells" / cid
            cdir.mkdir(parents=True)
            hosts = [f"evse{k + 1}" for k in range(hosts_n)]
            with_baselines = baselines == "every" or (baselines == "first" and i_fleet == 0)
            c_start = t
            phases = {"shape": {"started": t, "status": "complete", "ended": t + 0.8}}
            t += 1.0
            if with_baselines:
                _write_ping(cdir, prof, pname, ping_count, t, base_rtt_ms, engine, rng)
                if not v1:
                    _write_echo(cdir, prof, ping_count, t, base_rtt_ms, engine,
                                np.random.default_rng([seed, len(cells)]))
                    phases["echo"] = {"started": t, "status": "complete", "ended": t + ping_count * 0.2}
                phases["ping"] = {"started": t, "status": "complete", "ended": t + ping_count * 0.2}
                t += ping_count * 0.2 + 0.5
                (cdir / "iperf").mkdir()
                phases["iperf"] = {"started": t, "status": "complete", "ended": t + 22}
                for proto in ("tcp", "udp"):
                    for d, rate in (("up", prof.up_rate_bps), ("down", prof.down_rate_bps)):
                        data = _iperf_json(proto, rate, base_rtt_ms + prof.added_rtt_ms, prof.loss_pct,
                                           7 if proto == "tcp" else 5, rng, t, omit=2 if proto == "tcp" else 0)
                        (cdir / "iperf" / f"{proto}-{d}.json").write_text(json.dumps(data, indent=1))
                t += 22
            # OCPP
            o = (t + OUTAGE[0], t + OUTAGE[0] + OUTAGE[1]) if cid in outage_cells else None
            timeout_p = 0.004 if pname in ("vsat", "gprs", "slow-vsat") else 0.0
            dups, losses = tx_faults.get(cid, (0, 0))
            calls, events, csms_rows, busy, t_end = make_cell_ocpp(prof, hosts, sph, mv, t, rng, outage=o,
                                                                   timeout_p=timeout_p, duplicates=dups,
                                                                   losses=losses, handshakes=handshakes,
                                                                   security=sec)
            phases["ocpp"] = {"started": t, "status": "complete", "ended": t_end + 0.5}
            _write_ocpp(cdir, run_id, hosts, calls, events, csms_rows, ocpp_version, t0, fmt)
            _write_monitor(cdir, hosts, sph, busy, t, t_end, engine, prof, rng)
            t = t_end + 2.0
            status = "complete"
            if cid == incomplete_cell:
                status = "failed"
                phases["ocpp"].update(status="failed", error=f"{hosts[-1]}: the fleet exited before finishing: "
                                                             "Killed")
                f = cdir / "ocpp" / f"calls-{hosts[-1]}.csv"
                data = f.read_bytes()
                f.write_bytes(data[: len(data) * 2 // 3])  # torn mid-line, as a killed writer leaves it
            cell = {
                "id": cid, "profile": pname, "evse_hosts": hosts_n, "evse_host_names": hosts,
                "stations_per_host": sph, "repeat": 1, "baselines": with_baselines, "status": status,
                "started": iso(c_start), "ended": iso(t), "phases": phases,
                "profile_spec": {"name": pname, "synthetic": True},
                "expected": {"added_rtt_ms": prof.added_rtt_ms, "min_added_rtt_ms": prof.added_rtt_ms,
                             "uplink_rate_bps": prof.up_rate_bps, "downlink_rate_bps": prof.down_rate_bps,
                             "uplink_loss_pct": prof.loss_pct, "downlink_loss_pct": prof.loss_pct},
                "applied": {"engine": engine, "synthetic": True}, "engine": engine,
                "ocpp": {"started": phases["ocpp"]["started"], "ended": phases["ocpp"]["ended"]},
            }
            if not v1:
                run_facts = {"event_loop": event_loop, "event_loop_version": loop_version,
                             "validation": validation, "versions": vers, "finished": True}
                cell["ocpp"]["csms"] = {"role": "csms", "phase": "stopped", **run_facts}
                cell["ocpp"]["fleets"] = {h: {"role": "fleet", "host": h, "phase": "done", **run_facts}
                                          for h in hosts}
            if o:
                cell["outage"] = {"start_s": OUTAGE[0], "duration_s": OUTAGE[1], "t_wall_start": o[0],
                                  "t_wall_end": o[1], "method": "synthetic"}
            if sec:
                cell["security"] = sec
            (cdir / "cell.json").write_text(json.dumps(cell, indent=2))
            cells.append({"id": cid, "dir": f"cells/{cid}", "profile": pname, "evse_hosts": hosts_n,
                          "stations_per_host": sph, "repeat": 1, "status": status,
                          **({"security": sec} if sec else {})})
    manifest = {
        "format": fmt, "run_id": run_id, "synthetic": True,
        "status": "incomplete" if incomplete else "complete",
        "reason": f"cell {incomplete_cell}: the fleet on evse{fleets[-1][0]} exited" if incomplete else "",
        "pid": 0, "command": ["labkit", "bench", "--synthetic"], "started": iso(t0), "ended": iso(t),
        "seed": seed, "labkit": "0.1.0", "lab": {"spec": {"name": "lab1", "evse": max_hosts}, "hosts": {}},
        "backend": backend, "backend_details": {"synthetic": True}, "engine": engine,
        "plan": {"profiles": profiles, "evse_counts": sorted({h for h, _ in fleets}),
                 "stations_per_host": fleets[0][1], "repeats": 1, "scenario": "thesis-2021", "ocpp": ocpp_version,
                 "seed": seed, "ping_count": ping_count, "ping_interval_s": 0.2, "iperf_seconds": 5.0,
                 "iperf_omit_s": 2.0, "udp_seconds": 5.0, "meter_values": mv, "meter_interval_s": 0.1,
                 "heartbeat_s": 2.0, "baselines": baselines, "ocpp_phase": True,
                 "outage": {"duration_s": OUTAGE[1], "at_s": OUTAGE[0]} if outage_cell else None,
                 "synthetic_fleets": [list(f) for f in fleets],
                 **({"auth": "basic" if any(s["profile"] in (1, 2) for s in security) else "none",
                     "security_profiles": sorted({s["profile"] for s in security})} if security else {})},
        "hosts": {name: {"role": role, "kernel": "synthetic", "cpus": "2",
                         **{k: vers[k] for k in ("python", "labkit", "ocpp", "websockets")},
                         **({} if v1 else {"uvloop": vers["uvloop"] or "missing", "event_loop": event_loop})}
                  for name, role in [("cpo", "cpo"), ("gw", "gateway")]
                  + [(f"evse{k + 1}", "evse") for k in range(max_hosts)]},
        "controller": {"python": "3.11", "labkit": "0.1.0", "synthetic": "true"},
        "profiles": {p: {"synthetic": True, **PROFILES[p].__dict__} for p in profiles},
        "cells": cells, "link_cleared": True,
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run_dir


def _write_ping(cdir: Path, prof: SynthProfile, pname: str, count: int, t: float, base_rtt_ms: float,
                engine: str, rng: np.random.Generator) -> None:
    rows = []
    lost_p = prof.loss_pct / 100 * 2 + (0.02 if pname in ("vsat", "gprs") else 0.0)
    (cdir / "ping").mkdir()
    for direction, src, dst in (("up", "evse1", "cpo"), ("down", "cpo", "evse1")):
        for seq in range(1, count + 1):
            ts = t + seq * 0.2
            if rng.random() < lost_p:
                rows.append((src, dst, direction, seq, "", "", 1, ""))
                continue
            ser = sum(84 * 8 / r * 1000 for r in (prof.up_rate_bps, prof.down_rate_bps) if r)
            eng = 0.12 if prof.added_rtt_ms and engine == "userspace" else 0.0
            rtt = (base_rtt_ms + prof.added_rtt_ms + ser + eng + rng.gamma(2, 0.02)
                   + abs(rng.normal(0, prof.jitter_ms)) * 1.2)
            rows.append((src, dst, direction, seq, f"{ts + rtt / 1000:.6f}", _iputils(rtt), 0, 63))
        (cdir / "ping" / f"{src}-{dst}.txt").write_text(f"SYNTHETIC ping output {src} -> {dst}\n")
    _write_csv(cdir / "ping.csv", list(RF.PING.columns), rows)


def _iputils(rtt_ms: float) -> str:
    """An RTT as iputils ping prints it: three significant digits, whole milliseconds from 100 ms on."""
    return f"{rtt_ms:.3f}" if rtt_ms < 1 else f"{rtt_ms:.{max(0, 2 - int(math.log10(rtt_ms)))}f}"


def _write_echo(cdir: Path, prof: SynthProfile, count: int, t: float, base_rtt_ms: float, engine: str,
                rng: np.random.Generator) -> None:
    """labkit's echo probe (labkit.echo): the same path as ping, timed to the microsecond (its own random
    stream); ``t_wall`` is when a probe was sent, so lost probes have one too."""
    rows = []
    for direction, src, dst in (("up", "evse1", "cpo"), ("down", "cpo", "evse1")):
        for seq in range(1, count + 1):
            ts = t + seq * 0.2 + 0.1
            if rng.random() < prof.loss_pct / 100 * 2:
                rows.append((src, dst, direction, seq, f"{ts:.6f}", "", 1))
                continue
            ser = sum(60 * 8 / r * 1000 for r in (prof.up_rate_bps, prof.down_rate_bps) if r)
            eng = 0.12 if prof.added_rtt_ms and engine == "userspace" else 0.0
            rtt = (base_rtt_ms + 0.02 + prof.added_rtt_ms + ser + eng + rng.gamma(2, 0.02)
                   + abs(rng.normal(0, prof.jitter_ms)) * 1.2)
            rows.append((src, dst, direction, seq, f"{ts:.6f}", f"{math.ceil(rtt * 1000) / 1000:.3f}", 0))
    _write_csv(cdir / "echo.csv", list(RF.ECHO.columns), rows)


def _write_ocpp(cdir: Path, run_id: str, hosts: list[str], calls, events, csms_rows, ocpp_version: str,
                t0: float, fmt: str = RF.FORMAT) -> None:
    """The fleet's and the CSMS's files in the columns of ``fmt`` (format /1: without those added in /2)."""
    def cols(table: RF.Table) -> list[str]:
        return [c for c in table.columns if not (fmt == V1 and c in table.added)]

    def put(path: Path, table: RF.Table, rows: list[dict]) -> None:
        names = cols(table)
        _write_csv(path, names, [[r.get(c, "") for c in names] for r in rows])

    for h in hosts:
        rows = []
        for (_hh, sid, action, ts, rtt, outcome, err, attempt, queued, mid, conn, key) in sorted(
                (c for c in calls if c[0] == h), key=lambda c: c[3]):
            rows.append({"run_id": run_id, "host": h, "station_id": sid, "ocpp_version": ocpp_version,
                         "action": action, "t_wall": f"{ts:.6f}", "t_mono_ns": int((ts - t0) * 1e9),
                         "rtt_ms": _fmt(rtt), "outcome": outcome, "error_code": err, "req_bytes": REQ_BYTES[action],
                         "resp_bytes": RESP_BYTES[action] if rtt is not None else "", "queued_ms": _fmt(queued, 1),
                         "attempt": attempt, "message_id": mid, "connection": conn, "tx_key": key})
        put(cdir / "ocpp" / f"calls-{h}.csv", RF.CALLS, rows)
        ev = sorted((e for e in events if e[0] == h), key=lambda e: e[2])
        put(cdir / "ocpp" / f"events-{h}.csv", RF.EVENTS,
            [{"run_id": run_id, "host": hh, "station_id": sid, "t_wall": f"{ts:.6f}", "event": e, "detail": det,
              "downtime_ms": dt, "connection": conn} for hh, sid, ts, e, det, dt, conn in ev])
    seen: dict[str, int] = {}
    rows = []
    for ts, sid, a, hm, oc, er, mid, conn, key in sorted(csms_rows, key=lambda r: r[0]):
        if key:
            seen[key] = seen.get(key, 0) + 1
        rows.append({"t_wall": f"{ts:.6f}", "station_id": sid, "ocpp_version": ocpp_version, "action": a,
                     "handle_ms": f"{hm:.3f}", "outcome": oc, "error_code": er, "req_bytes": REQ_BYTES[a],
                     "resp_bytes": RESP_BYTES[a], "message_id": mid, "connection": conn, "tx_key": key,
                     "attempt": seen[key] if key else ""})
    put(cdir / "ocpp" / "csms.csv", RF.CSMS, rows)


def _write_monitor(cdir: Path, hosts: list[str], sph: int, busy: dict, t: float, t_end: float, engine: str,
                   prof: SynthProfile, rng: np.random.Generator) -> None:
    """One sample per second and host: the whole host (the same machine on netns) and its processes."""
    mon = []
    n_st = len(hosts) * sph
    for k in range(int(t_end - t) + 1):
        ts = t + k + 0.5
        csms_cpu = min(100.0, 100 * busy.get(("cpo", k), 0.0) + 1.5 + abs(rng.normal(0, 0.3)))
        fleets = {h: min(100.0, 100 * busy.get((h, k), 0.0) * 2.5 + 0.8 * sph + abs(rng.normal(0, 0.2)))
                  for h in hosts}
        eng_cpu = (0.4 + 0.04 * n_st) if engine == "userspace" and prof.added_rtt_ms else 0.2
        machine = min(100.0, (csms_cpu + sum(fleets.values()) + eng_cpu) / 2 + 2)  # 2 cores
        for host, role in [("cpo", "cpo"), ("gw", "gateway")] + [(h, "evse") for h in hosts]:
            mon.append((f"{ts:.3f}", host, role, "host", "", f"{machine:.1f}", "", f"{machine:.1f}", int(4e9)))
        mon.append((f"{ts:.3f}", "cpo", "cpo", "csms", 4242, f"{csms_cpu:.1f}", int(60e6 + n_st * 2e5),
                    f"{machine:.1f}", int(4e9)))
        mon.append((f"{ts:.3f}", "gw", "gateway", "engine", 4343, f"{eng_cpu:.1f}", int(30e6), f"{machine:.1f}",
                    int(4e9)))
        for h in hosts:
            mon.append((f"{ts:.3f}", h, "evse", "fleet", 5000 + int(h[4:]), f"{fleets[h]:.1f}",
                        int(45e6 + sph * 1.5e6), f"{machine:.1f}", int(4e9)))
    _write_csv(cdir / "monitor.csv", list(RF.MONITOR.columns), mon)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--plan", default="tests", choices=sorted(PLANS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--backend", default="netns")
    ap.add_argument("--label", default="synthetic")
    a = ap.parse_args()
    print(make_run(a.out, plan=a.plan, seed=a.seed, backend=a.backend, label=a.label))


if __name__ == "__main__":
    main()
