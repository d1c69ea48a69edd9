"""The reader against labkit.bench's own writers, fed with real ping, labkit echo, iperf3 and monitor output
on loopback.

A full ``labkit bench`` run needs the profiles, the shaping engine and the OCPP simulators; this test instead
assembles a results directory the way labkit.bench.runner does (RunDir, probes.parse_ping/write_ping_csv,
probes.echo_command/parse_echo/write_echo_csv, probes.iperf_client/iperf_figures, labkit.monitor, merge_csv,
summary.write_summary), with real tools talking to 127.0.0.1 only. The OCPP call files and csms.csv are
written here in the columns of labkit.resultsformat (the one definition the fleet and the CSMS write with),
transaction keys included. Then it checks that the analysis reads everything without complaint and agrees
with the bench's own summary.csv.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import resultsformat as RF
from labkit.analysis import tables as T
from labkit.analysis import transactions as X
from labkit.analysis.compare import write_compare
from labkit.analysis.load import load_run
from labkit.analysis.report import write_report
from labkit.bench import probes
from labkit.bench.ocpp import merge_csv
from labkit.bench.plan import Plan
from labkit.bench.results import FORMAT, RunDir, iso, write_json
from labkit.bench.summary import write_summary

pytestmark = [pytest.mark.skipif(not (shutil.which("ping") and shutil.which("iperf3")),
                                 reason="needs ping and iperf3"),
              pytest.mark.slow]

def _ping(count: int) -> list[subprocess.Popen]:
    cmd = probes.ping_command("127.0.0.1", count, 0.2, 1)
    return [subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, text=True) for _ in range(2)]


def _iperf(cell_dir: Path, port: int) -> dict:
    out = cell_dir / "iperf"
    out.mkdir()
    results = {}
    tests = [("tcp-up", {"seconds": 2, "omit": 1, "reverse": False}),
             ("tcp-down", {"seconds": 2, "omit": 1, "reverse": True}),
             ("udp-up", {"seconds": 1, "omit": 0, "reverse": False, "udp_rate_bps": 2_000_000}),
             ("udp-down", {"seconds": 1, "omit": 0, "reverse": True, "udp_rate_bps": 2_000_000})]
    for name, kw in tests:
        for _ in range(20):
            res = subprocess.run(["bash", "-c", probes.iperf_client("127.0.0.1", port=port, **kw)],
                                 capture_output=True, text=True, timeout=60, check=False)
            if res.returncode == 0 and (json.loads(res.stdout).get("end") or {}).get("sum_received"):
                break
            time.sleep(0.3)  # "the server is busy": the previous test is still closing
        (out / f"{name}.json").write_text(res.stdout)
        results[name] = json.loads(res.stdout)
    return results


def _calls(cell_dir: Path, host: str, stations: int, run_id: str, t0: float) -> list[list]:
    """The fleet's calls file; returns the CSMS's rows for the frames that reached it. The last MeterValues
    times out (its request was lost) and is sent again with the same tx_key and a new message id."""
    (cell_dir / "ocpp").mkdir(exist_ok=True)
    csms = []
    with open(cell_dir / "ocpp" / f"calls-{host}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RF.CALLS.columns)
        k = 0
        for s in range(stations):
            sid = f"{host}-cs{s + 1:03d}"
            for n, (action, rtt, outcome, attempt) in enumerate(
                    [("BootNotification", 3.1, "ok", 1), ("Heartbeat", 1.2, "ok", 1), ("MeterValues", 1.9, "ok", 1),
                     ("MeterValues", 2.1 + s / 10, "ok", 1), ("DataTransfer", 1.0, "call_error", 1),
                     ("MeterValues", "", "timeout", 1), ("MeterValues", 2.0, "ok", 2)]):
                k += 1
                payload = json.dumps({"n": min(n, 5)}, separators=(",", ":"))
                key = RF.tx_key(sid, action, payload) if action in RF.TX_ACTIONS["1.6"] else ""
                err = "NotImplemented" if outcome == "call_error" else ("TimeoutError" if outcome == "timeout" else "")
                w.writerow([run_id, host, sid, "1.6", action, f"{t0 + k * 0.1:.6f}", k * 10**8, rtt, outcome, err,
                            120, 40 if rtt != "" else "", "", attempt, f"{sid}-{k}", 1, key])
                if outcome != "timeout":
                    csms.append([f"{t0 + k * 0.1 + 0.001:.6f}", sid, "1.6", action, 0.4,
                                 "call_error" if outcome == "call_error" else "ok", err, 120, 40, f"{sid}-{k}", 1, key,
                                 1 if key else ""])
    return csms


def _csms(cell_dir: Path, rows: list[list]) -> None:
    with open(cell_dir / "ocpp" / "csms.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RF.CSMS.columns)
        w.writerows(sorted(rows, key=lambda r: float(r[0])))


def _monitor(cell_dir: Path, host: str, role: str) -> None:
    mon = cell_dir / "monitors"
    mon.mkdir(exist_ok=True)
    pidfile = cell_dir / "self.pid"
    pidfile.write_text(str(os.getpid()))
    code = (f"from labkit.monitor import run; run({str(mon / (host + '.csv'))!r}, {host!r}, {role!r}, "
            f"{{'csms': {str(pidfile)!r}}}, interval=0.2, duration=1.0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, iperf3_server_module) -> Path:
    root = tmp_path_factory.mktemp("benchfmt")
    plan = Plan(profiles=["none"], evse_counts=[1, 2], ping_count=8, ping_interval_s=0.2, iperf_seconds=2,
                iperf_omit_s=1, udp_seconds=1, meter_values=5)
    run = RunDir.create(root, "lab1", "fmt")
    cells = plan.cells()
    run.write_manifest({
        "format": FORMAT, "run_id": run.run_id, "status": "running", "reason": "", "pid": os.getpid(),
        "command": ["labkit", "bench", "none", "--evse", "1,2"], "started": iso(), "ended": None,
        "seed": plan.seed, "labkit": "test", "lab": {"spec": {"name": "lab1"}}, "backend": "netns",
        "backend_details": {}, "engine": None, "plan": plan.to_dict(), "hosts": {}, "controller": {},
        "profiles": {"none": {"name": "none"}},
        "cells": [{"id": c.id, "dir": f"cells/{c.id}", "profile": c.profile, "evse_hosts": c.evse_hosts,
                   "stations_per_host": c.stations_per_host, "repeat": c.repeat, "status": "pending"}
                  for c in cells]})
    for cell in cells:
        d = run.fresh_cell_dir(cell.id)
        meta = {"id": cell.id, "profile": cell.profile, "evse_hosts": cell.evse_hosts,
                "evse_host_names": [f"evse{i + 1}" for i in range(cell.evse_hosts)],
                "stations_per_host": cell.stations_per_host, "repeat": cell.repeat, "baselines": cell.baselines,
                "status": "running", "started": iso(), "ended": None, "phases": {},
                "profile_spec": {"name": "none"}, "engine": "netem",
                "expected": {"added_rtt_ms": 0.0, "min_added_rtt_ms": 0.0, "uplink_rate_bps": None,
                             "downlink_rate_bps": None, "uplink_loss_pct": 0.0, "downlink_loss_pct": 0.0}}
        if cell.baselines:
            t = time.time()
            procs = _ping(plan.ping_count)
            texts = [p.communicate(timeout=60)[0] for p in procs]
            rows = (probes.parse_ping(texts[0], plan.ping_count, "evse1", "cpo", "up")
                    + probes.parse_ping(texts[1], plan.ping_count, "cpo", "evse1", "down"))
            probes.write_ping_csv(d / "ping.csv", rows)
            meta["phases"]["ping"] = {"started": t, "status": "complete", "ended": time.time()}
            t = time.time()
            labkit = str(Path(sys.executable).with_name("labkit"))
            echoes = [subprocess.run(["bash", "-c", probes.echo_command(labkit, "127.0.0.1", plan.ping_count, 0.2, 1,
                                                                        src=src, dst=dst, direction=way)],
                                     capture_output=True, text=True, timeout=60, check=True).stdout
                      for src, dst, way in (("evse1", "cpo", "up"), ("cpo", "evse1", "down"))]
            probes.write_echo_csv(d / "echo.csv",
                                  probes.parse_echo(echoes[0], plan.ping_count, "evse1", "cpo", "up")
                                  + probes.parse_echo(echoes[1], plan.ping_count, "cpo", "evse1", "down"))
            meta["phases"]["echo"] = {"started": t, "status": "complete", "ended": time.time()}
            t = time.time()
            with iperf3_server_module() as port:
                raw = _iperf(d, port)
            meta["iperf"] = {k: probes.iperf_figures(v) for k, v in raw.items()}
            meta["phases"]["iperf"] = {"started": t, "status": "complete", "ended": time.time()}
        t = time.time()
        csms_rows = []
        for i in range(cell.evse_hosts):
            csms_rows += _calls(d, f"evse{i + 1}", cell.stations_per_host, run.run_id, t)
        _csms(d, csms_rows)
        _monitor(d, "cpo", "cpo")
        merge_csv(sorted((d / "monitors").glob("*.csv")), d / "monitor.csv")
        meta["phases"]["ocpp"] = {"started": t, "status": "complete", "ended": time.time()}
        meta.update(status="complete", ended=iso())
        write_json(d / "cell.json", meta)
    write_summary(run.path)
    m = run.manifest()
    for c in m["cells"]:
        c["status"] = "complete"
    m.update(status="complete", ended=iso(), engine="netem")
    run.write_manifest(m)
    return run.path


def test_reads_what_the_bench_writers_wrote_without_complaint(bench_dir):
    r = load_run(bench_dir)
    assert [str(p) for p in r.problems] == []
    assert list(r.cells["cell"]) == ["none__n1x1__r1", "none__n2x1__r1"]
    assert list(r.cells["stations"]) == [1, 2]
    assert len(r.ping) == 16 and r.ping["rtt_ms"].dropna().between(0.001, 50).all()
    assert set(r.iperf["proto"] + "-" + r.iperf["direction"]) == {"tcp-up", "tcp-down", "udp-up", "udp-down"}
    assert len(r.monitor) >= 4 and {"host", "csms"} <= set(r.monitor["process"].astype(str))
    assert r.backend == "netns" and r.engine == "netem" and r.ocpp_version == "1.6"
    # every transaction message reached the CSMS once: the timed-out one through its retry
    tx = X.tx_table(r).set_index("cell")
    assert list(tx["accounting"]) == [X.COMPLETE] * 2
    assert tx.loc["none__n2x1__r1", ["sent", "acknowledged", "handled", "duplicates", "lost"]].tolist() == [
        6, 6, 6, 0, 0]


def _summary(bench_dir: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(bench_dir / "summary.csv", newline="") as fh:
        return {(r["cell"], r["measure"], r["direction"]): r for r in csv.DictReader(fh)}


def test_agrees_with_the_bench_summary(bench_dir):
    r = load_run(bench_dir)
    s = _summary(bench_dir)
    ping = T.ping_table(r).set_index("direction")
    for d in ("up", "down"):
        row = s[("none__n1x1__r1", "ping_rtt", d)]
        for stat in ("median", "mean", "min", "max", "p95"):
            assert ping.loc[d, stat] == pytest.approx(float(row[stat]), rel=1e-5), (d, stat)
        assert ping.loc[d, "n"] == int(row["n"]) and ping.loc[d, "lost"] == int(row["lost"])
    ocpp = T.ocpp_table(r).set_index("stations")
    for cell, n in (("none__n1x1__r1", 1), ("none__n2x1__r1", 2)):
        row = s[(cell, "ocpp_rtt", "all")]
        assert ocpp.loc[n, "median"] == pytest.approx(float(row["median"]), rel=1e-5)
        assert ocpp.loc[n, "std"] == pytest.approx(float(row["std"]), rel=1e-5)
        assert ocpp.loc[n, "n"] == int(row["n"])
    ip = T.iperf_table(r).set_index(["proto", "direction"])
    for d in ("up", "down"):
        assert ip.loc[("tcp", d), "bps"] == pytest.approx(float(s[("none__n1x1__r1", "tcp_goodput", d)]["median"]),
                                                          rel=1e-5)
        assert ip.loc[("udp", d), "lost_pct"] == pytest.approx(
            float(s[("none__n1x1__r1", "udp_loss", d)]["median"]), abs=1e-9)


def test_report_and_compare_on_the_bench_directory(bench_dir, tmp_path):
    rep = write_report(bench_dir, tmp_path / "r", workers=2)
    md = rep.markdown.read_text()
    assert "What is missing or suspect" not in md
    assert "| ms | none |" in md and "ping_rtt.png" in md and "goodput.png" in md
    cmp = write_compare([str(bench_dir), "thesis-2021"], tmp_path / "c", workers=2)
    rows = cmp.thesis_rows[0][2]
    med = rows[(rows["measure"] == "ocpp_rtt") & (rows["statistic"] == "median") & (rows["N"] == 1)].iloc[0]
    assert (med["thesis_profile"], med["profile"], med["thesis"]) == ("Reference", "none", 14.36)
