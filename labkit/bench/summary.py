"""summary.csv: one row per cell x measure x direction, computed from the cell files (rebuildable).

Columns as in docs/results.md. Statistics are over the samples that succeeded; ``lost`` counts those that
did not (lost pings; OCPP calls that ended in a CallError, a timeout or a lost connection).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ["cell", "profile", "evse_hosts", "stations_per_host", "stations", "repeat", "measure", "direction",
           "n", "lost", "mean", "std", "median", "min", "max", "p95", "p99", "unit", "expected"]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {k: "" for k in ("mean", "std", "median", "min", "max", "p95", "p99")}
    a = np.asarray(values, dtype=float)
    return {"mean": a.mean(), "std": a.std(ddof=1) if len(a) > 1 else 0.0, "median": float(np.median(a)),
            "min": a.min(), "max": a.max(), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if None not in r.values()]  # a torn last line has missing fields


def cell_rows(cell_dir: Path) -> list[dict[str, Any]]:
    meta = json.loads((cell_dir / "cell.json").read_text())
    base = {"cell": meta["id"], "profile": meta["profile"], "evse_hosts": meta["evse_hosts"],
            "stations_per_host": meta["stations_per_host"], "stations": meta["evse_hosts"] * meta["stations_per_host"],
            "repeat": meta["repeat"]}
    expected = meta.get("expected", {})
    rows: list[dict[str, Any]] = []
    ping = _read_csv(cell_dir / "ping.csv")
    for direction in ("up", "down"):
        probes = [r for r in ping if r["direction"] == direction]
        if probes:
            ok = [float(r["rtt_ms"]) for r in probes if r["lost"] == "0"]
            rows.append({**base, "measure": "ping_rtt", "direction": direction, "n": len(ok),
                         "lost": len(probes) - len(ok), **_stats(ok), "unit": "ms",
                         "expected": expected.get("added_rtt_ms", "")})
    for name, data in (meta.get("iperf") or {}).items():
        proto, direction = name.split("-")
        if "error" in data:
            rows.append({**base, "measure": "tcp_goodput" if proto == "tcp" else "udp_loss", "direction": direction,
                         "n": 0, "lost": 1, **_stats([]), "unit": "bps" if proto == "tcp" else "pct", "expected": ""})
            continue
        if proto == "tcp":
            rows.append({**base, "measure": "tcp_goodput", "direction": direction, "n": 1, "lost": 0,
                         **_stats([data["goodput_bps"]]), "unit": "bps",
                         "expected": expected.get(f"{direction}link_rate_bps", "")})
            if data.get("steady_bps") is not None:
                rows.append({**base, "measure": "tcp_goodput_steady", "direction": direction, "n": 1, "lost": 0,
                             **_stats([data["steady_bps"]]), "unit": "bps",
                             "expected": expected.get(f"{direction}link_rate_bps", "")})
        else:
            rows.append({**base, "measure": "udp_loss", "direction": direction, "n": data.get("packets", ""),
                         "lost": data.get("lost_packets", ""), **_stats([data["loss_pct"]]), "unit": "pct",
                         "expected": expected.get(f"{direction}link_loss_pct", "")})
            rows.append({**base, "measure": "udp_jitter", "direction": direction, "n": data.get("packets", ""),
                         "lost": "", **_stats([data["jitter_ms"]]), "unit": "ms", "expected": ""})
    calls: list[dict[str, str]] = []
    for part in sorted((cell_dir / "ocpp").glob("calls-*.csv")):
        calls += _read_csv(part)
    if calls:
        by_action: dict[str, list[dict[str, str]]] = {"all": calls}
        for r in calls:
            by_action.setdefault(r["action"], []).append(r)
        for action, rs in by_action.items():
            ok = [float(r["rtt_ms"]) for r in rs if r["outcome"] == "ok" and r["rtt_ms"] not in ("", None)]
            rows.append({**base, "measure": "ocpp_rtt", "direction": action, "n": len(ok), "lost": len(rs) - len(ok),
                         **_stats(ok), "unit": "ms", "expected": expected.get("added_rtt_ms", "")})
    return rows


def write_summary(run_dir: Path) -> Path:
    out = run_dir / "summary.csv"
    rows: list[dict[str, Any]] = []
    for cell_dir in sorted((run_dir / "cells").glob("*")):
        if (cell_dir / "cell.json").exists() and cell_dir.is_dir() and ".partial" not in cell_dir.name:
            try:
                rows += cell_rows(cell_dir)
            except (json.JSONDecodeError, KeyError, ValueError):
                continue
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(out)
    return out
