"""Transaction accounting (labkit.analysis.transactions): sent, acknowledged, handled, duplicates, lost.

A hand-written cell checks every definition on a few messages whose fate is known; the SYNTHETIC runs
check the counts of injected faults (a duplicate delivery after a lost answer, a message given up) and
that a format /1 run says the accounting is not available instead of reporting zeros.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from labkit import resultsformat as RF
from labkit.analysis import transactions as X
from labkit.analysis.load import load_run
from labkit.analysis.report import write_report
from labkit.cli import main

SID = "evse1-cs001"


def _key(name: str, station: str = SID, action: str = "MeterValues") -> str:
    return RF.tx_key(station, action, json.dumps({"m": name}, separators=(",", ":")))


def _write(run: Path, cid: str, calls: list[dict], csms: list[dict] | None, *, fmt: str = RF.FORMAT) -> None:
    """One cell with the given fleet rows (calls-evse1.csv) and CSMS rows (csms.csv; None: no file)."""
    c = run / "cells" / cid
    (c / "ocpp").mkdir(parents=True)
    (c / "cell.json").write_text(json.dumps({"id": cid, "profile": cid.split("__")[0], "evse_hosts": 1,
                                             "stations_per_host": 1, "repeat": 1, "status": "complete",
                                             "baselines": False}))
    (c / "monitor.csv").write_text(",".join(RF.MONITOR.columns) + "\n")

    def put(path: Path, table: RF.Table, rows: list[dict], defaults: dict) -> None:
        names = [n for n in table.columns if not (fmt == "labkit-results/1" and n in table.added)]
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            for k, r in enumerate(rows):
                full = {**defaults, "t_wall": 1000.0 + k, **r}
                w.writerow([full.get(n, "") for n in names])

    put(c / "ocpp" / "calls-evse1.csv", RF.CALLS, calls,
        {"run_id": "r", "host": "evse1", "station_id": SID, "ocpp_version": "1.6", "action": "MeterValues",
         "outcome": "ok", "rtt_ms": 2.0, "attempt": 1, "connection": 1})
    if csms is not None:
        put(c / "ocpp" / "csms.csv", RF.CSMS, csms,
            {"station_id": SID, "ocpp_version": "1.6", "action": "MeterValues", "outcome": "ok", "handle_ms": 0.3,
             "connection": 1})
    m = run / "manifest.json"
    manifest = json.loads(m.read_text()) if m.exists() else {"format": fmt, "run_id": run.name,
                                                             "status": "complete", "cells": []}
    manifest["cells"].append({"id": cid, "dir": f"cells/{cid}", "status": "complete"})
    m.write_text(json.dumps(manifest))


@pytest.fixture
def fates(tmp_path) -> Path:
    """One cell in which every transaction message has a known fate."""
    run = tmp_path / "20240101T000000Z-fates"
    run.mkdir()
    k = {n: _key(n) for n in ("ok", "dup", "lost", "offline", "late", "unrec", "unsent", "refused", "noans")}
    calls = [
        {"action": "Heartbeat"},  # not a transaction message
        {"tx_key": k["ok"], "message_id": "m1"},
        # the answer is lost: the CSMS handled it; the retry (new message id) is handled again
        {"tx_key": k["dup"], "message_id": "m2", "outcome": "timeout", "rtt_ms": ""},
        {"tx_key": k["dup"], "message_id": "m3", "attempt": 2, "connection": 2},
        # sent twice, never reached the CSMS, given up
        {"tx_key": k["lost"], "message_id": "m4", "outcome": "timeout", "rtt_ms": ""},
        {"tx_key": k["lost"], "message_id": "m5", "outcome": "timeout", "rtt_ms": "", "attempt": 2},
        # never left the station: offline, then the connection closed before the send
        {"tx_key": k["offline"], "message_id": "m6", "outcome": "send_failed", "error_code": "offline",
         "rtt_ms": ""},
        {"tx_key": k["offline"], "message_id": "m7", "outcome": "send_failed", "error_code": "ConnectionClosed",
         "rtt_ms": "", "attempt": 2},
        # offline first, delivered after the reconnection
        {"tx_key": k["late"], "message_id": "m8", "outcome": "send_failed", "error_code": "offline", "rtt_ms": ""},
        {"tx_key": k["late"], "message_id": "m9", "attempt": 2, "connection": 2, "queued_ms": 900.0},
        # acknowledged, but the CSMS has no record of it
        {"tx_key": k["unrec"], "message_id": "m10"},
        # the CSMS answered with a CallError
        {"tx_key": k["refused"], "message_id": "m11", "outcome": "call_error", "error_code": "FormationViolation"},
        # the CSMS received it and (deliberately) did not answer
        {"tx_key": k["noans"], "message_id": "m12", "outcome": "timeout", "rtt_ms": ""},
        # a transaction action without a key: not counted, flagged
        {"message_id": "m13"},
    ]
    csms = [
        {"action": "Heartbeat"},
        {"tx_key": k["ok"], "message_id": "m1", "attempt": 1},
        {"tx_key": k["dup"], "message_id": "m2", "attempt": 1},
        {"tx_key": k["dup"], "message_id": "m3", "attempt": 2, "connection": 2},
        {"tx_key": k["late"], "message_id": "m9", "attempt": 1, "connection": 2},
        {"tx_key": k["unsent"], "message_id": "m99", "attempt": 1},  # the fleet has no record of this one
        {"tx_key": k["refused"], "message_id": "m11", "outcome": "call_error", "error_code": "FormationViolation",
         "attempt": 1},
        {"tx_key": k["noans"], "message_id": "m12", "outcome": "no_answer", "attempt": 1},
    ]
    _write(run, "none__n1x1__r1", calls, csms)
    return run


def test_every_definition_on_messages_of_known_fate(fates):
    r = load_run(fates)
    row = X.tx_table(r).iloc[0]
    assert row["accounting"] == X.COMPLETE
    assert row["tx_messages"] == 8  # ok, dup, lost, offline, late, unrec, refused, noans
    assert row["sent"] == 7  # all but "offline": send_failed is never sent, whatever its error code
    assert row["acknowledged"] == 4  # ok, dup (through its retry), late, unrec
    assert row["handled"] == 4  # ok, dup, late, unsent
    assert row["duplicates"] == 1  # dup handled twice
    assert row["lost"] == 2  # lost, and noans (received but not answered: not handled)
    assert row["rejected"] == 1
    assert row["acked_unrecorded"] == 1 and row["handled_unsent"] == 1 and row["never_sent"] == 1
    assert row["shared_keys"] == 0 and row["untagged"] == 1
    text = "\n".join(str(p) for p in r.problems if p.kind == "suspect")
    for what in ("2 transaction message(s) LOST", "1 DUPLICATE delivery", "1 transaction message(s) rejected",
                 "1 transaction message(s) acknowledged but absent from csms.csv",
                 "1 transaction message(s) handled by the CSMS but not recorded as sent",
                 "1 transaction message(s) never sent", "1 row(s) of transaction actions without a tx_key"):
        assert what in text, what
    assert all(p.where == "cells/none__n1x1__r1/ocpp/" for p in r.problems if p.kind == "suspect")


def test_per_station_and_shared_keys(tmp_path):
    run = tmp_path / "20240101T000000Z-two"
    run.mkdir()
    other = "evse1-cs002"
    same = _key("same")
    calls = [{"tx_key": same}, {"tx_key": same},  # two messages, one key: two first attempts
             {"station_id": other, "tx_key": _key("a", other)}, {"station_id": other, "tx_key": _key("b", other),
                                                                  "outcome": "timeout", "rtt_ms": ""}]
    csms = [{"tx_key": same, "attempt": 1}, {"tx_key": same, "attempt": 2},
            {"station_id": other, "tx_key": _key("a", other), "attempt": 1}]
    _write(run, "4g__n1x2__r1", calls, csms)
    r = load_run(run)
    st = X.tx_table(r, by_station=True).set_index("station_id")
    assert list(st.index) == [SID, other]
    assert st.loc[SID, ["sent", "handled", "duplicates", "lost", "shared_keys"]].tolist() == [1, 1, 1, 0, 1]
    assert st.loc[other, ["sent", "acknowledged", "handled", "duplicates", "lost"]].tolist() == [2, 1, 1, 0, 1]
    cell = X.tx_table(r).iloc[0]
    assert (cell["sent"], cell["duplicates"], cell["lost"], cell["shared_keys"]) == (3, 1, 1, 1)
    assert "1 tx_key(s) shared by more than one message" in "\n".join(map(str, r.problems))


def test_without_csms_only_the_fleet_side_is_counted(tmp_path):
    run = tmp_path / "20240101T000000Z-nocsms"
    run.mkdir()
    _write(run, "none__n1x1__r1", [{"tx_key": _key("a")}, {"tx_key": _key("b"), "outcome": "timeout",
                                                             "rtt_ms": ""}], None)
    r = load_run(run)
    row = X.tx_table(r).iloc[0]
    assert row["accounting"] == X.FLEET_ONLY
    assert (row["sent"], row["acknowledged"]) == (2, 1)
    assert all(row[c] is pd.NA for c in ("handled", "duplicates", "lost"))
    assert "no csms.csv with tx_key" in "\n".join(map(str, r.problems))
    assert not [p for p in r.problems if p.kind == "suspect"]


def test_format_1_files_load_with_the_new_columns_empty_and_no_accounting(synth_dir_v1):
    r = load_run(synth_dir_v1)
    assert r.format == "labkit-results/1" and not r.problems
    assert len(r.calls) > 100 and r.echo.empty
    assert (r.calls["tx_key"] == "").all() and (r.calls["message_id"] == "").all()
    assert r.calls["connection"].isna().all() and r.events["connection"].isna().all()
    assert r.csms["attempt"].isna().all()
    cid = r.cells["cell"].iloc[0]
    assert not r.has_column("calls", cid, "tx_key") and r.has_column("calls", cid, "action")
    tx = X.tx_table(r)
    assert len(tx) == len(r.cells) and set(tx["accounting"]) == {X.NOT_AVAILABLE}
    assert tx[X.COUNTS].isna().all().all()  # not zeros: unknown
    assert X.totals(tx)["lost"] is None


def test_synthetic_faults_are_counted(synth_run, synth_tx_faults):
    tx = X.tx_table(synth_run).set_index("cell")
    assert set(tx["accounting"]) == {X.COMPLETE}
    for cid, (dups, losses) in synth_tx_faults.items():
        row = tx.loc[cid]
        assert (row["duplicates"], row["lost"]) == (dups, losses), cid
        assert row["handled"] == row["sent"] - losses  # every other message reached the CSMS, once
        assert row["acknowledged"] == row["handled"]
    clean = tx.drop(index=[*synth_tx_faults, "slow-vsat__n2x25__r1"])
    assert (clean["duplicates"] == 0).all() and (clean["lost"] == 0).all()
    assert (clean["sent"] == clean["handled"]).all() and (clean["acked_unrecorded"] == 0).all()
    # the outage cell: messages queued offline and the one cut by the outage, delivered once each
    assert tx.loc["4g__n10x1__r1", "sent"] > 10 * 32 and tx.loc["4g__n10x1__r1", "lost"] == 0
    # the cell whose calls file was torn: the CSMS handled messages the fleet's file no longer has
    assert tx.loc["slow-vsat__n2x25__r1", "handled_unsent"] > 0
    st = X.tx_table(synth_run, by_station=True)
    first = st[(st["cell"] == "slow-gprs__n1x25__r1") & (st["station_id"] == "evse1-cs001")].iloc[0]
    assert (first["duplicates"], first["lost"]) == (2, 1)
    assert st[(st["cell"] == "slow-gprs__n1x25__r1")]["duplicates"].sum() == 2
    # the CSMS's own attempt column agrees: a duplicate delivery is its attempt 2
    cs = synth_run.csms[synth_run.csms["cell"] == "4g__n1x1__r1"]
    assert (cs["attempt"] == 2).sum() == 1


def test_report_flags_loss_and_duplicates_at_the_top(synth_dir, tmp_path):
    md = write_report(synth_dir, tmp_path, figures=False).markdown.read_text()
    top = md[: md.index("## The run")]
    assert "**Transaction messages not delivered exactly once:**" in top
    assert "**3** lost (sent, never handled by the CSMS) in `vsat__n10x1__r1`, `slow-gprs__n1x25__r1`" in top
    assert "**3** extra deliveries (handled again by the CSMS) in `4g__n1x1__r1`, `slow-gprs__n1x25__r1`" in top
    assert "**suspect**: `cells/vsat__n10x1__r1/ocpp/`: 2 transaction message(s) LOST" in top
    sec = md[md.index("## Transaction messages"):]
    sec = sec[: sec.index("\n## ")]
    assert "| vsat__n10x1__r1 | vsat | 10 | 320 | 318 | 318 | 0 | **2** |" in sec
    assert "| 4g__n1x1__r1 | 4g | 1 | 32 | 32 | 32 | **1** | 0 |" in sec
    assert "*The stations concerned" in sec and "| slow-gprs__n1x25__r1 | evse1-cs001 |" in sec
    tables = tmp_path / "tables"
    assert (tables / "transactions.csv").exists() and (tables / "transactions_stations.csv").exists()


def test_report_of_a_format_1_run_says_not_available(synth_dir_v1, tmp_path):
    md = write_report(synth_dir_v1, tmp_path, figures=False).markdown.read_text()
    assert "*Transaction accounting not available: this run's calls files have no `tx_key`" in md
    assert "not delivered exactly once" not in md


def test_cli_warns_of_loss_first(synth_dir, tmp_path, capsys):
    assert main(["report", str(synth_dir), "-o", str(tmp_path), "--no-figures"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "DUPLICATE delivery" in err[0] and "LOST" in err[1]
