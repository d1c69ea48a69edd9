"""The userspace delay line: holds each queued packet for its delay, drops, corrupts or duplicates it.

One ``NfqSocket`` serves every direction's queue. The *reader* (main thread) receives each packet, decides
its fate with the profile's probabilities (a seeded generator; loss random or in bursts, by the
Gilbert-Elliott chain of ``labkit.lossmodel``, as netem's ``loss gemodel``) and gives it a due time of arrival + delay +
jitter, where arrival is the kernel's timestamp of the packet (NFQA_TIMESTAMP), so that the time the engine
takes to wake and read the packet (its *pickup*) is part of the delay and not added to it; unless reordering
is allowed, a packet is never due before the one ahead of it (as netem does when it has a rate). The
*releaser* thread sleeps until the earliest due time and then accepts every due packet of a queue with one
batch verdict; no packet is released before its due time. A timed sleep wakes late on a virtual machine
(0.2 ms here: the idle vCPU has to be woken), so when the releaser has been idle for a while (sparse
traffic: pings, OCPP calls) it wakes ``spin_us`` early and yields the CPU in a loop until the packet is due.
Dense traffic (a transfer) keeps it busy anyway and is released by plain timed sleeps, so that the spin
never costs more than about a tenth of a CPU.
A *status* thread writes what the engine did (packets seen, dropped, released, pickup, lateness
of releases) to a JSON file every second.

Parameters change in place (a schedule's phases, ``labkit.schedules``): on SIGHUP a *control* thread reads the
config's ``control_file`` (``{"seq", "profile", "queues"}``, each queue as in the config), checks it (the same
queues, directions, lengths, ordering and copy modes: what the kernel and the pending packets depend on), and
swaps each changed queue's delay, jitter, distribution, loss (a new Gilbert-Elliott chain starts good, as
netem's does at a change), corruption and duplication between two batches of the reader. Packets already
waiting keep their due times; none is dropped or released early. The report says which ``seq`` runs since
when (``params``), or why a file was refused (the old parameters stay).

Rates are not handled here: the kernel's HTB does that after the packet is released. Except on a direction that
follows a recorded trace (a queue's ``trace``: labkit.traces): there the engine is the link. A packet's delay
runs first (as before; with a CSV trace, the delay and loss of the step in force when it arrives), then it
enters the trace's link (``MahimahiLink``: it leaves at the next delivery opportunity with room for it, each
carrying up to one full-size packet; ``CsvLink``: serialised at the step's rate) and is released when it
leaves it; a packet that finds ``queue_pkts`` packets waiting for the link is dropped (tail drop). The trace's
time origin is when the engine bound its queues (``trace.origin`` in the report, this machine's clock), just
before the link is applied; a Mahimahi trace repeats, a CSV trace's last step holds. The report gives per queue
the trace it follows (name, format, sha256 of the file, which the engine checks) and where it is (pass,
position, opportunities used, tail drops).
"""

from __future__ import annotations

import ctypes
import heapq
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from labkit.lossmodel import GEParams, GilbertElliott
from labkit.nfq.netlink import COPY_META, COPY_PACKET, NF_ACCEPT, NF_DROP, NfqSocket, kernel_queue_stats

NORMAL_SPAN = 4.0  # netem's normal table is cut at +-4 sigma
ACCEPT, CORRUPT, DUPLICATE = 0, 1, 2
#: default: wake this long (us) before a due time and yield-spin the rest, after an idle spell
SPIN_US = 300
#: spin only when the releaser has been idle for this many times spin_us since its last release, which
#: caps the CPU the spin takes at about 1 / (1 + SPIN_IDLE_FACTOR) of one core
SPIN_IDLE_FACTOR = 10
#: a kernel timestamp older than this (ns) is not trusted (a step of the wall clock); the read time is used
MAX_PICKUP_NS = 1_000_000_000
PR_SET_TIMERSLACK = 29
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: bytes of an IPv4 header: a traced queue copies this much of each packet, for its total length
IP_HEADER = 20


def write_json(path: str, obj: Any) -> None:
    """Write a status file whole or not at all (a reader never sees half of one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def realtime(priority: int) -> str:
    """Run at a real-time priority (SCHED_FIFO) when allowed, so releases are on time on a busy host.

    Every thread of the engine blocks between packets; the kernel's RT throttling keeps the rest alive. Children
    start at the normal policy (SCHED_RESET_ON_FORK): a command this process starts (``tc`` from the trace's
    change loop) does not inherit it, nor does anything started by a process that ran this in-process."""
    if priority <= 0:
        return "other"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
        return f"fifo:{priority}"
    except (OSError, AttributeError):
        return "other"


def _tight_timer_slack() -> None:
    """Ask for 1 us timer slack on this thread (default 50 us), so sleeps end when asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Lateness:
    """A histogram of release lateness (due time -> verdict sent), in microseconds."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max_us = 0

    def add(self, late_ns: int) -> None:
        us = late_ns // 1000 if late_ns > 0 else 0
        if us >= 10_000:
            us -= us % 1000  # 1 ms buckets beyond 10 ms
        self.counts[us] = self.counts.get(us, 0) + 1
        self.n += 1
        if us > self.max_us:
            self.max_us = us

    def summary(self) -> dict[str, Any]:
        counts = dict(self.counts)
        n = sum(counts.values())
        if not n:
            return {"n": 0, "median_ms": None, "p99_ms": None, "max_ms": None}
        keys = sorted(counts)

        def q(frac: float) -> float:
            target = frac * n
            acc = 0
            for k in keys:
                acc += counts[k]
                if acc >= target:
                    return k / 1000.0
            return keys[-1] / 1000.0

        return {"n": n, "median_ms": q(0.5), "p99_ms": q(0.99), "max_ms": self.max_us / 1000.0}


@dataclass
class Queue:
    num: int
    direction: str
    delay_ns: int
    jitter_ns: int
    distribution: str
    reorder: bool
    loss: float  # probabilities 0..1
    corrupt: float
    duplicate: float
    maxlen: int
    gemodel: GilbertElliott | None = None  # bursty loss (then ``loss`` is 0)
    copy_packet: bool = False  # copy whole packets even when this queue neither corrupts nor duplicates
    trace: dict[str, Any] | None = None  # the trace this queue follows: name, format, sha256, queue_pkts
    trace_data: Any = None  # ... parsed (labkit.traces)
    link: Any = None  # ... as a link from the engine's origin on (MahimahiLink, CsvLink)
    last_ready: int = 0  # traced queue: when the last packet entered the link (keeps them in order)
    pending: Any = None  # deque (in order) or heap (reorder)
    last_due: int = 0
    seq: int = 0
    seen: int = 0
    lost: int = 0
    corrupted: int = 0
    duplicated: int = 0
    released: int = 0
    max_pending: int = 0
    lateness: Lateness = field(default_factory=Lateness)
    pickup: Lateness = field(default_factory=Lateness)  # kernel timestamp -> read by the engine
    unstamped: int = 0  # packets timed from the engine's read (no usable kernel timestamp)
    heap_lock: threading.Lock = field(default_factory=threading.Lock)  # reorder mode: the heap is shared

    @property
    def copy_mode(self) -> int:
        # a traced queue needs each packet's length, which the kernel gives only in the copied IP header
        full = self.copy_packet or self.corrupt or self.duplicate
        return COPY_PACKET if (full or self.trace is not None) else COPY_META

    @property
    def copy_range(self) -> int:
        """Bytes of each packet the kernel copies: all of it, or a traced queue's IP header (its length)."""
        return 0xFFFF if (self.copy_packet or self.corrupt or self.duplicate or self.trace is None) else IP_HEADER

    @property
    def copy_text(self) -> str:
        if self.copy_mode == COPY_META:
            return "meta"
        return "packet" if self.copy_range == 0xFFFF else "header"

    def sample_delay_ns(self, rng: random.Random, base_ns: int | None = None) -> int:
        base = self.delay_ns if base_ns is None else base_ns
        if not self.jitter_ns:
            return base
        if self.distribution == "normal":
            x = rng.gauss(0.0, 1.0)
            x = max(-NORMAL_SPAN, min(NORMAL_SPAN, x))
            d = base + int(x * self.jitter_ns)
        else:
            d = base + int(rng.uniform(-self.jitter_ns, self.jitter_ns))
        return d if d > 0 else 0

    def running(self) -> dict[str, Any]:
        """The parameters this queue is actually served with, in the engine's own units (ns, probability 0-1,
        packets): what ``labkit.shaping`` compares with the plan."""
        out = {"direction": self.direction, "delay_ns": self.delay_ns, "jitter_ns": self.jitter_ns,
               "distribution": self.distribution, "reorder": self.reorder, "loss": self.loss,
               "gemodel": self.gemodel_running(),
               "corrupt": self.corrupt, "duplicate": self.duplicate, "maxlen": self.maxlen,
               "copy_mode": self.copy_text}
        if self.trace is not None:  # the trace it follows (the rate, and with a CSV trace the delay and loss)
            out["trace"] = {k: self.trace[k] for k in ("name", "format", "sha256", "queue_pkts")} | {
                "loop": self.trace["format"] == "mahimahi"}
        return out

    def gemodel_running(self) -> dict[str, float] | None:
        """netem's four Gilbert-Elliott parameters as probabilities (None: random loss)."""
        g = self.gemodel
        if g is None:
            return None
        return {"p": g.p, "r": g.r, "1-h": g.bad_loss, "1-k": g.good_loss}

    def lost_now(self, rng: random.Random) -> bool:
        """The loss decision for the next packet: the Gilbert-Elliott chain, or random loss."""
        if self.gemodel is not None:
            return self.gemodel.lose(rng)
        return bool(self.loss) and rng.random() < self.loss

    def stats(self) -> dict[str, Any]:
        out = {"queue": self.num, "direction": self.direction, "running": self.running(),
               "seen": self.seen, "dropped_loss": self.lost,
               "corrupted": self.corrupted, "duplicated": self.duplicated, "released": self.released,
               "pending": len(self.pending), "max_pending": self.max_pending, "maxlen": self.maxlen,
               "lateness": self.lateness.summary(), "pickup": self.pickup.summary(), "unstamped": self.unstamped}
        if self.link is not None:  # where the trace is: pass, position, tail drops
            out["trace"] = self.link.position(time.monotonic_ns())
        return out


class _Stop(Exception):
    pass


def _queue_from_config(num: Any, q: dict[str, Any]) -> Queue:
    """One queue of the engine's config; a value the engine cannot serve as written is refused (ValueError),
    never quietly replaced by a default (an unknown distribution would otherwise become uniform)."""
    where = f"queues.{num}"

    def number(key: str, default: float, low: float, high: float) -> float:
        v = q.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            raise ValueError(f"{where}.{key}: {v!r} (allowed: {low:g} to {high:g})")
        return float(v)

    unknown = set(q) - {"direction", "delay_ms", "jitter_ms", "distribution", "reorder", "loss_pct", "corrupt_pct",
                        "duplicate_pct", "maxlen", "gemodel", "copy_packet", "trace"}
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    try:
        qnum = int(num)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: queue number {num!r} (allowed: 0 to 65535)") from None
    if not 0 <= qnum <= 65535:
        raise ValueError(f"{where}: queue number {num!r} (allowed: 0 to 65535)")
    direction = q.get("direction")
    if direction not in ("uplink", "downlink"):
        raise ValueError(f"{where}.direction: {direction!r} (allowed: uplink, downlink)")
    distribution = q.get("distribution", "uniform")
    if distribution not in ("uniform", "normal"):
        raise ValueError(f"{where}.distribution: {distribution!r} (allowed: uniform, normal)")
    reorder = q.get("reorder", False)
    if not isinstance(reorder, bool):
        raise ValueError(f"{where}.reorder: {reorder!r} (allowed: true, false)")
    copy_packet = q.get("copy_packet", False)
    if not isinstance(copy_packet, bool):
        raise ValueError(f"{where}.copy_packet: {copy_packet!r} (allowed: true, false)")
    maxlen = q.get("maxlen", 1024)
    if isinstance(maxlen, bool) or not isinstance(maxlen, int) or not 1 <= maxlen <= 0xFFFFFFFF:
        raise ValueError(f"{where}.maxlen: {maxlen!r} (allowed: 1 to {0xFFFFFFFF} packets)")
    gemodel = None
    if q.get("gemodel") is not None:
        ge = q["gemodel"]
        if not isinstance(ge, dict) or set(ge) != {"p", "r", "1-h", "1-k"}:
            raise ValueError(f"{where}.gemodel: {ge!r} (allowed: {{\"p\", \"r\", \"1-h\", \"1-k\"}}, each 0 to 100 %)")
        pct = {}
        for key in ("p", "r", "1-h", "1-k"):
            v = ge[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
                raise ValueError(f"{where}.gemodel.{key}: {v!r} (allowed: 0 to 100)")
            pct[key] = float(v)
        if q.get("loss_pct", 0):
            raise ValueError(f"{where}: loss_pct and gemodel together (allowed: one loss model)")
        gemodel = GilbertElliott(GEParams.from_percent(pct))
    trace, trace_data = _trace_from_config(where, q.get("trace"))
    if trace is not None and reorder:
        raise ValueError(f"{where}: reorder and a trace together (a traced link delivers in order)")
    return Queue(num=qnum, direction=direction,
                 delay_ns=int(round(number("delay_ms", 0, 0, 3_600_000) * 1e6)),
                 jitter_ns=int(round(number("jitter_ms", 0, 0, 3_600_000) * 1e6)),
                 distribution=distribution, reorder=reorder,
                 loss=number("loss_pct", 0, 0, 100) / 100.0, corrupt=number("corrupt_pct", 0, 0, 100) / 100.0,
                 duplicate=number("duplicate_pct", 0, 0, 100) / 100.0, maxlen=maxlen, gemodel=gemodel,
                 copy_packet=copy_packet, trace=trace, trace_data=trace_data)


def _trace_from_config(where: str, t: Any) -> tuple[dict[str, Any] | None, Any]:
    """A queue's ``trace`` (file, format, sha256, name, queue_pkts): checked, and the file read and parsed; the
    file must be the one the plan names (its sha256), so the engine never follows another trace."""
    if t is None:
        return None, None
    if not isinstance(t, dict) or set(t) != {"file", "format", "sha256", "name", "queue_pkts"}:
        raise ValueError(f"{where}.trace: {t!r} (allowed: {{file, format, sha256, name, queue_pkts}})")
    if t["format"] not in ("mahimahi", "csv"):
        raise ValueError(f"{where}.trace.format: {t['format']!r} (allowed: mahimahi, csv)")
    qp = t["queue_pkts"]
    if isinstance(qp, bool) or not isinstance(qp, int) or not 1 <= qp <= 1_000_000:
        raise ValueError(f"{where}.trace.queue_pkts: {qp!r} (allowed: 1 to 1000000 packets)")
    import hashlib

    from labkit import traces
    from labkit.errors import ConfigError

    try:
        with open(t["file"], "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        if digest != t["sha256"]:
            raise ValueError(f"{where}.trace: {t['file']} has sha256 {digest}, planned {t['sha256']}")
        data = traces.load(t["file"], t["format"])
    except (OSError, ConfigError) as exc:
        raise ValueError(f"{where}.trace: {exc}") from None
    return dict(t), data


#: what a queue's new parameters must keep (the kernel's binding and the pending packets depend on them)
FIXED = ("direction", "reorder", "maxlen", "copy_mode", "trace")
#: what changes in place
PARAMS = ("delay_ns", "jitter_ns", "distribution", "loss", "corrupt", "duplicate", "gemodel")


class Engine:
    """Serve the queues of ``config`` (see labkit.tc.engine_config) until stopped."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.rng = random.Random(config.get("seed", 1))
        self.status_file: str | None = config.get("status_file")
        #: "kernel": a packet's delay runs from the kernel's timestamp; "read": from when the engine read it
        #: (the behaviour before; kept to measure the difference, benchmarks/engine_pickup.py)
        self.arrival = config.get("arrival", "kernel")
        if self.arrival not in ("kernel", "read"):
            raise ValueError(f"arrival: {self.arrival!r} (allowed: kernel, read)")
        #: wake this early (ns) and spin to the due time after an idle spell (0: never)
        spin_us = config.get("spin_us", SPIN_US)
        if not isinstance(spin_us, (int, float)) or isinstance(spin_us, bool) or not 0 <= spin_us <= 5000:
            raise ValueError(f"spin_us: {spin_us!r} (allowed: 0 to 5000 microseconds)")
        self.spin_ns = int(spin_us * 1000)
        self.spins = 0
        self.last_release = 0  # monotonic ns of the releaser's last release
        self.queues: dict[int, Queue] = {}
        for num, q in config["queues"].items():
            queue = _queue_from_config(num, q)
            queue.pending = [] if queue.reorder else deque()
            self.queues[queue.num] = queue
        #: where SIGHUP finds new parameters (a schedule's next phase), and what the engine runs now
        self.control_file: str | None = config.get("control_file")
        self.reload_now = threading.Event()
        self.params_lock = threading.Lock()  # the reader decides a batch's packets under one parameter set
        self.params: dict[str, Any] = {"seq": 0, "profile": config.get("profile"), "at": time.time(),
                                       "reloads": 0, "refused": 0, "error": None}
        self.sock: NfqSocket | None = None
        self.raw: socket.socket | None = None
        self.stamper: socket.socket | None = None
        self.wake = threading.Event()
        self.status_now = threading.Event()
        self.running = False
        self.started_wall = time.time()
        self.state = "starting"
        self.sched = "other"
        self.error: str | None = None
        self._lock = threading.Lock()  # guards the socket's send path shared by reader and releaser

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self) -> None:
        self.sock = NfqSocket(rcvbuf=int(self.config.get("rcvbuf", 32 << 20)))
        for q in self.queues.values():
            self.sock.bind(q.num, copy_mode=q.copy_mode, copy_range=q.copy_range, maxlen=q.maxlen)
        self.start_traces()
        if any(q.duplicate for q in self.queues.values()):
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        # The kernel stamps received packets only while some socket asks for receive timestamps (ping does,
        # iperf3 and the simulators do not): this one asks for as long as the engine runs.
        self.stamper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stamper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def start_traces(self, origin_ns: int | None = None) -> None:
        """The traces' time origin: now (the queues are bound; labkit inserts the rules right after)."""
        from labkit import traces

        self.trace_origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        self.trace_origin_wall = time.time() - (time.monotonic_ns() - self.trace_origin_ns) / 1e9
        for q in self.queues.values():
            if q.trace is not None:
                q.link = traces.link_for(q.trace_data, self.trace_origin_ns, q.trace["queue_pkts"])

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; write the final status. Exceptions propagate after the status is written."""
        sys.setswitchinterval(0.0002)
        _tight_timer_slack()

        def _handler(signum, frame):  # noqa: ARG001
            raise _Stop()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.status_now.set())  # a fresh report, now
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reload_now.set())  # new parameters, now
        self.sched = realtime(int(self.config.get("rt_priority", 10)))
        try:
            self.open()
            self.running = True
            self.state = "running"
            threads = [threading.Thread(target=self._releaser, name="releaser", daemon=True),
                       threading.Thread(target=self._status_loop, name="status", daemon=True),
                       threading.Thread(target=self._control_loop, name="control", daemon=True)]
            # The threads start with these signals blocked, so that the kernel delivers them to the main
            # thread: its blocking read returns (EINTR) and Python runs the handler at once. Delivered to
            # another thread, a handler would wait for the next packet the main thread reads.
            caught = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP}
            signal.pthread_sigmask(signal.SIG_BLOCK, caught)
            try:
                for t in threads:
                    t.start()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, caught)
            self.write_status()
            self._reader()
        except _Stop:
            self.state = "stopped"
        except BaseException as exc:  # recorded, then re-raised
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.running = False
            self.wake.set()
            try:
                self.write_status()
            finally:
                if self.sock is not None:
                    self.sock.close()  # the kernel drops whatever is still queued: fail-closed
                if self.stamper is not None:
                    self.stamper.close()

    # -- reader ----------------------------------------------------------------------------------------------
    def _reader(self) -> None:
        assert self.sock is not None
        sock = self.sock
        rng = self.rng
        queues = self.queues
        mono = time.monotonic_ns
        real = time.time_ns
        use_stamp = self.arrival == "kernel"
        while True:
            packets = sock.receive()
            now = mono()
            now_real = real()
            with self.params_lock:
                for p in packets:
                    self._decide(p, queues, rng, now, now_real, use_stamp)

    def _decide(self, p: Any, queues: dict[int, Queue], rng: random.Random, now: int, now_real: int,
                use_stamp: bool) -> None:
        """One packet's fate under the parameters in force (the reader holds ``params_lock``)."""
        sock = self.sock
        assert sock is not None
        q = queues.get(p.queue)
        if q is None:
            with self._lock:
                sock.verdict(p.queue, p.id, NF_ACCEPT)
            return
        q.seen += 1
        age = now_real - p.tstamp_ns if p.tstamp_ns else -1
        if 0 <= age < MAX_PICKUP_NS:
            q.pickup.add(age)
            arrival = now - age if use_stamp else now
        else:
            q.unstamped += 1
            arrival = now
        base = None
        if q.link is not None and q.trace is not None and q.trace["format"] == "csv":
            base, step_loss = q.link.delay_loss(arrival)  # the CSV step in force when the packet arrives
            lost = bool(step_loss) and rng.random() < step_loss
        else:
            lost = (q.loss or q.gemodel is not None) and q.lost_now(rng)
        if lost:
            q.lost += 1
            with self._lock:
                sock.verdict(p.queue, p.id, NF_DROP)
            return
        kind = ACCEPT
        payload = None
        if q.corrupt and rng.random() < q.corrupt and p.payload and q.copy_range == 0xFFFF:
            kind = CORRUPT
            data = bytearray(p.payload)
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
            payload = bytes(data)
            q.corrupted += 1
        length = p.length
        if q.link is not None and p.payload is not None and len(p.payload) >= 4:
            length = int.from_bytes(p.payload[2:4], "big")  # IPv4 total length (COPY_META gives no length)
        if not self._schedule(q, arrival, p.id, kind, payload, length, base):
            with self._lock:  # the trace's link queue is full: tail drop
                sock.verdict(p.queue, p.id, NF_DROP)
            return
        if q.duplicate and p.payload and rng.random() < q.duplicate:
            if self._schedule(q, arrival, -1, DUPLICATE, p.payload, len(p.payload), base):
                q.duplicated += 1

    # -- control: new parameters in place ----------------------------------------------------------------
    def _control_loop(self) -> None:
        while self.running:
            if self.reload_now.wait(0.5):
                self.reload_now.clear()
                if self.running:
                    self.reload()

    def reload(self) -> bool:
        """Read ``control_file`` and swap the parameters it gives, queue by queue, between two of the reader's
        batches; or refuse it whole (recorded in the report's ``params.error``). Returns whether it ran."""
        seq: Any = None
        try:
            if not self.control_file:
                raise ValueError("no control_file in the engine's config")
            with open(self.control_file) as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or set(data) - {"seq", "profile", "queues"}:
                got = sorted(data) if isinstance(data, dict) else data
                raise ValueError(f"expected {{seq, profile, queues}}, got {got!r}")
            seq = data.get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise ValueError(f"seq: {seq!r} (allowed: a whole number, 0 or more)")
            profile = data.get("profile")
            if not isinstance(profile, str):
                raise ValueError(f"profile: {profile!r} (allowed: a name)")
            given = data.get("queues")
            if not isinstance(given, dict):
                raise ValueError(f"queues: {given!r} (allowed: a mapping of queue numbers)")
            new = {}
            for num, q in given.items():
                queue = _queue_from_config(num, q)
                new[queue.num] = queue
            if set(new) != set(self.queues):
                raise ValueError(f"queues {sorted(new)} differ from the ones bound {sorted(self.queues)}")
            for num, queue in new.items():
                old = self.queues[num].running()
                fresh = queue.running()
                for key in FIXED:
                    if old.get(key) != fresh.get(key):
                        raise ValueError(f"queues.{num}.{key}: {fresh[key]!r} differs from the running {old[key]!r} "
                                         f"(it cannot change in place)")
            if any(q.duplicate for q in new.values()) and self.raw is None:
                self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except (OSError, ValueError, TypeError) as exc:
            self.params["refused"] += 1
            self.params["error"] = f"seq {seq}: {exc}" if seq is not None else str(exc)
            self.status_now.set()
            return False
        with self.params_lock:
            for num, queue in new.items():
                q = self.queues[num]
                if q.running() != queue.running():
                    for key in PARAMS:
                        setattr(q, key, getattr(queue, key))
            self.config["profile"] = profile
            self.params.update({"seq": seq, "profile": profile, "at": time.time(), "error": None})
            self.params["reloads"] += 1
        self.status_now.set()
        return True

    def _schedule(self, q: Queue, arrival: int, pid: int, kind: int, payload: bytes | None, length: int = 0,
                  base_ns: int | None = None) -> bool:
        """Give a packet its release time and queue it; False when a trace's link queue is full (drop it)."""
        due = arrival + q.sample_delay_ns(self.rng, base_ns)
        was_empty = not q.pending
        if q.link is not None:
            # after its delay the packet enters the trace's link (in order) and is released when it leaves it
            if due < q.last_ready:
                due = q.last_ready
            q.last_ready = due
            leaves = q.link.place(due, length)
            if leaves is None:
                return False
            due = leaves
        if q.reorder:
            q.seq += 1
            with q.heap_lock:
                heapq.heappush(q.pending, (due, q.seq, pid, kind, payload))
        else:
            if due < q.last_due:
                due = q.last_due
            q.last_due = due
            q.pending.append((due, pid, kind, payload))
        n = len(q.pending)
        if n > q.max_pending:
            q.max_pending = n
        if was_empty:
            self.wake.set()
        return True

    # -- releaser --------------------------------------------------------------------------------------------
    def _releaser(self) -> None:
        _tight_timer_slack()
        mono = time.monotonic_ns
        queues = list(self.queues.values())
        while self.running:
            self.wake.clear()
            now = mono()
            earliest = None
            for q in queues:
                if q.pending and self._release_due(q, now):
                    self.last_release = mono()
                if q.pending:
                    head = q.pending[0][0]
                    if earliest is None or head < earliest:
                        earliest = head
            if earliest is None:
                self.wake.wait(0.5)
                continue
            due = earliest
            wait_ns = due - mono()
            if wait_ns <= 0:
                continue
            if not self.spin_ns or due - self.last_release < SPIN_IDLE_FACTOR * self.spin_ns:
                self.wake.wait(wait_ns / 1e9)
                continue
            # sleep to spin_ns before the due time, then yield in a loop (time.sleep(0) drops the GIL, so the
            # reader keeps reading) until it is due or a new packet needs a new plan
            if wait_ns > self.spin_ns and self.wake.wait((wait_ns - self.spin_ns) / 1e9):
                continue
            self.spins += 1
            while mono() < due and not self.wake.is_set():
                time.sleep(0)

    def _release_due(self, q: Queue, horizon: int) -> int:
        """Release every packet of ``q`` due at or before ``horizon`` (monotonic ns); return how many."""
        sock = self.sock
        assert sock is not None
        pending = q.pending
        lat = q.lateness
        mono = time.monotonic_ns
        n = 0
        if q.reorder:
            while True:
                with q.heap_lock:
                    if not pending or pending[0][0] > horizon:
                        return n
                    due, _seq, pid, kind, payload = heapq.heappop(pending)
                lat.add(mono() - due)
                self._send_one(q, pid, kind, payload)
                n += 1
        last = -1
        while pending and pending[0][0] <= horizon:
            due, pid, kind, payload = pending.popleft()
            lat.add(mono() - due)
            n += 1
            if kind == ACCEPT:
                last = pid
                q.released += 1
                continue
            if last >= 0:
                with self._lock:
                    sock.verdict_batch(q.num, last, NF_ACCEPT)
                last = -1
            self._send_one(q, pid, kind, payload)
        if last >= 0:
            with self._lock:
                sock.verdict_batch(q.num, last, NF_ACCEPT)
        return n

    def _send_one(self, q: Queue, pid: int, kind: int, payload: bytes | None) -> None:
        assert self.sock is not None
        if kind == DUPLICATE:
            if self.raw is not None and payload and len(payload) >= 20:
                dst = socket.inet_ntoa(payload[16:20])
                try:
                    self.raw.sendto(payload, (dst, 0))
                except OSError:
                    pass
            return
        with self._lock:
            self.sock.verdict(q.num, pid, NF_ACCEPT, payload if kind == CORRUPT else None)
        q.released += 1

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        kstats = kernel_queue_stats()
        queues = []
        for q in self.queues.values():
            s = q.stats()
            k = kstats.get(q.num)
            if k is not None:
                s["kernel"] = {"queued": k["queue_total"], "dropped_queue_full": k["queue_dropped"],
                               "dropped_socket_full": k["user_dropped"], "id_sequence": k["id_sequence"]}
            queues.append(s)
        out = {"engine": "userspace", "pid": os.getpid(), "state": self.state, "error": self.error,
               "profile": self.config.get("profile"), "seed": self.config.get("seed"), "sched": self.sched,
               "arrival": self.arrival, "spin_us": self.spin_ns / 1000, "spins": self.spins,
               "params": dict(self.params),
               "started": self.started_wall, "updated": time.time(), "queues": queues}
        if any(q.trace is not None for q in self.queues.values()):
            out["trace"] = {"origin": getattr(self, "trace_origin_wall", None)}  # the traces' time 0 (wall clock)
        return out

    def write_status(self) -> None:
        if self.status_file:
            write_json(self.status_file, self.status())

    def _status_loop(self) -> None:
        interval = float(self.config.get("status_interval_s", 1.0))
        while self.running:
            self.status_now.wait(interval)
            self.status_now.clear()
            if self.running:
                try:
                    self.write_status()
                except OSError:
                    pass


def run_from_file(path: str) -> int:
    with open(path) as fh:
        config = json.load(fh)
    Engine(config).run()
    return 0
