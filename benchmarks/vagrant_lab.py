"""How long the VM lab takes, step by step: test box, `labkit up --backend vagrant`, a short bench, `down`.

Prints one line per step (seconds, with the 1-minute load average next to it, since other work on the
machine slows software-emulated VMs a lot), the phases of `up` (vagrant up, prepare, labkit install, path
check), labkit's install time per host against their sum (provisioning runs in parallel: the total follows
the slowest host), and the ping medians the bench measured (base, shaped, added vs promised). Writes JSON.

    sudo python benchmarks/vagrant_lab.py [--evse 1] [--profile slow-4g] [--name vg1] [--keep]

Needs what .ci/vagrant.sh installs. LABKIT_HOME=/tmp/labkit-vagrant unless set.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LABKIT_HOME", "/tmp/labkit-vagrant")

from labkit.cli import main as cli  # noqa: E402


def step(name: str, out: dict, *argv: str) -> None:
    t0 = time.monotonic()
    rc = cli(list(argv))
    out[name] = {"seconds": round(time.monotonic() - t0, 1), "load_1min": round(os.getloadavg()[0], 2), "rc": rc}
    print(f"{name:12s} {out[name]['seconds']:8.1f} s   load {out[name]['load_1min']:5.2f}   rc {rc}", flush=True)
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evse", type=int, default=1)
    ap.add_argument("--profile", default="slow-4g")
    ap.add_argument("--name", default="vg1")
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    ap.add_argument("--out", default="benchmarks/out/vagrant_lab.json")
    a = ap.parse_args()
    from labkit.labdir import LabDir
    from labkit.testbox import build_test_box

    res: dict = {"evse": a.evse, "profile": a.profile, "cpus": os.cpu_count()}
    t0 = time.monotonic()
    tb = build_test_box()
    res["box"] = {"seconds": round(time.monotonic() - t0, 1), "built": tb.built, "steps": tb.seconds}
    print(f"{'box':12s} {res['box']['seconds']:8.1f} s   ({'built' if tb.built else 'cached'}: {tb.seconds})")
    home = Path(os.environ["LABKIT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    lab_yaml = home / "bench-box.yaml"
    lab_yaml.write_text(tb.lab_yaml("qemu"))
    results = home / "bench-results"
    try:
        step("up", res, "up", "-f", str(lab_yaml), "--name", a.name, "--backend", "vagrant", "--evse", str(a.evse))
        ld = LabDir(a.name)
        inv = json.loads(ld.inventory_file.read_text())
        res["up_phases"] = {**inv["details"]["timings_s"],
                            **json.loads((ld.path / "up.json").read_text())["timings_s"]}
        for k, v in res["up_phases"].items():
            if isinstance(v, (int, float)):
                print(f"  {k:18s} {v:8.1f} s")
        step("bench", res, "bench", "none", a.profile, "--lab", a.name, "--ping-count", "100", "--ping-interval",
             "0.1", "--iperf-seconds", "3", "--udp-seconds", "2", "--meter-values", "20", "--results", str(results))
        run = sorted(results.iterdir())[-1]
        with open(run / "summary.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["measure"] == "ping_rtt"]
        med = {(r["profile"], r["direction"]): (float(r["median"]), float(r["expected"] or 0)) for r in rows}
        res["ping"] = {}
        for d in ("up", "down"):
            base, _ = med[("none", d)]
            shaped, promised = med[(a.profile, d)]
            res["ping"][d] = {"base_ms": base, "shaped_ms": shaped, "added_ms": round(shaped - base, 2),
                              "promised_ms": promised}
            print(f"  ping {d:4s}: base {base:.2f} ms, {a.profile} {shaped:.2f} ms, added {shaped - base:.2f} ms "
                  f"(promised {promised:.0f} ms)")
    finally:
        if not a.keep:
            step("down", res, "down", "--lab", a.name)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
