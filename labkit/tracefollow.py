"""The netem engine's change loop for recorded traces: runs on the gateway, applies each step at its time.

``labkit shaper follow --config FILE`` (started on the gateway by ``labkit.shaping.apply``, like the userspace
engine) reads the sequences ``labkit.tc.trace_changes`` planned, one per traced direction, and runs each step's
in-place commands (``tc class change`` of the HTB rate, ``tc qdisc change`` of netem's delay and loss) when its
time comes, measured from the loop's own start (the trace's time origin: the link was applied and read back
just before). Running on the gateway itself, a change costs one ``tc`` process (a few milliseconds), not an SSH
round trip. A Mahimahi trace's sequence repeats with its period; a CSV trace's ends with its last step, which
holds (the loop then waits, reporting ``done``).

Every change is recorded in ``log_file`` (JSON lines: direction, step, pass, planned, started and ended on the
gateway's clock, exit status) and the loop's report in ``status_file`` (the step in force per direction, how
late changes started and how long they took: median, p99, max). A command that fails stops the loop (state
``failed``, the error in the report): the link then no longer follows the trace, and a read-back says so.
"""

from __future__ import annotations

import heapq
import json
import os
import shlex
import signal
import subprocess
import time
from typing import Any

from labkit.nfq.engine import realtime, write_json


class _Stop(Exception):
    pass


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median_ms": None, "p99_ms": None, "max_ms": None}
    v = sorted(values)
    return {"n": len(v), "median_ms": v[len(v) // 2], "p99_ms": v[min(len(v) - 1, int(0.99 * len(v)))],
            "max_ms": v[-1]}


class Follower:
    """Run the planned sequences (see ``labkit.tc.trace_changes``) from ``start()`` on."""

    def __init__(self, config: dict[str, Any], runner=None):
        self.config = config
        self.sequences = config["sequences"]
        for sq in self.sequences:
            if not sq["changes"] or sq["changes"][0]["t_s"] != 0:
                raise ValueError(f"{sq.get('direction')}: a sequence starts with its step at 0 s")
            if sq["loop"] and not sq["period_s"] > 0:
                raise ValueError(f"{sq.get('direction')}: a looping sequence needs a period above 0 s")
        self.status_file = config.get("status_file")
        self.log_file = config.get("log_file")
        self.run_cmd = runner or self._run_tc
        self.state = "starting"
        self.error: str | None = None
        self.origin_ns = 0
        self.origin_wall = 0.0
        self.current = {sq["direction"]: {"step": 0, "pass": 0, "applied_at": None} for sq in self.sequences}
        self.lateness: list[float] = []
        self.durations: list[float] = []
        self.applied = 0
        self.sched = "other"

    @staticmethod
    def _run_tc(cmd: str) -> tuple[int, str]:
        r = subprocess.run(shlex.split(cmd), capture_output=True, text=True)
        return r.returncode, r.stderr.strip()

    def _events(self) -> list[tuple[int, int, int, int]]:
        """(due ns from origin, sequence, pass, change index): the first change of each sequence after step 0."""
        heap = []
        for s in range(len(self.sequences)):
            nxt = self._after(s, 0, 0)
            if nxt is not None:
                heap.append(nxt)
        heapq.heapify(heap)
        return heap

    def _after(self, s: int, cycle: int, i: int) -> tuple[int, int, int, int] | None:
        sq = self.sequences[s]
        i += 1
        if i >= len(sq["changes"]):
            if not sq["loop"]:
                return None
            cycle, i = cycle + 1, 0
        t = cycle * sq["period_s"] + sq["changes"][i]["t_s"]
        return (int(round(t * 1e9)), s, cycle, i)

    def run(self, stop_after_s: float | None = None) -> None:
        """Follow until SIGTERM/SIGINT (or ``stop_after_s``, for tests and benchmarks)."""
        self.sched = realtime(int(self.config.get("rt_priority", 10)))  # 0: the normal policy
        self.origin_ns = time.monotonic_ns()
        self.origin_wall = time.time()
        self.state = "running"
        heap = self._events()
        log = open(self.log_file, "a") if self.log_file else None  # noqa: SIM115 - closed below
        try:
            self.write_status()
            while heap:
                due, s, cycle, i = heap[0]
                if stop_after_s is not None and due > stop_after_s * 1e9:
                    break
                wait = (self.origin_ns + due - time.monotonic_ns()) / 1e9
                if wait > 0:
                    time.sleep(wait)
                heapq.heappop(heap)
                sq = self.sequences[s]
                ch = sq["changes"][i]
                started = time.monotonic_ns()
                rc, err = 0, ""
                for cmd in ch["commands"]:
                    rc, err = self.run_cmd(cmd)
                    if rc != 0:
                        break
                ended = time.monotonic_ns()
                rec = {"direction": sq["direction"], "step": i, "pass": cycle,
                       "planned": self.origin_wall + due / 1e9,
                       "started": self.origin_wall + (started - self.origin_ns) / 1e9,
                       "ended": self.origin_wall + (ended - self.origin_ns) / 1e9,
                       "late_ms": (started - self.origin_ns - due) / 1e6, "took_ms": (ended - started) / 1e6,
                       "commands": len(ch["commands"]), "rc": rc}
                if log is not None:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                if rc != 0:
                    self.state = "failed"
                    self.error = f"{sq['direction']} step {i}: {ch['commands']!r} exited {rc}: {err[:200]}"
                    self.write_status()
                    return
                self.applied += 1
                if ch["commands"]:
                    self.lateness.append(rec["late_ms"])
                    self.durations.append(rec["took_ms"])
                self.current[sq["direction"]] = {"step": i, "pass": cycle, "applied_at": rec["ended"]}
                self.write_status()
                nxt = self._after(s, cycle, i)
                if nxt is not None:
                    heapq.heappush(heap, nxt)
            if not heap:
                self.state = "done"  # every sequence ended (CSV traces): their last steps hold
                self.write_status()
        finally:
            if log is not None:
                log.close()

    def status(self) -> dict[str, Any]:
        return {"follower": "tracefollow", "pid": os.getpid(), "state": self.state, "error": self.error,
                "profile": self.config.get("profile"), "origin": self.origin_wall, "sched": self.sched,
                "directions": self.current, "changes_applied": self.applied,
                "lateness": _summary(self.lateness), "took": _summary(self.durations),
                "sequences": [{k: sq[k] for k in ("direction", "trace", "sha256", "format", "loop", "period_s")}
                              | {"steps": len(sq["changes"])} for sq in self.sequences],
                "updated": time.time()}

    def write_status(self) -> None:
        if self.status_file:
            write_json(self.status_file, self.status())


def run_from_file(path: str) -> int:
    with open(path) as fh:
        config = json.load(fh)
    f = Follower(config)

    def _handler(signum, frame):  # noqa: ARG001
        raise _Stop()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    try:
        f.run()
        while f.state == "done":  # the last steps hold; stay until stopped, so the report stays alive
            time.sleep(3600)
    except _Stop:
        if f.state == "running":
            f.state = "stopped"
        f.write_status()
    return 0 if f.state != "failed" else 1
