"""How long `labkit report` and `labkit compare` take on a reduced thesis-plan run (SYNTHETIC data).

The run: the dissertation's six profiles (none, slow-amps, slow-gprs, slow-3g, slow-4g, slow-vsat) at
N = 1, 10, 25, 50 chargers, 100 MeterValues per station (the dissertation sent 1000), written by
tests/analysis/synthetic.py in the layout `labkit bench` uses (about 70 000 OCPP calls). Each command runs
as a fresh process, as a user would run it (imports included). Prints medians over the repetitions and the
load average before and after, since other work on the machine slows everything down.

    .venv/bin/python benchmarks/report_speed.py [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABKIT = [sys.executable, "-m", "labkit"]


def synthetic():
    spec = importlib.util.spec_from_file_location("synthetic", ROOT / "tests" / "analysis" / "synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["synthetic"] = mod
    spec.loader.exec_module(mod)
    return mod


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the runs and reports here and keep them")
    a = ap.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="labkit-report-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        syn = synthetic()
        t = time.perf_counter()
        run_a = syn.make_run(work / "a", plan="thesis-reduced", seed=1, label="synthetic-thesis")
        run_b = syn.make_run(work / "b", plan="thesis-reduced", seed=2, backend="vagrant", label="synthetic-vm",
                             incomplete=False, outage=False)
        gen = time.perf_counter() - t
        from labkit.analysis.load import load_run

        r = load_run(run_a)
        size = sum(f.stat().st_size for f in run_a.rglob("*") if f.is_file())
        print(f"reduced thesis plan (SYNTHETIC): {len(r.cells)} cells, {len(r.calls)} OCPP calls, "
              f"{len(r.ping)} ping probes, {len(r.monitor)} monitor rows, {size / 1e6:.1f} MB on disk "
              f"(generated in {gen:.1f} s)")
        cases = {
            "report": LABKIT + ["report", str(run_a), "-o", str(work / "report")],
            "report --jobs 1": LABKIT + ["report", str(run_a), "-o", str(work / "report1"), "--jobs", "1"],
            "report --no-figures": LABKIT + ["report", str(run_a), "-o", str(work / "report0"), "--no-figures"],
            "compare A thesis-2021": LABKIT + ["compare", str(run_a), "thesis-2021", "-o", str(work / "cmp1")],
            "compare A B thesis-2021": LABKIT + ["compare", str(run_a), str(run_b), "thesis-2021", "-o",
                                                 str(work / "cmp2")],
        }
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs)")
        for name, args in cases.items():
            times = [timed(args) for _ in range(a.repeat)]
            print(f"{name:28s} median {statistics.median(times):5.2f} s   min {min(times):5.2f} s   "
                  f"max {max(times):5.2f} s   (n={a.repeat})")
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        t = time.perf_counter()
        subprocess.run(LABKIT + ["--help"], check=True, stdout=subprocess.DEVNULL)
        print(f"labkit --help (CLI start, nothing of the analysis stack imported): {time.perf_counter() - t:.2f} s")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
