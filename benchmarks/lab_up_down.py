#!/usr/bin/env python3
"""Time `labkit up` and `labkit down` on the netns or docker backend for 1, 10 and 50 EVSE hosts.

Usage: sudo .venv/bin/python benchmarks/lab_up_down.py [--backend netns|docker] [--sizes 1,10,50] [--repeat 3]
Prints, per size, the median wall time of up (split into its phases) and of down, and checks that every
host answered over SSH (up includes waiting for SSH, the provisioning check and the path check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from labkit import lifecycle
from labkit.model import load_spec


def leftovers(backend: str) -> list[str]:
    """What a lab named ``bench`` left behind: namespaces, or containers and networks."""
    if backend == "netns":
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [ln for ln in left.splitlines() if "lk-bench-" in ln]
    import docker

    client = docker.from_env()
    flt = {"label": "org.labkit.lab=bench"}
    return [c.name for c in client.containers.list(all=True, filters=flt)] + \
        [n.name for n in client.networks.list(filters=flt)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,50")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", choices=["netns", "docker"], default="netns")
    args = ap.parse_args()
    os.environ["LABKIT_HOME"] = tempfile.mkdtemp(prefix="labkit-bench-")
    load = os.getloadavg()[0]
    print(f"# {args.backend} backend, {os.cpu_count()} CPUs, load average {load:.2f}, kernel {os.uname().release}")
    print(f"{'evse':>5} {'hosts':>5} {'up_s':>7} {'place':>6} {'ssh':>6} {'prov':>6} {'path':>6} {'down_s':>7}")
    for n in [int(x) for x in args.sizes.split(",")]:
        ups, downs, phases = [], [], []
        for _ in range(args.repeat):
            t0 = time.monotonic()
            handle = lifecycle.up(load_spec(overrides={"name": "bench", "backend": args.backend, "evse": n}))
            ups.append(time.monotonic() - t0)
            phases.append(handle.timings)
            with handle.remote() as remote:
                res = remote.run_many(handle.inventory.hosts, "hostname")
                assert all(res[h.name].stdout.strip() == h.name for h in handle.inventory.hosts)
            t0 = time.monotonic()
            lifecycle.down("bench")
            downs.append(time.monotonic() - t0)
            assert not leftovers(args.backend), "down left something behind"
        med = {k: statistics.median(p[k] for p in phases) for k in ("place", "ssh", "provision", "pathcheck")}
        print(
            f"{n:>5} {n + 2:>5} {statistics.median(ups):>7.2f} {med['place']:>6.2f} {med['ssh']:>6.2f} "
            f"{med['provision']:>6.2f} {med['pathcheck']:>6.2f} {statistics.median(downs):>7.2f}"
        )


if __name__ == "__main__":
    main()
