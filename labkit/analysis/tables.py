"""The numbers behind the report: one tidy (long) DataFrame per question, computed from a loaded Run.

Every function takes a ``labkit.analysis.load.Run`` and returns numeric columns with units in their names
(``_ms``, ``_bps``, ``_pct``); formatting for display is the report's job. Profiles come back in the
report's order (labkit.analysis.order). An empty input gives an empty frame with the same columns.

What counts as an OCPP round trip: calls with ``outcome == "ok"`` (a CallError is counted in the outcome
table, not in the RTT distribution). Repetitions of a cell (same profile and N) are pooled.

OCPP security variants (``security``: ``sp0``, ``sp3-tls13``, ...) are never pooled: when a run has more than
one (``Run.security_split``), the OCPP tables (RTT, outcomes, overhead, CSMS handling, CPU, outages) group by
profile, security and N and carry a ``security`` column; a run with one variant, or none recorded, gets the
tables it always had. The network tables (ping, echo, iperf3) stay per profile: the link is the same
whatever runs over it. ``setup_table`` and ``reconnect_table`` read the ``handshake`` and ``booted`` events:
how long each connection's TCP connect, TLS handshake and WebSocket upgrade took, and the reconnections after
an outage.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from labkit import resultsformat as RF
from labkit.analysis.load import Run
from labkit.analysis.order import expectations, profile_order, security_order
from labkit.analysis.stats import median_ci, summarize

STATS = ["n", "mean", "std", "median", "min", "max", "p95", "p99"]
OUTCOMES = ["ok", "call_error", "timeout", "connection_lost", "send_failed"]


def order_of(run: Run) -> list[str]:
    return profile_order(list(run.cells["profile"]) if len(run.cells) else [], expectations(run.cells))


def by_security(run: Run) -> list[str]:
    """``["security"]`` when the run has more than one security variant (its tables keep them apart), else
    ``[]``: the grouping keys to put between the profile and N."""
    return ["security"] if run.security_split else []


#: between a link profile and a security variant where a table or figure names both ("4g · sp3-tls13")
VARIANT_SEP = " · "


def variant_name(profile: str, security: str) -> str:
    return f"{profile}{VARIANT_SEP}{security}"


def unlabelled_variant(run: Run) -> str:
    """The security variant of a cell that records none: ``sp1`` when the plan used HTTP Basic auth, else
    ``sp0``."""
    plan = run.manifest.get("plan") if isinstance(run.manifest.get("plan"), dict) else {}
    return "sp1" if plan.get("auth") == "basic" else "sp0"


def has_variants(runs: list[Run]) -> bool:
    """Whether any of ``runs`` recorded a security variant for a cell (then runs are compared variant by
    variant, a run that recorded none counting as ``unlabelled_variant``)."""
    return any(len(r.cells) and bool((r.cells["security"].astype(str) != "").any()) for r in runs)


def variant_view(run: Run, frame: pd.DataFrame, *, effective: bool = False) -> pd.DataFrame:
    """``frame`` with its ``profile`` naming the security variant too ("4g · sp3-tls13"; the ``security``
    column dropped), so that per-profile tables and figures keep variants apart: when the run has more than
    one variant, or always with ``effective`` (to compare runs variant by variant). A cell that records no
    variant is named after ``unlabelled_variant``. Else ``frame`` unchanged."""
    if "profile" not in frame.columns or not (run.security_split or effective):
        return frame
    if "security" in frame.columns:
        sec = frame["security"].astype(str)
    else:  # a run with one variant: its tables have no security column
        one = run.cells["security"].astype(str).iloc[0] if len(run.cells) else ""
        sec = pd.Series(one, index=frame.index)
    sec = sec.replace("", unlabelled_variant(run))
    names = [variant_name(str(p), s) for p, s in zip(frame["profile"], sec, strict=True)]
    return frame.assign(profile=names).drop(columns="security", errors="ignore")


def variant_order(run: Run) -> list[str]:
    """The report's profile order, with each profile's security variants (in ``security_order``) when the
    run has more than one: the names ``variant_view`` gives."""
    order = order_of(run)
    if not run.security_split:
        return order
    sec = run.cells["security"].astype(str).replace("", unlabelled_variant(run))
    present = set(zip(run.cells["profile"].astype(str), sec, strict=True))
    return [variant_name(p, s) for p in order for s in security_order(sec) if (p, s) in present]


def _sort(df: pd.DataFrame, order: list[str], by: list[str]) -> pd.DataFrame:
    if df.empty:
        return df
    rank = {p: i for i, p in enumerate(order)}
    extra = {}
    keys = []
    for col in by:
        if col == "direction":  # uplink (EVSE -> CPO) before downlink
            extra["_d"] = df["direction"].map({"up": 0, "down": 1}).fillna(2)
            keys.append("_d")
        elif col == "security":  # sp0, sp1, sp2-tls12, sp2-tls12-nores, sp2-tls13, ...
            srank = {s: i for i, s in enumerate(security_order(df["security"].astype(str)))}
            extra["_s"] = df["security"].astype(str).map(srank)
            keys.append("_s")
        else:
            keys.append(col)
    df = df.assign(_o=df["profile"].map(lambda p: rank.get(p, len(rank))), **extra)
    return df.sort_values(["_o", *keys], kind="stable").drop(columns=["_o", *extra]).reset_index(drop=True)


def _describe(values: np.ndarray, seed: int) -> dict:
    out = summarize(values)
    out["median_ci_lo"], out["median_ci_hi"] = median_ci(values, seed=seed)
    return out


def ocpp_ok(run: Run) -> pd.DataFrame:
    """OK calls with profile and N (stations) joined."""
    calls = run.calls
    if calls.empty:
        return run.with_cells(calls)
    ok = calls[(calls["outcome"] == "ok") & calls["rtt_ms"].notna()]
    return run.with_cells(ok, ("profile", "stations", "added_rtt_ms", "min_added_rtt_ms"))


def ping_table(run: Run, seed: int = 0) -> pd.DataFrame:
    """Per profile and direction: configured added RTT, measured RTT summary, loss, excess over configured."""
    cols = ["profile", "direction", "added_rtt_ms", "lost", "lost_pct", *STATS, "median_ci_lo", "median_ci_hi",
            "base_ms", "excess_ms", "below_added"]
    if run.ping.empty:
        return pd.DataFrame(columns=cols)
    df = run.with_cells(run.ping, ("profile", "added_rtt_ms", "min_added_rtt_ms"))
    rows = []
    for (profile, direction), g in df.groupby(["profile", "direction"], observed=True, sort=False):
        rtt = g.loc[~g["lost"], "rtt_ms"].to_numpy(dtype="float64")
        added, floor = g["added_rtt_ms"].iloc[0], g["min_added_rtt_ms"].iloc[0]
        r = {"profile": profile, "direction": direction, "added_rtt_ms": added, "lost": int(g["lost"].sum()),
             "lost_pct": 100.0 * g["lost"].mean(), **_describe(rtt, seed),
             "below_added": int((rtt < floor).sum()) if not math.isnan(floor) else 0}
        rows.append(r)
    out = pd.DataFrame(rows)
    base = out[out["profile"].isin(["none"])].set_index("direction")["median"]
    out["base_ms"] = out["direction"].map(base).astype("float64")
    out["excess_ms"] = out["median"] - out["added_rtt_ms"] - out["base_ms"].fillna(0.0)
    return _sort(out[cols], order_of(run), ["direction"])


def iperf_table(run: Run) -> pd.DataFrame:
    """Per profile, protocol and direction: configured rate, measured (receiver) rate, share, UDP loss/jitter."""
    cols = ["profile", "proto", "direction", "cells", "configured_bps", "bps", "pct_of_configured", "retransmits",
            "lost_pct", "configured_loss_pct", "jitter_ms"]
    if run.iperf.empty:
        return pd.DataFrame(columns=cols)
    df = run.with_cells(run.iperf, ("profile", "up_rate_bps", "down_rate_bps", "up_loss_pct", "down_loss_pct"))
    df = df.assign(configured_bps=np.where(df["direction"] == "up", df["up_rate_bps"], df["down_rate_bps"]),
                   configured_loss_pct=np.where(df["direction"] == "up", df["up_loss_pct"], df["down_loss_pct"]))
    out = df.groupby(["profile", "proto", "direction"], sort=False).agg(
        cells=("bps", "size"), configured_bps=("configured_bps", "first"), bps=("bps", "median"),
        retransmits=("retransmits", "median"), lost_pct=("lost_pct", "median"),
        configured_loss_pct=("configured_loss_pct", "first"), jitter_ms=("jitter_ms", "median")).reset_index()
    out["pct_of_configured"] = 100.0 * out["bps"] / out["configured_bps"]
    return _sort(out[cols], order_of(run), ["proto", "direction"])  # tcp before udp


def ocpp_table(run: Run, seed: int = 0) -> pd.DataFrame:
    """Per profile and N: the OCPP RTT summary (the dissertation's layout plus p95, p99, median CI)."""
    sec = by_security(run)
    keys = ["profile", *sec, "stations"]
    cols = [*keys, "added_rtt_ms", *STATS, "median_ci_lo", "median_ci_hi", "below_added"]
    ok = ocpp_ok(run)
    if ok.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in ok.groupby(keys, sort=False):
        rtt = g["rtt_ms"].to_numpy(dtype="float64")
        added, floor = g["added_rtt_ms"].iloc[0], g["min_added_rtt_ms"].iloc[0]
        rows.append({**dict(zip(keys, key, strict=True)), "stations": int(key[-1]), "added_rtt_ms": added,
                     **_describe(rtt, seed), "below_added": int((rtt < floor).sum()) if not math.isnan(floor) else 0})
    return _sort(pd.DataFrame(rows)[cols], order_of(run), [*sec, "stations"])


def outcome_table(run: Run) -> pd.DataFrame:
    """Per profile and N: calls by outcome, and the most frequent error codes."""
    sec = by_security(run)
    cols = ["profile", *sec, "stations", "calls", *OUTCOMES, "failed_pct", "errors"]
    if run.calls.empty:
        return pd.DataFrame(columns=cols)
    df = run.with_cells(run.calls)
    counts = df.groupby(["profile", *sec, "stations", "outcome"], observed=True, sort=False).size().unstack(
        fill_value=0)
    for o in OUTCOMES:
        if o not in counts:
            counts[o] = 0
    counts["calls"] = counts.sum(axis=1)
    counts["failed_pct"] = 100.0 * (counts["calls"] - counts["ok"]) / counts["calls"]
    errs = (df[df["error_code"].astype(str) != ""]
            .groupby(["profile", *sec, "stations"], observed=True, sort=False)["error_code"]
            .agg(lambda s: ", ".join(f"{k} ×{v}" for k, v in s.astype(str).value_counts().head(3).items())))
    counts["errors"] = errs
    out = counts.reset_index()
    out["errors"] = out["errors"].fillna("")
    return _sort(out[cols], order_of(run), [*sec, "stations"])


def network_rtt(run: Run) -> pd.DataFrame:
    """Per profile: the network round trip that OCPP round trips are set against, and which probe gave it.

    labkit's echo probe (echo.csv, format /2) when the profile has echo samples: it is timed to the
    microsecond, where iputils ping prints whole milliseconds from 100 ms on; else ping. Both directions
    pooled, lost probes left out."""
    cols = ["profile", "baseline", "n", "median_ms"]
    parts = []
    for name, frame in (("echo", run.echo), ("ping", run.ping)):
        if len(frame):
            f = run.with_cells(frame[~frame["lost"] & frame["rtt_ms"].notna()], ("profile",))
            if len(f):
                g = f.groupby("profile", observed=True)["rtt_ms"].agg(["size", "median"]).reset_index()
                parts.append(g.assign(baseline=name).rename(columns={"size": "n", "median": "median_ms"}))
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True).drop_duplicates("profile", keep="first")  # echo first
    return _sort(out[cols], order_of(run), [])


def overhead_table(run: Run) -> pd.DataFrame:
    """Per profile, N and action: median OCPP RTT minus the median network RTT of the same profile (echo's
    when the profile has echo samples, else ping's; ``baseline`` says which; see ``network_rtt``): what the
    protocol itself costs on top of the network's round trip."""
    sec = by_security(run)
    cols = ["profile", *sec, "stations", "action", "n", "ocpp_median_ms", "baseline", "baseline_median_ms",
            "overhead_ms"]
    ok = ocpp_ok(run)
    net = network_rtt(run)
    if ok.empty or net.empty:
        return pd.DataFrame(columns=cols)
    net = net.set_index("profile")
    g = ok.groupby(["profile", *sec, "stations", "action"], observed=True, sort=False)["rtt_ms"].agg(
        ["size", "median"])
    out = g.reset_index().rename(columns={"size": "n", "median": "ocpp_median_ms"})
    out["baseline"] = out["profile"].map(net["baseline"])
    out["baseline_median_ms"] = out["profile"].map(net["median_ms"]).astype("float64")
    out["overhead_ms"] = out["ocpp_median_ms"] - out["baseline_median_ms"]
    out = out.dropna(subset=["baseline_median_ms"])
    return _sort(out[cols], order_of(run), [*sec, "stations", "action"])


def echo_ping_table(run: Run) -> pd.DataFrame:
    """The cross-check of the two RTT probes, per profile and direction: echo median, ping median and
    their difference (echo − ping), with samples and losses of each."""
    cols = ["profile", "direction", "echo_n", "echo_lost", "echo_median_ms", "ping_n", "ping_lost",
            "ping_median_ms", "diff_ms"]
    if run.echo.empty or run.ping.empty:
        return pd.DataFrame(columns=cols)
    sides = []
    for name, frame in (("echo", run.echo), ("ping", run.ping)):
        f = run.with_cells(frame, ("profile",))
        g = f.groupby(["profile", "direction"], observed=True, sort=False)
        ok = f[~f["lost"]].groupby(["profile", "direction"], observed=True, sort=False)["rtt_ms"]
        sides.append(pd.DataFrame({f"{name}_n": ok.size(), f"{name}_lost": g["lost"].sum().astype("int64"),
                                   f"{name}_median_ms": ok.median()}))
    out = sides[0].join(sides[1], how="inner").reset_index()
    if out.empty:
        return pd.DataFrame(columns=cols)
    out["diff_ms"] = out["echo_median_ms"] - out["ping_median_ms"]
    return _sort(out[cols], order_of(run), ["direction"])


def csms_table(run: Run) -> pd.DataFrame:
    """Per profile and N: the CSMS's own handling time (receive to answer)."""
    sec = by_security(run)
    cols = ["profile", *sec, "stations", "n", "median_ms", "p95_ms", "max_ms"]
    if run.csms.empty:
        return pd.DataFrame(columns=cols)
    df = run.with_cells(run.csms)
    g = df.groupby(["profile", *sec, "stations"], sort=False)["handle_ms"]
    out = pd.DataFrame({"n": g.size(), "median_ms": g.median(), "p95_ms": g.quantile(0.95), "max_ms": g.max()})
    return _sort(out.reset_index()[cols], order_of(run), [*sec, "stations"])


def cpu_kind(monitor: pd.DataFrame) -> pd.Series:
    """What each monitor row measures: ``csms``, ``fleet``, ``engine`` (any process on the gateway other
    than the whole host) or ``host``."""
    proc = monitor["process"].astype(str)
    role = monitor["role"].astype(str)
    kind = proc.where(proc.isin(["csms", "fleet", "host"]), "other")
    return kind.where(~((role == "gateway") & (proc != "host")), "engine")


def cpu_series(monitor: pd.DataFrame) -> pd.DataFrame:
    """Per whole second and kind: process CPU summed over hosts (% of one core), and for ``host`` the
    busiest host's CPU (% of all its cores; on netns every host is the same machine)."""
    if monitor.empty:
        return pd.DataFrame(columns=["sec", "kind", "cpu_pct"])
    df = monitor.assign(kind=cpu_kind(monitor).to_numpy(), sec=np.floor(monitor["t_wall"]))
    procs = df[df["kind"] != "host"].groupby(["sec", "kind"], observed=True)["cpu_pct"].sum()
    host = df[df["kind"] == "host"].groupby("sec")["host_cpu_pct"].max()
    host.index = pd.MultiIndex.from_arrays([host.index, ["host"] * len(host)], names=["sec", "kind"])
    out = pd.concat([procs, host]).rename("cpu_pct").reset_index()
    return out


def cpu_table(run: Run) -> pd.DataFrame:
    """Per profile, N and kind (csms, fleet, engine: % of one core, summed over hosts; host: % of all cores
    of the busiest host): median and maximum over the OCPP phase's one-second samples."""
    sec = by_security(run)
    cols = ["profile", *sec, "stations", "kind", "median_cpu_pct", "max_cpu_pct"]
    mon = run.monitor
    if mon.empty:
        return pd.DataFrame(columns=cols)
    parts = []
    for cell, g in mon.groupby("cell", observed=True, sort=False):
        s = cpu_series(g)
        s.insert(0, "cell", cell)
        parts.append(s)
    df = run.with_cells(pd.concat(parts, ignore_index=True))
    out = df.groupby(["profile", *sec, "stations", "kind"], observed=True, sort=False)["cpu_pct"].agg(
        median_cpu_pct="median", max_cpu_pct="max")
    return _sort(out.reset_index()[cols], order_of(run), [*sec, "stations", "kind"])


def events_table(run: Run) -> pd.DataFrame:
    """Per cell with connection trouble: disconnections, reconnections, downtime, queued messages."""
    sec = by_security(run)
    cols = ["cell", "profile", *sec, "stations", "disconnected", "reconnected", "connect_failed",
            "downtime_median_ms", "downtime_max_ms", "queued_delivered", "queued_median_ms", "queued_max_ms"]
    ev = run.events
    if ev.empty:
        return pd.DataFrame(columns=cols)
    trouble = ev[ev["event"].isin(["disconnected", "reconnected", "connect_failed", "queue_flushed"])]
    if trouble.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for cell, g in trouble.groupby("cell", observed=True, sort=False):
        rec = g[g["event"] == "reconnected"]["downtime_ms"]
        q = run.calls[(run.calls["cell"] == cell) & run.calls["queued_ms"].notna()]["queued_ms"]
        flushed = pd.to_numeric(g[g["event"] == "queue_flushed"]["detail"].astype(str), errors="coerce")
        rows.append({"cell": cell, "disconnected": int((g["event"] == "disconnected").sum()),
                     "reconnected": int((g["event"] == "reconnected").sum()),
                     "connect_failed": int((g["event"] == "connect_failed").sum()),
                     "downtime_median_ms": rec.median(), "downtime_max_ms": rec.max(),
                     "queued_delivered": int(flushed.sum()) if flushed.notna().any() else len(q),
                     "queued_median_ms": q.median(), "queued_max_ms": q.max()})
    out = pd.DataFrame(rows)
    meta = run.cells.set_index("cell")[["profile", *sec, "stations"]]
    out = out.join(meta, on="cell")
    return _sort(out[cols], order_of(run), [*sec, "stations", "cell"])


# -- connection set-up: TCP, TLS, WebSocket upgrade, first BootNotification ----------------------------
#: the timed phases of a connection's set-up, in the order they happen (``handshake`` events)
SETUP_PHASES = ("tcp", "tls", "ws")
SETUP_COLUMNS = ["profile", "security", "stations", "added_rtt_ms", "tls", "connections", "first_connections",
                 "tcp_median_ms", "tcp_p90_ms", "tls_median_ms", "tls_p90_ms", "ws_median_ms", "ws_p90_ms",
                 "setup_median_ms", "setup_p90_ms", "tls_rtts", "setup_rtts", "booted", "boot_median_ms",
                 "boot_p90_ms", "since_connect_median_ms", "since_connect_p90_ms", "tls_out_median_bytes",
                 "tls_in_median_bytes", "resumed_pct", "connect_failed", "failure_reasons"]
RECONNECT_COLUMNS = ["profile", "security", "added_rtt_ms", "outage_cells", "stations", "stations_reconnected",
                     "reconnections", "tcp_median_ms", "tls_median_ms", "ws_median_ms", "setup_median_ms",
                     "setup_p90_ms", "tls_rtts", "setup_rtts", "resumed_pct", "setup_resumed_median_ms",
                     "setup_not_resumed_median_ms", "restored_to_reconnected_median_ms",
                     "restored_to_reconnected_p90_ms"]
HANDSHAKE_COLUMNS = ["cell", "host", "station_id", "t_wall", "connection", "tcp_ms", "tls_ms", "ws_ms", "dns_ms",
                     "setup_ms", "tls", "cipher", "resumed", "tls_out_bytes", "tls_in_bytes"]


def security_variants(run: Run) -> pd.Series:
    """Per cell (index ``cell``): its security variant's label; for a cell that records none, ``sp1`` when
    the plan used HTTP Basic auth, else ``sp0`` (what the fleets ran before security profiles were swept)."""
    if run.cells.empty:
        return pd.Series(dtype="object", name="security")
    c = run.cells
    label = c["security"].astype(str).where(c["security"].astype(str) != "",
                                            "sp" + c["security_profile"].astype(str))
    return pd.Series(label.to_numpy(), index=c["cell"].astype(str), name="security")


def _event_rows(run: Run, kind: str) -> pd.DataFrame:
    ev = run.events
    if ev.empty:
        return ev
    return ev[ev["event"].astype(str) == kind]


def _connection_numbers(rows: pd.DataFrame) -> pd.Series:
    """The ``connection`` column, or, where a file has none (format /1), each station's rows counted in time
    order (1 for its first)."""
    conn = rows["connection"].astype("float64")
    if conn.isna().any():
        order = rows.assign(_cell=rows["cell"].astype(str), _h=rows["host"].astype(str),
                            _s=rows["station_id"].astype(str)).sort_values("t_wall", kind="stable")
        counted = order.groupby(["_cell", "_h", "_s"], sort=False).cumcount() + 1
        conn = conn.fillna(counted.reindex(rows.index).astype("float64"))
    return conn


def _detail_frame(rows: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    parsed = [RF.parse_detail(str(d)) for d in rows["detail"]]
    return pd.DataFrame({k: [p.get(k, "") for p in parsed] for k in keys}, index=rows.index)


def handshakes(run: Run) -> pd.DataFrame:
    """One row per ``handshake`` event (a connection's set-up, docs/results.md), its detail parsed: the
    milliseconds of the TCP connect, TLS handshake (NaN without TLS) and WebSocket upgrade, ``setup_ms`` (their
    sum; TCP + WebSocket without TLS), the TLS version (``none`` without TLS), cipher, ``resumed`` (1/0, NaN
    without TLS) and the handshake's TLS bytes; ``connection`` 1 is a station's first connection."""
    rows = _event_rows(run, "handshake")
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c.endswith(("_ms", "_bytes")) else "object")
                             for c in HANDSHAKE_COLUMNS})
    d = _detail_frame(rows, RF.HANDSHAKE_KEYS)
    num = {k: pd.to_numeric(d[k], errors="coerce") for k in ("tcp_ms", "tls_ms", "ws_ms", "dns_ms", "resumed",
                                                            "tls_out", "tls_in")}
    tls = d["tls"].replace("", "none")
    with_tls = tls != "none"
    out = pd.DataFrame({
        "cell": rows["cell"].astype(str), "host": rows["host"].astype(str),
        "station_id": rows["station_id"].astype(str), "t_wall": rows["t_wall"].astype("float64"),
        "connection": _connection_numbers(rows),
        "tcp_ms": num["tcp_ms"], "tls_ms": num["tls_ms"].where(with_tls), "ws_ms": num["ws_ms"],
        "dns_ms": num["dns_ms"], "tls": tls, "cipher": d["cipher"], "resumed": num["resumed"].where(with_tls),
        "tls_out_bytes": num["tls_out"].where(with_tls), "tls_in_bytes": num["tls_in"].where(with_tls)})
    out["setup_ms"] = out["tcp_ms"] + out["tls_ms"].fillna(0.0) + out["ws_ms"]
    return out[HANDSHAKE_COLUMNS].reset_index(drop=True)


def _p(values: pd.Series, q: float) -> float:
    v = values.dropna()
    return float(v.quantile(q)) if len(v) else math.nan


def _rtts(ms: float, added: float) -> float:
    """``ms`` in round trips of the profile's added RTT (NaN when the profile adds none)."""
    return ms / added if added and not math.isnan(added) and added > 0 else math.nan


def _reasons(details: pd.Series) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in details.astype(str).replace("", "(no reason)").value_counts()
                     .head(3).items())


def setup_table(run: Run) -> pd.DataFrame:
    """Per link profile, security variant and N: how long connecting took (``handshake`` events) and how
    long until the station was in service (``booted`` events).

    ``connections`` counts every handshake (first connections and reconnections), ``first_connections``
    the stations' first; the set-up medians and 90th percentiles (``tcp``, ``tls``, ``ws`` and ``setup`` =
    their sum) and the TLS bytes are over first connections (reconnections: ``reconnect_table``).
    ``tls_rtts`` and ``setup_rtts``: the medians divided by the profile's added RTT (how many round trips
    they took; NaN when the profile adds none). ``boot_*``: the first accepted BootNotification's RTT,
    ``since_connect_*``: from the start of that connection's TCP connect to the answer. ``resumed_pct``: the
    share of all TLS connections whose session was resumed. ``connect_failed``: failed attempts, with the
    most frequent reasons. ``security`` is the cell's variant label (for a cell that records none: sp0, or
    sp1 when the plan used HTTP Basic auth). Cells with neither a handshake nor a failed attempt have no row."""
    hs = handshakes(run)
    booted = _event_rows(run, "booted")
    failed = _event_rows(run, "connect_failed")
    if hs.empty and failed.empty or run.cells.empty:
        return pd.DataFrame(columns=SETUP_COLUMNS)
    meta = run.cells.set_index(run.cells["cell"].astype(str))[["profile", "stations", "added_rtt_ms"]].assign(
        security=security_variants(run))
    cells_with = set(hs["cell"]) | set(failed["cell"].astype(str))
    rows = []
    for (profile, security, n), m in meta[meta.index.isin(cells_with)].groupby(
            ["profile", "security", "stations"], sort=False):
        ids = set(m.index)
        h = hs[hs["cell"].isin(ids)]
        first = h[h["connection"] == 1]
        b = booted[booted["cell"].astype(str).isin(ids)] if len(booted) else booted
        bd = _detail_frame(b, RF.BOOTED_KEYS) if len(b) else pd.DataFrame(columns=list(RF.BOOTED_KEYS))
        boot = pd.to_numeric(bd["boot_ms"], errors="coerce")
        since = pd.to_numeric(bd["since_connect_ms"], errors="coerce")
        f = failed[failed["cell"].astype(str).isin(ids)] if len(failed) else failed
        added = float(m["added_rtt_ms"].iloc[0])
        tls_h = h[h["tls"] != "none"]
        r = {"profile": profile, "security": security, "stations": int(n), "added_rtt_ms": added,
             "tls": ", ".join(sorted(set(h["tls"]))), "connections": len(h), "first_connections": len(first)}
        for part in (*SETUP_PHASES, "setup"):
            r[f"{part}_median_ms"] = _p(first[f"{part}_ms"], 0.5)
            r[f"{part}_p90_ms"] = _p(first[f"{part}_ms"], 0.9)
        r["tls_rtts"] = _rtts(r["tls_median_ms"], added)
        r["setup_rtts"] = _rtts(r["setup_median_ms"], added)
        r.update(booted=int(boot.notna().sum()), boot_median_ms=_p(boot, 0.5), boot_p90_ms=_p(boot, 0.9),
                 since_connect_median_ms=_p(since, 0.5), since_connect_p90_ms=_p(since, 0.9),
                 tls_out_median_bytes=_p(first["tls_out_bytes"], 0.5),
                 tls_in_median_bytes=_p(first["tls_in_bytes"], 0.5),
                 resumed_pct=100.0 * float(tls_h["resumed"].mean()) if tls_h["resumed"].notna().any() else math.nan,
                 connect_failed=len(f), failure_reasons=_reasons(f["detail"]) if len(f) else "")
        rows.append(r)
    if not rows:
        return pd.DataFrame(columns=SETUP_COLUMNS)
    return _sort(pd.DataFrame(rows)[SETUP_COLUMNS], order_of(run), ["security", "stations"])


def reconnect_table(run: Run) -> pd.DataFrame:
    """Per link profile and security variant, over the cells with an outage (cell.json ``outage``): the
    stations' reconnections once the link was back (``t_wall_end``).

    ``reconnections``: handshakes on a station's second or later connection at or after ``t_wall_end``; their
    set-up medians (``tcp``, ``tls``, ``ws``, ``setup`` = the sum, and its p90), in round trips of the added
    RTT, ``resumed_pct`` (the share whose TLS session was resumed; NaN without TLS) and the set-up median of
    the resumed and of the other ones apart. ``stations_reconnected`` of ``stations``: the stations with a
    ``reconnected`` event at or after ``t_wall_end``; ``restored_to_reconnected_*``: from ``t_wall_end`` to
    each such station's first ``reconnected`` event (ms)."""
    if run.cells.empty or run.events.empty:
        return pd.DataFrame(columns=RECONNECT_COLUMNS)
    cells = run.cells[run.cells["outage_t1"].notna()]
    cells = cells[cells["cell"].astype(str).isin(set(run.events["cell"].astype(str)))]
    if cells.empty:
        return pd.DataFrame(columns=RECONNECT_COLUMNS)
    meta = cells.set_index(cells["cell"].astype(str))[["profile", "stations", "added_rtt_ms", "outage_t1"]].assign(
        security=security_variants(run))
    hs = handshakes(run)
    hs = hs.assign(restored=hs["cell"].map(meta["outage_t1"]))
    hs = hs[(hs["connection"] >= 2) & hs["restored"].notna() & (hs["t_wall"] >= hs["restored"])]
    rec = _event_rows(run, "reconnected")
    rec = rec.assign(cell=rec["cell"].astype(str), key=rec["host"].astype(str) + "\x1f" + rec["station_id"].astype(str))
    rec = rec.assign(restored=rec["cell"].map(meta["outage_t1"]))
    rec = rec[rec["restored"].notna() & (rec["t_wall"] >= rec["restored"])]
    first_rec = rec.sort_values("t_wall", kind="stable").drop_duplicates(["cell", "key"])
    rows = []
    for (profile, security), m in meta.groupby(["profile", "security"], sort=False):
        ids = set(m.index)
        h = hs[hs["cell"].isin(ids)]
        fr = first_rec[first_rec["cell"].isin(ids)]
        waited = (fr["t_wall"] - fr["restored"]) * 1000.0
        added = float(m["added_rtt_ms"].iloc[0])
        tls_h = h[h["tls"] != "none"]
        r = {"profile": profile, "security": security, "added_rtt_ms": added, "outage_cells": len(m),
             "stations": int(m["stations"].sum()), "stations_reconnected": len(fr), "reconnections": len(h)}
        for part in (*SETUP_PHASES, "setup"):
            r[f"{part}_median_ms"] = _p(h[f"{part}_ms"], 0.5)
        r["setup_p90_ms"] = _p(h["setup_ms"], 0.9)
        r["tls_rtts"] = _rtts(r["tls_median_ms"], added)
        r["setup_rtts"] = _rtts(r["setup_median_ms"], added)
        known = tls_h["resumed"].notna().any()
        r["resumed_pct"] = 100.0 * float(tls_h["resumed"].mean()) if known else math.nan
        r["setup_resumed_median_ms"] = _p(tls_h.loc[tls_h["resumed"] == 1, "setup_ms"], 0.5)
        r["setup_not_resumed_median_ms"] = _p(tls_h.loc[tls_h["resumed"] == 0, "setup_ms"], 0.5)
        r["restored_to_reconnected_median_ms"] = _p(waited, 0.5)
        r["restored_to_reconnected_p90_ms"] = _p(waited, 0.9)
        rows.append(r)
    return _sort(pd.DataFrame(rows)[RECONNECT_COLUMNS], order_of(run), ["security"])


# -- what ran: event loop, schema validation, versions ------------------------------------------------
#: what affects timing, in display order: the event loop (and its version), the OCPP schema validation
#: mode, and the versions of Python, the OCPP and WebSocket libraries, uvloop and labkit
RUNTIME_KEYS = ["event_loop", "event_loop_version", "validation", "python", "ocpp", "websockets", "uvloop",
                "labkit"]
RUNTIME_LABELS = {"event_loop": "event loop", "event_loop_version": "event loop version",
                  "validation": "schema validation", "python": "Python", "ocpp": "ocpp", "websockets": "websockets",
                  "uvloop": "uvloop", "labkit": "labkit"}
PROCESS_OF_ROLE = {"cpo": "csms", "evse": "fleet"}


def _status_facts(st: dict) -> dict[str, str]:
    """What a simulator's status says it ran with (format /2): event loop, validation, versions."""
    out = {k: str(st[k]) for k in ("event_loop", "event_loop_version", "validation") if st.get(k) not in (None, "")}
    vers = st.get("versions")
    if isinstance(vers, dict):  # (a list there is the CSMS's OCPP versions of format /1: not this)
        out.update({k: str(vers[k]) for k in ("python", "labkit", "ocpp", "websockets", "uvloop")
                    if vers.get(k) not in (None, "")})
    return out


def runtime_table(run: Run) -> pd.DataFrame:
    """Per host running an OCPP simulator (the CSMS on the CPO, a fleet on each EVSE host): the event loop,
    the schema validation mode and the versions that affect timing.

    What ran wins over what was installed: the values come from the simulators' last statuses in the
    cells' cell.json (``ocpp.csms``, ``ocpp.fleets``), and, for what those do not say, from the manifest's
    host facts (``hosts.<name>``: what was installed, and the event loop the simulators would pick).
    ``source`` says which; a value that differed between cells is listed with all its values ("a | b")."""
    cols = ["host", "role", "process", *RUNTIME_KEYS, "source", "differs_between_cells"]
    m = run.manifest
    hosts = m.get("hosts") if isinstance(m.get("hosts"), dict) else {}
    roles = {str(n): str(h.get("role") or "") for n, h in hosts.items() if isinstance(h, dict)}
    cpos = [n for n, r in roles.items() if r == "cpo"]
    cpo = cpos[0] if len(cpos) == 1 else "cpo"
    ran: dict[str, dict[str, set[str]]] = {}
    for cj in run.cell_meta.values():
        o = cj.get("ocpp") if isinstance(cj.get("ocpp"), dict) else {}
        statuses = []
        if isinstance(o.get("csms"), dict):
            statuses.append((cpo, o["csms"]))
        if isinstance(o.get("fleets"), dict):
            statuses += [(str(h), st) for h, st in o["fleets"].items() if isinstance(st, dict)]
        for host, st in statuses:
            for k, v in _status_facts(st).items():
                ran.setdefault(host, {}).setdefault(k, set()).add(v)
    names = [n for n, r in roles.items() if r in PROCESS_OF_ROLE] + [h for h in ran if h not in roles]
    rows = []
    for name in dict.fromkeys(names):
        h = hosts.get(name) if isinstance(hosts.get(name), dict) else {}
        role = roles.get(name) or ("cpo" if name == cpo else "evse")
        seen = ran.get(name, {})
        row = {"host": name, "role": role, "process": PROCESS_OF_ROLE.get(role, ""), "differs_between_cells": ""}
        for k in RUNTIME_KEYS:
            if k in seen:
                row[k] = " | ".join(sorted(seen[k]))
            else:
                v = h.get(k)
                row[k] = str(v) if v not in (None, "") else ""
        row["source"] = "status" if seen else ("host facts" if h else "")
        row["differs_between_cells"] = ", ".join(k for k in RUNTIME_KEYS if len(seen.get(k, ())) > 1)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def runtime_by_role(tbl: pd.DataFrame) -> pd.DataFrame:
    """``runtime_table`` with the hosts of one role collapsed into one row where their values are the same
    (``hosts``: their names, or how many)."""
    cols = ["hosts", "role", "process", *RUNTIME_KEYS, "source"]
    if tbl.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    keys = ["role", "process", *RUNTIME_KEYS, "source"]
    for vals, g in tbl.groupby(keys, sort=False, dropna=False):
        names = list(g["host"])
        label = ", ".join(names) if len(names) <= 3 else f"{len(names)} hosts: {names[0]} … {names[-1]}"
        rows.append({"hosts": label, **dict(zip(keys, vals, strict=True))})
    return pd.DataFrame(rows, columns=cols)


def runtime_by_process(run: Run) -> dict[str, str]:
    """One value per process kind and key ("fleet event loop" -> "uvloop"), several hosts' differing
    values joined with " | ": what ``labkit compare`` sets side by side."""
    tbl = runtime_table(run)
    out: dict[str, str] = {}
    for proc, g in tbl.groupby("process", sort=False):
        name = {"csms": "CSMS", "fleet": "fleets"}.get(str(proc), str(proc) or "other")
        for k in RUNTIME_KEYS:
            vals = sorted({v for cell in g[k] for v in str(cell).split(" | ") if v})
            out[f"{name}: {RUNTIME_LABELS[k]}"] = " | ".join(vals) if vals else "—"
    return out
