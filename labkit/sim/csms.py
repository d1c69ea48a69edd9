"""The CSMS: a websockets server speaking OCPP 1.6J, 2.0.1 and 2.1 (chosen by subprotocol) on the ocpp library.

It answers what charging stations send (BootNotification with the configured heartbeat interval,
Heartbeat, StatusNotification, Authorize, 1.6 Start/StopTransaction, 2.x TransactionEvent, MeterValues,
DataTransfer, firmware, diagnostics/log and security notifications) and records its own handling time of
every frame in ``csms.csv`` (docs/results.md): from the moment the frame is handed over by the WebSocket
to the moment the answer has been written to it.

Frames that are not proper OCPP-J get the CallError the specification names, and a station that
misbehaves at the transport level is closed; other stations are not affected:

=================================  ====================================  ===============================
frame                              OCPP 2.0.1 / 2.1                      OCPP 1.6
=================================  ====================================  ===============================
not JSON, NaN/Infinity, nested     RpcFrameworkError, the id if the      FormationViolation
deeper than the parser goes        frame's start shows one, else "-1"
not an array / no message id /     RpcFrameworkError (id as received,    FormationViolation
id over 36 characters              "-1" if none)
unknown MessageTypeId              MessageTypeNotSupported               FormationViolation
CALL of an unknown action          NotImplemented                        NotImplemented
CALL of a known action that a      NotSupported                          NotSupported
CSMS does not receive
payload of wrong type / shape      TypeConstraintViolation, Format-      TypeConstraintViolation,
(schema validation)                Violation, OccurrenceConstraint...    FormationViolation, ...
binary frame                       close 1003                            close 1003
larger than --max-message-bytes    close 1009 (by websockets)            close 1009
more than --max-rate messages/s    GenericError, then close 1008         GenericError, then close 1008
=================================  ====================================  ===============================

(The ocpp library answers an unknown action with NotSupported and a known one with NotImplemented; both
OCPP 1.6 and 2.0.1 define it the other way round, as this module does.)

The handshake: a station identity (the last segment of the URL path) must be 1-48 characters of OCPP's
identifierString without the colon (else HTTP 400; none: 404). A station offering no subprotocol this
CSMS serves gets a completed handshake without a Sec-WebSocket-Protocol header and an immediate close
(1002), as OCPP-J section 3.2 asks. OCPP security profiles (``--security-profile``): 0 nothing; 1 HTTP
Basic authentication, the user name must be the station's identity and the password the configured one,
otherwise HTTP 401; 2 the same over TLS; 3 TLS with a client certificate signed by ``--client-ca``, whose CN
must be the station identity in the URL, otherwise HTTP 403 before the upgrade (``labkit.sim.tls``). Every
refused handshake is a ``refused`` row in csms.csv, TLS handshakes the TLS layer refused included
(``Tls...`` codes, no station id: the URL comes after the TLS handshake).

Every row carries the message id and the connection number (connections accepted from that station so
far); transaction messages (``labkit.resultsformat.TX_ACTIONS``) also their ``tx_key`` and ``attempt``
(how many times this CSMS has received that key), so duplicate deliveries can be counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as _dt
import hmac
import http
import itertools
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from ocpp.charge_point import remove_nones
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType, _DecimalEncoder
from ocpp.routing import on
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from labkit.errors import ConfigError
from labkit.resultsformat import TX_ACTIONS, tx_key
from labkit.sim.fastkeys import serialize, to_camel, to_snake
from labkit.sim.samples import CSMS_COLUMNS, CsvSink, StatusFile, keep_exit_status, printable, say
from labkit.sim.settings import (
    IDENTITY_CHARS,
    IDENTITY_MAX_CHARS,
    SUBPROTOCOLS,
    VERSION_OF,
    VERSIONS,
    LoopHealth,
    WsSettings,
    gc_freezer,
    provenance,
    raise_nofile_limit,
    run_loop,
    set_validation,
    valid_identity,
    version_module,
)
from labkit.sim.timing import QUIET
from labkit.sim.tls import handshake_refusal, peer_common_names, resolve_profile, server_context, set_failure_hook
from labkit.sim.validation import validate_payload

_mono = time.monotonic_ns
#: ``ocpp.messages.Call.to_json``'s encoding (compact, decimals as the library writes them), built once
_encode = _DecimalEncoder(separators=(",", ":")).encode
#: ``json.dumps(payload, separators=(",", ":"))``, built once: a received transaction payload -> its key's text
_compact = json.JSONEncoder(separators=(",", ":")).encode
#: a transaction message's duplicates are counted among the last this many transaction keys of its station
TX_WINDOW = 64
#: how much of an unknown action name or an over-long message id a csms.csv row keeps
TEXT_MAX_CHARS = 128


class _NotJson(ValueError):
    """NaN, Infinity or -Infinity: accepted by Python's json module, not JSON (RFC 8259)."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (RFC 8259)")


#: ``json.loads`` that refuses NaN and Infinity (same decoder otherwise, built once)
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode
#: the message id at the start of a frame that is not valid JSON: ``[<number>, "<id>"`` (plain characters)
_PEEK_ID = re.compile(r'\s*\[\s*[0-9]+\s*,\s*"([^"\\\x00-\x1f]+)"')


def _peek_id(raw: str) -> str:
    """The message id of a frame that could not be parsed, if its start shows one; else "-1" (OCPP-J:
    "When also the MessageId cannot be read, the CALLERROR SHALL contain "-1" as MessageId")."""
    m = _PEEK_ID.match(raw, 0, 256)
    return m.group(1) if m else "-1"


def _why_not_json(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "Message is not valid JSON: nested too deeply"
    if isinstance(exc, _NotJson):
        return f"Message is not valid JSON: {exc}"
    return "Message is not valid JSON"


def _now() -> str:
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class CsmsConfig:
    """Everything ``labkit csms`` takes (units in the names)."""

    host: str = "0.0.0.0"
    port: int = 9000
    versions: tuple[str, ...] = VERSIONS
    heartbeat_interval_s: int = 300
    #: the HTTP Basic auth password (from --password-file or LABKIT_OCPP_PASSWORD, never argv); not in repr
    password: str | None = field(default=None, repr=False)
    validation: str = "fast"
    loop: str = "auto"
    ws: WsSettings = field(default_factory=WsSettings)
    max_rate_per_s: float = 100.0
    burst: int = 200
    not_implemented: tuple[str, ...] = ()
    no_answer: tuple[str, ...] = ()
    reject_id_tags: tuple[str, ...] = ()
    out: str | None = None
    status: str | None = None
    status_interval_s: float = 1.0
    backlog: int = 4096
    #: OCPP security profile 0-3; None: inferred from what is given (labkit.sim.tls.resolve_profile)
    security_profile: int | None = None
    #: (certificate, key) files: one per key type (an EC and an RSA one cover all of OCPP's TLS 1.2 suites)
    tls_certs: tuple[tuple[str, str], ...] = ()
    #: the CA that signs the stations' certificates (profile 3)
    client_ca: str | None = None
    tls_min_version: str = "1.2"
    tls_max_version: str = "1.3"

    def check(self) -> CsmsConfig:
        for v in self.versions:
            if v not in VERSIONS:
                raise ConfigError.at("--ocpp", f"{v!r} unknown; allowed: {', '.join(VERSIONS)}")
        if not self.versions:
            raise ConfigError.at("--ocpp", "at least one version is needed")
        if self.heartbeat_interval_s < 1:
            raise ConfigError.at("--heartbeat-interval", f"must be >= 1 second, got {self.heartbeat_interval_s}")
        if self.max_rate_per_s <= 0:
            raise ConfigError.at("--max-rate", f"must be > 0 messages/s, got {self.max_rate_per_s}")
        if self.burst < 1:
            raise ConfigError.at("--burst", f"must be >= 1 message, got {self.burst}")
        if self.password is not None and not self.password:
            raise ConfigError.at("--password-file", "the password is empty")
        self.security_profile = resolve_profile(
            self.security_profile,
            password=self.password is not None,
            certs=bool(self.tls_certs),
            client_ca=self.client_ca is not None,
        )
        set_validation(self.validation)
        self.ws.check()
        return self

    @property
    def tls(self) -> bool:
        return (self.security_profile or 0) >= 2

    def ssl_context(self) -> Any:
        """The TLS context of profiles 2 and 3 (files loaded now: bad ones are ConfigError), else None."""
        if not self.tls:
            return None
        return server_context(
            list(self.tls_certs),
            self.client_ca if self.security_profile == 3 else None,
            min_version=self.tls_min_version,
            max_version=self.tls_max_version,
        )


class CsmsMixin:
    """Mixed in before the version's ChargePoint: frame checks, error codes, handling time, rate limit."""

    _ocpp_version: str

    def _csms_init(self, server: Csms, ws: ServerConnection, connection_no: int) -> None:
        self.server = server
        self._conn_no = connection_no
        self._tx_actions = TX_ACTIONS[self._ocpp_version]
        self._rec: list | None = None
        self._tokens = float(server.cfg.burst)
        self._last_refill = time.monotonic()
        self._is16 = self._ocpp_version == "1.6"
        self._actions = server.known_actions[self._ocpp_version]
        if server.cfg.validation == "off":
            for handlers in self.route_map.values():
                handlers["_skip_schema_validation"] = True

    # the receive loop -----------------------------------------------------------------------------
    def _closed_row(self, code: str, req_bytes: int) -> None:
        """The row of a connection closed at the transport level (no action, no answer)."""
        self.server.row(self.id, self._ocpp_version, "", None, "closed", code, req_bytes, None,
                        connection=self._conn_no)

    async def start(self) -> None:
        cfg = self.server.cfg
        rate, burst = cfg.max_rate_per_s, float(cfg.burst)
        while True:
            try:
                raw = await self._connection.recv()
            except ConnectionClosed as exc:
                if exc.sent is not None and exc.sent.code == 1009:
                    self._closed_row("MessageTooBig", cfg.ws.max_message_bytes)
                raise
            now = time.monotonic()
            self._tokens = min(burst, self._tokens + (now - self._last_refill) * rate)
            self._last_refill = now
            if self._tokens < 1.0:
                await self._rate_limited(raw)
                return
            self._tokens -= 1.0
            if isinstance(raw, bytes):
                self._closed_row("BinaryFrame", len(raw))
                await self._connection.close(1003, "OCPP-J frames are text")
                return
            await self.route_message(raw)

    async def _rate_limited(self, raw: str | bytes) -> None:
        """The message beyond the rate limit: a CALL gets CallError GenericError saying why (everything
        received before it has been answered: frames are handled one at a time), then the connection is
        closed with 1008 (policy violation). Frames after it are not read."""
        cfg = self.server.cfg
        t0, t_wall = _mono(), time.time()
        why = f"rate limit: over {cfg.max_rate_per_s:g} messages/s on average (bursts of {cfg.burst})"
        uid = action = key = ""
        attempt = resp_bytes = dt = None
        msg = None
        if isinstance(raw, str):
            try:
                msg = _decode(raw)
            except (ValueError, RecursionError):
                msg = None
        if (
            isinstance(msg, list)
            and len(msg) == 4
            and msg[0] == MessageType.Call
            and isinstance(msg[1], str)
            and msg[1]
            and isinstance(msg[2], str)
            and isinstance(msg[3], dict)
        ):
            uid, action = msg[1], msg[2]
            if action in self._tx_actions:
                key, attempt = self._tx(action, msg[3])
            text = CallError(
                uid,
                "GenericError",
                f"{why}; closing the connection",
                {"maxRatePerS": cfg.max_rate_per_s, "burst": cfg.burst},
            ).to_json()
            try:
                await self._connection.send(text)
                resp_bytes, dt = len(text.encode()), _mono() - t0
            except ConnectionClosed:
                pass
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
        self.server.row(
            self.id,
            self._ocpp_version,
            printable(action)[:TEXT_MAX_CHARS],
            dt,
            "closed",
            "RateLimit",
            size,
            resp_bytes,
            t_wall,
            printable(uid)[:TEXT_MAX_CHARS],
            self._conn_no,
            key,
            attempt,
        )
        await self._connection.close(1008, why)

    def _tx(self, action: str, payload: dict) -> tuple[str, int | None]:
        """The transaction key of a received transaction message and how many times this CSMS has now
        received it (1.6 MeterValues are transaction messages only with a transactionId)."""
        if self._is16 and action == "MeterValues" and "transactionId" not in payload:
            return "", None
        try:
            body = _compact(payload)
        except (ValueError, RecursionError):
            return "", None
        key = tx_key(self.id, action, body)
        return key, self.server.count_tx(self.id, key)

    def _code(self, code: str) -> str:
        if self._is16:
            if code in ("FormatViolation", "RpcFrameworkError", "MessageTypeNotSupported"):
                return "FormationViolation"
            if code == "OccurrenceConstraintViolation":
                return "OccurenceConstraintViolation"  # sic, OCPP 1.6
        else:
            if code == "FormationViolation":
                return "FormatViolation"
            if code == "OccurenceConstraintViolation":
                return "OccurrenceConstraintViolation"
        return code

    async def _error(self, uid: str, code: str, description: str, details: dict | None = None) -> None:
        await self._send(CallError(uid, self._code(code), description[:255], details or {}).to_json())

    async def route_message(self, raw: str) -> None:
        t0 = _mono()
        # t_wall, t0, action, req_bytes, message_id, tx_key, attempt: what the row of this frame says
        self._rec = rec = [time.time(), t0, "", len(raw.encode()), "", "", None]
        try:
            await self._route(raw, rec)
        finally:
            if self._rec is not None:  # nothing was sent back
                self._rec = None
                outcome = "no_answer" if rec[2] else "ignored"
                self.server.row(
                    self.id,
                    self._ocpp_version,
                    rec[2],
                    (_mono() - t0),
                    outcome,
                    "",
                    rec[3],
                    None,
                    rec[0],
                    rec[4],
                    self._conn_no,
                    rec[5],
                    rec[6],
                )

    async def _route(self, raw: str, rec: list) -> None:
        try:
            msg = _decode(raw)
        except (ValueError, RecursionError) as exc:  # not JSON, NaN/Infinity, nested beyond the parser's depth
            uid = _peek_id(raw)
            if uid != "-1":
                rec[4] = printable(uid)[:TEXT_MAX_CHARS]
            await self._error(uid, "RpcFrameworkError", _why_not_json(exc))
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str) or not msg[1] or len(msg[1]) > 36:
            uid = msg[1] if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str) and msg[1] else "-1"
            if uid != "-1":
                rec[4] = printable(uid)[:TEXT_MAX_CHARS]
            why = (
                "message id longer than 36 characters"
                if len(uid) > 36
                else "Not an OCPP-J message: [type, id, ...] expected"
            )
            await self._error(uid, "RpcFrameworkError", why)  # the id as received, so the sender can match it
            return
        mtype, uid = msg[0], msg[1]
        rec[4] = printable(uid)
        if mtype in (MessageType.CallResult, MessageType.CallError):
            if self._call_lock.locked():  # a reply to a call of ours (ChargePoint.call holds the lock)
                self._rec = None  # not a handled request
                cls = CallResult if mtype == MessageType.CallResult else CallError
                try:
                    self._response_queue.put_nowait(cls(*msg[1:]))
                except TypeError:
                    pass
            return  # else a reply to nothing: recorded as ignored
        if mtype != MessageType.Call:
            await self._error(uid, "MessageTypeNotSupported", f"MessageTypeId {mtype!r} not supported")
            return
        if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
            await self._error(uid, "RpcFrameworkError", "CALL must be [2, id, action, {payload}]")
            return
        action = msg[2]
        cfg = self.server.cfg
        if action in self._tx_actions:
            rec[5], rec[6] = self._tx(action, msg[3])
        if action not in self.route_map or action in cfg.not_implemented:
            rec[2] = printable(action)[:TEXT_MAX_CHARS]
            if action in cfg.no_answer:
                return
            if action in self._actions and action not in cfg.not_implemented:
                await self._error(uid, "NotSupported", f"{rec[2]} is not received by a CSMS")
            else:
                await self._error(uid, "NotImplemented", f"{rec[2]} is not implemented")
            return
        rec[2] = action
        if action in cfg.no_answer:
            return
        call = Call(uid, action, msg[3])
        try:
            await self._handle_call(call)
        except OCPPError as exc:
            await self._error(uid, exc.code, str(exc.description), {})
        except RecursionError:
            await self._error(uid, "RpcFrameworkError", "payload nested too deeply")
        except Exception:  # noqa: BLE001 - a handler bug must still be answered
            await self._error(uid, "InternalError", "internal error")

    async def _send(self, message: str) -> None:
        await self._connection.send(message)
        rec = self._rec
        if rec is not None:
            self._rec = None
            dt = _mono() - rec[1]
            if message.startswith("[3,"):
                outcome, code = "ok", ""
            else:
                outcome = "call_error"
                try:
                    code = json.loads(message)[2]
                except (ValueError, IndexError):
                    code = ""
            self.server.row(
                self.id,
                self._ocpp_version,
                rec[2],
                dt,
                outcome,
                code,
                rec[3],
                len(message.encode()),
                rec[0],
                rec[4],
                self._conn_no,
                rec[5],
                rec[6],
            )

    async def _handle_call(self, msg: Call) -> None:
        """The library's ``_handle_call`` without its per-call costs (same validation and conversions).

        The library inspects the handler's signature and converts every payload key with regular
        expressions on every call; here both are cached (``fastkeys``). Handlers are plain functions.
        The answer is encoded once, with the library's encoder settings, and an answer whose exact text
        was already validated for the same action (most are constant, ``{}``) is not validated again.
        """
        handlers = self.route_map[msg.action]
        validate = not handlers.get("_skip_schema_validation", False)
        if validate:
            await validate_payload(msg, self._ocpp_version)
        try:
            response = handlers["_on_action"](**to_snake(msg.payload))
        except OCPPError:
            raise
        except Exception:  # noqa: BLE001 - as the library: a failing handler answers InternalError
            await self._send(msg.create_call_error(None).to_json())
            return
        payload = to_camel(remove_nones(serialize(response)))
        body = _encode(payload)
        if validate:
            # the same answer text for the same action was valid before: the schema's verdict cannot differ
            key = (msg.action, body)
            valid = self.server.valid_results[self._ocpp_version]
            if key not in valid:
                await validate_payload(msg.create_call_result(payload), self._ocpp_version)
                if len(valid) >= 4096:
                    valid.clear()
                valid[key] = True
        await self._send(f"[3,{_encode(msg.unique_id)},{body}]")

    # helpers for handlers ---------------------------------------------------------------------
    def _id_status(self, tag: str | None) -> str:
        return "Invalid" if tag is not None and tag in self.server.cfg.reject_id_tags else "Accepted"


class Csms16(CsmsMixin):
    @on("BootNotification")
    def on_boot(self, **kw: Any) -> Any:
        return self._call_result.BootNotification(
            current_time=_now(), interval=self.server.cfg.heartbeat_interval_s, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **kw: Any) -> Any:
        return self._call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> Any:
        return self._call_result.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_tag: str, **kw: Any) -> Any:
        return self._call_result.Authorize(id_tag_info={"status": self._id_status(id_tag)})

    @on("StartTransaction")
    def on_start(self, id_tag: str, **kw: Any) -> Any:
        return self._call_result.StartTransaction(
            transaction_id=self.server.next_tx_id(), id_tag_info={"status": self._id_status(id_tag)}
        )

    @on("StopTransaction")
    def on_stop(self, id_tag: str | None = None, **kw: Any) -> Any:
        if id_tag is None:
            return self._call_result.StopTransaction()
        return self._call_result.StopTransaction(id_tag_info={"status": self._id_status(id_tag)})

    @on("MeterValues")
    def on_meter_values(self, **kw: Any) -> Any:
        return self._call_result.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> Any:
        return self._call_result.DataTransfer(status="Accepted" if vendor_id == "labkit" else "UnknownVendorId")

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status(self, **kw: Any) -> Any:
        return self._call_result.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **kw: Any) -> Any:
        return self._call_result.FirmwareStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event(self, **kw: Any) -> Any:
        return self._call_result.SecurityEventNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **kw: Any) -> Any:
        return self._call_result.LogStatusNotification()

    @on("SignedFirmwareStatusNotification")
    def on_signed_firmware_status(self, **kw: Any) -> Any:
        return self._call_result.SignedFirmwareStatusNotification()


class Csms201(CsmsMixin):
    @on("BootNotification")
    def on_boot(self, **kw: Any) -> Any:
        return self._call_result.BootNotification(
            current_time=_now(), interval=self.server.cfg.heartbeat_interval_s, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **kw: Any) -> Any:
        return self._call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> Any:
        return self._call_result.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token: dict, **kw: Any) -> Any:
        return self._call_result.Authorize(id_token_info={"status": self._id_status(id_token.get("id_token"))})

    @on("TransactionEvent")
    def on_transaction_event(self, id_token: dict | None = None, **kw: Any) -> Any:
        if id_token is None:
            return self._call_result.TransactionEvent()
        return self._call_result.TransactionEvent(id_token_info={"status": self._id_status(id_token.get("id_token"))})

    @on("MeterValues")
    def on_meter_values(self, **kw: Any) -> Any:
        return self._call_result.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> Any:
        return self._call_result.DataTransfer(status="Accepted" if vendor_id == "labkit" else "UnknownVendorId")

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **kw: Any) -> Any:
        return self._call_result.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **kw: Any) -> Any:
        return self._call_result.LogStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event(self, **kw: Any) -> Any:
        return self._call_result.SecurityEventNotification()

    @on("NotifyEvent")
    def on_notify_event(self, **kw: Any) -> Any:
        return self._call_result.NotifyEvent()

    @on("NotifyReport")
    def on_notify_report(self, **kw: Any) -> Any:
        return self._call_result.NotifyReport()


def _csms_class(version: str) -> type:
    base = version_module(version).ChargePoint
    mixin = Csms16 if version == "1.6" else Csms201
    return type(f"CsmsChargePoint{version.replace('.', '')}", (mixin, base), {})


class Csms:
    """The server: connections, the csms.csv sink, counters and the status file."""

    def __init__(self, cfg: CsmsConfig, ssl_context: Any = None):
        self.cfg = cfg
        self.ssl_context = ssl_context
        if ssl_context is not None:
            set_failure_hook(ssl_context, self.tls_refused)
        #: TLS handshakes refused, by code and OpenSSL's reason ("TlsClientCertExpired: certificate has expired")
        self.tls_failures: dict[str, int] = {}
        self.sink = CsvSink(cfg.out, CSMS_COLUMNS, on_error=self._write_failed)
        self.status_file = StatusFile(cfg.status)
        self.classes = {v: _csms_class(v) for v in cfg.versions}
        self.known_actions = {v: {a.value for a in version_module(v).enums.Action} for v in cfg.versions}
        self.valid_results: dict[str, dict[tuple[str, str], bool]] = {v: {} for v in cfg.versions}
        self._tx_ids = itertools.count(1)
        self.connections = 0
        self.connections_peak = 0
        self.stations_seen: set[str] = set()
        self.messages = 0
        self.errors = 0
        self.rejected = 0
        self.refused: dict[str, int] = {}  # refused handshakes by reason (error_code in csms.csv)
        self.connection_counts: dict[str, int] = {}  # station id -> connections accepted so far
        self.tx_seen: dict[str, dict[str, int]] = {}  # station id -> its last TX_WINDOW tx keys -> times received
        self.served = [SUBPROTOCOLS[v] for v in cfg.versions]
        self.provenance: dict = {}
        self.started = time.time()
        self.listen_url = ""
        self.phase = "starting"
        self._stop = asyncio.Event()
        self.stop_reason = ""
        self.health = LoopHealth()

    def next_tx_id(self) -> int:
        return next(self._tx_ids)

    def count_tx(self, station: str, key: str) -> int:
        """How many times a transaction message with this key has now been received from ``station``
        (among its last ``TX_WINDOW`` distinct ones: a station delivers them in order and retries the
        oldest first, so a duplicate comes within a few)."""
        seen = self.tx_seen.get(station)
        if seen is None:
            seen = self.tx_seen[station] = {}
        n = seen.get(key, 0) + 1
        if n == 1 and len(seen) >= TX_WINDOW:
            del seen[next(iter(seen))]
        seen[key] = n
        return n

    def row(
        self,
        station: str,
        version: str,
        action: str,
        dt_ns: int | None,
        outcome: str,
        code: str,
        req_bytes: int | None,
        resp_bytes: int | None,
        t_wall: float | None = None,
        message_id: str = "",
        connection: int | None = None,
        tx_key: str = "",
        attempt: int | None = None,
    ) -> None:
        if outcome == "refused":
            self.rejected += 1
            self.refused[code] = self.refused.get(code, 0) + 1
        else:
            self.messages += 1
            if outcome != "ok":
                self.errors += 1
        self.sink.write(
            (
                f"{(t_wall or time.time()):.6f}",
                station,
                version,
                action,
                "" if dt_ns is None else f"{dt_ns / 1e6:.3f}",
                outcome,
                code,
                "" if req_bytes is None else req_bytes,
                "" if resp_bytes is None else resp_bytes,
                message_id,
                "" if connection is None else connection,
                tx_key,
                "" if attempt is None else attempt,
            )
        )

    def refuse(self, station: str, code: str) -> None:
        """A handshake refused (HTTP 4xx) or closed at once (no subprotocol): one csms.csv row."""
        self.row(station, "", "", None, "refused", code, None, None)

    def tls_refused(self, exc: Any) -> None:
        """A TLS handshake that failed (bad or missing client certificate, version, cipher): a ``refused`` row
        without a station id (the URL path comes after the TLS handshake); the peer got OpenSSL's alert."""
        code, words = handshake_refusal(exc)
        self.refuse("", code)
        key = f"{code}: {printable(words)[:120]}"
        self.tls_failures[key] = self.tls_failures.get(key, 0) + 1

    # -- HTTP: identity, Basic auth, subprotocol ------------------------------------------------------
    @staticmethod
    def identity(path: str) -> str:
        return unquote(path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        ident = self.identity(request.path)
        if not ident:
            self.refuse("", "NoIdentity")
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no charging station identity in the path\n")
        if len(ident) > IDENTITY_MAX_CHARS or not valid_identity(ident):
            # recorded percent-encoded: a row stays one line and says exactly what came
            self.refuse(quote(ident, safe="")[:200], "BadIdentity")
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST,
                f"a charging station identity is 1-{IDENTITY_MAX_CHARS} characters of {IDENTITY_CHARS} "
                f"(OCPP identifierString without the colon)\n",
            )
        if self.cfg.security_profile == 3:
            return self._check_client_cert(connection, ident)
        if self.cfg.password is None:
            return None
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
                ok = hmac.compare_digest(user.encode(), ident.encode()) and hmac.compare_digest(
                    password.encode(), self.cfg.password.encode()
                )
            except (binascii.Error, UnicodeDecodeError, ValueError):
                ok = False
        if ok:
            return None
        self.refuse(ident, "Unauthorized")
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "invalid credentials\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="labkit", charset="UTF-8"'
        return response

    def _check_client_cert(self, connection: ServerConnection, ident: str) -> Any:
        """Profile 3: the verified client certificate's CN must be the station identity of the URL (OCPP 1.6
        security whitepaper A00.FR.405, 2.0.1 Part 2 A00.FR.4xx); else HTTP 403, before the upgrade."""
        names = peer_common_names(connection.transport.get_extra_info("peercert"))
        if names == [ident]:
            return None
        if not names:
            self.refuse(ident, "NoClientCert")
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "a client certificate is required\n")
        self.refuse(ident, "ClientCertMismatch")
        shown = printable(names[0])[:64] if len(names) == 1 else f"{len(names)} CNs"
        return connection.respond(
            http.HTTPStatus.FORBIDDEN,
            f"the client certificate is for {shown!r}, not for the station identity {ident!r}\n",
        )

    def select_subprotocol(self, connection: ServerConnection, offered: Any) -> str | None:
        """The first subprotocol the station offered that this CSMS serves (the station lists them in its
        order of preference), or None: the handshake then completes without a Sec-WebSocket-Protocol
        header and ``handler`` closes the connection, as OCPP-J asks (websockets would answer HTTP 400)."""
        for subprotocol in offered:
            if subprotocol in self.served:
                return subprotocol
        return None

    async def handler(self, ws: ServerConnection) -> None:
        ident = self.identity(ws.request.path)
        version = VERSION_OF.get(ws.subprotocol or "")
        if version not in self.classes:
            self.refuse(ident, "NoSubprotocol")
            await ws.close(1002, f"no OCPP subprotocol agreed; this CSMS serves {', '.join(self.served)}"[:123])
            return
        n = self.connection_counts.get(ident, 0) + 1
        self.connection_counts[ident] = n
        cp = self.classes[version](ident, ws, response_timeout=30, logger=QUIET)
        cp._csms_init(self, ws, n)
        self.connections += 1
        self.connections_peak = max(self.connections_peak, self.connections)
        self.stations_seen.add(ident)
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1

    # -- run -------------------------------------------------------------------------------------
    def status(self, finished: bool = False) -> dict:
        return {
            "role": "csms",
            "pid": os.getpid(),
            "listen": self.listen_url,
            "phase": self.phase,
            "ocpp_versions": list(self.cfg.versions),
            "connections": self.connections,
            "connections_peak": self.connections_peak,
            "stations_seen": len(self.stations_seen),
            "messages": self.messages,
            "errors": self.errors,
            "rejected_handshakes": self.rejected,
            "rejected_by_reason": dict(self.refused),
            "security_profile": self.cfg.security_profile,
            "tls_versions": self._tls_versions(),
            "tls_handshake_failures": dict(self.tls_failures),
            "elapsed_s": round(time.time() - self.started, 3),
            "finished": finished,
            "stop_reason": self.stop_reason,
            **self.health.summary(),
            "csv_write_max_ms": round(self.sink.write_max_s * 1e3, 2),
            "write_error": self.sink.describe_error(),
            **self.provenance,
        }

    def _tls_versions(self) -> str:
        """"1.2-1.3", "1.2", "1.3", or "" without TLS."""
        cfg = self.cfg
        if not cfg.tls:
            return ""
        if cfg.tls_min_version == cfg.tls_max_version:
            return cfg.tls_min_version
        return f"{cfg.tls_min_version}-{cfg.tls_max_version}"

    def stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()

    def _write_failed(self, sink: CsvSink) -> None:
        """csms.csv could not be written (a full disk): the CSMS stops and exits 1, so no run it serves looks
        complete with rows missing (samples.py)."""
        say(f"labkit csms: results not written: {sink.describe_error()}; stopping")
        self.stop("results write failed")

    async def run(self, ready: Any = None) -> int:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop, signal.Signals(sig).name)
            except (NotImplementedError, RuntimeError):
                pass
        self.provenance = provenance(cfg.validation)
        tls_kwargs: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls_kwargs = {"ssl": self.ssl_context, "ssl_handshake_timeout": cfg.ws.open_timeout_s or 60.0}
        try:
            server = await serve(
                self.handler,
                cfg.host,
                cfg.port,
                subprotocols=self.served,
                select_subprotocol=self.select_subprotocol,
                process_request=self.process_request,
                server_header=None,
                backlog=cfg.backlog,
                logger=QUIET,
                **tls_kwargs,
                **cfg.ws.kwargs(),
            )
        except OSError as exc:
            from labkit.errors import LabkitError

            raise LabkitError(f"csms: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None
        sock = next(iter(server.sockets))
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.listen_url = f"{'wss' if self.ssl_context is not None else 'ws'}://{shown}:{port}/"
        self.phase = "listening"
        status_task = asyncio.create_task(self.status_file.keep_writing(self.status, self.cfg.status_interval_s))
        gc_task = asyncio.create_task(gc_freezer())
        health_task = asyncio.create_task(self.health.run())
        print(
            f"labkit csms: listening on {self.listen_url} ({', '.join(SUBPROTOCOLS[v] for v in cfg.versions)}; "
            f"security profile {cfg.security_profile}"
            + (f", TLS {self._tls_versions()}" if cfg.tls else "")
            + f"; heartbeat interval {cfg.heartbeat_interval_s} s; validation {cfg.validation})",
            flush=True,
        )
        if ready is not None:
            ready(self)
        try:
            await self._stop.wait()
        finally:
            self.phase = "stopping"
            server.close(close_connections=True)
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=(cfg.ws.close_timeout_s or 5.0) + 2.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            status_task.cancel()
            gc_task.cancel()
            health_task.cancel()
            self.health.close()
            self.sink.close()
            self.phase = "failed" if self.sink.error is not None else "stopped"
            self.status_file.write_last(self.status(finished=True))
        return 1 if self.sink.error is not None else 0


def run_csms(cfg: CsmsConfig) -> int:
    cfg.check()
    context = cfg.ssl_context()  # before anything is written: bad files are bad input
    raise_nofile_limit()
    csms = Csms(cfg, context)
    rc = run_loop(csms.run(), cfg.loop)
    if csms.sink.error is not None:
        say(f"labkit csms: results not written: {csms.sink.describe_error()}")
    elif csms.stop_reason:
        say(f"labkit csms: stopped by {csms.stop_reason}")
    keep_exit_status()
    return rc
