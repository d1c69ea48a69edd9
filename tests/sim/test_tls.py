"""OCPP security profiles 2 and 3 over real TLS on loopback: the lab CA (labkit.sim.tlsca), the CSMS's TLS
(labkit.sim.tls, ``labkit csms --security-profile``), the fleet over wss:// with per-station certificates,
refusals recorded on both sides, resumption, the set-up timing, and openssl s_client against the CSMS."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labkit.cli import main
from labkit.errors import ConfigError
from labkit.resultsformat import parse_detail
from labkit.sim import tlsca
from labkit.sim.fleet import FleetConfig
from tests.sim.conftest import run_fleet
from tests.sim.delayproxy import DelayProxy

FAST = ["--step-interval", "0.01", "--meter-interval", "0.01", "--jitter", "0", "--meter-values", "3"]
FAIL_FAST = ["--duration", "2", "--drain-timeout", "0", "--backoff-min", "0.2", "--backoff-max", "5"]
PASSWORD = "tls-pw-4Kq9"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """One lab CA for the module: EC and RSA server certificates for 127.0.0.1, five stations, a station
    whose certificate names another (cs004 -> CN cs999), and an expired one (old001)."""
    d = tmp_path_factory.mktemp("pki") / "lab"
    ca = tlsca.make_ca(d, "ACME CPO")
    ec_pair = tlsca.server_cert(ca, d, ["localhost"], ["127.0.0.1"])
    rsa_pair = tlsca.server_cert(ca, d, ["localhost"], ["127.0.0.1"], key_type="rsa")
    tlsca.client_certs(ca, d, ["cs001", "cs002", "cs003", "cs004", "cs005"], common_name={"cs004": "cs999"})
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    tlsca.client_certs(ca, d, ["old001"], not_before=past, days=1)
    return {"dir": d, "ca": ca, "ec": ec_pair, "rsa": rsa_pair}


def csms_args(pki, profile: int, *extra: str) -> list[str]:
    args = ["--security-profile", str(profile), "--tls-cert", str(pki["ec"][0]), "--tls-key", str(pki["ec"][1])]
    if profile == 3:
        args += ["--client-ca", str(pki["ca"].cert_path)]
    return [*args, *extra]


def pw_file(tmp_path):
    p = tmp_path / "pw"
    p.write_text(PASSWORD + "\n")
    return str(p)


def handshakes(run) -> list[dict]:
    return [{**parse_detail(e["detail"]), "station": e["station_id"], "connection": e["connection"]}
            for e in run.events if e["event"] == "handshake"]


# -- the lab CA -------------------------------------------------------------------------------------------------


def test_ca_files_modes_and_certificates(pki, tmp_path):
    d, ca = pki["dir"], pki["ca"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / "stations").st_mode) == 0o700
    for key in [d / "ca.key", d / "server.key", d / "server-rsa.key", *(d / "stations").glob("*.key")]:
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    lifetime = ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=tlsca.DEFAULT_DAYS, minutes=6)
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate(pki["ec"][0].read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.not_valid_after_utc <= ca.cert.not_valid_after_utc
    keys = set()
    for sid in ("cs001", "cs002", "cs003"):
        cert_path, key_path = tlsca.station_files(d, sid)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == sid
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ACME CPO"
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ]
        with pytest.raises(x509.ExtensionNotFound):  # A00.FR.511: no dNSName SAN that would replace the CN
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        keys.add(cert.public_key().public_numbers())
    assert len(keys) == 3  # one key per station
    with pytest.raises(ConfigError, match="already holds a CA"):
        tlsca.make_ca(d, "again")
    assert tlsca.load_ca(d).cert == ca.cert


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 49, "cs 1", "cs:1", "..\\x", "é"])
def test_station_ids_are_checked_before_they_name_files(pki, tmp_path, bad):
    with pytest.raises(ConfigError, match="station"):
        tlsca.station_files(pki["dir"], bad)
    with pytest.raises(ConfigError):
        tlsca.client_certs(pki["ca"], tmp_path / "out", ["ok1", bad])
    assert not (tmp_path / "out").exists()  # nothing written, not even for the good id


def test_station_ids_match_the_fleets():
    cfg = FleetConfig(url="ws://x/", stations=1200, id_prefix="evse-", first_index=7)
    assert tlsca.station_ids("evse-", 1200, 7) == [cfg.station_id(i) for i in range(1200)]


# -- bad input: one line, exit 2, nothing written -----------------------------------------------------------------


def test_bad_tls_files_are_one_line_and_exit_2(pki, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LABKIT_OCPP_PASSWORD", raising=False)
    d = pki["dir"]
    ec_cert, ec_key = (str(p) for p in pki["ec"])
    station_cert, station_key = (str(p) for p in tlsca.station_files(d, "cs001"))
    notpem = tmp_path / "notpem"
    notpem.write_text("hello\n")
    pw = pw_file(tmp_path)
    out = tmp_path / "out.csv"
    cases = [
        (["csms", "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", ec_key, "--password-file", pw],
         "--tls-cert", "No such file"),
        (["csms", "--tls-cert", ec_cert, "--tls-key", str(tmp_path), "--password-file", pw], "--tls-key", "directory"),
        (["csms", "--tls-cert", ec_cert, "--tls-key", station_key, "--password-file", pw], "--tls-key", "mismatch"),
        (["csms", "--tls-cert", str(notpem), "--tls-key", str(notpem), "--password-file", pw], "--tls-cert", "PEM"),
        (["csms", "--tls-cert", ec_cert, "--password-file", pw], "--tls-key", "one key per certificate"),
        (["csms", "--security-profile", "3", "--tls-cert", ec_cert, "--tls-key", ec_key], "--client-ca", ""),
        (["csms", "--security-profile", "2", "--tls-cert", ec_cert, "--tls-key", ec_key], "password", ""),
        (["csms", "--security-profile", "1", "--tls-cert", ec_cert, "--tls-key", ec_key, "--password-file", pw],
         "--security-profile", "without TLS"),
        (["csms", *csms_args(pki, 3, "--client-ca", str(notpem))], "--client-ca", "PEM"),
        (["csms", *csms_args(pki, 2, "--password-file", pw, "--tls-min-version", "1.3", "--tls-max-version", "1.2")],
         "--tls-min-version", "above"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--ca", str(d / "ca.pem")], "--ca", "wss://"),
        (["fleet", "--url", "wss://127.0.0.1:1/", "--cert", station_cert], "--key", "go together"),
        (["fleet", "--url", "wss://127.0.0.1:1/", "--cert", station_cert, "--key", ec_key], "--key", "mismatch"),
        (["fleet", "--url", "wss://127.0.0.1:1/", "--ca", str(tmp_path / "nope.pem")], "--ca", "No such file"),
        (["fleet", "--url", "wss://127.0.0.1:1/", "--cert-dir", str(d), "--stations", "7"], "--cert-dir", "cs006"),
        (["fleet", "--url", "wss://127.0.0.1:1/", "--cert-dir", str(tmp_path / "none")], "--cert-dir", "no such"),
    ]
    for argv, flag, words in cases:
        rc = main([*argv, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and flag in err and words in err, (argv, err)
        assert "PRIVATE KEY" not in err and not out.exists()


# -- profiles 2 and 3 end to end ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_profile_2_tls_and_basic_auth(csms_factory, pki, tmp_path, version):
    csms = csms_factory(*csms_args(pki, 2, "--password-file", pw_file(tmp_path)))
    assert csms.url.startswith("wss://")
    ca = str(pki["ca"].cert_path)
    good = run_fleet(tmp_path / "good", csms.url, "--ca", ca, "--stations", "2", "--ocpp", version, *FAST,
                     env={"LABKIT_OCPP_PASSWORD": PASSWORD})
    assert good.rc == 0, good.stderr
    assert good.calls and all(r["outcome"] == "ok" for r in good.calls)
    hs = handshakes(good)
    assert len(hs) == 2 and {h["tls"] for h in hs} == {"TLSv1.3"}
    for h in hs:
        assert float(h["tcp_ms"]) > 0 and float(h["tls_ms"]) > 0 and float(h["ws_ms"]) > 0
        assert int(h["tls_out"]) > 200 and int(h["tls_in"]) > 500 and h["resumed"] == "0"
    booted = [parse_detail(e["detail"]) for e in good.events if e["event"] == "booted"]
    assert len(booted) == 2 and all(float(b["since_connect_ms"]) > float(b["boot_ms"]) > 0 for b in booted)
    assert good.status["tls"]["handshakes"] == 2
    # the wrong password over TLS: HTTP 401, as in profile 1
    bad = run_fleet(tmp_path / "bad", csms.url, "--ca", ca, "--stations", "1", "--ocpp", version, *FAST, *FAIL_FAST,
                    env={"LABKIT_OCPP_PASSWORD": "wrong"})
    assert bad.rc == 1 and bad.status["connect_failures"] == {"refused with HTTP 401 Unauthorized": 1}
    rows = csms.rows()
    assert {r["station_id"] for r in rows if r["outcome"] == "refused"} == {"cs001"}
    assert {r["error_code"] for r in rows if r["outcome"] == "refused"} == {"Unauthorized"}
    # the fleet without the lab CA does not trust the CSMS (system trust store): its reason says why
    untrusted = run_fleet(tmp_path / "untrusted", csms.url, "--stations", "1", *FAST, *FAIL_FAST,
                          env={"LABKIT_OCPP_PASSWORD": PASSWORD})
    assert untrusted.rc == 1
    (why,) = untrusted.status["connect_failures"]
    assert why.startswith("CSMS certificate rejected: unable to get local issuer certificate"), why
    assert any(r["error_code"] == "TlsAlertFromClient" for r in csms.rows())


@pytest.mark.parametrize("version, loop", [("1.6", "auto"), ("2.0.1", "asyncio")])
def test_profile_3_client_certificates(csms_factory, pki, tmp_path, version, loop):
    """uvloop (auto) and asyncio's own loop on both sides: the TLS hooks (labkit.sim.tls) work on both."""
    csms = csms_factory(*csms_args(pki, 3, "--loop", loop))
    run = run_fleet(tmp_path / "f", csms.url, "--ca", str(pki["ca"].cert_path), "--cert-dir", str(pki["dir"]),
                    "--stations", "3", "--ocpp", version, "--loop", loop, *FAST)
    assert run.rc == 0, run.stderr
    assert {r["station_id"] for r in run.calls} == {"cs001", "cs002", "cs003"}
    assert all(r["outcome"] == "ok" for r in run.calls)
    handled = [r for r in csms.rows() if r["outcome"] == "ok"]
    assert len(handled) == len(run.calls) and not [r for r in csms.rows() if r["outcome"] == "refused"]
    hs = handshakes(run)
    assert len(hs) == 3 and all(h["tls"] == "TLSv1.3" and h["resumed"] == "0" for h in hs)
    assert run.status["tls"]["client_certificates"] == "per station"
    # no key material in any output
    keys = [p.read_text() for p in (pki["dir"] / "stations").glob("cs00[123].key")]
    outputs = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()] + [run.stdout, run.stderr]
    assert not [o for o in outputs if "PRIVATE KEY" in o or any(k.split("\n")[1] in o for k in keys)]
    # TLS 1.2: the station's certificate travels in the handshake, so the station sends more than in profile 2
    v12 = run_fleet(tmp_path / "v12", csms.url, "--ca", str(pki["ca"].cert_path), "--cert-dir", str(pki["dir"]),
                    "--stations", "1", "--ocpp", version, "--tls-version", "1.2", "--loop", loop, *FAST)
    assert v12.rc == 0, v12.stderr
    (h12,) = handshakes(v12)
    assert h12["tls"] == "TLSv1.2"
    assert h12["cipher"] in ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert int(h12["tls_out"]) > 600  # ClientHello, Certificate (about 500 bytes DER), key exchange, verify, Finished


def test_certificate_of_another_station_is_refused_with_403(csms_factory, pki, tmp_path):
    """Profile 3: cs002 presents cs001's certificate (--cert/--key for all stations) and cs004 one whose CN is
    cs999: both get HTTP 403 before the upgrade, recorded by the CSMS and by the fleet with the reason."""
    csms = csms_factory(*csms_args(pki, 3))
    ca = str(pki["ca"].cert_path)
    cert, key = (str(p) for p in tlsca.station_files(pki["dir"], "cs001"))
    shared = run_fleet(tmp_path / "shared", csms.url, "--ca", ca, "--cert", cert, "--key", key, "--stations", "2",
                       *FAST, *FAIL_FAST)
    assert shared.rc == 0, shared.stderr  # cs001 ran its scenario; cs002 never connected
    assert {r["station_id"] for r in shared.calls} == {"cs001"}
    failed = [e for e in shared.events if e["event"] == "connect_failed"]
    assert failed and {e["station_id"] for e in failed} == {"cs002"}
    assert "HTTP 403" in failed[0]["detail"] and "'cs001', not for the station identity 'cs002'" in failed[0]["detail"]
    assert shared.status["connect_failures"] == {"refused with HTTP 403 Forbidden": 1}
    mismatch = run_fleet(tmp_path / "mismatch", csms.url, "--ca", ca, "--cert-dir", str(pki["dir"]),
                         "--stations", "1", "--first-index", "4", *FAST, *FAIL_FAST)
    assert mismatch.rc == 1
    assert "no station ever connected: 1 refused with HTTP 403 Forbidden" in mismatch.stderr
    refused = [(r["station_id"], r["error_code"]) for r in csms.rows() if r["outcome"] == "refused"]
    assert set(refused) == {("cs002", "ClientCertMismatch"), ("cs004", "ClientCertMismatch")}
    status = json.loads(csms.status.read_text())
    assert status["security_profile"] == 3 and status["rejected_by_reason"]["ClientCertMismatch"] == len(refused)


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_expired_certificate_is_refused_with_its_alert_and_backoff(csms_factory, pki, tmp_path, tls_version):
    csms = csms_factory(*csms_args(pki, 3))
    run = run_fleet(tmp_path / "f", csms.url, "--ca", str(pki["ca"].cert_path), "--cert-dir", str(pki["dir"]),
                    "--id-prefix", "old", "--stations", "1", "--tls-version", tls_version, *FAST, *FAIL_FAST)
    assert run.rc == 1
    assert run.status["connect_failures"] == {"TLS alert from the CSMS: certificate expired": 1}
    failed = [e for e in run.events if e["event"] == "connect_failed"]
    # TLS 1.2: the alert ends the station's handshake; 1.3: the station's side was over, the alert ends the upgrade
    phase = "tls" if tls_version == "1.2" else "ws"
    assert failed and all(e["detail"] == f"TLS alert from the CSMS: certificate expired (during {phase})"
                          for e in failed)
    # backoff: 0.2 s doubling (x0.5-1.5) within 2 s: a handful of attempts, not hundreds
    assert 2 <= len(failed) <= 8, len(failed)
    times = [float(e["t_wall"]) for e in failed]
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.09
    rows = [r for r in csms.rows() if r["outcome"] == "refused"]
    assert rows and {(r["station_id"], r["error_code"]) for r in rows} == {("", "TlsClientCertExpired")}
    status = json.loads(csms.status.read_text())
    assert status["tls_handshake_failures"] == {"TlsClientCertExpired: certificate has expired": len(rows)}


def test_tls_12_only_csms_refuses_a_13_only_station(csms_factory, pki, tmp_path):
    csms = csms_factory(*csms_args(pki, 3, "--tls-max-version", "1.2"))
    run = run_fleet(tmp_path / "f", csms.url, "--ca", str(pki["ca"].cert_path), "--cert-dir", str(pki["dir"]),
                    "--stations", "1", "--tls-version", "1.3", *FAST, *FAIL_FAST)
    assert run.rc == 1
    assert run.status["connect_failures"] == {"TLS alert from the CSMS: protocol version": 1}
    refused = {(r["station_id"], r["error_code"]) for r in csms.rows() if r["outcome"] == "refused"}
    assert refused == {("", "TlsVersion")}
    ok = run_fleet(tmp_path / "ok", csms.url, "--ca", str(pki["ca"].cert_path), "--cert-dir", str(pki["dir"]),
                   "--stations", "1", *FAST)
    assert ok.rc == 0 and handshakes(ok)[0]["tls"] == "TLSv1.2"


# -- resumption and round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tls_version, resumption, loop", [("1.3", True, "auto"), ("1.2", True, "asyncio"), ("1.3", False, "auto")]
)
def test_resumption_on_reconnect_and_handshake_round_trips(csms_factory, pki, tmp_path, tls_version, resumption,
                                                            loop):
    """Through a relay adding 100 ms each way (RTT 200 ms): the first connection's TLS handshake takes one
    round trip in TLS 1.3 and two in 1.2; the relay then drops the link, and the station's second
    connection resumes its TLS session (one round trip; the CSMS still checks the CN) or, with
    --no-tls-resumption, does a full handshake again."""
    csms = csms_factory(*csms_args(pki, 3, "--loop", loop))
    one_way = 0.100
    with DelayProxy(csms.port, one_way) as proxy:

        def drop_after_boot() -> None:
            events = tmp_path / "f" / "events.csv"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if events.exists() and ",booted," in events.read_text():
                    proxy.cut(0.3)
                    return
                time.sleep(0.05)

        t = threading.Thread(target=drop_after_boot)
        t.start()
        run = run_fleet(
            tmp_path / "f",
            f"wss://127.0.0.1:{proxy.port}/",
            "--ca", str(pki["ca"].cert_path), "--cert-dir", str(pki["dir"]), "--stations", "1",
            "--tls-version", tls_version, "--tls-resumption" if resumption else "--no-tls-resumption",
            "--meter-values", "8", "--meter-interval", "0.05", "--step-interval", "0.05", "--jitter", "0",
            "--backoff-min", "0.2", "--backoff-max", "0.5", "--call-timeout", "5", "--loop", loop,
        )
        t.join()
    assert run.rc == 0, run.stderr
    hs = handshakes(run)
    assert [h["connection"] for h in hs][:2] == ["1", "2"], hs
    first, second = hs[0], hs[1]
    rtt = 2 * one_way * 1e3
    assert first["resumed"] == "0" and float(first["ws_ms"]) >= rtt
    if tls_version == "1.3":
        assert rtt <= float(first["tls_ms"]) < 2 * rtt
    else:
        assert float(first["tls_ms"]) >= 2 * rtt
    assert second["resumed"] == ("1" if resumption else "0")
    if resumption:
        assert rtt <= float(second["tls_ms"]) < 2 * rtt  # an abbreviated handshake: one round trip in both
    assert run.status["tls"]["resumed"] == (1 if resumption else 0)
    assert not [r for r in csms.rows() if r["outcome"] == "refused"]  # the resumed session kept its certificate


# -- openssl s_client ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_s_client_shows_protocol_and_cipher(csms_factory, pki, tmp_path):
    """Profile 2 with an EC and an RSA certificate: TLS 1.3 by default, each of OCPP's four required TLS 1.2
    suites (A00.FR.318) negotiated on request, and a suite outside labkit's list refused with an alert."""
    rsa_cert, rsa_key = (str(p) for p in pki["rsa"])
    csms = csms_factory(*csms_args(pki, 2, "--tls-cert", rsa_cert, "--tls-key", rsa_key,
                                   "--password-file", pw_file(tmp_path)))

    def s_client(*args: str) -> str:
        p = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{csms.port}", "-CAfile", str(pki["ca"].cert_path),
             "-verify_return_error", *args],
            input="", capture_output=True, text=True, timeout=20,
        )
        return p.stdout + p.stderr

    out = s_client()
    assert re.search(r"New, TLSv1\.3, Cipher is TLS_AES_256_GCM_SHA384", out), out
    assert "Verify return code: 0 (ok)" in out
    for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                  "AES128-GCM-SHA256", "AES256-GCM-SHA384"):
        out = s_client("-tls1_2", "-cipher", suite)
        assert re.search(rf"New, TLSv1\.2, Cipher is {suite}\n", out), (suite, out)
        assert re.search(rf"Protocol\s*: TLSv1\.2\n\s*Cipher\s*: {suite}\n", out), (suite, out)
    out = s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
    assert "alert handshake failure" in out and "Cipher is (NONE)" in out
    codes = [r["error_code"] for r in csms.rows() if r["outcome"] == "refused"]
    assert codes == ["TlsNoSharedCipher"]


def test_python_client_sees_the_csms_certificate_chain(pki):
    """The server certificate verifies against the lab CA for its address and name, as the fleet checks it."""
    ctx = ssl.create_default_context(cafile=str(pki["ca"].cert_path))
    ctx.load_cert_chain(*(str(p) for p in tlsca.station_files(pki["dir"], "cs001")))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*(str(p) for p in pki["ec"]))
    for host in ("127.0.0.1", "localhost"):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = ctx.wrap_bio(c_in, c_out, server_hostname=host)
        srv = server.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            for obj in (client, srv):
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        assert client.version() and srv.version(), host
