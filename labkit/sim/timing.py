"""The fleet's timed ChargePoint: the ocpp library's ChargePoint with each call timed on its own.

``ChargePoint.call()`` validates the request, then takes a lock (one outstanding CALL per connection, as
OCPP-J asks), sends the frame through ``_send()``, and waits for the reply that ``route_message()`` puts
on its response queue. A Heartbeat task may wait on that lock while a MeterValues call is in flight, so
timing around ``call()`` would charge the Heartbeat with the other call's round trip (the dissertation's
error, made worse by a shared timer). The hooks used here sit inside the lock:

* ``_send()`` stamps the monotonic clock (``time.monotonic_ns``) and the wall clock just before the CALL
  frame goes to the WebSocket: the lock is already held, so lock waiting is never in the RTT;
* the receive loop (``start()``) stamps the monotonic clock as soon as the WebSocket hands a frame over,
  before the frame is parsed; ``route_message()`` gives that stamp to the call whose reply it is (one
  CALL is outstanding per connection), before the reply goes to the waiting task (so event-loop wake-up
  of that task is not in the RTT either).

The RTT of a call is the difference of these two stamps: the same boundaries as the CSMS's handling time
(frame handed over by the WebSocket, frame handed to it). Request validation (before the lock), JSON
parsing of the reply and response validation (after the reply) are outside it; the CSMS's own handling,
including its parsing and validation, is inside it.

Each record also carries the attempt's message id, the station's connection number, and for transaction
messages the ``tx_key`` (``labkit.resultsformat.tx_key``) of the payload cut out of the frame as sent.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError
from ocpp.messages import Call, CallError, MessageType, _DecimalEncoder, unpack
from websockets.exceptions import ConnectionClosed

from labkit.resultsformat import tx_key
from labkit.sim.settings import version_module

_monotonic_ns = time.monotonic_ns
_time = time.time
_uuid4 = uuid.uuid4

#: a silent logger for the ocpp library (it logs every frame at INFO and bad frames with tracebacks)
QUIET = logging.getLogger("labkit.sim.ocpp")
QUIET.setLevel(logging.CRITICAL + 1)
QUIET.propagate = False

LOST_CODE = "__labkit_connection_lost__"


@dataclass(slots=True)
class CallRecord:
    """One call's sample, filled in as it goes (see docs/results.md, ocpp/calls-<host>.csv)."""

    action: str
    attempt: int = 1
    queued_ns: int | None = None
    t_wall: float | None = None
    t_send_ns: int | None = None
    sent: bool = False
    t_resp_ns: int | None = None
    req_bytes: int | None = None
    resp_bytes: int | None = None
    outcome: str = ""
    error_code: str = ""
    lost: bool = False
    #: the OCPP message id of this attempt ('' when none was made: offline)
    message_id: str = ""
    #: the station's connection number the attempt was made on (None: not made on any, offline)
    connection: int | None = None
    #: None: not a transaction message; "": one whose key ``_send`` computes from the frame; else the key
    tx_key: str | None = None

    @property
    def rtt_ns(self) -> int | None:
        if self.t_resp_ns is None or self.t_send_ns is None:
            return None
        return self.t_resp_ns - self.t_send_ns


class TimedMixin:
    """Mixed in before the version's ``ChargePoint``: per-call timing, connection-loss wake-up."""

    _ocpp_version: str

    def _timed_init(self, skip_validation: bool, connection_no: int | None = None) -> None:
        self.connection_no = connection_no
        self._pending: dict[str, CallRecord] = {}
        self._ids = itertools.count(1)
        self._skip_validation = skip_validation
        self.late_responses = 0
        self.bad_frames = 0
        self._frame_ns = 0

    async def timed_call(self, payload: Any, rec: CallRecord) -> Any:
        """``call()`` with ``rec`` filled in; never raises for OCPP outcomes (see ``rec.outcome``)."""
        uid = str(_uuid4())
        rec.message_id = uid
        rec.connection = self.connection_no
        self._pending[uid] = rec
        try:
            result = await self.call(
                payload, suppress=False, unique_id=uid, skip_schema_validation=self._skip_validation
            )
            rec.outcome = "ok"
            return result
        except (OCPPError, UnknownCallErrorCodeError) as exc:
            if rec.lost:
                rec.outcome, rec.error_code = "connection_lost", "ConnectionClosed"
            elif rec.error_code:  # a CallError frame came back
                rec.outcome = "call_error"
            elif rec.t_resp_ns is not None:  # a CallResult that failed schema validation
                rec.outcome = "bad_response"
                rec.error_code = getattr(exc, "code", type(exc).__name__)
            else:  # our own request failed validation before sending
                rec.outcome = "send_failed"
                rec.error_code = getattr(exc, "code", type(exc).__name__)
        except TimeoutError:
            rec.outcome = "connection_lost" if rec.lost else "timeout"
            rec.error_code = "" if rec.outcome == "timeout" else "ConnectionClosed"
        except ConnectionClosed as exc:
            rec.outcome = "connection_lost" if rec.sent else "send_failed"
            rec.error_code = type(exc).__name__
        except OSError as exc:
            rec.outcome = "connection_lost" if rec.sent else "send_failed"
            rec.error_code = type(exc).__name__
        finally:
            self._pending.pop(uid, None)
        return None

    async def _send(self, message: str) -> None:
        if message.startswith("[2,"):
            end = message.index('"', 4)
            rec = self._pending.get(message[4:end])
            if rec is not None:
                if rec.tx_key == "":
                    rec.tx_key = frame_tx_key(self.id, rec.action, message, rec.message_id)
                rec.req_bytes = len(message.encode())
                rec.t_wall = _time()
                rec.t_send_ns = _monotonic_ns()
                await self._connection.send(message)
                rec.sent = True
                return
        await self._connection.send(message)

    async def start(self) -> None:
        """The library's receive loop, stamping each frame as the WebSocket hands it over."""
        recv = self._connection.recv
        while True:
            message = await recv()
            self._frame_ns = _monotonic_ns()
            await self.route_message(message)

    async def route_message(self, raw_msg: str | bytes) -> None:
        t = self._frame_ns or _monotonic_ns()  # called from elsewhere than start(): stamp now
        self._frame_ns = 0
        try:
            msg = unpack(raw_msg)
        except OCPPError:
            self.bad_frames += 1
            return
        if msg.message_type_id == MessageType.Call:
            await self._answer_call(msg)
            return
        rec = self._pending.get(msg.unique_id)
        if rec is None or rec.t_resp_ns is not None or rec.t_send_ns is None:
            self.late_responses += 1  # a reply after its timeout, or to nothing we sent
            return
        rec.t_resp_ns = t
        rec.resp_bytes = len(raw_msg.encode()) if isinstance(raw_msg, str) else len(raw_msg)
        if msg.message_type_id == MessageType.CallError:
            rec.error_code = str(msg.error_code)
        self._response_queue.put_nowait(msg)

    async def _answer_call(self, msg: Call) -> None:
        """A CSMS-initiated CALL: the simulated station implements none, so answer with the spec's error."""
        try:
            await self._handle_call(msg)
        except OCPPError as error:
            await self._send(msg.create_call_error(error).to_json())
        except Exception:  # noqa: BLE001 - a station must answer, whatever happened
            await self._send(CallError(msg.unique_id, "InternalError", "", {}).to_json())

    def connection_lost(self) -> None:
        """Wake the call waiting for a reply that will never come (the library would wait for its timeout)."""
        for uid, rec in list(self._pending.items()):
            if rec.sent and rec.t_resp_ns is None:
                rec.lost = True
                self._response_queue.put_nowait(CallError(uid, LOST_CODE, "connection lost", {}))


_classes: dict[str, type] = {}


def timed_charge_point_class(version: str) -> type:
    """The timed ChargePoint class for an OCPP version (``1.6``, ``2.0.1``, ``2.1``)."""
    cls = _classes.get(version)
    if cls is None:
        base = version_module(version).ChargePoint
        cls = type(f"TimedChargePoint{version.replace('.', '')}", (TimedMixin, base), {})
        _classes[version] = cls
    return cls


def make_charge_point(
    version: str,
    station_id: str,
    connection: Any,
    *,
    response_timeout_s: float,
    skip_validation: bool,
    connection_no: int | None = None,
) -> Any:
    cp = timed_charge_point_class(version)(station_id, connection, response_timeout=response_timeout_s, logger=QUIET)
    cp._timed_init(skip_validation, connection_no)
    return cp


_compact = _DecimalEncoder(separators=(",", ":")).encode


def frame_tx_key(station_id: str, action: str, frame: str, message_id: str) -> str:
    """The transaction key of a CALL frame as the ocpp library wrote it: ``[2,"<id>","<action>",<payload>]``.

    The payload is cut out of the frame (no JSON work): exactly the compact JSON that went on the wire."""
    start = 4 + len(message_id) + 3 + len(action) + 2
    if frame.startswith(f'[2,"{message_id}","{action}",') and frame.endswith("]"):
        return tx_key(station_id, action, frame[start:-1])
    return tx_key(station_id, action, _compact(json.loads(frame)[3]))  # not the library's framing: re-encode


def payload_tx_key(station_id: str, action: str, payload: Any) -> str:
    """The key of a request dataclass as ``ChargePoint.call()`` would put it on the wire (for an attempt that
    never reached the wire, e.g. its own payload failed validation)."""
    import ocpp.charge_point as lib

    body = lib.remove_nones(lib.snake_to_camel_case(lib.serialize_as_dict(payload)))
    return tx_key(station_id, action, _compact(body))


def frame_action(frame: str) -> str:
    """The action of a CALL frame, for logs ('' if it is not one)."""
    try:
        msg = json.loads(frame)
        return msg[2] if msg[0] == 2 else ""
    except (ValueError, IndexError, TypeError, KeyError):
        return ""
