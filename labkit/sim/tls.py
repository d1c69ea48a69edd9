"""TLS for the simulators (OCPP security profiles 2 and 3) and the timed set-up of every station connection.

**What the specifications ask** (OCPP 2.0.1 Part 2 section A00; the OCPP 1.6 security whitepaper uses the
same requirement numbers, shifted by one in places):

* TLS 1.2 or above only (A00.FR.313/312, 416); both ends check the version used.
* The CSMS supports at least TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
  TLS_RSA_WITH_AES_128_GCM_SHA256 and TLS_RSA_WITH_AES_256_GCM_SHA384 (A00.FR.318 in 2.0.1, A00.FR.317 in
  the 1.6 whitepaper, again A00.FR.421 for profile 3), "with 2 different certificates" (ECDSA and RSA); a
  charging station supports the ECDHE_ECDSA pair or the TLS_RSA pair (A00.FR.319/318). Nothing marked
  unsuitable for legacy use, no TLS compression (A00.FR.320/321).
* Profile 3: the CSMS verifies the station's certificate path and that the certificate "belongs to this
  Charging Station by checking that the CN (commonName) RDN in the subject field of the certificate contains
  the unique Serial Number of the Charging Station" (A00.FR.405 in the 1.6 whitepaper), and terminates the
  connection otherwise (A00.FR.407).

labkit's TLS 1.2 list (``TLS12_CIPHERS``) is those four plus the two forward-secret ECDHE_RSA suites with
AES-GCM, for an RSA server certificate; with only an EC certificate loaded the CSMS can negotiate only the
ECDSA suites, so ``--tls-cert`` takes a second, RSA, certificate (``tlsca.server_cert(key_type="rsa")``).
TLS 1.3 suites are OpenSSL's defaults (Python cannot set them; all are AEAD).

**The CSMS side** (``server_context``): the context's ``sslobject_class`` is a subclass of ``ssl.SSLObject``
that reports every failed handshake (``on_failure``) and makes sure the peer gets the TLS alert OpenSSL
wrote: asyncio and uvloop close the connection at once after a failed handshake, without sending what the
TLS library left in its output buffer, so a client would see a reset instead of "certificate expired".
Raising ``SSLWantReadError`` once instead of the failure makes the event loop flush the alert and wait for
the peer, which closes (the next read raises the real error; at worst the handshake timeout closes it).

**The fleet side** (``ClientTLS``): one client context for all stations (``--ca``, optionally one
``--cert/--key``), or one per station (``--cert-dir``, loaded at the station's first connection: a
certificate is bound to its context). TLS session resumption reuses the ``ssl.SSLSession`` of a station's
previous connection: asyncio's ``create_connection`` has no ``session`` argument, so a small per-connection
object with a ``wrap_bio`` method stands in for the context and passes the session on (asyncio and uvloop
only call ``wrap_bio`` on a client context; uvloop type-checks contexts only on the server side).

**Timing and bytes** (``connect_timed``, for ``ws://`` too): the TCP connect (the socket is connected
here, then handed to websockets), the TLS handshake (until ``do_handshake`` succeeds, stamped inside the
SSL object), the WebSocket upgrade (until websockets returns the open connection); monotonic clock.
The TLS handshake's bytes are counted where they cannot be anything else: what ``do_handshake`` takes
from the incoming memory buffer and adds to the outgoing one, i.e. the TLS records of the handshake with
their headers, before TCP/IP headers and without retransmissions. A TLS 1.3 server's NewSessionTicket
messages come after the handshake and are not in them.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from labkit.errors import ConfigError

_mono = time.monotonic_ns

#: ``--tls-min-version`` / ``--tls-max-version`` / ``--tls-version``
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

#: TLS 1.2 suites (OpenSSL names): OCPP's four (A00.FR.318), plus ECDHE_RSA with AES-GCM for an RSA certificate
TLS12_CIPHERS: dict[str, str] = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
}
#: the OCPP-required ones (A00.FR.318)
OCPP_REQUIRED_CIPHERS = tuple(list(TLS12_CIPHERS)[:4])

#: security profiles: 0 none, 1 Basic auth over ws, 2 TLS + Basic auth, 3 TLS + client certificate
SECURITY_PROFILES = (0, 1, 2, 3)


def _versions(ctx: ssl.SSLContext, min_version: str, max_version: str, flag: str) -> None:
    for v in (min_version, max_version):
        if v not in TLS_VERSIONS:
            raise ConfigError.at(flag, f"{v!r}: allowed {', '.join(TLS_VERSIONS)}")
    if TLS_VERSIONS[min_version] > TLS_VERSIONS[max_version]:
        raise ConfigError.at(flag, f"minimum version {min_version} is above the maximum {max_version}")
    ctx.minimum_version = TLS_VERSIONS[min_version]
    ctx.maximum_version = TLS_VERSIONS[max_version]


def _readable(path: str, flag: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError.at(flag, f"{path}: cannot read it: {exc.strerror or exc}") from None


def _no_passphrase() -> str:
    raise ConfigError("the key is encrypted; give an unencrypted key (a lab key, 0600)")


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    _readable(cert, cert_flag)
    _readable(key, key_flag)
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except ConfigError as exc:
        raise ConfigError.at(key_flag, f"{key}: {exc}") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError.at(key_flag, f"{key} is not the key of {cert} (key values mismatch)") from None
        why = exc.reason or exc
        raise ConfigError.at(cert_flag, f"{cert} / {key}: not a PEM certificate and its key ({why})") from None


def _load_ca(ctx: ssl.SSLContext, cafile: str, flag: str) -> None:
    _readable(cafile, flag)
    try:
        ctx.load_verify_locations(cafile=cafile)
    except (ssl.SSLError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise ConfigError.at(flag, f"{cafile}: not a PEM certificate file ({why})") from None


# -- the CSMS ---------------------------------------------------------------------------------------------------


_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")


def _alert_received(exc: ssl.SSLError) -> bool:
    """Whether the handshake failed because the peer sent an alert (then there is none to send back) or the
    connection ended; else this side found the fault and OpenSSL has written an alert to send."""
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return True
    return (exc.reason or "").startswith(_ALERT_PREFIXES)


class _ServerSSLObject(ssl.SSLObject):
    """Reports a failed handshake and lets the event loop send the alert (see the module docstring)."""

    #: called with the SSLError of every failed handshake (set on the per-context subclass)
    on_failure: Callable[[ssl.SSLError], None] | None = None
    _labkit_failed: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._labkit_failed is not None:
            raise self._labkit_failed
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            hook = type(self).on_failure
            if hook is not None:
                try:
                    hook(exc)
                except Exception:  # noqa: BLE001, S110 - recording must never break the handshake's handling
                    pass
            if _alert_received(exc):
                raise
            # the loop now writes out what OpenSSL left in the output buffer (the alert) and waits for the
            # peer, which closes; the next call raises the real error
            self._labkit_failed = exc
            raise ssl.SSLWantReadError("labkit: alert pending") from exc


def server_context(
    certs: list[tuple[str, str]],
    client_ca: str | None,
    *,
    min_version: str = "1.2",
    max_version: str = "1.3",
    on_failure: Callable[[ssl.SSLError], None] | None = None,
) -> ssl.SSLContext:
    """The CSMS's TLS context: every (certificate, key) pair loaded (an EC and an RSA one for all of OCPP's
    suites), TLS ``min_version``..``max_version``, ``TLS12_CIPHERS``, no compression; with ``client_ca``
    a client certificate signed by it is required (profile 3). Bad files: ConfigError (one line)."""
    if not certs:
        raise ConfigError.at("--tls-cert", "security profiles 2 and 3 need the CSMS's certificate and key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions(ctx, min_version, max_version, "--tls-min-version")
    ctx.set_ciphers(":".join(TLS12_CIPHERS))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    for cert, key in certs:
        _load_pair(ctx, cert, key, "--tls-cert", "--tls-key")
    if client_ca is not None:
        _load_ca(ctx, client_ca, "--client-ca")
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.sslobject_class = type("LabkitServerSSLObject", (_ServerSSLObject,), {"on_failure": staticmethod(on_failure)})
    return ctx


def set_failure_hook(ctx: ssl.SSLContext, hook: Callable[[ssl.SSLError], None]) -> None:
    ctx.sslobject_class.on_failure = staticmethod(hook)  # type: ignore[attr-defined]


#: X509 verify codes (openssl/x509_vfy.h) the CSMS names in its refusals
_X509_EXPIRED, _X509_NOT_YET_VALID = 10, 9
_X509_UNTRUSTED = {2, 18, 19, 20, 21}


def handshake_refusal(exc: ssl.SSLError) -> tuple[str, str]:
    """(error code for csms.csv, reason in words) of a handshake the CSMS's TLS refused."""
    reason = exc.reason or ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        words = exc.verify_message or reason
        if exc.verify_code == _X509_EXPIRED:
            return "TlsClientCertExpired", words
        if exc.verify_code == _X509_NOT_YET_VALID:
            return "TlsClientCertNotYetValid", words
        if exc.verify_code in _X509_UNTRUSTED:
            return "TlsClientCertUntrusted", words
        return "TlsClientCertInvalid", words
    words = reason.replace("_", " ").lower() or str(exc)
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"):
        return "TlsNoClientCert", words
    if reason in ("UNSUPPORTED_PROTOCOL", "WRONG_SSL_VERSION", "VERSION_TOO_LOW", "VERSION_TOO_HIGH",
                  "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"):
        return "TlsVersion", words
    if reason in ("NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM"):
        return "TlsNoSharedCipher", words
    if "_ALERT_" in reason:  # the client gave up, mostly because it did not trust the CSMS's certificate
        return "TlsAlertFromClient", words
    if reason in ("HTTP_REQUEST", "WRONG_VERSION_NUMBER"):
        return "TlsNotTls", words
    return "TlsHandshakeFailed", words


def peer_common_names(peercert: dict | None) -> list[str]:
    """The CN values of a verified peer certificate (``getpeercert()``)."""
    if not peercert:
        return []
    return [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]


def resolve_profile(profile: int | None, *, password: bool, certs: bool, client_ca: bool) -> int:
    """The CSMS's security profile: as given, or inferred (a client CA: 3; a certificate: 2; a password: 1;
    else 0); ConfigError when the options given do not fit it."""
    if profile is None:
        profile = 3 if client_ca else 2 if certs else 1 if password else 0
    if profile not in SECURITY_PROFILES:
        raise ConfigError.at("--security-profile", f"{profile}: allowed 0, 1, 2, 3")
    flag = "--security-profile"
    if profile in (0, 1) and (certs or client_ca):
        raise ConfigError.at(flag, f"{profile} runs without TLS; --tls-cert/--tls-key/--client-ca are for 2 and 3")
    if profile == 0 and password:
        raise ConfigError.at(
            flag, "0 asks for no password, but one was given (--password-file or LABKIT_OCPP_PASSWORD); use 1 or 2"
        )
    if profile in (1, 2) and not password:
        raise ConfigError.at(
            flag, f"{profile} needs the Basic auth password: --password-file FILE or LABKIT_OCPP_PASSWORD"
        )
    if profile in (2, 3) and not certs:
        raise ConfigError.at(flag, f"{profile} needs the CSMS's certificate and key: --tls-cert FILE --tls-key FILE")
    if profile == 2 and client_ca:
        raise ConfigError.at(flag, "2 authenticates stations by password; --client-ca is for profile 3")
    if profile == 3 and not client_ca:
        raise ConfigError.at(flag, "3 needs --client-ca FILE (the CA that signed the stations' certificates)")
    if profile == 3 and password:
        raise ConfigError.at(
            flag,
            "3 authenticates stations by certificate; a password was given "
            "(--password-file or LABKIT_OCPP_PASSWORD)",
        )
    return profile


# -- the fleet --------------------------------------------------------------------------------------------------


class _ClientSSLObject(ssl.SSLObject):
    """Counts the handshake's bytes, stamps its end (``connect_timed``) and, when the station rejects the
    CSMS (its certificate, say), lets the event loop send the alert first, as on the CSMS's side."""

    _labkit_bios: tuple[ssl.MemoryBIO, ssl.MemoryBIO]
    _labkit_setup: Setup

    def do_handshake(self) -> None:
        setup = getattr(self, "_labkit_setup", None)
        if setup is None:  # not made through _StationContext
            return super().do_handshake()
        if setup.tls_error is not None:
            raise setup.tls_error
        incoming, outgoing = self._labkit_bios
        in0, out0 = incoming.pending, outgoing.pending
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            setup.tls_error = exc
            if _alert_received(exc) or not outgoing.pending:
                raise
            raise ssl.SSLWantReadError("labkit: alert pending") from exc
        else:
            setup.t_tls_ns = _mono()
        finally:
            setup.tls_in += in0 - incoming.pending
            setup.tls_out += outgoing.pending - out0


class _StationContext:
    """Stands in for the SSL context of one connection attempt: passes the station's saved session (if any)
    to ``wrap_bio`` and hooks the SSL object to the attempt's ``Setup``."""

    __slots__ = ("ctx", "session", "setup")

    def __init__(self, ctx: ssl.SSLContext, session: ssl.SSLSession | None, setup: Setup):
        self.ctx, self.session, self.setup = ctx, session, setup

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        obj = self.ctx.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
                                session=session or self.session)
        obj._labkit_bios = (incoming, outgoing)  # type: ignore[attr-defined]
        obj._labkit_setup = self.setup  # type: ignore[attr-defined]
        self.setup.sslobj = obj
        return obj


def _client_context(cafile: str | None, version: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the CSMS's certificate and host name
    if cafile is not None:
        _load_ca(ctx, cafile, "--ca")
    else:
        ctx.load_default_certs()
    if version is not None:
        _versions(ctx, version, version, "--tls-version")
    else:
        _versions(ctx, "1.2", "1.3", "--tls-version")
    ctx.set_ciphers(":".join(TLS12_CIPHERS))
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.sslobject_class = _ClientSSLObject
    return ctx


class ClientTLS:
    """The fleet's TLS: a shared context or one per station, and whether sessions are resumed."""

    def __init__(
        self,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        cert_dir: str | None = None,
        version: str | None = None,
        resumption: bool = True,
    ):
        self.ca, self.cert, self.key, self.cert_dir = ca, cert, key, cert_dir
        self.version = version
        self.resumption = resumption
        self._shared: ssl.SSLContext | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

    def check(self, station_ids: list[str]) -> ClientTLS:
        """Load what is shared and check every station's files (bad input: ConfigError, nothing written)."""
        if (self.cert is None) != (self.key is None):
            raise ConfigError.at("--cert" if self.cert is None else "--key", "--cert and --key go together")
        if self.cert is not None and self.cert_dir is not None:
            raise ConfigError.at(
                "--cert-dir", "give either --cert/--key (one certificate) or --cert-dir (one per station)"
            )
        if self.version is not None and self.version not in TLS_VERSIONS:
            raise ConfigError.at("--tls-version", f"{self.version!r}: allowed {', '.join(TLS_VERSIONS)}")
        base = _client_context(self.ca, self.version)
        if self.cert is not None and self.key is not None:
            _load_pair(base, self.cert, self.key, "--cert", "--key")
            self._shared = base
        elif self.cert_dir is not None:
            from labkit.sim.tlsca import station_files

            if not os.path.isdir(self.cert_dir):
                raise ConfigError.at("--cert-dir", f"{self.cert_dir}: no such directory")
            for sid in station_ids:
                cert, key = station_files(self.cert_dir, sid)
                for path, flag in ((cert, "--cert-dir"), (key, "--cert-dir")):
                    if not os.access(path, os.R_OK):
                        why = "missing" if not path.exists() else "not readable"
                        raise ConfigError.at(flag, f"{path}: {why} (station {sid}; tlsca.client_certs lays them out)")
            if station_ids:  # load one fully now, so a wrong layout or a mismatched key is bad input, not a run
                self._contexts[station_ids[0]] = self._station_context(station_ids[0])
        else:
            self._shared = base
        return self

    def _station_context(self, station_id: str) -> ssl.SSLContext:
        from labkit.sim.tlsca import station_files

        cert, key = station_files(self.cert_dir or "", station_id)
        ctx = _client_context(self.ca, self.version)
        _load_pair(ctx, str(cert), str(key), "--cert-dir", "--cert-dir")
        return ctx

    def context(self, station_id: str) -> ssl.SSLContext:
        """The station's context (made at its first connection with --cert-dir; may raise ConfigError)."""
        if self._shared is not None:
            return self._shared
        ctx = self._contexts.get(station_id)
        if ctx is None:
            ctx = self._contexts[station_id] = self._station_context(station_id)
        return ctx

    def describe(self) -> dict[str, Any]:
        """For the status file (no key material, no paths of keys)."""
        return {
            "tls_version": self.version or "1.2-1.3",
            "tls_resumption": self.resumption,
            "client_certificates": "per station" if self.cert_dir else "one" if self.cert else "none",
        }


# -- connection set-up ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Setup:
    """One connection attempt's set-up, filled in as it goes (monotonic ns)."""

    t_start_ns: int = 0
    t_tcp_ns: int | None = None
    t_tls_ns: int | None = None
    t_ws_ns: int | None = None
    dns_ns: int | None = None
    tls: bool = False
    tls_in: int = 0
    tls_out: int = 0
    tls_error: ssl.SSLError | None = None
    lost_exc: BaseException | None = None
    sslobj: Any = None
    version: str = ""
    cipher: str = ""
    resumed: bool | None = None

    @property
    def tcp_ms(self) -> float | None:
        return None if self.t_tcp_ns is None else (self.t_tcp_ns - self.t_start_ns) / 1e6

    @property
    def tls_ms(self) -> float | None:
        if self.t_tls_ns is None or self.t_tcp_ns is None:
            return None
        return (self.t_tls_ns - self.t_tcp_ns) / 1e6

    @property
    def ws_ms(self) -> float | None:
        if self.t_ws_ns is None:
            return None
        after = self.t_tls_ns if self.tls else self.t_tcp_ns
        return None if after is None else (self.t_ws_ns - after) / 1e6

    def detail(self) -> str:
        """The events file's ``detail`` of a ``handshake`` row (``resultsformat.parse_detail`` reads it)."""
        parts = [f"tcp_ms={self.tcp_ms:.3f}" if self.tcp_ms is not None else "tcp_ms="]
        if self.tls:
            parts.append(f"tls_ms={self.tls_ms:.3f}" if self.tls_ms is not None else "tls_ms=")
        parts.append(f"ws_ms={self.ws_ms:.3f}" if self.ws_ms is not None else "ws_ms=")
        if self.dns_ns is not None:
            parts.append(f"dns_ms={self.dns_ns / 1e6:.3f}")
        if self.tls:
            parts += [
                f"tls={self.version}",
                f"cipher={self.cipher}",
                f"resumed={int(bool(self.resumed))}",
                f"tls_out={self.tls_out}",
                f"tls_in={self.tls_in}",
            ]
        else:
            parts.append("tls=none")
        return " ".join(parts)

    def phase(self) -> str:
        """Where the attempt stopped: tcp, tls, ws or open."""
        if self.t_tcp_ns is None:
            return "tcp"
        if self.tls and self.t_tls_ns is None:
            return "tls"
        if self.t_ws_ns is None:
            return "ws"
        return "open"


class _TimedClientConnection(ClientConnection):
    """websockets' client connection, keeping the exception the connection was lost with (a TLS alert that
    arrives after the client's side of a TLS 1.3 handshake is over: the CSMS refusing its certificate)."""

    def __init__(self, *args: Any, labkit_setup: Setup, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._labkit_setup = labkit_setup

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._labkit_setup.t_ws_ns is None:
            self._labkit_setup.lost_exc = exc
        super().connection_lost(exc)


async def connect_timed(
    url: str,
    setup: Setup,
    *,
    context: ssl.SSLContext | None = None,
    session: ssl.SSLSession | None = None,
    open_timeout_s: float | None = None,
    **ws_kwargs: Any,
) -> ClientConnection:
    """Open ``url`` (ws:// or wss://) with each phase timed into ``setup``; websockets' ``connect`` does the
    TLS handshake (``context``, resuming ``session``) and the upgrade on the socket connected here. The
    whole set-up is bounded by ``open_timeout_s``. Raises what failed; ``setup`` says how far it got."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    setup.tls = secure
    loop = asyncio.get_running_loop()
    sock: socket.socket | None = None
    setup.t_start_ns = _mono()
    async with asyncio.timeout(open_timeout_s):
        try:
            try:
                ip = ipaddress.ip_address(host)
                targets: list[tuple[int, tuple]] = [
                    (socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, port))
                ]
            except ValueError:
                t = _mono()
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                setup.dns_ns = _mono() - t
                targets = [(family, addr) for family, _, _, _, addr in infos]
            setup.t_start_ns = _mono()  # the TCP connect starts here (after any name resolution)
            last: OSError | None = None
            for family, addr in targets:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    await loop.sock_connect(sock, addr)
                except OSError as exc:
                    sock.close()
                    sock, last = None, exc
                    continue
                break
            if sock is None:
                raise last or OSError(f"cannot resolve {host}")
            setup.t_tcp_ns = _mono()
            kwargs: dict[str, Any] = dict(ws_kwargs)
            if secure:
                kwargs["ssl"] = _StationContext(context or _client_context(None, None), session, setup)
                kwargs["server_hostname"] = host
            ws = await connect(
                url,
                sock=sock,
                open_timeout=None,
                create_connection=functools.partial(_TimedClientConnection, labkit_setup=setup),
                **kwargs,
            )
        except BaseException:
            if sock is not None and setup.t_ws_ns is None:
                try:
                    sock.close()
                except OSError:
                    pass
            raise
    setup.t_ws_ns = _mono()
    if secure:
        obj = ws.transport.get_extra_info("ssl_object") or setup.sslobj
        if obj is not None:
            setup.version = obj.version() or ""
            cipher = obj.cipher()
            setup.cipher = cipher[0] if cipher else ""
            setup.resumed = bool(obj.session_reused)
    return ws


def session_of(ws: ClientConnection) -> ssl.SSLSession | None:
    """The TLS session of an open connection, to resume with next time (None without TLS)."""
    obj = ws.transport.get_extra_info("ssl_object")
    if obj is None:
        return None
    try:
        return obj.session
    except (AttributeError, ValueError):
        return None


def _alert_words(reason: str) -> str | None:
    for prefix in _ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason[len(prefix):].replace("_", " ").lower()
    return None


def _ssl_error_in(exc: BaseException | None) -> ssl.SSLError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def tls_failure(exc: BaseException, setup: Setup) -> str | None:
    """A failed attempt's TLS reason in a few words (None when TLS had nothing to do with it)."""
    if not setup.tls:
        return None
    err = setup.tls_error or _ssl_error_in(setup.lost_exc) or _ssl_error_in(exc)
    if err is None:
        if setup.phase() == "tls":
            return "connection closed during the TLS handshake"
        return None
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"CSMS certificate rejected: {err.verify_message or err.reason}"
    reason = err.reason or ""
    alert = _alert_words(reason)
    if alert is not None:
        return f"TLS alert from the CSMS: {alert}"
    if reason:
        return f"TLS error: {reason.replace('_', ' ').lower()}"
    return f"TLS error: {err}"
