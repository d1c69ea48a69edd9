"""Network profiles and schedules: the model, the ``profiles.yaml`` loader and the figures a profile promises.

A profile gives each direction its own parameters: *uplink* is EVSE -> CPO, *downlink* CPO -> EVSE. A
direction has a rate (bit/s, none = unlimited), a delay and jitter (ms, with a distribution), loss (percent,
random or in bursts: the Gilbert-Elliott model of ``labkit.lossmodel``), corruption and duplication (percent) and
a bottleneck queue (packets). ``both:`` is a shorthand that
expands to the same parameters in both directions; an unshaped direction is written ``{}`` or ``none``.
A *schedule* (section ``schedules:``) is a named timeline of phases, each a profile (or ``outage``, the link
cut) and a duration, e.g. ``4g 120 s -> gprs 60 s -> outage 20 s -> 4g``, run once or repeated
(``labkit.schedules`` applies it). Every mistake is reported as ``file:line: field: problem`` (exit status 2)
before anything is applied.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from labkit.errors import ConfigError
from labkit.linkbounds import DELAY_MAX_MS, FRAME_BYTES, RATE_MAX_BPS, RATE_MIN_BPS
from labkit.lossmodel import GEParams
from labkit.units import UnitError, format_ms, format_rate, parse_duration_ms, parse_percent, parse_rate
from labkit.yamlfile import FieldError, line_of, load_yaml, parse_yaml, validate

if TYPE_CHECKING:
    from labkit.traces import TraceRef

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,31}$")
NAME_RULE = "lowercase letters, digits, '.', '+' and '-', at most 32 characters"
DISTRIBUTIONS = ("uniform", "normal")
FAMILIES = ("realistic", "slow", "custom")

#: The smallest bottleneck queue labkit sizes by default (packets): TCP needs room for a few windows.
MIN_QUEUE = 32
#: ... except on slow links, where 32 full-size frames are many seconds of queue (14 s at GPRS's 26.8 kbit/s):
#: there the floor is this many seconds of frames, and never below MIN_QUEUE_SLOW packets.
MIN_QUEUE_S = 2.0
MIN_QUEUE_SLOW = 8
#: netem's normal table spans +-4 standard deviations (values are int16 / NETEM_DIST_SCALE 8192).
NORMAL_SPAN = 4.0

#: the smallest non-zero probability (percent): netem holds probabilities in steps of 1 / (2^32 - 1)
#: (2.3e-8 %), so a smaller one would be applied as 0 by netem and as itself by the userspace engine
PERCENT_MIN = 1e-6
#: the longest mean loss burst a profile may ask for (packets); netem's r = 1 / burst stays far above its step
BURST_MAX = 1_000_000
BURST_FORM = 'write bursty loss as {mean: "1 %", burst: "5 packets"}'
TRACE_FORM = "write a trace as trace: NAME (shipped with labkit) or trace: {file: PATH[, format: mahimahi|csv]}"


def _parsed(parse: Any, v: Any) -> Any:
    """``parse(v)``, with a unit error turned into the ValueError pydantic reports against the field."""
    try:
        return parse(v)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


def _burst_packets(v: Any) -> float:
    given = v
    if isinstance(v, str):
        m = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*packets?\s*$", v)
        if not m:
            raise ValueError(f"{v!r} is not a burst length such as \"5 packets\" (allowed: 1 to {BURST_MAX} packets)")
        v = float(m.group(1))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= BURST_MAX:
        raise ValueError(f"burst {given!r} (allowed: 1 to {BURST_MAX} packets, e.g. \"5 packets\")")
    return float(v)


def _probability_pct(v: Any) -> float:
    pct = _parsed(parse_percent, v)
    if 0 < pct < PERCENT_MIN:
        raise ValueError(f"{v!r} is below netem's resolution (allowed: 0, or {PERCENT_MIN:g} to 100 %)")
    return pct


@dataclass(frozen=True)
class BurstLoss:
    """Loss in bursts as a profile writes it: ``mean`` percent of packets, in runs of ``burst`` packets on
    average (the simple Gilbert model, ``labkit.lossmodel.GEParams.from_mean_burst``)."""

    mean_pct: float
    burst_pkts: float

    @property
    def gemodel(self) -> GEParams:
        return GEParams.from_mean_burst(self.mean_pct / 100.0, self.burst_pkts)


def _burst_loss(v: dict) -> BurstLoss:
    """``{mean: "1 %", burst: "5 packets"}`` -> BurstLoss; a mistake names the key it is about (FieldError)."""
    for key in v:
        if key not in ("mean", "burst"):
            raise FieldError(f"unknown field {key!r} (allowed: mean, burst; {BURST_FORM})", key)
    for key in ("mean", "burst"):
        if key not in v:
            raise FieldError(f"'{key}' is missing ({BURST_FORM})", key)
    try:
        mean = parse_percent(v["mean"])
    except UnitError as exc:
        raise FieldError(str(exc), "mean") from None
    if not 0 < mean < 100:
        raise FieldError(f"mean loss {v['mean']!r} (allowed: above 0 and below 100 %; random loss of 0 or 100 % "
                         f"is written loss: \"0 %\" / \"100 %\")", "mean")
    try:
        burst = _burst_packets(v["burst"])
    except ValueError as exc:
        raise FieldError(str(exc), "burst") from None
    try:
        ge = GEParams.from_mean_burst(mean / 100.0, burst)
    except ValueError as exc:
        raise FieldError(str(exc), "mean") from None
    if ge.p * 100.0 < PERCENT_MIN:
        raise FieldError(f"a mean loss of {mean:g} % in bursts of {burst:g} packets enters a burst with probability "
                         f"{ge.p * 100:.3g} %, below netem's resolution (allowed: p of at least {PERCENT_MIN:g} %: "
                         f"a higher mean or shorter bursts)", "mean")
    return BurstLoss(mean_pct=mean, burst_pkts=burst)


class DirectionSpec(BaseModel):
    """One direction as written in profiles.yaml."""

    model_config = ConfigDict(extra="forbid")

    rate: int | None = Field(default=None, description="bottleneck rate, e.g. \"112 kbit/s\" (none: unlimited)")
    delay: float = Field(default=0.0, description="one-way delay added, e.g. \"250 ms\"")
    distribution: Literal["uniform", "normal"] = "uniform"
    jitter: float = Field(default=0.0, description="delay variation, e.g. \"20 ms\" (uniform: +-jitter; "
                                                   "normal: standard deviation, cut at 4)")
    reorder: bool = Field(default=False, description="let jitter reorder packets (netem's habit); default: keep order")
    loss: float | BurstLoss = Field(default=0.0, description="loss in percent: random, e.g. \"0.5 %\", or in bursts, "
                                                             "e.g. {mean: \"1 %\", burst: \"5 packets\"}")
    corrupt: float = Field(default=0.0, description="percent of packets with one bit flipped")
    duplicate: float = Field(default=0.0, description="percent of packets sent twice")
    queue: int | None = Field(default=None, description="bottleneck queue in packets (default: from the BDP)")
    trace: dict[str, str] | None = Field(default=None, description="the rate (and with a CSV trace the delay and "
                                                                   "loss) follows a recorded trace: a shipped "
                                                                   "name, or {file: PATH}")

    @field_validator("trace", mode="before")
    @classmethod
    def _trace(cls, v: Any) -> Any:
        from labkit import traces

        if v is None:
            return None
        if isinstance(v, str):
            try:
                traces.shipped_path(v)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
            return {"name": v}
        if not isinstance(v, dict):
            raise ValueError(f"{v!r} is not a trace ({TRACE_FORM})")
        unknown = sorted(set(v) - {"file", "format"})
        if unknown:
            raise FieldError(f"unknown field {unknown[0]!r} (allowed: file, format; {TRACE_FORM})", unknown[0])
        f = v.get("file")
        if not isinstance(f, str) or not f.strip():
            raise FieldError(f"'file' is missing or empty ({TRACE_FORM})", "file")
        fmt = v.get("format")
        if fmt is not None and fmt not in traces.FORMATS:
            raise FieldError(f"unknown format {fmt!r} (allowed: {', '.join(traces.FORMATS)})", "format")
        return {"file": f} | ({"format": fmt} if fmt else {})

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        if v is None:
            return None
        bps = _parsed(parse_rate, v)
        if not RATE_MIN_BPS <= bps <= RATE_MAX_BPS:
            raise ValueError(f"{v!r} is {bps:.6g} bit/s (allowed: {format_rate(RATE_MIN_BPS)} to "
                             f"{format_rate(RATE_MAX_BPS)})")
        return bps

    @field_validator("delay", "jitter", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        ms = _parsed(parse_duration_ms, v)
        if ms > DELAY_MAX_MS:
            raise ValueError(f"{v!r} is {ms:.10g} ms (allowed: 0 to {DELAY_MAX_MS / 1000:g} s, in whole "
                             f"microseconds)")
        us = ms * 1000.0
        if abs(us - round(us)) > 1e-6 * max(1.0, us):
            raise ValueError(f"{v!r} is not a whole number of microseconds, the unit tc takes (allowed: 0 to "
                             f"{DELAY_MAX_MS / 1000:g} s, in whole microseconds)")
        return ms

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return _burst_loss(v)
        return _probability_pct(v)

    @field_validator("corrupt", "duplicate", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> Any:
        return _probability_pct(v)

    @field_validator("distribution", mode="before")
    @classmethod
    def _dist(cls, v: Any) -> Any:
        if v not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {v!r} (allowed: {', '.join(DISTRIBUTIONS)})")
        return v

    @field_validator("jitter")
    @classmethod
    def _jitter_fits_delay(cls, v: float, info: ValidationInfo) -> float:
        # checked on the jitter field (so the error points at its line) against delay and distribution,
        # which pydantic validated before it; skipped when one of them is wrong (that error comes first)
        if not v or "delay" not in info.data or "distribution" not in info.data:
            return v
        delay, dist = info.data["delay"], info.data["distribution"]
        if dist == "uniform" and v > delay:
            raise ValueError(f"jitter {v:g} ms exceeds delay {delay:g} ms: uniform jitter would need negative "
                             f"delays (allowed: 0 to the delay)")
        if dist == "normal" and NORMAL_SPAN * v > delay:
            raise ValueError(f"normal jitter {v:g} ms (cut at {NORMAL_SPAN:g} sigma) exceeds delay {delay:g} ms: "
                             f"keep jitter <= delay/{NORMAL_SPAN:g} (allowed: 0 to {delay / NORMAL_SPAN:g} ms)")
        span = v * (NORMAL_SPAN if dist == "normal" else 1.0)
        if delay + span > DELAY_MAX_MS:
            raise ValueError(f"delay {delay:g} ms + jitter span {span:g} ms exceeds {DELAY_MAX_MS / 1000:g} s, the "
                             f"longest delay a packet may get (allowed: 0 to {DELAY_MAX_MS - delay:g} ms of span)")
        return v

    @field_validator("reorder")
    @classmethod
    def _reorder_needs_jitter(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("jitter") == 0:
            raise ValueError("reorder needs jitter (without jitter packets keep their order)")
        return v

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, str):
            m = re.match(r"^\s*([0-9]+)\s*packets?\s*$", v)
            if not m:
                raise ValueError(f"{v!r} is not a queue length such as \"100 packets\"")
            v = int(m.group(1))
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{v!r} is not a queue length such as \"100 packets\"")
        if not 1 <= v <= 1_000_000:
            raise ValueError(f"queue must be from 1 to 1000000 packets (got {v})")
        return v


class ProfileSpec(BaseModel):
    """One profile as written in profiles.yaml."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    family: Literal["realistic", "slow", "custom"] = "custom"
    source: list[str] = Field(default_factory=list, description="where the values come from")
    aliases: list[str] = Field(default_factory=list)
    notes: str = ""
    both: DirectionSpec | None = None
    uplink: DirectionSpec | None = None
    downlink: DirectionSpec | None = None

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("both", "uplink", "downlink", mode="before")
    @classmethod
    def _unshaped(cls, v: Any) -> Any:
        if v is None or v == "none":
            return {}
        return v

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for a in v:
            if not NAME_RE.match(a):
                raise ValueError(f"invalid alias {a!r}: {NAME_RULE}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _directions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            has_both = "both" in data
            has_dirs = "uplink" in data or "downlink" in data
            if has_both and has_dirs:
                raise ValueError("use either 'both' or 'uplink' and 'downlink', not both forms")
            if not has_both and not ("uplink" in data and "downlink" in data):
                missing = "downlink" if "uplink" in data else "uplink"
                raise ValueError(f"'{missing}' is missing: write every direction explicitly ('{missing}: none' "
                                 f"for an unshaped one) or use 'both'")
        return data


#: the phase of a schedule that cuts the link (not a profile name: profiles may not be called so)
OUTAGE = "outage"
#: a phase lasts at least this long (a switch takes milliseconds: benchmarks/schedule_switch.py) and at most a week
PHASE_MIN_S = 0.1
PHASE_MAX_S = 7 * 24 * 3600.0
_PHASE_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
_PHASE_RE = re.compile(r"^\s*(\S+)(?:\s+(.*?))?\s*$")
_PHASE_DURATION_RE = re.compile(r"^([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*([a-z]+)$")
PHASE_FORM = 'a phase is "PROFILE DURATION" or "outage DURATION", e.g. "gprs 60 s"'


@dataclass(frozen=True)
class Phase:
    """One phase of a schedule: a profile (name or alias as written) or the outage, for ``duration_s``
    (None: until stopped; only the last phase of a schedule that does not repeat)."""

    profile: str | None  # None: the outage
    duration_s: float | None
    text: str = ""

    @property
    def outage(self) -> bool:
        return self.profile is None

    @property
    def label(self) -> str:
        return OUTAGE if self.profile is None else self.profile

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "outage": self.outage, "duration_s": self.duration_s, "text": self.text}


def _phase_duration(text: str) -> float:
    m = _PHASE_DURATION_RE.match(text.strip())
    if not m or m.group(2) not in _PHASE_UNITS:
        raise ValueError(f"{text!r} is not a duration such as \"60 s\" (units: {', '.join(_PHASE_UNITS)})")
    seconds = float(m.group(1)) * _PHASE_UNITS[m.group(2)]
    if not math.isfinite(seconds) or not PHASE_MIN_S <= seconds <= PHASE_MAX_S:
        raise ValueError(f"duration {text!r} (allowed: {PHASE_MIN_S * 1000:g} ms to {PHASE_MAX_S / 86400:g} days)")
    return seconds


def parse_phase(text: Any) -> Phase:
    """``"gprs 60 s"`` / ``"outage 20s"`` / ``"4g"`` -> Phase (names checked against the name rule only)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a phase ({PHASE_FORM})")
    m = _PHASE_RE.match(text)
    if not m:
        raise ValueError(f"empty phase ({PHASE_FORM})")
    name, rest = m.group(1), m.group(2)
    if name != OUTAGE and not NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a profile name ({NAME_RULE}; {PHASE_FORM})")
    duration = _phase_duration(rest) if rest else None
    return Phase(profile=None if name == OUTAGE else name, duration_s=duration, text=" ".join(text.split()))


class ScheduleSpec(BaseModel):
    """One schedule as written in profiles.yaml."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    phases: list[Phase] = Field(description='"4g 120 s -> gprs 60 s -> outage 20 s -> 4g", or a list of phases')
    repeat: bool = Field(default=False, description="start again after the last phase, until stopped")

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, v: Any) -> Any:
        if isinstance(v, str):
            items = v.split("->")
        elif isinstance(v, list):
            items = v
        else:
            raise ValueError(f"{v!r} is not a list of phases ({PHASE_FORM}; joined with '->' or one per line)")
        if not items or (len(items) == 1 and not str(items[0]).strip()):
            raise ValueError("a schedule needs at least one phase")
        out = []
        for i, item in enumerate(items):
            try:
                out.append(parse_phase(item))
            except ValueError as exc:
                raise FieldError(f"phase {i + 1} {str(item).strip()!r}: {exc}", i) from None
        return out

    @model_validator(mode="after")
    def _timeline(self) -> ScheduleSpec:
        phases = self.phases
        if all(p.outage for p in phases):
            raise FieldError("a schedule needs at least one profile phase (every phase is an outage)", "phases")
        for i, p in enumerate(phases):
            last = i == len(phases) - 1
            if p.duration_s is None and self.repeat:
                raise FieldError(f"phase {i + 1} {p.text!r} has no duration: every phase of a repeating schedule "
                                 f"needs one ({PHASE_FORM})", "phases", i)
            if p.duration_s is None and not last:
                raise FieldError(f"phase {i + 1} {p.text!r} has no duration: only the last phase may go without "
                                 f"one (it then lasts until stopped)", "phases", i)
            if p.duration_s is None and p.outage:
                raise FieldError(f"phase {i + 1} {p.text!r}: an outage needs a duration", "phases", i)
        return self


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: its phases name profiles of the ProfileSet it was read into."""

    name: str
    description: str
    phases: tuple[Phase, ...]
    repeat: bool = False
    origin: str = ""  # file:line it was read from
    phase_lines: tuple[int | None, ...] = ()

    @property
    def text(self) -> str:
        def one(p: Phase) -> str:
            return p.label + (f" {p.duration_s:g}s" if p.duration_s is not None else "")

        return " -> ".join(one(p) for p in self.phases) + (" (repeat)" if self.repeat else "")

    @property
    def cycle_s(self) -> float | None:
        """The length of one pass (None when the last phase lasts until stopped)."""
        if any(p.duration_s is None for p in self.phases):
            return None
        return sum(p.duration_s for p in self.phases if p.duration_s is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "repeat": self.repeat, "origin": self.origin,
                "text": self.text, "phases": [p.to_dict() for p in self.phases]}


class ProfilesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["labkit-profiles/1"] = "labkit-profiles/1"
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)

    @field_validator("profiles")
    @classmethod
    def _names(cls, v: dict[str, ProfileSpec]) -> dict[str, ProfileSpec]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"invalid profile name {name!r}: {NAME_RULE}")
            if name == OUTAGE or OUTAGE in v[name].aliases:
                raise ValueError(f"{OUTAGE!r} is not a profile name: schedules use it for a cut link")
        return v

    @field_validator("schedules")
    @classmethod
    def _schedule_names(cls, v: dict[str, ScheduleSpec]) -> dict[str, ScheduleSpec]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"invalid schedule name {name!r}: {NAME_RULE}")
        return v


@dataclass(frozen=True)
class Direction:
    """One resolved direction: every value explicit, in bit/s, ms, percent and packets."""

    rate_bps: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: str = "uniform"
    reorder: bool = False
    loss_pct: float = 0.0  # the mean, random or in bursts
    corrupt_pct: float = 0.0
    duplicate_pct: float = 0.0
    queue_pkts: int | None = None  # bottleneck queue; None when there is no rate limit
    loss_burst_pkts: float | None = None  # mean loss burst (Gilbert-Elliott); None: random loss
    trace: TraceRef | None = None  # the rate (CSV: and delay and loss) follows this trace (rate_bps is None)

    @property
    def gemodel(self) -> GEParams | None:
        """netem's ``loss gemodel`` parameters of bursty loss (None for random loss)."""
        if self.loss_burst_pkts is None or not self.loss_pct:
            return None
        return GEParams.from_mean_burst(self.loss_pct / 100.0, self.loss_burst_pkts)

    @property
    def loss_text(self) -> str:
        """``1 %`` or ``1 % in bursts of 5 packets``."""
        if self.loss_burst_pkts is None:
            return f"{self.loss_pct:g} %"
        return f"{self.loss_pct:g} % in bursts of {self.loss_burst_pkts:g} packets"

    @property
    def shaped(self) -> bool:
        return self.rate_bps is not None or self.needs_delay_line or self.trace is not None

    @property
    def sizing_rate_bps(self) -> int | None:
        """The rate that sizes queues and delay lines: the rate, or a trace's fastest second or step."""
        if self.trace is not None:
            return int(math.ceil(self.trace.max_rate_bps))
        return self.rate_bps

    @property
    def needs_delay_line(self) -> bool:
        """Whether this direction needs netem (or the userspace engine), not only a rate limit."""
        return any((self.delay_ms, self.jitter_ms, self.loss_pct, self.corrupt_pct, self.duplicate_pct))

    @property
    def jitter_span_ms(self) -> float:
        """How far a packet's delay can stray from ``delay_ms`` (uniform: jitter; normal: 4 sigma)."""
        return self.jitter_ms * (NORMAL_SPAN if self.distribution == "normal" else 1.0)

    @property
    def min_delay_ms(self) -> float:
        return max(0.0, self.delay_ms - self.jitter_span_ms)

    @property
    def max_delay_ms(self) -> float:
        return self.delay_ms + self.jitter_span_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Direction:
        if d.get("trace") is not None:
            from labkit.traces import TraceRef

            d = {**d, "trace": TraceRef.from_dict(d["trace"])}
        return cls(**d)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    family: str
    sources: tuple[str, ...]
    uplink: Direction
    downlink: Direction
    aliases: tuple[str, ...] = ()
    notes: str = ""
    symmetric: bool = False  # written with the 'both' shorthand
    origin: str = ""  # file:line it was read from

    @property
    def added_rtt_ms(self) -> float:
        """The round-trip time the profile adds on average: uplink delay + downlink delay."""
        return self.uplink.delay_ms + self.downlink.delay_ms

    @property
    def min_added_rtt_ms(self) -> float:
        return self.uplink.min_delay_ms + self.downlink.min_delay_ms

    @property
    def bottleneck_bps(self) -> int | None:
        rates = [r for r in (self.uplink.rate_bps, self.downlink.rate_bps) if r is not None]
        return min(rates) if rates else None

    @property
    def shaped(self) -> bool:
        return self.uplink.shaped or self.downlink.shaped

    def direction(self, name: str) -> Direction:
        if name in ("uplink", "up"):
            return self.uplink
        if name in ("downlink", "down"):
            return self.downlink
        raise ValueError(f"unknown direction {name!r}")

    def expected(self) -> dict[str, Any]:
        """What the profile promises, as recorded in cell.json ``expected``."""
        return {"added_rtt_ms": self.added_rtt_ms, "min_added_rtt_ms": self.min_added_rtt_ms,
                "uplink_rate_bps": self.uplink.rate_bps, "downlink_rate_bps": self.downlink.rate_bps,
                "uplink_loss_pct": self.uplink.loss_pct, "downlink_loss_pct": self.downlink.loss_pct}

    def as_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "family": self.family,
                "sources": list(self.sources), "aliases": list(self.aliases), "notes": self.notes,
                "symmetric": self.symmetric, "origin": self.origin,
                "uplink": self.uplink.to_dict(), "downlink": self.downlink.to_dict(),
                "added_rtt_ms": self.added_rtt_ms, "bottleneck_bps": self.bottleneck_bps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(name=d["name"], description=d["description"], family=d["family"],
                   sources=tuple(d.get("sources", ())), aliases=tuple(d.get("aliases", ())),
                   notes=d.get("notes", ""), symmetric=d.get("symmetric", False), origin=d.get("origin", ""),
                   uplink=Direction.from_dict(d["uplink"]), downlink=Direction.from_dict(d["downlink"]))

    def summary(self) -> str:
        def one(d: Direction) -> str:
            if not d.shaped:
                return "unshaped"
            parts = [f"trace {d.trace.name} ({d.trace.fmt})" if d.trace else format_rate(d.rate_bps)]
            if d.delay_ms or d.jitter_ms:
                j = ((f" +-{d.jitter_ms:g} ms uniform" if d.distribution == "uniform" else
                      f" jitter sd {d.jitter_ms:g} ms normal") if d.jitter_ms else "")
                parts.append(format_ms(d.delay_ms) + j)
            if d.loss_pct:
                parts.append(f"loss {d.loss_text}")
            return ", ".join(parts)
        return f"up: {one(self.uplink)}; down: {one(self.downlink)}"


def default_queue(rate_bps: int, rtt_ms: float) -> int:
    """A bottleneck queue of one bandwidth-delay product (full-size frames), at least MIN_QUEUE packets, or
    on slow links at least MIN_QUEUE_S seconds of frames (never below MIN_QUEUE_SLOW).

    One BDP of buffer lets a single TCP flow keep the link busy through its window reductions. A floor in
    packets alone turns a slow link into a standing queue of many seconds: a loss is then noticed that
    late, and a loss-based TCP (CUBIC) stalled for a retransmission timeout inside a 30 s test (measured on
    gprs: 74 % / 63 % of the rate with 32 packets, 100 % / 99 % with 8 / 9)."""
    bdp_pkts = math.ceil(rate_bps * max(rtt_ms, 1.0) / 1000.0 / 8.0 / FRAME_BYTES)
    seconds_pkts = math.ceil(rate_bps * MIN_QUEUE_S / 8.0 / FRAME_BYTES)
    return max(min(MIN_QUEUE, max(MIN_QUEUE_SLOW, seconds_pkts)), bdp_pkts)


def _resolve_direction(spec: DirectionSpec, rtt_ms: float, trace: TraceRef | None = None) -> Direction:
    queue = spec.queue
    rate = spec.rate if trace is None else int(math.ceil(trace.max_rate_bps))
    if rate is None:
        queue = None
    elif queue is None:
        queue = default_queue(rate, rtt_ms)
    loss, burst = (spec.loss.mean_pct, spec.loss.burst_pkts) if isinstance(spec.loss, BurstLoss) else (spec.loss, None)
    return Direction(rate_bps=spec.rate, delay_ms=spec.delay, jitter_ms=spec.jitter,
                     distribution=spec.distribution, reorder=spec.reorder, loss_pct=loss,
                     corrupt_pct=spec.corrupt, duplicate_pct=spec.duplicate, queue_pkts=queue,
                     loss_burst_pkts=burst, trace=trace)


def resolve(name: str, spec: ProfileSpec, origin: str = "",
            trace_refs: dict[str, TraceRef] | None = None) -> Profile:
    """A profile as written -> a Profile; ``trace_refs`` holds the loaded trace of each direction that names one
    (``ProfileSet`` loads them, relative to the profile file's directory)."""
    refs = trace_refs or {}
    up_spec = spec.both if spec.both is not None else spec.uplink
    down_spec = spec.both if spec.both is not None else spec.downlink
    assert up_spec is not None and down_spec is not None
    # the round trip a full-size packet sees: both one-way delays at their largest (a CSV trace's longest)
    up_delay = max(up_spec.delay, refs["uplink"].max_delay_ms if "uplink" in refs else 0.0)
    down_delay = max(down_spec.delay, refs["downlink"].max_delay_ms if "downlink" in refs else 0.0)
    rtt = up_delay + down_delay + 2 * max(up_spec.jitter, down_spec.jitter)
    return Profile(name=name, description=spec.description.strip(), family=spec.family,
                   sources=tuple(spec.source), aliases=tuple(spec.aliases), notes=spec.notes.strip(),
                   uplink=_resolve_direction(up_spec, rtt, refs.get("uplink")),
                   downlink=_resolve_direction(down_spec, rtt, refs.get("downlink")),
                   symmetric=spec.both is not None, origin=origin)


def _trace_refs(name: str, spec: ProfileSpec, root: Any, filename: str) -> dict[str, TraceRef]:
    """Load the trace each direction of profile ``name`` names (a relative file against the profile file's
    directory) and check it goes with the rest of the direction; a ConfigError names the profile file's line
    (a missing or unreadable file, a conflict) or the trace file's (a mistake inside it)."""
    from labkit import traces

    out: dict[str, TraceRef] = {}
    written = ("both",) if spec.both is not None else ("uplink", "downlink")
    for key in written:
        d: DirectionSpec | None = getattr(spec, key)
        if d is None or d.trace is None:
            continue
        loc = ("profiles", name, key, "trace")
        field = ".".join(loc)
        line = line_of(root, loc)

        def fail(problem: str, sub: str = "", _field: str = field, _line: int | None = line) -> ConfigError:
            return ConfigError.at(_field + sub, problem, file=filename, line=_line)

        t = d.trace
        if "name" in t:
            path, shipped, written_as, fmt = traces.shipped_path(t["name"]), True, t["name"], None
            shown = t["name"]
        else:
            raw = Path(os.path.expanduser(t["file"]))
            base = Path(filename).resolve().parent if Path(filename).exists() else Path.cwd()
            path = raw if raw.is_absolute() else base / raw
            shipped, written_as, fmt, shown = False, t["file"], t.get("format"), path.name
            if not path.exists():
                raise fail(f"no such file {t['file']!r} (looked for {path}; a relative file is read from the "
                           f"profile file's directory)", ".file")
            if not path.is_file():
                raise fail(f"{t['file']!r} is not a file ({path})", ".file")
        trace = traces.load_cached(path, fmt)
        ref = traces.ref_for(trace, written=written_as, name=shown, path=path.resolve(), shipped=shipped)
        dl = ("profiles", name, key)
        if d.rate is not None:
            raise ConfigError.at(".".join(dl) + ".rate", f"a rate and a trace together: the trace {shown!r} gives "
                                 f"the rate (allowed: one of them)", file=filename, line=line_of(root, dl + ("rate",)))
        if d.reorder:
            raise ConfigError.at(".".join(dl) + ".reorder", "reorder with a trace: a traced link delivers in order "
                                 "(allowed: false)", file=filename, line=line_of(root, dl + ("reorder",)))
        if ref.fmt == "csv":
            for k, v in (("delay", d.delay), ("loss", d.loss), ("jitter", d.jitter)):
                if v:
                    raise ConfigError.at(".".join(dl) + f".{k}", f"{k} and a CSV trace together: the trace "
                                         f"{shown!r} gives the delay and loss of each step (allowed: one of them; "
                                         f"jitter needs a delay of its own)", file=filename,
                                         line=line_of(root, dl + (k,)))
        for direction in (("uplink", "downlink") if key == "both" else (key,)):
            out[direction] = ref
    return out


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class ProfileSet:
    profiles: dict[str, Profile] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    schedules: dict[str, Schedule] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.profiles)

    def known(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.profiles

    def get(self, name: str) -> Profile:
        key = self.aliases.get(name, name)
        if key in self.profiles:
            return self.profiles[key]
        hint = _did_you_mean(name, sorted(set(self.profiles) | set(self.aliases)))
        where = " + ".join(self.files) or "profiles"
        raise ConfigError(f"{where}: profile: unknown profile {name!r}{hint}; "
                          f"known: {', '.join(sorted(self.profiles))}")

    def schedule(self, name: str) -> Schedule:
        """A schedule by name, checked against the profiles as they are now (a later file may have replaced
        one): every phase's profile exists, and the phases can change into each other in place
        (``labkit.tc.frame_conflicts``). Any problem is a ConfigError naming the schedule's file and line."""
        from labkit import tc

        if name not in self.schedules:
            hint = _did_you_mean(name, sorted(self.schedules))
            where = " + ".join(self.files) or "profiles"
            raise ConfigError(f"{where}: schedule: unknown schedule {name!r}{hint}; "
                              f"known: {', '.join(sorted(self.schedules)) or 'none'}")
        sch = self.schedules[name]
        file, _, line = sch.origin.rpartition(":")
        for i, p in enumerate(sch.phases):
            if p.profile is not None and not self.known(p.profile):
                hint = _did_you_mean(p.profile, sorted(set(self.profiles) | set(self.aliases)))
                raise ConfigError.at(f"schedules.{name}.phases[{i}]", f"phase {i + 1} {p.text!r}: unknown profile "
                                     f"{p.profile!r}{hint}", file=file or sch.origin,
                                     line=sch.phase_lines[i] if i < len(sch.phase_lines) else None)
        conflicts = tc.frame_conflicts(self.schedule_profiles(sch))
        if conflicts:
            first = sch.phase_lines[0] if sch.phase_lines else (int(line) if line.isdigit() else None)
            raise ConfigError.at(f"schedules.{name}.phases", "; ".join(conflicts), file=file or sch.origin,
                                 line=first)
        return sch

    def schedule_profiles(self, sch: Schedule) -> list[Profile]:
        """The distinct profiles a schedule's phases name, in order of first use."""
        out: dict[str, Profile] = {}
        for p in sch.phases:
            if p.profile is not None:
                prof = self.get(p.profile)
                out.setdefault(prof.name, prof)
        return list(out.values())

    def merge_file(self, path: str | Path) -> None:
        path = Path(path)
        root = load_yaml(path)
        self._merge(root, str(path))

    def merge_text(self, text: str, filename: str) -> None:
        self._merge(parse_yaml(text, filename), filename)

    def _merge(self, root: Any, filename: str) -> None:
        if not isinstance(root, dict):
            raise ConfigError.at("(top level)", "a profiles file must be a mapping with a 'profiles' key",
                                 file=filename, line=1)
        parsed = validate(ProfilesFile, root, filename=filename, root=root)
        for name, spec in parsed.profiles.items():
            line = None
            try:
                line = root["profiles"].lc.key(name)[0] + 1
            except Exception:
                pass
            origin = f"{filename}:{line}" if line else filename
            profile = resolve(name, spec, origin, _trace_refs(name, spec, root, filename))
            for alias in spec.aliases:
                owner = self.aliases.get(alias)
                if (owner and owner != name) or (alias in self.profiles and alias != name):
                    raise ConfigError.at(f"profiles.{name}.aliases", f"alias {alias!r} is already taken by "
                                         f"{owner or alias!r}", file=filename, line=line)
            if name in self.aliases and self.aliases[name] != name:
                raise ConfigError.at(f"profiles.{name}", f"name {name!r} is already an alias of "
                                     f"{self.aliases[name]!r}", file=filename, line=line)
            self.profiles[name] = profile
            for alias in spec.aliases:
                self.aliases[alias] = name
        for name, sspec in parsed.schedules.items():
            line = line_of(root, ("schedules", name))
            phases_node = root["schedules"][name].get("phases") if isinstance(root["schedules"][name], dict) else None
            lines = tuple(line_of(root, ("schedules", name, "phases", i)) if isinstance(phases_node, list)
                          else line_of(root, ("schedules", name, "phases")) for i in range(len(sspec.phases)))
            for i, p in enumerate(sspec.phases):
                if p.profile is not None and not self.known(p.profile):
                    hint = _did_you_mean(p.profile, sorted(set(self.profiles) | set(self.aliases)))
                    raise ConfigError.at(f"schedules.{name}.phases[{i}]", f"phase {i + 1} {p.text!r}: unknown "
                                         f"profile {p.profile!r}{hint}", file=filename, line=lines[i])
            self.schedules[name] = Schedule(name=name, description=sspec.description.strip(),
                                            phases=tuple(sspec.phases), repeat=sspec.repeat,
                                            origin=f"{filename}:{line}" if line else filename, phase_lines=lines)
        self.files.append(filename)


def shipped_profiles_path() -> Path:
    from labkit.resources import resource

    return resource("profiles.yaml")


def load_profiles(extra: str | Path | list[str | Path] | None = None) -> ProfileSet:
    """The shipped profiles.yaml, then any extra files (later files override earlier ones by name)."""
    ps = ProfileSet()
    ps.merge_file(shipped_profiles_path())
    extras = extra if isinstance(extra, list) else ([extra] if extra else [])
    for path in extras:
        ps.merge_file(path)
    return ps


#: extra profiles files for every labkit command in this environment (os.pathsep-separated)
PROFILES_ENV = "LABKIT_PROFILES"
_default: ProfileSet | None = None
_default_key: str | None = None


def default_set() -> ProfileSet:
    """The shipped profiles plus the files named in $LABKIT_PROFILES (loaded once per value of it)."""
    global _default, _default_key
    key = os.environ.get(PROFILES_ENV, "")
    if _default is None or key != _default_key:
        extras = [p for p in key.split(os.pathsep) if p]
        _default, _default_key = load_profiles(extras), key
    return _default


def names() -> list[str]:
    """Every profile name (aliases not included)."""
    return default_set().names()


def get(name: str) -> Profile:
    """A profile by name or alias; an unknown name is a ConfigError (exit status 2)."""
    return default_set().get(name)


def get_schedule(name: str) -> Schedule:
    """A schedule by name (checked against the current profiles); unknown: ConfigError (exit status 2)."""
    return default_set().schedule(name)
