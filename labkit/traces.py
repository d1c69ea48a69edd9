"""Recorded link traces: the two formats labkit reads, checked line by line, as steps of rate, delay and loss.

**Mahimahi** (``mm-link``'s format, Netravali et al., USENIX ATC 2015): one line per *delivery opportunity*,
the time in whole milliseconds at which the link may deliver one packet of up to 1504 bytes (the TUN payload
Mahimahi counts), several lines with the same time for several packets in that millisecond. Times never
decrease, and the trace repeats with a period of its last time, which must be above 0. labkit refuses what
mm-link refuses (an empty line, a line that is not a whole number, a decreasing time, no line at all, a
last time of 0) with the file and line. labkit maps one opportunity to one full-size Ethernet frame (1514
bytes, what HTB counts: ``labkit.profiles.FRAME_BYTES``), which keeps the trace's packet rate:
``rate = opportunities per second x 1514 x 8`` bit/s.

**CSV**: a header ``time_s,rate_bit_per_s,delay_ms,loss_pct`` and one row per step: from ``time_s`` on the
link has that rate, one-way delay and random loss, until the next row; the first row is at time 0, times
increase strictly, and the last row holds until stopped (a CSV trace plays once). Values are plain numbers in
the units the header names, within a profile's bounds (``labkit.profiles``): rate 1 kbit/s to 100 Gbit/s,
delay 0 to 60 s in whole microseconds, loss 0 to 100 %.

``load`` reads either (``fmt`` or the file's extension, else the first line decides); every mistake is one
ConfigError ``file:line: field: problem`` (exit status 2). ``steps`` turns a trace into the steps a
schedule of changes would apply (a Mahimahi trace binned, ``bin_ms`` per step). Not done yet: applying a
trace to a link (the engine following it packet by packet; netem as a sequence of changes).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import ConfigError
from labkit.profiles import DELAY_MAX_MS, FRAME_BYTES, RATE_MAX_BPS, RATE_MIN_BPS

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
