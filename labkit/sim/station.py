"""One simulated charging station: its WebSocket, reconnection with backoff, and its offline queue.

A station keeps one connection (``_connection_loop``): on a drop it records ``disconnected``, waits an
exponential backoff with jitter and connects again (``reconnected`` with the downtime). It does not
send BootNotification again after a reconnect (it did not reboot), as OCPP allows.

Messages go out two ways:

* ``call()`` for messages that are only worth sending now (Boot, Heartbeat, Status, Authorize, ...):
  while offline they are not sent and are recorded as ``send_failed`` / ``offline``.
* ``tx()`` for transaction messages (1.6 Start/StopTransaction and transaction MeterValues, 2.0.1
  TransactionEvent): they go through a FIFO queue that one sender task delivers in order. A message
  created while offline, or whose reply was lost with the connection, waits for the next connection and
  is retried (``attempt`` 2, 3, ...); ``queued_ms`` records how long it waited. A timeout while the
  connection stays up is retried up to ``tx_attempts`` times, as OCPP's TransactionMessageAttempts.
  A message is built at its first attempt and every retry sends the same payload (a new message id,
  the same ``tx_key``).

Connections are numbered (``connection``: 1 for the first, +1 at every reconnect); every call row and
event row says which one it belongs to.

Every connection is opened by ``labkit.sim.tls.connect_timed``: after ``connected``/``reconnected`` a
``handshake`` row gives its set-up (TCP connect, TLS handshake, WebSocket upgrade; TLS version, cipher,
whether the TLS session was resumed, the handshake's bytes), and the first accepted BootNotification a
``booted`` row. With ``wss://`` and resumption on, a station offers its previous connection's TLS session
when it reconnects. A failed attempt is a ``connect_failed`` row with its reason (a TLS alert, a
certificate the station rejected, an HTTP status with the CSMS's one-line explanation), then the backoff.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed

from labkit.sim.messages import TxState, dialect
from labkit.sim.samples import printable
from labkit.sim.settings import SUBPROTOCOLS
from labkit.sim.timing import CallRecord, make_charge_point, payload_tx_key
from labkit.sim.tls import Setup, connect_timed, session_of, tls_failure

if TYPE_CHECKING:
    from labkit.sim.fleet import Fleet

_mono = time.monotonic_ns


@dataclass(eq=False)
class TxItem:
    action: str
    build: Callable[[], Any]
    enq_ns: int
    on_result: Callable[[Any], None] | None = None
    attempt: int = 1
    waited: bool = False
    waiter: asyncio.Future | None = None
    result: Any = None
    outcome: str = ""
    #: the request, built at its first attempt and sent as it is at every retry (same payload, same key)
    payload: Any = None
    #: ``labkit.resultsformat.tx_key`` of the payload as sent ("" until the first attempt made it)
    tx_key: str = ""


@dataclass
class StationStats:
    calls: int = 0
    reconnects: int = 0
    tx_dropped: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Station:
    """One station of a fleet (see the module docstring)."""

    def __init__(self, fleet: Fleet, index: int, station_id: str, rng: random.Random):
        self.fleet = fleet
        cfg = fleet.cfg
        self.cfg = cfg
        self.index = index
        self.id = station_id
        self.rng = rng
        self.url = cfg.url.rstrip("/") + "/" + quote(station_id, safe="")
        self.dialect = dialect(cfg.version, station_id)
        self.cp: Any = None
        self.ws: Any = None
        self.online = False
        self._online = asyncio.Event()
        self._offline = asyncio.Event()  # set while not online: the reader declared the connection lost
        self._offline.set()
        self.txq: deque[TxItem] = deque()
        self._txq_event = asyncio.Event()
        self._waiters: set[asyncio.Future] = set()
        self._flushed = 0
        self.stopping = False
        self.lost_at_ns: int | None = None
        #: the number of the station's latest WebSocket connection: 1 for the first, +1 at every reconnect
        self.connection = 0
        #: why the latest connection attempt failed ('' after a success), short, for the fleet's summary
        self.last_failure = ""
        self.connected_once = False
        self.boot_interval_s: float | None = None
        self.done = False
        self._heartbeat_task: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._tx_counter = 0
        self.stats = StationStats()
        #: the TLS session of the latest connection (offered again on reconnect when resumption is on)
        self.tls_session: Any = None
        #: monotonic ns at which the set-up of the latest connection started (for ``booted``)
        self._setup_start_ns = 0
        self._booted = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self, scenario: Callable[[Station], Any]) -> None:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name=f"conn-{self.id}"),
            asyncio.create_task(self._tx_sender(), name=f"tx-{self.id}"),
        ]
        try:
            await scenario(self)
            await self._drain()
            self.done = True
        finally:
            await self.close()

    async def close(self) -> None:
        self.stopping = True
        self.stop_heartbeat()
        for task in self._tasks:
            if task.get_name().startswith("tx-"):
                task.cancel()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), timeout=self.cfg.ws.close_timeout_s or 5.0)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001, S110 - closing anyway
                pass
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.online = False
        self._offline.set()

    async def _drain(self) -> None:
        """At the end of the scenario: deliver what is queued (waiting at most drain_timeout_s offline)."""
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self.txq and time.monotonic() < deadline and not self.fleet.stopping:
            await asyncio.sleep(0.05)
        if self.txq:
            self.stats.tx_dropped += len(self.txq)
            self.fleet.event(self, "queue_dropped", f"{len(self.txq)} transaction messages undelivered")

    # -- connection ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str] | None:
        if self.cfg.password is None:
            return None
        token = base64.b64encode(f"{self.id}:{self.cfg.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _connection_loop(self) -> None:
        cfg = self.cfg
        delay = cfg.backoff_min_s
        subprotocol = SUBPROTOCOLS[cfg.version]
        ws_kwargs = cfg.ws.kwargs()
        open_timeout_s = ws_kwargs.pop("open_timeout")
        tls = self.fleet.tls
        while not self.stopping:
            self.fleet.event(self, "connecting", "", connection=self.connection + 1)
            setup = Setup()
            try:
                context = tls.context(self.id) if tls is not None else None
                ws = await connect_timed(
                    self.url,
                    setup,
                    context=context,
                    session=self.tls_session if tls is not None and tls.resumption else None,
                    open_timeout_s=open_timeout_s,
                    subprotocols=[subprotocol],
                    additional_headers=self._headers(),
                    user_agent_header=None,
                    **ws_kwargs,
                )
            except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - any failure: back off
                if self.stopping:
                    return
                self.last_failure, detail = describe_failure(exc, setup)
                self.fleet.event(self, "connect_failed", detail[:200], connection=self.connection + 1)
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2.0, cfg.backoff_max_s)
                continue
            if ws.subprotocol != subprotocol:
                self.last_failure = f"got no subprotocol (asked for {subprotocol})"
                self.fleet.event(
                    self,
                    "connect_failed",
                    f"subprotocol {ws.subprotocol!r} not {subprotocol}",
                    connection=self.connection + 1,
                )
                await ws.close()
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2.0, cfg.backoff_max_s)
                continue
            delay = cfg.backoff_min_s
            self.ws = ws
            self.connection += 1
            self.last_failure = ""
            self._setup_start_ns = setup.t_start_ns
            if tls is not None and tls.resumption:
                self.tls_session = session_of(ws)
            cp = make_charge_point(
                cfg.version,
                self.id,
                ws,
                response_timeout_s=cfg.call_timeout_s,
                skip_validation=cfg.validation == "off",
                connection_no=self.connection,
            )
            self.cp = cp
            if self.lost_at_ns is None:
                self.fleet.event(self, "connected", subprotocol)
            else:
                self.stats.reconnects += 1
                self.fleet.event(self, "reconnected", subprotocol, (_mono() - self.lost_at_ns) / 1e6)
            self.fleet.handshake(self, setup)
            self.connected_once = True
            self.online = True
            self.fleet.connected += 1
            self._online.set()
            self._offline.clear()
            detail = ""
            try:
                await cp.start()
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                detail = f"close {rcvd.code} {rcvd.reason}".strip() if rcvd else "no close frame"
            except Exception as exc:  # noqa: BLE001 - the reader died: treat as a drop
                detail = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                self.online = False
                self.fleet.connected -= 1
                self._online.clear()
                self._offline.set()
                self.lost_at_ns = _mono()
                cp.connection_lost()
                self._wake_waiters()
            if not self.stopping:
                self.fleet.event(self, "disconnected", detail)
                await asyncio.sleep(delay * self.rng.random())

    def _wake_waiters(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait_online(self) -> None:
        await self._online.wait()

    # -- calls -----------------------------------------------------------------------------------
    async def call(self, action: str, payload: Any) -> Any:
        """Send now if online; otherwise record ``send_failed``/``offline``. Returns the reply or None."""
        result, _ = await self._call(action, payload)
        return result

    async def _call(self, action: str, payload: Any) -> tuple[Any, CallRecord]:
        if not self.online:
            rec = CallRecord(
                action=action, outcome="send_failed", error_code="offline", t_wall=time.time(), t_send_ns=_mono()
            )
            self.fleet.record(self, rec)
            return None, rec
        rec = CallRecord(action=action)
        result = await self.cp.timed_call(payload, rec)
        if rec.t_send_ns is None:
            rec.t_wall, rec.t_send_ns = time.time(), _mono()
        self.fleet.record(self, rec)
        return result, rec

    async def authorize(self, id_tag: str) -> bool:
        """Authorize ``id_tag``: True when the station may start charging.

        An answer with any status but Accepted (Invalid, Blocked, Expired, ...) or a CallError refuses: the
        station records ``authorize_rejected`` (detail: the status or the CallError code) and does not start.
        No answer at all (offline, timeout, connection lost) does not refuse: like a charger authorizing
        locally while it cannot reach its CSMS (OCPP's LocalAuthorizeOffline), it goes on."""
        result, rec = await self._call(*self.dialect.authorize(id_tag))
        if rec.outcome == "ok":
            status = self.dialect.authorize_status(result)
            if status == "Accepted":
                return True
            self.fleet.event(self, "authorize_rejected", status or "no status")
            return False
        if rec.outcome == "call_error":
            self.fleet.event(self, "authorize_rejected", f"CallError {rec.error_code}")
            return False
        return True

    async def call_status(self, status: str) -> Any:
        msg = self.dialect.status(status)
        if msg is None:
            return None
        return await self.call(*msg)

    async def boot(self) -> Any:
        """BootNotification until Accepted (waiting for a connection as needed)."""
        action, payload = self.dialect.boot()
        while True:
            await self.wait_online()
            result, rec = await self._call(action, payload)
            status = getattr(result, "status", None)
            interval = getattr(result, "interval", None)
            if status == "Accepted":
                self.boot_interval_s = float(interval) if interval else None
                if not self._booted:
                    self._booted = True
                    self._booted_row(rec)
                return result
            await asyncio.sleep(float(interval) if interval else self.cfg.backoff_min_s)

    def _booted_row(self, rec: CallRecord) -> None:
        """``booted``: the first accepted BootNotification's RTT and the time from the start of its
        connection's set-up (TCP connect) to its reply: how long the station took to be in service."""
        parts = []
        if rec.rtt_ns is not None:
            parts.append(f"boot_ms={rec.rtt_ns / 1e6:.3f}")
        if rec.t_resp_ns is not None and rec.connection == self.connection and self._setup_start_ns:
            parts.append(f"since_connect_ms={(rec.t_resp_ns - self._setup_start_ns) / 1e6:.3f}")
        self.fleet.event(self, "booted", " ".join(parts), connection=rec.connection)

    def new_tx(self, id_tag: str, meter_start_wh: int) -> TxState:
        self._tx_counter += 1
        return TxState(local_id=self._tx_counter, id_tag=id_tag, meter_start_wh=int(meter_start_wh))

    async def tx(
        self, action: str, build: Callable[[], Any], on_result: Callable[[Any], None] | None = None, wait: bool = True
    ) -> None:
        """Queue a transaction message; wait for its reply while online (not while offline)."""
        item = TxItem(action, build, _mono(), on_result)
        if not self.online:
            item.waited = True
        self.txq.append(item)
        self._txq_event.set()
        if wait and self.online:
            fut = asyncio.get_running_loop().create_future()
            item.waiter = fut
            self._waiters.add(fut)
            try:
                await fut
            finally:
                self._waiters.discard(fut)

    async def _tx_sender(self) -> None:
        cfg = self.cfg
        while True:
            while not self.txq:
                self._txq_event.clear()
                await self._txq_event.wait()
            item = self.txq[0]
            if not self.online:
                item.waited = True
                await self._online.wait()
            if item.payload is None:
                item.payload = item.build()
            rec = CallRecord(action=item.action, attempt=item.attempt, tx_key=item.tx_key)
            result = await self.cp.timed_call(item.payload, rec)
            if rec.t_send_ns is None:
                rec.t_wall, rec.t_send_ns = time.time(), _mono()
            if not rec.tx_key:  # it never reached the wire (its own payload failed validation)
                rec.tx_key = payload_tx_key(self.id, item.action, item.payload)
            item.tx_key = rec.tx_key
            if item.waited:
                rec.queued_ns = rec.t_send_ns - item.enq_ns
            self.fleet.record(self, rec)
            outcome = rec.outcome
            final = outcome in ("ok", "call_error", "bad_response")
            if outcome == "send_failed" and rec.error_code not in (
                "ConnectionClosed",
                "ConnectionClosedOK",
                "ConnectionClosedError",
            ):
                final = self.online  # our own payload is invalid: retrying will not help
            if not final:
                item.attempt += 1
                if outcome in ("send_failed", "connection_lost") and self.online:
                    # the connection is closing but its reader has not said so yet: wait until it has. A
                    # send to a closed WebSocket fails without suspending, so trying again at once would spin
                    # without ever letting the reader or a stop run, a row per turn (seen when a stop's
                    # cancellation was lost: tests/sim/test_full_disk.py)
                    await self._offline.wait()
                if outcome == "timeout":
                    if item.attempt > cfg.tx_attempts:
                        final = True
                        self.stats.tx_dropped += 1
                        self.fleet.event(self, "tx_dropped", f"{item.action} after {cfg.tx_attempts} timeouts")
                    else:
                        await asyncio.sleep(cfg.tx_retry_interval_s)
                else:
                    item.waited = True
            if final:
                self.txq.popleft()
                item.outcome = outcome
                if outcome == "ok" and item.on_result is not None:
                    item.on_result(result)
                if item.waited:
                    self._flushed += 1
                if item.waiter is not None and not item.waiter.done():
                    item.waiter.set_result(None)
                if self._flushed and not any(i.waited for i in self.txq):
                    self.fleet.event(self, "queue_flushed", str(self._flushed))
                    self._flushed = 0

    def pause(self, seconds: float) -> Any:
        """``asyncio.sleep`` for ``seconds`` +- the fleet's jitter fraction (seeded, per station).

        Stations sharing one event loop and pacing themselves "N ms after the reply" lock into step: the
        replies of a group come back in one burst and the whole group sleeps from the same instant. The
        dissertation's stations were separate containers whose timers drifted apart; a small jitter keeps
        simulated stations independent in the same way (``--jitter 0`` shows the lockstep).
        """
        j = self.cfg.jitter
        if j and seconds > 0:
            seconds *= 1.0 + j * (2.0 * self.rng.random() - 1.0)
        return asyncio.sleep(seconds)

    # -- heartbeat -------------------------------------------------------------------------------
    def start_heartbeat(self, interval_s: float, immediately: bool = False) -> None:
        self.stop_heartbeat()
        self._heartbeat_task = asyncio.create_task(self._heartbeat(interval_s, immediately), name=f"hb-{self.id}")

    def stop_heartbeat(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None

    async def _heartbeat(self, interval_s: float, immediately: bool) -> None:
        action, payload = self.dialect.heartbeat()
        if not immediately:
            await self.pause(interval_s)
        while True:
            await self.call(action, payload)
            await self.pause(interval_s)


def describe_failure(exc: BaseException, setup: Setup) -> tuple[str, str]:
    """(a few words for the fleet's summary, the ``connect_failed`` row's detail) of a failed attempt."""
    from websockets.exceptions import InvalidStatus

    from labkit.errors import ConfigError

    if isinstance(exc, ConfigError):  # this station's certificate files (--cert-dir), found unusable now
        return "client certificate unusable", f"client certificate unusable: {exc}"
    why = tls_failure(exc, setup)
    if why is not None:
        return why, f"{why} (during {setup.phase()})"
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, InvalidStatus):
        body = exc.response.body or b""
        line = body.decode("utf-8", "replace").strip().split("\n", 1)[0] if body else ""
        if line:
            detail += f": {printable(line)[:120]}"
    return connect_failure(exc), detail


def connect_failure(exc: BaseException) -> str:
    """Why a connection attempt failed, in a few words (the fleet sums these up when nothing ever connected)."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        try:
            import http

            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = exc.response.reason_phrase
        return f"refused with HTTP {status} {phrase}".strip()
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out opening the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
