"""A lab's own certificate authority: the CSMS's server certificate and one client certificate per station.

OCPP security profiles 2 and 3 (OCPP 2.0.1 Part 2 section A00 and the OCPP 1.6 security whitepaper, which
share the requirement numbers A00.FR.xxx) run OCPP over TLS; profile 3 also has every charging station
present a client certificate of its own. This module makes the certificates a lab needs with the
``cryptography`` package, fresh for every lab (never shared between labs, never from the host's own PKI):

* ``make_ca(dir, name)``: a self-signed root, EC P-256 with ECDSA-SHA256 signatures (A00.FR.503/505/506:
  an elliptic-curve key of at least 224 bits, ECDSA, SHA-256), ``O`` = ``name`` (the CPO's name,
  A00.FR.509), valid for a bounded time (``days``, 30 by default: a lab CA must not outlive its lab).
* ``server_cert(ca, dir, names, addresses)``: the CSMS's certificate, ``CN`` = the first DNS name (the
  FQDN, A00.FR.510) and a subjectAltName with every DNS name and IP address (what TLS clients check),
  extended key usage serverAuth. ``key_type="rsa"`` makes the RSA-2048 certificate the TLS_RSA cipher
  suites need (A00.FR.318/317: the CSMS supports both kinds, "with 2 different certificates").
* ``client_certs(ca, dir, station_ids)``: one EC P-256 key and certificate per station, ``CN`` = the
  station identity (A00.FR.511: the charging station's serial number, which labkit's stations use as their
  identity; no dNSName SAN, which RFC 2818 clients would use instead of the CN), ``O`` = the CA's name
  (A00.FR.404), extended key usage clientAuth. Every station gets a key of its own (A00.FR.427: "A unique
  Charging Station certificate SHALL be used for each Charging Station"); nothing is reused to go faster.
  About 0.2 ms a station on this project's machine (``benchmarks/tls_ca.py`` prints the figures for 100,
  1,000 and 10,000 stations).

Layout (every directory 0700, every private key 0600, certificates 0644)::

    DIR/ca.pem  DIR/ca.key                   make_ca
    DIR/server.pem  DIR/server.key           server_cert (server-rsa.pem / .key with key_type="rsa")
    DIR/stations/<station id>.pem  .key      client_certs; station_files(DIR, id) finds them

Station identities name files, so they are checked with the simulators' identity rule first
(``labkit.sim.settings.valid_identity``: 1-48 characters of ``A-Z a-z 0-9 * - _ = + | @ .``): no ``/``
can reach a path, and the resolved path must still lie in ``stations/``. Standard library and
``cryptography`` only. ``python -m labkit.sim.tlsca DIR ...`` makes a CA, a server certificate and the
stations' certificates in one go (``--help``).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labkit.errors import ConfigError
from labkit.sim.settings import IDENTITY_CHARS, IDENTITY_MAX_CHARS, valid_identity

#: how long a lab CA (and what it signs) is valid by default, days
DEFAULT_DAYS = 30
#: certificates start this long before "now", so a host whose clock is a little behind accepts them
BACKDATE = _dt.timedelta(minutes=5)
STATIONS_DIR = "stations"


@dataclass
class CA:
    """A lab CA: its certificate and key (in memory) and where they are."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def name(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(attrs[0].value) if attrs else ""

    @property
    def dir(self) -> Path:
        return self.cert_path.parent


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start (a key is never readable by others, not even
    for a moment), replacing what was there atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)  # whatever the umask did
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _validity(ca: CA | None, not_before: _dt.datetime | None, days: float) -> tuple[_dt.datetime, _dt.datetime]:
    start = not_before if not_before is not None else _now() - BACKDATE
    end = start + _dt.timedelta(days=days)
    if ca is not None:  # nothing outlives the CA that signed it
        end = min(end, ca.cert.not_valid_after_utc)
    return start, end


def make_ca(directory: str | os.PathLike, name: str, *, days: float = DEFAULT_DAYS) -> CA:
    """A new CA in ``directory`` (made 0700): ``ca.pem`` and ``ca.key`` (0600). ``name`` is the CPO's name
    (the ``O`` of every certificate it signs). Refuses to replace an existing CA (``load_ca`` reads it)."""
    if not name or not name.isprintable():
        raise ConfigError.at("CA name", f"{name!r}: give the CPO's name (printable, not empty)")
    if days <= 0:
        raise ConfigError.at("CA validity", f"must be > 0 days, got {days}")
    d = _private_dir(Path(directory))
    cert_path, key_path = d / "ca.pem", d / "ca.key"
    if cert_path.exists() or key_path.exists():
        raise ConfigError.at(str(d), "already holds a CA (ca.pem/ca.key); a lab makes its CA once (load_ca reads it)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{name} lab CA"),
    ])
    start, end = _validity(None, None, days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return CA(cert, key, cert_path, key_path)


def load_ca(directory: str | os.PathLike) -> CA:
    """The CA ``make_ca`` made in ``directory``."""
    d = Path(directory)
    cert_path, key_path = d / "ca.pem", d / "ca.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError.at(str(d), f"no usable CA (ca.pem, ca.key): {why}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError.at(str(key_path), "not an EC private key")
    return CA(cert, key, cert_path, key_path)


def _leaf(ca: CA, subject: x509.Name, public_key: object, start: _dt.datetime, end: _dt.datetime,
          usage: x509.ObjectIdentifier, key_encipherment: bool = False) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())  # A00.FR.508: every certificate has a serial number
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )


def server_cert(
    ca: CA,
    directory: str | os.PathLike,
    names: Iterable[str],
    addresses: Iterable[str] = (),
    *,
    key_type: str = "ec",
    days: float = DEFAULT_DAYS,
    not_before: _dt.datetime | None = None,
) -> tuple[Path, Path]:
    """The CSMS's certificate and key in ``directory``: ``server.pem``/``server.key`` (``key_type`` "ec",
    P-256) or ``server-rsa.pem``/``server-rsa.key`` ("rsa", 2048 bits). ``names``: DNS names (the first is
    the CN); ``addresses``: IP addresses; both go into the subjectAltName. Returns (cert path, key path)."""
    dns = [n for n in names if n]
    try:
        ips = [ipaddress.ip_address(a) for a in addresses]
    except ValueError as exc:
        raise ConfigError.at("server address", str(exc)) from None
    if not dns and not ips:
        raise ConfigError.at("server certificate", "give at least one DNS name or IP address")
    for n in dns:
        if not n.isascii() or not n.isprintable() or " " in n or "/" in n:
            raise ConfigError.at("server name", f"{n!r} is not a DNS name")
    if key_type == "ec":
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(ec.SECP256R1())
        stem = "server"
    elif key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # A00.FR.502: >= 2048 bits
        stem = "server-rsa"
    else:
        raise ConfigError.at("key_type", f"{key_type!r}: ec or rsa")
    cn = dns[0] if dns else str(ips[0])
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca.name or "labkit"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])
    start, end = _validity(ca, not_before, days)
    san = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns] + [x509.IPAddress(i) for i in ips])
    cert = (
        _leaf(ca, subject, key.public_key(), start, end, ExtendedKeyUsageOID.SERVER_AUTH,
              key_encipherment=key_type == "rsa")  # TLS_RSA key transport encrypts with the server's key
        .add_extension(san, critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    d = _private_dir(Path(directory))
    cert_path, key_path = d / f"{stem}.pem", d / f"{stem}.key"
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def check_station_id(station_id: str) -> str:
    """``station_id`` when it is an OCPP identity labkit accepts (so it may name a file); else ConfigError."""
    if not isinstance(station_id, str) or not 1 <= len(station_id) <= IDENTITY_MAX_CHARS or not valid_identity(
        station_id
    ):
        raise ConfigError.at(
            "station id",
            f"{station_id!r}: a station identity is 1-{IDENTITY_MAX_CHARS} characters of {IDENTITY_CHARS}",
        )
    return station_id


def station_files(directory: str | os.PathLike, station_id: str) -> tuple[Path, Path]:
    """Where a station's certificate and key are in a directory laid out by ``client_certs``: DIR/stations/
    <id>.pem and .key (``directory`` may also be the ``stations`` directory itself). The id is checked first
    and the paths must stay inside that directory."""
    check_station_id(station_id)
    d = Path(directory)
    if (d / STATIONS_DIR).is_dir() or d.name != STATIONS_DIR:
        d = d / STATIONS_DIR
    base = d.resolve()
    cert, key = base / f"{station_id}.pem", base / f"{station_id}.key"
    for p in (cert, key):  # belt and braces: the identity rule already excludes "/"
        if p.parent != base:
            raise ConfigError.at("station id", f"{station_id!r} would leave {base}")
    return cert, key


def client_certs(
    ca: CA,
    directory: str | os.PathLike,
    station_ids: Iterable[str],
    *,
    days: float = DEFAULT_DAYS,
    not_before: _dt.datetime | None = None,
    common_name: dict[str, str] | None = None,
) -> dict[str, tuple[Path, Path]]:
    """One key and certificate per station in DIR/stations/ (made 0700): ``<id>.pem`` and ``<id>.key``
    (0600), ``CN`` = the id, ``O`` = the CA's name, clientAuth. Every id is checked (``check_station_id``)
    before anything is written. An existing station's files are replaced (a re-issue).

    ``not_before``/``days`` set the validity (tests make expired certificates with a ``not_before`` in the
    past); ``common_name`` maps an id to another CN (tests make a certificate that does not match its
    station). Returns id -> (cert path, key path)."""
    ids = [check_station_id(s) for s in station_ids]
    if len(set(ids)) != len(ids):
        raise ConfigError.at("station ids", "the same id twice")
    d = _private_dir(Path(directory) / STATIONS_DIR)
    start, end = _validity(ca, not_before, days)
    org = ca.name or "labkit"
    org_attr = x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    issuer = ca.cert.subject
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    basic = x509.BasicConstraints(ca=False, path_length=None)
    sha256 = hashes.SHA256()
    out: dict[str, tuple[Path, Path]] = {}
    for sid in ids:
        cn = (common_name or {}).get(sid, sid)
        key = ec.generate_private_key(ec.SECP256R1())  # one key per station, always
        pub = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([org_attr, x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(basic, critical=True)
            .add_extension(usage, critical=True)
            .add_extension(eku, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(aki, critical=False)
            .sign(ca.key, sha256)
        )
        cert_path, key_path = d / f"{sid}.pem", d / f"{sid}.key"
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, _cert_pem(cert), 0o644)
        out[sid] = (cert_path, key_path)
    return out


def station_ids(prefix: str, count: int, first_index: int = 1) -> list[str]:
    """The ids ``labkit fleet --id-prefix PREFIX --stations COUNT --first-index N`` gives its stations."""
    width = max(len(str(first_index + count - 1)), 3)
    return [f"{prefix}{first_index + i:0{width}d}" for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.sim.tlsca DIR --org NAME [--server-name N] [--server-address A] [--rsa]
    [--id-prefix P --stations M [--first-index N]] [--days D]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m labkit.sim.tlsca", description=main.__doc__)
    p.add_argument("dir")
    p.add_argument("--org", required=True, help="the CPO's name (O of every certificate)")
    p.add_argument("--server-name", action="append", default=[], help="DNS name of the CSMS (repeatable)")
    p.add_argument("--server-address", action="append", default=[], help="IP address of the CSMS (repeatable)")
    p.add_argument("--rsa", action="store_true", help="also an RSA-2048 server certificate (TLS_RSA suites)")
    p.add_argument("--id-prefix", default="cs")
    p.add_argument("--stations", type=int, default=0)
    p.add_argument("--first-index", type=int, default=1)
    p.add_argument("--days", type=float, default=DEFAULT_DAYS)
    a = p.parse_args(argv)
    try:
        d = Path(a.dir)
        ca = load_ca(d) if (d / "ca.pem").exists() else make_ca(d, a.org, days=a.days)
        if a.server_name or a.server_address:
            server_cert(ca, d, a.server_name, a.server_address, days=a.days)
            if a.rsa:
                server_cert(ca, d, a.server_name, a.server_address, key_type="rsa", days=a.days)
        if a.stations:
            client_certs(ca, d, station_ids(a.id_prefix, a.stations, a.first_index), days=a.days)
    except ConfigError as exc:
        print(f"labkit tlsca: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
