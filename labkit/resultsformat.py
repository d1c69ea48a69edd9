"""The results format, defined once: the name of the format and the columns of every CSV a run writes.

The writers (``labkit.sim.samples`` for the fleet and the CSMS, ``labkit.bench.probes`` for ping and the
echo probe, ``labkit.monitor``, ``labkit.bench.results`` for the manifest) and the reader
(``labkit.analysis.load``) all import this module, so a column added here reaches both sides at once.
docs/results.md explains every column. Standard library only: the simulators import it on lab hosts.

Each table lists its columns in file order, which of them are numbers, which a row cannot do without, and
which are new in this version of the format (absent from files of an older version; readers fill them
with empty values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the format this labkit writes; the readers also read the older ones in ``READS``. /2 added echo.csv and the
#: columns marked ``added`` below; /3 added a cell's ``schedule.json`` (``SCHEDULE``, ``SCHEDULE_PHASE``) and the
#: ``schedule`` keys of manifest.json, its plan and cell.json (``labkit bench --schedule``)
FORMAT = "labkit-results/3"
READS = ("labkit-results/1", "labkit-results/2", "labkit-results/3")


@dataclass(frozen=True)
class Table:
    """One CSV file kind: its columns in order, the numeric ones, the required ones, the ones new in /2."""

    name: str
    columns: tuple[str, ...]
    numeric: frozenset[str]
    required: tuple[str, ...]
    added: frozenset[str] = field(default_factory=frozenset)

    def kinds(self) -> dict[str, str]:
        """column -> "num" or "str" (what the reader parses it as)."""
        return {c: ("num" if c in self.numeric else "str") for c in self.columns}


#: ping.csv: one row per ICMP probe (iputils ping), lost probes included
PING = Table(
    "ping",
    ("src", "dst", "direction", "seq", "t_wall", "rtt_ms", "lost", "ttl"),
    numeric=frozenset({"seq", "t_wall", "rtt_ms", "lost", "ttl"}),
    required=("direction", "lost"),
)

#: echo.csv: one row per probe of labkit's own ICMP echo (`labkit echo`: kernel timestamps, microseconds), lost probes
#: included; its ``t_wall`` is when the probe was sent (ping.csv's is when the reply came)
ECHO = Table(
    "echo",
    ("src", "dst", "direction", "seq", "t_wall", "rtt_ms", "lost"),
    numeric=frozenset({"seq", "t_wall", "rtt_ms", "lost"}),
    required=("direction", "lost"),
    added=frozenset({"src", "dst", "direction", "seq", "t_wall", "rtt_ms", "lost"}),
)

#: ocpp/calls-<host>.csv: one row per call attempt, written by ``labkit fleet``
CALLS = Table(
    "calls",
    ("run_id", "host", "station_id", "ocpp_version", "action", "t_wall", "t_mono_ns", "rtt_ms", "outcome",
     "error_code", "req_bytes", "resp_bytes", "queued_ms", "attempt", "message_id", "connection", "tx_key"),
    numeric=frozenset({"t_wall", "t_mono_ns", "rtt_ms", "req_bytes", "resp_bytes", "queued_ms", "attempt",
                       "connection"}),
    required=("action", "outcome", "t_wall"),
    added=frozenset({"message_id", "connection", "tx_key"}),
)

#: ocpp/events-<host>.csv: connection events of the fleet's stations
EVENTS = Table(
    "events",
    ("run_id", "host", "station_id", "t_wall", "event", "detail", "downtime_ms", "connection"),
    numeric=frozenset({"t_wall", "downtime_ms", "connection"}),
    required=("event", "t_wall"),
    added=frozenset({"connection"}),
)

#: ocpp/csms.csv: one row per frame the CSMS received (and handshakes it refused), written by ``labkit csms``
CSMS = Table(
    "csms",
    ("t_wall", "station_id", "ocpp_version", "action", "handle_ms", "outcome", "error_code", "req_bytes",
     "resp_bytes", "message_id", "connection", "tx_key", "attempt"),
    numeric=frozenset({"t_wall", "handle_ms", "req_bytes", "resp_bytes", "connection", "attempt"}),
    required=("t_wall", "outcome"),  # refused handshakes and unreadable frames have no action
    added=frozenset({"message_id", "connection", "tx_key", "attempt"}),
)

#: monitor.csv (and monitors/<host>.csv): CPU and memory, once a second
MONITOR = Table(
    "monitor",
    ("t_wall", "host", "role", "process", "pid", "cpu_pct", "rss_bytes", "host_cpu_pct", "host_mem_used_bytes"),
    numeric=frozenset({"t_wall", "pid", "cpu_pct", "rss_bytes", "host_cpu_pct", "host_mem_used_bytes"}),
    required=("t_wall", "host", "process"),
)

TABLES: dict[str, Table] = {t.name: t for t in (PING, ECHO, CALLS, EVENTS, CSMS, MONITOR)}


@dataclass(frozen=True)
class Record:
    """One JSON record kind: its keys, the numeric ones, the ones an entry cannot do without, the ones new in
    the current version. Readers ignore keys they do not know."""

    name: str
    keys: tuple[str, ...]
    numeric: frozenset[str]
    required: tuple[str, ...]
    added: frozenset[str] = field(default_factory=frozenset)


#: cells/<id>/schedule.json (new in /3): the schedule a cell's OCPP phase ran (``labkit bench --schedule``), as
#: ``labkit.schedules.run`` records it, rewritten after every phase
SCHEDULE_FILE = "schedule.json"
SCHEDULE = Record(
    "schedule",
    # schedule: as written (name, description, repeat, origin, text, phases); frame: the phases' common layout;
    # started/ended: this machine's clock; ended_by: "end", "stopped", "last phase holds" or "failed: <why>";
    # holds: the profile the link kept; gateway_clock: {"start", "end"}: the gateway's clock offset from this
    # machine's (labkit.clocks: offset_s, uncertainty_s, samples, measured_at; None on one machine without SSH);
    # host_clocks: {"start", "end"}: {host: the same} for the hosts whose stamps meet the phases (the CSMS's and
    # the stations' hosts, in a bench); channels: whether the switches went over channels kept open
    ("schedule", "engine", "seed", "frame", "gateway", "started", "ended", "ended_by", "holds", "phases",
     "gateway_clock", "host_clocks", "channels"),
    numeric=frozenset({"seed", "started", "ended"}),
    required=("schedule", "phases"),
    added=frozenset({"schedule", "engine", "seed", "frame", "gateway", "started", "ended", "ended_by", "holds",
                     "phases", "gateway_clock", "host_clocks", "channels"}),
)
#: one entry of schedule.json's ``phases``: one phase as it ran (``labkit.schedules.PhaseRecord``), in the order
#: they ran. ``planned_*`` on this machine's clock, ``applied_*`` on the gateway's (epoch seconds);
#: ``latency_ms`` = applied_start - planned_start, on this machine's clock (the gateway's offset taken off; none
#: for the first phase, applied whole before the clock
#: started); ``profile`` is the profile the link held (under an outage: the one underneath)
SCHEDULE_PHASE = Record(
    "schedule_phase",
    ("index", "cycle", "label", "profile", "outage", "planned_start", "planned_end", "sent", "returned",
     "applied_start", "applied_end", "engine_at", "latency_ms", "verified", "problems"),
    numeric=frozenset({"index", "cycle", "planned_start", "planned_end", "sent", "returned", "applied_start",
                       "applied_end", "engine_at", "latency_ms"}),
    required=("index", "label", "applied_start"),
    added=frozenset({"index", "cycle", "label", "profile", "outage", "planned_start", "planned_end", "sent",
                     "returned", "applied_start", "applied_end", "engine_at", "latency_ms", "verified", "problems"}),
)

#: the transaction messages of each OCPP version: what OCPP delivers at least once (queued while offline,
#: retried after a lost answer); ``tx_key`` identifies one such message across its attempts
TX_ACTIONS = {
    "1.6": frozenset({"StartTransaction", "StopTransaction", "MeterValues"}),
    "2.0.1": frozenset({"TransactionEvent"}),
    "2.1": frozenset({"TransactionEvent"}),
}


def tx_key(station_id: str, action: str, payload_json: str) -> str:
    """The key of one transaction message: the same for every attempt of it, on the fleet and the CSMS.

    ``payload_json`` is the payload as compact JSON (``separators=(",", ":")``, keys in the order sent),
    which is what the ocpp library puts on the wire; a retry carries the same payload under a new message
    id, so the key, unlike the id, survives a retry."""
    import hashlib

    h = hashlib.blake2b(f"{station_id}\x1f{action}\x1f{payload_json}".encode(), digest_size=8)
    return h.hexdigest()


#: the keys of a ``handshake`` event's detail (ocpp/events-<host>.csv; written by labkit.sim.tls.Setup.detail):
#: milliseconds of the TCP connect, the TLS handshake and the WebSocket upgrade (monotonic clock; ``dns_ms``
#: only when the URL names a host), the TLS version ("none" without TLS), cipher, whether the TLS session was
#: resumed (1/0) and the handshake's TLS bytes sent and received; a ``booted`` event's: ``boot_ms``,
#: ``since_connect_ms``
HANDSHAKE_KEYS = ("tcp_ms", "tls_ms", "ws_ms", "dns_ms", "tls", "cipher", "resumed", "tls_out", "tls_in")
BOOTED_KEYS = ("boot_ms", "since_connect_ms")


def parse_detail(detail: str) -> dict[str, str]:
    """``"tcp_ms=0.4 tls=TLSv1.3 ..."`` (a ``handshake`` or ``booted`` event's detail) -> a dict of strings."""
    out: dict[str, str] = {}
    for part in detail.split():
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out
