"""The three backends side by side: one lab per backend, the same bench plan on each, then `labkit compare`.

One backend at a time (never two labs measuring at once): `labkit up`, `labkit bench` (the same plan, counts
and seed everywhere), `labkit down`; then `labkit compare NETNS DOCKER VM thesis-2021-containers` with figures,
and a short table of the headline figures (median ping RTT and OCPP RTT per profile and backend, up time per
backend) with the machine's load average around each bench (the machine may be shared: the 1-minute load is
sampled before, during and after each bench and recorded).

    sudo .venv/bin/python benchmarks/backends_compare.py [--backends netns,docker,vagrant] [--out DIR]

The plan: the dissertation's slow profiles (`--plan thesis --family slow`: none, slow-amps, slow-gprs, slow-3g,
slow-4g, slow-vsat) with one EVSE host (N = 1, the only size VMs can afford here) at reduced sample sizes (see
BENCH_ARGS). Measured here (2 CPUs, 2026-11-30): netns up 1 s + bench 6.6 min, docker up 7 s + bench 6.0 min,
VMs up 3.8 min + bench 8.9 min + down 10 s; 25.8 min in all with the compare. The VM lab uses the locally built test box
(labkit.testbox, qemu TCG where there is no KVM); it is skipped, with the reason, where Vagrant cannot run.

Writes to --out (default benchmarks/out/backends/): runs/<run> (one results directory per backend),
compare/ (compare.md, compare.html, figures), compare-vm/ (the VM run against the dissertation's VM
tables), backends_compare.json (timings, loads, manifests' engines and
images, the headline table) and log.txt. LABKIT_HOME is private (--home, default /tmp/labkit-backends).
Every lab it brought up is taken down on the way out, also after an error or Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("netns", "docker", "vagrant")
LAB_NAMES = {"netns": "bc-netns", "docker": "bc-docker", "vagrant": "bc-vm"}
#: the plan, identical on every backend
BENCH_ARGS = ["--plan", "thesis", "--family", "slow", "--evse", "1", "--seed", "2021",
              "--ping-count", "40", "--ping-interval", "0.1", "--iperf-seconds", "3", "--udp-seconds", "2",
              "--meter-values", "50", "--meter-interval", "0.1"]
#: --quick: a smoke test of this script (two profiles, tiny counts), not a comparison
QUICK_ARGS = ["none", "slow-4g", "--evse", "1", "--seed", "2021", "--ping-count", "10", "--ping-interval", "0.05",
              "--iperf-seconds", "1", "--udp-seconds", "1", "--meter-values", "5", "--meter-interval", "0.05"]
_current: list[subprocess.Popen] = []  # the labkit command running now (SIGTERM is passed on to it)


def labkit_cmd() -> list[str]:
    return [sys.executable, "-m", "labkit"]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load1() -> float:
    return round(os.getloadavg()[0], 2)


class Log:
    def __init__(self, path: Path):
        self.fh = open(path, "a", buffering=1)

    def __call__(self, msg: str) -> None:
        line = f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.fh.write(line + "\n")


class LoadSampler:
    """The 1-minute load average every `every` seconds while a step runs."""

    def __init__(self, every: float = 10.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def summary(self) -> dict:
        s = self.samples
        if not s:
            return {"n": 0}
        return {"n": len(s), "every_s": self.every, "mean": round(sum(s) / len(s), 2), "max": round(max(s), 2),
                "min": round(min(s), 2)}


def run(log: Log, argv: list[str], env: dict) -> tuple[int, float]:
    """Run a labkit command with its output passed through; (exit code, seconds)."""
    log("$ " + " ".join(["labkit", *argv]))
    t0 = time.monotonic()
    proc = subprocess.Popen([*labkit_cmd(), *argv], env=env, cwd=REPO)
    _current.append(proc)
    try:
        rc = proc.wait()
    except BaseException:
        # Ctrl-C reached labkit too, SIGTERM was passed on: let it clean up (it handles both), then unwind
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        _current.remove(proc)
    secs = round(time.monotonic() - t0, 1)
    log(f"  -> exit {rc} in {secs} s (load {load1()})")
    return rc, secs


def vagrant_missing() -> str | None:
    """Why the VM lab cannot run here, or None (the same checks as tests/vagrant)."""
    from labkit.testbox import missing_for_test_box

    return missing_for_test_box()


def git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def provenance() -> dict:
    from labkit import __version__ as version  # noqa: PLC0415

    return {"labkit": version, "commit": git("rev-parse", "HEAD"),
            "uncommitted_in_labkit": git("status", "--porcelain", "--", "labkit").splitlines()}


def read_manifest(run_dir: Path) -> dict:
    m = json.loads((run_dir / "manifest.json").read_text())
    details = m.get("backend_details") or {}
    out = {"run_id": m.get("run_id"), "status": m.get("status"), "reason": m.get("reason", ""),
           "backend": m.get("backend"), "engine": m.get("engine"), "labkit": m.get("labkit"),
           "started": m.get("started"), "ended": m.get("ended"),
           "profiles": (m.get("plan") or {}).get("profiles"),
           "cells": {c["id"]: c["status"] for c in m.get("cells", [])}}
    # what placed the hosts: the Docker image, the Vagrant box, ...
    for key in ("image", "provider", "box", "box_version", "domain_type", "install"):
        if key in details:
            out[f"backend_{key}"] = details[key]
    if isinstance(details.get("engine"), dict):  # the Docker engine
        out["backend_engine"] = {k: details["engine"].get(k) for k in ("server_version", "storage_driver",
                                                                        "cgroup_driver", "cgroup_version")}
    ctl = m.get("controller") or {}
    out["controller"] = {k: ctl.get(k) for k in ("kernel", "os", "cpus", "python") if k in ctl}
    gw = next((h for h in (m.get("hosts") or {}).values() if isinstance(h, dict) and h.get("role") == "gateway"),
              None) if isinstance(m.get("hosts"), dict) else None
    if gw:
        out["gateway_host"] = {k: gw.get(k) for k in ("kernel", "os", "cpus", "memory_bytes", "python") if k in gw}
    return out


def headline(run_dir: Path) -> dict:
    """Per profile: median ping RTT (up, down) and median OCPP RTT (all actions), ms, from summary.csv."""
    out: dict = {}
    path = run_dir / "summary.csv"
    if not path.exists():
        return out
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            key = None
            if r["measure"] == "ping_rtt" and r["direction"] in ("up", "down"):
                key = f"ping_{r['direction']}_ms"
            elif r["measure"] == "ocpp_rtt" and r["direction"] == "all":
                key = "ocpp_ms"
            elif r["measure"] == "tcp_goodput" and r["direction"] in ("up", "down"):
                key = f"tcp_{r['direction']}_bps"
            if key and r["median"] not in ("", None):
                out.setdefault(r["profile"], {})[key] = float(r["median"])
                if key == "ocpp_ms":
                    out[r["profile"]]["ocpp_n"] = int(float(r["n"] or 0))
    return out


def fmt(v, nd=1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def print_table(log: Log, res: dict) -> None:
    done = [b for b in res["order"] if res["backends"].get(b, {}).get("headline")]
    if not done:
        log("no headline figures (no run completed)")
        return
    from labkit.bench.plan import THESIS_SLOW  # noqa: PLC0415

    profiles: list[str] = []
    for b in done:  # the plan's order (the dissertation's), then anything else
        for p in res["backends"][b].get("manifest", {}).get("profiles") or THESIS_SLOW:
            if p not in profiles and p in res["backends"][b]["headline"]:
                profiles.append(p)
    for b in done:
        for p in res["backends"][b]["headline"]:
            if p not in profiles:
                profiles.append(p)
    lines = ["", "median ping RTT up/down and OCPP RTT (ms), per profile and backend (N = 1)",
             f"{'profile':10s} " + " ".join(f"{b + ' ping':>16s} {b + ' ocpp':>12s}" for b in done)]
    for p in profiles:
        cells = []
        for b in done:
            h = res["backends"][b]["headline"].get(p, {})
            cells.append(f"{fmt(h.get('ping_up_ms'), 2) + '/' + fmt(h.get('ping_down_ms'), 2):>16s} "
                         f"{fmt(h.get('ocpp_ms'), 2):>12s}")
        lines.append(f"{p:10s} " + " ".join(cells))
    lines += ["", f"{'backend':8s} {'up s':>7s} {'bench s':>8s} {'down s':>7s} {'engine':>9s} "
                  f"{'load before':>11s} {'during mean/max':>15s} {'after':>6s}"]
    for b in done:
        r = res["backends"][b]
        ld = r.get("load", {})
        during = ld.get("during", {})
        lines.append(f"{b:8s} {fmt(r.get('up_s')):>7s} {fmt(r.get('bench_s')):>8s} {fmt(r.get('down_s')):>7s} "
                     f"{str(r.get('manifest', {}).get('engine')):>9s} {fmt(ld.get('before_bench', [None])[0], 2):>11s} "
                     f"{fmt(during.get('mean'), 2) + '/' + fmt(during.get('max'), 2):>15s} "
                     f"{fmt(ld.get('after_bench', [None])[0], 2):>6s}")
    for line in lines:
        log(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, in order [netns,docker,vagrant]")
    ap.add_argument("--out", default=str(REPO / "benchmarks/out/backends"), help="results directory")
    ap.add_argument("--home", default="/tmp/labkit-backends", help="private LABKIT_HOME")
    ap.add_argument("--cpo-net", default="10.213.10.0/24", help="CPO-side network of every lab")
    ap.add_argument("--evse-net", default="10.213.20.0/24", help="EVSE-side network of every lab")
    ap.add_argument("--no-figures", action="store_true", help="labkit compare --no-figures")
    ap.add_argument("--quick", action="store_true", help="smoke-test this script: 2 profiles, tiny counts")
    ap.add_argument("--table", metavar="JSON", help="only print the table of an earlier run's backends_compare.json")
    a = ap.parse_args()
    if a.table:
        print_table(print, json.loads(Path(a.table).read_text()))
        return 0
    bench_args = QUICK_ARGS if a.quick else BENCH_ARGS
    order = [b.strip() for b in a.backends.split(",") if b.strip()]
    bad = [b for b in order if b not in BACKENDS]
    if bad or not order:
        ap.error(f"--backends: {', '.join(bad) or 'none given'}: choose from {', '.join(BACKENDS)}")

    out = Path(a.out).resolve()
    runs_root = out / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    home = Path(a.home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    env = {**os.environ, "LABKIT_HOME": str(home)}
    os.environ["LABKIT_HOME"] = str(home)  # for labkit.testbox in this process
    cache = Path(os.environ.get("LABKIT_BOX_CACHE", "/var/cache/labkit"))
    if "LABKIT_WHEELHOUSE_CACHE" not in env and (cache / "wheelhouse").is_dir():
        env["LABKIT_WHEELHOUSE_CACHE"] = str(cache / "wheelhouse")  # shared with the VM tests: no downloads
    log = Log(out / "log.txt")

    def on_term(signum, frame):  # noqa: ARG001
        for proc in _current:
            proc.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_term)

    t_start = time.monotonic()
    res: dict = {"started": now(), "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "order": order,
                 "bench_args": bench_args, "nets": {"cpo": a.cpo_net, "evse": a.evse_net},
                 "labkit_home": str(home), "cpus": os.cpu_count(), "provenance": provenance(),
                 "load_at_start": [round(x, 2) for x in os.getloadavg()], "backends": {}}
    json_path = out / "backends_compare.json"

    def save() -> None:
        json_path.write_text(json.dumps(res, indent=2) + "\n")

    log(f"backends {', '.join(order)}; labkit {res['provenance']['labkit']} at {res['provenance']['commit'][:12]}; "
        f"LABKIT_HOME={home}; out {out}; load {res['load_at_start']}")
    up_labs: list[str] = []  # labs `labkit up` was started for: each gets a `labkit down`
    try:
        for i, backend in enumerate(order, 1):
            r: dict = {"lab": LAB_NAMES[backend]}
            res["backends"][backend] = r
            log(f"=== [{i}/{len(order)}] {backend} ===")
            up = ["up", "--name", r["lab"], "--backend", backend, "--evse", "1",
                  "--cpo-net", a.cpo_net, "--evse-net", a.evse_net]
            if backend == "vagrant":
                why = vagrant_missing()
                if why:
                    r["skipped"] = why
                    log(f"vagrant skipped: {why}")
                    save()
                    continue
                from labkit.testbox import build_test_box  # noqa: PLC0415

                t0 = time.monotonic()
                tb = build_test_box(progress=lambda m, d=0, t=None: log(f"  box: {m}"))
                r["box"] = {"name": tb.name, "version": tb.version, "built": tb.built,
                            "seconds": round(time.monotonic() - t0, 1)}
                lab_yaml = home / "vm-box.yaml"
                lab_yaml.write_text(tb.lab_yaml("qemu"))
                r["lab_file"] = tb.lab_yaml("qemu")
                log(f"box {tb.name} {tb.version} ({'built' if tb.built else 'cached'}, {r['box']['seconds']} s)")
                up[1:1] = ["-f", str(lab_yaml)]
            r["load"] = {"before_up": [round(x, 2) for x in os.getloadavg()]}
            up_labs.append(r["lab"])
            with LoadSampler() as ls:
                rc, r["up_s"] = run(log, up, env)
            r["load"]["during_up"] = ls.summary()
            r["up_rc"] = rc
            if rc != 0:
                r["error"] = f"labkit up failed (exit {rc})"
                save()
                rc, r["down_s"] = run(log, ["down", "--lab", r["lab"]], env)
                up_labs.remove(r["lab"])
                continue
            before = {p.name for p in runs_root.iterdir()}
            r["load"]["before_bench"] = [round(x, 2) for x in os.getloadavg()]
            save()
            with LoadSampler() as ls:
                rc, r["bench_s"] = run(log, ["bench", "--lab", r["lab"], *bench_args, "--results", str(runs_root),
                                             "--name", backend], env)
            r["load"]["after_bench"] = [round(x, 2) for x in os.getloadavg()]
            r["load"]["during"] = ls.summary()
            r["bench_rc"] = rc
            new = sorted(p for p in runs_root.iterdir() if p.name not in before and (p / "manifest.json").exists())
            if new:
                r["run"] = str(new[-1])
                r["manifest"] = read_manifest(new[-1])
                r["headline"] = headline(new[-1])
                log(f"{backend}: {new[-1].name}: {r['manifest']['status']}, engine {r['manifest']['engine']}")
            else:
                r["error"] = f"labkit bench left no run directory (exit {rc})"
            save()
            rc, r["down_s"] = run(log, ["down", "--lab", r["lab"]], env)
            r["down_rc"] = rc
            up_labs.remove(r["lab"])
            save()

        runs = [res["backends"][b]["run"] for b in order if res["backends"].get(b, {}).get("run")]
        if runs:
            cmp_out = out / "compare"
            argv = ["compare", *runs, "thesis-2021-containers", "-o", str(cmp_out)]
            if a.no_figures:
                argv.append("--no-figures")
            rc, secs = run(log, argv, env)
            res["compare"] = {"argv": argv, "rc": rc, "seconds": secs, "out": str(cmp_out)}
        vm_run = res["backends"].get("vagrant", {}).get("run")
        if vm_run:  # the VM run against the dissertation's own VM tables too (N = 1; tables only)
            argv = ["compare", vm_run, "thesis-2021-vm", "-o", str(out / "compare-vm"), "--no-figures"]
            rc, secs = run(log, argv, env)
            res["compare_vm"] = {"argv": argv, "rc": rc, "seconds": secs, "out": str(out / "compare-vm")}
    finally:
        for lab in reversed(up_labs):  # an error or an interruption: take down what this script brought up
            log(f"cleaning up: labkit down --lab {lab}")
            subprocess.run([*labkit_cmd(), "down", "--lab", lab], env=env, cwd=REPO)
        res["ended"] = now()
        res["wall_s"] = round(time.monotonic() - t_start, 1)
        res["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
        res["provenance_end"] = provenance()  # others may commit or edit labkit/ while this runs
        save()
    print_table(log, res)
    log(f"wall time {res['wall_s'] / 60:.1f} min; written {json_path}"
        + (f" and {res['compare']['out']}/compare.md" if res.get("compare") else ""))
    ok = all(res["backends"][b].get("bench_rc") == 0 or res["backends"][b].get("skipped") for b in order)
    return 0 if ok and res.get("compare", {}).get("rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
