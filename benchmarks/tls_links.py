#!/usr/bin/env python3
"""What OCPP's security profiles cost over slow links: connect and reconnect time per link and security profile.

    sudo .venv/bin/python benchmarks/tls_links.py [--links none,4g,gprs,vsat] [--out DIR] [--quick]

Brings up a netns lab of its own (private LABKIT_HOME), runs one `labkit bench` plan over the link profiles
with security profiles 1, 2 and 3, TLS 1.2 and 1.3, session resumption on and off (``--security-profile 1,2,3
--tls-version 1.2,1.3 --tls-resumption both``: nine variants per link), an outage in every cell so every
station reconnects, then `labkit report` and `labkit down`. Prints, per cell, from the fleets' ``handshake``
events: the median TCP connect, TLS handshake and WebSocket upgrade of first connections (ms), the TLS
handshake in round trips of the link (its median over the median TCP connect, which is one round trip), the
handshake's TLS bytes each way, and for the reconnections after the outage the median set-up time and the
share of resumed sessions. Writes DIR/tls_links.json (the table and the run's path) and keeps the results
directory (DIR/results/<run>, with its report).

Expect, on a link with round trip R: TCP 1 R, WebSocket upgrade 1 R, TLS 1.3 1 R, TLS 1.2 2 R (1 R when
resumed); profile 3 adds the station's certificate (about 1 kB) to what the station sends, which on a slow
uplink costs its transmission time on top.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from labkit.resultsformat import parse_detail  # noqa: E402

LAB = "tlslinks"
CELL_ARGS = ["--baselines", "none", "--evse", "1", "--stations-per-host", "5", "--meter-values", "10",
             "--meter-interval", "0.5", "--ws-ping", "2", "--outage", "6s@3s", "--seed", "2021",
             "--security-profile", "1,2,3", "--tls-version", "1.2,1.3", "--tls-resumption", "both"]


def labkit(env: dict, *argv: str) -> None:
    print("+ labkit " + " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "labkit", *argv], env=env, check=True)


def med(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def cell_row(cell_dir: Path, meta: dict) -> dict:
    events = []
    for f in sorted((cell_dir / "ocpp").glob("events-*.csv")):
        with open(f) as fh:
            events += list(csv.DictReader(fh))
    shakes = [(int(e["connection"] or 0), float(e["t_wall"]), parse_detail(e["detail"]))
              for e in events if e["event"] == "handshake"]
    first = [d for n, _t, d in shakes if n == 1]
    restored = (meta.get("outage") or {}).get("t_wall_end") or 0
    again = [d for n, t, d in shakes if n > 1 and t >= restored]

    def setup(d: dict) -> float:
        return sum(float(d.get(k) or 0) for k in ("tcp_ms", "tls_ms", "ws_ms"))

    tcp = med([float(d["tcp_ms"]) for d in first])
    tls = med([float(d["tls_ms"]) for d in first if "tls_ms" in d])
    return {
        "cell": meta["id"], "link": meta["profile"], "security": meta["security"]["label"],
        "stations": len(first), "tcp_ms": tcp, "tls_ms": tls, "ws_ms": med([float(d["ws_ms"]) for d in first]),
        "setup_ms": med([setup(d) for d in first]),
        "tls_rtts": round(tls / tcp, 2) if tls is not None and tcp else None,
        "tls_out_B": med([float(d["tls_out"]) for d in first if "tls_out" in d]),
        "tls_in_B": med([float(d["tls_in"]) for d in first if "tls_in" in d]),
        "reconnects": len(again), "re_setup_ms": med([setup(d) for d in again]),
        "re_tls_ms": med([float(d["tls_ms"]) for d in again if "tls_ms" in d]),
        "resumed": sum(d.get("resumed") == "1" for d in again),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", default="none,4g,gprs,vsat")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "tls_links"))
    ap.add_argument("--home", default="/tmp/labkit-tls-links")
    ap.add_argument("--quick", action="store_true", help="a smoke test: one link, TLS 1.3 only")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LABKIT_HOME=a.home)
    links = a.links.split(",")
    args = list(CELL_ARGS)
    if a.quick:
        links = links[:1]
        args[args.index("1.2,1.3")] = "1.3"
    t0 = time.monotonic()
    labkit(env, "up", "--name", LAB, "--backend", "netns", "--evse", "1")
    try:
        labkit(env, "bench", *links, "--lab", LAB, "--results", str(out / "results"), *args)
    finally:
        labkit(env, "down", "--lab", LAB)
    run = max((out / "results").iterdir(), key=lambda p: p.stat().st_mtime)
    return table(run, out, t0, env)


def table(run: Path, out: Path, t0: float, env: dict) -> int:
    manifest = json.loads((run / "manifest.json").read_text())
    rows = []
    for c in manifest["cells"]:
        meta = json.loads((run / c["dir"] / "cell.json").read_text())
        rows.append(cell_row(run / c["dir"], meta))
    cols = ["link", "security", "stations", "tcp_ms", "tls_ms", "ws_ms", "setup_ms", "tls_rtts", "tls_out_B",
            "tls_in_B", "reconnects", "re_setup_ms", "re_tls_ms", "resumed"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r[k] is None else str(r[k]) for k in cols) + " |")
    print(f"\n{len(rows)} cells in {(time.monotonic() - t0) / 60:.1f} min; run {run}; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    (out / "tls_links.json").write_text(json.dumps({"run": str(run), "rows": rows}, indent=1))
    labkit(env, "report", str(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
