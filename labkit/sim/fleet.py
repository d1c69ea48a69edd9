"""The station fleet: one process, M stations (one WebSocket each), one scenario, samples to CSV.

``run_fleet(cfg)`` starts the stations at ``ramp_per_s`` per second, each running the scenario with its
own random generator (seeded from the run's seed and the station's index, so a run is reproducible),
writes every call to ``cfg.out`` and every connection event to ``cfg.events``, rewrites the JSON status
file about once a second, and returns 0 when every station has finished its scenario (or the duration
is over). SIGTERM/SIGINT stop it cleanly: the stations close, the files are flushed, status says
``stopped``. When no station ever connected it returns 1 and says why in one line (``never_connected``).

With a ``wss://`` URL the stations speak TLS (``labkit.sim.tls.ClientTLS``): the CSMS's certificate is
checked against ``ca`` (else the system's trust store) and the URL's host; ``cert``/``key`` give every
station the same client certificate, ``cert_dir`` each its own (``labkit.sim.tlsca`` layout);
``tls_version`` pins 1.2 or 1.3; ``tls_resumption`` offers the previous TLS session on reconnect.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from labkit.errors import ConfigError
from labkit.sim.samples import CALL_COLUMNS, EVENT_COLUMNS, CsvSink, StatusFile, fmt_ms, keep_exit_status, say
from labkit.sim.scenarios import DEFAULTS, SCENARIOS, ScenarioParams, expected_calls
from labkit.sim.settings import (
    IDENTITY_CHARS,
    IDENTITY_MAX_CHARS,
    VERSIONS,
    LoopHealth,
    WsSettings,
    gc_freezer,
    provenance,
    raise_nofile_limit,
    run_loop,
    set_validation,
    valid_identity,
)
from labkit.sim.station import Station
from labkit.sim.timing import CallRecord
from labkit.sim.tls import ClientTLS, Setup


def default_run_id(host: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{host}-{os.getpid()}"


@dataclass
class FleetConfig:
    """Everything ``labkit fleet`` takes (flags map one to one; units in the names)."""

    url: str
    stations: int = 1
    scenario: str = "thesis-2021"
    version: str = "1.6"
    id_prefix: str = "cs"
    first_index: int = 1
    host_label: str = field(default_factory=socket.gethostname)
    run_id: str = ""
    seed: int = 1
    ramp_per_s: float = 50.0
    jitter: float = 0.2
    duration_s: float | None = None
    params: ScenarioParams = field(default_factory=ScenarioParams)
    call_timeout_s: float = 30.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 30.0
    tx_attempts: int = 5
    tx_retry_interval_s: float = 5.0
    drain_timeout_s: float = 60.0
    #: the HTTP Basic auth password (from --password-file or LABKIT_OCPP_PASSWORD, never argv); not in repr
    password: str | None = field(default=None, repr=False)
    validation: str = "fast"
    loop: str = "auto"
    ws: WsSettings = field(default_factory=WsSettings)
    out: str | None = None
    events: str | None = None
    status: str | None = None
    status_interval_s: float = 1.0
    #: wss:// only: the CA file that signed the CSMS's certificate (None: the system's trust store)
    ca: str | None = None
    #: wss:// only: one client certificate and key for every station
    cert: str | None = None
    key: str | None = None
    #: wss:// only: a directory with one certificate and key per station (labkit.sim.tlsca layout)
    cert_dir: str | None = None
    #: wss:// only: "1.2" or "1.3" (None: either)
    tls_version: str | None = None
    tls_resumption: bool = True

    def check(self) -> FleetConfig:
        parts = urlsplit(self.url)
        if parts.password is not None:
            raise ConfigError.at(
                "--url",
                "must not carry a password (every local user reads argv with ps); "
                "use --password-file FILE or LABKIT_OCPP_PASSWORD",
            )
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError.at("--url", f"{self.url!r} is not a ws:// or wss:// URL with a host")
        if parts.scheme == "ws":
            given = [f for f, v in (("--ca", self.ca), ("--cert", self.cert), ("--key", self.key),
                                    ("--cert-dir", self.cert_dir), ("--tls-version", self.tls_version)) if v]
            if given:
                raise ConfigError.at(given[0], f"is for TLS; the URL is {parts.scheme}:// (use wss://)")
        if self.scenario not in SCENARIOS:
            raise ConfigError.at("--scenario", f"{self.scenario!r} unknown; allowed: {', '.join(SCENARIOS)}")
        if self.version not in VERSIONS:
            raise ConfigError.at("--ocpp", f"{self.version!r} unknown; allowed: {', '.join(VERSIONS)}")
        positive = {
            "--stations": self.stations,
            "--call-timeout": self.call_timeout_s,
            "--backoff-min": self.backoff_min_s,
            "--backoff-max": self.backoff_max_s,
            "--tx-attempts": self.tx_attempts,
        }
        for flag, value in positive.items():
            if value is None or value <= 0:
                raise ConfigError.at(flag, f"must be > 0, got {value}")
        nonneg = {
            "--ramp": self.ramp_per_s,
            "--drain-timeout": self.drain_timeout_s,
            "--meter-values": self.params.meter_values,
            "--meter-interval": self.params.meter_interval_s,
            "--step-interval": self.params.step_interval_s,
            "--sessions": self.params.sessions,
            "--think-time": self.params.think_time_s,
            "--tx-retry-interval": self.tx_retry_interval_s,
            "--first-index": self.first_index,
        }
        for flag, value in nonneg.items():
            if value < 0:
                raise ConfigError.at(flag, f"must be >= 0, got {value}")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError.at("--jitter", f"must be a fraction in [0, 1), got {self.jitter}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError.at("--duration", f"must be > 0 seconds, got {self.duration_s}")
        if self.params.heartbeat_s is not None and self.params.heartbeat_s <= 0:
            raise ConfigError.at("--heartbeat", f"must be > 0 seconds, got {self.params.heartbeat_s}")
        if self.params.charge_time_s <= 0:
            raise ConfigError.at("--charge-time", f"must be > 0 seconds, got {self.params.charge_time_s}")
        if self.scenario == "session" and self.params.meter_interval_s <= 0:
            raise ConfigError.at("--meter-interval", "must be > 0 seconds for the session scenario")
        if self.scenario == "session" and self.params.sessions == 0 and self.duration_s is None:
            raise ConfigError.at("--sessions", "0 (unbounded) needs --duration")
        if not self.id_prefix or not valid_identity(self.id_prefix):
            raise ConfigError.at(
                "--id-prefix", f"{self.id_prefix!r}: allowed characters are {IDENTITY_CHARS} (OCPP identifierString)"
            )
        last_id = self.station_id(self.stations - 1)
        if len(last_id) > IDENTITY_MAX_CHARS:
            raise ConfigError.at(
                "--id-prefix", f"station ids such as {last_id!r} would be over {IDENTITY_MAX_CHARS} characters (OCPP)"
            )
        if self.password is not None and not self.password:
            raise ConfigError.at("--password-file", "the password is empty")
        if self.backoff_max_s < self.backoff_min_s:
            raise ConfigError.at("--backoff-max", f"{self.backoff_max_s} is below --backoff-min {self.backoff_min_s}")
        self.ws.check()
        if not self.run_id:
            self.run_id = default_run_id(self.host_label)
        return self

    def station_id(self, i: int) -> str:
        width = max(len(str(self.first_index + self.stations - 1)), 3)
        return f"{self.id_prefix}{self.first_index + i:0{width}d}"


class Fleet:
    """Runs the stations and owns the sample files (see the module docstring)."""

    def __init__(self, cfg: FleetConfig, tls: ClientTLS | None = None):
        self.cfg = cfg
        self.tls = tls
        self.tls_handshakes = 0
        self.tls_resumed = 0
        self.calls = CsvSink(cfg.out, CALL_COLUMNS, on_error=self._write_failed)
        self.events = CsvSink(cfg.events, EVENT_COLUMNS, on_error=self._write_failed)
        self.status_file = StatusFile(cfg.status)
        self.stations: list[Station] = []
        self.connected = 0
        self.stopping = False
        self.stop_reason = ""
        self.phase = "starting"
        self.started = time.time()
        self.deadline: float | None = None
        self.outcomes: dict[str, int] = {}
        self.scenario_calls = 0
        self.heartbeats = 0
        self.reconnects = 0
        self.authorize_rejected = 0
        self.provenance: dict = {}
        self.calls_by_action: dict[str, int] = {}
        self._stop_event = asyncio.Event()
        self.health = LoopHealth()
        self._prefix = (cfg.run_id, cfg.host_label)

    # -- samples ---------------------------------------------------------------------------------
    def _write_failed(self, sink: CsvSink) -> None:
        """A samples file could not be written (full disk): stop, and exit 1 saying so (module docstring)."""
        say(f"labkit fleet: results not written: {sink.describe_error()}; stopping")
        self.stop("results write failed")

    def write_error(self) -> str:
        """'' when every row was written; else which file failed, why, and the rows lost."""
        return "; ".join(e for e in (self.calls.describe_error(), self.events.describe_error()) if e)

    def record(self, st: Station, rec: CallRecord) -> None:
        self.outcomes[rec.outcome] = self.outcomes.get(rec.outcome, 0) + 1
        if rec.action == "Heartbeat":
            self.heartbeats += 1
        else:
            self.scenario_calls += 1
        rtt = rec.rtt_ns if rec.outcome in ("ok", "call_error", "bad_response") else None
        self.calls.write(
            (
                self.cfg.run_id,
                self.cfg.host_label,
                st.id,
                self.cfg.version,
                rec.action,
                f"{rec.t_wall:.6f}",
                rec.t_send_ns,
                fmt_ms(rtt),
                rec.outcome,
                rec.error_code,
                "" if rec.req_bytes is None else rec.req_bytes,
                "" if rec.resp_bytes is None else rec.resp_bytes,
                fmt_ms(rec.queued_ns),
                rec.attempt,
                rec.message_id,
                "" if rec.connection is None else rec.connection,
                rec.tx_key or "",
            )
        )

    def event(
        self, st: Station, event: str, detail: str, downtime_ms: float | None = None, connection: int | None = None
    ) -> None:
        """One row of the events file. ``connection``: the station's connection number the event is about
        (default: its latest connection, empty before the first)."""
        if event == "reconnected":
            self.reconnects += 1
        elif event == "authorize_rejected":
            self.authorize_rejected += 1
        if connection is None:
            connection = st.connection or None
        self.events.write(
            (
                self.cfg.run_id,
                self.cfg.host_label,
                st.id,
                f"{time.time():.6f}",
                event,
                detail,
                "" if downtime_ms is None else f"{downtime_ms:.3f}",
                "" if connection is None else connection,
            )
        )

    def handshake(self, st: Station, setup: Setup) -> None:
        """The ``handshake`` row of a connection just opened (its set-up, ``Setup.detail``)."""
        if setup.tls:
            self.tls_handshakes += 1
            if setup.resumed:
                self.tls_resumed += 1
        self.event(st, "handshake", setup.detail())

    def never_connected(self) -> str:
        """'' when a station connected at least once (or none was started); else one line saying why not."""
        if not self.stations or any(s.connected_once for s in self.stations):
            return ""
        reasons: dict[str, int] = {}
        for s in self.stations:
            why = s.last_failure or "never finished a connection attempt"
            reasons[why] = reasons.get(why, 0) + 1
        parts = [f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "no station ever connected: " + "; ".join(parts)

    def status(self, finished: bool = False) -> dict:
        cfg = self.cfg
        per_station = expected_calls(cfg.scenario, cfg.params)
        errors = {k: v for k, v in self.outcomes.items() if k != "ok"}
        return {
            "role": "fleet",
            "run_id": cfg.run_id,
            "host": cfg.host_label,
            "pid": os.getpid(),
            "url": cfg.url,
            "scenario": cfg.scenario,
            "ocpp_version": cfg.version,
            "phase": self.phase,
            "stations": cfg.stations,
            "stations_started": len(self.stations),
            "stations_connected": self.connected,
            "stations_done": sum(1 for s in self.stations if s.done),
            "calls_done": self.scenario_calls,  # heartbeats excluded, as in calls_expected
            "calls_expected": None if per_station is None else per_station * cfg.stations,
            "heartbeats_done": self.heartbeats,
            "calls_total": sum(self.outcomes.values()),
            "calls_ok": self.outcomes.get("ok", 0),
            "errors": sum(errors.values()),
            "errors_by_outcome": errors,
            "reconnects": self.reconnects,
            "stations_ever_connected": sum(1 for s in self.stations if s.connected_once),
            "connect_failures": self._connect_failures(),
            "authorize_rejected": self.authorize_rejected,
            "tls": None
            if self.tls is None
            else {**self.tls.describe(), "handshakes": self.tls_handshakes, "resumed": self.tls_resumed},
            "queued": sum(len(s.txq) for s in self.stations),
            "elapsed_s": round(time.time() - self.started, 3),
            "duration_s": cfg.duration_s,
            "finished": finished,
            "stop_reason": self.stop_reason,
            **self.health.summary(),
            "csv_write_max_ms": round(max(self.calls.write_max_s, self.events.write_max_s) * 1e3, 2),
            "write_error": self.write_error(),
            **self.provenance,
        }

    def _connect_failures(self) -> dict[str, int]:
        """Stations whose latest connection attempt failed, by reason."""
        out: dict[str, int] = {}
        for s in self.stations:
            if s.last_failure:
                out[s.last_failure] = out.get(s.last_failure, 0) + 1
        return out

    # -- run -------------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self._stop_event.set()

    async def run(self) -> int:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop, signal.Signals(sig).name)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        if cfg.duration_s is not None:
            self.deadline = time.monotonic() + cfg.duration_s
        self.provenance = provenance(cfg.validation)
        status_task = asyncio.create_task(self.status_file.keep_writing(self.status, self.cfg.status_interval_s))
        gc_task = asyncio.create_task(gc_freezer())
        health_task = asyncio.create_task(self.health.run())
        scenario = SCENARIOS[cfg.scenario]
        tasks: list[asyncio.Task] = []
        self.phase = "ramping"
        ramp_gap = 1.0 / cfg.ramp_per_s if cfg.ramp_per_s > 0 else 0.0
        t0 = time.monotonic()
        stop_wait = asyncio.create_task(self._stop_event.wait())
        try:
            for i in range(cfg.stations):
                if self.stopping:
                    break
                rng = random.Random(f"{cfg.seed}:{cfg.first_index + i}")
                st = Station(self, i, cfg.station_id(i), rng)
                self.stations.append(st)
                tasks.append(asyncio.create_task(st.run(lambda s: scenario(s, cfg.params)), name=st.id))
                if ramp_gap:
                    delay = t0 + (i + 1) * ramp_gap - time.monotonic()
                    if delay > 0:
                        await asyncio.wait([stop_wait], timeout=delay)
            self.phase = "running"
            pending = set(tasks)
            while pending and not self.stopping:
                timeout = (
                    None
                    if self.deadline is None
                    else max(0.0, self.deadline - time.monotonic()) + cfg.drain_timeout_s + 5.0
                )
                done, pending = await asyncio.wait(
                    pending | {stop_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop_wait)
                for task in done:
                    if task is not stop_wait and not task.cancelled() and task.exception() is not None:
                        exc = task.exception()
                        print(
                            f"labkit fleet: station {task.get_name()} failed: {type(exc).__name__}: {exc}",
                            file=sys.stderr,
                        )
                if not done:  # the duration (plus drain time) is over
                    self.stop("duration")
            self.phase = "stopping" if self.stopping else "done"
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            stop_wait.cancel()
            status_task.cancel()
            gc_task.cancel()
            health_task.cancel()
            self.health.close()
            if self.stopping and self.stop_reason != "duration":
                self.phase = "stopped"
            else:
                self.phase = "done"
            self.calls.close()
            self.events.close()
            if self.write_error():
                self.phase = "failed"
            self.status_file.write_last(self.status(finished=self.phase == "done"))
        failed = sum(1 for t in tasks if not t.cancelled() and t.exception() is not None)
        return 1 if failed or self.never_connected() or self.write_error() else 0


def run_fleet(cfg: FleetConfig) -> int:
    """Check ``cfg``, run the fleet to the end; returns the exit status."""
    cfg.check()
    cfg.params = ScenarioParams(**asdict(cfg.params))
    tls = None
    if urlsplit(cfg.url).scheme == "wss":  # files checked before anything is written: bad ones are bad input
        tls = ClientTLS(cfg.ca, cfg.cert, cfg.key, cfg.cert_dir, cfg.tls_version, cfg.tls_resumption).check(
            [cfg.station_id(i) for i in range(cfg.stations)]
        )
    set_validation(cfg.validation)
    raise_nofile_limit()
    fleet = Fleet(cfg, tls)
    rc = run_loop(fleet.run(), cfg.loop)
    if fleet.write_error():
        say(f"labkit fleet: results not written: {fleet.write_error()}")
    elif fleet.stop_reason and fleet.stop_reason != "duration":
        say(f"labkit fleet: stopped by {fleet.stop_reason}")
    why = fleet.never_connected()
    if why:
        say(f"labkit fleet: {why}")
    keep_exit_status()
    return rc


def scenario_params(scenario: str, **given: object) -> ScenarioParams:
    """Scenario defaults overlaid with the given (non-None) values."""
    values = dict(DEFAULTS.get(scenario, {}))
    values.update({k: v for k, v in given.items() if v is not None})
    return ScenarioParams(**values)
