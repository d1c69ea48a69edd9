"""Rates, durations and percentages with explicit units.

Rates are written with their unit (``"112 kbit/s"``, ``"5 Mbit/s"``, ``"14 kbyte/s"``) and stored in bit/s;
durations are written ``"250 ms"`` and stored in milliseconds; loss and other probabilities are percent.
The tc-style ``kbps``/``mbps`` are refused: tc reads ``kbps`` as kilo*bytes* per second, which is how the
dissertation's slow.sh ended up 8x faster than its names said.
"""

from __future__ import annotations

import math
import re

_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
_RATE_RE = re.compile(rf"^\s*{_NUM}\s*([A-Za-z/]+)\s*$")
_DUR_RE = re.compile(rf"^\s*(-?{_NUM[1:-1]})\s*([a-zµ]+)\s*$")

#: unit -> bits per second for one unit (SI prefixes: k = 1000)
RATE_UNITS: dict[str, float] = {
    "bit/s": 1, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9,
    "byte/s": 8, "kbyte/s": 8e3, "mbyte/s": 8e6, "gbyte/s": 8e9,
    "b/s": 8, "kb/s": 8e3, "mb/s": 8e6, "gb/s": 8e9,  # capital B only: bytes (checked below)
}
RATE_ALLOWED = "bit/s, kbit/s, Mbit/s, Gbit/s (bits) or byte/s, kbyte/s, Mbyte/s, kB/s, MB/s (bytes)"

#: tc's own spellings; refused because they are ambiguous (tc: kbps = kilobytes/s, kbit = kilobits/s)
_AMBIGUOUS = {"bps", "kbps", "mbps", "gbps", "tbps", "kbit", "mbit", "gbit", "bit", "k", "m", "g", "kb", "mb", "gb",
              "kbytes", "mbytes", "kibit/s", "mibit/s"}

DURATION_UNITS: dict[str, float] = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
DURATION_ALLOWED = "us, ms, s (e.g. \"250 ms\")"


class UnitError(ValueError):
    """A value whose unit is missing, unknown or ambiguous."""


def parse_rate(value: object) -> int:
    """``"112 kbit/s"`` -> 112000 (bit/s). Refuses bare numbers, ``kbps`` and unknown units."""
    if isinstance(value, bool) or value is None:
        raise UnitError(f"expected a rate such as \"112 kbit/s\" (got {value!r})")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise UnitError(f"{value!r}: a rate must be above zero (omit 'rate' for no limit)")
        raise UnitError(f"a rate needs a unit: write \"{value} kbit/s\" or \"{value} Mbit/s\" ({RATE_ALLOWED})")
    text = str(value)
    m = _RATE_RE.match(text)
    if not m:
        raise UnitError(f"{text!r} is not a rate such as \"112 kbit/s\" ({RATE_ALLOWED})")
    number, unit = float(m.group(1)), m.group(2)
    low = unit.lower()
    if low in _AMBIGUOUS:
        if low.endswith("bps"):
            prefix = {"bps": "", "kbps": "kilo", "mbps": "mega", "gbps": "giga", "tbps": "tera"}[low]
            head = {"k": "k", "m": "M", "g": "G", "t": "T", "": ""}[low[:-3]]
            raise UnitError(
                f"{text!r} is ambiguous: tc reads '{unit}' as {prefix}bytes per second (\"14kbps\" = 112 kbit/s) "
                f"while most people mean bits; write \"{_fmt(number)} {head}bit/s\" or "
                f"\"{_fmt(number)} {head}byte/s\" ({RATE_ALLOWED})")
        raise UnitError(f"{text!r}: unit {unit!r} is ambiguous or unknown; use {RATE_ALLOWED}")
    if low in ("b/s", "kb/s", "mb/s", "gb/s"):
        # only the capital-B spelling is accepted, and it means bytes
        if unit[-3] != "B":
            raise UnitError(f"{text!r}: lowercase 'b/s' is ambiguous; write \"bit/s\" for bits or \"B/s\" for bytes")
    factor = RATE_UNITS.get(low)
    if factor is None:
        raise UnitError(f"{text!r}: unknown rate unit {unit!r}; use {RATE_ALLOWED}")
    bps = number * factor
    if not math.isfinite(bps):
        raise UnitError(f"{text!r} is not a finite rate")
    if bps <= 0:
        raise UnitError(f"{text!r}: a rate must be above zero (omit 'rate' for no limit)")
    if bps < 8:
        raise UnitError(f"{text!r}: a rate below 8 bit/s cannot be shaped")
    return int(round(bps))


def parse_duration_ms(value: object, *, allow_negative: bool = False) -> float:
    """``"250 ms"`` -> 250.0; ``"1.5 s"`` -> 1500.0; ``0`` -> 0.0. Other bare numbers are refused."""
    if isinstance(value, bool) or value is None:
        raise UnitError(f"expected a duration such as \"250 ms\" (got {value!r})")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise UnitError(f"a duration needs a unit: write \"{value} ms\" ({DURATION_ALLOWED})")
    text = str(value)
    m = _DUR_RE.match(text)
    if not m:
        raise UnitError(f"{text!r} is not a duration such as \"250 ms\" ({DURATION_ALLOWED})")
    number, unit = float(m.group(1)), m.group(2)
    factor = DURATION_UNITS.get(unit)
    if factor is None:
        raise UnitError(f"{text!r}: unknown duration unit {unit!r}; use {DURATION_ALLOWED}")
    ms = number * factor
    if not math.isfinite(ms):
        raise UnitError(f"{text!r} is not a finite duration")
    if ms < 0 and not allow_negative:
        raise UnitError(f"{text!r}: must not be negative")
    return ms


def parse_percent(value: object) -> float:
    """``0.5``, ``"0.5 %"`` or ``"0.5%"`` -> 0.5 (percent, 0 to 100)."""
    if isinstance(value, bool) or value is None:
        raise UnitError(f"expected a percentage such as \"0.5 %\" (got {value!r})")
    if isinstance(value, (int, float)):
        pct = float(value)
    else:
        text = str(value).strip()
        if not text.endswith("%"):
            raise UnitError(f"{text!r} is not a percentage such as \"0.5 %\"")
        try:
            pct = float(text[:-1].strip())
        except ValueError:
            raise UnitError(f"{text!r} is not a percentage such as \"0.5 %\"") from None
    if not math.isfinite(pct) or pct < 0 or pct > 100:
        raise UnitError(f"{value!r}: a percentage must be from 0 to 100")
    return pct


def _fmt(x: float) -> str:
    return f"{x:g}"


def format_rate(bps: float | None) -> str:
    """A rate for people: ``112000`` -> ``"112 kbit/s"``; ``None`` -> ``"unlimited"``."""
    if bps is None:
        return "unlimited"
    for factor, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= factor:
            return f"{bps / factor:.4g} {unit}"
    return f"{bps:.4g} bit/s"


def format_ms(ms: float) -> str:
    return f"{ms:.4g} ms"


def tc_rate(bps: int) -> str:
    """A rate for tc, unambiguous: always ``<n>bit`` (tc: bits per second)."""
    return f"{int(bps)}bit"


def tc_time(ms: float) -> str:
    """A time for tc in microseconds (``us``), exact to the microsecond."""
    return f"{int(round(ms * 1000))}us"


def tc_us(ms: float) -> int:
    """A time in whole microseconds, the unit labkit gives tc (profiles hold whole microseconds)."""
    return int(round(ms * 1000))
