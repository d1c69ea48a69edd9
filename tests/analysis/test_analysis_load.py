"""Reading results directories: the SYNTHETIC run, and empty, partial and corrupt variants of it.

Every corrupt variant must load without an exception and name what is wrong, file by file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from labkit import resultsformat as RF
from labkit.analysis.load import load_run, parse_iperf
from labkit.errors import ConfigError


def _problems(run) -> str:
    return "\n".join(str(p) for p in run.problems)


def test_synthetic_run_loads_with_every_cell(synth_run):
    r = synth_run
    assert r.run_id.endswith("-synthetic")
    assert len(r.cells) == 20
    assert set(r.cells["stations"]) == {1, 10, 25, 50}
    assert set(r.cells["profile"]) == {"none", "4g", "vsat", "slow-gprs", "slow-vsat"}
    assert r.backend == "netns" and r.engine == "userspace" and r.ocpp_version == "1.6"
    # baselines once per profile (in its first cell, as labkit bench does by default); calls everywhere
    firsts = {c for c in r.cells["cell"] if "__n1x1__" in c}
    assert set(r.ping["cell"].unique()) == firsts
    assert set(r.iperf["cell"].unique()) == firsts
    assert set(r.calls["cell"].unique()) == set(r.cells["cell"])
    # cells without baselines are not reported as missing them
    assert not [p for p in r.problems if "ping.csv" in p.where or "iperf" in p.where]
    assert r.ping["lost"].dtype == bool and r.ping["lost"].any()
    assert {"ok", "call_error", "timeout", "connection_lost"} <= set(r.calls["outcome"].astype(str))
    assert {"disconnected", "reconnected", "queue_flushed"} <= set(r.events["event"].astype(str))
    assert {"csms", "fleet", "engine"} <= set(r.monitor["process"].astype(str))


def test_synthetic_run_reports_its_incomplete_cell_and_torn_line(synth_run):
    text = _problems(synth_run)
    assert "status is 'incomplete'" in text
    assert "cells/slow-vsat__n2x25__r1: cell status 'failed': ocpp failed (evse2: the fleet exited" in text
    assert "cells/slow-vsat__n2x25__r1/ocpp/calls-evse2.csv: last line torn" in text
    # the torn file's complete lines are kept
    assert (synth_run.calls["cell"] == "slow-vsat__n2x25__r1").sum() > 1000


def test_rows_match_the_files(synth_dir, synth_run):
    cid = "4g__n1x1__r1"
    lines = (synth_dir / "cells" / cid / "ping.csv").read_text().splitlines()
    assert lines[0].endswith(",ttl")  # a column the reader does not use is ignored
    assert (synth_run.ping["cell"] == cid).sum() == len(lines) - 1
    first = lines[1].split(",")
    row = synth_run.ping[synth_run.ping["cell"] == cid].iloc[0]
    assert (row["src"], row["dst"], row["direction"], int(row["seq"])) == (first[0], first[1], first[2], int(first[3]))
    if first[5]:
        assert row["rtt_ms"] == pytest.approx(float(first[5]))


def test_not_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such results directory"):
        load_run(tmp_path / "absent")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        load_run(f)


def test_empty_directory(tmp_path):
    r = load_run(tmp_path)
    assert not r.has_data and r.cells.empty and r.calls.empty
    text = _problems(r)
    assert "manifest.json: missing" in text
    assert "cells/: no cells" in text


def test_a_directory_of_runs_is_named_as_such(synth_dir):
    r = load_run(synth_dir.parent)
    assert f"this is a directory of 1 run(s), not a run: give one of them, e.g. {synth_dir}" in _problems(r)


def test_manifest_not_json_still_finds_cells(copy_run):
    d = copy_run()
    (d / "manifest.json").write_text('{"format": "labkit-results/1", "cells": [')
    r = load_run(d)
    assert "manifest.json: not valid JSON (line 1" in _problems(r)
    assert len(r.cells) == 20 and len(r.calls) > 1000


def test_cell_without_cell_json_uses_manifest_and_id(copy_run):
    d = copy_run()
    (d / "cells" / "vsat__n10x1__r1" / "cell.json").unlink()
    r = load_run(d)
    row = r.cells.set_index("cell").loc["vsat__n10x1__r1"]
    assert row["profile"] == "vsat" and row["stations"] == 10
    assert "cells/vsat__n10x1__r1/cell.json: missing" in _problems(r)


def test_unidentifiable_cell_is_skipped_with_a_note(copy_run):
    d = copy_run()
    (d / "cells" / "mystery").mkdir()
    r = load_run(d)
    assert "cells/mystery: cannot tell the profile" in _problems(r)
    assert "mystery" not in set(r.cells["cell"])


def test_listed_cell_without_directory(copy_run):
    d = copy_run()
    shutil.rmtree(d / "cells" / "none__n1x1__r1")
    r = load_run(d)
    assert "cells/none__n1x1__r1: cell listed in manifest.json" in _problems(r)
    assert len(r.cells) == 19


def test_torn_and_malformed_csv_lines_are_skipped_and_counted(copy_run):
    d = copy_run()
    p = d / "cells" / "none__n1x1__r1" / "ping.csv"
    lines = p.read_text().splitlines(keepends=True)
    n = len(lines) - 1
    lines.insert(5, "evse1,cpo,up,999,1714557600.1,not-a-number,0\n")  # garbage in a numeric column
    lines.insert(7, "evse1,cpo,up\n")  # too few fields
    lines.insert(9, "evse1,cpo,up,1,2,3,0,extra,fields\n")  # too many fields
    p.write_text("".join(lines) + "evse1,cpo,up,77,17145")  # torn last line
    r = load_run(d)
    text = _problems(r)
    assert "cells/none__n1x1__r1/ping.csv: last line torn" in text
    assert "cells/none__n1x1__r1/ping.csv: 3 malformed line(s) skipped" in text
    assert (r.ping["cell"] == "none__n1x1__r1").sum() == n


def test_csv_without_required_columns_is_ignored(copy_run):
    d = copy_run()
    p = d / "cells" / "4g__n1x1__r1" / "ocpp" / "calls-evse1.csv"
    p.write_text("a,b,c\n1,2,3\n")
    r = load_run(d)
    assert "calls-evse1.csv: header lacks column(s) action, outcome, t_wall" in _problems(r)
    assert (r.calls["cell"] == "4g__n1x1__r1").sum() == 0


def test_empty_and_binary_files(copy_run):
    d = copy_run()
    (d / "cells" / "4g__n1x1__r1" / "monitor.csv").write_bytes(b"")
    (d / "cells" / "4g__n10x1__r1" / "ping.csv").write_bytes(bytes(range(256)) * 4)
    r = load_run(d)
    text = _problems(r)
    assert "cells/4g__n1x1__r1/monitor.csv: empty file" in text
    assert "cells/4g__n10x1__r1/ping.csv: header lacks column(s)" in text


def test_missing_files_are_named_with_their_phase(copy_run):
    d = copy_run()
    c = d / "cells" / "vsat__n1x1__r1"
    (c / "ping.csv").unlink()
    shutil.rmtree(c / "iperf")
    shutil.rmtree(c / "ocpp")
    cj = json.loads((c / "cell.json").read_text())
    cj["phases"]["iperf"]["status"] = "skipped"
    (c / "cell.json").write_text(json.dumps(cj))
    c2 = d / "cells" / "vsat__n10x1__r1"
    cj2 = json.loads((c2 / "cell.json").read_text())
    cj2["baselines"] = True  # this cell should have had baselines
    (c2 / "cell.json").write_text(json.dumps(cj2))
    r = load_run(d)
    text = _problems(r)
    assert "cells/vsat__n1x1__r1/ping.csv: missing (phase ping: complete)" in text
    assert "cells/vsat__n1x1__r1/iperf/" not in text  # skipped on purpose: not a problem
    assert "cells/vsat__n1x1__r1/ocpp/: no OCPP call samples" in text
    assert "cells/vsat__n10x1__r1/ping.csv: missing (phase ping not recorded)" in text


def test_iperf_error_and_garbage(copy_run):
    d = copy_run()
    i = d / "cells" / "none__n1x1__r1" / "iperf"
    (i / "tcp-up.json").write_text(json.dumps({"start": {}, "intervals": [], "end": {},
                                               "error": "unable to connect to server: Connection refused"}))
    (i / "tcp-down.json").write_text("[1, 2, 3]")
    (i / "udp-up.json").write_text('{"end": {"sum": ')
    r = load_run(d)
    text = _problems(r)
    assert "iperf/tcp-up.json: iperf3 reported an error: unable to connect" in text
    assert "iperf/tcp-down.json: expected a JSON object" in text
    assert "iperf/udp-up.json: not valid JSON" in text
    got = r.iperf[r.iperf["cell"] == "none__n1x1__r1"]
    assert list(got["proto"] + "-" + got["direction"]) == ["udp-down"]


def test_running_status_is_reported(copy_run):
    d = copy_run()
    m = json.loads((d / "manifest.json").read_text())
    m["status"] = "running"
    (d / "manifest.json").write_text(json.dumps(m))
    assert "status is 'running'" in _problems(load_run(d))


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs the iperf3 binary")
def test_parse_real_iperf3_output_on_loopback(iperf3_server):
    """Real iperf3 -J output (TCP and UDP, normal and -R), on 127.0.0.1 only."""
    out = {}
    with iperf3_server() as port:
        for name, extra in (("tcp", []), ("udp", ["-u", "-b", "2M"]), ("tcp-r", ["-R"])):
            for _ in range(20):
                res = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "1", "-J", *extra],
                                     capture_output=True, text=True, timeout=30, check=False)
                if res.returncode == 0 and (json.loads(res.stdout).get("end") or {}).get("sum_received"):
                    break
                time.sleep(0.3)  # "the server is busy": the previous test is still closing
            assert res.returncode == 0, res.stdout[-500:]
            out[name] = json.loads(res.stdout)
    tcp, iv = parse_iperf(out["tcp"])
    assert tcp["bps"] > 1e8 and tcp["bps"] == pytest.approx(out["tcp"]["end"]["sum_received"]["bits_per_second"])
    assert "lost_pct" not in tcp and len(iv) >= 1
    udp, _ = parse_iperf(out["udp"])
    assert udp["bps"] == pytest.approx(2e6, rel=0.1)
    assert udp["lost_pct"] >= 0 and udp["jitter_ms"] >= 0
    assert udp["target_bps"] == pytest.approx(2e6)
    rev, _ = parse_iperf(out["tcp-r"])
    assert rev["bps"] > 1e8
    assert not np.isnan(rev["seconds"])


def test_partial_attempts_kept_by_resume_are_not_counted(copy_run):
    d = copy_run()
    shutil.copytree(d / "cells" / "none__n1x1__r1", d / "cells" / "none__n1x1__r1.partial-1")
    r = load_run(d)
    assert len(r.cells) == 20
    assert "1 earlier partial attempt(s) kept aside by --resume (none__n1x1__r1.partial-1)" in _problems(r)
    assert (r.calls["cell"] == "none__n1x1__r1").sum() == len(
        load_run(d).calls.query("cell == 'none__n1x1__r1'"))


def test_format_2_columns_and_the_echo_probe(synth_run):
    r = synth_run
    assert r.format == RF.FORMAT == "labkit-results/3"  # /3 only added schedule.json: /2's columns are all here
    firsts = {c for c in r.cells["cell"] if "__n1x1__" in c}
    assert set(r.echo["cell"].unique()) == firsts and r.echo["lost"].dtype == bool
    assert r.echo["rtt_ms"].dropna().between(0.01, 2000).all()
    tx = r.calls[r.calls["tx_key"] != ""]
    assert set(tx["action"].astype(str)) == {"StartTransaction", "MeterValues", "StopTransaction"}
    assert (r.calls["message_id"] != "").all() and r.calls["connection"].notna().all()
    assert r.events["connection"].max() == 2  # the outage cell's reconnections
    assert set(r.csms["attempt"].dropna().unique()) == {1.0, 2.0}  # the duplicate deliveries
    assert r.has_column("calls", "none__n1x1__r1", "tx_key") and r.has_column("echo", "none__n1x1__r1", "rtt_ms")


def test_a_format_this_labkit_does_not_read_is_a_note(copy_run):
    d = copy_run()
    m = json.loads((d / "manifest.json").read_text())
    m["format"] = "labkit-results/9"
    (d / "manifest.json").write_text(json.dumps(m))
    text = _problems(load_run(d))
    assert ("manifest.json: format 'labkit-results/9', this labkit reads 'labkit-results/1', 'labkit-results/2', "
            "'labkit-results/3'" in text)


def test_the_reader_takes_its_columns_from_resultsformat():
    """One definition of the results format: the reader has no column list of its own."""
    import inspect

    from labkit import resultsformat as RF
    from labkit.analysis import load

    assert load.FORMAT == RF.FORMAT and load.READS == RF.READS
    assert not hasattr(load, "SCHEMAS")
    assert "RF.TABLES[kind]" in inspect.getsource(load.parse_csvs)
    assert list(load._empty_frame("calls").columns) == list(RF.CALLS.columns)
