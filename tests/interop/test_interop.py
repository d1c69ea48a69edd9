"""Interoperability with an independent OCPP-J implementation: npm ``ocpp-rpc`` in strict schema mode.

Both directions, OCPP 1.6J and 2.0.1: ocpp-rpc's client as the charging station against ``labkit csms``
(tests/interop/charger.js), and ``labkit fleet`` against ocpp-rpc's server as the CSMS (csms.js). In
strict mode ocpp-rpc validates every call and reply against its own copy of the OCPP JSON schemas and
reports anything that fails. Needs Node.js and npm (Debian packages ``nodejs`` and ``npm``); ``npm ci``
installs the locked ocpp-rpc into tests/interop/node_modules once.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.sim.conftest import run_fleet

HERE = Path(__file__).resolve().parent
NODE, NPM = shutil.which("node"), shutil.which("npm")
pytestmark = pytest.mark.skipif(not (NODE and NPM), reason="needs node and npm (apt-get install nodejs npm)")


@pytest.fixture(scope="module")
def node_modules():
    marker = HERE / "node_modules" / "ocpp-rpc" / "package.json"
    if not marker.exists():
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, capture_output=True, text=True, timeout=300
        )
    return HERE / "node_modules"


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
def test_their_charger_with_our_csms(node_modules, csms_factory, protocol):
    csms = csms_factory()
    p = subprocess.run(
        [NODE, str(HERE / "charger.js"), csms.url, protocol, "rpc-station-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.stdout.strip(), p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and report["failures"] == [], report
    assert report["ok"] == 10
    version = protocol.removeprefix("ocpp")
    rows = [r for r in csms.rows() if r["station_id"] == "rpc-station-1"]
    assert {r["ocpp_version"] for r in rows} == {version}
    assert sum(r["outcome"] == "ok" for r in rows) == (10 if version == "1.6" else 12)  # 3 TransactionEvents
    assert [(r["action"], r["error_code"]) for r in rows if r["outcome"] != "ok"] == [
        ("NoSuchAction", "NotImplemented")
    ]


@pytest.fixture
def their_csms(node_modules):
    proc = subprocess.Popen(
        [NODE, str(HERE / "csms.js"), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert line.startswith("listening "), proc.stderr.read()
    port = int(line.split()[1])
    state: dict = {}

    def report() -> dict:
        if "report" not in state:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
            state["report"] = json.loads(out.strip().splitlines()[-1])
        return state["report"]

    try:
        yield f"ws://127.0.0.1:{port}/", report
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_our_fleet_with_their_csms(their_csms, tmp_path, version):
    url, report = their_csms
    thesis = run_fleet(
        tmp_path / "t",
        url,
        "--ocpp",
        version,
        "--stations",
        "2",
        "--meter-values",
        "10",
        "--step-interval",
        "0.01",
        "--meter-interval",
        "0.01",
    )
    session = run_fleet(
        tmp_path / "s",
        url,
        "--ocpp",
        version,
        "--stations",
        "2",
        "--scenario",
        "session",
        "--think-time",
        "0.1",
        "--meter-interval",
        "0.1",
        "--charge-time",
        "0.3",
    )
    for run in (thesis, session):
        assert run.rc == 0, run.stderr
        assert run.calls and all(r["outcome"] == "ok" for r in run.calls), [
            r for r in run.calls if r["outcome"] != "ok"
        ]
    rep = report()
    assert rep["failures"] == []
    tx = "StartTransaction" if version == "1.6" else "TransactionEvent"
    assert rep["calls"]["BootNotification"] == 4 and rep["calls"][tx] >= 4
    assert "StatusNotification" in rep["calls"]
