"""Bench plans: which profiles, fleet sizes, repetitions and sample sizes a run covers, validated up front.

A plan expands into cells, one per (profile, EVSE hosts, stations per host, repetition). Ping and iperf3
baselines do not depend on the fleet, so by default they run once per profile and repetition (in the first
cell of that profile); ``baselines="every"`` takes them in every cell.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.errors import ConfigError

#: The dissertation's matrix (tables 9 to 17): its six profiles in both labkit families, 1/10/25/50 chargers.
THESIS_SLOW = ["none", "slow-amps", "slow-gprs", "slow-3g", "slow-4g", "slow-vsat"]
THESIS_REALISTIC = ["gprs", "3g", "4g", "vsat"]
THESIS_EVSE = [1, 10, 25, 50]

SCENARIOS = ("thesis-2021", "session")
OCPP_VERSIONS = ("1.6", "2.0.1")
SECURITY_PROFILES = (0, 1, 2, 3)
TLS_VERSIONS = ("1.2", "1.3")


@dataclass(frozen=True)
class Security:
    """One OCPP security profile as a cell runs it: 0 (nothing), 1 (HTTP Basic auth), 2 (Basic auth over TLS),
    3 (TLS with a client certificate per station); with TLS, the version the stations ask for and whether they
    resume their TLS session on reconnect."""

    profile: int
    tls_version: str | None = None
    resumption: bool | None = None

    @property
    def tls(self) -> bool:
        return self.profile >= 2

    @property
    def label(self) -> str:
        """``sp1``, ``sp3-tls13``, ``sp2-tls12-nores``: part of the cell id, so only [a-z0-9-]."""
        if not self.tls:
            return f"sp{self.profile}"
        version = (self.tls_version or "").replace(".", "")
        return f"sp{self.profile}-tls{version}" + ("" if self.resumption else "-nores")

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "tls_version": self.tls_version, "resumption": self.resumption,
                "label": self.label}


@dataclass
class Outage:
    duration_s: float
    at_s: float

    @classmethod
    def parse(cls, text: str) -> Outage:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*@\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text or "")
        if not m:
            raise ConfigError(f"--outage: {text!r} is not DURATION@AT, e.g. 30s@60s (units ms, s, m; default s)")
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
        duration = float(m.group(1)) * scale[m.group(2)]
        at = float(m.group(3)) * scale[m.group(4)]
        if duration <= 0:
            raise ConfigError(f"--outage: the duration must be positive (got {text!r})")
        return cls(duration, at)


#: a schedule whose last phase has no duration holds it until the OCPP phase ends: by default that is this long
#: after the phases before it (enough to watch the stations settle after an outage)
SCHEDULE_HOLD_S = 30.0


def schedule_span_s(schedule: Any, cycles: int | None = None) -> float:
    """The OCPP phase's default length for a schedule (``labkit.profiles.Schedule``): its phases' durations
    (times ``cycles`` passes of a repeating one, one pass without), plus ``SCHEDULE_HOLD_S`` when its last
    phase has no duration."""
    finite = sum(p.duration_s for p in schedule.phases if p.duration_s is not None)
    if schedule.repeat:
        return finite * (cycles or 1)
    return finite + (SCHEDULE_HOLD_S if schedule.phases[-1].duration_s is None else 0.0)


def with_schedule(plan: Plan, schedule: Any, *, scenario_given: bool, duration_given: bool,
                  think_time_given: bool) -> None:
    """What ``--schedule`` changes in a plan unless the options say otherwise: the ``session`` scenario (stations
    charge for a given time, so the phase lasts as long as the schedule), ``--duration`` the schedule's span
    (``schedule_span_s``), and stations that plug in at once (``think_time_s`` 0)."""
    plan.schedule = schedule.name
    if not scenario_given:
        plan.scenario = "session"
    if plan.scenario == "session" and not duration_given:
        plan.session_duration_s = schedule_span_s(schedule, plan.schedule_cycles)
    if plan.scenario == "session" and not think_time_given:
        plan.think_time_s = 0.0


@dataclass
class Cell:
    profile: str
    evse_hosts: int
    stations_per_host: int
    repeat: int
    baselines: bool
    #: the OCPP security profile of the cell (None: the plan sweeps none; ``Plan.auth`` says what ran)
    security: Security | None = None

    @property
    def id(self) -> str:
        base = f"{self.profile}__n{self.evse_hosts}x{self.stations_per_host}__r{self.repeat}"
        return f"{base}__{self.security.label}" if self.security else base

    @property
    def stations(self) -> int:
        return self.evse_hosts * self.stations_per_host


@dataclass
class Plan:
    profiles: list[str]
    evse_counts: list[int] = field(default_factory=lambda: [1])
    stations_per_host: int = 1
    repeats: int = 1
    scenario: str = "thesis-2021"
    ocpp: str = "1.6"
    seed: int = 2021
    # ping
    ping_count: int = 100
    ping_interval_s: float = 0.2
    # iperf3
    iperf_seconds: float | None = None  # None: tcp_timing() picks it from the path's RTT
    iperf_omit_s: float | None = None
    udp_seconds: float = 5.0
    # OCPP scenario sizes (thesis-2021: the dissertation sent 1000 MeterValues 100 ms apart)
    meter_values: int = 100
    meter_interval_s: float = 0.1
    heartbeat_s: float = 2.0
    session_duration_s: float = 60.0
    baselines: str = "first"  # "first" | "every" | "none"
    # WebSocket keepalive of the stations (None: the simulator's default, websockets' 20 s / 20 s)
    ws_ping_interval_s: float | None = None
    ws_ping_timeout_s: float | None = None
    ocpp_phase: bool = True
    outage: Outage | None = None
    pcap: bool = False
    name: str = ""
    #: OCPP security profile 1 (HTTP Basic auth): "basic" when the bench was given a password (never the
    #: password itself), else "none"
    auth: str = "none"
    #: OCPP security profiles to sweep (``--security-profile 1,2,3``); empty: none swept (``auth`` applies)
    security_profiles: list[int] = field(default_factory=list)
    #: with profiles 2 and 3: the TLS versions the stations ask for, and TLS session resumption on reconnect
    tls_versions: list[str] = field(default_factory=lambda: ["1.3"])
    tls_resumption: list[bool] = field(default_factory=lambda: [True])
    #: ``--schedule NAME``: every cell's OCPP phase runs this schedule (labkit.schedules) from its start; None: the
    #: cell's profile holds throughout. ``schedule_cycles``: passes of a repeating one (None: until the phase ends)
    schedule: str | None = None
    schedule_cycles: int | None = None
    #: extra profiles files (``--profiles``), read after the shipped profiles.yaml (profiles and schedules)
    profiles_files: list[str] = field(default_factory=list)
    #: session scenario: the stations' mean idle time before a charging session (None: the simulator's 60 s)
    think_time_s: float | None = None

    def securities(self) -> list[Security | None]:
        """The security variants every (link profile, fleet size) runs in, in the order given."""
        if not self.security_profiles:
            return [None]
        out: list[Security | None] = []
        for sp in self.security_profiles:
            if sp < 2:
                out.append(Security(sp))
                continue
            out += [Security(sp, v, r) for v in self.tls_versions for r in self.tls_resumption]
        return out

    def cells(self) -> list[Cell]:
        out = []
        for repeat in range(1, self.repeats + 1):
            for profile in self.profiles:
                i = 0
                for sec in self.securities():
                    for n in self.evse_counts:
                        base = self.baselines == "every" or (self.baselines == "first" and i == 0)
                        out.append(Cell(profile, n, self.stations_per_host, repeat, base, sec))
                        i += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outage"] = asdict(self.outage) if self.outage else None
        return d

    def needs_password(self) -> bool:
        """Whether a cell runs HTTP Basic auth (security profile 1 or 2) under the sweep."""
        return any(s is not None and s.profile in (1, 2) for s in self.securities())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        d = dict(d)
        if d.get("outage"):
            d["outage"] = Outage(**d["outage"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


#: below this rate (bit/s) a TCP test runs 30 s: few packets a second, and a loss costs seconds
SLOW_LINK_BPS = 500_000


def tcp_timing(plan: Plan, added_rtt_ms: float, min_rate_bps: float | None = None) -> tuple[float, float]:
    """(test seconds, seconds omitted at the start) for iperf3 TCP on a path with this added RTT and this
    slowest rate (None: not rate-limited).

    TCP needs about ten round trips of slow start before its rate means anything, and a long path needs a
    longer test for its sawtooth to average out: 10 s (2 s omitted) on short paths, 20 s from 200 ms up, 30 s
    on links below 500 kbit/s (as benchmarks/shaping_fidelity.py). The omitted start is twenty round trips
    (2 to 15 s): on a 600 ms path CUBIC's slow start overshoots and is repaired 6-8 s in, and with 7 s omitted
    the data released by that repair was counted in the window (iperf3 reported 101 % of the VSAT downlink in
    4 runs of 5). Values given in the plan win.
    """
    rtt_s = (added_rtt_ms + 1) / 1000.0
    omit = plan.iperf_omit_s if plan.iperf_omit_s is not None else float(min(15, max(2, math.ceil(20 * rtt_s))))
    default = 20.0 if rtt_s >= 0.2 else 10.0
    if min_rate_bps and min_rate_bps < SLOW_LINK_BPS:
        default = 30.0
    seconds = plan.iperf_seconds if plan.iperf_seconds is not None else default
    return seconds, omit


def parse_counts(text: str, flag: str = "--evse") -> list[int]:
    try:
        counts = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a comma-separated list of whole numbers such as 1,10,25,50") \
            from None
    if not counts or any(c < 1 for c in counts):
        raise ConfigError(f"{flag}: every count must be 1 or more (got {text!r})")
    if len(set(counts)) != len(counts):
        raise ConfigError(f"{flag}: {text!r} repeats a count")
    return counts


def validate(plan: Plan, *, lab_evse: int, known_profiles: list[str]) -> None:
    """Everything that can be checked before the lab is touched."""
    unknown = [p for p in plan.profiles if p not in known_profiles]
    if unknown:
        raise ConfigError(f"profile: unknown profile {unknown[0]!r} (known: {', '.join(known_profiles)}; "
                          f"see labkit profiles)")
    if not plan.profiles:
        raise ConfigError("profile: name at least one profile (e.g. labkit bench vsat), or --plan thesis")
    too_big = [n for n in plan.evse_counts if n > lab_evse]
    if too_big:
        raise ConfigError(f"--evse: {max(too_big)} EVSE hosts asked, the lab has {lab_evse} "
                          f"(labkit down; labkit up --evse {max(too_big)}, or use --stations-per-host)")
    checks = [
        (1 <= plan.stations_per_host <= 20000, "--stations-per-host", "1-20000", plan.stations_per_host),
        (1 <= plan.repeats <= 1000, "--repeat", "1-1000", plan.repeats),
        (plan.scenario in SCENARIOS, "--scenario", ", ".join(SCENARIOS), plan.scenario),
        (plan.ocpp in OCPP_VERSIONS, "--ocpp", ", ".join(OCPP_VERSIONS), plan.ocpp),
        (0 <= plan.ping_count <= 100000, "--ping-count", "0-100000", plan.ping_count),
        (0.002 <= plan.ping_interval_s <= 60, "--ping-interval", "0.002-60 s", plan.ping_interval_s),
        (plan.iperf_seconds is None or 0 <= plan.iperf_seconds <= 3600, "--iperf-seconds", "0-3600",
         plan.iperf_seconds),
        (0 <= plan.meter_values <= 1000000, "--meter-values", "0-1000000", plan.meter_values),
        (0 <= plan.meter_interval_s <= 3600, "--meter-interval", "0-3600 s", plan.meter_interval_s),
        (plan.baselines in ("first", "every", "none"), "--baselines", "first, every, none", plan.baselines),
        (plan.ws_ping_interval_s is None or 0 <= plan.ws_ping_interval_s <= 3600, "--ws-ping", "0-3600 s",
         plan.ws_ping_interval_s),
        (plan.iperf_omit_s is None or 0 <= plan.iperf_omit_s <= 600, "--iperf-omit", "0-600 s", plan.iperf_omit_s),
        (0 <= plan.udp_seconds <= 3600, "--udp-seconds", "0-3600 s (0: no UDP test)", plan.udp_seconds),
        (0 < plan.heartbeat_s <= 86400, "--heartbeat", "more than 0 and at most 86400 s", plan.heartbeat_s),
        (0 < plan.session_duration_s <= 7 * 86400, "--duration", "more than 0 and at most 604800 s (7 days)",
         plan.session_duration_s),
        (plan.scenario != "session" or plan.meter_interval_s > 0, "--meter-interval",
         "more than 0 s with the session scenario", plan.meter_interval_s),
        (plan.schedule is None or plan.outage is None, "--schedule", "used without --outage (a schedule has outage "
         "phases of its own, e.g. 'outage 20 s')", f"--outage {plan.outage.duration_s:g}s@{plan.outage.at_s:g}s"
         if plan.outage else None),
        (plan.schedule is None or plan.ocpp_phase, "--schedule", "used with the OCPP phase (not with --no-ocpp)",
         plan.schedule),
        (plan.schedule is None or plan.name != "thesis", "--schedule", "used without --plan thesis (name the "
         "profiles whose baselines to take, e.g. labkit bench 4g --schedule handover)", plan.schedule),
        (plan.schedule_cycles is None or (plan.schedule is not None and plan.schedule_cycles >= 1), "--cycles",
         "1 or more, with --schedule", plan.schedule_cycles),
        (plan.think_time_s is None or 0 <= plan.think_time_s <= 86400, "--think-time", "0-86400 s",
         plan.think_time_s),
        (plan.outage is None or 0 <= plan.outage.at_s <= 7 * 86400, "--outage", "AT 0-604800 s",
         plan.outage.at_s if plan.outage else None),
        (plan.outage is None or 0 < plan.outage.duration_s <= 86400, "--outage", "DURATION more than 0 and at most "
         "86400 s", plan.outage.duration_s if plan.outage else None),
    ]
    checks += [(sp in SECURITY_PROFILES, "--security-profile", "0, 1, 2 or 3", sp) for sp in plan.security_profiles]
    checks += [(v in TLS_VERSIONS, "--tls-version", ", ".join(TLS_VERSIONS), v) for v in plan.tls_versions]
    checks += [
        (len(set(plan.security_profiles)) == len(plan.security_profiles), "--security-profile", "each profile once",
         plan.security_profiles),
        (bool(plan.tls_versions) and len(set(plan.tls_versions)) == len(plan.tls_versions), "--tls-version",
         "1.2 and/or 1.3, each once", plan.tls_versions),
        (bool(plan.tls_resumption) and len(set(plan.tls_resumption)) == len(plan.tls_resumption), "--tls-resumption",
         "on, off or both", plan.tls_resumption),
        (not plan.security_profiles or plan.ocpp_phase, "--security-profile", "used with the OCPP phase (not with "
         "--no-ocpp)", plan.security_profiles),
    ]
    for ok, flag, allowed, got in checks:
        if not ok:
            raise ConfigError(f"{flag}: must be {allowed} (got {got!r})")


def thesis_plan(family: str = "both") -> list[str]:
    if family == "slow":
        return list(THESIS_SLOW)
    if family == "realistic":
        return ["none"] + THESIS_REALISTIC
    if family == "both":
        return THESIS_SLOW + THESIS_REALISTIC
    raise ConfigError(f"--family: must be slow, realistic or both (got {family!r})")


def parse_security_profiles(text: str) -> list[int]:
    """``--security-profile 1,2,3`` -> [1, 2, 3] (each 0-3, once)."""
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--security-profile: {text!r} is not a comma-separated list of 0, 1, 2, 3 "
                          "(e.g. 1,2,3)") from None
    if not out or any(sp not in SECURITY_PROFILES for sp in out) or len(set(out)) != len(out):
        raise ConfigError(f"--security-profile: {text!r}: each of 0, 1, 2, 3 at most once (e.g. 1,2,3)")
    return out


def parse_tls_versions(text: str) -> list[str]:
    """``--tls-version 1.2,1.3`` -> ["1.2", "1.3"]."""
    out = [x.strip() for x in str(text).split(",") if x.strip()]
    if not out or any(v not in TLS_VERSIONS for v in out) or len(set(out)) != len(out):
        raise ConfigError(f"--tls-version: {text!r}: 1.2, 1.3 or 1.2,1.3")
    return out


def parse_resumption(text: str) -> list[bool]:
    """``--tls-resumption on|off|both`` -> [True] | [False] | [True, False]."""
    choices = {"on": [True], "off": [False], "both": [True, False]}
    if text not in choices:
        raise ConfigError(f"--tls-resumption: {text!r}: on, off or both")
    return choices[text]
