"""Recorded traces: Mahimahi's format and labkit's CSV, read and refused line by line (labkit.traces).

Only the parsers, their validation and the generator; applying a trace to a link: test_shaping_trace_link.py.
"""

from __future__ import annotations

import pytest

from labkit import traces
from labkit.errors import ConfigError
from labkit.profiles import FRAME_BYTES


def _file(tmp_path, name: str, content: str | bytes):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def test_a_generated_step_trace_reads_back_step_by_step(tmp_path):
    lines = traces.mahimahi_lines([(10, 1e6), (10, 5e6), (10, 2e6)])
    # n = round(rate / (1514 x 8) x seconds) opportunities a segment, the last at the segment's end
    assert len(lines) == 826 + 4128 + 1651 and lines[825] == 10_000 and lines[-1] == 30_000
    t = traces.load(_file(tmp_path, "steps.up", "\n".join(map(str, lines)) + "\n"))
    assert t.fmt == "mahimahi" and t.period_ms == 30_000
    assert t.packets_per_s() == pytest.approx(6605 / 30)
    per_s = [s.rate_bps for s in t.steps(1000)]
    assert len(per_s) == 30
    # each second holds 82 or 83 (1 Mbit/s), 412 or 413 (5 Mbit/s), 165 or 166 (2 Mbit/s) full-size frames
    for want, got in zip([1e6] * 10 + [5e6] * 10 + [2e6] * 10, per_s, strict=True):
        assert abs(got - want) <= FRAME_BYTES * 8, (want, got)
    assert [s.start_s for s in t.steps(10_000)] == [0.0, 10.0, 20.0]
    assert [round(s.rate_bps) for s in t.steps(10_000)] == [round(n * FRAME_BYTES * 8 / 10) for n in (826, 4128, 1651)]


def test_mahimahi_bins_and_repetition(tmp_path):
    # several opportunities in one ms are several packets; a time of 0 is the period's (the trace repeats)
    t = traces.load(_file(tmp_path, "t.up", "0\n5\n5\n5\n10\n20\n"))
    assert t.period_ms == 20 and t.counts(10) == [4, 2]
    assert t.counts(7) == [3, 1, 2]  # (0, 7], (7, 14], (14, 20]: the last bin is shorter
    assert [s.rate_bps for s in t.steps(10)] == [4 * FRAME_BYTES * 8 * 100, 2 * FRAME_BYTES * 8 * 100]
    # Windows line ends and no final newline are fine
    assert traces.load(_file(tmp_path, "w.up", "1\r\n2\r\n3")).period_ms == 3


@pytest.mark.parametrize("content,line,message", [
    ("", 1, "trace: empty: a Mahimahi trace has one delivery opportunity (whole ms) a line"),
    ("1\n\n2\n", 2, "trace: an empty line (allowed: one whole number of ms a line, as mm-link)"),
    ("1\n2.5\n", 2, "trace: '2.5' is not a whole number of milliseconds (allowed: 0 to 31536000000)"),
    ("1\n-3\n", 2, "trace: '-3' is not a whole number of milliseconds"),
    ("7\n5\n", 2, "trace: 5 ms after 7 ms: not monotonic (times must not decrease)"),
    ("0\n0\n0\n", 3, "trace: every time is 0 ms: a trace must last for a nonzero amount of time"),
    ("1\n99999999999999999999\n", 2, "trace: 99999999999999999999 ms (allowed: 0 to 31536000000, a year)"),
    ("1\n2; rm -rf /\n", 2, "trace: '2; rm -rf /' is not a whole number of milliseconds"),
    (b"1\n2\xff\n", 2, "trace: not UTF-8 text (byte 0xff)"),
])
def test_mahimahi_mistakes_name_file_and_line(tmp_path, content, line, message):
    p = _file(tmp_path, "bad.up", content)
    with pytest.raises(ConfigError) as exc:
        traces.load(p, "mahimahi")
    assert str(exc.value).startswith(f"{p}:{line}: {message}"), str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


CSV = "time_s,rate_bit_per_s,delay_ms,loss_pct\n0,1000000,50,0\n10,5000000,40.5,0.5\n20,2e6,45,1\n"


def test_a_csv_trace(tmp_path):
    t = traces.load(_file(tmp_path, "steps.csv", CSV))
    assert t.fmt == "csv" and t.steps() == [traces.Step(0, 1e6, 50, 0), traces.Step(10, 5e6, 40.5, 0.5),
                                            traces.Step(20, 2e6, 45, 1)]
    # the header decides without the extension; spaces around values and the header's commas are fine
    t2 = traces.load(_file(tmp_path, "steps.txt", "time_s, rate_bit_per_s, delay_ms, loss_pct\n0, 1000, 0, 0\n"))
    assert t2.fmt == "csv" and t2.steps() == [traces.Step(0, 1000, 0, 0)]


H = "time_s,rate_bit_per_s,delay_ms,loss_pct\n"


@pytest.mark.parametrize("content,line,message", [
    ("", 1, "header: empty: a CSV trace starts with the header time_s,rate_bit_per_s,delay_ms,loss_pct"),
    ("time,rate,delay,loss\n0,1,2,3\n", 1, "header: 'time,rate,delay,loss' (allowed: exactly "
                                          "time_s,rate_bit_per_s,delay_ms,loss_pct)"),
    (H, 1, "row: no steps after the header (a trace needs at least one)"),
    (H + "0,1e6,0,0\n\n", 3, "row: an empty line (allowed: one step a line)"),
    (H + "0,1e6,0\n", 2, "row: 3 columns (allowed: 4: time_s,rate_bit_per_s,delay_ms,loss_pct)"),
    (H + "0,1 Mbit/s,0,0\n", 2, "rate_bit_per_s: '1 Mbit/s' is not a number (allowed: 1000 to 100000000000 bit/s)"),
    (H + "0,999,0,0\n", 2, "rate_bit_per_s: 999 (allowed: 1000 to 100000000000 bit/s)"),
    (H + "0,nan,0,0\n", 2, "rate_bit_per_s: 'nan' is not a number"),
    (H + "0,1e6,-1,0\n", 2, "delay_ms: -1 (allowed: 0 to 60000 ms)"),
    (H + "0,1e6,60001,0\n", 2, "delay_ms: 60001 (allowed: 0 to 60000 ms)"),
    (H + "0,1e6,1.0005,0\n", 2, "delay_ms: 1.0005 is not a whole number of microseconds"),
    (H + "0,1e6,0,101\n", 2, "loss_pct: 101 (allowed: 0 to 100)"),
    (H + "1,1e6,0,0\n", 2, "time_s: the first step is at 1 s (allowed: 0: a trace starts at its beginning)"),
    (H + "0,1e6,0,0\n5,1e6,0,0\n5,2e6,0,0\n", 4, "time_s: 5 s after 5 s: not monotonic (times must increase)"),
    (H + "0,1e6,0,0\n5,1e6,0,0\n4,2e6,0,0\n", 4, "time_s: 4 s after 5 s: not monotonic"),
    (H + "0,1e6,0,0\n1e99,1e6,0,0\n", 3, "time_s: 1e99 (allowed: 0 to a year of seconds)"),
])
def test_csv_mistakes_name_file_line_and_column(tmp_path, content, line, message):
    p = _file(tmp_path, "bad.csv", content)
    with pytest.raises(ConfigError) as exc:
        traces.load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:{line}: {message}"), msg
    assert exc.value.exit_code == 2 and "\n" not in msg


def test_missing_unreadable_and_unknown_traces(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.up: trace: no such file$"):
        traces.load(tmp_path / "nope.up")
    with pytest.raises(ConfigError, match=r": trace: is a directory, not a file$"):
        traces.load(tmp_path)
    with pytest.raises(ConfigError, match=r"x.up:1: trace: unknown format: the first line 'hello' is neither a "
                                          r"Mahimahi delivery time \(a whole number of ms\) nor the CSV header"):
        traces.load(_file(tmp_path, "x.up", "hello\n1\n"))
    with pytest.raises(ConfigError, match=r"trace: unknown format 'pcap' \(allowed: mahimahi, csv\)"):
        traces.load(_file(tmp_path, "y.up", "1\n"), "pcap")
    # a CSV file named .csv is read as CSV, and refused as one
    with pytest.raises(ConfigError, match=r"z.csv:1: header: '1'"):
        traces.load(_file(tmp_path, "z.csv", "1\n2\n"))
    with pytest.raises(ConfigError, match=r"bin: 0 \(allowed: 1 to 3600000 ms\)"):
        traces.load(_file(tmp_path, "ok.up", "1\n")).steps(0)


def test_the_generator_refuses_what_it_cannot_make():
    for seg in ((0, 1e6), (1, 500), (0.0001, 1e6), (1, 1e12)):
        with pytest.raises(ValueError, match="segment"):
            traces.mahimahi_lines([seg])
