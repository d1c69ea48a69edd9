"""Network baselines over SSH: ping both ways and iperf3 (TCP both ways, UDP for loss and jitter).

Raw outputs are kept verbatim (ping text, iperf3 JSON); ping is parsed per probe (lost probes included, as
rows with ``lost=1``) and summarised with pingparsing.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path
from typing import Any

from labkit.inventory import HostConn
from labkit.remote import Remote

PING_LINE = re.compile(r"^\[(?P<t>\d+\.\d+)\]\s+\d+ bytes from [^:]+: icmp_seq=(?P<seq>\d+) ttl=(?P<ttl>\d+) "
                       r"time=(?P<rtt>[\d.]+) ms(?P<dup> \(DUP!\))?")
PING_COLUMNS = ["src", "dst", "direction", "seq", "t_wall", "rtt_ms", "lost", "ttl"]
IPERF_PORT = 5201


def ping_command(dst: str, count: int, interval_s: float, wait_s: float) -> str:
    # -D: wall-clock stamp per reply; -O: report probes with no answer; -W: how long to wait for the last
    return (f"ping -n -D -O -c {count} -i {interval_s:g} -W {max(1, int(round(wait_s)))} {shlex.quote(dst)}"
            f" 2>&1; echo \"@@exit=$?\"")


def parse_ping(text: str, count: int, src: str, dst: str, direction: str) -> list[dict[str, Any]]:
    """One row per probe 1..count: a reply's time and RTT, or ``lost``. Duplicates are ignored."""
    replies: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        m = PING_LINE.match(line.strip())
        if not m or m.group("dup"):
            continue
        seq = int(m.group("seq"))
        replies.setdefault(seq, {"t_wall": float(m.group("t")), "rtt_ms": float(m.group("rtt")),
                                 "ttl": int(m.group("ttl"))})
    rows = []
    for seq in range(1, count + 1):
        r = replies.get(seq)
        rows.append({"src": src, "dst": dst, "direction": direction, "seq": seq,
                     "t_wall": r["t_wall"] if r else "", "rtt_ms": r["rtt_ms"] if r else "",
                     "lost": 0 if r else 1, "ttl": r["ttl"] if r else ""})
    return rows


def summarize_ping(text: str) -> dict[str, Any]:
    import pingparsing

    try:
        stats = pingparsing.PingParsing().parse(text)
        return stats.as_dict()
    except Exception as exc:  # noqa: BLE001 - a summary is a convenience; the raw text is kept
        return {"error": f"pingparsing could not parse the output: {exc}"}


def run_pings(remote: Remote, cell_dir: Path, evse: HostConn, cpo: HostConn, count: int, interval_s: float,
              wait_s: float) -> list[dict[str, Any]]:
    """EVSE -> CPO (up) and CPO -> EVSE (down) at the same time; write ping/*.txt, *.json and rows."""
    pairs = {evse.name: (evse, cpo, cpo.addresses["cpo"], "up"), cpo.name: (cpo, evse, evse.addresses["evse"], "down")}
    timeout = count * interval_s + wait_s + 60
    res = remote.run_many([evse, cpo], lambda h: ping_command(pairs[h.name][2], count, interval_s, wait_s),
                          timeout=timeout)
    rows: list[dict[str, Any]] = []
    (cell_dir / "ping").mkdir(parents=True, exist_ok=True)
    for name, (src, dst, _addr, direction) in pairs.items():
        text = res[name].stdout
        stem = f"{src.name}-{dst.name}"
        (cell_dir / "ping" / f"{stem}.txt").write_text(text)
        (cell_dir / "ping" / f"{stem}.json").write_text(json.dumps(summarize_ping(text), indent=2))
        rows += parse_ping(text, count, src.name, dst.name, direction)
    return rows


def write_ping_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=PING_COLUMNS)
        if new:
            w.writeheader()
        w.writerows(rows)


def iperf_client(dst: str, *, seconds: float, omit: float, reverse: bool, udp_rate_bps: int | None = None,
                 udp_len: int = 1200, port: int = IPERF_PORT) -> str:
    cmd = f"iperf3 -c {shlex.quote(dst)} -p {port} -J -t {seconds:g} --connect-timeout 10000"
    if omit:
        cmd += f" -O {omit:g}"
    if reverse:
        cmd += " -R"
    else:
        cmd += " --get-server-output"  # the receiver's own per-second intervals (steady_goodput; server -J)
    if udp_rate_bps is not None:
        # a large socket buffer: losses in the receiver's buffer under load are not the link's
        cmd += f" -u -b {int(udp_rate_bps)} -l {udp_len} -w 4M"
    return cmd


def run_iperf(remote: Remote, cell_dir: Path, evse: HostConn, cpo: HostConn, *, seconds: float, omit: float,
              udp_seconds: float, udp_rate_up_bps: int, udp_rate_down_bps: int) -> dict[str, Any]:
    """TCP up/down and UDP up/down between one EVSE (client) and the CPO (server); raw JSON kept."""
    out_dir = cell_dir / "iperf"
    out_dir.mkdir(parents=True, exist_ok=True)
    remote.start(cpo, "iperf3", f"iperf3 -s -J -p {IPERF_PORT}")
    results: dict[str, Any] = {}
    try:
        remote.run(cpo, f"for i in $(seq 100); do ss -ltn | grep -q ':{IPERF_PORT} ' && exit 0; sleep 0.05; done; "
                        "exit 1")
        tests = []
        if seconds > 0:
            tests += [("tcp-up", dict(seconds=seconds, omit=omit, reverse=False)),
                      ("tcp-down", dict(seconds=seconds, omit=omit, reverse=True))]
        if udp_seconds > 0:
            tests += [("udp-up", dict(seconds=udp_seconds, omit=0, reverse=False, udp_rate_bps=udp_rate_up_bps)),
                      ("udp-down", dict(seconds=udp_seconds, omit=0, reverse=True, udp_rate_bps=udp_rate_down_bps))]
        for name, kw in tests:
            cmd = iperf_client(cpo.addresses["cpo"], **kw)
            res = remote.run(evse, cmd, check=False, timeout=kw["seconds"] + kw["omit"] + 60)
            text = res.stdout.strip() or json.dumps({"error": res.stderr.strip() or f"exit {res.exited}"})
            (out_dir / f"{name}.json").write_text(text)
            try:
                results[name] = json.loads(text)
            except json.JSONDecodeError:
                results[name] = {"error": "iperf3 printed no JSON", "raw": text[-2000:]}
    finally:
        remote.stop(cpo, "iperf3")
    return results


def iperf_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Goodput (bit/s, receiver side), or for UDP loss (%) and jitter (ms), from one iperf3 JSON."""
    end = result.get("end", {}) if isinstance(result, dict) else {}
    if not end.get("sum_received"):
        return {"error": result.get("error", "no result") if isinstance(result, dict) else "no result"}
    protocol = result.get("start", {}).get("test_start", {}).get("protocol", "TCP")
    rx, tx = end["sum_received"], end.get("sum_sent", {})
    if protocol == "UDP":
        return {"protocol": "UDP", "loss_pct": rx.get("lost_percent"), "jitter_ms": rx.get("jitter_ms"),
                "packets": rx.get("packets"), "lost_packets": rx.get("lost_packets"),
                "goodput_bps": rx.get("bits_per_second"), "sent_bps": tx.get("bits_per_second")}
    return {"protocol": "TCP", "goodput_bps": rx.get("bits_per_second"), "sent_bps": tx.get("bits_per_second"),
            "retransmits": tx.get("retransmits"), "steady_bps": steady_goodput(result)}


def steady_goodput(result: dict[str, Any]) -> float | None:
    """The slope of received bytes against time over the measured (not omitted) intervals, bit/s.

    iperf3's own figure divides the bytes the receiving application read inside the window by its length. On
    a long path, a loss in slow start leaves data parked behind the hole in the receiver's kernel; when the
    retransmission lands inside the window, that data is read at once and counted, and the figure can exceed
    what the link can carry (101 % of a 20 Mbit/s VSAT downlink, seen here). The median slope between
    interval ends at least half the window apart (Theil-Sen) is insensitive to such a burst at either edge.
    A stall in the middle of the window (a retransmission timeout) lowers both figures, as it should."""
    # the receiving side's intervals: the client's own when it receives (-R), else the server's
    # (--get-server-output); a sender's intervals count writes into its socket buffer, not goodput
    test = result.get("start", {}).get("test_start", {})
    side = result if test.get("reverse") else result.get("server_output_json") or {}
    duration = float(test.get("duration") or 0) or float("inf")
    points, total = [], 0.0
    for iv in side.get("intervals", []):
        s = iv.get("sum", {})
        if s.get("omitted") or float(s.get("end", 0.0)) > duration + 0.5:
            continue  # slow start, or the receiver draining the queue after the sender stopped
        if not points:
            points.append((float(s.get("start", 0.0)), 0.0))
        total += float(s.get("bytes", 0))
        points.append((float(s.get("end", 0.0)), total))
    if len(points) < 3:
        return None
    span = points[-1][0] - points[0][0]
    slopes = sorted((b1 - b0) * 8 / (t1 - t0) for i, (t0, b0) in enumerate(points)
                    for t1, b1 in points[i + 1:] if t1 - t0 >= span / 2 and t1 > t0)
    if not slopes:
        return None
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2
