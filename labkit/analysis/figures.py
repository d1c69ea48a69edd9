"""The report's figures (matplotlib, Agg backend, seaborn for the statistical plots).

Each ``fig_*`` function draws one figure from tables or frames and saves it with ``save``; it returns the
saved file's name, or None when there is nothing to draw. Conventions: units on every axis, profiles in
the report's order with one colour each (the same in every figure), fleet sizes N in a sequential palette,
constrained layout, rotated tick labels when they would collide.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from labkit.analysis.order import fmt_rate

DPI = 110
UP, DOWN, CONF = "#1f77b4", "#ff7f0e", "#9e9e9e"
DIR_LABEL = {"up": "uplink EVSE→CPO", "down": "downlink CPO→EVSE"}

plt.rcParams.update({
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9.5, "axes.titlesize": 10.5, "axes.labelsize": 9.5,
    "legend.fontsize": 8.5, "legend.title_fontsize": 8.5, "xtick.labelsize": 8.5, "ytick.labelsize": 8.5,
    "axes.grid": True, "grid.alpha": 0.35, "axes.spines.top": False, "axes.spines.right": False,
    "svg.fonttype": "none",
})


def profile_colors(order: list[str]) -> dict[str, tuple]:
    """One colour per profile, stable across figures (matplotlib's palettes: seaborn is imported only by
    the figures that need it, the heatmap)."""
    if len(order) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {p: cmap(i) for i, p in enumerate(order)}
    cmap = matplotlib.colormaps["turbo"]
    return {p: cmap(0.05 + 0.9 * i / max(len(order) - 1, 1)) for i, p in enumerate(order)}


def n_colors(ns: list[int]) -> dict[int, tuple]:
    """A sequential palette for fleet sizes: light (few chargers) to dark (many)."""
    cmap = matplotlib.colormaps["YlGnBu"]
    ns = sorted(ns)
    return {n: cmap(0.35 + 0.55 * i / max(len(ns) - 1, 1)) for i, n in enumerate(ns)}


def save(fig, out_dir: Path, name: str, fmt: str = "png") -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fname = f"{name}.{fmt}"
    # PNG: fast zlib level (the default level 6 costs ~80 ms a figure for ~20 % smaller files)
    fig.savefig(out_dir / fname, format=fmt, **({"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}))
    plt.close(fig)
    return fname


def _ticklabels(ax, labels: list[str]) -> None:
    long = sum(len(s.split("\n")[0]) for s in labels) > 60 or len(labels) > 7
    # many long names (profile · security variant): upright, or they run into each other
    steep = len(labels) > 7 and max((len(s.split("\n")[0]) for s in labels), default=0) > 16
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90 if steep else 30 if long else 0,
                       ha="right" if long and not steep else "center")


def _ms_formatter(v, _pos) -> str:
    if v >= 1:
        return f"{v:g}"
    return f"{v:.2g}"


def _log_ms(ax, axis: str = "y") -> None:
    getattr(ax, f"set_{axis}scale")("log")
    a = getattr(ax, f"{axis}axis")
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(FuncFormatter(_ms_formatter))
    a.set_minor_locator(NullLocator())  # 1-2-5 major ticks are enough; minor ones cost drawing time


# -- network ---------------------------------------------------------------------------------------------
def fig_ping(tbl: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """Configured added RTT against measured ping RTT per profile, both directions; below: the excess."""
    if tbl.empty:
        return None
    profiles = [p for p in order if p in set(tbl["profile"].unique())]
    x = np.arange(len(profiles))
    w = 0.26
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6.5, 1.05 * len(profiles) + 2.5), 6.2), sharex=True,
                                  height_ratios=(2.2, 1), layout="constrained")
    conf = [tbl.loc[tbl["profile"] == p, "added_rtt_ms"].iloc[0] for p in profiles]
    ax.bar(x - w, np.nan_to_num(conf), w, color=CONF, label="configured added RTT")
    for k, (d, color) in enumerate((("up", UP), ("down", DOWN))):
        sub = tbl[tbl["direction"] == d].set_index("profile").reindex(profiles)
        med = sub["median"].to_numpy(dtype=float)
        err = np.vstack([med - sub["min"].to_numpy(dtype=float), sub["p95"].to_numpy(dtype=float) - med])
        ax.bar(x + k * w, med, w, color=color, label=f"ping {DIR_LABEL[d]} (median; whiskers min–p95)",
               yerr=np.nan_to_num(err), capsize=2, error_kw={"elinewidth": 0.8})
        ax2.bar(x + (k - 0.5) * w, sub["excess_ms"].to_numpy(dtype=float), w, color=color, label=DIR_LABEL[d])
    ax.set_ylabel("round-trip time (ms)")
    ax.set_title("Configured against measured RTT (ping)")
    ax.legend(loc="upper left", frameon=False)
    ax.set_ylim(0, max(1.0, np.nanmax(tbl["p95"].to_numpy(dtype=float)) * 1.18))
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("measured − configured\n− base RTT (ms)")
    ax2.set_title("Excess over what the profile promises (median)", fontsize=9.5)
    _ticklabels(ax2, profiles)
    ax2.set_xlabel("profile")
    return save(fig, out, "ping_rtt", fmt)


def fig_goodput(tbl: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """TCP goodput against the configured rate, per profile and direction (absolute and as a share)."""
    tcp = tbl[tbl["proto"] == "tcp"] if not tbl.empty else tbl
    if tcp.empty:
        return None
    profiles = [p for p in order if p in set(tcp["profile"].unique())]
    labels = []
    for p in profiles:
        sub = tcp[tcp["profile"] == p].set_index("direction")
        up = sub["configured_bps"].get("up", math.nan)
        dn = sub["configured_bps"].get("down", math.nan)
        up_s, dn_s = ("unlim." if math.isnan(v) else fmt_rate(v) for v in (up, dn))
        labels.append(f"{p}\n↑{up_s}\n↓{dn_s}")
    x = np.arange(len(profiles))
    w = 0.26
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6.5, 1.15 * len(profiles) + 2.5), 7.0), sharex=True,
                                  layout="constrained")
    for k, (d, color) in enumerate((("up", UP), ("down", DOWN))):
        sub = tcp[tcp["direction"] == d].set_index("profile").reindex(profiles)
        ax.bar(x + (k - 0.5) * w * 1.1 - 0.0, sub["bps"].to_numpy(dtype=float), w, color=color,
               label=f"measured {DIR_LABEL[d]}")
        ax.scatter(x + (k - 0.5) * w * 1.1, sub["configured_bps"].to_numpy(dtype=float), marker="_", s=420,
                   color="black", zorder=3, label="configured rate" if k == 0 else None)
        ax2.bar(x + (k - 0.5) * w, sub["pct_of_configured"].to_numpy(dtype=float), w, color=color,
                label=DIR_LABEL[d])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, p: fmt_rate(v)))
    ax.set_ylabel("TCP goodput (bit/s, log scale)")
    ax.set_title("iperf3 TCP goodput against the configured rate")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax2.axhline(100, color="black", lw=0.8)
    ax2.axhline(90, color="black", lw=0.8, ls=":")
    ax2.set_ylabel("goodput / configured rate (%)")
    ax2.set_ylim(0, 115)
    ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax2.text(1.0, 90, " 90 %", va="center", ha="left", fontsize=8, transform=ax2.get_yaxis_transform())
    _ticklabels(ax2, labels)
    return save(fig, out, "goodput", fmt)


# -- OCPP ------------------------------------------------------------------------------------------------
def _box_stats(values: np.ndarray) -> dict:
    p5, q1, med, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    return {"med": med, "q1": q1, "q3": q3, "whislo": p5, "whishi": p95, "fliers": []}


def _grouped_boxes(ax, values: list, j: int, k: int, color) -> None:
    """Box j of k at each x position (one per profile; ``values[i]`` the samples at x = i, or None):
    quartiles, whiskers p5-p95, no outliers, drawn from precomputed percentiles with ``Axes.bxp``."""
    width = 0.8 / k
    stats, pos = [], []
    for i, v in enumerate(values):
        if v is not None and len(v):
            stats.append(_box_stats(v))
            pos.append(i - 0.4 + width * (j + 0.5))
    if stats:
        ax.bxp(stats, positions=pos, widths=width * 0.85, showfliers=False, patch_artist=True,
               boxprops={"facecolor": color, "edgecolor": "#333333", "linewidth": 0.7},
               medianprops={"color": "black", "linewidth": 1.1}, whiskerprops={"linewidth": 0.7},
               capprops={"linewidth": 0.7}, manage_ticks=False)


def fig_ocpp_box(ok: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """OCPP RTT distributions per profile (box per fleet size N), log scale. Percentiles are computed here
    and drawn with ``Axes.bxp`` (no per-point work in the plotting library)."""
    from matplotlib.patches import Patch

    if ok.empty:
        return None
    profiles = [p for p in order if p in set(ok["profile"].unique())]
    ns = sorted(int(n) for n in ok["stations"].unique())
    colors = n_colors(ns)
    groups = {k: g.to_numpy(dtype=float) for k, g in ok.groupby(["profile", "stations"])["rtt_ms"]}
    fig, ax = plt.subplots(figsize=(min(16, max(7, 0.4 * len(profiles) * max(2, len(ns)) + 3.0)), 4.6),
                           layout="constrained")
    for j, n in enumerate(ns):
        _grouped_boxes(ax, [groups.get((p, n)) for p in profiles], j, len(ns), colors[n])
    _log_ms(ax)
    ax.set_xlim(-0.6, len(profiles) - 0.4)
    ax.set_ylabel("OCPP round-trip time (ms, log scale)")
    ax.set_xlabel("profile")
    ax.set_title("OCPP RTT per profile and number of chargers N (box: quartiles; whiskers: p5–p95)")
    ax.legend(handles=[Patch(facecolor=colors[n], edgecolor="#333333", label=str(n)) for n in ns],
              title="N chargers", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _ticklabels(ax, profiles)
    return save(fig, out, "ocpp_box", fmt)


def _ecdf_points(values: np.ndarray, max_points: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """(x, F(x)) of the empirical CDF, thinned to at most ``max_points`` steps (exact at those points)."""
    x = np.sort(values)
    n = x.size
    f = np.arange(1, n + 1) / n
    if n > max_points:
        idx = np.unique(np.linspace(0, n - 1, max_points).astype(np.int64))
        x, f = x[idx], f[idx]
    return x, f


def fig_ocpp_ecdf(ok: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """ECDF of OCPP RTT per profile, one panel per fleet size N."""
    if ok.empty:
        return None
    profiles = [p for p in order if p in set(ok["profile"].unique())]
    ns = sorted(int(n) for n in ok["stations"].unique())
    cols = min(2, len(ns))
    rows = math.ceil(len(ns) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols + 1.8, 3.3 * rows), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    colors = profile_colors(order)
    groups = {k: g.to_numpy(dtype=float) for k, g in ok.groupby(["profile", "stations"])["rtt_ms"]}
    for ax, n in zip(axes.flat, ns, strict=False):
        for p in profiles:
            v = groups.get((p, n))
            if v is not None and len(v):
                x, f = _ecdf_points(v)
                ax.step(x, f, where="post", color=colors[p], label=p, lw=1.4)
        ax.set_title(f"N = {n} charger{'s' if n != 1 else ''}")
        ax.set_ylim(0, 1.02)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of calls ≤ x")
    for ax in axes[-1, :]:
        ax.set_xlabel("OCPP round-trip time (ms, log scale)")
    for ax in list(axes.flat)[len(ns):]:
        ax.set_visible(False)
    _log_ms(axes.flat[0], "x")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="profile", loc="outside right center", frameon=False)
    fig.suptitle("Empirical CDF of OCPP RTT")
    return save(fig, out, "ocpp_ecdf", fmt)


def fig_overhead(tbl: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """Heatmaps of OCPP RTT minus the network RTT (median, ms) per profile and action, for the smallest and
    the largest N. The title says which network RTT (``baseline``: echo or ping); when a run has both, the
    profiles measured with ping are marked "(ping)"."""
    import seaborn as sns

    if tbl.empty:
        return None
    ns = sorted(tbl["stations"].unique())
    pick = [ns[0]] if len(ns) == 1 else [ns[0], ns[-1]]
    actions = list(tbl.groupby("action")["n"].sum().sort_values(ascending=False).index)
    profiles = [p for p in order if p in set(tbl["profile"].unique())]
    base = tbl.drop_duplicates("profile").set_index("profile")["baseline"] if "baseline" in tbl else \
        pd.Series("ping", index=profiles)
    used = set(base)
    which = "echo probe" if used == {"echo"} else "ping" if used == {"ping"} else "echo probe; (ping) where marked"
    ylabels = [f"{p} (ping)" if len(used) > 1 and base.get(p) == "ping" else p for p in profiles]
    from matplotlib.colors import SymLogNorm

    # a symmetric-log colour scale: a few ms and a few hundred ms both stay readable (negative values, when
    # the OCPP median beats the ping median by noise, stay possible)
    vmax = max(1.0, float(np.nanmax(tbl["overhead_ms"])))
    vmin = min(0.0, float(np.nanmin(tbl["overhead_ms"])))
    norm = SymLogNorm(linthresh=1.0, vmin=vmin, vmax=vmax, base=10)
    wide = max(0, max((len(y) for y in ylabels), default=0) - 16) * 0.2  # long names (profile · variant)
    fig, axes = plt.subplots(1, len(pick), figsize=(0.85 * len(actions) * len(pick) + 3.5 + wide,
                                                     0.45 * len(profiles) + 2.6), squeeze=False,
                             layout="constrained")
    for k, (ax, n) in enumerate(zip(axes.flat, pick, strict=False)):
        sub = tbl[tbl["stations"] == n].pivot_table(index="profile", columns="action", values="overhead_ms")
        sub = sub.reindex(index=profiles, columns=actions)
        sub.index = ylabels
        sns.heatmap(sub, ax=ax, annot=True, fmt=".1f", cmap="rocket_r", norm=norm,
                    cbar=k == len(pick) - 1,
                    cbar_kws={"label": "medians, ms (log colour scale)"},
                    annot_kws={"fontsize": 7.5}, linewidths=0.5, linecolor="white")
        ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
        ax.grid(False)
        ax.set_title(f"N = {n}")
        ax.set_xlabel("OCPP action")
        ax.set_ylabel("profile" if k == 0 else "")
        ax.set_xticklabels(ax.get_xticklabels(), rotation=35, ha="right")
        if k:
            ax.set_yticklabels([])
    fig.suptitle(f"The protocol's own cost: OCPP RTT minus network RTT ({which}), per action (ms)")
    return save(fig, out, "ocpp_overhead", fmt)


def fig_scaling(ok: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """Median OCPP RTT with its spread (IQR band, p95) against the number of chargers, per profile."""
    if ok.empty:
        return None
    q = ok.groupby(["profile", "stations"])["rtt_ms"].quantile([0.25, 0.5, 0.75, 0.95]).unstack()
    q.columns = ["p25", "p50", "p75", "p95"]
    q = q.reset_index()
    profiles = [p for p in order if p in set(q["profile"].unique())]
    cols = min(3, len(profiles))
    rows = math.ceil(len(profiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.6, 2.8 * rows + 0.6), squeeze=False,
                             layout="constrained")
    colors = profile_colors(order)
    ns = sorted(q["stations"].unique())
    for ax, p in zip(axes.flat, profiles, strict=False):
        s = q[q["profile"] == p].sort_values("stations")
        c = colors[p]
        ax.fill_between(s["stations"], s["p25"], s["p75"], color=c, alpha=0.25, lw=0, label="p25–p75")
        ax.plot(s["stations"], s["p50"], "o-", color=c, lw=1.6, ms=4, label="median")
        ax.plot(s["stations"], s["p95"], "--", color=c, lw=1, label="p95")
        ax.set_title(p)
        ax.set_xscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.minorticks_off()
        lo = float(s[["p25"]].min().iloc[0])
        hi = float(s[["p95"]].max().iloc[0])
        pad = max((hi - lo) * 0.12, 0.5)
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.set_ylabel("OCPP RTT (ms)")
        ax.set_xlabel("chargers N (stations, log scale)")
    for ax in list(axes.flat)[len(profiles):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("Scaling with the number of chargers (each panel has its own y scale)")
    return save(fig, out, "scaling", fmt)


def fig_timeline(cell: dict, calls: pd.DataFrame, events: pd.DataFrame, monitor: pd.DataFrame, out: Path,
                 name: str, fmt: str = "png") -> str | None:
    """RTT of every OCPP call over the cell's run (rolling median; outage shaded; reconnections marked) and
    CPU of the CSMS, the fleets and the shaping engine."""
    if calls.empty and monitor.empty:
        return None
    t0 = cell.get("ocpp_t0")
    if t0 is None or (isinstance(t0, float) and math.isnan(t0)):
        t0 = float(np.nanmin(calls["t_wall"])) if len(calls) else float(np.nanmin(monitor["t_wall"]))
    # a fixed layout (no constrained-layout solve: these figures come by the dozen): plots on the left,
    # legends in a column on the right
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True, height_ratios=(2, 1))
    fig.subplots_adjust(left=0.085, right=0.70, top=0.94, bottom=0.09, hspace=0.08)
    ok = calls[(calls["outcome"] == "ok") & calls["rtt_ms"].notna()]
    if len(ok):
        t = ok["t_wall"].to_numpy(dtype=float) - t0
        y = ok["rtt_ms"].to_numpy(dtype=float)
        ax.scatter(t, y, s=3, alpha=0.35, color="#4c72b0", lw=0, label="OCPP call (ok)", rasterized=True)
        bins = np.floor(t)
        med = pd.Series(y).groupby(bins).median()
        med = med.reindex(np.arange(med.index.min(), med.index.max() + 1))  # gaps stay gaps
        ax.plot(med.index + 0.5, med.to_numpy(), color="#c44e52", lw=1.4, label="median per second")
        lo, hi = np.percentile(y, [1, 99])
        if hi > 4 * max(lo, 1e-3):
            _log_ms(ax)
            ax.set_ylabel("OCPP RTT (ms, log scale)")
        else:
            ax.set_ylabel("OCPP RTT (ms)")
    bad = calls[calls["outcome"] != "ok"]
    if len(bad):
        for oc, mk in (("timeout", "x"), ("connection_lost", "v"), ("call_error", "+"), ("send_failed", "1")):
            b = bad[bad["outcome"] == oc]
            if len(b):
                top = float(np.nanmax(ok["rtt_ms"])) if len(ok) else 1.0
                yb = b["rtt_ms"].fillna(top)
                label = oc.replace("_", " ") + ("\n(no RTT: drawn at the top)" if b["rtt_ms"].isna().any() else "")
                ax.scatter(b["t_wall"] - t0, yb, marker=mk, s=22, color="black", label=label)
    o0, o1 = cell.get("outage_t0"), cell.get("outage_t1")
    for a in (ax, ax2):
        if o0 is not None and o1 is not None and not (math.isnan(o0) or math.isnan(o1)):
            a.axvspan(o0 - t0, o1 - t0, color="#ffcc80", alpha=0.45, lw=0,
                      label="outage" if a is ax else None)
    rec = events[events["event"] == "reconnected"] if len(events) else events
    if len(rec):
        ax.vlines(rec["t_wall"] - t0, 0, 0.06, transform=ax.get_xaxis_transform(), color="#2ca02c", lw=1,
                  label="reconnected")
    fig.legend(*ax.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(0.785, 0.94), frameon=False,
               fontsize=7.5, markerscale=2)
    ax.set_title(f"{cell['cell']}: RTT over time (profile {cell['profile']}, N = {cell['stations']})")
    if len(monitor):
        from labkit.analysis.tables import cpu_series

        per = cpu_series(monitor).assign(t=lambda d: d["sec"] - math.floor(t0))
        styles = {"csms": ("#c44e52", "CSMS"), "fleet": ("#4c72b0", "fleets (sum over EVSE hosts)"),
                  "engine": ("#8172b3", "shaping engine (gateway)"), "other": ("#555555", "other")}
        for kind, (color, label) in styles.items():
            s = per[per["kind"] == kind]
            if len(s):
                ax2.plot(s["t"] + 0.5, s["cpu_pct"], color=color, lw=1.2, label=label)
        ax2.axhline(100, color="black", lw=0.6, ls=":")
        ax2.set_ylabel("process CPU\n(% of one core)")
        ax2.set_ylim(bottom=0)
        host = per[per["kind"] == "host"]
        if len(host):
            ax3 = ax2.twinx()
            ax3.xaxis.set_visible(False)
            ax3.plot(host["t"] + 0.5, host["cpu_pct"], color="#999999", lw=1.0, ls="--",
                     label="busiest host (right axis)")
            ax3.set_ylim(0, 105)
            ax3.set_ylabel("host CPU\n(% of all cores)")
            ax3.grid(False)
            ax3.spines["right"].set_visible(True)
            h1, l1 = ax2.get_legend_handles_labels()
            h2, l2 = ax3.get_legend_handles_labels()
            fig.legend(h1 + h2, l1 + l2, loc="lower left", bbox_to_anchor=(0.785, 0.09), frameon=False,
                       fontsize=7.5)
        else:
            fig.legend(*ax2.get_legend_handles_labels(), loc="lower left", bbox_to_anchor=(0.785, 0.09),
                       frameon=False, fontsize=7.5)
    else:
        ax2.text(0.5, 0.5, "no monitor samples", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("time since the OCPP phase started (s)")
    return save(fig, out, name, fmt)


#: connection events drawn on a schedule figure's lower panel: (event, label, marker, colour)
SCHEDULE_EVENTS = [("connected", "connected (first)", "o", "#4c72b0"), ("disconnected", "disconnected", "v", "#c44e52"),
                   ("reconnected", "reconnected", "^", "#2ca02c"), ("connect_failed", "connect failed", "x", "black")]
OUTAGE_COLOR = "#ffcc80"


def fig_schedule(cell: dict, phases: pd.DataFrame, calls: pd.DataFrame, events: pd.DataFrame, out: Path,
                 name: str, fmt: str = "png") -> str | None:
    """A schedule cell over time: every OCPP call's RTT when it was sent (median per second; failed calls at
    the top) and the stations' connection events, with each phase as applied on the gateway shaded and
    labelled (``phases``: labkit.analysis.phases.phase_table rows of this cell; x: seconds from the first
    phase's start)."""
    if phases.empty or (calls.empty and events.empty):
        return None
    t0 = float(phases["applied_start"].iloc[0])
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True, height_ratios=(2.3, 1))
    fig.subplots_adjust(left=0.125, right=0.76, top=0.90, bottom=0.09, hspace=0.08)
    links = list(dict.fromkeys(phases.loc[~phases["outage"].astype(bool), "link"].astype(str)))
    palette = dict(zip(links, ["#dce6f2", "#e8f0dc", "#efe2f0", "#f3ecd9", "#dff0ef"] * 4, strict=False))
    ok = calls[(calls["outcome"] == "ok") & calls["rtt_ms"].notna()] if len(calls) else calls
    tmax = float(phases["end_s"].max()) if phases["end_s"].notna().any() else 0.0
    if len(calls):
        tmax = max(tmax, float(np.nanmax(calls["t_wall"])) - t0)
    xmin = min(0.0, float(np.nanmin(calls["t_wall"])) - t0) if len(calls) else 0.0
    for r in phases.itertuples(index=False):
        end = r.end_s if r.end_s == r.end_s else tmax
        color = OUTAGE_COLOR if r.outage else palette.get(str(r.link), "#eeeeee")
        for a in (ax, ax2):
            a.axvspan(r.start_s, end, color=color, alpha=0.9 if not r.outage else 0.6, lw=0, zorder=0,
                      hatch="//" if r.outage else None)
            a.axvline(r.start_s, color="#777777", lw=0.6, ls=":", zorder=1)
        label = "outage" if r.outage else str(r.label)
        if r.cycle:
            label += f" ({int(r.cycle) + 1})"
        ax.text((r.start_s + end) / 2, 1.01, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=8, clip_on=False)
    if len(ok):
        t = ok["t_wall"].to_numpy(dtype=float) - t0
        y = ok["rtt_ms"].to_numpy(dtype=float)
        ax.scatter(t, y, s=4, alpha=0.45, color="#4c72b0", lw=0, label="OCPP call (ok)", rasterized=True, zorder=2)
        bins = np.floor(t)
        med = pd.Series(y).groupby(bins).median()
        med = med.reindex(np.arange(med.index.min(), med.index.max() + 1))
        ax.plot(med.index + 0.5, med.to_numpy(), color="#c44e52", lw=1.4, label="median per second", zorder=3)
        lo, hi = np.percentile(y, [1, 99])
        if hi > 4 * max(lo, 1e-3):
            _log_ms(ax)
            ax.set_ylabel("OCPP RTT (ms, log scale)")
        else:
            ax.set_ylabel("OCPP RTT (ms)")
    bad = calls[calls["outcome"] != "ok"] if len(calls) else calls
    for oc, mk in (("timeout", "x"), ("connection_lost", "v"), ("call_error", "+"), ("send_failed", "1")):
        b = bad[bad["outcome"] == oc] if len(bad) else bad
        if len(b):
            ax.scatter(b["t_wall"] - t0, np.full(len(b), 0.97), marker=mk, s=22, color="black",
                       transform=ax.get_xaxis_transform(), label=oc.replace("_", " ") + " (at the top)", zorder=4)
    ax.set_title(f"{cell['cell']}: schedule {cell.get('schedule') or ''}, N = {cell['stations']}", pad=16)
    if len(events):
        for k, (ev, label, mk, color) in enumerate(SCHEDULE_EVENTS):
            e = events[events["event"] == ev]
            if ev == "connected":
                e = e[e["connection"].fillna(1) <= 1] if "connection" in e else e
            if len(e):
                ax2.scatter(e["t_wall"] - t0, np.full(len(e), k), marker=mk, s=18, color=color, label=label, zorder=3)
        ax2.set_yticks(range(len(SCHEDULE_EVENTS)), [x[1] for x in SCHEDULE_EVENTS], fontsize=7.5)
        ax2.set_ylim(-0.6, len(SCHEDULE_EVENTS) - 0.4)
        ax2.grid(False, axis="y")
    else:
        ax2.text(0.5, 0.5, "no connection events recorded", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_yticks([])
    ax2.set_xlim(xmin - 0.5, tmax + 0.5)
    ax2.set_xlabel("time since the schedule started (s; phases as applied on the gateway)")
    handles, labels = ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    handles += [Patch(facecolor=palette[p], label=f"link {p}") for p in links]
    handles.append(Patch(facecolor=OUTAGE_COLOR, hatch="//", label="outage (link cut)"))
    fig.legend(handles, [h.get_label() for h in handles], loc="upper left", bbox_to_anchor=(0.775, 0.90),
               frameon=False, fontsize=7.5, markerscale=2)
    return save(fig, out, name, fmt)


# -- connection set-up -----------------------------------------------------------------------------------
#: the stacked phases of a connection's set-up: (column prefix, legend label, colour)
SETUP_PARTS = [("tcp", "TCP connect", "#4c72b0"), ("tls", "TLS handshake", "#c44e52"),
               ("ws", "WebSocket upgrade", "#55a868"), ("boot", "first BootNotification", "#8172b3")]


def _rtt_lines(ax, rtt: float, xmax: float) -> None:
    """Dotted vertical lines at whole multiples of the profile's added RTT, labelled at the top."""
    if not rtt or math.isnan(rtt) or rtt <= 0:
        return
    k_max = int(xmax // rtt)
    if k_max < 1 or k_max > 24:
        return
    every = max(1, math.ceil(0.09 * xmax / rtt))  # labels at least ~9 % of the width apart
    for k in range(1, k_max + 1):
        ax.axvline(k * rtt, color="#777777", lw=0.7, ls=":", zorder=0)
        if k % every == 0:
            ax.text(k * rtt, 1.0, f"{k} RTT", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=7, color="#555555")


def _fmt_ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _setup_panel(ax, sub: pd.DataFrame, parts: list[str], rtt: float, note) -> None:
    """Horizontal stacked bars, one per security variant (top to bottom), of the median of each part."""
    colors = {k: c for k, _, c in SETUP_PARTS}
    y = np.arange(len(sub))[::-1]
    left = np.zeros(len(sub))
    for part in parts:
        v = np.nan_to_num(sub[f"{part}_median_ms"].to_numpy(dtype=float))
        ax.barh(y, v, left=left, color=colors[part], height=0.62, edgecolor="white", linewidth=0.4)
        left += v
    xmax = max(float(np.nanmax(left)) if len(left) else 0.0, 1e-3) * 1.5
    ax.set_xlim(0, xmax)
    for yi, total, (_, row) in zip(y, left, sub.iterrows(), strict=True):
        text = f"{_fmt_ms(total)} ms" + (f" ≈ {total / rtt:.1f} RTT" if rtt and not math.isnan(rtt) and rtt > 0
                                         else "")
        extra = note(row)
        ax.text(total + xmax * 0.01, yi, text + (f"\n{extra}" if extra else ""), va="center", ha="left", fontsize=7)
    if rtt and not math.isnan(rtt) and rtt > 0 and xmax // rtt <= 24:
        ax.grid(False)  # the round-trip lines are the grid
        _rtt_lines(ax, rtt, xmax)
    ax.set_yticks(y)
    ax.set_yticklabels(list(sub["security"]))
    ax.set_ylim(-0.6, len(sub) - 0.4)
    ax.grid(axis="y", visible=False)


def fig_setup(tbl: pd.DataFrame, rec: pd.DataFrame, order: list[str], out: Path, fmt: str = "png") -> str | None:
    """Connection set-up per link profile (rows) and security variant (bars): medians of the TCP connect,
    the TLS handshake, the WebSocket upgrade and the first BootNotification, stacked (first connections, at
    the smallest N of each profile and variant); and, when the run had an outage, the reconnections after
    it, with the share of TLS sessions resumed. Linear time axes, one scale per profile, with dotted lines
    at multiples of the profile's added RTT."""
    from matplotlib.patches import Patch

    if tbl.empty and (rec is None or rec.empty):
        return None
    first = tbl.sort_values("stations", kind="stable").drop_duplicates(["profile", "security"]) if len(tbl) else tbl
    first = first[first["first_connections"] > 0] if len(first) else first
    rec = rec[rec["reconnections"] > 0] if rec is not None and len(rec) else pd.DataFrame()
    present = set(first["profile"]) | (set(rec["profile"]) if len(rec) else set())
    profiles = [p for p in order if p in present] + sorted(p for p in present if p not in order)
    if not profiles:
        return None
    from labkit.analysis.order import security_order

    cols = 2 if len(rec) else 1
    counts = []
    for p in profiles:
        n_first = int((first["profile"] == p).sum()) if len(first) else 0
        n_rec = int((rec["profile"] == p).sum()) if len(rec) else 0
        counts.append(max(n_first, n_rec, 1))
    fig, axes = plt.subplots(len(profiles), cols, figsize=(6.2 * cols + 1.2, sum(0.9 + 0.36 * c for c in counts) + 1.0),
                             squeeze=False, height_ratios=counts, layout="constrained")

    def ordered(sub: pd.DataFrame) -> pd.DataFrame:
        rank = {s: i for i, s in enumerate(security_order(sub["security"].astype(str)))}
        return sub.assign(_r=sub["security"].map(rank)).sort_values("_r").drop(columns="_r")

    for i, p in enumerate(profiles):
        ns = sorted({int(n) for n in first.loc[first["profile"] == p, "stations"]}) if len(first) else []
        first_what = f"first connection, N = {ns[0]}" if len(ns) == 1 else "first connection"
        panels = [(first, ["tcp", "tls", "ws", "boot"], first_what,
                   lambda r, many=len(ns) > 1: f"N = {int(r['stations'])}" if many else "")]
        if cols == 2:
            panels.append((rec, ["tcp", "tls", "ws"], "reconnection after the outage",
                           lambda r: "" if pd.isna(r["resumed_pct"]) else f"{r['resumed_pct']:.0f} % resumed"))
        for j, (frame, parts, what, note) in enumerate(panels):
            ax = axes[i, j]
            sub = ordered(frame[frame["profile"] == p]) if len(frame) else frame
            if sub is None or sub.empty:
                ax.set_visible(False)
                continue
            rtt = float(sub["added_rtt_ms"].iloc[0])
            _setup_panel(ax, sub, parts, rtt, note)
            rtt_s = f", added RTT {rtt:g} ms" if rtt and not math.isnan(rtt) else ""
            ax.set_title(f"{p}: {what}{rtt_s}", fontsize=9, pad=12)
            ax.set_xlabel("median time (ms)")
    handles = [Patch(facecolor=c, label=label) for _, label, c in SETUP_PARTS]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    fig.suptitle("Connection set-up per link profile and OCPP security variant (medians, stacked)")
    return save(fig, out, "setup", fmt)


# -- rendering many figures ------------------------------------------------------------------------------
_PENDING: list = []  # the jobs of the FigureJobs being run (read by forked workers)


def _run_one(i: int) -> str | None:
    func, args, kwargs = _PENDING[i]
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one broken figure must not take the report down
        plt.close("all")
        return f"!{func.__name__}: {type(exc).__name__}: {exc}"


class FigureJobs:
    """Figures a document asks for, drawn later, in parallel worker processes when the machine has cores.

    ``add`` puts a placeholder in the document; ``run`` draws every figure (forked workers share the
    loaded data without copying it) and replaces each placeholder by the figure, or drops it when there
    was nothing to draw. A figure that fails becomes a line saying so, not a traceback."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.jobs: list[tuple] = []  # (doc, key, func, args, kwargs, caption)

    def add(self, doc, func, args: tuple, caption: str, name: str | None = None) -> None:
        if not self.enabled:
            return
        key = f"fig{len(self.jobs)}"
        doc.blocks.append(f"\0{key}\0")
        self.jobs.append((doc, key, func, args, {"name": name} if name else {}, caption))

    def run(self, out_dir: Path, fmt: str = "png", workers: int | None = None) -> list[str]:
        import multiprocessing as mp
        import os

        global _PENDING
        if not self.jobs:
            return []
        fig_dir = out_dir / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        _PENDING = [(func, args, {**kw, "out": fig_dir, "fmt": fmt}) for _, _, func, args, kw, _ in self.jobs]
        if workers is None:
            workers = min(len(self.jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else (os.cpu_count() or 1), 4)
        results: list[str | None]
        try:
            if workers > 1 and "fork" in mp.get_all_start_methods():
                with mp.get_context("fork").Pool(workers) as pool:
                    results = pool.map(_run_one, range(len(_PENDING)), chunksize=1)
            else:
                results = [_run_one(i) for i in range(len(_PENDING))]
        finally:
            _PENDING = []
        made = []
        for (doc, key, _func, _args, _kw, caption), res in zip(self.jobs, results, strict=False):
            marker = f"\0{key}\0"
            idx = doc.blocks.index(marker)
            if res is None:
                doc.blocks.pop(idx)
            elif res.startswith("!"):
                doc.blocks[idx] = f"*(figure not drawn: {res[1:]})*"
            else:
                doc.blocks[idx] = f"![{caption}](figures/{res})\n\n*{caption}*"
                made.append(res)
        self.jobs = []
        return made


# -- compare ---------------------------------------------------------------------------------------------
def fig_compare_ratio(tbl: pd.DataFrame, order: list[str], la: str, lb: str, name: str, out: Path,
                      fmt: str = "png") -> str | None:
    """Change of the median OCPP RTT of run B against run A per profile (x) and N (colour): in percent when
    the changes are moderate (within ×0.5 to ×2), as a ratio on a log scale otherwise."""
    if tbl.empty:
        return None
    profiles = [p for p in order if p in set(tbl["profile"].unique())]
    ns = sorted(int(n) for n in tbl["stations"].unique())
    colors = n_colors(ns)
    ratios = (tbl["median_b"] / tbl["median_a"]).to_numpy(dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if not len(ratios):
        return None
    moderate = ratios.min() >= 0.5 and ratios.max() <= 2.0
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(profiles) + 3.2), 4.0), layout="constrained")
    w = 0.8 / len(ns)
    for j, n in enumerate(ns):
        sub = tbl[tbl["stations"] == n].set_index("profile").reindex(profiles)
        ratio = (sub["median_b"] / sub["median_a"]).to_numpy(dtype=float)
        x = np.arange(len(profiles)) - 0.4 + w * (j + 0.5)
        if moderate:
            bars = ax.bar(x, 100 * (ratio - 1.0), w * 0.9, color=colors[n], label=str(n))
            labels = [f"{100 * (r - 1):+.1f} %" if np.isfinite(r) else "" for r in ratio]
        else:
            bars = ax.bar(x, ratio - 1.0, w * 0.9, bottom=1.0, color=colors[n], label=str(n))
            labels = [f"{r:.3g}×" if np.isfinite(r) else "" for r in ratio]
        # the value on every bar: a ratio near 1 is otherwise a bar too short to see
        ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
    if moderate:
        ax.axhline(0.0, color="black", lw=0.8)
        ax.margins(y=0.15)
        ax.set_ylabel(f"median RTT of {lb} against {la} (% change)")
    else:
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        span = float(np.nanmax(np.abs(np.log10(ratios)))) * 1.25 + 0.05  # symmetric about 1×, labels fit
        ax.set_ylim(10 ** -span, 10 ** span)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, p: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        ax.set_ylabel(f"median RTT {lb} / median RTT {la} (log scale)")
    ax.set_title(f"OCPP RTT: {lb} relative to {la} (above the line: {lb} slower)")
    _ticklabels(ax, profiles)
    ax.set_xlabel("profile")
    ax.legend(title="N chargers", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save(fig, out, name, fmt)


def fig_compare_box(runs: list, labels: list[str], order: list[str], out: Path, fmt: str = "png") -> str | None:
    """OCPP RTT per profile, one box per run, one panel per N (log scale); per profile and security variant
    when a run recorded variants (``order`` then names them as ``tables.variant_view`` does)."""
    from matplotlib.patches import Patch

    from labkit.analysis.tables import has_variants, ocpp_ok, variant_view

    by_variant = has_variants(runs)
    oks = [variant_view(r, ocpp_ok(r), effective=by_variant) for r in runs]
    if not any(len(o) for o in oks):
        return None
    ns = sorted({int(n) for o in oks if len(o) for n in o["stations"].unique()})
    profiles = [p for p in order if any(len(o) and p in set(o["profile"].unique()) for o in oks)]
    set2 = matplotlib.colormaps["Set2"]
    pal = [set2(i % 8) for i in range(len(runs))]
    rows = len(ns)
    fig, axes = plt.subplots(rows, 1, figsize=(max(7, 0.55 * len(profiles) * len(runs) + 3.0), 2.9 * rows + 0.6),
                             squeeze=False, sharex=True, layout="constrained")
    for ax, n in zip(axes[:, 0], ns, strict=False):
        for j, o in enumerate(oks):
            if not len(o):
                continue
            groups = {p: g.to_numpy(dtype=float) for p, g in o[o["stations"] == n].groupby("profile")["rtt_ms"]}
            _grouped_boxes(ax, [groups.get(p) for p in profiles], j, len(runs), pal[j])
        _log_ms(ax)
        ax.set_title(f"N = {n}")
        ax.set_ylabel("OCPP RTT (ms, log)")
        ax.set_xlim(-0.6, len(profiles) - 0.4)
    _ticklabels(axes[-1, 0], profiles)
    axes[-1, 0].set_xlabel("profile")
    fig.legend(handles=[Patch(facecolor=pal[j], edgecolor="#333333", label=f"{labels[j]}: {runs[j].backend}/"
                              f"{runs[j].engine}, OCPP {runs[j].ocpp_version}") for j in range(len(runs))],
               loc="outside upper center", ncols=min(3, len(runs)), frameon=False)
    return save(fig, out, "compare_box", fmt)


def fig_thesis(rows: pd.DataFrame, lab: str, name: str, out: Path, fmt: str = "png") -> str | None:
    """The dissertation's figures against ours: OCPP RTT median per N, and mean ping RTT EVSE→CPO."""
    if rows.empty:
        return None
    panels = []
    oc = rows[(rows["measure"] == "ocpp_rtt") & (rows["statistic"] == "median")]
    for n in sorted(oc["N"].unique()):
        panels.append((f"OCPP RTT median, N = {n}", oc[oc["N"] == n], "OCPP RTT (ms, log scale)"))
    pg = rows[(rows["measure"] == "ping_rtt") & (rows["statistic"] == "mean_evse_to_cpo")]
    if len(pg):
        panels.append(("ping mean RTT EVSE→CPO", pg, "ping RTT (ms, log scale)"))
    panels = [p for p in panels if p[1]["ours"].notna().any() or len(p[1])]
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.9 * cols + 0.4, 3.2 * nrows + 0.7), squeeze=False,
                             layout="constrained")
    thesis_order = ["Reference", "AMPS", "GPRS", "3G", "4G", "VSAT"]
    for ax, (title, sub, ylabel) in zip(axes.flat, panels, strict=False):
        present = set(sub["thesis_profile"].unique())
        sub = sub.set_index("thesis_profile").reindex([p for p in thesis_order if p in present])
        x = np.arange(len(sub))
        ax.vlines(x, sub["thesis"], sub["ours"], color="#bbbbbb", lw=2, zorder=1)
        ax.scatter(x, sub["thesis"], s=46, marker="s", color=CONF, label="dissertation (2021)", zorder=2)
        ax.scatter(x, sub["ours"], s=46, marker="o", color=UP, label=f"{lab} (labkit)", zorder=3)
        _log_ms(ax)
        ax.set_xlim(-0.6, len(sub) - 0.4)
        lo = np.nanmin(np.r_[sub["thesis"].to_numpy(dtype=float), sub["ours"].to_numpy(dtype=float)])
        hi = np.nanmax(np.r_[sub["thesis"].to_numpy(dtype=float), sub["ours"].to_numpy(dtype=float)])
        if lo > 0 and hi > 0:
            ax.set_ylim(lo / 1.6, hi * 1.6)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{p}\n{q}" for p, q in zip(sub.index, sub["profile"], strict=False)], fontsize=7.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2, frameon=False)
    return save(fig, out, name, fmt)
