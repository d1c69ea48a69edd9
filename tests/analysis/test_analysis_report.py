"""``labkit report`` end to end on SYNTHETIC runs: files, sections, robustness, and figure legibility.

The legibility checks draw every figure in-process and inspect the rendered text: quantitative axes carry
a unit, tick labels do not overlap, and no text falls outside the figure.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil

import pytest

from labkit.analysis import figures as F
from labkit.analysis.report import write_report
from labkit.cli import main

NUM = re.compile(r"^[−\-+]?[\d.,]+(e[−\-+]?\d+)?\s*(×|%|[kMG]?bit/s)?$")


def _visible_texts(labels):
    return [t for t in labels if t.get_visible() and t.get_text().strip()]


def _inside(bb, fb, tol: float = 2.0) -> bool:
    return bb.x0 >= fb.x0 - tol and bb.x1 <= fb.x1 + tol and bb.y0 >= fb.y0 - tol and bb.y1 <= fb.y1 + tol


def check_legible(fig) -> list[str]:
    """Problems with a drawn figure: unit-less numeric axes, overlapping tick labels, text outside."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    fb = fig.bbox
    issues = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        colorbar = ax.get_label() == "<colorbar>"
        abox = ax.get_window_extent(renderer)
        for which, axis, label in (("x", ax.xaxis, ax.get_xlabel()), ("y", ax.yaxis, ax.get_ylabel())):
            if not axis.get_visible():
                continue
            ticks = []
            for t in _visible_texts(axis.get_ticklabels()):  # only the labels inside the axis span are drawn
                bb = t.get_window_extent(renderer)
                c = (bb.x0 + bb.x1) / 2 if which == "x" else (bb.y0 + bb.y1) / 2
                lo, hi = (abox.x0, abox.x1) if which == "x" else (abox.y0, abox.y1)
                if lo - 1 <= c <= hi + 1:
                    ticks.append((t, bb))
            if not ticks:
                continue
            numeric = all(NUM.match(t.get_text().replace("\u2212", "-")) for t, _ in ticks)
            if numeric and not colorbar and "(" not in label and "%" not in label and "fraction" not in label:
                issues.append(f"{ax.get_title()!r}: numeric {which} axis without a unit: label {label!r}")
            boxes = sorted((bb for _, bb in ticks), key=lambda b: b.x0 if which == "x" else b.y0)
            for a, b in itertools.pairwise(boxes):
                if a.overlaps(b) and a.intersection(a, b).width > 1 and a.intersection(a, b).height > 1:
                    issues.append(f"{ax.get_title()!r}: overlapping {which} tick labels")
                    break
        if not _inside(ax.get_tightbbox(renderer), fb):
            issues.append(f"{ax.get_title()!r}: axes or its labels reach outside the figure")
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    labels = []
    for ax in fig.axes:
        if ax.get_visible():
            labels += [t for t in (ax.xaxis.label, ax.yaxis.label, ax.title) if t.get_visible() and t.get_text()]
    for leg in legends:
        lb = leg.get_window_extent(renderer)
        for t in labels:
            tb = t.get_window_extent(renderer)
            if lb.overlaps(tb) and lb.intersection(lb, tb).width > 1 and lb.intersection(lb, tb).height > 1:
                issues.append(f"legend overlaps the label {t.get_text()!r}")
    for art in legends + list(fig.texts) + ([fig._suptitle] if fig._suptitle else []):
        if art.get_visible() and not _inside(art.get_window_extent(renderer), fb):
            issues.append(f"text outside the figure: {type(art).__name__}")
    return issues


@pytest.fixture(scope="module")
def report_a(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_a")
    return write_report(synth_dir, out, workers=2)


def test_report_files_and_sections(report_a):
    md = report_a.markdown.read_text()
    html = report_a.html.read_text()
    for title in ("What is missing or suspect", "The run", "configured against measured RTT",
                  "iperf3 goodput", "OCPP round-trip time", "Call outcomes", "The protocol's own cost",
                  "Scaling with the number of chargers", "Over time", "Outages and reconnections"):
        assert title in md, title
    assert "SYNTHETIC DATA" in md and "<table>" in html and "<img" in html
    for n in (1, 10, 25, 50):
        assert f"OCPP RTT, N = {n} charger" in md
    # the dissertation's layout: statistics as rows, profiles as columns, in order
    assert re.search(r"\| ms \| none \| 4g \| vsat \| slow-gprs \| slow-vsat \|", md)
    for row in ("| mean |", "| std |", "| median |", "| min |", "| max |", "| p95 |", "| p99 |",
                "| median 95% CI |"):
        assert row in md
    figs = {p.name for p in (report_a.markdown.parent / "figures").iterdir()}
    assert {"ping_rtt.png", "goodput.png", "ocpp_box.png", "ocpp_ecdf.png", "ocpp_overhead.png",
            "scaling.png"} <= figs
    assert any(f.startswith("timeline_") and "4g__n10x1" in f for f in figs)  # the outage cell
    for f in figs:
        assert f"figures/{f}" in md
        data = (report_a.markdown.parent / "figures" / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    tables = {p.name for p in (report_a.markdown.parent / "tables").iterdir()}
    assert {"ping.csv", "ocpp_rtt_n1.csv", "outcomes.csv", "scaling.csv"} <= tables


def test_report_problems_come_first(report_a):
    md = report_a.markdown.read_text()
    assert md.index("What is missing or suspect") < md.index("## The run")
    assert "calls-evse2.csv`: last line torn" in md


@pytest.fixture
def checked_figures(monkeypatch):
    """Figures drawn while this fixture is active are checked; returns name -> problems."""
    seen: dict[str, list[str]] = {}
    real_save = F.save

    def checking_save(fig, out_dir, name, fmt="png"):
        seen[name] = check_legible(fig)
        return real_save(fig, out_dir, name, fmt)

    monkeypatch.setattr(F, "save", checking_save)
    return seen


@pytest.mark.slow
def test_every_figure_is_legible(synth_dir, tmp_path, checked_figures):
    """Draw every report figure in this process and check units, tick-label overlap and clipping."""
    write_report(synth_dir, tmp_path, workers=1)
    assert len(checked_figures) >= 10
    bad = {k: v for k, v in checked_figures.items() if v}
    assert not bad, bad


@pytest.mark.slow
def test_every_figure_is_legible_on_the_thesis_plan_and_in_compare(synth, synth_dir, tmp_path, checked_figures):
    """The dissertation's six profiles (longer names, more columns) and the compare figures."""
    from labkit.analysis.compare import write_compare

    d = synth.make_run(tmp_path / "runs", plan="thesis-reduced", meter_values=15, fleets=[(1, 1), (10, 1), (10, 5)],
                       label="thesis")
    write_report(d, tmp_path / "r", workers=1)
    write_compare([str(d), str(synth_dir), "thesis-2021"], tmp_path / "c", workers=1)
    assert {"ocpp_overhead", "compare_box", "ratio_A_B", "thesis_A", "thesis_B"} <= set(checked_figures)
    bad = {k: v for k, v in checked_figures.items() if v}
    assert not bad, bad


def test_legibility_check_catches_problems():
    """The checker itself must fail on a bad figure (a test that cannot fail is a defect)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(range(12), range(12))
    ax.set_xticks(range(12))
    ax.set_xticklabels([f"a-very-long-profile-name-{i}" for i in range(12)])
    ax.set_ylabel("rtt")
    issues = check_legible(fig)
    plt.close(fig)
    assert any("without a unit" in i for i in issues)
    assert any("overlapping" in i for i in issues)
    assert any("outside the figure" in i for i in issues)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2], [1, 2], label="a legend entry that is much too long for this tiny figure")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    issues = check_legible(fig)
    plt.close(fig)
    assert "text outside the figure: Legend" in issues
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2], [1, 2], label="x")
    ax.set_ylabel("rtt (ms)")
    ax.legend(loc="center left", bbox_to_anchor=(-0.2, 0.5))
    issues = check_legible(fig)
    plt.close(fig)
    assert "legend overlaps the label 'rtt (ms)'" in issues
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.barh(range(30), range(30))
    ax.set_yticks(range(30))
    ax.set_yticklabels([f"profile-{i}" for i in range(30)], rotation=90)
    ax.set_xlabel("rate (bit/s)")
    issues = check_legible(fig)
    plt.close(fig)
    assert any("overlapping y tick labels" in i for i in issues)


def test_svg_and_no_figures(synth_dir, tmp_path):
    r = write_report(synth_dir, tmp_path / "svg", fmt="svg", workers=2)
    assert r.figures and all(f.endswith(".svg") for f in r.figures)
    assert (tmp_path / "svg" / "figures" / "ping_rtt.svg").read_text().lstrip().startswith("<?xml")
    r = write_report(synth_dir, tmp_path / "nofig", figures=False)
    assert r.figures == [] and "![" not in r.markdown.read_text()


def test_report_on_an_empty_directory_says_what_is_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = write_report(empty, tmp_path / "out")
    md = r.markdown.read_text()
    assert "No measurements could be read" in md
    assert "manifest.json`: missing" in md and "no cells" in md
    assert "*No ping samples in this run.*" in md and "*No OCPP call samples in this run.*" in md


def test_report_on_a_badly_damaged_run(copy_run, tmp_path):
    d = copy_run()
    (d / "manifest.json").write_text("{ not json")
    for c in list((d / "cells").iterdir())[::2]:
        shutil.rmtree(c / "ocpp")
    for c in list((d / "cells").iterdir())[1::3]:
        (c / "ping.csv").write_text("garbage\n\x00\x01\x02")
        (c / "cell.json").write_text("[]")
    for p in list((d / "cells").glob("*/iperf/tcp-up.json"))[::2]:
        p.write_text('{"end": 3}')
    r = write_report(d, tmp_path / "out", workers=2)
    md = r.markdown.read_text()
    assert "manifest.json`: not valid JSON" in md
    assert "no OCPP call samples" in md and "header lacks column(s)" in md
    assert "expected a JSON object" in md
    assert "not iperf3 -J output" in md
    assert "## OCPP round-trip time" in md and r.figures


def test_report_on_a_running_run_with_one_cell(copy_run, tmp_path):
    d = copy_run()
    m = json.loads((d / "manifest.json").read_text())
    keep = m["cells"][0]["id"]
    m["status"], m["cells"] = "running", m["cells"][:1]
    (d / "manifest.json").write_text(json.dumps(m))
    for c in (d / "cells").iterdir():
        if c.name != keep:
            shutil.rmtree(c)
    r = write_report(d, tmp_path / "out", workers=1)
    md = r.markdown.read_text()
    assert "status is 'running'" in md
    assert "Scaling with the number of chargers" not in md  # one N only: no scaling section
    assert "ocpp_box.png" in md


def test_cli_report(synth_dir, tmp_path, capsys):
    assert main(["report", str(synth_dir), "--out", str(tmp_path / "r"), "--jobs", "2"]) == 0
    out, err = capsys.readouterr()
    assert str(tmp_path / "r" / "report.html") in out
    assert "labkit: warning:" in err and "last line torn" in err
    assert (tmp_path / "r" / "report.md").exists()


def test_cli_report_two_runs_and_errors(synth_dir, synth_dir_b, tmp_path, capsys):
    assert main(["report", str(synth_dir), str(synth_dir_b), "-o", str(tmp_path / "two"), "--no-figures"]) == 0
    assert (tmp_path / "two" / synth_dir.name / "report.md").exists()
    assert (tmp_path / "two" / synth_dir_b.name / "report.md").exists()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such results directory" in capsys.readouterr().err
    assert main(["report", str(synth_dir), "--format", "gif"]) == 2
    assert main(["report"]) == 2


def test_cli_report_default_location_is_inside_the_run(copy_run, capsys):
    d = copy_run()
    assert main(["report", str(d), "--no-figures"]) == 0
    assert (d / "report" / "report.html").exists()
    assert (d / "report" / "report.md").read_text().startswith("# labkit report: ")


def test_unwritable_output_is_one_line_error(synth_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(synth_dir), "-o", str(blocker / "sub"), "--no-figures"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("labkit: error:") and "cannot write the report" in err[-1]


def test_cli_report_on_an_empty_directory_fails_with_one_line(tmp_path, synth_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"labkit: error: {empty}: not a results directory")
    assert not (empty / "report").exists()  # nothing written
    # a directory holding runs: the error names one of them
    assert main(["report", str(synth_dir.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"give one of them, e.g. {synth_dir}" in err[0]
    # several runs: checked before any report is written
    assert main(["report", str(synth_dir), str(empty), "-o", str(tmp_path / "o"), "--no-figures"]) == 2
    assert not (tmp_path / "o").exists()
    # compare refuses it too
    assert main(["compare", str(synth_dir), str(empty)]) == 2
    # some content with problems is still reported: a damaged manifest alone, or a cell alone
    (empty / "manifest.json").write_text("{ not json")
    assert main(["report", str(empty), "-o", str(tmp_path / "r1"), "--no-figures"]) == 0
    other = tmp_path / "cells-only"
    (other / "cells" / "none__n1x1__r1").mkdir(parents=True)
    assert main(["report", str(other), "-o", str(tmp_path / "r2"), "--no-figures"]) == 0
    assert "manifest.json`: missing" in (tmp_path / "r2" / "report.md").read_text()


def _edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_run_table_shows_what_ran(report_a):
    md = report_a.markdown.read_text()
    assert ("| cpo | CSMS | uvloop | 0.21.0 | fast | 3.11.9 | 2.1.0 | 15.0.1 | 0.21.0 | 0.1.0 | the process's status |"
            in md)
    assert "| 10 hosts: evse1 … evse10 | fleet | uvloop | 0.21.0 | fast |" in md
    assert md.index("*What ran: event loop") < md.index("## Network: configured")


def test_run_table_prefers_what_ran_to_what_was_installed(copy_run, tmp_path):
    from labkit.analysis import tables as T
    from labkit.analysis.load import load_run

    d = copy_run()

    def manifest(m):  # the host facts predicted uvloop on evse1 and asyncio on the CPO
        m["hosts"]["evse1"]["event_loop"] = "uvloop"
        m["hosts"]["cpo"].update(event_loop="asyncio", uvloop="missing")
    _edit_json(d / "manifest.json", manifest)
    for cj in (d / "cells").glob("*/cell.json"):
        def cell(c):
            c["ocpp"].pop("csms")  # no CSMS status: the host facts stand
            for st in c["ocpp"]["fleets"].values():
                st["event_loop"], st["event_loop_version"] = "asyncio", ""
                st["versions"]["uvloop"] = ""
            if "evse2" in c["ocpp"]["fleets"] and c["id"] == "none__n2x25__r1":
                c["ocpp"]["fleets"]["evse2"]["validation"] = "off"
        _edit_json(cj, cell)
    tbl = T.runtime_table(load_run(d)).set_index("host")
    assert tbl.loc["evse1", "event_loop"] == "asyncio" and tbl.loc["evse1", "source"] == "status"
    assert tbl.loc["evse1", "uvloop"] == "0.21.0"  # empty in the status: the host facts fill it in
    assert tbl.loc["cpo", "event_loop"] == "asyncio" and tbl.loc["cpo", "source"] == "host facts"
    assert tbl.loc["evse2", "validation"] == "fast | off" and tbl.loc["evse2", "differs_between_cells"] == "validation"
    assert "gw" not in tbl.index  # no simulator runs on the gateway
    md = write_report(d, tmp_path / "r", figures=False).markdown.read_text()
    assert "| cpo | CSMS | asyncio | — | — |" in md and "host facts only (what was installed)" in md
    assert "**Differs between cells**: evse2: validation." in md


def test_report_labels_the_rtt_baseline(report_a):
    md = report_a.markdown.read_text()
    assert "### Cross-check: labkit's echo probe against ping" in md
    assert "*OCPP RTT − network RTT (median, ms; baseline: echo probe), N = 1*" in md
    assert "| none | echo |" in md
    tables = report_a.markdown.parent / "tables"
    x = tables / "echo_vs_ping.csv"
    assert x.exists() and "diff_ms" in x.read_text().splitlines()[0]
    assert "baseline" in (tables / "ocpp_overhead.csv").read_text().splitlines()[0]


def test_report_labels_a_mixed_baseline(copy_run, tmp_path):
    d = copy_run()
    (d / "cells" / "vsat__n1x1__r1" / "echo.csv").unlink()
    md = write_report(d, tmp_path, figures=False).markdown.read_text()
    assert "baseline: echo probe; ping for vsat), N = 1*" in md
    assert "| vsat | ping |" in md
    assert "cells/vsat__n1x1__r1/echo.csv`: missing while ping.csv is there" in md
