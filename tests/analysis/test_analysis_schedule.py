"""A schedule's phases in the analysis (``labkit bench --schedule``): schedule.json read through
labkit.resultsformat, every call, transaction message and connection event attributed to the phase in which
it happened by the times *as applied on the gateway*, the per-phase table summing to the cell's accounting, the
report's section and figure, and compare on such runs. Synthetic results written here, row by row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from labkit import resultsformat as RF
from labkit.analysis import phases as PH
from labkit.analysis import transactions as X
from labkit.analysis.load import load_run
from labkit.analysis.report import write_report
from tests.conftest import run_cli

T0 = 1_800_000_000.0  # the first phase's applied start (gateway clock)
SID = "evse1-cs001"


def key(name: str, station: str = SID) -> str:
    return RF.tx_key(station, "MeterValues", json.dumps({"m": name}, separators=(",", ":")))


def phase(index: int, label: str, start: float, end: float | None, *, cycle: int = 0, profile: str | None = None,
          latency_ms: float | None = 5.0, planned: float | None = None) -> dict:
    """One schedule.json phase entry (labkit.schedules.PhaseRecord's keys); times from T0. The planned start is
    off the applied one by the latency: the attribution must use the applied times."""
    p = start - (latency_ms or 0) / 1000 if planned is None else planned
    return {"index": index, "cycle": cycle, "label": label, "profile": profile or label, "outage": label == "outage",
            "planned_start": T0 + p, "planned_end": None, "sent": T0 + p, "returned": T0 + start + 0.002,
            "applied_start": T0 + start, "applied_end": None if end is None else T0 + end, "engine_at": None,
            "latency_ms": None if index == 0 and cycle == 0 else latency_ms, "switch": {}, "verified": True,
            "problems": []}


def write_cell(run: Path, cid: str, phases: list[dict] | None, calls: list[dict], csms: list[dict],
               events: list[dict] = (), *, name: str = "short", text: str = "4g 10s -> 3g 10s -> outage 5s -> 4g 10s",
               repeat: bool = False, meta: dict | None = None) -> None:
    c = run / "cells" / cid
    (c / "ocpp").mkdir(parents=True)
    (c / "cell.json").write_text(json.dumps({
        "id": cid, "profile": "4g", "evse_hosts": 1, "stations_per_host": 1, "repeat": 1, "status": "complete",
        "baselines": False, "phases": {"ocpp": {"started": T0 - 2, "ended": T0 + 40, "status": "complete"}},
        "schedule": {"name": name, "text": text, "file": RF.SCHEDULE_FILE}}))
    (c / "monitor.csv").write_text(",".join(RF.MONITOR.columns) + "\n")
    if phases is not None:
        (c / RF.SCHEDULE_FILE).write_text(json.dumps({
            "schedule": {"name": name, "text": text, "repeat": repeat, "phases": []}, "engine": "userspace",
            "seed": 1, "frame": {}, "gateway": "gw", "started": T0, "ended": T0 + 40, "ended_by": "stopped",
            "holds": "4g", "phases": phases, **(meta or {})}))

    def put(path: Path, table: RF.Table, rows, defaults: dict) -> None:
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(table.columns)
            for r in rows:
                full = {**defaults, **r, "t_wall": T0 + r["t"]}
                w.writerow([full.get(n, "") for n in table.columns])

    put(c / "ocpp" / "calls-evse1.csv", RF.CALLS, calls,
        {"run_id": "r", "host": "evse1", "station_id": SID, "ocpp_version": "1.6", "action": "MeterValues",
         "outcome": "ok", "rtt_ms": 50.0, "attempt": 1, "connection": 1})
    put(c / "ocpp" / "csms.csv", RF.CSMS, csms,
        {"station_id": SID, "ocpp_version": "1.6", "action": "MeterValues", "outcome": "ok", "handle_ms": 0.3,
         "connection": 1, "attempt": 1})
    put(c / "ocpp" / "events-evse1.csv", RF.EVENTS, events, {"run_id": "r", "host": "evse1", "station_id": SID})
    m = run / "manifest.json"
    manifest = json.loads(m.read_text()) if m.exists() else {
        "format": RF.FORMAT, "run_id": run.name, "status": "complete", "cells": [],
        "plan": {"schedule": name, "scenario": "session"}, "schedule": {"name": name, "text": text}}
    manifest["cells"].append({"id": cid, "dir": f"cells/{cid}", "status": "complete", "schedule": name})
    m.write_text(json.dumps(manifest))


# 4g 0-10 s, 3g 10-20 s, outage 20-25 s, 4g 25-35 s; stopped at 35 s
# (the switch to 3g held 200 ms after its planned time)
HANDOVER = [phase(0, "4g", 0, 10), phase(1, "3g", 10, 20, latency_ms=200.0), phase(2, "outage", 20, 25, profile="4g"),
            phase(3, "4g", 25, 35)]


def handover_run(root: Path) -> Path:
    run = root / "run-handover"
    k = {n: key(n) for n in ("early", "boundary", "pre-switch", "late-answer", "mid", "queued", "dup", "lost",
                             "after", "p4")}
    calls = [
        {"t": -0.5, "tx_key": k["early"]},  # before the schedule's clock started
        {"t": 9.5, "tx_key": k["late-answer"], "rtt_ms": 1500.0},  # sent in phase 1, answered in phase 2
        {"t": 9.9, "tx_key": k["pre-switch"]},  # after 3g's planned start, before it held: still 4g's
        {"t": 10.0, "tx_key": k["boundary"]},  # at phase 2's applied start: phase 2
        {"t": 12.0, "tx_key": k["mid"]},
        # issued during the outage, held in the offline queue, sent once the link was back: the outage's
        {"t": 26.0, "tx_key": k["queued"], "queued_ms": 5000.0},
        # sent during the outage, answer lost, retried after it: the CSMS handled it twice
        {"t": 22.0, "tx_key": k["dup"], "outcome": "connection_lost", "rtt_ms": ""},
        {"t": 26.5, "tx_key": k["dup"], "attempt": 2, "connection": 2},
        {"t": 24.0, "tx_key": k["lost"], "outcome": "timeout", "rtt_ms": ""},  # never reached the CSMS
        {"t": 30.0, "tx_key": k["p4"]},
        {"t": 36.0, "tx_key": k["after"]},  # after the schedule was stopped
        {"t": 5.0, "action": "Heartbeat", "tx_key": ""},
    ]
    csms = [{"t": -0.45, "tx_key": k["early"]}, {"t": 10.9, "tx_key": k["late-answer"]},
            {"t": 10.05, "tx_key": k["boundary"]}, {"t": 9.95, "tx_key": k["pre-switch"]},
            {"t": 12.05, "tx_key": k["mid"]},
            {"t": 26.05, "tx_key": k["queued"]}, {"t": 22.02, "tx_key": k["dup"]},
            {"t": 26.55, "tx_key": k["dup"], "attempt": 2}, {"t": 30.05, "tx_key": k["p4"]},
            {"t": 36.05, "tx_key": k["after"]}]
    events = [{"t": -1.0, "event": "connected", "connection": 1}, {"t": 23.0, "event": "disconnected", "connection": 1},
              {"t": 24.5, "event": "connect_failed", "connection": 2},
              {"t": 25.8, "event": "reconnected", "connection": 2, "downtime_ms": 2800.0}]
    write_cell(run, "4g__n1x1__r1", HANDOVER, calls, csms, events)
    return run


@pytest.fixture(scope="module")
def handover(tmp_path_factory) -> Path:
    return handover_run(tmp_path_factory.mktemp("sched"))


def test_phases_are_read_through_the_one_definition(handover):
    r = load_run(handover)
    assert list(r.schedule.columns[:2]) == ["cell", "seq"]
    assert set(RF.SCHEDULE_PHASE.keys) <= set(r.schedule.columns)
    assert r.schedule["seq"].tolist() == [1, 2, 3, 4] and r.schedule["label"].tolist() == ["4g", "3g", "outage", "4g"]
    assert r.cells["schedule"].tolist() == ["short"] and r.schedule_meta["4g__n1x1__r1"]["ended_by"] == "stopped"
    assert not [p for p in r.problems if p.kind != "suspect"], r.problems
    pt = PH.phase_table(r)
    assert pt["start_s"].tolist() == [0.0, 10.0, 20.0, 25.0] and pt["end_s"].tolist() == [10.0, 20.0, 25.0, 35.0]
    assert pt["latency_ms"].isna().tolist() == [True, False, False, False]
    assert pt.loc[2, "outage"] and pt.loc[2, "link"] == "4g"


def test_each_transaction_belongs_to_the_phase_in_which_it_was_sent(handover):
    r = load_run(handover)
    t = PH.phase_tx_table(r).set_index("seq")
    assert t.index.tolist() == [PH.BEFORE, 1, 2, 3, 4, PH.AFTER]
    assert t.loc[PH.BEFORE, "label"] == "(before)" and t.loc[PH.AFTER, "label"] == "(after)"
    # phase 1: the message answered 1.5 s later, in phase 2, is phase 1's, and so is the one sent after phase 2's
    # planned start but before it held on the gateway
    assert (t.loc[1, "sent"], t.loc[1, "acknowledged"], t.loc[1, "handled"]) == (2, 2, 2)
    # phase 2: the one sent at its applied start (5 ms after its planned start) and the one in its middle
    assert (t.loc[2, "sent"], t.loc[2, "lost"]) == (2, 0)
    assert t.loc[2, "start_s"] == pytest.approx(10.0)
    # the outage: the message queued in it, the one delivered twice and the one lost
    assert (t.loc[3, "sent"], t.loc[3, "acknowledged"], t.loc[3, "handled"]) == (3, 2, 2)
    assert (t.loc[3, "duplicates"], t.loc[3, "lost"]) == (1, 1)
    assert (t.loc[4, "sent"], t.loc[4, "duplicates"], t.loc[4, "lost"]) == (1, 0, 0)
    assert (t.loc[PH.BEFORE, "sent"], t.loc[PH.AFTER, "sent"]) == (1, 1)
    # calls by the time they were sent: the heartbeat in phase 1; the failed attempts in the outage
    assert (t.loc[1, "calls_ok"], t.loc[3, "calls_ok"], t.loc[3, "calls_failed"], t.loc[4, "calls_ok"]) == (3, 0, 2, 3)
    assert t.loc[1, "rtt_median_ms"] == pytest.approx(50.0) and pd.isna(t.loc[3, "rtt_median_ms"])
    # connection events by their own time
    assert (t.loc[3, "disconnected"], t.loc[3, "connect_failed"], t.loc[4, "reconnected"]) == (1, 1, 1)
    assert t.loc[[1, 2], ["disconnected", "reconnected", "connect_failed"]].to_numpy().sum() == 0


def test_the_phases_add_up_to_the_cells_accounting(handover):
    r = load_run(handover)
    per_phase = PH.phase_tx_table(r)[X.COUNTS].astype("int64").sum()
    cell = X.tx_table(r).iloc[0]
    for c in X.COUNTS:
        assert per_phase[c] == cell[c], c
    keys = X.tx_keys(r)
    assert len(keys) == 10 and keys[X.COUNTS[:-1]].sum().to_dict() == {c: int(cell[c]) for c in X.COUNTS[:-1]}


def test_a_repeated_schedule_keeps_its_passes_apart(tmp_path):
    run = tmp_path / "run-repeat"
    ph = [phase(0, "4g", 0, 3), phase(1, "outage", 3, 4, profile="4g"),
          phase(0, "4g", 4, 7, cycle=1), phase(1, "outage", 7, 8, cycle=1, profile="4g")]
    calls = [{"t": 1.0, "tx_key": key("a")}, {"t": 3.5, "tx_key": key("b"), "outcome": "timeout", "rtt_ms": ""},
             {"t": 5.0, "tx_key": key("c")}, {"t": 7.5, "tx_key": key("d"), "outcome": "timeout", "rtt_ms": ""}]
    csms = [{"t": 1.01, "tx_key": key("a")}, {"t": 5.01, "tx_key": key("c")}]
    write_cell(run, "4g__n1x1__r1", ph, calls, csms, text="4g 3s -> outage 1s (repeat)", repeat=True)
    r = load_run(run)
    pt = PH.phase_table(r)
    assert pt["cycle"].tolist() == [0, 0, 1, 1] and pt["seq"].tolist() == [1, 2, 3, 4]
    t = PH.phase_tx_table(r).set_index("seq")
    assert t.index.tolist() == [1, 2, 3, 4]  # nothing before or after: no such rows
    assert t["lost"].astype(int).tolist() == [0, 1, 0, 1] and t["sent"].astype(int).tolist() == [1, 1, 1, 1]
    assert t["cycle"].tolist() == [0, 0, 1, 1]


def test_a_missing_or_damaged_schedule_record_is_listed_not_fatal(tmp_path):
    run = tmp_path / "run-damaged"
    write_cell(run, "4g__n1x1__r1", None, [{"t": 1.0, "tx_key": key("a")}], [{"t": 1.01, "tx_key": key("a")}])
    ph = [phase(0, "4g", 0, 10), {"index": 1, "label": "3g"}, "junk", phase(2, "4g", 20, 30)]
    ph[3]["applied_start"] = "soon"
    write_cell(run, "3g__n1x1__r1", ph, [{"t": 1.0, "tx_key": key("b")}], [{"t": 1.01, "tx_key": key("b")}])
    r = load_run(run)
    text = "\n".join(map(str, r.problems))
    assert "cells/4g__n1x1__r1/schedule.json: missing: cell.json says the OCPP phase ran a schedule" in text
    assert "cells/3g__n1x1__r1/schedule.json: 3 phase(s) without a usable index, label, applied_start skipped" in text
    assert r.schedule["cell"].tolist() == ["3g__n1x1__r1"]
    assert PH.schedule_cells(r) == ["3g__n1x1__r1"]
    assert PH.phase_tx_table(r)["sent"].astype(int).sum() == 1
    (run / "cells" / "3g__n1x1__r1" / RF.SCHEDULE_FILE).write_text("{not json")
    r = load_run(run)
    assert r.schedule.empty and PH.phase_tx_table(r).empty
    assert any("schedule.json" in p.where for p in r.problems)


def test_report_has_the_phases_the_table_per_phase_and_the_figure(handover, tmp_path):
    res = write_report(handover, tmp_path / "rep", workers=1)
    md = res.markdown.read_text()
    assert "## The link's schedule: phases over time" in md
    assert "`short` (4g 10s -> 3g 10s -> outage 5s -> 4g 10s)" in md
    assert "| 4g__n1x1__r1 | 3 | outage | 4g (cut) |" in md
    section = md.split("## The link's schedule")[1].split("\n## ")[0]
    assert "| 4g__n1x1__r1 | 3 | outage | 3 | 2 | 2 | **1** | **1** |" in section
    assert "| 4g__n1x1__r1 | 2 | 3g | 3g | 9.8 | 10.0 | 200.0 | 10.0 | as planned |" in md
    fig = tmp_path / "rep" / "figures" / "schedule_00_4g__n1x1__r1.png"
    assert fig.stat().st_size > 10_000 and "figures/schedule_00_4g__n1x1__r1.png" in md
    csv_t = pd.read_csv(tmp_path / "rep" / "tables" / "schedule_transactions.csv")
    assert csv_t["sent"].sum() == 10 and (tmp_path / "rep" / "tables" / "schedule_phases.csv").exists()


def test_a_run_without_a_schedule_has_no_such_section(synth_run, tmp_path):
    assert synth_run.schedule.empty and PH.phase_tx_table(synth_run).empty
    assert (synth_run.cells["schedule"] == "").all()


def test_compare_reads_runs_with_schedules(handover, tmp_path):
    other = handover_run(tmp_path)
    assert run_cli("compare", str(handover), str(other), "--out", str(tmp_path / "cmp"), "--no-figures") == 0
    assert (tmp_path / "cmp").is_dir()


def test_stamps_of_other_hosts_go_on_the_gateways_clock_first(tmp_path):
    """On VMs each host keeps its own clock: the schedule measured the gateway's offset (+0.1 s) and the
    station host's (-0.9 s), so a call evse1 stamped 9.2 s was sent at 10.2 s on the gateway's clock, in phase
    2; without the offsets (one machine) the same stamp is phase 1's."""
    def off(x: float) -> dict:
        return {"offset_s": x, "uncertainty_s": 0.0005, "samples": 16, "measured_at": T0}

    clocks = {"gateway_clock": {"start": off(0.1), "end": off(0.1)},
              "host_clocks": {"start": {"evse1": off(-0.9), "cpo": off(0.0)}, "end": {"evse1": off(-0.9)}}}
    seqs = {}
    for label, meta in (("vm", clocks), ("netns", None)):
        run = tmp_path / label
        k = key("shifted")
        write_cell(run, "4g__n1x1__r1", HANDOVER, [{"t": 9.2, "tx_key": k}, {"t": 3.0, "tx_key": key("early")}],
                   [{"t": 9.25, "tx_key": k}, {"t": 3.05, "tx_key": key("early")}],
                   [{"t": 19.5, "event": "disconnected", "connection": 1}], meta=meta)
        r = load_run(run)
        assert PH.clock_shifts(r, "4g__n1x1__r1") == ({"evse1": pytest.approx(1.0), "cpo": pytest.approx(0.1)}
                                                       if meta else {})
        t = PH.phase_tx_table(r).set_index("seq")
        seqs[label] = {"sent": t["sent"].to_dict(), "calls": t["calls_ok"].to_dict(),
                       "disconnected": t["disconnected"].to_dict()}
    assert seqs["vm"]["sent"][2] == 1 and seqs["vm"]["sent"][1] == 1 and seqs["vm"]["calls"][2] == 1
    assert seqs["netns"]["sent"][1] == 2 and seqs["netns"]["sent"][2] == 0
    # the disconnection at 19.5 s on evse1's clock happened at 20.5 s on the gateway's: in the outage
    assert seqs["vm"]["disconnected"][3] == 1 and seqs["netns"]["disconnected"][2] == 1
