"""``labkit report``: one results directory -> report.md, report.html, figures/ and tables/*.csv.

The report opens with a warning when transaction messages were lost or delivered twice, and with what is
missing or suspect (so a partial or corrupt run says so first), then the run's provenance and what ran
(event loop, schema validation, versions per host), the network baselines (ping: configured against
measured RTT, with the echo probe as a cross-check; iperf3: goodput against the configured rate), OCPP
round-trip times in the dissertation's table layout (plus p95, p99 and a bootstrap 95% CI for the median),
call outcomes, the transaction accounting (sent, acknowledged, handled, duplicates, lost), the protocol's
own cost (OCPP RTT minus the network RTT per action: the echo probe's where measured, else ping's), scaling
with the number of chargers, RTT and CPU over time, outages, and, when the fleets recorded them, the
connections' set-up (TCP, TLS, WebSocket upgrade, first BootNotification; reconnections after an outage)
per OCPP security variant, and, when the link ran a schedule (``labkit bench --schedule``), its phases as
applied on the gateway, a figure of RTTs and connection events over time with the phases shaded, and the
transaction table per phase (labkit.analysis.phases). A run that swept several security variants has them
apart in every OCPP table and figure ("4g · sp3-tls13"); the network sections stay per link profile.
docs/reading-results.md explains how to read each part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from labkit.analysis import tables as T
from labkit.analysis import transactions as X
from labkit.analysis.doc import Document
from labkit.analysis.load import Run, load_run
from labkit.analysis.order import fmt_num, fmt_rate, security_order

if TYPE_CHECKING:
    from labkit.analysis.figures import FigureJobs

MAX_TIMELINES = 12
MAX_STATION_ROWS = 40
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
          "cut short, or what they say is suspect (transaction messages lost or delivered twice first):")
    kinds = {"missing": "missing", "corrupt": "corrupt (skipped)", "incomplete": "incomplete", "note": "note",
             "suspect": "suspect"}
    ordered = [p for p in run.problems if p.kind == "suspect"] + [p for p in run.problems if p.kind != "suspect"]
    doc.bullets(f"**{kinds.get(p.kind, p.kind)}**: `{p.where}`: {p.what}" for p in ordered)


def tx_warning(doc: Document, tx: pd.DataFrame) -> None:
    """A warning at the top of the report when a transaction message was lost, handled twice or refused, or
    the fleet's and the CSMS's records of them disagree."""
    if tx.empty:
        return
    parts = []
    for cols, what in ((["lost"], "lost (sent, never handled by the CSMS)"),
                       (["duplicates"], "extra deliveries (handled again by the CSMS)"),
                       (["rejected"], "rejected by the CSMS (CallError)"),
                       (["acked_unrecorded", "handled_unsent"], "on which the fleet's and the CSMS's records disagree"),
                       (["never_sent"], "never sent")):
        per_cell = tx[cols].fillna(0).sum(axis=1)
        n = int(per_cell.sum())
        if n:
            cells = tx.loc[per_cell > 0, "cell"].tolist()
            parts.append(f"**{n}** {what} in {', '.join(f'`{c}`' for c in cells[:4])}"
                         + (f" and {len(cells) - 4} more cell(s)" if len(cells) > 4 else ""))
    if not parts:
        return
    once = tx[["lost", "duplicates", "rejected"]].fillna(0).to_numpy().sum() > 0
    doc.warn("**Transaction messages " + ("not delivered exactly once" if once else "not accounted for") + ":** "
             + "; ".join(parts) + ". See *Transaction messages* below: OCPP delivers them at least once, so a "
             "retry after a lost answer is handled twice.")


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
    labels = [s for s in security_order(cells["security"].astype(str)) if s] if len(cells) else []
    if labels:
        rows.append(("OCPP security variants", ", ".join(labels)))
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
    runtime_section(doc, run)
    hosts = m.get("hosts") if isinstance(m.get("hosts"), dict) else {}
    if hosts:
        keys = sorted({k for h in hosts.values() if isinstance(h, dict) for k in h})
        hdf = pd.DataFrame([{"host": n, **{k: _ts(h.get(k)) for k in keys}} for n, h in hosts.items()
                            if isinstance(h, dict)])
        doc.table(hdf, caption="Hosts (as recorded by the run)")


def runtime_section(doc: Document, run: Run) -> None:
    """The event loop, schema validation mode and timing-relevant versions per host (per role where the
    hosts of a role agree)."""
    tbl = T.runtime_table(run)
    if tbl.empty:
        return
    disp = T.runtime_by_role(tbl)
    names = {"csms": "CSMS", "fleet": "fleet"}
    out = pd.DataFrame({"hosts": disp["hosts"], "runs": disp["process"].map(lambda p: names.get(p, p or "—")),
                        **{T.RUNTIME_LABELS[k]: disp[k].map(lambda v: v or "—") for k in T.RUNTIME_KEYS},
                        "from": disp["source"].map({"status": "the process's status",
                                                    "host facts": "host facts only (what was installed)"})
                        .fillna("—")})
    doc.table(out, "runtime", caption="What ran: event loop, schema validation and the versions that affect "
                                      "timing, per host (hosts of one role with the same values in one row). "
                                      "From the simulators' own status where recorded, else from the host "
                                      "facts", raw=tbl)
    differs = tbl[tbl["differs_between_cells"] != ""]
    if len(differs):
        doc.p("**Differs between cells**: " + "; ".join(f"{r.host}: {r.differs_between_cells}"
                                                          for r in differs.itertuples(index=False)) + ".")


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
    xc = T.echo_ping_table(run)
    if len(xc):
        doc.h("Cross-check: labkit's echo probe against ping", 3)
        doc.p("labkit's own RTT probe (echo.csv) is timed to the microsecond; iputils ping prints three "
              "significant digits (whole milliseconds from 100 ms on). Both cross the same shaped path, so their "
              "medians should agree within the ping's rounding (up to 0.5 ms above 100 ms; both send the same "
              "56-byte payload) and ping's user-space send stamp (a few tens of microseconds). The OCPP overhead "
              "below uses the echo RTT where a profile has it.")
        doc.table(pd.DataFrame({
            "profile": xc["profile"], "direction": xc["direction"].map(F.DIR_LABEL),
            "echo median (ms)": xc["echo_median_ms"].map(lambda v: fmt_num(v, 3)),
            "ping median (ms)": xc["ping_median_ms"].map(lambda v: fmt_num(v, 3)),
            "echo − ping (ms)": xc["diff_ms"].map(lambda v: fmt_num(v, 3)),
            "echo replies / lost": [f"{int(a)} / {int(b)}" for a, b in zip(xc["echo_n"], xc["echo_lost"], strict=True)],
            "ping replies / lost": [f"{int(a)} / {int(b)}" for a, b in zip(xc["ping_n"], xc["ping_lost"], strict=True)],
        }), "echo_vs_ping", caption="Median RTT of the echo probe and of ping (ms)", raw=xc)


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
    order = T.variant_order(run)
    doc.p("In the dissertation's layout (its tables 13 to 17): one table per number of chargers N, one column "
          "per profile, times in milliseconds, every successful call of every action (and every repetition) "
          "pooled. Added here: p95, "
          "p99, a 95 % bootstrap confidence interval for the median (2000 resamples, seeded), and the count of "
          "calls faster than the profile's added RTT (physically impossible; the dissertation's shared timer "
          "produced many).")
    if run.security_split:
        doc.p("This run swept OCPP security variants: each column is one link profile with one variant "
              "(profile · variant); variants are never pooled.")
    vtbl = T.variant_view(run, tbl)
    for n in sorted(tbl["stations"].unique()):
        doc.table(dissertation_layout(vtbl, n, order), f"ocpp_rtt_n{n}",
                  caption=f"OCPP RTT, N = {n} charger{'s' if n != 1 else ''} (ms)",
                  raw=tbl[tbl["stations"] == n])
    ok = T.variant_view(run, T.ocpp_ok(run))
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

    doc.h("The protocol's own cost: OCPP RTT minus network RTT")
    tbl = T.overhead_table(run)
    if tbl.empty:
        doc.p("*Needs both OCPP samples and network RTT samples (echo or ping) for the same profile.*")
        return
    label = baseline_label(tbl)
    raw, tbl = tbl, T.variant_view(run, tbl)
    doc.p("For each profile, N and action: the median OCPP round trip minus the median network round trip of "
          f"the same profile ({label}). What remains is serialisation of the larger frames at the link's rate, "
          "TCP and WebSocket handling, JSON-schema validation on both sides, the CSMS's work and any queueing "
          "behind other chargers' messages. The network RTT is labkit's echo probe (echo.csv, microsecond "
          "resolution) where the profile has it, else ping's (whole milliseconds from 100 ms on).")
    ns = sorted(tbl["stations"].unique())
    order = T.variant_order(run)
    base = tbl.drop_duplicates("profile").set_index("profile")["baseline"]
    for n in ([ns[0]] if len(ns) == 1 else [ns[0], ns[-1]]):
        piv = tbl[tbl["stations"] == n].pivot_table(index="profile", columns="action", values="overhead_ms")
        piv = piv.reindex([p for p in order if p in piv.index])
        disp = piv.map(fmt_num).reset_index()
        disp.insert(1, "baseline", disp["profile"].map(base))
        doc.table(disp, caption=f"OCPP RTT − network RTT (median, ms; baseline: {label}), N = {n}")
    doc.tables["ocpp_overhead"] = raw
    jobs.add(doc, F.fig_overhead, (tbl, order), f"OCPP RTT minus network RTT ({label}; medians, ms) per "
             "profile and action, for the smallest and the largest N.")
    csms = T.csms_table(run)
    if len(csms):
        sec = {"security": csms["security"]} if "security" in csms else {}
        doc.table(pd.DataFrame({"profile": csms["profile"], **sec, "N": csms["stations"], "messages": csms["n"],
                                "median (ms)": csms["median_ms"].map(fmt_num), "p95 (ms)": csms["p95_ms"].map(fmt_num),
                                "max (ms)": csms["max_ms"].map(fmt_num)}), "csms_handling",
                  caption="The CSMS's own handling time (frame received to answer sent)", raw=csms)


def baseline_label(tbl: pd.DataFrame) -> str:
    """Which network RTT an overhead table uses: "echo probe", "ping", or both with the profiles of each."""
    kinds = tbl.drop_duplicates("profile")[["profile", "baseline"]]
    used = set(kinds["baseline"])
    if used == {"echo"}:
        return "echo probe"
    if used == {"ping"}:
        return "ping"
    return "echo probe; ping for " + ", ".join(kinds.loc[kinds["baseline"] == "ping", "profile"].astype(str))


def transactions_section(doc: Document, run: Run, tx: pd.DataFrame) -> None:
    doc.h("Transaction messages: delivered exactly once?")
    if tx.empty:
        doc.p("*No OCPP files in this run.*")
        return
    avail = tx[tx["accounting"] != X.NOT_AVAILABLE]
    if avail.empty:
        doc.p(f"*Transaction accounting not available: this run's calls files have no `tx_key` (results format "
              f"`{run.format}`; the keys came with labkit-results/2). The counts are unknown, not zero.*")
        return
    doc.p("OCPP delivers transaction messages (StartTransaction, MeterValues, StopTransaction; TransactionEvent "
          "in 2.0.1) *at least once*: a station keeps them while offline and sends one again when its answer "
          "does not come, under a new message id. Each is identified by its `tx_key`, the same on every attempt "
          "and on both sides. Per cell, distinct messages: *sent* (at least one attempt left the station), "
          "*acknowledged* (a CallResult came back), *handled* (the CSMS answered it: csms.csv outcome ok), "
          "*duplicates* (the CSMS handled one again: a retry after a lost answer), *lost* (sent, never handled "
          "nor acknowledged nor rejected). *Records disagree*: acknowledged but absent from csms.csv, or handled "
          "by the CSMS but not sent according to the fleet's files (a file cut short). Lost and duplicated "
          "messages are flagged in bold and listed at the top. docs/reading-results.md explains how to read this.")
    if len(avail) < len(tx):
        doc.p(f"*{len(tx) - len(avail)} cell(s) without transaction keys (format /1 files): not counted.*")

    def num(v, flag: bool = False) -> str:
        if v is pd.NA or v is None:
            return "—"
        return f"**{int(v)}**" if flag and int(v) else str(int(v))

    disagree = tx[["acked_unrecorded", "handled_unsent"]].sum(axis=1, min_count=1)
    disp = pd.DataFrame({
        "cell": tx["cell"], "profile": tx["profile"], **({"security": tx["security"]} if "security" in tx else {}),
        "N": tx["stations"], "sent": tx["sent"].map(num), "acknowledged": tx["acknowledged"].map(num),
        "handled by the CSMS": tx["handled"].map(num),
        "duplicates": tx["duplicates"].map(lambda v: num(v, True)), "lost": tx["lost"].map(lambda v: num(v, True)),
        "records disagree": disagree.map(lambda v: num(v, True)),
        "never sent": tx["never_sent"].map(lambda v: num(v, True)),
    })
    if (tx["accounting"] != X.COMPLETE).any():
        disp["accounting"] = tx["accounting"]
    for extra, title in (("rejected", "rejected (CallError)"), ("shared_keys", "keys shared"),
                         ("untagged", "without tx_key")):
        if tx[extra].fillna(0).sum():
            disp[title] = tx[extra].map(lambda v: num(v, True))
    doc.table(disp, "transactions", caption="Transaction messages per cell (distinct messages; duplicates are "
                                            "extra deliveries)", raw=tx)
    tot = X.totals(tx)
    doc.p("In all: " + ", ".join(f"{tot[k]} {label}" for k, label in (
        ("sent", "sent"), ("acknowledged", "acknowledged"), ("handled", "handled by the CSMS"),
        ("duplicates", "duplicate deliveries"), ("lost", "lost")) if tot.get(k) is not None) + ".")
    st = X.tx_table(run, by_station=True)
    if st.empty:
        return
    doc.tables["transactions_stations"] = st
    flags = ["duplicates", "lost", "rejected", "acked_unrecorded", "handled_unsent", "never_sent", "shared_keys",
             "untagged"]
    bad = st[st[flags].fillna(0).sum(axis=1) > 0]
    if bad.empty:
        return
    shown = bad.head(MAX_STATION_ROWS)
    doc.table(pd.DataFrame({
        "cell": shown["cell"], "station": shown["station_id"], "sent": shown["sent"].map(num),
        "acknowledged": shown["acknowledged"].map(num), "handled": shown["handled"].map(num),
        "duplicates": shown["duplicates"].map(lambda v: num(v, True)),
        "lost": shown["lost"].map(lambda v: num(v, True)),
        "records disagree": shown[["acked_unrecorded", "handled_unsent"]].sum(axis=1, min_count=1).map(
            lambda v: num(v, True)),
        "rejected": shown["rejected"].map(lambda v: num(v, True)),
        "never sent": shown["never_sent"].map(lambda v: num(v, True))}),
        caption="The stations concerned" + (f" (the first {MAX_STATION_ROWS} of {len(bad)}; all stations in "
                                           "tables/transactions_stations.csv)" if len(bad) > MAX_STATION_ROWS
                                           else " (every station in tables/transactions_stations.csv)"))


def schedule_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    """The link's schedule: each phase as applied, the transactions and calls per phase, and a figure per cell."""
    from labkit.analysis import figures as F
    from labkit.analysis import phases as PH

    cells = PH.schedule_cells(run)
    if not cells:
        return
    pt = PH.phase_table(run)
    doc.h("The link's schedule: phases over time")
    texts: dict[str, str] = {}
    for c in cells:
        sch = (run.schedule_meta.get(c) or {}).get("schedule")
        sch = sch if isinstance(sch, dict) else {}
        texts.setdefault(str(sch.get("name") or "?"), str(sch.get("text") or "?"))
    written = "; ".join(f"`{n}` ({t})" for n, t in texts.items())
    doc.p(f"The OCPP phase ran the schedule {written}. Each phase is shown as it was applied on the gateway "
          "(its clock, from cells/<id>/schedule.json), not as planned: phase times below count from the first "
          "phase's start; *latency* is how late a switch held against its plan. Every OCPP call, transaction "
          "message and connection event is counted in the phase in which it happened (a transaction message "
          "in the phase in which the station first tried to send it, however late it was answered: a message "
          "queued during an outage counts there). *(before)* and *(after)*: what fell outside the schedule.")

    def s1(v) -> str:
        return fmt_num(v, 1)

    disp = pd.DataFrame({
        "cell": pt["cell"], "phase": pt["seq"], **({"pass": pt["cycle"] + 1} if (pt["cycle"] > 0).any() else {}),
        "as written": pt["label"], "link holds": pt["link"].where(~pt["outage"].astype(bool), pt["link"] + " (cut)"),
        "planned start (s)": pt["planned_start_s"].map(s1), "applied start (s)": pt["start_s"].map(s1),
        "latency (ms)": pt["latency_ms"].map(s1), "lasted (s)": pt["duration_s"].map(s1),
        "read back": pt["verified"].map(lambda v: "as planned" if v is True else ("—" if v is None else "WRONG"))})
    doc.table(disp, "schedule_phases", caption="The schedule's phases as applied on the gateway", raw=pt)
    ptx = PH.phase_tx_table(run)

    def num(v, flag: bool = False) -> str:
        if v is pd.NA or v is None or (isinstance(v, float) and v != v):
            return "—"
        return f"**{int(v)}**" if flag and int(v) else str(int(v))

    disagree = ptx[["acked_unrecorded", "handled_unsent"]].sum(axis=1, min_count=1)
    doc.table(pd.DataFrame({
        "cell": ptx["cell"], "phase": ptx["seq"].map(lambda v: "" if v <= 0 else str(v)),
        "as written": ptx["label"], "sent": ptx["sent"].map(num), "acknowledged": ptx["acknowledged"].map(num),
        "handled by the CSMS": ptx["handled"].map(num), "duplicates": ptx["duplicates"].map(lambda v: num(v, True)),
        "lost": ptx["lost"].map(lambda v: num(v, True)), "records disagree": disagree.map(lambda v: num(v, True)),
        "calls answered / failed": [f"{a} / {b}" for a, b in zip(ptx["calls_ok"], ptx["calls_failed"], strict=True)],
        "RTT median / p95 (ms)": [f"{fmt_num(a)} / {fmt_num(b)}" for a, b in
                                  zip(ptx["rtt_median_ms"], ptx["rtt_p95_ms"], strict=True)],
        "disconnected": ptx["disconnected"], "reconnected": ptx["reconnected"],
        "connect failed": ptx["connect_failed"]}), "schedule_transactions",
        caption="Per phase: transaction messages issued in it (sent, acknowledged, handled by the CSMS, "
                "duplicates, lost), OCPP calls sent in it, connection events in it", raw=ptx)
    for k, cid in enumerate(cells[:MAX_TIMELINES]):
        cell = run.cells[run.cells["cell"] == cid].iloc[0].to_dict()
        calls = run.calls[run.calls["cell"] == cid] if len(run.calls) else run.calls
        ev = run.events[run.events["cell"] == cid] if len(run.events) else run.events
        if PH.clock_shifts(run, cid):  # the stations' stamps on the gateway's clock, as the phases are
            calls = calls.assign(t_wall=PH.on_gateway_clock(run, cid, calls["t_wall"], calls.get("host")))
            ev = ev.assign(t_wall=PH.on_gateway_clock(run, cid, ev["t_wall"], ev.get("host")))
        jobs.add(doc, F.fig_schedule, (cell, pt[pt["cell"] == cid], calls, ev),
                 f"{cid}: OCPP RTT of every call when it was sent (median per second), failed calls and the "
                 "stations' connection events, with the schedule's phases as applied on the gateway shaded.",
                 name=f"schedule_{k:02d}_{_safe(cid)}")


def scaling_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    from labkit.analysis import figures as F

    ok = T.variant_view(run, T.ocpp_ok(run))
    if ok.empty or ok["stations"].nunique() < 2:
        return
    doc.h("Scaling with the number of chargers")
    q = ok.groupby(["profile", "stations"])["rtt_ms"].quantile([0.25, 0.5, 0.75, 0.95]).unstack()
    q.columns = ["p25", "p50", "p75", "p95"]
    q = q.reset_index()
    order = T.variant_order(run)
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
        c = T.variant_view(run, cpu[cpu["kind"].isin(list(names))])
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
    cells = T.variant_view(run, run.cells)
    pick = []
    for p in T.variant_order(run):
        sub = cells[cells["profile"] == p].sort_values(["stations", "repeat"])
        if len(sub):
            pick.append(sub.iloc[-1]["cell"])
    outage_cells = cells[cells["outage_t0"].notna()]["cell"].tolist()
    pick = list(dict.fromkeys(outage_cells + pick))[:MAX_TIMELINES]
    doc.p("For each profile" + (" and security variant" if run.security_split else "") + ", the cell with the "
          "most chargers (and every cell with an outage): every OCPP call's "
          "RTT at the time it was sent, the median per second, and the CPU of the CSMS, the fleets and the "
          "shaping engine. A rising median means a queue is building (the link or the CSMS is saturated); "
          "a CPU line at 100 % means one core is saturated.")
    for k, cid in enumerate(pick):
        cell = run.cells[run.cells["cell"] == cid].iloc[0].to_dict()
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


def _ms(v) -> str:
    return fmt_num(v, 1)


def setup_section(doc: Document, run: Run, jobs: FigureJobs) -> None:
    """Connection set-up per link profile, security variant and N (``handshake`` and ``booted`` events), and
    the reconnections after an outage; only when the fleets recorded handshakes."""
    from labkit.analysis import figures as F

    if T.handshakes(run).empty:
        return
    doc.h("Connection set-up (security profiles)")
    tbl = T.setup_table(run)
    doc.p("How long a station took to connect, per link profile, OCPP security variant (`sp0`: plain WebSocket; "
          "`sp1`: HTTP Basic auth; `sp2`: Basic auth over TLS; `sp3`: TLS with a client certificate; `-tls12`, "
          "`-tls13`: the TLS version; `-nores`: without TLS session resumption) and N. Medians over the "
          "stations' first connections: the TCP connect, the TLS handshake, the WebSocket upgrade and their "
          "sum (*set-up*; its 90th percentile next to it), then the first BootNotification's round trip and the "
          "time from the start of the TCP connect to its answer (*connect to booted*). *RTTs* divide a median by "
          "the profile's added RTT: TCP and the upgrade take one round trip each, a full TLS 1.3 handshake one, "
          "a full TLS 1.2 handshake two; what is above that is computation and the certificates' bytes on a "
          "slow link. *TLS bytes*: the handshake's bytes sent / received by the station. *Resumed*: the share of "
          "all TLS connections (reconnections included) that resumed a session. Every percentile is in "
          "tables/setup.csv; docs/reading-results.md explains how to read this.")

    def ms_cols(t: pd.DataFrame) -> dict:
        return {"TCP (ms)": t["tcp_median_ms"].map(_ms), "TLS (ms)": t["tls_median_ms"].map(_ms),
                "WebSocket (ms)": t["ws_median_ms"].map(_ms), "set-up (ms)": t["setup_median_ms"].map(_ms),
                "set-up p90 (ms)": t["setup_p90_ms"].map(_ms)}

    if len(tbl):
        failed = [f"{int(n)} ({r})" if n else "0" for n, r in zip(tbl["connect_failed"], tbl["failure_reasons"],
                                                                    strict=True)]
        doc.table(pd.DataFrame({
            "profile": tbl["profile"], "security": tbl["security"], "N": tbl["stations"],
            "added RTT (ms)": tbl["added_rtt_ms"].map(_ms), "TLS": tbl["tls"],
            "connections (first)": [f"{int(a)} ({int(b)})" for a, b in zip(tbl["connections"], tbl["first_connections"],
                                                                           strict=True)],
            **ms_cols(tbl), "TLS (RTTs)": tbl["tls_rtts"].map(_ms), "set-up (RTTs)": tbl["setup_rtts"].map(_ms),
            "BootNotification (ms)": tbl["boot_median_ms"].map(_ms),
            "connect to booted (ms)": tbl["since_connect_median_ms"].map(_ms),
            "TLS bytes out / in": [f"{fmt_num(a, 0)} / {fmt_num(b, 0)}" for a, b in
                                   zip(tbl["tls_out_median_bytes"], tbl["tls_in_median_bytes"], strict=True)],
            "resumed (%)": tbl["resumed_pct"].map(lambda v: fmt_num(v, 0)), "failed attempts": failed}),
            "setup", caption="Connection set-up, first connections (medians)", raw=tbl)
    rec = T.reconnect_table(run)
    rec = rec[rec["reconnections"] > 0] if len(rec) else rec
    if len(rec):
        doc.p("After an outage (cell.json `outage`), once the link is back (`t_wall_end`): the stations' "
              "reconnections (their second or later connection), with the same medians, the share that resumed "
              "their TLS session, the set-up of the resumed and of the full handshakes apart, and how long after "
              "the link came back the stations were connected again (each station's first `reconnected`).")
        doc.table(pd.DataFrame({
            "profile": rec["profile"], "security": rec["security"],
            "added RTT (ms)": rec["added_rtt_ms"].map(_ms),
            "stations reconnected": [f"{int(a)} of {int(b)}" for a, b in zip(rec["stations_reconnected"],
                                                                          rec["stations"], strict=True)],
            "reconnections": rec["reconnections"].astype(int), **ms_cols(rec),
            "TLS (RTTs)": rec["tls_rtts"].map(_ms), "resumed (%)": rec["resumed_pct"].map(lambda v: fmt_num(v, 0)),
            "set-up resumed / full (ms)": [f"{_ms(a)} / {_ms(b)}" for a, b in zip(
                rec["setup_resumed_median_ms"], rec["setup_not_resumed_median_ms"], strict=True)],
            "link restored → reconnected (ms)": [f"{_ms(a)} [p90 {_ms(b)}]" for a, b in zip(
                rec["restored_to_reconnected_median_ms"], rec["restored_to_reconnected_p90_ms"], strict=True)]}),
            "reconnect", caption="Reconnections after the outage (medians)", raw=rec)
    jobs.add(doc, F.fig_setup, (tbl, rec, T.order_of(run)),
             "Connection set-up per link profile and security variant: medians of the TCP connect, the TLS "
             "handshake, the WebSocket upgrade and (first connections) the first BootNotification, stacked, at "
             "the smallest N; the dotted lines are multiples of the profile's added RTT. Right: the "
             "reconnections after the outage, with the share that resumed their TLS session.")


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
    tx = X.tx_table(run)
    tx_warning(doc, tx)
    problems_section(doc, run)
    provenance_section(doc, run)
    jobs = FigureJobs(enabled=figures)
    ping_section(doc, run, jobs, seed)
    iperf_section(doc, run, jobs)
    ocpp_section(doc, run, jobs, seed)
    transactions_section(doc, run, tx)
    schedule_section(doc, run, jobs)
    overhead_section(doc, run, jobs)
    scaling_section(doc, run, jobs)
    timeline_section(doc, run, jobs)
    outage_section(doc, run)
    setup_section(doc, run, jobs)
    figs = jobs.run(out, fmt, workers)
    return doc, figs
