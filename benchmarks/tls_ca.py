#!/usr/bin/env python3
"""How long a lab CA takes to issue its stations' certificates (labkit.sim.tlsca), and what the fleet pays
to load them.

Usage:
    PYTHONPATH=. python benchmarks/tls_ca.py [COUNTS...]     (default: 100 1000 10000)

For each count, in a fresh temporary directory: ``make_ca`` + ``server_cert`` once (timed apart), then
``client_certs`` for that many stations (one EC P-256 key per station, signed with ECDSA-SHA256, two files written each:
key 0600, certificate 0644). Prints the wall-clock seconds, per station, and the process CPU time (the
work is single-threaded: CPU close to wall means the disk did not matter).

Then what ``labkit fleet --cert-dir`` pays per station at its first connection: one ``ssl.SSLContext``
with the CA and the station's certificate and key loaded (``labkit.sim.tls.ClientTLS``), for 1,000
stations: microseconds each and the growth of the process's peak RSS per context.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

from labkit.sim import tlsca
from labkit.sim.tls import ClientTLS


def issue(count: int) -> tuple[float, float, float]:
    """(seconds for the CA and the server certificate, seconds and CPU seconds for the stations)."""
    with tempfile.TemporaryDirectory(prefix="labkit-ca-") as d:
        t0 = time.perf_counter()
        ca = tlsca.make_ca(d, "labkit-bench")
        tlsca.server_cert(ca, d, ["csms.lab"], ["192.168.10.10"])
        cpu0, t1 = time.process_time(), time.perf_counter()
        tlsca.client_certs(ca, d, tlsca.station_ids("cs", count))
        return t1 - t0, time.perf_counter() - t1, time.process_time() - cpu0


def contexts(count: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="labkit-ctx-") as d:
        ca = tlsca.make_ca(d, "labkit-bench")
        ids = tlsca.station_ids("cs", count)
        tlsca.client_certs(ca, d, ids)
        tls = ClientTLS(ca=str(ca.cert_path), cert_dir=d).check(ids[:1])
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        for sid in ids:
            tls.context(sid)
        per_us = (time.perf_counter() - t0) / count * 1e6
        per_kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / count
        return per_us, per_kib


def main(argv: list[str]) -> int:
    counts = [int(a) for a in argv] or [100, 1000, 10000]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'stations':>9} {'CA+server s':>11} {'stations s':>10} {'ms/station':>10} {'cpu s':>7}")
    for n in counts:
        fixed, wall, cpu = issue(n)
        print(f"{n:>9} {fixed:>11.3f} {wall:>10.2f} {wall / n * 1e3:>10.3f} {cpu:>7.2f}", flush=True)
    per_us, per_kib = contexts(1000)
    print(f"fleet --cert-dir: one client SSLContext per station: {per_us:.0f} us and {per_kib:.1f} KiB "
          f"of peak RSS each (1,000 stations)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
