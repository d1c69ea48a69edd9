"""Units: rates in bit/s with explicit units, kbps refused, durations in ms, percentages."""

import pytest

from labkit.units import UnitError, format_rate, parse_duration_ms, parse_percent, parse_rate, tc_rate, tc_time


@pytest.mark.parametrize("text,bps", [
    ("112 kbit/s", 112_000), ("5 Mbit/s", 5_000_000), ("1.5 Gbit/s", 1_500_000_000), ("9600 bit/s", 9600),
    ("14 kbyte/s", 112_000), ("5 Mbyte/s", 40_000_000), ("14 kB/s", 112_000), ("5MB/s", 40_000_000),
    ("26.8 kbit/s", 26_800),
])
def test_rates(text, bps):
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["14kbps", "5mbps", "14 Kbps", "100bps"])
def test_kbps_is_refused_with_the_reason(text):
    with pytest.raises(UnitError, match="tc reads .* as .*bytes per second"):
        parse_rate(text)


@pytest.mark.parametrize("value,match", [
    ("3 kb/s", "ambiguous"), ("12 furlongs/s", "unknown rate unit"), (100, "needs a unit"),
    (0, "above zero"), ("0 kbit/s", "above zero"), ("-5 kbit/s", "not a rate"), ("fast", "not a rate"),
    ("2 kbit", "ambiguous or unknown"), (None, "expected a rate"),
])
def test_bad_rates(value, match):
    with pytest.raises(UnitError, match=match):
        parse_rate(value)


def test_durations():
    assert parse_duration_ms("250 ms") == 250
    assert parse_duration_ms("1.5 s") == 1500
    assert parse_duration_ms("300us") == pytest.approx(0.3)
    assert parse_duration_ms(0) == 0
    with pytest.raises(UnitError, match="negative"):
        parse_duration_ms("-3 ms")
    with pytest.raises(UnitError, match="needs a unit"):
        parse_duration_ms(5)
    with pytest.raises(UnitError, match="unknown duration unit"):
        parse_duration_ms("5 min")


def test_percent():
    assert parse_percent("0.5 %") == 0.5
    assert parse_percent(2) == 2.0
    for bad in ("101 %", -1, "5", "x%"):
        with pytest.raises(UnitError):
            parse_percent(bad)


def test_formats():
    assert format_rate(112_000) == "112 kbit/s"
    assert format_rate(None) == "unlimited"
    assert tc_rate(112_000) == "112000bit"
    assert tc_time(250) == "250000us"
    assert tc_time(0.3) == "300us"
