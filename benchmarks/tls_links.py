#!/usr/bin/env python3
"""What OCPP's security profiles cost over slow links: connect and reconnect time per link and security profile.

    sudo .venv/bin/python benchmarks/tls_links.py [--links none,4g,gprs,vsat] [--out DIR] [--quick]

Brings up a netns lab of its own (private LABKIT_HOME), runs one `labkit bench` plan over the link profiles
with security profiles 1, 2 and 3, TLS 1.2 and 1.3, session resumption on and off (``--security-profile 1,2,3
--tls-version 1.2,1.3 --tls-resumption both``: nine variants per link), an outage in every cell so every
station reconnects, then `labkit report` and `labkit down`. Prints the report's two connection tables
(``labkit.analysis.tables.setup_table`` and ``reconnect_table``, from the fleets' ``handshake`` events): per
link and security variant, the median TCP connect, TLS handshake and WebSocket upgrade of first connections
(ms), the TLS handshake in round trips of the link's added RTT, the handshake's TLS bytes each way; and for
the reconnections after the outage the median set-up, the share of resumed sessions and the time from the
link's return to the station's reconnection. Writes DIR/tls_links.json (the tables and the run's path) and
keeps the results directory (DIR/results/<run>, with its report).

Expect, on a link with round trip R: TCP 1 R, WebSocket upgrade 1 R, TLS 1.3 1 R, TLS 1.2 2 R (1 R when
resumed); profile 3 adds the station's certificate (about 1 kB) to what the station sends, which on a slow
uplink costs its transmission time on top.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAB = "tlslinks"
CELL_ARGS = ["--baselines", "none", "--evse", "1", "--stations-per-host", "5", "--meter-values", "30",
             "--meter-interval", "0.5", "--ws-ping", "2", "--outage", "6s@10s", "--seed", "2021",
             "--security-profile", "1,2,3", "--tls-version", "1.2,1.3", "--tls-resumption", "both"]


def labkit(env: dict, *argv: str) -> None:
    print("+ labkit " + " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "labkit", *argv], env=env, check=True)


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
    from labkit.analysis.doc import markdown_table
    from labkit.analysis.load import load_run
    from labkit.analysis.tables import reconnect_table, setup_table

    loaded = load_run(run)
    setup = setup_table(loaded)[["profile", "security", "first_connections", "added_rtt_ms", "tcp_median_ms",
                                 "tls_median_ms", "ws_median_ms", "setup_median_ms", "tls_rtts", "setup_rtts",
                                 "boot_median_ms", "tls_out_median_bytes", "tls_in_median_bytes", "connect_failed"]]
    again = reconnect_table(loaded)[["profile", "security", "stations", "stations_reconnected", "tls_median_ms",
                                     "setup_median_ms", "tls_rtts", "resumed_pct", "restored_to_reconnected_median_ms"]]
    print("First connections (medians):\n" + markdown_table(setup.round(2)))
    print("\nReconnections after the outage (medians):\n" + markdown_table(again.round(2)))
    rows = {"setup": setup.to_dict(orient="records"), "reconnect": again.to_dict(orient="records")}
    print(f"\n{len(setup)} cells in {(time.monotonic() - t0) / 60:.1f} min; run {run}; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    (out / "tls_links.json").write_text(json.dumps({"run": str(run), **rows}, indent=1, default=str))
    labkit(env, "report", str(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
