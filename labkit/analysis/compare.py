"""``labkit compare A B [C...]``: runs side by side, and any run against the dissertation (``thesis-2021``).

The first run is the baseline (A); every other run is compared with it, matched on profile (and on the
number of chargers N for OCPP): medians, their difference, the Hodges-Lehmann shift, Cliff's delta with
its magnitude, and a two-sided Mann-Whitney U test per profile. With thousands of samples p-values get
tiny for differences nobody cares about: read the effect size and the shift first. No correction for
multiple tests is applied. A ``thesis-2021`` target adds, for each run, the dissertation's figure, ours
and the difference, with the note on where its setup differs.

When a run recorded OCPP security variants, the OCPP comparisons match on profile *and* variant ("4g ·
sp3-tls13"; a run that recorded none counts as ``sp0``, or ``sp1`` with HTTP Basic auth), so variants are
never pooled; the network comparisons stay per profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from labkit.analysis import tables as T
from labkit.analysis import thesis as TH
from labkit.analysis.doc import Document
from labkit.analysis.load import Run, load_run
from labkit.analysis.order import expectations, fmt_num, fmt_p, fmt_rate, profile_order, security_order
from labkit.analysis.stats import delta_magnitude, rank_test
from labkit.errors import ConfigError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class CompareResult:
    runs: list[Run]
    thesis: list[str]
    markdown: Path
    html: Path
    figures: list[str] = field(default_factory=list)
    pairs: list[tuple[str, dict]] = field(default_factory=list)  # (label of the later run, compare_pair())
    thesis_rows: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (label, target, rows)
    #: what ran differently (event loop, validation, timing-relevant versions): (setting, value per run label)
    runtime_differs: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def describe_run(run: Run) -> str:
    return f"{run.backend}/{run.engine}, OCPP {run.ocpp_version}"


def _pairs(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], value: str):
    ga = {k: g[value].to_numpy(dtype=float) for k, g in a.groupby(keys, observed=True)}
    gb = {k: g[value].to_numpy(dtype=float) for k, g in b.groupby(keys, observed=True)}
    return ga, gb


def _test_rows(ga: dict, gb: dict, keys: list[str]) -> tuple[list[dict], list, list]:
    rows = []
    for k in [k for k in ga if k in gb]:
        x, y = ga[k], gb[k]
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
        if not len(x) or not len(y):
            continue
        t = rank_test(x, y)
        ma, mb = float(np.median(x)), float(np.median(y))
        kk = k if isinstance(k, tuple) else (k,)
        rows.append({**dict(zip(keys, kk, strict=False)), "n_a": len(x), "n_b": len(y), "median_a": ma, "median_b": mb,
                     "diff": mb - ma, "diff_pct": 100 * (mb - ma) / ma if ma else math.nan,
                     "hl_shift": t["hl_shift"], "cliffs_delta": t["cliffs_delta"],
                     "magnitude": delta_magnitude(t["cliffs_delta"]), "u": t["u"], "p": t["p"]})
    only_a = [k for k in ga if k not in gb]
    only_b = [k for k in gb if k not in ga]
    return rows, only_a, only_b


SETTINGS = ["scenario", "meter_values", "meter_interval_s", "heartbeat_s", "session_duration_s",
            "stations_per_host", "ping_count", "ping_interval_s", "iperf_seconds", "udp_seconds", "baselines",
            "repeats", "seed", "outage"]


def settings(run: Run) -> dict[str, str]:
    """What a reader must know to judge whether two runs are comparable, flattened to strings."""
    m = run.manifest
    plan = m.get("plan") if isinstance(m.get("plan"), dict) else {}
    out = {"backend": run.backend, "engine": run.engine, "OCPP version": run.ocpp_version,
           "labkit": str(m.get("labkit") or (m.get("controller") or {}).get("labkit") or "—")}
    details = m.get("backend_details") if isinstance(m.get("backend_details"), dict) else {}
    for k in ("provider", "box"):
        if k in details:
            out[f"backend {k}"] = str(details[k])
    for k in SETTINGS:
        if k in plan:
            out[k] = str(plan[k])
    hosts = m.get("hosts") if isinstance(m.get("hosts"), dict) else {}
    kernels = sorted({str(h.get("kernel")) for h in hosts.values() if isinstance(h, dict) and h.get("kernel")})
    if kernels:
        out["kernel"] = ", ".join(kernels)
    return out


def compare_pair(a: Run, b: Run, by_variant: bool | None = None) -> dict[str, pd.DataFrame | list]:
    """Sample-level comparison of run ``b`` against run ``a``; OCPP matched on profile and security variant
    when ``by_variant`` (default: when either run recorded a variant; see ``tables.variant_view``)."""
    if by_variant is None:
        by_variant = T.has_variants([a, b])
    out: dict[str, pd.DataFrame | list] = {}
    for probe in ("ping", "echo"):
        fa, fb = getattr(a, probe), getattr(b, probe)
        pa = a.with_cells(fa[~fa["lost"]], ("profile",)) if len(fa) else pd.DataFrame()
        pb = b.with_cells(fb[~fb["lost"]], ("profile",)) if len(fb) else pd.DataFrame()
        if len(pa) and len(pb):
            rows, _, _ = _test_rows(*_pairs(pa, pb, ["profile", "direction"], "rtt_ms"), ["profile", "direction"])
            out[probe] = pd.DataFrame(rows)
    oa = T.variant_view(a, T.ocpp_ok(a), effective=by_variant)
    ob = T.variant_view(b, T.ocpp_ok(b), effective=by_variant)
    if len(oa) and len(ob):
        rows, only_a, only_b = _test_rows(*_pairs(oa, ob, ["profile", "stations"], "rtt_ms"),
                                          ["profile", "stations"])
        out["ocpp"] = pd.DataFrame(rows)
        out["ocpp_only"] = [("A", k) for k in only_a] + [("B", k) for k in only_b]
    ia, ib = a.iperf_intervals, b.iperf_intervals
    if len(ia) and len(ib):
        ia = a.with_cells(ia[ia["proto"] == "tcp"], ("profile",))
        ib = b.with_cells(ib[ib["proto"] == "tcp"], ("profile",))
        rows, _, _ = _test_rows(*_pairs(ia, ib, ["profile", "direction"], "bps"), ["profile", "direction"])
        out["goodput"] = pd.DataFrame(rows)
    fa = T.variant_view(a, T.outcome_table(a), effective=by_variant)
    fb = T.variant_view(b, T.outcome_table(b), effective=by_variant)
    if len(fa) and len(fb):
        m = fa.merge(fb, on=["profile", "stations"], suffixes=("_a", "_b"))
        out["outcomes"] = m[["profile", "stations", "calls_a", "failed_pct_a", "calls_b", "failed_pct_b"]]
    return out


def _order(runs: list[Run], by_variant: bool = False) -> list[str]:
    """The profiles of all runs in the report's order; with ``by_variant``, each followed by every security
    variant any run has ("4g · sp0", "4g · sp3-tls13", ...: the names ``tables.variant_view`` gives)."""
    cells = pd.concat([r.cells for r in runs if len(r.cells)], ignore_index=True) if any(
        len(r.cells) for r in runs) else pd.DataFrame()
    names = list(cells["profile"]) if len(cells) else []
    order = profile_order(names, expectations(cells) if len(cells) else {})
    if not by_variant:
        return order
    labels = security_order({s for r in runs if len(r.cells) for s in
                             r.cells["security"].astype(str).replace("", T.unlabelled_variant(r))})
    return [T.variant_name(p, s) for p in order for s in labels]


def _sorted(df: pd.DataFrame, order: list[str], by: list[str]) -> pd.DataFrame:
    return T._sort(df, order, by) if len(df) else df


def _test_table(df: pd.DataFrame, first: list[tuple[str, str]], unit: str, la: str, lb: str,
                rate: bool = False) -> pd.DataFrame:
    fmt = fmt_rate if rate else fmt_num
    cols = {title: df[key].map(lambda v: str(v)) if key != "direction" else df[key] for title, key in first}
    return pd.DataFrame({
        **cols,
        f"n {la}": df["n_a"].astype(int), f"n {lb}": df["n_b"].astype(int),
        f"median {la}{unit}": df["median_a"].map(fmt), f"median {lb}{unit}": df["median_b"].map(fmt),
        f"{lb} − {la}{unit}": df["diff"].map(fmt), "change (%)": df["diff_pct"].map(lambda v: fmt_num(v, 1)),
        f"HL shift{unit}": df["hl_shift"].map(fmt),
        "Cliff's δ": [f"{fmt_num(d, 2)} ({m})" for d, m in zip(df["cliffs_delta"], df["magnitude"], strict=False)],
        "Mann-Whitney p": df["p"].map(fmt_p),
    })


def write_compare(targets: list[str], out_dir: str | Path | None = None, *, fmt: str = "png", seed: int = 0,
                  figures: bool = True, workers: int | None = None) -> CompareResult:
    from labkit.analysis import figures as F
    from labkit.analysis.figures import FigureJobs

    runs: list[Run] = []
    thesis: list[str] = []
    for t in targets:
        if TH.is_target(t):
            thesis.append(t.lower())
        else:
            runs.append(load_run(t))
    if not runs:
        raise ConfigError("compare: give at least one results directory (thesis-2021 is a target to compare "
                          "a run with, not a run)")
    if len(runs) + len(thesis) < 2:
        raise ConfigError("compare: needs two or more targets: results directories, or a run and thesis-2021 "
                          f"(targets: {', '.join(TH.TARGETS)})")
    labels = [LETTERS[i] if i < len(LETTERS) else f"R{i}" for i in range(len(runs))]
    out = Path(out_dir) if out_dir else Path.cwd() / ("compare-" + "-vs-".join(
        [r.run_id for r in runs] + thesis))[:200]
    by_variant = T.has_variants(runs)
    order = _order(runs)
    vorder = _order(runs, by_variant)
    doc = Document("labkit compare: " + " vs ".join([r.run_id for r in runs] + thesis))
    jobs = FigureJobs(enabled=figures)
    if any(r.manifest.get("synthetic") for r in runs):
        doc.warn("**SYNTHETIC DATA** in at least one run: generated by the test suite's simulator, not measured.")
    doc.p("The first run (A) is the baseline; each other run is compared with it on the profiles (and numbers "
          "of chargers) both have. *HL shift* is the Hodges-Lehmann estimate of how much later run's values "
          "are shifted (the median of all pairwise differences); *Cliff's δ* is P(later > A) − P(later < A), "
          "from −1 to 1, with its magnitude (negligible < 0.147 ≤ small < 0.33 ≤ medium < 0.474 ≤ large); the "
          "Mann-Whitney p is two-sided, uncorrected. With thousands of samples tiny differences get tiny "
          "p-values: judge by the shift and δ. See docs/reading-results.md.")

    doc.h("Runs")
    doc.table(pd.DataFrame([{
        "": lab, "run": f"`{r.run_id}`", "status": r.status, "backend": r.backend, "engine": r.engine,
        "OCPP": r.ocpp_version, "cells": len(r.cells), "ping probes": len(r.ping), "OCPP calls": len(r.calls),
        "started": str(r.manifest.get("started") or "—"), "problems": len(r.problems)}
        for lab, r in zip(labels, runs, strict=False)]))
    if len(runs) > 1:
        sets = [settings(r) for r in runs]
        if by_variant:
            for st, r in zip(sets, runs, strict=True):
                st["OCPP security variants"] = ", ".join(security_order(
                    r.cells["security"].astype(str).replace("", T.unlabelled_variant(r)))) if len(r.cells) else "—"
        keys = list(dict.fromkeys(k for s in sets for k in s))
        differ = [k for k in keys if len({s.get(k, "—") for s in sets}) > 1]
        if differ:
            doc.table(pd.DataFrame([{"setting": k, **{lab: s.get(k, "—") for lab, s in zip(labels, sets, strict=True)}}
                                    for k in differ]),
                      caption="Settings that differ between the runs (everything else in the plans is the same)")
        else:
            doc.p("The runs' backend, engine, OCPP version and plan settings are the same.")
    runtime_differs = runtime_section(doc, runs, labels)
    for lab, r in zip(labels, runs, strict=False):
        if r.problems:
            doc.p(f"**{lab}** (`{r.run_id}`): what is missing or suspect:")
            suspect = [p for p in r.problems if p.kind == "suspect"]
            doc.bullets([f"**suspect**: `{p.where}`: {p.what}" for p in suspect]
                        + [f"`{p.where}`: {p.what}" for p in r.problems if p.kind != "suspect"])

    pairs, thesis_rows = [], []
    for i in range(1, len(runs)):
        a, b, la, lb = runs[0], runs[i], labels[0], labels[i]
        res = compare_pair(a, b, by_variant)
        pairs.append((lb, res))
        doc.h(f"{lb} against {la}: {describe_run(b)} vs {describe_run(a)}")
        if not res:
            doc.p("*Nothing to compare: the two runs share no profile with samples.*")
        ping = res.get("ping")
        if isinstance(ping, pd.DataFrame) and len(ping):
            ping = _sorted(ping, order, ["direction"])
            doc.table(_test_table(ping, [("profile", "profile"), ("direction", "direction")], " (ms)", la, lb),
                      f"ping_{la}_{lb}", caption="Ping RTT", raw=ping)
        echo = res.get("echo")
        if isinstance(echo, pd.DataFrame) and len(echo):
            echo = _sorted(echo, order, ["direction"])
            doc.table(_test_table(echo, [("profile", "profile"), ("direction", "direction")], " (ms)", la, lb),
                      f"echo_{la}_{lb}", caption="Echo probe RTT (labkit's own, microsecond resolution)", raw=echo)
        oc = res.get("ocpp")
        if isinstance(oc, pd.DataFrame) and len(oc):
            oc = _sorted(oc, vorder, ["stations"])
            doc.table(_test_table(oc, [("profile", "profile"), ("N", "stations")], " (ms)", la, lb),
                      f"ocpp_{la}_{lb}", caption="OCPP RTT (successful calls, all actions)", raw=oc)
            only = res.get("ocpp_only") or []
            if only:
                doc.p("Only in one run (not compared): " + ", ".join(
                    f"{(la if w == 'A' else lb)}: {k[0]} N={k[1]}" for w, k in only) + ".")
            jobs.add(doc, F.fig_compare_ratio, (oc, vorder, la, lb, f"ratio_{la}_{lb}"),
                     f"Median OCPP RTT of {lb} divided by that of {la}, per profile and N (1 = no change).")
        gp = res.get("goodput")
        if isinstance(gp, pd.DataFrame) and len(gp):
            gp = _sorted(gp, order, ["direction"])
            doc.table(_test_table(gp, [("profile", "profile"), ("direction", "direction")], "", la, lb, rate=True),
                      f"goodput_{la}_{lb}", caption="iperf3 TCP goodput (per-second intervals as samples)", raw=gp)
        fo = res.get("outcomes")
        if isinstance(fo, pd.DataFrame) and len(fo):
            fo = _sorted(fo, vorder, ["stations"])
            doc.table(pd.DataFrame({"profile": fo["profile"], "N": fo["stations"],
                                    f"calls {la}": fo["calls_a"], f"not ok {la} (%)": fo["failed_pct_a"].map(fmt_num),
                                    f"calls {lb}": fo["calls_b"], f"not ok {lb} (%)": fo["failed_pct_b"].map(fmt_num)}),
                      caption="Calls that got no normal answer (CallError, timeout, connection lost)")
    if len(runs) > 1:
        jobs.add(doc, F.fig_compare_box, (runs, labels, vorder),
                 "OCPP RTT per profile, one box per run (quartiles; whiskers p5–p95), one panel per N.")

    for name in thesis:
        for lab, r in zip(labels, runs, strict=False):
            thesis_rows.append((lab, name, thesis_section(doc, jobs, r, lab, name, seed)))
    figs = jobs.run(out, fmt, workers)
    md, html = doc.write(out, "compare")
    return CompareResult(runs, thesis, md, html, figs, pairs, thesis_rows, runtime_differs)


def runtime_section(doc: Document, runs: list[Run], labels: list[str]) -> list[tuple[str, dict[str, str]]]:
    """What ran, side by side: the event loop, schema validation mode and timing-relevant versions of the
    CSMS and of the fleets in every run; a warning names what differs. Returns the differing settings."""
    if len(runs) < 2:
        return []
    per_run = [T.runtime_by_process(r) for r in runs]
    keys = list(dict.fromkeys(k for d in per_run for k in d))
    if not keys:
        return []
    rows = [{"": k, **{lab: d.get(k, "—") for lab, d in zip(labels, per_run, strict=True)}} for k in keys]
    differs = [(k, {lab: d.get(k, "—") for lab, d in zip(labels, per_run, strict=True)}) for k in keys
               if len({d.get(k, "—") for d in per_run}) > 1]
    known = [(k, v) for k, v in differs if "—" not in v.values()]
    if known:
        doc.warn("**What ran differs between the runs:** " + "; ".join(
            f"{k}: " + ", ".join(f"{lab} {v}" for lab, v in vals.items()) for k, vals in known)
            + ". A difference in the OCPP round trips may come from this as well as from what the runs were "
              "meant to compare (backend, engine, profile).")
    doc.table(pd.DataFrame(rows), "runtime", caption="What ran: event loop, schema validation and versions "
              "that affect timing (from the simulators' status where recorded, else the host facts; — unknown)")
    unknown = [k for k, v in differs if "—" in v.values()]
    if unknown:
        doc.p("Not recorded in every run (format /1 runs do not record the event loop and the validation mode): "
              + ", ".join(unknown) + ".")
    return differs


def thesis_section(doc: Document, jobs, run: Run, lab: str, which: str, seed: int) -> pd.DataFrame:
    from labkit.analysis import figures as F

    rows, notes = TH.compare_run(run, which, seed)
    setup = TH.resolve_setup(which, run)
    doc.h(f"{lab} against the dissertation ({which}: its {'VM' if setup == 'vm' else 'container'} tables)")
    doc.p("Rosa Neto (2021), tables 9 to 17, against this run: for each profile the dissertation's figure, "
          "ours and the difference (ours − dissertation). Its profiles map to labkit's `slow-*` profiles, "
          "which reproduce slow.sh's settings (Reference is `none`). *Setup differs* tags each row with where "
          "the dissertation's setup is not ours; the notes under the tables spell them out. OCPP tables for "
          "N > 1 exist only for its containers.")
    if rows.empty:
        doc.p("*This run has none of the dissertation's profiles (none, slow-amps, slow-gprs, slow-3g, "
              "slow-4g, slow-vsat, or the realistic gprs, 3g, 4g, vsat).*")
        return rows
    for n in notes:
        doc.p(n)
    segs: dict[str, str] = {}
    for d in rows["differs"]:
        for seg in TH.split_notes(d):
            segs.setdefault(TH.tag(seg), seg)

    def tag_list(d: str) -> list[str]:
        return list(dict.fromkeys(TH.tag(seg) for seg in TH.split_notes(d)))

    def fmt_val(v, unit):
        return fmt_rate(v) if unit == "bit/s" else fmt_num(v)

    titles = {"configured_added_rtt": "configured added RTT", "mean_evse_to_cpo": "mean RTT EVSE→CPO",
              "mean_cpo_to_evse": "mean RTT CPO→EVSE", "configured_kilobytes_per_s": "configured rate",
              "measured_kilobytes_per_s": "TCP goodput EVSE→CPO"}
    groups = [("ping_rtt", None, "Ping RTT (dissertation tables 9 and 11), ms"),
              ("iperf_tcp", None, "iperf TCP (tables 10 and 12); its kB/s converted to bit/s")]
    groups += [("ocpp_rtt", n, f"OCPP RTT, N = {n} (tables 13 to 17), ms")
               for n in sorted(rows.loc[rows["measure"] == "ocpp_rtt", "N"].unique())]
    for measure, n, caption in groups:
        sub = rows[rows["measure"] == measure]
        if n is not None:
            sub = sub[sub["N"] == n]
        if sub.empty:
            continue
        tag_rows = [tag_list(d) for d in sub["differs"]]
        common = [t for t in tag_rows[0] if all(t in tr for tr in tag_rows)]
        disp = pd.DataFrame({
            "profile (dissertation → labkit)": [f"{a} → {b}" for a, b in
                                                zip(sub["thesis_profile"], sub["profile"], strict=True)],
            "statistic": sub["statistic"].map(lambda s: titles.get(s, s)),
            "dissertation": [fmt_val(v, u) for v, u in zip(sub["thesis"], sub["unit"], strict=False)],
            "ours": [fmt_val(v, u) for v, u in zip(sub["ours"], sub["unit"], strict=False)],
            "difference": [fmt_val(v, u) for v, u in zip(sub["diff"], sub["unit"], strict=False)],
            "difference (%)": sub["diff_pct"].map(lambda v: fmt_num(v, 1)),
            "setup differs (also)": [", ".join(t for t in tr if t not in common) for tr in tag_rows],
        })
        doc.table(disp, f"thesis_{lab}_{measure}" + (f"_n{n}" if n else ""),
                  caption=f"{caption}. Setup differs in every row: {', '.join(common) or '—'}", raw=sub)
    doc.p("**Where the dissertation's setup differs** (tags used above):")
    doc.bullets(f"*{k}*: {v}" for k, v in segs.items())
    jobs.add(doc, F.fig_thesis, (rows, lab), "The dissertation's OCPP RTT median (grey) against ours, per "
             "profile and N, log scale; and its mean ping RTT against ours.", name=f"thesis_{lab}")
    return rows
