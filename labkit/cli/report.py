"""``labkit report`` and ``labkit compare``: tables and figures from results directories alone.

Both read only what ``labkit bench`` wrote (docs/results.md) and never need a lab. The analysis stack
(pandas, matplotlib, seaborn, scipy) is imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from labkit.errors import ConfigError, LabkitError

MAX_WARNINGS = 12
COMMON = [
    click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False),
                 help="Output directory."),
    click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png", show_default=True,
                 help="Figure file format."),
    click.option("--no-figures", is_flag=True, help="Tables only (fastest)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling."),
    click.option("--jobs", type=click.IntRange(min=1), default=None,
                 help="Worker processes drawing figures [default: the CPUs available, at most 4]."),
]


def _common(func):
    for opt in reversed(COMMON):
        func = opt(func)
    return func


def _check_run_dir(arg: str) -> Path:
    """A results directory to read; a ConfigError (exit status 2) when there is nothing to read at all.

    A directory with a manifest.json or a cell directory is read whatever its state (a damaged or partial
    run gets a report that says what is wrong); one with neither holds no results."""
    p = Path(arg)
    if not p.exists():
        raise ConfigError(f"{arg}: no such results directory")
    if not p.is_dir():
        raise ConfigError(f"{arg}: not a directory (a results directory written by `labkit bench` is needed)")
    cells = p / "cells"
    if not (p / "manifest.json").exists() and not (cells.is_dir() and any(c.is_dir() for c in cells.iterdir())):
        runs = sorted(c.name for c in p.iterdir() if (c / "manifest.json").is_file())
        if runs:
            raise ConfigError(f"{arg}: a directory of {len(runs)} results director{'y' if len(runs) == 1 else 'ies'}, "
                              f"not one: give one of them, e.g. {p / runs[-1]}")
        raise ConfigError(f"{arg}: not a results directory (no manifest.json, no cells/): nothing to report")
    return p


def _warn_problems(run) -> None:
    if not run.problems:
        return
    # what the results say went wrong (a transaction message lost or delivered twice) before what is missing
    ordered = [p for p in run.problems if p.kind == "suspect"] + [p for p in run.problems if p.kind != "suspect"]
    for p in ordered[:MAX_WARNINGS]:
        click.echo(f"labkit: warning: {run.run_id}: {p}", err=True)
    if len(run.problems) > MAX_WARNINGS:
        click.echo(f"labkit: warning: {run.run_id}: ... and {len(run.problems) - MAX_WARNINGS} more "
                   "(listed in the report)", err=True)


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@_common
def report(runs: tuple[str, ...], out: Path | None, fmt: str, no_figures: bool, seed: int,
           jobs: int | None) -> None:
    """Write report.md and report.html (with figures/ and tables/) for each results directory RUN.

    \b
    The report goes to RUN/report/ unless --out is given (with several runs: OUT/<run id>/).
    A partial or corrupt results directory still gets a report; it starts by saying what is missing.
    """
    from labkit.analysis.report import write_report

    dirs = [_check_run_dir(r) for r in runs]
    for d in dirs:
        target = None
        if out is not None:
            target = out if len(dirs) == 1 else out / d.resolve().name
        try:
            res = write_report(d, target, fmt=fmt, seed=seed, figures=not no_figures, workers=jobs)
        except OSError as exc:
            raise LabkitError(f"{d}: cannot write the report ({exc.strerror}: {exc.filename}); "
                              "use --out to write it elsewhere") from exc
        _warn_problems(res.run)
        note = f", {len(res.run.problems)} problem(s) listed" if res.run.problems else ""
        click.echo(f"{res.html} ({len(res.figures)} figure(s){note})")
        click.echo(f"{res.markdown}")


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="A B [C...]")
@_common
def compare(targets: tuple[str, ...], out: Path | None, fmt: str, no_figures: bool, seed: int,
            jobs: int | None) -> None:
    """Compare results directories side by side; the first one (A) is the baseline.

    \b
    A target may also be the dissertation's tables:
      thesis-2021             its VM tables for a Vagrant run, its container tables otherwise
      thesis-2021-vm          its VirtualBox VM tables (N = 1 only)
      thesis-2021-containers  its Docker container tables (N = 1, 10, 25, 50)
    Writes compare.md and compare.html (default directory: ./compare-<A>-vs-<B>...).
    """
    from labkit.analysis import thesis as TH

    if len(targets) < 2:
        raise ConfigError(f"compare: needs two or more targets (results directories, or a run and one of "
                          f"{', '.join(TH.TARGETS)}); got {len(targets)}")
    for t in targets:
        if not TH.is_target(t):
            if t.lower().startswith("thesis"):
                raise ConfigError(f"compare: {t}: unknown target; built-in targets: {', '.join(TH.TARGETS)}")
            _check_run_dir(t)
    from labkit.analysis.compare import write_compare

    try:
        res = write_compare(list(targets), out, fmt=fmt, seed=seed, figures=not no_figures, workers=jobs)
    except OSError as exc:
        raise LabkitError(f"compare: cannot write ({exc.strerror}: {exc.filename}); use --out") from exc
    for r in res.runs:
        _warn_problems(r)
    _summary(res)
    click.echo(f"{res.html} ({len(res.figures)} figure(s))")
    click.echo(f"{res.markdown}")


def _summary(res) -> None:
    """A few lines on the terminal: large effects between runs, and the dissertation's medians."""
    from labkit.analysis.order import fmt_num

    for key, vals in res.runtime_differs:
        if "—" not in vals.values():
            click.echo(f"what ran differs: {key}: " + ", ".join(f"{lab} {v}" for lab, v in vals.items()))
    for lb, pair in res.pairs:
        oc = pair.get("ocpp")
        if oc is None or len(oc) == 0:
            continue
        big = oc[oc["magnitude"].isin(["medium", "large"])]
        if big.empty:
            click.echo(f"{lb} vs A: OCPP RTT: no medium or large difference (Cliff's delta) in "
                       f"{len(oc)} profile x N pair(s)")
        for r in big.itertuples(index=False):
            click.echo(f"{lb} vs A: OCPP RTT {r.profile} N={r.stations}: median {fmt_num(r.median_a)} -> "
                       f"{fmt_num(r.median_b)} ms, Cliff's delta {fmt_num(r.cliffs_delta)} ({r.magnitude})")
    for lab, which, rows in res.thesis_rows:
        if rows.empty:
            click.echo(f"{lab} vs {which}: no profile in common")
            continue
        med = rows[(rows["measure"] == "ocpp_rtt") & (rows["statistic"] == "median")]
        med = med[med["N"] == med["N"].min()] if len(med) else med  # the rest is in compare.md
        for r in med.itertuples(index=False):
            if math.isnan(r.ours):
                continue
            click.echo(f"{lab} vs {which}: OCPP median {r.thesis_profile}->{r.profile} N={r.N}: "
                       f"dissertation {fmt_num(r.thesis)} ms, ours {fmt_num(r.ours)} ms, "
                       f"difference {fmt_num(r.diff)} ms")
