"""labkit's own RTT probe: ICMP echo with kernel timestamps, microsecond resolution, lost probes as rows.

Why: iputils ping prints whole milliseconds once an RTT reaches 100 ms (``time=574 ms``), rounded to the
*nearest* millisecond, so above 100 ms the network baseline has 1 ms steps and can read up to 0.5 ms below
the real round trip. OCPP's round trip is compared with that baseline, and a sub-millisecond excess is lost
in the steps (through a 150 ms delay, ping printed 150 for all of 200 round trips this probe timed at
150.061 to 150.617 ms). This probe measures what ping measures, at nanosecond resolution, and reports
microseconds rounded *up*; ping stays the independent cross-check.

Mechanism (chosen on the merits, measured with ``benchmarks/probe_resolution.py --mechanisms``: 2-CPU VM
shared with other work (load average about 2.5), kernel 6.18, a path of two veths through a forwarding
namespace, no added delay, 3 x 200 probes of each kind, alternating):

* **ICMP echo**, answered by the target's kernel like ping, so no process on the target has to wake up:
  nothing but the network path and the two kernels is in the RTT. A datagram ICMP socket
  (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``, what unprivileged ping uses) when
  ``net.ipv4.ping_group_range`` admits the caller's group (Ubuntu's default admits everyone), else a raw
  ICMP socket (root or CAP_NET_RAW: a fresh network namespace admits no group, so this is what netns lab
  hosts use). Both give the same timestamps; the row format does not depend on the socket.
* **Kernel timestamps at both ends of the round trip.** Receive: ``SO_TIMESTAMPNS``, the time the reply
  entered this host's stack, not when this process got round to reading it. Send: ``SO_TIMESTAMPING``
  software transmit stamps (``SCM_TSTAMP_SND`` from the driver when it stamps, as veth and most NICs do,
  else ``SCM_TSTAMP_SCHED`` on entering the qdisc), read from the socket's error queue; the packet comes
  back with the stamp, so it is matched by its payload, not by counting sends. A user-space clock read
  just before ``sendto`` came 30-80 us before the kernel's transmit stamp here (Python's system-call path).

  Measured, median / p90 of the RTT (ms), and the excess over the kernel-stamped ICMP echo:

  ======================================================  ==============  ===============
  probe                                                   RTT             excess
  ======================================================  ==============  ===============
  ICMP echo, kernel send and receive stamps (this probe)  0.028 / 0.033   --
  ICMP echo, user-space clock reads (``--stamps user``)   0.100 / 0.123   +0.072 / +0.090
  iputils ping (user-space send, kernel receive)          0.055 / 0.060   +0.027 / +0.027
  UDP echo answered by a Python server process            0.144 / 0.231   +0.116 / +0.198
  ======================================================  ==============  ===============

  The UDP echo's p99 was 3.7 ms and its worst 5.4 ms (the kernel-stamped ICMP echo's: 0.049 and 0.11
  ms): the server's wake-up is in every RTT and grows with the host's load, which is the very thing OCPP
  timings are to be compared against, not contaminated by. Hence ICMP, kernel-stamped.
* **Never below the real RTT.** Every RTT is a kernel receive stamp minus a stamp taken no later than the
  packet left (kernel transmit stamp, or the user-space time just before ``sendto`` when the kernel gave
  none): a round trip through a link with added delay D cannot read below D. Both kernel stamps are
  ``CLOCK_REALTIME``; a clock step between send and reply (NTP stepping the clock) would corrupt the
  difference, so the offset between ``CLOCK_REALTIME`` and ``CLOCK_MONOTONIC`` is sampled at send and at
  receive: if it moved (more than 20 us), or the kernel RTT falls outside the monotonic user-space bracket
  (before ``sendto`` to after ``recvmsg``), the bracket is reported instead (an upper bound, counted in the
  summary as ``stamps.rtt.bracket``). Nanoseconds are rounded up to the microsecond.
* **Pacing independent of replies.** Probe i is sent at start + i x interval (monotonic clock) whatever
  happened to earlier ones; replies are read in between. A probe is lost when no reply came within
  ``wait`` seconds of its sending (a later reply is counted as ``late``, and the probe stays lost).
  Every probe sent is a row, lost ones with ``lost=1`` and no ``rtt_ms``; a probe whose ``sendto`` failed
  (no route, a firewall) is lost too, and counted in ``send_errors``.

Output: CSV in ``resultsformat.ECHO``'s columns (``src, dst, direction, seq, t_wall, rtt_ms, lost``),
one row per probe in ``seq`` order (1..count), written and flushed as each probe is settled. ``t_wall``
is when the probe was **sent** (seconds since the epoch, the kernel's transmit stamp when there is one):
unlike ping.csv's reply time, it exists for lost probes too, and the reply's time is t_wall + rtt_ms.
``rtt_ms`` has 3 decimals (microseconds). A one-line JSON summary goes to stderr at the end.

Standard library only: this runs on lab hosts. Linux only (the timestamping constants below are the
asm-generic values: x86, arm, riscv and most others; elsewhere the kernel stamps are not asked for and
user-space stamps are used, which the summary says).
"""

from __future__ import annotations

import errno
import math
import platform
import secrets
import select
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import ConfigError, LabkitError
from labkit.resultsformat import ECHO

COLUMNS = ECHO.columns

# Linux (asm-generic) socket options Python's socket module does not name
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: struct timespec of native longs
SO_TIMESTAMPING = 37  # SO_TIMESTAMPING_OLD: struct scm_timestamping { struct timespec ts[3]; }
IP_RECVERR = 11
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_TX_SCHED = 1 << 8
SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND, SCM_TSTAMP_SCHED = 0, 1
#: architectures whose socket option numbers are not asm-generic's
_OTHER_ABI = ("mips", "sparc", "parisc", "alpha", "hppa")

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
#: bytes of the payload labkit needs: an 8-byte token (this run) and a 4-byte sequence number
HEADER_BYTES = 12
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = HEADER_BYTES + 4, 65507, 56  # 56: ping's default (84-byte IP packet)
MIN_INTERVAL_S = 0.002  # ping's floor for unprivileged users
MAX_COUNT = 10_000_000
#: a move of CLOCK_REALTIME against CLOCK_MONOTONIC larger than this between send and reply is a step
STEP_NS = 20_000
SOCKETS = ("auto", "dgram", "raw")
_LONG = struct.calcsize("@l")
STAMPS = ("kernel", "user")


def validate(dst: str, count: int, interval_s: float, wait_s: float, size: int = DEFAULT_SIZE) -> str:
    """Check the options; return ``dst`` as an IPv4 address. Raises ConfigError (exit status 2)."""
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ConfigError(f"--count: {count!r} is not a whole number of probes from 1 to {MAX_COUNT}")
    if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s >= MIN_INTERVAL_S):
        raise ConfigError(f"--interval: {interval_s!r} is not a number of seconds >= {MIN_INTERVAL_S:g}")
    if not (isinstance(wait_s, (int, float)) and math.isfinite(wait_s) and 0 < wait_s <= 3600):
        raise ConfigError(f"--wait: {wait_s!r} is not a number of seconds above 0 (at most 3600)")
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"--size: {size!r} is not a payload size in bytes from {MIN_SIZE} to {MAX_SIZE}")
    try:
        infos = socket.getaddrinfo(dst, None, socket.AF_INET, socket.SOCK_RAW)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ConfigError(f"destination {dst!r}: not an IPv4 address or a name that resolves to one "
                          f"({exc})") from None
    return infos[0][4][0]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _clock_pair() -> tuple[int, int]:
    """(CLOCK_REALTIME ns, CLOCK_REALTIME - CLOCK_MONOTONIC ns), the two read as close together as we can."""
    best = None
    for _ in range(3):
        m0 = time.monotonic_ns()
        r = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, r, r - (m0 + m1) // 2)
        if m1 - m0 < 5_000:
            break
    assert best is not None
    return best[1], best[2]


@dataclass
class Probe:
    """One probe's stamps (nanoseconds); what it became is decided by ``rtt_ns``."""

    seq: int
    mono_send: int = 0  # CLOCK_MONOTONIC just before sendto
    real_send: int = 0  # CLOCK_REALTIME just before sendto
    offset_send: int = 0  # REALTIME - MONOTONIC at send
    tx_snd: int | None = None  # kernel transmit stamp from the driver
    tx_sched: int | None = None  # kernel transmit stamp on entering the qdisc
    rx_kernel: int | None = None  # kernel receive stamp of the reply
    rx_user: int | None = None  # CLOCK_REALTIME after recvmsg returned
    mono_recv: int | None = None
    offset_recv: int | None = None
    send_error: str | None = None
    answered: bool = False
    key: int | None = None  # the kernel's timestamping key (OPT_ID) of its send

    def t_send(self) -> int:
        """The latest stamp known to be no later than the packet left: kernel's, else user space's."""
        if self.tx_snd is not None:
            return self.tx_snd
        if self.tx_sched is not None:
            return self.tx_sched
        return self.real_send

    def rtt(self) -> tuple[int, str]:
        """(RTT ns, how it was measured): ``kernel`` (kernel or user stamps on one clock) or ``bracket``."""
        assert self.answered and self.mono_recv is not None and self.offset_recv is not None
        rx = self.rx_kernel if self.rx_kernel is not None else self.rx_user
        assert rx is not None
        stamped = rx - self.t_send()
        bracket = self.mono_recv - self.mono_send
        if abs(self.offset_recv - self.offset_send) > STEP_NS or not 0 <= stamped <= bracket:
            return bracket, "bracket"  # the wall clock moved between send and reply: the monotonic bound
        return stamped, "kernel"


def rtt_ms_text(ns: int) -> str:
    """Nanoseconds as milliseconds with 3 decimals, rounded up to the microsecond (never below)."""
    us = -(-ns // 1000)
    return f"{us // 1000}.{us % 1000:03d}"


@dataclass
class Stats:
    sent: int = 0
    received: int = 0
    late: int = 0
    duplicates: int = 0
    send_errors: int = 0
    first_send_error: str = ""
    tx: dict[str, int] = field(default_factory=lambda: {"driver": 0, "sched": 0, "user": 0})
    rx: dict[str, int] = field(default_factory=lambda: {"kernel": 0, "user": 0})
    rtt: dict[str, int] = field(default_factory=lambda: {"kernel": 0, "bracket": 0})
    send_late_max_ns: int = 0


class Prober:
    """An ICMP echo prober toward one IPv4 address. ``run`` sends ``count`` probes and settles each."""

    def __init__(self, dst: str, *, size: int = DEFAULT_SIZE, sock: str = "auto", stamps: str = "kernel"):
        if sock not in SOCKETS:
            raise ConfigError(f"--socket: {sock!r} is not one of {', '.join(SOCKETS)}")
        if stamps not in STAMPS:
            raise ConfigError(f"--stamps: {stamps!r} is not one of {', '.join(STAMPS)}")
        self.dst = dst
        self.size = size
        self.token = secrets.token_bytes(8)
        self.ident = secrets.randbits(16)  # raw sockets: ours to choose (datagram sockets: the kernel's)
        self.kind, self.sock = self._open(sock)
        self.kernel_rx = self.kernel_tx = False
        if stamps == "kernel" and not platform.machine().lower().startswith(_OTHER_ABI):
            self._ask_for_stamps()
        self.stats = Stats()

    def _open(self, which: str) -> tuple[str, socket.socket]:
        errors = []
        for kind, st in (("dgram", socket.SOCK_DGRAM), ("raw", socket.SOCK_RAW)):
            if which not in ("auto", kind):
                continue
            try:
                return f"icmp-{kind}", socket.socket(socket.AF_INET, st, socket.IPPROTO_ICMP)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
                    raise LabkitError(f"echo: cannot open an ICMP socket: {exc.strerror}") from None
                errors.append(kind)
        why = {"dgram": "datagram ICMP sockets are not allowed for this user's groups "
                        "(sysctl net.ipv4.ping_group_range)",
               "raw": "raw ICMP sockets need root or CAP_NET_RAW"}
        raise LabkitError("echo: cannot open an ICMP socket: " + "; ".join(why[k] for k in errors))

    def _ask_for_stamps(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_rx = True
        except OSError:
            pass
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING,
                                 SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_TX_SCHED
                                 | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID)
            self.kernel_tx = True
        except OSError:
            pass

    # -- packets --------------------------------------------------------------------------------------
    def _packet(self, seq: int) -> bytes:
        payload = self.token + struct.pack("!I", seq) + bytes(self.size - HEADER_BYTES)
        head = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, self.ident, seq & 0xFFFF)
        if self.kind == "icmp-dgram":
            return head + payload  # the kernel sets the identifier and the checksum
        return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(head + payload), self.ident,
                           seq & 0xFFFF) + payload

    def _reply_seq(self, data: bytes) -> int | None:
        """The sequence number of one of our echo replies, or None for anything else."""
        off = 0
        if self.kind == "icmp-raw":
            if len(data) < 20:
                return None
            off = (data[0] & 0x0F) * 4
        if len(data) < off + 8 + HEADER_BYTES:
            return None
        typ, code, _ck, ident, _seq = struct.unpack_from("!BBHHH", data, off)
        if typ != ICMP_ECHO_REPLY or code != 0 or (self.kind == "icmp-raw" and ident != self.ident):
            return None
        if data[off + 8: off + 16] != self.token:
            return None
        return struct.unpack_from("!I", data, off + 16)[0]

    # -- the run --------------------------------------------------------------------------------------
    def run(self, count: int, interval_s: float, wait_s: float,
            emit: Callable[[int, Probe | None, str], None]) -> Stats:
        """Send ``count`` probes paced at ``interval_s``; call ``emit(seq, probe, outcome)`` in seq order,
        outcome ``ok`` or ``lost``. Returns the run's counters. On KeyboardInterrupt the probes already sent
        are settled (answered or lost) and emitted before it propagates."""
        interval_ns, wait_ns = int(round(interval_s * 1e9)), int(round(wait_s * 1e9))
        self._probes: dict[int, Probe] = {}
        self._by_key: dict[int, int] = {}  # timestamping key -> seq (when the kernel returns no packet data)
        self._settled = bytearray(count + 1)  # per seq: 0 pending, 1 answered, 2 lost
        probes = self._probes
        next_key = 0
        next_emit = 1
        st = self.stats
        start = time.monotonic_ns()
        addr = (self.dst, 0)
        seq = 1

        def settle(p: Probe, outcome: str) -> None:
            nonlocal next_emit
            emit(p.seq, p, outcome)
            self._settled[p.seq] = 1 if outcome == "ok" else 2
            del probes[p.seq]
            if p.key is not None:
                self._by_key.pop(p.key, None)
            next_emit += 1

        try:
            while next_emit <= count:
                now = time.monotonic_ns()
                if seq <= count and now >= start + (seq - 1) * interval_ns:
                    p = probes[seq] = Probe(seq)
                    st.send_late_max_ns = max(st.send_late_max_ns, now - (start + (seq - 1) * interval_ns))
                    pkt = self._packet(seq)
                    p.real_send, p.offset_send = _clock_pair()
                    p.mono_send = time.monotonic_ns()
                    try:
                        self.sock.sendto(pkt, addr)
                        st.sent += 1
                        p.key = next_key
                        self._by_key[next_key] = seq
                        next_key += 1
                    except OSError as exc:
                        p.send_error = exc.strerror or str(exc)
                        st.send_errors += 1
                        st.first_send_error = st.first_send_error or p.send_error
                    seq += 1
                    continue  # probes are due on the clock, whatever became of the earlier ones
                # sleep until the next send, the oldest unsettled probe's deadline, or a packet
                due = [start + (seq - 1) * interval_ns] if seq <= count else []
                if next_emit in probes:
                    due.append(probes[next_emit].mono_send + wait_ns)
                timeout = max(0.0, (min(due) - now) / 1e9) if due else 0.0
                readable, _, _ = select.select([self.sock], [], [], timeout)
                if readable:
                    self._drain_errqueue()
                    self._drain_replies(wait_ns)
                    self._drain_errqueue()
                now = time.monotonic_ns()
                while next_emit < seq:
                    p = probes[next_emit]
                    expired = now > p.mono_send + wait_ns
                    stamped = p.tx_snd is not None or p.tx_sched is not None or not self.kernel_tx
                    if p.answered and (stamped or expired):
                        settle(p, "ok")
                    elif p.send_error is not None or expired:
                        settle(p, "lost")
                    else:
                        break
        except KeyboardInterrupt:
            # the probes sent and not yet settled are rows too (lost unless answered); unsent ones are not
            while next_emit < seq:
                p = probes[next_emit]
                settle(p, "ok" if p.answered else "lost")
            raise
        return st

    def _drain_replies(self, wait_ns: int) -> None:
        probes = self._probes
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(self.size + 128, 256, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a pending ICMP error reported on the socket, not a reply; the queue is read next time
            rx_user, offset = _clock_pair()
            mono = time.monotonic_ns()
            seq = self._reply_seq(data)
            if seq is None or seq >= len(self._settled):
                continue
            p = probes.get(seq)
            if p is None or p.answered:
                # a second reply to an answered probe is a duplicate; one to a probe given up is late
                if p is not None or self._settled[seq] == 1:
                    self.stats.duplicates += 1
                elif self._settled[seq] == 2:
                    self.stats.late += 1
                continue
            rx_kernel = None
            for level, typ, blob in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(blob) >= 2 * _LONG:
                    sec, nsec = struct.unpack_from("@ll", blob)
                    rx_kernel = sec * 1_000_000_000 + nsec
            rx = rx_kernel if rx_kernel is not None else rx_user
            if mono - p.mono_send > wait_ns and rx - p.t_send() > wait_ns:
                self.stats.late += 1  # after its deadline (read before the deadline was noticed): still lost
                continue
            p.rx_kernel, p.rx_user, p.mono_recv, p.offset_recv = rx_kernel, rx_user, mono, offset
            p.answered = True

    def _drain_errqueue(self) -> None:
        if not self.kernel_tx:
            return
        probes, by_key = self._probes, self._by_key
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(256, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            stamp = kind = key = None
            for level, typ, blob in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPING and len(blob) >= 2 * _LONG:
                    sec, nsec = struct.unpack_from("@ll", blob)  # ts[0]: the software stamp
                    stamp = sec * 1_000_000_000 + nsec
                elif level == socket.IPPROTO_IP and typ == IP_RECVERR and len(blob) >= 16:
                    _errno, origin, _t, _c, _pad, info, ee_data = struct.unpack_from("=IBBBBII", blob)
                    if origin == SO_EE_ORIGIN_TIMESTAMPING:
                        kind, key = info, ee_data
            if stamp is None or kind not in (SCM_TSTAMP_SND, SCM_TSTAMP_SCHED) or stamp == 0:
                continue
            # the packet itself comes back (net.core.tstamp_allow_data=1, the default): find our token in it
            seq = None
            at = data.find(self.token)
            if at >= 0 and len(data) >= at + 12:
                seq = struct.unpack_from("!I", data, at + 8)[0]
            elif key is not None:
                seq = by_key.get(key)
            p = probes.get(seq) if seq is not None else None
            if p is None:
                continue
            if kind == SCM_TSTAMP_SND:
                p.tx_snd = stamp
            else:
                p.tx_sched = stamp

    def close(self) -> None:
        self.sock.close()



def format_row(src: str, dst: str, direction: str, seq: int, probe: Probe | None, outcome: str,
               stats: Stats) -> dict[str, Any]:
    """A CSV row (strings) for one settled probe; updates the counters of which stamps were used."""
    row: dict[str, Any] = {"src": src, "dst": dst, "direction": direction, "seq": seq, "t_wall": "",
                           "rtt_ms": "", "lost": 1}
    if probe is None:
        return row
    t = probe.t_send()
    row["t_wall"] = f"{t // 1_000_000_000}.{t % 1_000_000_000 // 1000:06d}"
    if outcome == "ok" and probe.answered:
        ns, how = probe.rtt()
        row.update(rtt_ms=rtt_ms_text(ns), lost=0)
        stats.received += 1
        stats.tx["driver" if probe.tx_snd is not None else "sched" if probe.tx_sched is not None else "user"] += 1
        stats.rx["kernel" if probe.rx_kernel is not None else "user"] += 1
        stats.rtt[how] += 1
    return row


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A small summary of probe rows (ping's or echo's), from the rows alone; RTTs in ms, loss in %.

    Keys as pingparsing's ``as_dict()`` (what ping/*.json held), plus ``rtt_median`` and ``rtt_p90``:
    ``packet_transmit`` counts every probe row (lost ones included), ``rtt_mdev`` is the population standard
    deviation (ping's mdev). Duplicates are not in the rows: the caller adds them."""
    rows = list(rows)
    rtts = sorted(float(r["rtt_ms"]) for r in rows if str(r.get("lost")) in ("0", "0.0") and r["rtt_ms"] != "")
    n, got = len(rows), len(rtts)
    out: dict[str, Any] = {"packet_transmit": n, "packet_receive": got, "packet_loss_count": n - got,
                           "packet_loss_rate": round(100.0 * (n - got) / n, 6) if n else None,
                           "rtt_min": None, "rtt_avg": None, "rtt_max": None, "rtt_mdev": None,
                           "rtt_median": None, "rtt_p90": None}
    if got:
        mean = sum(rtts) / got
        mid = got // 2
        out.update(rtt_min=rtts[0], rtt_avg=round(mean, 6), rtt_max=rtts[-1],
                   rtt_mdev=round(math.sqrt(max(0.0, sum(x * x for x in rtts) / got - mean * mean)), 6),
                   rtt_median=rtts[mid] if got % 2 else round((rtts[mid - 1] + rtts[mid]) / 2, 6),
                   rtt_p90=rtts[min(got - 1, math.ceil(0.9 * got) - 1)])
    out["units"] = {"rtt_*": "ms", "packet_loss_rate": "%"}
    return out


def run(dst: str, *, count: int, interval_s: float, wait_s: float, size: int = DEFAULT_SIZE,
        src_name: str = "", dst_name: str = "", direction: str = "", sock: str = "auto", stamps: str = "kernel",
        write_row: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Validate, probe, hand every row to ``write_row`` in seq order; return the run's summary (stderr JSON).

    SIGTERM ends the run like Ctrl-C: the probes already sent are still rows."""
    addr = validate(dst, count, interval_s, wait_s, size)
    prober = Prober(addr, size=size, sock=sock, stamps=stamps)
    rows: list[dict[str, Any]] = []
    src_name = src_name or socket.gethostname()
    dst_name = dst_name or dst

    def emit(seq: int, probe: Probe | None, outcome: str) -> None:
        row = format_row(src_name, dst_name, direction, seq, probe, outcome, prober.stats)
        rows.append(row)
        write_row(row)

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    interrupted = False
    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        stats = prober.run(count, interval_s, wait_s, emit)
    except KeyboardInterrupt:
        interrupted, stats = True, prober.stats
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        prober.close()
    summary = summarize(rows)
    summary.update({
        "destination": addr, "socket": prober.kind, "size_bytes": size, "count": count, "interval_s": interval_s,
        "wait_s": wait_s, "sent": stats.sent, "late": stats.late, "packet_duplicate_count": stats.duplicates,
        "send_errors": stats.send_errors, "first_send_error": stats.first_send_error,
        "stamps": {"asked": stamps, "kernel_tx": prober.kernel_tx, "kernel_rx": prober.kernel_rx,
                   "tx": stats.tx, "rx": stats.rx, "rtt": stats.rtt},
        "send_late_max_ms": round(stats.send_late_max_ns / 1e6, 3), "interrupted": interrupted,
    })
    return summary


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
