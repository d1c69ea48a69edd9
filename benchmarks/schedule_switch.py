#!/usr/bin/env python3
"""How fast a schedule switches: planned-to-applied time of each phase switch, as recorded and as pings see it.

A repeating schedule ``lo P s -> hi P s`` (default: 20 ms, then 200 ms of added RTT, 1 s each, 10 passes:
20 switches) runs with ``labkit.schedules.run`` on the EVSE -> gateway -> CPO namespaces of
tests/shaping/shaping_topo.py (the real tc, iptables, NFQUEUE and ``labkit shaper run``; commands run with
``ip netns exec`` instead of SSH, so a lab over SSH adds its command round trip), while ``labkit echo`` sends an
ICMP echo every 10 ms (iputils ping spaces ``-i 0.01`` at about 16 ms here).
It prints, per engine:

- *recorded*: the runner's ``latency_ms`` of every switch: the gateway's clock once the phase held (the
  later of the tc changes and the engine's own time of its swap) minus the planned time;
- *command*: from sending the switch command to its return (this machine's clock);
- *probes*: for each lo -> hi switch, the send time of the first probe that saw the new delay minus the
  planned time (an upper bound, to the 10 ms resolution of the probes), and of the last that saw the old one.

The kernel here has no sch_netem, so only the userspace engine can run in these namespaces. ``--lab NAME``
runs the same schedule on a lab that is up instead (e.g. a Vagrant lab, whose gateway VM has netem), over SSH
like ``labkit shape --schedule``: the probes run on the lab's first EVSE host, and their send stamps (that
host's clock) are brought to this machine's clock with the offset measured over SSH (``labkit.clocks``; its
uncertainty is printed). Needs root.

    python benchmarks/schedule_switch.py [--passes 10] [--phase-s 1] [--lo-ms 10] [--hi-ms 100] [--json]
    python benchmarks/schedule_switch.py --lab vg [--engine auto] ...
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labkit import schedules  # noqa: E402


def _topo_module():
    spec = importlib.util.spec_from_file_location("sh_topo", REPO / "tests" / "shaping" / "shaping_topo.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _pings(text: str) -> list[tuple[float, float]]:
    """labkit echo's CSV -> [(send time, RTT ms)] of the probes answered."""
    return [(float(r["t_wall"]), float(r["rtt_ms"])) for r in csv.DictReader(io.StringIO(text)) if r["lost"] == "0"]


def _stats(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"median {statistics.median(xs):.1f} ms, max {max(xs):.1f} ms (n={len(xs)})"


def _profiles(topo_mod, passes: int, phase_s: float, lo_ms: float, hi_ms: float):
    return topo_mod.profiles_from(f"""
        profiles:
          lo:
            description: {2 * lo_ms:g} ms added RTT
            both: {{delay: "{lo_ms:g} ms"}}
          hi:
            description: {2 * hi_ms:g} ms added RTT
            both: {{delay: "{hi_ms:g} ms"}}
        schedules:
          flip:
            repeat: true
            phases: lo {phase_s:g} s -> hi {phase_s:g} s
    """)


def run(engine: str, passes: int, phase_s: float, lo_ms: float, hi_ms: float) -> dict:
    topo_mod = _topo_module()
    ps = _profiles(topo_mod, passes, phase_s, lo_ms, hi_ms)
    topo = topo_mod.Topo("shsw", Path("/tmp/labkit-schedule-switch"), topo_mod.labkit_bin()).up()
    remote = topo_mod.LocalNetnsRemote(topo)
    started: dict = {}
    count = int(passes * 2 * phase_s / 0.01)
    rows = Path("/tmp/labkit-schedule-switch/echo.csv")  # a file: a pipe nobody reads would stall the probe

    def on_phase(rec) -> None:
        if not started:
            started["ping"] = subprocess.Popen(
                ["ip", "netns", "exec", topo.ns["evse1"], sys.executable, "-m", "labkit", "echo", topo_mod.CPO_ADDR,
                 "-c", str(count), "-i", "0.01", "-W", "1", "--direction", "up", "-o", str(rows)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        result = schedules.run(remote, topo.inventory, ps.schedule("flip"), ps, engine=engine, on_phase=on_phase,
                               max_cycles=passes)
        started["ping"].wait(timeout=60)
        out = rows.read_text()
    finally:
        if "ping" in started and started["ping"].poll() is None:
            started["ping"].kill()
        remote.stop(topo.inventory.gateway, "shaper", timeout=2)
        topo.down()
    return _figures(result, _pings(out), phase_s, lo_ms, hi_ms)


def run_on_lab(lab: str, engine: str, passes: int, phase_s: float, lo_ms: float, hi_ms: float) -> dict:
    import shlex
    import threading

    from labkit import clocks, lifecycle, shaping

    ps = _profiles(_topo_module(), passes, phase_s, lo_ms, hi_ms)
    handle = lifecycle.open_lab(lab)
    inv = handle.inventory
    evse, cpo = inv.by_role("evse")[0], inv.cpo
    count = int(passes * 2 * phase_s / 0.01)
    out: dict = {}

    def probe() -> None:
        cmd = (f"{shlex.quote(evse.labkit)} echo {shlex.quote(cpo.addresses['cpo'])} --count {count} "
               f"--interval 0.01 --wait 1 --direction up")
        out["rows"] = remote.run(evse, cmd, sudo=True, timeout=count * 0.01 + 120).stdout

    started: list[threading.Thread] = []

    def on_phase(rec) -> None:
        if not started:
            started.append(threading.Thread(target=probe, daemon=True))
            started[0].start()

    with handle.remote() as remote:
        offset = clocks.measure(remote, evse)
        try:
            result = schedules.run(remote, inv, ps.schedule("flip"), ps, engine=engine, on_phase=on_phase,
                                   max_cycles=passes)
            started[0].join(count * 0.01 + 180)
        finally:
            shaping.clear(remote, inv)
    pings = [(offset.from_host(t), rtt) for t, rtt in _pings(out.get("rows", ""))]
    fig = _figures(result, pings, phase_s, lo_ms, hi_ms)
    fig["probe_clock"] = {"host": evse.name, "offset_s": offset.offset_s, "uncertainty_ms": offset.uncertainty_s * 1e3}
    fig["gateway_clock"] = result.get("gateway_clock")
    return fig


def _figures(result: dict, pings: list[tuple[float, float]], phase_s: float, lo_ms: float, hi_ms: float) -> dict:
    phases = result["phases"][1:]
    recorded = [p["latency_ms"] for p in phases]
    command = []
    for p in phases:
        first = next(iter(v for v in p["switch"].values() if isinstance(v, dict) and "returned" in v))
        command.append((first["returned"] - first["sent"]) * 1000.0)
    threshold = lo_ms + hi_ms + (hi_ms - lo_ms) / 2  # above: the request met the new (hi) uplink delay
    seen_first, seen_last = [], []
    for p in phases:
        if p["label"] != "hi":
            continue
        planned = p["planned_start"]
        window = [(s, rtt) for s, rtt in pings if planned - 0.5 * phase_s < s < planned + 0.5 * phase_s]
        new = [s for s, rtt in window if rtt >= threshold]
        old = [s for s, rtt in window if rtt < threshold and (not new or s < min(new))]
        if new:
            seen_first.append((min(new) - planned) * 1000.0)
        if old:
            seen_last.append((max(old) - planned) * 1000.0)
    return {"engine": result["engine"], "switches": len(phases), "recorded_ms": recorded, "command_ms": command,
            "ping_first_new_ms": seen_first, "ping_last_old_ms": seen_last, "pings": len(pings)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default=None, choices=["auto", "userspace", "netem"],
                    help="default: userspace in the namespaces, auto (what the gateway has) with --lab")
    ap.add_argument("--lab", help="run on this lab (up) over SSH instead of the namespaces made here")
    ap.add_argument("--passes", type=int, default=10, help="passes of lo -> hi (2 switches each)")
    ap.add_argument("--phase-s", type=float, default=1.0)
    ap.add_argument("--lo-ms", type=float, default=10.0, help="one-way delay of the first phase, each direction")
    ap.add_argument("--hi-ms", type=float, default=100.0, help="one-way delay of the second phase, each direction")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.lab:
        r = run_on_lab(a.lab, a.engine or "auto", a.passes, a.phase_s, a.lo_ms, a.hi_ms)
    else:
        r = run(a.engine or "userspace", a.passes, a.phase_s, a.lo_ms, a.hi_ms)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"engine {r['engine']}: {r['switches']} switches ({2 * a.lo_ms:g} <-> {2 * a.hi_ms:g} ms added RTT, "
          f"{a.phase_s:g} s phases), {r['pings']} probes every 10 ms")
    print(f"  planned -> applied (recorded, gateway clock): {_stats(r['recorded_ms'])}")
    print(f"  switch command, sent -> returned:              {_stats(r['command_ms'])}")
    print(f"  probes, first to see the new delay (lo -> hi): {_stats(r['ping_first_new_ms'])}")
    print(f"  probes, last to see the old delay (lo -> hi):  {_stats(r['ping_last_old_ms'])}")
    if "probe_clock" in r:
        c, g = r["probe_clock"], (r.get("gateway_clock") or {}).get("start") or {}
        print(f"  clocks: {c['host']} {c['offset_s'] * 1e3:+.1f} ms (+/- {c['uncertainty_ms']:.1f} ms), gateway "
              f"{g.get('offset_s', 0) * 1e3:+.1f} ms (+/- {g.get('uncertainty_s', 0) * 1e3:.1f} ms) from this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
