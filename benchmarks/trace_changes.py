"""The netem engine's change loop for a recorded trace: how close to its planned time each change is applied.

Runs ``labkit.tracefollow.Follower`` as ``labkit shaper follow`` runs it on a gateway, on a veth pair in a
namespace of its own (``lkbtc<pid>``), on the layout the netem engine gives a traced direction without delay
or loss (HTB + FIFO: this machine's kernel has no sch_netem, HTB changes the same way), following the shipped
trace ``steps-1-5-2`` (Mahimahi, binned by 100 ms: a ``tc class change`` wherever a bin's rate differs from the
one before; 103 changes per 15 s pass). Prints, per change that ran commands: how late it started after its
planned time (the loop's sleep), how long its ``tc`` took (process start, netlink, exit), and started + took =
planned-to-applied: medians, p90, p99 and max, in ms. Needs root.

    python benchmarks/trace_changes.py [--seconds 30] [--bin-ms 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import tc, traces  # noqa: E402
from labkit.profiles import ProfileSet  # noqa: E402
from labkit.tracefollow import Follower  # noqa: E402


def q(values: list[float], frac: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(frac * len(v)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to follow the trace (default 30 s)")
    ap.add_argument("--bin-ms", type=int, default=traces.NETEM_BIN_MS, help="Mahimahi bins (default 100 ms)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (a namespace, tc)", file=sys.stderr)
        return 2
    traces.NETEM_BIN_MS = args.bin_ms
    ns = f"lkbtc{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2"], check=True)
        ps = ProfileSet()
        ps.merge_text("profiles:\n  t:\n    description: t\n    uplink: {trace: steps-1-5-2}\n    downlink: none\n",
                      "bench.yaml")
        prof = ps.get("t")
        steps = traces.netem_steps(traces.load_cached(prof.uplink.trace.path), args.bin_ms)
        lays = [tc.trace_layout(prof, "uplink", s) for s in steps]
        changes = [{"t_s": s.start_s, "step": i, "commands": tc.change_commands(lays[i - 1], lay, "eth1")}
                   for i, (s, lay) in enumerate(zip(steps, lays, strict=True))]
        for c in tc.layout_commands(lays[0], "eth1"):
            subprocess.run(["ip", "netns", "exec", ns, *c.split()], check=True)
        with tempfile.TemporaryDirectory() as d:
            cfg = {"sequences": [{"direction": "uplink", "trace": "steps-1-5-2", "sha256": "", "format": "mahimahi",
                                  "loop": True, "period_s": prof.uplink.trace.period_s, "changes": changes}],
                   "status_file": f"{d}/status.json", "log_file": f"{d}/log.jsonl"}

            def run(cmd: str) -> tuple[int, str]:
                r = subprocess.run(["ip", "netns", "exec", ns, *cmd.split()], capture_output=True, text=True)
                return r.returncode, r.stderr

            # the gateway's loop runs tc itself; here 'ip netns exec' wraps it (its own cost is printed below)
            f = Follower(cfg, runner=run)
            f.run(stop_after_s=args.seconds)
        late, took = f.lateness, f.durations
        total = [a + b for a, b in zip(late, took, strict=True)]
        # the cost of 'ip netns exec' alone, which a gateway's own loop does not pay
        wrap = []
        for _ in range(30):
            t0 = time.monotonic()
            subprocess.run(["ip", "netns", "exec", ns, "true"], check=True)
            wrap.append((time.monotonic() - t0) * 1000)
        direct = []
        for _ in range(30):
            t0 = time.monotonic()
            subprocess.run(["tc", "-V"], capture_output=True, check=True)
            direct.append((time.monotonic() - t0) * 1000)
        print(f"change loop: {f.applied} steps over {args.seconds:g} s ({len(late)} with commands), state {f.state}, "
              f"scheduling {f.sched}, bins of {args.bin_ms} ms")
        for name, v in (("late (start - planned)", late), ("took (tc via ip netns exec)", took),
                        ("applied - planned", total), ("ip netns exec true (overhead in 'took')", wrap),
                        ("tc -V alone (a process start)", direct)):
            print(f"  {name:42} median {q(v, 0.5):7.3f} ms  p90 {q(v, 0.9):7.3f}  p99 {q(v, 0.99):7.3f}  "
                  f"max {max(v):7.3f}")
        with open("/proc/loadavg") as fh:
            print(f"  load average: {fh.read().split()[0]}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
