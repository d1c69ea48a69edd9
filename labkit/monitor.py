"""Host-side resource sampler: CPU and memory of named processes and of the whole host, once a second.

Runs on lab hosts during the OCPP phase (``labkit monitor``, started over SSH) and appends rows to a CSV in
the columns of docs/results.md (monitor.csv). Processes are found through the pid files that
``labkit.remote.Remote.start`` writes, and may appear or disappear while it runs. Needs only psutil.

On the netns backend every host shares this machine's kernel, so ``host_cpu_pct`` and
``host_mem_used_bytes`` describe the whole machine, not one namespace.
"""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import psutil

COLUMNS = ["t_wall", "host", "role", "process", "pid", "cpu_pct", "rss_bytes", "host_cpu_pct", "host_mem_used_bytes"]


def _read_pid(pidfile: str) -> int | None:
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def run(out: str, host: str, role: str, procs: dict[str, str], interval: float = 1.0,
        duration: float | None = None) -> None:
    """Sample until SIGTERM/SIGINT (or ``duration``); every row is flushed as it is written."""
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    tracked: dict[str, psutil.Process] = {}
    new = not os.path.exists(out) or os.path.getsize(out) == 0
    psutil.cpu_percent(None)
    t_end = None if duration is None else time.monotonic() + duration
    with open(out, "a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(COLUMNS)
        next_t = time.monotonic() + interval
        while not stop and (t_end is None or time.monotonic() < t_end):
            # (re)attach to the processes named by pid files
            for name, pidfile in procs.items():
                pid = _read_pid(pidfile)
                cur = tracked.get(name)
                if pid is None or (cur is not None and cur.pid != pid):
                    tracked.pop(name, None)
                if pid is not None and name not in tracked:
                    try:
                        p = psutil.Process(pid)
                        p.cpu_percent(None)
                        tracked[name] = p
                    except psutil.Error:
                        pass
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += interval
            now = time.time()
            host_cpu = psutil.cpu_percent(None)
            mem = psutil.virtual_memory()
            writer.writerow([f"{now:.3f}", host, role, "host", "", f"{host_cpu:.1f}", "", f"{host_cpu:.1f}",
                             mem.total - mem.available])
            for name, p in list(tracked.items()):
                try:
                    with p.oneshot():
                        cpu = p.cpu_percent(None)
                        rss = p.memory_info().rss
                        for child in p.children(recursive=True):
                            try:
                                rss += child.memory_info().rss
                            except psutil.Error:
                                pass
                    writer.writerow([f"{now:.3f}", host, role, name, p.pid, f"{cpu:.1f}", rss, f"{host_cpu:.1f}",
                                     mem.total - mem.available])
                except psutil.Error:
                    tracked.pop(name, None)
            fh.flush()
