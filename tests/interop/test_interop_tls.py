"""Interoperability over TLS (OCPP security profiles 2 and 3) with an independent OCPP-J implementation, npm
``ocpp-rpc`` in strict schema mode, on Node.js's TLS stack; everything on 127.0.0.1, certificates from a lab CA
made in the test's temporary directory with ``labkit.sim.tlsca``.

* Their charging station (charger.js over ``wss://`` with ``--ca``, a client certificate, the password from the
  environment) against ``labkit csms``: profile 2 (TLS + HTTP Basic auth) on OCPP 1.6, where a wrong password
  gets HTTP 401 and an ``Unauthorized`` row; profile 3 (client certificate whose CN is the station identity) on
  2.0.1 over TLS 1.3 and on 1.6 pinned to TLS 1.2 (one of OCPP's ECDHE-ECDSA AES-GCM suites). Every call is
  answered and valid in strict mode, and csms.csv holds a row for each.
* Refusals by ``labkit csms`` in profile 3: their charger presenting another station's certificate gets HTTP 403
  before the upgrade and the CSMS records a ``ClientCertMismatch`` row for the identity it claimed; without a
  client certificate the TLS handshake fails and the CSMS records ``TlsNoClientCert``.
* ``labkit fleet`` over ``wss://`` against their CSMS (csms.js: Node's https server, ocpp-rpc's
  ``handleUpgrade``): profile 3 with per-station certificates (``--cert-dir``) on 2.0.1 (TLS 1.3) and on 1.6
  pinned to TLS 1.2, profile 2 on 1.6; their CSMS saw each station's certificate CN equal to its identity and
  the same TLS version and cipher as the fleet's ``handshake`` events. A station presenting another station's
  certificate is refused by their CSMS with HTTP 403, and the fleet records why.

The plain ``ws://`` interop is in test_interop.py.
"""

from __future__ import annotations

import json

import pytest

from labkit.resultsformat import parse_detail
from labkit.sim import tlsca
from tests.interop.conftest import NODE, NPM, run_charger
from tests.sim.conftest import run_fleet, stop

pytestmark = pytest.mark.skipif(not (NODE and NPM), reason="needs node and npm (apt-get install nodejs npm)")

PASSWORD = "interop-tls-pw-7Hc2"
FLEET_IDS = tlsca.station_ids("lk-", 2)  # lk-001, lk-002: what `labkit fleet --id-prefix lk- --stations 2` uses
FAST = ["--step-interval", "0.01", "--meter-interval", "0.01", "--jitter", "0", "--meter-values", "3"]
# OCPP's TLS 1.2 suites for an EC certificate (2.0.1 A00.FR.318), in OpenSSL's names
ECDSA_SUITES = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A lab CA, the CSMS's EC certificate for 127.0.0.1, their charger's stations rpc-001 and rpc-002, and the
    fleet's stations lk-001 and lk-002."""
    d = tmp_path_factory.mktemp("pki") / "lab"
    ca = tlsca.make_ca(d, "Interop CPO")
    cert, key = tlsca.server_cert(ca, d, ["localhost"], ["127.0.0.1"])
    stations = tlsca.client_certs(ca, d, ["rpc-001", "rpc-002", *FLEET_IDS])
    pw = d / "pw"
    pw.write_text(PASSWORD + "\n")
    return {
        "dir": d,
        "ca": str(ca.cert_path),
        "cert": str(cert),
        "key": str(key),
        "pw": str(pw),
        "stations": {sid: (str(c), str(k)) for sid, (c, k) in stations.items()},
    }


def labkit_csms(csms_factory, pki, profile: int):
    args = ["--security-profile", str(profile), "--tls-cert", pki["cert"], "--tls-key", pki["key"]]
    args += ["--client-ca", pki["ca"]] if profile == 3 else ["--password-file", pki["pw"]]
    csms = csms_factory(*args)
    assert csms.url.startswith("wss://127.0.0.1:")
    return csms


def client_cert(pki, station: str) -> list[str]:
    cert, key = pki["stations"][station]
    return ["--cert", cert, "--key", key]


def assert_session(csms, report: dict, station: str, version: str) -> None:
    """Every call of charger.js answered, valid in strict mode, and in csms.csv."""
    assert report["failures"] == [] and report["ok"] == 10, report
    rows = [r for r in csms.rows() if r["station_id"] == station]
    assert {r["ocpp_version"] for r in rows} == {version}
    assert sum(r["outcome"] == "ok" for r in rows) == (10 if version == "1.6" else 12)  # 3 TransactionEvents
    assert [(r["action"], r["error_code"]) for r in rows if r["outcome"] != "ok"] == [
        ("NoSuchAction", "NotImplemented")
    ]


def assert_verified_tls(tls: dict, version: str) -> None:
    """The charger checked labkit's certificate against the lab CA (and the address against its SAN)."""
    assert tls["authorized"] is True and "IP Address:127.0.0.1" in tls["serverAltNames"], tls
    assert tls["version"] == version, tls
    if version == "TLSv1.2":
        assert tls["cipher"] in ECDSA_SUITES, tls
    else:
        assert tls["cipher"].startswith("TLS_AES_"), tls


def final_status(csms) -> dict:
    assert stop(csms.proc) == 0
    return json.loads(csms.status.read_text())


# -- their charger, labkit's CSMS ------------------------------------------------------------------------------


def test_their_charger_profile_2_basic_auth_over_tls(node_modules, csms_factory, pki):
    csms = labkit_csms(csms_factory, pki, 2)
    run = run_charger(csms.url, "ocpp1.6", "rpc-001", "--ca", pki["ca"], env={"CHARGER_PASSWORD": PASSWORD})
    assert run.rc == 0, (run.report, run.stderr)
    assert_session(csms, run.report, "rpc-001", "1.6")
    assert_verified_tls(run.report["tls"], "TLSv1.3")
    # the wrong password over TLS: HTTP 401 before the upgrade, as in profile 1
    bad = run_charger(csms.url, "ocpp1.6", "rpc-002", "--ca", pki["ca"], env={"CHARGER_PASSWORD": "wrong"})
    assert bad.rc == 2 and bad.report["refused"]["status"] == 401 and "results" not in bad.report, bad.report
    assert [(r["station_id"], r["error_code"]) for r in csms.rows() if r["outcome"] == "refused"] == [
        ("rpc-002", "Unauthorized")
    ]
    assert not [r for r in csms.rows() if r["station_id"] == "rpc-002" and r["outcome"] != "refused"]
    status = final_status(csms)
    assert status["security_profile"] == 2 and status["tls_versions"] == "1.2-1.3"
    assert status["rejected_by_reason"] == {"Unauthorized": 1}


@pytest.mark.parametrize("protocol, tls_version", [("ocpp2.0.1", None), ("ocpp1.6", "1.2")])
def test_their_charger_profile_3_client_certificate(node_modules, csms_factory, pki, protocol, tls_version):
    csms = labkit_csms(csms_factory, pki, 3)
    pin = ["--tls-version", tls_version] if tls_version else []
    run = run_charger(csms.url, protocol, "rpc-001", "--ca", pki["ca"], *client_cert(pki, "rpc-001"), *pin)
    assert run.rc == 0, (run.report, run.stderr)
    assert_session(csms, run.report, "rpc-001", protocol.removeprefix("ocpp"))
    assert_verified_tls(run.report["tls"], f"TLSv{tls_version or '1.3'}")
    assert not [r for r in csms.rows() if r["outcome"] == "refused"]
    status = final_status(csms)
    assert status["security_profile"] == 3 and status["rejected_handshakes"] == 0
    assert status["stations_seen"] == 1


def test_their_charger_with_another_stations_certificate_is_refused(node_modules, csms_factory, pki):
    """rpc-002 presents rpc-001's certificate (a valid one from the lab CA, the wrong CN): HTTP 403 before the
    upgrade, no call handled; then rpc-002 without any certificate: the TLS handshake fails."""
    csms = labkit_csms(csms_factory, pki, 3)
    stolen = run_charger(csms.url, "ocpp1.6", "rpc-002", "--ca", pki["ca"], *client_cert(pki, "rpc-001"))
    assert stolen.rc == 2 and "results" not in stolen.report, stolen.report
    assert stolen.report["refused"]["status"] == 403, stolen.report
    assert "'rpc-001'" in stolen.report["refused"]["body"] and "'rpc-002'" in stolen.report["refused"]["body"]
    assert [(r["station_id"], r["outcome"], r["error_code"]) for r in csms.rows()] == [
        ("rpc-002", "refused", "ClientCertMismatch")
    ]
    # no client certificate at all: refused in the TLS handshake (the charger sees the CSMS's alert or, when
    # the CSMS has closed before the charger's upgrade request arrived, a reset), recorded without a station id
    none = run_charger(csms.url, "ocpp1.6", "rpc-002", "--ca", pki["ca"])
    assert none.rc == 2 and "results" not in none.report, none.report
    assert none.report["refused"]["status"] != 403, none.report
    assert [(r["station_id"], r["error_code"]) for r in csms.rows() if r["outcome"] == "refused"] == [
        ("rpc-002", "ClientCertMismatch"),
        ("", "TlsNoClientCert"),
    ]
    status = final_status(csms)
    assert status["rejected_by_reason"] == {"ClientCertMismatch": 1, "TlsNoClientCert": 1}
    assert status["stations_seen"] == 0


# -- labkit's fleet, their CSMS ----------------------------------------------------------------------------------


def fleet_handshakes(run) -> dict[str, dict]:
    return {e["station_id"]: parse_detail(e["detail"]) for e in run.events if e["event"] == "handshake"}


@pytest.mark.parametrize("profile, version, tls_version", [(3, "2.0.1", None), (3, "1.6", "1.2"), (2, "1.6", None)])
def test_our_fleet_with_their_tls_csms(their_csms_factory, pki, tmp_path, profile, version, tls_version):
    tls_opts = ["--tls-cert", pki["cert"], "--tls-key", pki["key"]]
    their = their_csms_factory(
        *tls_opts, *(["--client-ca", pki["ca"]] if profile == 3 else ["--password-file", pki["pw"]])
    )
    assert their.url.startswith("wss://127.0.0.1:")
    auth = ["--cert-dir", str(pki["dir"])] if profile == 3 else []
    pin = ["--tls-version", tls_version] if tls_version else []
    run = run_fleet(
        tmp_path / "f",
        their.url,
        "--ca",
        pki["ca"],
        *auth,
        *pin,
        "--ocpp",
        version,
        "--id-prefix",
        "lk-",
        "--stations",
        "2",
        *FAST,
        env={"LABKIT_OCPP_PASSWORD": PASSWORD} if profile == 2 else None,
    )
    assert run.rc == 0, run.stderr
    assert run.calls and all(r["outcome"] == "ok" for r in run.calls), [r for r in run.calls if r["outcome"] != "ok"]
    assert {r["station_id"] for r in run.calls} == set(FLEET_IDS)
    assert run.status["tls"]["client_certificates"] == ("per station" if profile == 3 else "none")
    ours = fleet_handshakes(run)
    expected = f"TLSv{tls_version or '1.3'}"
    assert set(ours) == set(FLEET_IDS) and {h["tls"] for h in ours.values()} == {expected}, ours
    rep = their.report()
    assert rep["failures"] == [] and rep["refused"] == [] and rep["tlsErrors"] == [], rep
    sessions = {s["identity"]: s for s in rep["sessions"]}
    assert len(rep["sessions"]) == 2 and set(sessions) == set(FLEET_IDS), rep["sessions"]
    for sid, s in sessions.items():
        assert s["protocol"] == f"ocpp{version}"
        # both ends agree on what was negotiated
        assert (s["tls"], s["cipher"]) == (ours[sid]["tls"], ours[sid]["cipher"]), (s, ours[sid])
        if profile == 3:
            assert s["clientCN"] == sid and s["clientAuthorized"] is True, s
        else:
            assert "clientCN" not in s
    if tls_version == "1.2":
        assert {s["cipher"] for s in sessions.values()} <= ECDSA_SUITES
    assert rep["calls"]["BootNotification"] == 2
    assert rep["calls"]["StartTransaction" if version == "1.6" else "TransactionEvent"] >= 2


def test_their_tls_csms_refuses_a_station_with_another_stations_certificate(their_csms_factory, pki, tmp_path):
    """Profile 3, every station with lk-001's certificate (--cert/--key): lk-001 runs its scenario, their CSMS
    refuses lk-002 with HTTP 403 each time it tries, and the fleet records the CSMS's reason."""
    their = their_csms_factory("--tls-cert", pki["cert"], "--tls-key", pki["key"], "--client-ca", pki["ca"])
    run = run_fleet(
        tmp_path / "f",
        their.url,
        "--ca",
        pki["ca"],
        *client_cert(pki, "lk-001"),
        "--id-prefix",
        "lk-",
        "--stations",
        "2",
        *FAST,
        "--duration",
        "1",
        "--drain-timeout",
        "0",
        "--backoff-min",
        "0.2",
        "--backoff-max",
        "1",
    )
    assert run.rc == 0, run.stderr  # lk-001 ran its scenario; lk-002 never connected
    assert {r["station_id"] for r in run.calls} == {"lk-001"}
    assert run.status["connect_failures"] == {"refused with HTTP 403 Forbidden": 1}
    failed = [e for e in run.events if e["event"] == "connect_failed"]
    assert failed and {e["station_id"] for e in failed} == {"lk-002"}
    assert all("HTTP 403: the client certificate is for 'lk-001', not for 'lk-002'" in e["detail"] for e in failed)
    rep = their.report()
    assert [(s["identity"], s["clientCN"]) for s in rep["sessions"]] == [("lk-001", "lk-001")]
    assert rep["refused"] and {(r["identity"], r["status"]) for r in rep["refused"]} == {("lk-002", 403)}
    assert len(rep["refused"]) >= len(failed)  # an attempt cut short by the end of the run may be missing
