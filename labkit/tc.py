"""The pure command builder: profile + interface + direction -> the tc (and iptables) command lines.

No I/O here: every function returns strings, so tests pin the exact commands without root. Each direction is
shaped on one gateway egress interface (uplink on the CPO-facing one, downlink on the EVSE-facing one), so no
ifb is needed. A rate-limited direction gets an HTB root with one class (handle 1:, class 1:10) and a leaf:

- engine ``netem``: a netem leaf (delay, jitter, loss: ``loss random`` or, for bursty loss, ``loss gemodel p r
  1-h 1-k``, corruption, duplication, ``limit`` sized for the delay line plus the bottleneck queue); a
  direction with a delay but no rate gets netem as its root;
- engine ``userspace``: a FIFO leaf of ``queue`` packets; delay, jitter and loss are applied before it by
  ``labkit.nfq`` through one NFQUEUE rule per direction in the gateway's FORWARD chain (``iptables``, chain
  ``LABKIT-SHAPE``), without ``--queue-bypass``: with no engine attached, packets are dropped (fail-closed).

Units: rates go to tc as ``<n>bit`` (bits per second, never the ambiguous ``kbps``), times as ``<n>us``.
``layout`` says what each interface must hold (``HtbClass``, ``Netem``, ``Fifo``): the commands are rendered
from it, and ``labkit.shaping.verify`` checks the read-back against the same values.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from labkit.profiles import FRAME_BYTES, Direction, Profile
from labkit.units import tc_rate, tc_us

ENGINES = ("netem", "userspace")
DIRECTIONS = ("uplink", "downlink")
CHAIN = "LABKIT-SHAPE"
#: NFQUEUE numbers per direction (the gateway's namespace or VM holds only this lab's queues)
QUEUE_NUM = {"uplink": 0, "downlink": 1}
ROOT_HANDLE = "1:"
CLASS_ID = "1:10"
LEAF_HANDLE = "10:"
#: rate assumed when sizing a delay line for a direction with no rate of its own (the sender's line rate)
ASSUMED_LINE_BPS = 1_000_000_000
#: extra room in every delay line (packets), and its floor (netem's own default limit)
DELAY_LINE_SLACK = 256
DELAY_LINE_MIN = 1000
#: netem without a rate reorders jittered packets; a rate this high keeps them in order at no cost (120 ns
#: per full-size packet), as netem then never releases a packet before the one queued ahead of it
NETEM_ORDER_RATE = "100gbit"


def _q(s: str) -> str:
    return shlex.quote(s)


def htb_burst_bytes(rate_bps: int, rtt_ms: float) -> int:
    """HTB burst: the bytes the class may send back to back.

    Large enough that the token bucket refills within one timer tick even at high rates (rate x 1 ms at
    least, and never below two full frames), small enough not to distort short exchanges on a long path
    (rate x RTT/10, at most rate x 10 ms): ``max(2 frames, rate x clamp(RTT/10, 1 ms, 10 ms))``."""
    t_ms = min(10.0, max(1.0, rtt_ms / 10.0))
    return max(2 * FRAME_BYTES, math.ceil(rate_bps * t_ms / 1000.0 / 8.0))


def delay_line_packets(d: Direction, other_rate_bps: int | None) -> int:
    """How many packets can be in flight inside the delay of direction ``d`` (0 when it has none).

    Data packets arrive in bursts of up to four times the direction's rate (slow start on a path whose
    sender is faster than the bottleneck), and acknowledgements of the other direction's data at up to one
    per full-size segment (quick-ack); all wait for the largest delay. Never below netem's default of 1000.
    Measured: a 100 Mbit/s, 20 +- 16 ms direction held up to 2.3 x rate x delay under TCP."""
    if not d.needs_delay_line:
        return 0
    this = d.rate_bps or ASSUMED_LINE_BPS
    other = other_rate_bps or ASSUMED_LINE_BPS
    per_s = (4 * this + other) / 8.0 / FRAME_BYTES
    return max(DELAY_LINE_MIN, math.ceil(per_s * max(d.max_delay_ms, 1.0) / 1000.0) + DELAY_LINE_SLACK)


def tc_percent(pct: float) -> str:
    """A percentage for tc with every digit the profile gave (``%g`` would keep only six: 33.3333%)."""
    return f"{pct:.12g}%"


def netem_args(d: Direction, limit: int) -> str:
    """The netem parameters for one direction (without ``tc qdisc ... netem``)."""
    return _netem_args(_netem(d, limit))


@dataclass(frozen=True)
class HtbClass:
    """HTB root ``1:`` (``default 10``) with class ``1:10``: the direction's rate."""

    rate_bps: int
    ceil_bps: int
    burst_bytes: int
    cburst_bytes: int
    quantum: int = FRAME_BYTES
    default_class: int = 0x10

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "htb", "rate_bps": self.rate_bps, "ceil_bps": self.ceil_bps, "burst_bytes": self.burst_bytes,
                "cburst_bytes": self.cburst_bytes, "quantum": self.quantum, "default_class": self.default_class}


@dataclass(frozen=True)
class Netem:
    """A netem qdisc (handle ``10:``): the delay line of the netem engine. Times in whole microseconds."""

    limit: int
    delay_us: int = 0
    jitter_us: int = 0
    distribution: str = "uniform"
    loss_pct: float = 0.0
    corrupt_pct: float = 0.0
    duplicate_pct: float = 0.0
    rate_bps: int | None = None  # only NETEM_ORDER_RATE, to keep jittered packets in order
    #: bursty loss: netem's ``loss gemodel p r 1-h 1-k``, in percent (then loss_pct is 0)
    gemodel: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "netem", **{k: getattr(self, k) for k in (
            "limit", "delay_us", "jitter_us", "distribution", "loss_pct", "corrupt_pct", "duplicate_pct", "rate_bps",
            "gemodel")}}


@dataclass(frozen=True)
class Fifo:
    """A pfifo leaf (handle ``10:``) of ``limit`` packets: the bottleneck queue under the userspace engine."""

    limit: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pfifo", "limit": self.limit}


@dataclass(frozen=True)
class Layout:
    """What one direction's egress interface holds: an HTB class (or nothing) and a leaf under it (or, without
    HTB, as the root qdisc). Both None: the interface keeps its default qdisc."""

    htb: HtbClass | None = None
    leaf: Netem | Fifo | None = None

    @property
    def empty(self) -> bool:
        return self.htb is None and self.leaf is None

    def to_dict(self) -> dict[str, Any]:
        return {"htb": self.htb.to_dict() if self.htb else None, "leaf": self.leaf.to_dict() if self.leaf else None}


#: bits per second in tc's ``rate 100gbit`` above
NETEM_ORDER_RATE_BPS = 100_000_000_000
#: netem's names of the Gilbert-Elliott parameters, in its order (``loss gemodel p r 1-h 1-k``)
GEMODEL_KEYS = ("p", "r", "1-h", "1-k")


def gemodel_pct(d: Direction) -> tuple[float, float, float, float] | None:
    """netem's ``loss gemodel p r 1-h 1-k`` of a direction with bursty loss, in percent (None: random loss)."""
    ge = d.gemodel
    if ge is None:
        return None
    pct = ge.as_percent()
    return (pct["p"], pct["r"], pct["1-h"], pct["1-k"])


def _netem(d: Direction, limit: int) -> Netem:
    ge = gemodel_pct(d)
    return Netem(limit=limit, delay_us=tc_us(d.delay_ms), jitter_us=tc_us(d.jitter_ms),
                 distribution=d.distribution if d.jitter_ms else "uniform", loss_pct=0.0 if ge else d.loss_pct,
                 corrupt_pct=d.corrupt_pct, duplicate_pct=d.duplicate_pct,
                 rate_bps=NETEM_ORDER_RATE_BPS if (d.jitter_ms and not d.reorder) else None, gemodel=ge)


def layout(profile: Profile, direction: str, engine: str = "netem") -> Layout:
    """What ``direction``'s interface must hold under ``engine``: the single source of the tc commands and of
    what the read-back is checked against."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (allowed: {', '.join(ENGINES)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r} (allowed: {', '.join(DIRECTIONS)})")
    d = profile.direction(direction)
    other = profile.direction("downlink" if direction == "uplink" else "uplink")
    if not d.shaped or (engine == "userspace" and d.rate_bps is None):
        # nothing for tc to do in this direction (the userspace engine holds any delay)
        return Layout()
    if d.rate_bps is None:  # netem engine, delay without a rate limit: netem is the root
        return Layout(leaf=_netem(d, delay_line_packets(d, other.rate_bps)))
    burst = htb_burst_bytes(d.rate_bps, profile.added_rtt_ms)
    htb = HtbClass(rate_bps=d.rate_bps, ceil_bps=d.rate_bps, burst_bytes=burst, cburst_bytes=burst)
    queue = d.queue_pkts or 1
    if engine == "netem" and d.needs_delay_line:
        return Layout(htb=htb, leaf=_netem(d, delay_line_packets(d, other.rate_bps) + queue))
    return Layout(htb=htb, leaf=Fifo(limit=queue))


def _netem_args(n: Netem) -> str:
    parts = [f"limit {n.limit}"]
    if n.delay_us or n.jitter_us:
        parts.append(f"delay {n.delay_us}us")
        if n.jitter_us:
            parts.append(f"{n.jitter_us}us")
            if n.distribution != "uniform":
                parts.append(f"distribution {n.distribution}")
    if n.gemodel is not None:
        parts.append("loss gemodel " + " ".join(tc_percent(x) for x in n.gemodel))
    elif n.loss_pct:
        parts.append(f"loss random {tc_percent(n.loss_pct)}")
    if n.corrupt_pct:
        parts.append(f"corrupt {tc_percent(n.corrupt_pct)}")
    if n.duplicate_pct:
        parts.append(f"duplicate {tc_percent(n.duplicate_pct)}")
    if n.rate_bps is not None:
        rate = NETEM_ORDER_RATE if n.rate_bps == NETEM_ORDER_RATE_BPS else tc_rate(n.rate_bps)
        parts.append(f"rate {rate}")
    return " ".join(parts)


def layout_commands(lay: Layout, iface: str) -> list[str]:
    """The tc commands that give a clean ``iface`` the layout ``lay``."""
    dev = _q(iface)
    if lay.empty:
        return []
    leaf = lay.leaf
    if lay.htb is None:
        assert isinstance(leaf, Netem)
        return [f"tc qdisc add dev {dev} root handle {LEAF_HANDLE} netem {_netem_args(leaf)}"]
    h = lay.htb
    cmds = [
        f"tc qdisc add dev {dev} root handle {ROOT_HANDLE} htb default {h.default_class:x}",
        f"tc class add dev {dev} parent {ROOT_HANDLE} classid {CLASS_ID} htb rate {tc_rate(h.rate_bps)} "
        f"ceil {tc_rate(h.ceil_bps)} burst {h.burst_bytes}b cburst {h.cburst_bytes}b quantum {h.quantum}",
    ]
    if isinstance(leaf, Netem):
        cmds.append(f"tc qdisc add dev {dev} parent {CLASS_ID} handle {LEAF_HANDLE} netem {_netem_args(leaf)}")
    elif isinstance(leaf, Fifo):
        cmds.append(f"tc qdisc add dev {dev} parent {CLASS_ID} handle {LEAF_HANDLE} pfifo limit {leaf.limit}")
    return cmds


def tc_commands(profile: Profile, iface: str, direction: str, engine: str = "netem") -> list[str]:
    """The tc commands that give a clean ``iface`` the ``direction`` half of ``profile``.

    They add to the interface's default qdisc (HTB cannot be changed in place): run ``clear_tc_commands``
    first, tolerantly. An unshaped direction needs no command (an empty list)."""
    return layout_commands(layout(profile, direction, engine), iface)


def clear_tc_commands(iface: str) -> list[str]:
    """Remove labkit's qdiscs from ``iface`` (the kernel's default qdisc comes back). Fails if none is there:
    run it tolerantly and read back."""
    return [f"tc qdisc del dev {_q(iface)} root"]


def nfqueue_rules(profile: Profile, uplink_iface: str, downlink_iface: str) -> list[str]:
    """iptables commands that send each direction needing a delay line to its NFQUEUE (userspace engine).

    uplink packets come in on the EVSE-facing interface and leave on the CPO-facing one."""
    up, down = _q(uplink_iface), _q(downlink_iface)
    rules = []
    if profile.uplink.needs_delay_line:
        rules.append(f"iptables -w -A {CHAIN} -i {down} -o {up} -j NFQUEUE --queue-num {QUEUE_NUM['uplink']}")
    if profile.downlink.needs_delay_line:
        rules.append(f"iptables -w -A {CHAIN} -i {up} -o {down} -j NFQUEUE --queue-num {QUEUE_NUM['downlink']}")
    if not rules:
        return []
    return [f"iptables -w -N {CHAIN}", *rules, f"iptables -w -I FORWARD 1 -j {CHAIN}"]


def clear_nfqueue_rules() -> list[str]:
    """Remove labkit's chain (each may fail when absent: run tolerantly)."""
    return [f"iptables -w -D FORWARD -j {CHAIN}", f"iptables -w -F {CHAIN}", f"iptables -w -X {CHAIN}"]


def engine_config(profile: Profile, *, seed: int, status_file: str) -> dict[str, Any]:
    """What ``labkit shaper run`` needs: per queue, the direction's delay line."""
    queues = {}
    for name in DIRECTIONS:
        d = profile.direction(name)
        if not d.needs_delay_line:
            continue
        other = profile.direction("downlink" if name == "uplink" else "uplink")
        ge = gemodel_pct(d)
        queues[str(QUEUE_NUM[name])] = {
            "direction": name, "delay_ms": d.delay_ms, "jitter_ms": d.jitter_ms,
            "distribution": d.distribution, "reorder": d.reorder, "loss_pct": 0.0 if ge else d.loss_pct,
            "corrupt_pct": d.corrupt_pct, "duplicate_pct": d.duplicate_pct,
            "maxlen": delay_line_packets(d, other.rate_bps),
        }
        if ge is not None:  # bursty loss: netem's four parameters, in percent
            queues[str(QUEUE_NUM[name])]["gemodel"] = dict(zip(GEMODEL_KEYS, ge, strict=True))
    return {"profile": profile.name, "seed": seed, "status_file": status_file, "queues": queues}


@dataclass
class Plan:
    """Everything that applying one profile on one gateway means, as data."""

    profile: str
    engine: str
    ifaces: dict[str, str]  # direction -> interface
    tc: dict[str, list[str]] = field(default_factory=dict)  # direction -> commands
    layouts: dict[str, Layout] = field(default_factory=dict)  # direction -> what its interface must hold
    rules: list[str] = field(default_factory=list)
    engine_config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "engine": self.engine, "ifaces": self.ifaces, "tc": self.tc,
                "layouts": {d: lay.to_dict() for d, lay in self.layouts.items()}, "rules": self.rules,
                "engine_config": self.engine_config}


def plan(profile: Profile, *, uplink_iface: str, downlink_iface: str, engine: str, seed: int = 1,
         status_file: str = "/tmp/labkit/shaper-status.json") -> Plan:
    """The full plan for a gateway: tc per direction, and for the userspace engine its rules and config."""
    p = Plan(profile=profile.name, engine=engine, ifaces={"uplink": uplink_iface, "downlink": downlink_iface})
    for d in DIRECTIONS:
        p.layouts[d] = layout(profile, d, engine)
        p.tc[d] = layout_commands(p.layouts[d], p.ifaces[d])
    if engine == "userspace":
        p.rules = nfqueue_rules(profile, uplink_iface, downlink_iface)
        if p.rules:
            p.engine_config = engine_config(profile, seed=seed, status_file=status_file)
    return p
