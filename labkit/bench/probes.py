"""Network baselines over SSH: ping and labkit's own echo probe both ways, iperf3 (TCP both ways, UDP for loss
and jitter).

Raw outputs are kept verbatim (ping text, the echo probe's CSV, iperf3 JSON); ping and echo are parsed per
probe (lost probes included, as rows with ``lost=1``) and summarised from those rows
(``labkit.echo.summarize``). The echo probe (labkit/echo.py) has microsecond resolution where ping prints
whole milliseconds (RTTs of 100 ms and more); ping stays as the independent cross-check.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

from labkit.echo import summarize
from labkit.errors import RemoteError
from labkit.inventory import HostConn
from labkit.remote import Remote
from labkit.resultsformat import ECHO

PING_LINE = re.compile(r"^\[(?P<t>\d+\.\d+)\]\s+\d+ bytes from [^:]+: icmp_seq=(?P<seq>\d+) ttl=(?P<ttl>\d+) "
                       r"time=(?P<rtt>[\d.]+) ms(?P<dup> \(DUP!\))?")
PING_COLUMNS = ["src", "dst", "direction", "seq", "t_wall", "rtt_ms", "lost", "ttl"]
PING_HEAD = re.compile(r"^PING (?P<dst>\S+)")
PING_STATS = re.compile(r"^rtt min/avg/max/mdev = (?P<min>[\d.]+)/(?P<avg>[\d.]+)/(?P<max>[\d.]+)/(?P<mdev>[\d.]+) ms")
PING_SENT = re.compile(r"^(?P<sent>\d+) packets transmitted")
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


def summarize_ping(text: str, count: int | None = None) -> dict[str, Any]:
    """ping/<src>-<dst>.json: a summary computed from the parsed rows (``labkit.echo.summarize``).

    The keys are those pingparsing wrote before (``packet_transmit``, ``packet_receive``, ``packet_loss_count``,
    ``packet_loss_rate`` in %, ``rtt_min/avg/max/mdev`` in ms, ``packet_duplicate_count`` and ``_rate``,
    ``destination``) plus ``rtt_median`` and ``rtt_p90``. The RTT figures come from the per-reply times (whole
    milliseconds from 100 ms up) and leave duplicates out; ping's own statistics line (computed by ping from
    microseconds, duplicates in) is kept as ``ping_reported``. ``count``: the probes asked for; without it,
    what ping says it transmitted (else the highest sequence number seen)."""
    lines = [ln.strip() for ln in text.splitlines()]
    if count is None:
        sent = next((int(m.group("sent")) for ln in lines if (m := PING_SENT.match(ln))), None)
        seqs = [int(x) for x in re.findall(r"icmp_seq=(\d+)", text)]
        count = sent if sent is not None else max(seqs, default=0)
    rows = parse_ping(text, count, "", "", "")
    out = summarize(rows)
    head = next((m.group("dst") for ln in lines if (m := PING_HEAD.match(ln))), None)
    dups = sum(1 for ln in lines if PING_LINE.match(ln) and ln.endswith("(DUP!)"))
    got = out["packet_receive"]
    out.update(destination=head, packet_duplicate_count=dups,
               packet_duplicate_rate=100.0 * dups / got if got else None,
               ping_reported=next(({k: float(v) for k, v in m.groupdict().items()}
                                   for ln in lines if (m := PING_STATS.match(ln))), None))
    return out


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
        (cell_dir / "ping" / f"{stem}.json").write_text(json.dumps(summarize_ping(text, count), indent=2))
        rows += parse_ping(text, count, src.name, dst.name, direction)
    return rows


def write_ping_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=PING_COLUMNS)
        if new:
            w.writeheader()
        w.writerows(rows)


def echo_command(labkit: str, dst_addr: str, count: int, interval_s: float, wait_s: float, *, src: str, dst: str,
                 direction: str) -> str:
    """The shell command that runs ``labkit echo`` on a host (every argument quoted)."""
    q = shlex.quote
    return (f"{q(labkit)} echo {q(dst_addr)} --count {int(count)} --interval {interval_s:g} --wait {wait_s:g} "
            f"--direction {q(direction)} --src {q(src)} --dst {q(dst)}")


def parse_echo(text: str, count: int, src: str, dst: str, direction: str) -> list[dict[str, Any]]:
    """One row per probe 1..count from ``labkit echo``'s CSV (numbers as numbers; a probe missing from the
    output, as when the prober was cut short, is a lost row). Raises ValueError when ``text`` is not the
    probe's CSV."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != ECHO.columns:
        raise ValueError(f"not labkit echo output (header {reader.fieldnames})")
    got: dict[int, dict[str, Any]] = {}
    for r in reader:
        try:
            seq = int(r["seq"])
            lost = int(r["lost"])
            rtt = float(r["rtt_ms"]) if r["rtt_ms"] else ""
            t = float(r["t_wall"]) if r["t_wall"] else ""
        except (TypeError, ValueError):
            continue  # a torn last line
        if lost not in (0, 1) or (lost == 0 and rtt == ""):
            continue
        got.setdefault(seq, {"t_wall": t, "rtt_ms": rtt if not lost else "", "lost": lost})
    rows = []
    for seq in range(1, count + 1):
        r = got.get(seq, {"t_wall": "", "rtt_ms": "", "lost": 1})
        rows.append({"src": src, "dst": dst, "direction": direction, "seq": seq, **r})
    return rows


def run_echo(remote: Remote, cell_dir: Path, evse: HostConn, cpo: HostConn, count: int, interval_s: float,
             wait_s: float) -> list[dict[str, Any]]:
    """``labkit echo`` EVSE -> CPO (up) and CPO -> EVSE (down) at the same time, over SSH.

    Keeps each direction's raw CSV (echo/<src>-<dst>.csv), the prober's stderr (echo/<src>-<dst>.log) and a
    summary (echo/<src>-<dst>.json: ``labkit.echo.summarize`` of the rows, with the prober's own report under
    ``probe``); returns one row per probe and direction, lost ones included. Raises RemoteError, after
    keeping what came back, when the prober did not run on a host (no CSV: a bad command, no ICMP socket)."""
    pairs = {evse.name: (evse, cpo, cpo.addresses["cpo"], "up"), cpo.name: (cpo, evse, evse.addresses["evse"], "down")}
    timeout = count * interval_s + wait_s + 60
    res = remote.run_many([evse, cpo], lambda h: echo_command(h.labkit, pairs[h.name][2], count, interval_s, wait_s,
                                                               src=h.name, dst=pairs[h.name][1].name,
                                                               direction=pairs[h.name][3]),
                          sudo=True, check=False, timeout=timeout)  # raw ICMP where ping_group_range excludes
                                                                    # the SSH user (a VM's vagrant)
    out_dir = cell_dir / "echo"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for name, (src, dst, _addr, direction) in pairs.items():
        r = res[name]
        stem = f"{src.name}-{dst.name}"
        (out_dir / f"{stem}.csv").write_text(r.stdout)
        (out_dir / f"{stem}.log").write_text(r.stderr)
        report = None
        for line in reversed(r.stderr.splitlines()):
            if line.startswith("labkit echo: {"):
                try:
                    report = json.loads(line.split(": ", 1)[1])
                except json.JSONDecodeError:
                    pass
                break
        try:
            got = parse_echo(r.stdout, count, src.name, dst.name, direction)
        except ValueError:
            tail = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
            failed.append(f"{src.name}: labkit echo failed (exit {r.exited}): {tail}")
            (out_dir / f"{stem}.json").write_text(json.dumps({"error": failed[-1], "exit": r.exited}, indent=2))
            continue
        summary = summarize(got)
        summary.update(destination=_addr, exit=r.exited, probe=report,
                       packet_duplicate_count=(report or {}).get("packet_duplicate_count"))
        (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2))
        rows += got
    if failed:
        raise RemoteError("; ".join(failed))
    return rows


def write_echo_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """cells/<id>/echo.csv (resultsformat.ECHO's columns), appended to; ``rtt_ms`` with 3 decimals, ``t_wall``
    with 6."""
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ECHO.columns), extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            out = dict(r)
            if out.get("rtt_ms") not in ("", None):
                out["rtt_ms"] = f"{float(out['rtt_ms']):.3f}"
            if out.get("t_wall") not in ("", None):
                out["t_wall"] = f"{float(out['t_wall']):.6f}"
            w.writerow(out)


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
