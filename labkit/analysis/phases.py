"""A schedule's phases (``labkit bench --schedule``): what ran when, and what happened in each phase.

Every time is attributed to a phase by the phases' times *as applied on the gateway* (``Run.schedule``, from
the cell's schedule.json): phase k holds from its ``applied_start`` to the next phase's ``applied_start`` (the
last one to its ``applied_end``, when the schedule was stopped or ended). A time before the first phase held
belongs to no phase (*before*; the first calls of stations that started early), one after the last phase
ended to *after* (the fleets' last calls once the schedule stopped); those rows appear only when they hold
something. A repeated schedule's phases are told apart by their pass (``cycle``). Times stamped on other
hosts (the stations', the CSMS's) are put on the gateway's clock first, with the clock offsets the schedule
measured over SSH when it started (``clock_shifts``: zero on netns, up to a second on VMs without time sync).

- ``phase_table``: each phase as applied: when (seconds from the first phase's start), for how long, how late
  against the plan, whether the read-back matched;
- ``phase_tx_table``: per phase, the transaction accounting of labkit.analysis.transactions (sent,
  acknowledged, handled, duplicates, lost, ...) over the messages *issued* in that phase (a message belongs to
  the phase in which the station first tried to send it, however late it was answered or delivered: a
  message queued during an outage belongs to the outage), with the OCPP calls sent in the phase (answered,
  failed, median and p95 RTT of the answered ones) and the stations' connection events in it (disconnected,
  reconnected, connect_failed). Summed over a cell's phases (with *before* and *after*), the counts are the
  cell's ``tx_table``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labkit.analysis import transactions as X

if TYPE_CHECKING:
    from labkit.analysis.load import Run

#: ``seq`` of the times before the first phase held and after the last one ended
BEFORE, AFTER = 0, -1
EVENTS = ("disconnected", "reconnected", "connect_failed")
CALL_FAILURES = ("timeout", "connection_lost", "send_failed")


def schedule_cells(run: Run) -> list[str]:
    """The cells that have recorded phases, in run order."""
    if run.schedule.empty:
        return []
    have = set(run.schedule["cell"])
    return [c for c in run.cells["cell"].astype(str) if c in have]


def _phases(run: Run, cell: str) -> pd.DataFrame:
    ph = run.schedule[run.schedule["cell"] == cell].sort_values("seq").reset_index(drop=True)
    start = ph["applied_start"].to_numpy(dtype=float)
    end = np.append(start[1:], np.nan)
    last_end = ph["applied_end"].to_numpy(dtype=float)[-1] if len(ph) else np.nan
    if len(ph):
        end[-1] = last_end if not np.isnan(last_end) else np.inf
    return ph.assign(start=start, end=end)


def origin(run: Run, cell: str) -> float:
    """The time the cell's schedule started (its first phase's applied start, gateway clock)."""
    ph = _phases(run, cell)
    return float(ph["start"].iloc[0]) if len(ph) else float("nan")


def clock_shifts(run: Run, cell: str) -> dict[str, float]:
    """host -> seconds to add to a time stamped on that host to put it on the gateway's clock (the phases'):
    the gateway's offset minus the host's, both measured over SSH when the schedule started (schedule.json's
    ``gateway_clock`` and ``host_clocks``). Empty where they were not measured (one machine, one clock)."""
    meta = run.schedule_meta.get(cell) or {}
    gw = ((meta.get("gateway_clock") or {}).get("start") or {}).get("offset_s")
    hosts = (meta.get("host_clocks") or {}).get("start") or {}
    if not isinstance(gw, int | float):
        return {}
    return {str(h): float(gw) - float(o["offset_s"]) for h, o in hosts.items()
            if isinstance(o, dict) and isinstance(o.get("offset_s"), int | float)}


def on_gateway_clock(run: Run, cell: str, t: np.ndarray | pd.Series, hosts: pd.Series | None) -> np.ndarray:
    """Times stamped on the given hosts (one per time), on the gateway's clock (``clock_shifts``)."""
    t = np.asarray(t, dtype=float)
    shifts = clock_shifts(run, cell)
    if hosts is None or not shifts:
        return t
    return t + np.array([shifts.get(str(h), 0.0) for h in hosts], dtype=float)


def station_hosts(run: Run, cell: str) -> dict[str, str]:
    """station id -> the host its fleet ran on (from its calls)."""
    calls = run.calls[run.calls["cell"] == cell] if len(run.calls) else run.calls
    if not len(calls) or "host" not in calls:
        return {}
    pairs = calls[["station_id", "host"]].dropna().drop_duplicates("station_id")
    return dict(zip(pairs["station_id"].astype(str), pairs["host"].astype(str), strict=True))


def assign(run: Run, cell: str, t: np.ndarray | pd.Series, hosts: pd.Series | None = None) -> np.ndarray:
    """The ``seq`` of the phase each time (epoch s) falls in: ``BEFORE`` before the first phase held (and for a
    missing time), ``AFTER`` once the last one ended. With ``hosts`` (where each time was stamped) the times
    are first put on the gateway's clock (``on_gateway_clock``)."""
    ph = _phases(run, cell)
    t = on_gateway_clock(run, cell, t, hosts)
    if ph.empty:
        return np.full(len(t), BEFORE, dtype=np.int64)
    starts, ends, seqs = ph["start"].to_numpy(), ph["end"].to_numpy(), ph["seq"].to_numpy(dtype=np.int64)
    i = np.searchsorted(starts, np.where(np.isnan(t), -np.inf, t), side="right") - 1
    out = np.where(i < 0, BEFORE, seqs[np.clip(i, 0, len(seqs) - 1)])
    late = (i >= 0) & (t >= ends[np.clip(i, 0, len(ends) - 1)])
    return np.where(late, AFTER, out).astype(np.int64)


def phase_table(run: Run) -> pd.DataFrame:
    """Each phase of each schedule cell as applied: ``start_s`` / ``end_s`` from the first phase's start,
    ``planned_start_s`` on the same origin, ``duration_s`` as applied, ``latency_ms`` (applied - planned;
    none for the first phase), ``verified`` (the read-back after the switch)."""
    rows = []
    for cell in schedule_cells(run):
        ph = _phases(run, cell)
        t0 = float(ph["start"].iloc[0])
        meta = run.cells[run.cells["cell"] == cell].iloc[0]
        for r in ph.itertuples(index=False):
            end = r.end if np.isfinite(r.end) else np.nan
            rows.append({"cell": cell, "cell_profile": meta["profile"], "stations": int(meta["stations"]),
                         "schedule": meta["schedule"], "seq": int(r.seq), "cycle": int(r.cycle) if r.cycle == r.cycle
                         else 0, "label": r.label, "link": r.profile, "outage": bool(r.outage),
                         "planned_start_s": r.planned_start - t0, "start_s": r.start - t0, "end_s": end - t0,
                         "duration_s": end - r.start, "latency_ms": r.latency_ms, "verified": r.verified,
                         "applied_start": r.start, "applied_end": end})
    return pd.DataFrame(rows, columns=["cell", "cell_profile", "stations", "schedule", "seq", "cycle", "label",
                                       "link", "outage", "planned_start_s", "start_s", "end_s", "duration_s",
                                       "latency_ms", "verified", "applied_start", "applied_end"])


COLUMNS = ["cell", "seq", "cycle", "label", "link", "outage", "start_s", "end_s", "accounting", *X.COUNTS,
           "calls_ok", "calls_failed", "rtt_median_ms", "rtt_p95_ms", *EVENTS]


def phase_tx_table(run: Run) -> pd.DataFrame:
    """Per schedule cell and phase: the transaction counts of the messages issued in it, the OCPP calls sent
    in it and the connection events in it (module docstring). Counts a cell's accounting lacks are empty."""
    cells = schedule_cells(run)
    if not cells:
        return pd.DataFrame(columns=COLUMNS)
    acc = X.tx_table(run).set_index("cell")["accounting"].to_dict() if len(X.tx_table(run)) else {}
    keys = X.tx_keys(run)
    untagged = X.tx_untagged(run)
    pt = phase_table(run)
    out = []
    for cell in cells:
        rows = pt[pt["cell"] == cell]
        base = pd.DataFrame({"seq": rows["seq"].to_numpy(), "cycle": rows["cycle"].to_numpy(),
                             "label": rows["label"].to_numpy(), "link": rows["link"].to_numpy(),
                             "outage": rows["outage"].to_numpy(), "start_s": rows["start_s"].to_numpy(),
                             "end_s": rows["end_s"].to_numpy()})
        extra = pd.DataFrame({"seq": [BEFORE, AFTER], "cycle": [0, 0], "label": ["(before)", "(after)"],
                              "link": ["", ""], "outage": [False, False], "start_s": [np.nan, rows["end_s"].iloc[-1]],
                              "end_s": [0.0, np.nan]})
        frame = pd.concat([extra.iloc[:1], base, extra.iloc[1:]], ignore_index=True).set_index("seq")
        k = keys[keys["cell"] == cell]
        where = station_hosts(run, cell)
        counts = k.assign(seq=assign(run, cell, k["t_issued"], k["station_id"].astype(str).map(where))).groupby("seq")[
            [c for c in X.COUNTS if c != "untagged"]].sum()
        u = untagged[untagged["cell"] == cell]
        counts["untagged"] = pd.Series(assign(run, cell, u["t_wall"], u.get("host"))).value_counts()
        frame = frame.join(counts.reindex(columns=X.COUNTS))
        frame[X.COUNTS] = frame[X.COUNTS].fillna(0).astype("int64").astype("Int64")
        calls = run.calls[run.calls["cell"] == cell] if len(run.calls) else run.calls
        if len(calls):
            cs = calls.assign(seq=assign(run, cell, calls["t_wall"], calls.get("host")))
            okc = cs[(cs["outcome"] == "ok") & cs["rtt_ms"].notna()]
            frame["calls_ok"] = okc.groupby("seq").size()
            frame["calls_failed"] = cs[cs["outcome"].isin(CALL_FAILURES)].groupby("seq").size()
            frame["rtt_median_ms"] = okc.groupby("seq")["rtt_ms"].median()
            frame["rtt_p95_ms"] = okc.groupby("seq")["rtt_ms"].quantile(0.95)
        ev = run.events[run.events["cell"] == cell] if len(run.events) else run.events
        for name in EVENTS:
            e = ev[ev["event"] == name] if len(ev) else ev
            frame[name] = (pd.Series(assign(run, cell, e["t_wall"], e.get("host"))).value_counts() if len(e)
                           else pd.Series(dtype="int64"))
        for col in ("calls_ok", "calls_failed", *EVENTS):
            if col not in frame:
                frame[col] = 0
            frame[col] = frame[col].fillna(0).astype("int64")
        for col in ("rtt_median_ms", "rtt_p95_ms"):
            if col not in frame:
                frame[col] = np.nan
        # the rows outside the schedule only when something happened there
        outside = frame.index.isin([BEFORE, AFTER])
        empty = (frame[X.COUNTS].fillna(0).sum(axis=1) + frame[["calls_ok", "calls_failed", *EVENTS]].sum(axis=1)) == 0
        frame = frame[~(outside & empty.to_numpy())]
        a = acc.get(cell, X.NOT_AVAILABLE)
        frame["accounting"] = a
        if a == X.NOT_AVAILABLE:
            frame[X.COUNTS] = pd.NA
        elif a == X.FLEET_ONLY:
            frame[list(X.CSMS_COUNTS)] = pd.NA
        frame = frame.reset_index()
        frame.insert(0, "cell", cell)
        out.append(frame[COLUMNS])
    return pd.concat(out, ignore_index=True)
