"""The sample files, the status file, the CLI's handling of bad input and signals, and its light imports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from labkit.cli import main
from labkit.sim.samples import CALL_COLUMNS, CsvSink, StatusFile, read_rows
from tests.sim.conftest import PY, stop


def test_sink_appends_and_readers_skip_a_torn_line(tmp_path):
    path = tmp_path / "calls.csv"
    sink = CsvSink(path, CALL_COLUMNS)
    sink.write(["r", "h", "cs1", "1.6", "Heartbeat", "1.0", 1, "0.5", "ok", "", 57, 40, "", 1, "m1", 1, ""])
    sink.close()
    with open(path, "a") as fh:  # a crash in the middle of a row
        fh.write("r,h,cs1,1.6,MeterVal")
    assert [r["action"] for r in read_rows(path)] == ["Heartbeat"]
    sink = CsvSink(path, CALL_COLUMNS)  # a restarted writer ends the torn line and adds no second header
    sink.write(["r", "h", "cs1", "1.6", "MeterValues", "2.0", 2, "0.7", "ok", "a, b", 270, 20, "", 1, "m2", 1, "k"])
    sink.close()
    rows = list(read_rows(path))
    assert [r["action"] for r in rows] == ["Heartbeat", "MeterValues"]
    assert rows[1]["error_code"] == "a, b"
    assert path.read_text().count("run_id,") == 1
    with pytest.raises(ValueError, match="17 columns"):  # a row readers would skip is a bug, never silent
        sink = CsvSink(path, CALL_COLUMNS)
        sink.write(["r", "h", "cs1"])


def test_status_file_is_replaced_atomically(tmp_path):
    sf = StatusFile(tmp_path / "s.json")
    sf.write({"phase": "running"})
    sf.write({"phase": "done"})
    assert json.loads((tmp_path / "s.json").read_text())["phase"] == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["fleet", "--url", "http://127.0.0.1:1/"], "--url"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--stations", "0"], "--stations"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--ocpp", "1.5"], "--ocpp"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--jitter", "2"], "--jitter"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--id-prefix", "a/b"], "--id-prefix"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--scenario", "session", "--sessions", "0"], "--sessions"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--ping-interval", "-1"], "--ping-interval"),
        (["csms", "--listen", "nowhere"], "--listen"),
        (["csms", "--heartbeat-interval", "0"], "--heartbeat-interval"),
        (["csms", "--validation", "maybe"], "--validation"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "calls.csv"
    rc = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_sigterm_stops_the_fleet_cleanly(csms_factory, tmp_path):
    csms = csms_factory()
    calls, status = tmp_path / "calls.csv", tmp_path / "fleet.json"
    p = subprocess.Popen(
        [
            PY,
            "-m",
            "labkit",
            "fleet",
            "--url",
            csms.url,
            "--stations",
            "5",
            "--meter-values",
            "100000",
            "--out",
            str(calls),
            "--status",
            str(status),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if status.exists() and json.loads(status.read_text()).get("stations_connected") == 5:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(20)
    err = p.stderr.read()
    assert rc == 0, err
    assert "stopped by SIGTERM" in err
    st = json.loads(status.read_text())
    assert st["finished"] is False and st["phase"] == "stopped" and st["stop_reason"] == "SIGTERM"
    rows = list(read_rows(calls))
    assert len(rows) >= 5 and calls.read_text().endswith("\n")
    # the CSMS stops cleanly too and says so in its status file
    assert stop(csms.proc) == 0
    assert json.loads(csms.status.read_text())["finished"] is True


def test_simulators_do_not_import_the_analysis_stack():
    code = (
        "import sys, labkit.cli.sim, labkit.sim.fleet, labkit.sim.csms, labkit.sim.validation;"
        "bad = [m for m in ('pandas', 'matplotlib', 'seaborn', 'fabric', 'paramiko', 'numpy') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_csms_reports_a_busy_port(csms_factory):
    csms = csms_factory()
    p = subprocess.run(
        [PY, "-m", "labkit", "csms", "--listen", f"127.0.0.1:{csms.port}"], capture_output=True, text=True, timeout=20
    )
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "cannot listen" in p.stderr
