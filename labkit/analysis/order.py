"""Profile order, security variant order and value formatting shared by tables and figures.

Profiles are shown in one fixed, meaningful order everywhere: ``none`` first, then the realistic profiles
from fastest to slowest, then the dissertation's ``slow-*`` family, also fastest to slowest. "Fastest" is
judged by the RTT the profile adds, then by its bottleneck rate (higher first), as recorded in each cell's
``expected``; profiles with no recorded expectation fall back to a list of well-known names.

OCPP security variants (cell labels such as ``sp0``, ``sp3-tls13``, ``sp2-tls12-nores``) are shown by
security profile, then TLS version, with session resumption before the same variant without it
(``security_order``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

#: fallback order (fast to slow) for profiles whose cells record no expectation
KNOWN = ["none", "reference", "lan", "5g", "wifi", "wifi-n", "wifi-g", "wifi-a", "wifi-b", "cable", "dsl",
         "lte", "4g", "lte-m", "3g", "leo", "edge", "2g", "gprs", "nb-iot", "gsm", "amps", "geo", "vsat"]


def family(name: str) -> int:
    n = name.lower()
    if n in ("none", "reference"):
        return 0
    if n.startswith("slow-"):
        return 2
    return 1


def profile_order(names: Iterable[str], expected: Mapping[str, tuple[float, float]] | None = None) -> list[str]:
    """``names`` sorted: none, realistic fast to slow, slow-* fast to slow.

    ``expected`` maps a profile to (added RTT ms, bottleneck rate bit/s; NaN when unlimited)."""
    expected = expected or {}

    def key(name: str):
        base = name.lower().removeprefix("slow-")
        known = KNOWN.index(base) if base in KNOWN else len(KNOWN)
        rtt, rate = expected.get(name, (math.nan, math.nan))
        rtt = math.inf if rtt is None or math.isnan(rtt) else rtt
        rate = math.inf if rate is None or math.isnan(rate) else rate
        if base in ("none", "reference"):
            rtt, rate = -1.0, math.inf
        if rtt == math.inf:  # nothing recorded: the known-name order, after those with figures
            return (family(name), 1, known, 0.0, name)
        return (family(name), 0, rtt, -rate, name)

    return sorted(dict.fromkeys(names), key=key)


#: a security variant's label, as labkit bench names it: ``sp<profile>[-tls<12|13>][-nores]``
SECURITY_LABEL_RE = re.compile(r"^sp(?P<profile>[0-3])(?:-tls(?P<tls>1[23]))?(?P<nores>-nores)?$")


def parse_security_label(label: str) -> dict | None:
    """``"sp3-tls13-nores"`` -> ``{"profile": 3, "tls_version": "1.3", "resumption": False}``; ``sp0``/``sp1``
    have no TLS (version and resumption None); None for a label not of that form."""
    m = SECURITY_LABEL_RE.match(label or "")
    if not m:
        return None
    tls = m.group("tls")
    profile = int(m.group("profile"))
    if profile >= 2 and not tls or profile < 2 and (tls or m.group("nores")):
        return None
    return {"profile": profile, "tls_version": f"{tls[0]}.{tls[1]}" if tls else None,
            "resumption": (not m.group("nores")) if tls else None}


def security_order(labels: Iterable[str]) -> list[str]:
    """Security variant labels sorted: "" (no variant recorded) first, then by security profile, TLS version
    (1.2 before 1.3), resumption before ``-nores``; labels of another form last, alphabetically."""
    def key(label: str):
        if not label:
            return (0, 0, "", 0, "")
        p = parse_security_label(label)
        if p is None:
            return (2, 0, "", 0, label)
        return (1, p["profile"], p["tls_version"] or "", 0 if p["resumption"] in (True, None) else 1, label)

    return sorted(dict.fromkeys(str(x) for x in labels), key=key)


def expectations(cells) -> dict[str, tuple[float, float]]:
    """Per profile (added RTT ms, bottleneck rate bit/s) from a cells frame (first cell that records them)."""
    out: dict[str, tuple[float, float]] = {}
    if cells is None or len(cells) == 0:
        return out
    for profile, grp in cells.groupby("profile", sort=False):
        rtt = grp["added_rtt_ms"].dropna()
        rates = grp[["up_rate_bps", "down_rate_bps"]].min(axis=1, skipna=True).dropna()
        out[str(profile)] = (float(rtt.iloc[0]) if len(rtt) else math.nan,
                             float(rates.iloc[0]) if len(rates) else math.nan)
    return out


# -- formatting ------------------------------------------------------------------------------------------
def fmt_rate(bps: float | None) -> str:
    """bit/s with an SI prefix: 112 kbit/s, 40 Mbit/s; em dash when unknown, 'unlimited' for inf."""
    if bps is None or (isinstance(bps, float) and math.isnan(bps)):
        return "—"
    if math.isinf(bps):
        return "unlimited"
    for scale, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if abs(bps) >= scale:
            v = bps / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{bps:.0f} bit/s"


def fmt_num(v, digits: int = 2) -> str:
    if v is None:
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "—"
    if f != 0 and abs(f) < 10 ** (-digits):
        return f"{f:.{digits}g}"
    if abs(f) >= 1e5:
        return f"{f:,.0f}"
    return f"{f:.{digits}f}"


def fmt_p(p) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(p):
        return "—"
    return "<1e-300" if p == 0 else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")
