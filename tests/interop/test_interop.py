"""Interoperability with an independent OCPP-J implementation: npm ``ocpp-rpc`` in strict schema mode.

Both directions, OCPP 1.6J and 2.0.1: ocpp-rpc's client as the charging station against ``labkit csms``
(tests/interop/charger.js), and ``labkit fleet`` against ocpp-rpc's server as the CSMS (csms.js). In
strict mode ocpp-rpc validates every call and reply against its own copy of the OCPP JSON schemas and
reports anything that fails. Needs Node.js and npm (Debian packages ``nodejs`` and ``npm``); ``npm ci``
installs the locked ocpp-rpc into tests/interop/node_modules once. Plain ``ws://`` (security profile 0)
here; TLS (profiles 2 and 3: wss://, HTTP Basic auth, client certificates, refusals) in test_interop_tls.py.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import NODE, NPM, run_charger
from tests.sim.conftest import run_fleet

pytestmark = pytest.mark.skipif(not (NODE and NPM), reason="needs node and npm (apt-get install nodejs npm)")


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
def test_their_charger_with_our_csms(node_modules, csms_factory, protocol):
    csms = csms_factory()
    run = run_charger(csms.url, protocol, "rpc-station-1")
    report = run.report
    assert run.rc == 0 and report["failures"] == [], report
    assert report["ok"] == 10 and report["tls"] is None
    version = protocol.removeprefix("ocpp")
    rows = [r for r in csms.rows() if r["station_id"] == "rpc-station-1"]
    assert {r["ocpp_version"] for r in rows} == {version}
    assert sum(r["outcome"] == "ok" for r in rows) == (10 if version == "1.6" else 12)  # 3 TransactionEvents
    assert [(r["action"], r["error_code"]) for r in rows if r["outcome"] != "ok"] == [
        ("NoSuchAction", "NotImplemented")
    ]


@pytest.fixture
def their_csms(their_csms_factory):
    csms = their_csms_factory()
    return csms.url, csms.report


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
    assert rep["failures"] == [] and rep["refused"] == []
    assert len(rep["sessions"]) == 4 and not [s for s in rep["sessions"] if "tls" in s]
    tx = "StartTransaction" if version == "1.6" else "TransactionEvent"
    assert rep["calls"]["BootNotification"] == 4 and rep["calls"][tx] >= 4
    assert "StatusNotification" in rep["calls"]
