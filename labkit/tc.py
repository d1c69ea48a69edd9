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

A schedule (phases of several profiles) changes the link in place: ``tc class change`` and ``tc qdisc change``
(``change_commands``) and new parameters for the running engine, never delete and add. That needs every phase
to have the same tree of qdiscs and the same NFQUEUE rules, so a schedule's phases are laid out in a common
``Frame`` (``frame_for``): a direction that any phase rate-limits keeps its HTB class in every phase (at
``FRAME_OPEN_RATE_BPS`` where a phase sets no rate), a direction that any phase delays keeps its delay line
(netem leaf, or NFQUEUE rule and engine queue) with zero delay where a phase sets none.

A direction that follows a recorded trace (``Direction.trace``, labkit.traces):

- engine ``userspace``: no qdisc of labkit's on its interface; the engine holds the delay line *and* the rate
  (it releases packets at the trace's delivery opportunities, or serialises them at a CSV step's rate) and
  the bottleneck queue, so its NFQUEUE length is the delay line plus ``queue``;
- engine ``netem``: the HTB class and leaf of a rate-limited direction, at the trace's first step
  (``trace_layout``); ``trace_changes`` gives the in-place changes (``change_commands``) at each next step's
  time, which the change loop on the gateway (labkit.tracefollow) runs.

A trace cannot be a phase of a schedule (``frame_conflicts``).
"""

from __future__ import annotations

import math
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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


def _netem(d: Direction, limit: int, order: bool | None = None) -> Netem:
    ge = gemodel_pct(d)
    if order is None:
        order = bool(d.jitter_ms and not d.reorder)
    return Netem(limit=limit, delay_us=tc_us(d.delay_ms), jitter_us=tc_us(d.jitter_ms),
                 distribution=d.distribution if d.jitter_ms else "uniform", loss_pct=0.0 if ge else d.loss_pct,
                 corrupt_pct=d.corrupt_pct, duplicate_pct=d.duplicate_pct,
                 rate_bps=NETEM_ORDER_RATE_BPS if order else None, gemodel=ge)


#: a schedule's phase that sets no rate on a direction another phase limits: its HTB class runs at this rate
#: (netem's ordering rate, above any link a lab has) with a FIFO of FRAME_OPEN_QUEUE packets
FRAME_OPEN_RATE_BPS = NETEM_ORDER_RATE_BPS
FRAME_OPEN_QUEUE = DELAY_LINE_MIN


@dataclass(frozen=True)
class DirFrame:
    """What one direction holds in every phase of a schedule."""

    htb: bool = False  # an HTB class (some phase limits the rate)
    delay_line: bool = False  # a netem leaf, or an NFQUEUE rule and engine queue (some phase needs one)
    order_rate: bool = False  # netem's ``rate 100gbit`` (some phase jitters without reordering)
    reorder: bool = False  # the engine's queue lets jitter reorder (some phase does; then no phase keeps order)
    packet_copy: bool = False  # the engine copies whole packets (some phase corrupts or duplicates)
    maxlen: int = 0  # the engine's NFQUEUE length: the longest delay line of any phase

    def to_dict(self) -> dict[str, Any]:
        return {"htb": self.htb, "delay_line": self.delay_line, "order_rate": self.order_rate,
                "reorder": self.reorder, "packet_copy": self.packet_copy, "maxlen": self.maxlen}


@dataclass(frozen=True)
class Frame:
    """The common layout of a schedule's phases, per direction (``frame_for``)."""

    uplink: DirFrame
    downlink: DirFrame

    def direction(self, name: str) -> DirFrame:
        return self.uplink if name == "uplink" else self.downlink

    def to_dict(self) -> dict[str, Any]:
        return {"uplink": self.uplink.to_dict(), "downlink": self.downlink.to_dict()}


def frame_conflicts(profiles: Sequence[Profile]) -> list[str]:
    """What cannot change in place between these profiles, per direction: whether jitter may reorder (the
    engine's queue is ordered or not; netem cannot drop its ordering rate once set) and the jitter's
    distribution (netem keeps its table when a change names none)."""
    out = []
    traced = [p.name for p in profiles if p.uplink.trace is not None or p.downlink.trace is not None]
    if traced:
        out.append(f"{', '.join(traced)} follow{'s' if len(traced) == 1 else ''} a recorded trace: a trace is a "
                   f"timeline of its own and cannot be a phase of a schedule")
    for name in DIRECTIONS:
        jittered = [p for p in profiles if p.direction(name).jitter_ms]
        reorder = {p.direction(name).reorder for p in jittered}
        if len(reorder) > 1:
            which = ", ".join(f"{p.name} {'reorders' if p.direction(name).reorder else 'keeps order'}"
                              for p in jittered)
            out.append(f"{name}: jitter reorders in some phases and not in others ({which}); a schedule "
                       f"cannot switch reordering in place")
        dists = {p.direction(name).distribution for p in jittered}
        if len(dists) > 1:
            which = ", ".join(f"{p.name} {p.direction(name).distribution}" for p in jittered)
            out.append(f"{name}: jitter distributions differ ({which}); netem keeps its distribution table "
                       f"across a change, so a schedule's jittered phases must share one")
    return out


def frame_for(profiles: Sequence[Profile]) -> Frame:
    """The layout every phase of a schedule of these profiles shares (see the module docstring)."""
    dirs = {}
    for name in DIRECTIONS:
        other = "downlink" if name == "uplink" else "uplink"
        pairs = [(p.direction(name), p.direction(other)) for p in profiles]
        line = any(d.needs_delay_line for d, _ in pairs)
        dirs[name] = DirFrame(
            htb=any(d.rate_bps is not None for d, _ in pairs), delay_line=line,
            order_rate=any(d.jitter_ms and not d.reorder for d, _ in pairs),
            reorder=any(d.reorder for d, _ in pairs),
            packet_copy=any(d.corrupt_pct or d.duplicate_pct for d, _ in pairs),
            maxlen=max([DELAY_LINE_MIN] + [delay_line_packets(d, o.rate_bps) for d, o in pairs]) if line else 0)
    return Frame(uplink=dirs["uplink"], downlink=dirs["downlink"])


def _htb(rate_bps: int, rtt_ms: float) -> HtbClass:
    burst = htb_burst_bytes(rate_bps, rtt_ms)
    return HtbClass(rate_bps=rate_bps, ceil_bps=rate_bps, burst_bytes=burst, cburst_bytes=burst)


def _framed_layout(profile: Profile, direction: str, engine: str, f: DirFrame) -> Layout:
    d = profile.direction(direction)
    other = profile.direction("downlink" if direction == "uplink" else "uplink")
    htb = _htb(d.rate_bps or FRAME_OPEN_RATE_BPS, profile.added_rtt_ms) if f.htb else None
    queue = d.queue_pkts or FRAME_OPEN_QUEUE
    if engine == "userspace" or not f.delay_line:
        return Layout(htb=htb, leaf=Fifo(limit=queue) if htb else None)
    line = max(DELAY_LINE_MIN, delay_line_packets(d, other.rate_bps))
    return Layout(htb=htb, leaf=_netem(d, line + queue if htb else line, order=f.order_rate))


def layout(profile: Profile, direction: str, engine: str = "netem", frame: Frame | None = None) -> Layout:
    """What ``direction``'s interface must hold under ``engine``: the single source of the tc commands and of
    what the read-back is checked against. With a schedule's ``frame``, in that frame's common layout."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (allowed: {', '.join(ENGINES)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r} (allowed: {', '.join(DIRECTIONS)})")
    if frame is not None:
        return _framed_layout(profile, direction, engine, frame.direction(direction))
    d = profile.direction(direction)
    other = profile.direction("downlink" if direction == "uplink" else "uplink")
    if d.trace is not None:
        # userspace: the engine holds the rate too; netem: HTB at the trace's first step, changed in place
        return Layout() if engine == "userspace" else trace_layout(profile, direction, trace_steps(d)[0])
    if not d.shaped or (engine == "userspace" and d.rate_bps is None):
        # nothing for tc to do in this direction (the userspace engine holds any delay)
        return Layout()
    if d.rate_bps is None:  # netem engine, delay without a rate limit: netem is the root
        return Layout(leaf=_netem(d, delay_line_packets(d, other.rate_bps)))
    htb = _htb(d.rate_bps, profile.added_rtt_ms)
    queue = d.queue_pkts or 1
    if engine == "netem" and d.needs_delay_line:
        return Layout(htb=htb, leaf=_netem(d, delay_line_packets(d, other.rate_bps) + queue))
    return Layout(htb=htb, leaf=Fifo(limit=queue))


def _netem_args(n: Netem, explicit: bool = False) -> str:
    """netem's options; ``explicit`` also states a corruption of 0 (a ``tc qdisc change`` that names no
    corruption keeps the one before: the kernel reads it from an attribute tc sends only when named)."""
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
    if n.corrupt_pct or explicit:
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


def change_commands(old: Layout, new: Layout, iface: str) -> list[str]:
    """The tc commands that turn ``iface`` holding ``old`` into ``new`` in place (``tc class change``, ``tc qdisc
    change``: queued packets stay, nothing is re-created); only what differs. Both must have the same tree (the
    same frame); otherwise ValueError."""
    if (old.htb is None) != (new.htb is None) or type(old.leaf) is not type(new.leaf):
        raise ValueError(f"{iface}: the layouts differ in structure ({old.to_dict()} -> {new.to_dict()}): not a "
                         f"change in place")
    dev = _q(iface)
    cmds = []
    h = new.htb
    if h is not None and h != old.htb:
        cmds.append(f"tc class change dev {dev} parent {ROOT_HANDLE} classid {CLASS_ID} htb rate {tc_rate(h.rate_bps)} "
                    f"ceil {tc_rate(h.ceil_bps)} burst {h.burst_bytes}b cburst {h.cburst_bytes}b quantum {h.quantum}")
    leaf = new.leaf
    if leaf is not None and leaf != old.leaf:
        where = f"parent {CLASS_ID}" if new.htb is not None else "root"
        if isinstance(leaf, Netem):
            cmds.append(f"tc qdisc change dev {dev} {where} handle {LEAF_HANDLE} netem {_netem_args(leaf, True)}")
        else:
            cmds.append(f"tc qdisc change dev {dev} {where} handle {LEAF_HANDLE} pfifo limit {leaf.limit}")
    return cmds


def tc_commands(profile: Profile, iface: str, direction: str, engine: str = "netem") -> list[str]:
    """The tc commands that give a clean ``iface`` the ``direction`` half of ``profile``.

    They add to the interface's default qdisc (another profile's tree may differ): run ``clear_tc_commands``
    first, tolerantly. An unshaped direction needs no command (an empty list)."""
    return layout_commands(layout(profile, direction, engine), iface)


def clear_tc_commands(iface: str) -> list[str]:
    """Remove labkit's qdiscs from ``iface`` (the kernel's default qdisc comes back). Fails if none is there:
    run it tolerantly and read back."""
    return [f"tc qdisc del dev {_q(iface)} root"]


def _has_line(profile: Profile, direction: str, frame: Frame | None) -> bool:
    """Whether the userspace engine serves this direction (its delay line, or a trace it follows)."""
    if frame is not None:
        return frame.direction(direction).delay_line
    d = profile.direction(direction)
    return d.needs_delay_line or d.trace is not None


# -- recorded traces -----------------------------------------------------------------------------------------------
def trace_steps(d: Direction) -> list[Any]:
    """The steps (labkit.traces.Step) the netem engine applies for a traced direction, in order."""
    from labkit import traces

    assert d.trace is not None
    return traces.netem_steps(traces.load_cached(d.trace.path, d.trace.fmt))


def _trace_sized(d: Direction) -> Direction:
    """``d`` as the delay line and queues are sized for: at the trace's fastest rate and longest delay."""
    assert d.trace is not None
    return replace(d, rate_bps=d.sizing_rate_bps, delay_ms=max(d.delay_ms, d.trace.max_delay_ms))


def _trace_netem_leaf(d: Direction) -> bool:
    assert d.trace is not None
    return d.needs_delay_line or d.trace.has_delay or d.trace.has_loss


def trace_delay_line(profile: Profile, direction: str) -> int:
    """Packets a traced direction's delay line may hold (at its fastest rate and longest delay)."""
    d = profile.direction(direction)
    other = profile.direction("downlink" if direction == "uplink" else "uplink")
    return max(DELAY_LINE_MIN, delay_line_packets(_trace_sized(d), other.sizing_rate_bps))


def trace_layout(profile: Profile, direction: str, step: Any) -> Layout:
    """What a traced direction's interface holds under the netem engine during ``step``: HTB at the step's rate
    and a FIFO of ``queue`` packets, or a netem leaf (the direction's delay, jitter, loss, or a CSV step's delay
    and loss) with room for the delay line at the trace's fastest rate and longest delay."""
    d = profile.direction(direction)
    assert d.trace is not None and d.queue_pkts is not None
    htb = _htb(int(round(step.rate_bps)), profile.added_rtt_ms)
    if not _trace_netem_leaf(d):
        return Layout(htb=htb, leaf=Fifo(limit=d.queue_pkts))
    now = replace(d, delay_ms=step.delay_ms, loss_pct=step.loss_pct) if d.trace.fmt == "csv" else d
    line = trace_delay_line(profile, direction)
    return Layout(htb=htb, leaf=_netem(now, line + d.queue_pkts, order=bool(d.jitter_ms)))


def trace_changes(profile: Profile, direction: str, iface: str) -> dict[str, Any] | None:
    """The netem engine's sequence for a traced direction (None: not traced): for each step its time from the
    trace's origin and the in-place commands that make it hold. Step 0's commands change the last step into
    the first: a looping trace runs them at each new pass (the first pass starts as ``layout`` applied it)."""
    d = profile.direction(direction)
    if d.trace is None:
        return None
    steps = trace_steps(d)
    lays = [trace_layout(profile, direction, st) for st in steps]
    changes = []
    for i, (st, lay) in enumerate(zip(steps, lays, strict=True)):
        changes.append({"t_s": st.start_s, "step": i, "rate_bps": st.rate_bps, "delay_ms": st.delay_ms,
                        "loss_pct": st.loss_pct, "commands": change_commands(lays[i - 1], lay, iface)})
    return {"direction": direction, "iface": iface, "trace": d.trace.name, "sha256": d.trace.sha256,
            "format": d.trace.fmt, "loop": d.trace.loop, "period_s": d.trace.period_s, "changes": changes}


def trace_file_name(direction: str, d: Direction) -> str:
    """The name of a traced direction's copy of its trace in the gateway's workdir (content-addressed)."""
    assert d.trace is not None
    return f"trace-{direction}-{d.trace.sha256[:16]}.{'csv' if d.trace.fmt == 'csv' else 'trace'}"


def nfqueue_rules(profile: Profile, uplink_iface: str, downlink_iface: str, frame: Frame | None = None) -> list[str]:
    """iptables commands that send each direction needing a delay line (in any phase of ``frame``) to its
    NFQUEUE (userspace engine).

    uplink packets come in on the EVSE-facing interface and leave on the CPO-facing one."""
    up, down = _q(uplink_iface), _q(downlink_iface)
    rules = []
    if _has_line(profile, "uplink", frame):
        rules.append(f"iptables -w -A {CHAIN} -i {down} -o {up} -j NFQUEUE --queue-num {QUEUE_NUM['uplink']}")
    if _has_line(profile, "downlink", frame):
        rules.append(f"iptables -w -A {CHAIN} -i {up} -o {down} -j NFQUEUE --queue-num {QUEUE_NUM['downlink']}")
    if not rules:
        return []
    return [f"iptables -w -N {CHAIN}", *rules, f"iptables -w -I FORWARD 1 -j {CHAIN}"]


def clear_nfqueue_rules() -> list[str]:
    """Remove labkit's chain (each may fail when absent: run tolerantly)."""
    return [f"iptables -w -D FORWARD -j {CHAIN}", f"iptables -w -F {CHAIN}", f"iptables -w -X {CHAIN}"]


def engine_config(profile: Profile, *, seed: int, status_file: str, frame: Frame | None = None,
                  control_file: str | None = None) -> dict[str, Any]:
    """What ``labkit shaper run`` needs: per queue, the direction's delay line. With a schedule's ``frame``,
    every direction the frame delays gets a queue (with zero delay in a phase that sets none), of the frame's
    length and copy mode; ``control_file`` is where the engine reads a phase's parameters on SIGHUP."""
    queues = {}
    for name in DIRECTIONS:
        d = profile.direction(name)
        if not _has_line(profile, name, frame):
            continue
        other = profile.direction("downlink" if name == "uplink" else "uplink")
        ge = gemodel_pct(d)
        q: dict[str, Any] = {
            "direction": name, "delay_ms": d.delay_ms, "jitter_ms": d.jitter_ms,
            "distribution": d.distribution, "reorder": d.reorder, "loss_pct": 0.0 if ge else d.loss_pct,
            "corrupt_pct": d.corrupt_pct, "duplicate_pct": d.duplicate_pct,
            "maxlen": delay_line_packets(d, other.rate_bps),
        }
        if frame is not None:
            f = frame.direction(name)
            q["maxlen"] = f.maxlen
            q["copy_packet"] = f.packet_copy
            q["reorder"] = f.reorder  # a phase without jitter keeps its order in a reordering queue too
        if ge is not None:  # bursty loss: netem's four parameters, in percent
            q["gemodel"] = dict(zip(GEMODEL_KEYS, ge, strict=True))
        if d.trace is not None:  # the engine follows the trace and holds the bottleneck queue
            assert d.queue_pkts is not None
            q["maxlen"] = trace_delay_line(profile, name) + d.queue_pkts
            q["trace"] = {"file": posixpath.join(posixpath.dirname(status_file), trace_file_name(name, d)),
                          "format": d.trace.fmt, "sha256": d.trace.sha256, "name": d.trace.name,
                          "queue_pkts": d.queue_pkts}
        queues[str(QUEUE_NUM[name])] = q
    cfg: dict[str, Any] = {"profile": profile.name, "seed": seed, "status_file": status_file, "queues": queues}
    if control_file is not None:
        cfg["control_file"] = control_file
    return cfg


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
    frame: Frame | None = None  # a schedule's common layout, when the plan is one of its phases
    #: the netem engine's change loop for traced directions (labkit.tracefollow), None without one
    follower: dict[str, Any] | None = None
    #: files the gateway needs (its path -> this machine's): the traces the userspace engine follows
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "engine": self.engine, "ifaces": self.ifaces, "tc": self.tc,
                "layouts": {d: lay.to_dict() for d, lay in self.layouts.items()}, "rules": self.rules,
                "engine_config": self.engine_config, "frame": self.frame.to_dict() if self.frame else None,
                "follower": None if self.follower is None else {
                    k: v for k, v in self.follower.items() if k != "sequences"} | {
                    "sequences": [{k: v for k, v in sq.items() if k != "changes"} | {"steps": len(sq["changes"])}
                                  for sq in self.follower["sequences"]]},
                "files": self.files}


def plan(profile: Profile, *, uplink_iface: str, downlink_iface: str, engine: str, seed: int = 1,
         status_file: str = "/tmp/labkit/shaper-status.json", frame: Frame | None = None,
         control_file: str | None = None) -> Plan:
    """The full plan for a gateway: tc per direction, and for the userspace engine its rules and config.
    With a schedule's ``frame``: this profile as one of its phases (``change_commands`` between two such plans
    switch the link in place)."""
    p = Plan(profile=profile.name, engine=engine, ifaces={"uplink": uplink_iface, "downlink": downlink_iface},
             frame=frame)
    for d in DIRECTIONS:
        p.layouts[d] = layout(profile, d, engine, frame)
        p.tc[d] = layout_commands(p.layouts[d], p.ifaces[d])
    if engine == "userspace":
        p.rules = nfqueue_rules(profile, uplink_iface, downlink_iface, frame)
        if p.rules:
            p.engine_config = engine_config(profile, seed=seed, status_file=status_file, frame=frame,
                                            control_file=control_file)
            for q in p.engine_config["queues"].values():
                if "trace" in q:
                    d = profile.direction(q["direction"])
                    assert d.trace is not None
                    p.files[q["trace"]["file"]] = d.trace.path
    else:
        seqs = [s for s in (trace_changes(profile, d, p.ifaces[d]) for d in DIRECTIONS) if s is not None]
        if seqs:
            wd = posixpath.dirname(status_file)
            p.follower = {"profile": profile.name, "sequences": seqs,
                          "status_file": posixpath.join(wd, "tracer-status.json"),
                          "log_file": posixpath.join(wd, "tracer-log.jsonl")}
    return p


def switch_commands(old: Plan, new: Plan) -> list[str]:
    """The tc commands that move the gateway from phase ``old`` to phase ``new`` of one schedule in place
    (the engine's part is a new parameter set, see labkit.shaping)."""
    if old.frame is None or old.frame != new.frame or old.engine != new.engine or old.ifaces != new.ifaces:
        raise ValueError("only two phases of one schedule (same frame, engine and interfaces) switch in place")
    return [c for d in DIRECTIONS for c in change_commands(old.layouts[d], new.layouts[d], new.ifaces[d])]
