"""Recorded link traces: the two formats labkit reads, checked line by line, as steps of rate, delay and loss.

**Mahimahi** (``mm-link``'s format, Netravali et al., USENIX ATC 2015): one line per *delivery opportunity*,
the time in whole milliseconds at which the link may deliver one packet of up to 1504 bytes (the TUN payload
Mahimahi counts), several lines with the same time for several packets in that millisecond. Times never
decrease, and the trace repeats with a period of its last time, which must be above 0. labkit refuses what
mm-link refuses (an empty line, a line that is not a whole number, a decreasing time, no line at all, a
last time of 0) with the file and line. labkit maps one opportunity to one full-size Ethernet frame (1514
bytes, what HTB counts: ``labkit.linkbounds.FRAME_BYTES``), which keeps the trace's packet rate:
``rate = opportunities per second x 1514 x 8`` bit/s.

**CSV**: a header ``time_s,rate_bit_per_s,delay_ms,loss_pct`` and one row per step: from ``time_s`` on the
link has that rate, one-way delay and random loss, until the next row; the first row is at time 0, times
increase strictly, and the last row holds until stopped (a CSV trace plays once). Values are plain numbers in
the units the header names, within a profile's bounds (``labkit.profiles``): rate 1 kbit/s to 100 Gbit/s,
delay 0 to 60 s in whole microseconds, loss 0 to 100 %.

``load`` reads either (``fmt`` or the file's extension, else the first line decides); every mistake is one
ConfigError ``file:line: field: problem`` (exit status 2). ``steps`` turns a trace into the steps a
schedule of changes would apply (a Mahimahi trace binned, ``bin_ms`` per step).

Applied to a link (a profile's ``trace:``): ``TraceRef`` is a trace as a profile names it (a shipped name or a
file, its format, digest and figures); ``MahimahiLink`` and ``CsvLink`` are the pure per-packet models the
userspace engine runs (``labkit.nfq.engine``): given when a packet is ready to enter the link (after its delay)
and its length, when it leaves, or None when the link's queue is full (tail drop). ``netem_steps`` is the
sequence of steps the netem engine's change loop applies (``labkit.tracefollow``). ``shipped_texts``
regenerates the traces shipped in ``labkit/data/traces`` byte for byte from their seeded models.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import re
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError
from labkit.linkbounds import DELAY_MAX_MS, FRAME_BYTES, RATE_MAX_BPS, RATE_MIN_BPS

FORMATS = ("mahimahi", "csv")
CSV_HEADER = ("time_s", "rate_bit_per_s", "delay_ms", "loss_pct")
#: what mm-link delivers per opportunity (bytes)
MAHIMAHI_PACKET_BYTES = 1504
#: the largest time a line may give (ms): mm-link reads 64-bit numbers; a year is far beyond any trace
MAHIMAHI_MAX_MS = 365 * 24 * 3600 * 1000
#: a trace file larger than this is refused before it is read (a year of 100 Mbit/s is far smaller per line)
MAX_BYTES = 512 << 20
_INT_RE = re.compile(r"^[0-9]+$")
_NUM_RE = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


@dataclass(frozen=True)
class Step:
    """From ``start_s`` on (until the next step): this rate (bit/s, Ethernet frames), delay (ms) and loss (%)."""

    start_s: float
    rate_bps: float
    delay_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class MahimahiTrace:
    source: str
    opportunities: array  # ms of each delivery opportunity, non-decreasing

    fmt = "mahimahi"

    @property
    def period_ms(self) -> int:
        return int(self.opportunities[-1])

    def packets_per_s(self) -> float:
        """The mean number of full-size packets per second over one period."""
        return len(self.opportunities) * 1000.0 / self.period_ms

    def rate_bps(self) -> float:
        """The mean rate over one period, in labkit's bit/s (one full-size Ethernet frame per opportunity)."""
        return self.packets_per_s() * FRAME_BYTES * 8

    def counts(self, bin_ms: int) -> list[int]:
        """Opportunities per bin of ``bin_ms`` over one period: bin i holds the times in (i x bin, (i + 1) x
        bin] ms (the last bin may be shorter), as a trace runs from just after 0 to its period. An opportunity
        at 0 is one at the period (the trace repeats): it counts in the last bin."""
        n_bins = math.ceil(self.period_ms / bin_ms)
        out = [0] * n_bins
        for ms in self.opportunities:
            out[(int(ms) - 1) // bin_ms if ms else n_bins - 1] += 1
        return out

    def steps(self, bin_ms: int = 1000) -> list[Step]:
        """One step per bin: the rate the bin's opportunities give (no delay, no loss of their own)."""
        _check_bin(bin_ms)
        out = []
        for i, n in enumerate(self.counts(bin_ms)):
            width = min(bin_ms, self.period_ms - i * bin_ms)
            out.append(Step(start_s=i * bin_ms / 1000.0, rate_bps=n * FRAME_BYTES * 8 * 1000.0 / width))
        return out


@dataclass(frozen=True)
class CsvTrace:
    source: str
    rows: tuple[Step, ...]

    fmt = "csv"

    def steps(self, bin_ms: int = 1000) -> list[Step]:  # noqa: ARG002 - already steps
        return list(self.rows)


Trace = MahimahiTrace | CsvTrace


def _check_bin(bin_ms: int) -> None:
    if isinstance(bin_ms, bool) or not isinstance(bin_ms, int) or not 1 <= bin_ms <= 3_600_000:
        raise ConfigError(f"bin: {bin_ms!r} (allowed: 1 to 3600000 ms)")


def _text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{path}: trace: {size} bytes (allowed: at most {MAX_BYTES >> 20} MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: trace: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: trace: is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: trace: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError.at("trace", f"not UTF-8 text (byte 0x{data[exc.start]:02x})", file=str(path),
                             line=line) from None


def _lines(text: str) -> list[str]:
    """The file's lines; a final newline does not make an empty last line (a Windows \\r\\n ends a line too)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_mahimahi(text: str, source: str) -> MahimahiTrace:
    lines = _lines(text)
    if not lines:
        raise ConfigError.at("trace", "empty: a Mahimahi trace has one delivery opportunity (whole ms) a line",
                             file=source, line=1)
    ops = array("Q")
    last = 0
    for i, line in enumerate(lines, start=1):
        value = line.strip()
        if not value:
            raise ConfigError.at("trace", "an empty line (allowed: one whole number of ms a line, as mm-link)",
                                 file=source, line=i)
        if not _INT_RE.match(value):
            raise ConfigError.at("trace", f"{_show(value)} is not a whole number of milliseconds (allowed: 0 to "
                                 f"{MAHIMAHI_MAX_MS})", file=source, line=i)
        ms = int(value)
        if ms > MAHIMAHI_MAX_MS:
            raise ConfigError.at("trace", f"{ms} ms (allowed: 0 to {MAHIMAHI_MAX_MS}, a year)", file=source, line=i)
        if ms < last:
            raise ConfigError.at("trace", f"{ms} ms after {last} ms: not monotonic (times must not decrease)",
                                 file=source, line=i)
        ops.append(ms)
        last = ms
    if last == 0:
        raise ConfigError.at("trace", "every time is 0 ms: a trace must last for a nonzero amount of time (its "
                             "period is its last time)", file=source, line=len(lines))
    return MahimahiTrace(source=source, opportunities=ops)


def _number(value: str, column: str, source: str, line: int, low: float, high: float, allowed: str) -> float:
    v = value.strip()
    if not _NUM_RE.match(v):
        raise ConfigError.at(column, f"{_show(v)} is not a number (allowed: {allowed})", file=source, line=line)
    x = float(v)
    if not math.isfinite(x) or not low <= x <= high:
        raise ConfigError.at(column, f"{v} (allowed: {allowed})", file=source, line=line)
    return x


def parse_csv(text: str, source: str) -> CsvTrace:
    lines = _lines(text)
    if not lines or not lines[0].strip():
        raise ConfigError.at("header", f"empty: a CSV trace starts with the header {','.join(CSV_HEADER)}",
                             file=source, line=1)
    header = tuple(c.strip() for c in lines[0].split(","))
    if header != CSV_HEADER:
        raise ConfigError.at("header", f"{_show(lines[0].strip())} (allowed: exactly {','.join(CSV_HEADER)})",
                             file=source, line=1)
    rows: list[Step] = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise ConfigError.at("row", "an empty line (allowed: one step a line)", file=source, line=i)
        cells = line.split(",")
        if len(cells) != len(CSV_HEADER):
            raise ConfigError.at("row", f"{len(cells)} columns (allowed: {len(CSV_HEADER)}: {','.join(CSV_HEADER)})",
                                 file=source, line=i)
        t = _number(cells[0], "time_s", source, i, 0, 365 * 24 * 3600.0, "0 to a year of seconds")
        rate = _number(cells[1], "rate_bit_per_s", source, i, RATE_MIN_BPS, RATE_MAX_BPS,
                       f"{RATE_MIN_BPS} to {RATE_MAX_BPS} bit/s")
        delay = _number(cells[2], "delay_ms", source, i, 0, DELAY_MAX_MS, f"0 to {DELAY_MAX_MS:g} ms")
        if abs(delay * 1000 - round(delay * 1000)) > 1e-6 * max(1.0, delay * 1000):
            raise ConfigError.at("delay_ms", f"{cells[2].strip()} is not a whole number of microseconds (allowed: 0 "
                                 f"to {DELAY_MAX_MS:g} ms, in whole microseconds)", file=source, line=i)
        loss = _number(cells[3], "loss_pct", source, i, 0, 100, "0 to 100")
        if not rows and t != 0:
            raise ConfigError.at("time_s", f"the first step is at {cells[0].strip()} s (allowed: 0: a trace starts "
                                 f"at its beginning)", file=source, line=i)
        if rows and t <= rows[-1].start_s:
            raise ConfigError.at("time_s", f"{cells[0].strip()} s after {rows[-1].start_s:g} s: not monotonic "
                                 f"(times must increase)", file=source, line=i)
        rows.append(Step(start_s=t, rate_bps=rate, delay_ms=delay, loss_pct=loss))
    if not rows:
        raise ConfigError.at("row", "no steps after the header (a trace needs at least one)", file=source,
                             line=1)
    return CsvTrace(source=source, rows=tuple(rows))


def _show(value: str) -> str:
    """A value for an error message: quoted, and cut when long (the input may be anything)."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def load(path: str | Path, fmt: str | None = None) -> Trace:
    """A trace file: ``fmt`` (``mahimahi`` or ``csv``), else ``.csv`` means CSV, else the first line decides
    (the CSV header, or a whole number for Mahimahi); anything else is an unknown format (ConfigError)."""
    path = Path(path)
    source = str(path)
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"{source}: trace: unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
    text = _text(path)
    if fmt is None:
        first = next((ln.strip() for ln in _lines(text)), "")
        if path.suffix.lower() == ".csv" or first.replace(" ", "").startswith("time_s,"):
            fmt = "csv"
        elif _INT_RE.match(first) or not text:
            fmt = "mahimahi"
        else:
            raise ConfigError.at("trace", f"unknown format: the first line {_show(first)} is neither a Mahimahi "
                                 f"delivery time (a whole number of ms) nor the CSV header "
                                 f"{','.join(CSV_HEADER)}", file=source, line=1)
    return parse_csv(text, source) if fmt == "csv" else parse_mahimahi(text, source)


# -- generated traces -----------------------------------------------------------------------------------------------
def mahimahi_lines(segments: Iterable[tuple[float, float]]) -> list[int]:
    """A Mahimahi trace of constant-rate segments, ``(seconds, bit/s)`` each, one after the other. The model:
    a link that serves full-size packets at a steady rate and changes rate at the segments' boundaries. A
    segment of ``s`` seconds at ``R`` bit/s has ``n = round(R / (1514 x 8) x s)`` opportunities (full-size
    frames, as labkit counts a rate), evenly spaced: the k-th (k = 1 .. n) at ``start + floor(k x span / n)``
    ms, so the last is at the segment's end and the trace's last time is its length (its period)."""
    out: list[int] = []
    start_ms = 0
    for seconds, rate in segments:
        end_ms = start_ms + round(seconds * 1000)
        n = round(rate / (FRAME_BYTES * 8) * seconds) if seconds > 0 else 0
        if end_ms <= start_ms or n < 1 or not RATE_MIN_BPS <= rate <= RATE_MAX_BPS:
            raise ValueError(f"segment ({seconds!r} s, {rate!r} bit/s): allowed at least 1 ms, at least one "
                             f"full-size frame, and {RATE_MIN_BPS} to {RATE_MAX_BPS} bit/s")
        span = end_ms - start_ms
        out.extend(start_ms + (k * span) // n for k in range(1, n + 1))
        start_ms = end_ms
    return out


# -- a trace as a profile names it -----------------------------------------------------------------------------------
#: where the shipped traces live (inside the package, so they travel in the wheel)
SHIPPED_DIR = Path(__file__).resolve().parent / "data" / "traces"
#: a shipped trace's file: <name>.trace (Mahimahi) or <name>.csv
SHIPPED_SUFFIX = {".trace": "mahimahi", ".csv": "csv"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+-]*(?:\.[a-z0-9+-]+)*$")
NAME_RULE = "lowercase letters, digits, '-', '+' and single dots, at most 64 characters, never a path"
#: the netem engine follows a Mahimahi trace as rate steps of this many ms (labkit.tracefollow)
NETEM_BIN_MS = 100
#: bytes of IP packet one Mahimahi delivery opportunity carries (one full-size frame, FRAME_BYTES, on the wire)
OPPORTUNITY_BYTES = FRAME_BYTES - 14
#: Ethernet header bytes a rate counts on top of an IP packet (labkit's rates count frames, as HTB does)
ETH_HEADER_BYTES = 14


def shipped_names() -> list[str]:
    """The names of the traces shipped with labkit."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.stem for p in SHIPPED_DIR.iterdir() if p.suffix in SHIPPED_SUFFIX)


def shipped_path(name: str) -> Path:
    """The file of the shipped trace ``name``; a name is a name, never a path (ValueError otherwise, or when
    there is no such trace)."""
    if not isinstance(name, str) or len(name) > 64 or not NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a shipped trace's name ({NAME_RULE}; a file of your own is written "
                         f"trace: {{file: PATH}})")
    for suffix in SHIPPED_SUFFIX:
        p = SHIPPED_DIR / f"{name}{suffix}"
        if p.is_file():
            return p
    known = ", ".join(shipped_names()) or "none"
    raise ValueError(f"no shipped trace named {name!r} (shipped: {known}; a file of your own is written "
                     f"trace: {{file: PATH}})")


@dataclass(frozen=True)
class TraceRef:
    """A trace as a profile's direction uses it: what was written, the file it resolved to, and its figures."""

    written: str  # the shipped name, or the file as written
    name: str  # the shipped name, or the file's name
    path: str  # the file on this machine (absolute)
    fmt: str  # mahimahi or csv
    sha256: str  # of the file's bytes: the engine checks the copy it is given
    loop: bool  # Mahimahi traces repeat (as mm-link does); a CSV trace plays once and its last step holds
    period_s: float  # Mahimahi: its period; CSV: the start of its last step
    first_rate_bps: float  # the first step's rate (netem: the HTB class starts there)
    mean_rate_bps: float  # over one period (CSV: time-weighted up to its last step, or the only step's)
    max_rate_bps: float  # the fastest second (Mahimahi) or step (CSV): sizes the queue and the delay line
    max_delay_ms: float = 0.0  # CSV: its longest delay
    has_delay: bool = False  # CSV: some step has a delay
    has_loss: bool = False  # CSV: some step has loss
    shipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceRef:
        return cls(**d)


_CACHE: dict[tuple, Trace] = {}


def load_cached(path: str | Path, fmt: str | None = None) -> Trace:
    """``load``, remembered by the file's path, size and modification time (profiles are read often)."""
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns, fmt)
    except OSError:
        return load(p, fmt)
    if key not in _CACHE:
        _CACHE[key] = load(p, fmt)
    return _CACHE[key]


def ref_for(trace: Trace, *, written: str, name: str, path: Path, shipped: bool) -> TraceRef:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if isinstance(trace, MahimahiTrace):
        per_s = [s.rate_bps for s in trace.steps(1000)]
        return TraceRef(written=written, name=name, path=str(path), fmt="mahimahi", sha256=digest, loop=True,
                        period_s=trace.period_ms / 1000.0,
                        first_rate_bps=netem_steps(trace)[0].rate_bps, mean_rate_bps=trace.rate_bps(),
                        max_rate_bps=max(per_s), shipped=shipped)
    rows = trace.rows
    last = rows[-1].start_s
    if last > 0:
        mean = sum(a.rate_bps * (b.start_s - a.start_s) for a, b in zip(rows, rows[1:], strict=False)) / last
    else:
        mean = rows[0].rate_bps
    return TraceRef(written=written, name=name, path=str(path), fmt="csv", sha256=digest, loop=False,
                    period_s=last, first_rate_bps=rows[0].rate_bps, mean_rate_bps=mean,
                    max_rate_bps=max(r.rate_bps for r in rows), max_delay_ms=max(r.delay_ms for r in rows),
                    has_delay=any(r.delay_ms for r in rows), has_loss=any(r.loss_pct for r in rows),
                    shipped=shipped)


def netem_steps(trace: Trace, bin_ms: int = NETEM_BIN_MS) -> list[Step]:
    """The steps the netem engine applies one after the other: a CSV trace's rows; a Mahimahi trace's rate
    per ``bin_ms`` (a bin without an opportunity runs at the lowest rate tc can hold, RATE_MIN_BPS: HTB has no
    rate of 0), consecutive bins of the same rate merged into one step."""
    if isinstance(trace, CsvTrace):
        return list(trace.rows)
    out: list[Step] = []
    for s in trace.steps(bin_ms):
        rate = max(float(RATE_MIN_BPS), s.rate_bps)
        if out and out[-1].rate_bps == rate:
            continue
        out.append(Step(start_s=s.start_s, rate_bps=rate))
    return out


# -- the per-packet models the userspace engine runs ----------------------------------------------------------------
class MahimahiLink:
    """A link that delivers only at a Mahimahi trace's opportunities, from ``origin_ns`` (monotonic) on, the
    trace repeating with its period. Each opportunity carries up to OPPORTUNITY_BYTES of IP packets (one
    full-size frame): several small packets share one, a packet waits for the next opportunity when the
    current one has too little left, and what an opportunity does not carry is lost (as in mm-link). Packets
    leave in order; at most ``queue_pkts`` wait for the link (the bottleneck queue): one more is dropped."""

    def __init__(self, trace: MahimahiTrace, origin_ns: int, queue_pkts: int):
        self.ops = trace.opportunities
        self.n = len(self.ops)
        self.period_ns = trace.period_ms * 1_000_000
        self.origin_ns = origin_ns
        self.queue_pkts = queue_pkts
        self.cur: tuple[int, int] | None = None  # (cycle, index) of the last opportunity used
        self.credit = 0  # bytes it has left
        self.waiting: deque[int] = deque()  # departure times of the packets on the link
        self.dropped = 0
        self.used = 0  # opportunities used

    def time_of(self, pos: tuple[int, int]) -> int:
        return self.origin_ns + pos[0] * self.period_ns + int(self.ops[pos[1]]) * 1_000_000

    def _next(self, pos: tuple[int, int]) -> tuple[int, int]:
        return (pos[0], pos[1] + 1) if pos[1] + 1 < self.n else (pos[0] + 1, 0)

    def first_at_or_after(self, t_ns: int) -> tuple[int, int]:
        rel = t_ns - self.origin_ns
        if rel <= 0:
            return (0, 0)
        cycle, off = divmod(rel, self.period_ns)
        i = bisect.bisect_left(self.ops, -(-off // 1_000_000))
        return (cycle, i) if i < self.n else (cycle + 1, 0)

    def place(self, ready_ns: int, length: int) -> int | None:
        """When a packet of ``length`` bytes (IP) ready at ``ready_ns`` leaves; None: the queue is full."""
        waiting = self.waiting
        while waiting and waiting[0] <= ready_ns:
            waiting.popleft()
        if len(waiting) >= self.queue_pkts:
            self.dropped += 1
            return None
        if self.cur is not None and self.credit >= length and self.time_of(self.cur) >= ready_ns:
            self.credit -= length
            t = self.time_of(self.cur)
        else:
            pos = self.first_at_or_after(ready_ns)
            if self.cur is not None and pos <= self.cur:
                pos = self._next(self.cur)
            need = length - OPPORTUNITY_BYTES
            self.used += 1
            while need > 0:  # a packet larger than one opportunity takes several
                pos = self._next(pos)
                need -= OPPORTUNITY_BYTES
                self.used += 1
            self.cur, self.credit = pos, -need
            t = self.time_of(pos)
        waiting.append(t)
        return t

    def position(self, now_ns: int) -> dict[str, Any]:
        rel = max(0, now_ns - self.origin_ns)
        cycle, off = divmod(rel, self.period_ns)
        return {"loop": int(cycle), "position_s": off / 1e9, "period_s": self.period_ns / 1e9,
                "opportunities_used": self.used, "dropped_queue_full": self.dropped, "backlog": len(self.waiting),
                "queue_pkts": self.queue_pkts}


class CsvLink:
    """A link whose rate, delay and loss follow a CSV trace's steps from ``origin_ns`` (monotonic) on; the last
    step holds. Packets are serialised at the rate in force when they start (counting the Ethernet header, as
    labkit's rates do), in order; at most ``queue_pkts`` wait (one more is dropped)."""

    def __init__(self, trace: CsvTrace, origin_ns: int, queue_pkts: int):
        self.rows = trace.rows
        self.starts = [int(round(r.start_s * 1e9)) for r in trace.rows]
        self.origin_ns = origin_ns
        self.queue_pkts = queue_pkts
        self.free_ns = origin_ns  # when the link has sent everything given to it
        self.waiting: deque[int] = deque()
        self.dropped = 0

    def step_at(self, t_ns: int) -> int:
        return max(0, bisect.bisect_right(self.starts, t_ns - self.origin_ns) - 1)

    def delay_loss(self, t_ns: int) -> tuple[int, float]:
        """The step's one-way delay (ns) and loss probability for a packet arriving at ``t_ns``."""
        r = self.rows[self.step_at(t_ns)]
        return int(round(r.delay_ms * 1e6)), r.loss_pct / 100.0

    def place(self, ready_ns: int, length: int) -> int | None:
        waiting = self.waiting
        while waiting and waiting[0] <= ready_ns:
            waiting.popleft()
        if len(waiting) >= self.queue_pkts:
            self.dropped += 1
            return None
        start = max(ready_ns, self.free_ns)
        rate = self.rows[self.step_at(start)].rate_bps
        t = start + int((length + ETH_HEADER_BYTES) * 8 * 1e9 / rate)
        self.free_ns = t
        waiting.append(t)
        return t

    def position(self, now_ns: int) -> dict[str, Any]:
        rel = max(0, now_ns - self.origin_ns)
        i = self.step_at(now_ns)
        return {"loop": 0, "position_s": rel / 1e9, "step": i, "last_step": i == len(self.rows) - 1,
                "dropped_queue_full": self.dropped, "backlog": len(self.waiting), "queue_pkts": self.queue_pkts}


def link_for(trace: Trace, origin_ns: int, queue_pkts: int) -> MahimahiLink | CsvLink:
    if isinstance(trace, MahimahiTrace):
        return MahimahiLink(trace, origin_ns, queue_pkts)
    return CsvLink(trace, origin_ns, queue_pkts)


# -- the shipped traces, regenerated ----------------------------------------------------------------------------------
def markov_segments(levels_bps: list[float], seconds: float, slot_s: float, seed: int,
                    stay: float = 0.6) -> list[tuple[float, float]]:
    """A Markov-modulated rate: ``seconds`` cut into slots of ``slot_s``; the rate is one of ``levels_bps``;
    after each slot it stays with probability ``stay``, else moves one level up or down with equal odds
    (at either end it stays instead of leaving the levels). Starts at the middle level. ``random.Random(seed)``
    draws, one number a slot."""
    rng = random.Random(seed)
    level = len(levels_bps) // 2
    out = []
    for _ in range(round(seconds / slot_s)):
        out.append((slot_s, levels_bps[level]))
        u = rng.random()
        if u >= stay:
            step = -1 if u < stay + (1 - stay) / 2 else 1
            level = min(len(levels_bps) - 1, max(0, level + step))
    return out


def _mahimahi_text(segments: Iterable[tuple[float, float]]) -> str:
    return "".join(f"{ms}\n" for ms in mahimahi_lines(segments))


def _csv_text(rows: Iterable[tuple[float, float, float, float]]) -> str:
    return ",".join(CSV_HEADER) + "\n" + "".join(f"{t:g},{r:.0f},{d:g},{loss:g}\n" for t, r, d, loss in rows)


def sat_handover_rows(seed: int = 1603) -> list[tuple[float, float, float, float]]:
    """A LEO-like link: a new satellite every 15 s for 60 s, each with a rate drawn from 5, 10 and 20 Mbit/s
    and a one-way delay drawn from 20 to 40 ms (whole ms); the last 0.5 s before each handover loses 5 % of
    packets. ``random.Random(seed)``, two draws a satellite."""
    rng = random.Random(seed)
    rows = []
    for i in range(4):
        rate = rng.choice([5e6, 10e6, 20e6])
        delay = float(rng.randint(20, 40))
        rows.append((15.0 * i, rate, delay, 0.0))
        rows.append((15.0 * i + 14.5, rate, delay, 5.0))
    return rows


CELL_UP_LEVELS = [100e3, 500e3, 1.5e6, 3e6, 5e6]
CELL_DOWN_LEVELS = [500e3, 1e6, 2e6, 4e6, 8e6]


def shipped_texts() -> dict[str, str]:
    """Every shipped trace's file name and text, from its model (tests check the files are exactly these)."""
    return {
        "steps-1-5-2.trace": _mahimahi_text([(5, 1e6), (5, 5e6), (5, 2e6)]),
        "cell-drive-up.trace": _mahimahi_text(markov_segments(CELL_UP_LEVELS, 30, 0.5, seed=1601)),
        "cell-drive-down.trace": _mahimahi_text(markov_segments(CELL_DOWN_LEVELS, 30, 0.5, seed=1602)),
        "sat-handover.csv": _csv_text(sat_handover_rows()),
    }


def write_shipped(directory: str | Path = SHIPPED_DIR) -> list[Path]:
    """(Re)write the shipped traces into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in shipped_texts().items():
        (d / name).write_text(text)
        out.append(d / name)
    return out
