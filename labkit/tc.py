"""The pure command builder: profile + interface + direction -> the tc (and iptables) command lines.

No I/O here: every function returns strings, so tests pin the exact commands without root. Each direction is
shaped on one gateway egress interface (uplink on the CPO-facing one, downlink on the EVSE-facing one), so no
ifb is needed. A rate-limited direction gets an HTB root with one class (handle 1:, class 1:10) and a leaf:

- engine ``netem``: a netem leaf (delay, jitter, loss, corruption, duplication, ``limit`` sized for the
  delay line plus the bottleneck queue); a direction with a delay but no rate gets netem as its root;
- engine ``userspace``: a FIFO leaf of ``queue`` packets; delay, jitter and loss are applied before it by
  ``labkit.nfq`` through one NFQUEUE rule per direction in the gateway's FORWARD chain (``iptables``, chain
  ``LABKIT-SHAPE``), without ``--queue-bypass``: with no engine attached, packets are dropped (fail-closed).

Units: rates go to tc as ``<n>bit`` (bits per second, never the ambiguous ``kbps``), times as ``<n>us``.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from labkit.profiles import FRAME_BYTES, Direction, Profile
from labkit.units import tc_rate, tc_time

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


def netem_args(d: Direction, limit: int) -> str:
    """The netem parameters for one direction (without ``tc qdisc ... netem``)."""
    parts = [f"limit {limit}"]
    if d.delay_ms or d.jitter_ms:
        parts.append(f"delay {tc_time(d.delay_ms)}")
        if d.jitter_ms:
            parts.append(tc_time(d.jitter_ms))
            if d.distribution != "uniform":
                parts.append(f"distribution {d.distribution}")
    if d.loss_pct:
        parts.append(f"loss random {d.loss_pct:g}%")
    if d.corrupt_pct:
        parts.append(f"corrupt {d.corrupt_pct:g}%")
    if d.duplicate_pct:
        parts.append(f"duplicate {d.duplicate_pct:g}%")
    if d.jitter_ms and not d.reorder:
        parts.append(f"rate {NETEM_ORDER_RATE}")
    return " ".join(parts)


def tc_commands(profile: Profile, iface: str, direction: str, engine: str = "netem") -> list[str]:
    """The tc commands that give a clean ``iface`` the ``direction`` half of ``profile``.

    They add to the interface's default qdisc (HTB cannot be changed in place): run ``clear_tc_commands``
    first, tolerantly. An unshaped direction needs no command (an empty list)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (allowed: {', '.join(ENGINES)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r} (allowed: {', '.join(DIRECTIONS)})")
    d = profile.direction(direction)
    other = profile.direction("downlink" if direction == "uplink" else "uplink")
    dev = _q(iface)
    if not d.shaped or (engine == "userspace" and d.rate_bps is None):
        # nothing for tc to do in this direction (the userspace engine holds any delay)
        return []
    if d.rate_bps is None:  # netem engine, delay without a rate limit: netem is the root
        limit = delay_line_packets(d, other.rate_bps)
        return [f"tc qdisc add dev {dev} root handle {LEAF_HANDLE} netem {netem_args(d, limit)}"]
    rtt = profile.added_rtt_ms
    rate = tc_rate(d.rate_bps)
    burst = htb_burst_bytes(d.rate_bps, rtt)
    cmds = [
        f"tc qdisc add dev {dev} root handle {ROOT_HANDLE} htb default 10",
        f"tc class add dev {dev} parent {ROOT_HANDLE} classid {CLASS_ID} htb rate {rate} ceil {rate} "
        f"burst {burst}b cburst {burst}b quantum {FRAME_BYTES}",
    ]
    queue = d.queue_pkts or 1
    if engine == "netem" and d.needs_delay_line:
        limit = delay_line_packets(d, other.rate_bps) + queue
        cmds.append(f"tc qdisc add dev {dev} parent {CLASS_ID} handle {LEAF_HANDLE} netem {netem_args(d, limit)}")
    else:
        cmds.append(f"tc qdisc add dev {dev} parent {CLASS_ID} handle {LEAF_HANDLE} pfifo limit {queue}")
    return cmds


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
        queues[str(QUEUE_NUM[name])] = {
            "direction": name, "delay_ms": d.delay_ms, "jitter_ms": d.jitter_ms,
            "distribution": d.distribution, "reorder": d.reorder, "loss_pct": d.loss_pct,
            "corrupt_pct": d.corrupt_pct, "duplicate_pct": d.duplicate_pct,
            "maxlen": delay_line_packets(d, other.rate_bps),
        }
    return {"profile": profile.name, "seed": seed, "status_file": status_file, "queues": queues}


@dataclass
class Plan:
    """Everything that applying one profile on one gateway means, as data."""

    profile: str
    engine: str
    ifaces: dict[str, str]  # direction -> interface
    tc: dict[str, list[str]] = field(default_factory=dict)  # direction -> commands
    rules: list[str] = field(default_factory=list)
    engine_config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "engine": self.engine, "ifaces": self.ifaces, "tc": self.tc,
                "rules": self.rules, "engine_config": self.engine_config}


def plan(profile: Profile, *, uplink_iface: str, downlink_iface: str, engine: str, seed: int = 1,
         status_file: str = "/tmp/labkit/shaper-status.json") -> Plan:
    """The full plan for a gateway: tc per direction, and for the userspace engine its rules and config."""
    p = Plan(profile=profile.name, engine=engine, ifaces={"uplink": uplink_iface, "downlink": downlink_iface})
    p.tc["uplink"] = tc_commands(profile, uplink_iface, "uplink", engine)
    p.tc["downlink"] = tc_commands(profile, downlink_iface, "downlink", engine)
    if engine == "userspace":
        p.rules = nfqueue_rules(profile, uplink_iface, downlink_iface)
        if p.rules:
            p.engine_config = engine_config(profile, seed=seed, status_file=status_file)
    return p
