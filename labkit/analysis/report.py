"""``labkit report``: one results directory -> report.md, report.html, figures/ and tables/*.csv.

The report opens with what is missing or suspect (so a partial or corrupt run says so first), then the run's
provenance, the network baselines (ping: configured against measured RTT; iperf3: goodput against the
configured rate), OCPP round-trip times in the dissertation's table layout (plus p95, p99 and a bootstrap
95% CI for the median), call outcomes, the protocol's own cost (OCPP RTT minus ping RTT per action),
scaling with the number of chargers, RTT and CPU over time, and outages. docs/reading-results.md explains
how to read each part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from labkit.analysis import tables as T
from labkit.analysis.doc import Document
from labkit.analysis.load import Run, load_run
from labkit.analysis.order import fmt_num, fmt_rate

if TYPE_CHECKING:
    from labkit.analysis.figures import FigureJobs

MAX_TIMELINES = 12
DISSERTATION_ROWS = [("mean", "mean"), ("std", "std"), ("median", "median"), ("min", "min"), ("max", "max"),
                     ("p95", "p95"), ("p99", "p99")]


@dataclass
class ReportResult:
    run: Run
    markdown: Path
    html: Path
    figures: list[str] = field(default_factory=list)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, fmt: str = "png", seed: int = 0,
                 figures: bool = True, workers: int | None = None) -> ReportResult:
    """Read ``run_dir`` and write the report into ``out_dir`` (default: ``run_dir/report``)."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "report"
    doc, figs = build(run, out, fmt=fmt, seed=seed, figures=figures, workers=workers)
    md, html = doc.write(out, "report")
    return ReportResult(run, md, html, figs)


def _ts(value) -> str:
    if value is None or value == "":
        return "—"
    return str(value)


def _kv(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["", "value"])


def problems_section(doc: Document, run: Run) -> None:
    if not run.problems:
        return
    doc.h("What is missing or suspect")
    doc.p("The figures and tables below use whatever could be read. These files were missing, unreadable or "
          "cut short:")
    kinds = {"missing": "missing", "corrupt": "corrupt (skipped)", "incomplete": "incomplete", "note": "note"}
    doc.bullets(f"**{kinds.get(p.kind, p.kind)}**: `{p.where}`: {p.what}" for p in run.problems)


def provenance_section(doc: Document, run: Run) -> None:
    m = run.manifest
    plan = m.get("plan") if isinstance(m.get("plan"), dict) else {}
    doc.h("The run")
    cells = run.cells
    complete = int((cells["status"] == "complete").sum()) if len(cells) else 0
    rows = [("run id", f"`{run.run_id}`"), ("status", run.status + (f" ({m['reason']})" if m.get("reason") else "")),
            ("command", "`" + " ".join(map(str, m["command"])) + "`" if isinstance(m.get("command"), list)
             else _ts(m.get("command"))),
            ("started / ended (UTC)", f"{_ts(m.get('started'))} / {_ts(m.get('ended'))}"),
            ("backend / engine", f"{run.backend} / {run.engine}"), ("OCPP version", run.ocpp_version),
            ("seed", _ts(m.get("seed"))), ("cells", f"{complete} complete of {len(cells)}")]
    if len(cells):
        rows.append(("profiles", ", ".join(T.order_of(run))))
        rows.append(("fleet sizes N (EVSE hosts × stations per host)",
                     ", ".join(f"{n} ({h}×{s})" for n, h, s in
                               cells[["stations", "evse_hosts", "stations_per_host"]].drop_duplicates()
                               .sort_values("stations").itertuples(index=False))))
    for key in ("scenario", "repeats"):
        if key in plan:
            rows.append((key, _ts(plan.get(key))))
    for key in ("ping", "iperf", "outage"):
        if plan.get(key):
            rows.append((key, "`" + json.dumps(plan[key], separators=(", ", ": ")) + "`"))
    ctl = m.get("controller") if isinstance(m.get("controller"), dict) else {}
    if ctl:
        rows.append(("controller", ", ".join(f"{k} {v}" for k, v in ctl.items())))
    doc.table(_kv(rows))
    hosts = m.get("hosts") if isinstance(m.get("hosts"), dict) else {}
    if hosts:
        keys = sorted({k for h in hosts.values() if isinstance(h, dict) for k in h})
        hdf = pd.DataFrame([{"host": n, **{k: _ts(h.get(k)) for k in keys}} for n, h in hosts.items()
                            if isinstance(h, dict)])
        doc.table(hdf, caption="Hosts (as recorded by the run)")


def ping_section(doc: Document, run: Run, jobs: FigureJobs, seed: int) -> None:
    from labkit.analysis import figures as F

    doc.h("Network: configured against measured RTT (ping)")
    tbl = T.ping_table(run, seed)
    if tbl.empty:
        doc.p("*No ping samples in this run.*")
        return
    disp = pd.DataFrame({
        "profile": tbl["profile"], "direction": tbl["direction"].map(F.DIR_LABEL),
        "configured added RTT (ms)": tbl["added_rtt_ms"].map(fmt_num),
        "median (ms)": tbl["median"].map(fmt_num),
        "median 95% CI (ms)": [f"{fmt_num(a)}–{fmt_num(b)}"
                               for a, b in zip(tbl["median_ci_lo"], tbl["median_ci_hi"], strict=True)],
        "mean (ms)": tbl["mean"].map(fmt_num), "std (ms)": tbl["std"].map(fmt_num),
        "min (ms)": tbl["min"].map(fmt_num), "p95 (ms)": tbl["p95"].map(fmt_num), "max (ms)": tbl["max"].map(fmt_num),
        "excess (ms)": tbl["excess_ms"].map(fmt_num), "replies": tbl["n"].astype(int),
        "lost": [f"{int(n)} ({fmt_num(p, 1)} %)" for n, p in zip(tbl["lost"], tbl["lost_pct"], strict=True)],
        "below configured": tbl["below_added"].astype(int),
    })
    doc.p("Each probe's round trip crosses the gateway in both directions, so a profile's *added RTT* is the "
          "sum of its uplink and downlink delays (the dissertation's slow.sh put all of it on the uplink). "
          "*Excess* is the median minus the configured added RTT minus the base RTT (the median of profile "
          "`none`, when the run has it). *Below configured* counts replies faster than the added delay, "
          "which a correct measurement never has.")
    doc.table(disp, "ping", raw=tbl)
    jobs.add(doc, F.fig_ping, (tbl, T.order_of(run)),
             "Configured added RTT (grey) against the measured ping RTT per profile and direction; below, the "
             "excess over the configured value.")


def iperf_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    from labkit.analysis import figures as F

    doc.h("Network: iperf3 goodput against the configured rate")
    tbl = T.iperf_table(run)
    if tbl.empty:
        doc.p("*No iperf3 results in this run.*")
        return
    tcp = tbl[tbl["proto"] == "tcp"]
    udp = tbl[tbl["proto"] == "udp"]
    if len(tcp):
        doc.table(pd.DataFrame({
            "profile": tcp["profile"], "direction": tcp["direction"].map(F.DIR_LABEL),
            "configured rate": tcp["configured_bps"].map(lambda v: "unlimited" if pd.isna(v) else fmt_rate(v)),
            "TCP goodput": tcp["bps"].map(fmt_rate), "share of configured (%)": tcp["pct_of_configured"].map(
                lambda v: fmt_num(v, 1)), "retransmits": tcp["retransmits"].map(lambda v: fmt_num(v, 0)),
            "cells": tcp["cells"].astype(int)}), "iperf_tcp", caption="TCP (receiver-side goodput; median over "
                                                                     "cells)", raw=tcp)
    if len(udp):
        doc.table(pd.DataFrame({
            "profile": udp["profile"], "direction": udp["direction"].map(F.DIR_LABEL),
            "UDP rate sent": udp["bps"].map(fmt_rate),
            "configured loss (%)": udp["configured_loss_pct"].map(lambda v: fmt_num(v, 2)),
            "measured loss (%)": udp["lost_pct"].map(lambda v: fmt_num(v, 2)),
            "jitter (ms)": udp["jitter_ms"].map(lambda v: fmt_num(v, 3))}), "iperf_udp",
            caption="UDP (sent below the bottleneck rate, so a queue never overflows: the loss is the link's "
                    "own; loss and jitter as iperf3 reports them)", raw=udp)
    jobs.add(doc, F.fig_goodput, (tbl, T.order_of(run)),
             "TCP goodput against the configured rate (black bars), absolute and as a share; the dotted line "
             "marks 90 %.")


def dissertation_layout(tbl: pd.DataFrame, n: int, order: list[str]) -> pd.DataFrame:
    """Rows: statistics; columns: profiles (as in the dissertation's tables 13 to 17), for one N."""
    sub = tbl[tbl["stations"] == n].set_index("profile")
    profiles = [p for p in order if p in sub.index]
    rows = []
    for label, key in DISSERTATION_ROWS:
        rows.append({"ms": label, **{p: fmt_num(sub.at[p, key]) for p in profiles}})
    rows.append({"ms": "median 95% CI", **{p: f"{fmt_num(sub.at[p, 'median_ci_lo'])}–"
                                              f"{fmt_num(sub.at[p, 'median_ci_hi'])}" for p in profiles}})
    rows.append({"ms": "calls (ok)", **{p: str(int(sub.at[p, "n"])) for p in profiles}})
    rows.append({"ms": "below configured", **{p: str(int(sub.at[p, "below_added"])) for p in profiles}})
    return pd.DataFrame(rows)


def ocpp_section(doc: Document, run: Run, jobs: FigureJobs, seed: int) -> None:
    from labkit.analysis import figures as F

    doc.h("OCPP round-trip time")
    tbl = T.ocpp_table(run, seed)
    if tbl.empty:
        doc.p("*No OCPP call samples in this run.*")
        return
    order = T.order_of(run)
    doc.p("In the dissertation's layout (its tables 13 to 17): one table per number of chargers N, one column "
          "per profile, times in milliseconds, every successful call of every action (and every repetition) "
          "pooled. Added here: p95, "
          "p99, a 95 % bootstrap confidence interval for the median (2000 resamples, seeded), and the count of "
          "calls faster than the profile's added RTT (physically impossible; the dissertation's shared timer "
          "produced many).")
    for n in sorted(tbl["stations"].unique()):
        doc.table(dissertation_layout(tbl, n, order), f"ocpp_rtt_n{n}",
                  caption=f"OCPP RTT, N = {n} charger{'s' if n != 1 else ''} (ms)",
                  raw=tbl[tbl["stations"] == n])
    ok = T.ocpp_ok(run)
    jobs.add(doc, F.fig_ocpp_box, (ok, order), "OCPP RTT per profile and N (log scale; box: quartiles and "
             "median; whiskers: 5th to 95th percentile; outliers not drawn).")
    jobs.add(doc, F.fig_ocpp_ecdf, (ok, order), "Empirical CDF of OCPP RTT per profile, one panel per N (log "
             "scale): a step means many calls with the same RTT; a long right tail means queueing or "
             "retransmissions.")
    oc = T.outcome_table(run)
    if len(oc):
        doc.h("Call outcomes", 3)
        doc.p("Calls that did not complete are not in the RTT figures; they are counted here. `call_error` "
              "is a CallError answer (its round trip is complete); `timeout`, `connection_lost` and "
              "`send_failed` got no answer.")
        disp = oc.copy()
        disp["failed_pct"] = disp["failed_pct"].map(lambda v: fmt_num(v, 2))
        disp = disp.rename(columns={"stations": "N", "failed_pct": "not ok (%)"})
        doc.table(disp, "outcomes", raw=oc)


def overhead_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    from labkit.analysis import figures as F

    doc.h("The protocol's own cost: OCPP RTT minus ping RTT")
    tbl = T.overhead_table(run)
    if tbl.empty:
        doc.p("*Needs both OCPP samples and ping samples for the same profile.*")
        return
    doc.p("For each profile, N and action: the median OCPP round trip minus the median ping round trip of the "
          "same profile. What remains is serialisation of the larger frames at the link's rate, TCP and "
          "WebSocket handling, JSON-schema validation on both sides, the CSMS's work and any queueing behind "
          "other chargers' messages.")
    ns = sorted(tbl["stations"].unique())
    order = T.order_of(run)
    for n in ([ns[0]] if len(ns) == 1 else [ns[0], ns[-1]]):
        piv = tbl[tbl["stations"] == n].pivot_table(index="profile", columns="action", values="overhead_ms")
        piv = piv.reindex([p for p in order if p in piv.index])
        disp = piv.map(fmt_num).reset_index()
        doc.table(disp, caption=f"OCPP RTT − ping RTT (median, ms), N = {n}")
    doc.tables["ocpp_overhead"] = tbl
    jobs.add(doc, F.fig_overhead, (tbl, order), "OCPP RTT minus ping RTT (medians, ms) per profile and "
             "action, for the smallest and the largest N.")
    csms = T.csms_table(run)
    if len(csms):
        doc.table(pd.DataFrame({"profile": csms["profile"], "N": csms["stations"], "messages": csms["n"],
                                "median (ms)": csms["median_ms"].map(fmt_num), "p95 (ms)": csms["p95_ms"].map(fmt_num),
                                "max (ms)": csms["max_ms"].map(fmt_num)}), "csms_handling",
                  caption="The CSMS's own handling time (frame received to answer sent)", raw=csms)


def scaling_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    from labkit.analysis import figures as F

    ok = T.ocpp_ok(run)
    if ok.empty or ok["stations"].nunique() < 2:
        return
    doc.h("Scaling with the number of chargers")
    q = ok.groupby(["profile", "stations"])["rtt_ms"].quantile([0.25, 0.5, 0.75, 0.95]).unstack()
    q.columns = ["p25", "p50", "p75", "p95"]
    q = q.reset_index()
    order = T.order_of(run)
    piv = {}
    for (p, n), r in q.set_index(["profile", "stations"]).iterrows():
        piv.setdefault(p, {})[f"N = {n}"] = f"{fmt_num(r['p50'])} [{fmt_num(r['p25'])}–{fmt_num(r['p75'])}]"
    disp = pd.DataFrame.from_dict(piv, orient="index")
    disp = disp.reindex([p for p in order if p in disp.index])
    disp = disp[sorted(disp.columns, key=lambda c: int(c.split("=")[1]))]
    doc.table(disp.reset_index(names="profile").fillna("—"), "scaling",
              caption="Median OCPP RTT [interquartile range] against N (ms)", raw=q)
    cpu = T.cpu_table(run)
    if len(cpu):
        names = {"csms": "CSMS", "fleet": "fleets", "engine": "shaping engine", "host": "busiest host"}
        c = cpu[cpu["kind"].isin(list(names))]
        med = c.pivot_table(index=["profile", "stations"], columns="kind", values="median_cpu_pct")
        mx = c.pivot_table(index=["profile", "stations"], columns="kind", values="max_cpu_pct")
        disp = pd.DataFrame(index=med.index)
        for kind in [k for k in names if k in med.columns]:
            unit = "% of all cores" if kind == "host" else "% of one core"
            disp[f"{names[kind]}: median / max ({unit})"] = [f"{fmt_num(a, 0)} / {fmt_num(b, 0)}"
                                                            for a, b in zip(med[kind], mx[kind], strict=False)]
        disp = disp.reset_index().rename(columns={"stations": "N"})
        disp = T._sort(disp, order, ["N"])
        doc.table(disp, "cpu", caption="CPU during the OCPP phase (processes summed over hosts, in % of one "
                                       "core; hosts in % of all their cores)", raw=cpu)
    jobs.add(doc, F.fig_scaling, (ok, order), "Median OCPP RTT (line), interquartile range (band) and p95 "
             "(dashed) against the number of chargers, per profile.")


def timeline_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    from labkit.analysis import figures as F

    if run.cells.empty or (run.calls.empty and run.monitor.empty):
        return
    doc.h("Over time: RTT and CPU during a run")
    order = T.order_of(run)
    cells = run.cells
    pick = []
    for p in order:
        sub = cells[cells["profile"] == p].sort_values(["stations", "repeat"])
        if len(sub):
            pick.append(sub.iloc[-1]["cell"])
    outage_cells = cells[cells["outage_t0"].notna()]["cell"].tolist()
    pick = list(dict.fromkeys(outage_cells + pick))[:MAX_TIMELINES]
    doc.p("For each profile, the cell with the most chargers (and every cell with an outage): every OCPP call's "
          "RTT at the time it was sent, the median per second, and the CPU of the CSMS, the fleets and the "
          "shaping engine. A rising median means a queue is building (the link or the CSMS is saturated); "
          "a CPU line at 100 % means one core is saturated.")
    for k, cid in enumerate(pick):
        cell = cells[cells["cell"] == cid].iloc[0].to_dict()
        calls = run.calls[run.calls["cell"] == cid]
        ev = run.events[run.events["cell"] == cid] if len(run.events) else run.events
        mon = run.monitor[run.monitor["cell"] == cid] if len(run.monitor) else run.monitor
        jobs.add(doc, F.fig_timeline, (cell, calls, ev, mon), f"{cid}: OCPP RTT over time and CPU.",
                 name=f"timeline_{k:02d}_{_safe(cid)}")


def outage_section(doc: Document, run: Run) -> None:
    ev = T.events_table(run)
    if ev.empty:
        return
    doc.h("Outages and reconnections")
    doc.p("Connection trouble per cell: how many stations lost their connection, how long they were down "
          "(`downtime` runs from the loss to the reconnection), and the messages they queued while offline "
          "(`queued` is how long a message waited before it was sent).")
    disp = ev.rename(columns={"stations": "N"}).copy()
    for c in ("downtime_median_ms", "downtime_max_ms", "queued_median_ms", "queued_max_ms"):
        disp[c] = disp[c].map(lambda v: fmt_num(v, 0))
    disp.columns = [c.replace("_ms", " (ms)").replace("_", " ") for c in disp.columns]
    doc.table(disp, "outages", raw=ev)


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def build(run: Run, out: Path, *, fmt: str = "png", seed: int = 0, figures: bool = True,
          workers: int | None = None) -> tuple[Document, list[str]]:
    from labkit.analysis.figures import FigureJobs

    doc = Document(f"labkit report: {run.run_id}")
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if run.manifest.get("synthetic"):
        doc.warn("**SYNTHETIC DATA.** This results directory was generated by the test suite's simulator, "
                 "not measured. Its numbers illustrate the format and the report only.")
    doc.p(f"Run `{run.run_id}`: status **{run.status}**, backend {run.backend}, engine {run.engine}, "
          f"OCPP {run.ocpp_version}; {len(run.cells)} cell(s), {len(run.ping)} ping probes, "
          f"{len(run.calls)} OCPP calls. Report written {made} by `labkit report` from the results files "
          f"alone; see docs/reading-results.md for how to read it.")
    if not run.has_data:
        doc.warn("**No measurements could be read from this directory.** See the list below for what is "
                 "missing.")
    problems_section(doc, run)
    provenance_section(doc, run)
    jobs = FigureJobs(enabled=figures)
    ping_section(doc, run, jobs, seed)
    iperf_section(doc, run, jobs)
    ocpp_section(doc, run, jobs, seed)
    overhead_section(doc, run, jobs)
    scaling_section(doc, run, jobs)
    timeline_section(doc, run, jobs)
    outage_section(doc, run)
    figs = jobs.run(out, fmt, workers)
    return doc, figs
