"""``labkit compare``: two SYNTHETIC runs side by side, the thesis-2021 target, and the shipped thesis data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from labkit.analysis import thesis as TH
from labkit.analysis.compare import compare_pair, write_compare
from labkit.analysis.load import load_run
from labkit.cli import main

REFERENCE = Path("/work/shared/reference/thesis_2021.csv")


def test_shipped_thesis_data():
    th = TH.load_thesis()
    assert len(th) == 206
    assert set(th["table"]) == set(range(9, 18))
    assert (th["differs"].str.len() > 20).all(), "every row says where the setup differs"
    assert set(th["labkit_profile"]) == {"none", "slow-amps", "slow-gprs", "slow-3g", "slow-4g", "slow-vsat"}
    row = th[(th["table"] == 14) & (th["profile"] == "Reference") & (th["statistic"] == "median")].iloc[0]
    assert row["value"] == 14.36 and row["virtualization"] == "container" and row["evse_count"] == 1
    rate = th[(th["table"] == 10) & (th["profile"] == "AMPS") & (th["statistic"] == "configured_kilobytes_per_s")]
    assert rate.iloc[0]["value_si"] == pytest.approx(112_000.0) and rate.iloc[0]["unit_si"] == "bit/s"
    mins = th[(th["measure"] == "ocpp_rtt") & (th["statistic"] == "min") & (th["profile"] != "Reference")]
    assert mins["differs"].str.contains("artefact of that shared timer").all()
    assert th[th["measure"] == "iperf_tcp"]["differs"].str.contains("one-way shaping").all()
    assert th[th["statistic"].str.startswith("configured_kilo")]["differs"].str.contains("kilobytes per second").all()


@pytest.mark.skipif(not REFERENCE.exists(), reason="the shared reference CSV is not on this machine")
def test_shipped_thesis_data_equals_the_reference():
    ref = list(csv.DictReader(REFERENCE.open()))
    ours = list(csv.DictReader(TH.DATA.open()))
    keys = ["table", "measure", "virtualization", "evse_count", "profile", "statistic", "value", "note"]
    assert [{k: r[k] for k in keys} for r in ours] == [{k: r[k] for k in keys} for r in ref]


def test_compare_pair_finds_no_effect_between_similar_runs_and_a_large_one_when_shifted(synth_dir, synth_dir_b):
    a, b = load_run(synth_dir), load_run(synth_dir_b)
    res = compare_pair(a, b)
    oc = res["ocpp"].set_index(["profile", "stations"])
    assert len(oc) == 20
    # same simulator, other seed: negligible or small effects almost everywhere
    assert (oc["magnitude"].isin(["negligible", "small"])).mean() >= 0.9
    # A against itself shifted by +5 ms: the HL shift is exactly 5 ms everywhere
    a2 = load_run(synth_dir)
    a2.calls["rtt_ms"] = a2.calls["rtt_ms"] + 5.0
    oc2 = compare_pair(a, a2)["ocpp"].set_index(["profile", "stations"])
    assert np.allclose(oc2["hl_shift"], 5.0, atol=1e-3)
    assert np.allclose(oc2["diff"], 5.0, atol=1e-6)
    assert oc2.loc[("none", 10), "magnitude"] == "large" and oc2.loc[("none", 10), "p"] < 1e-6
    assert oc2.loc[("vsat", 50), "cliffs_delta"] > 0  # later run slower: positive delta


def test_compare_writes_both_documents(synth_dir, synth_dir_b, tmp_path):
    res = write_compare([str(synth_dir), str(synth_dir_b)], tmp_path / "c", workers=2)
    md = res.markdown.read_text()
    assert "## B against A: vagrant/userspace, OCPP 1.6 vs netns/userspace, OCPP 1.6" in md
    assert "*Settings that differ between the runs" in md
    assert "| backend | netns | vagrant |" in md and "| seed | 7 | 11 |" in md
    assert "| meter_values |" not in md  # the same in both
    assert "*Ping RTT*" in md and "*OCPP RTT (successful calls, all actions)*" in md
    assert "Cliff's δ" in md and "Mann-Whitney p" in md and "HL shift (ms)" in md
    assert "iperf3 TCP goodput" in md
    assert {"ratio_A_B.png", "compare_box.png"} <= set(res.figures)
    assert res.html.read_text().count("<table>") >= 5


def test_compare_with_thesis_shows_theirs_ours_and_the_difference(synth_dir, tmp_path):
    res = write_compare([str(synth_dir), "thesis-2021"], tmp_path / "t", workers=1)
    md = res.markdown.read_text()
    assert "## A against the dissertation (thesis-2021: its container tables)" in md
    label, which, rows = res.thesis_rows[0]
    assert (label, which) == ("A", "thesis-2021")
    run = res.runs[0]
    from labkit.analysis import tables as T

    ocpp = T.ocpp_table(run).set_index(["profile", "stations"])
    r = rows[(rows["measure"] == "ocpp_rtt") & (rows["statistic"] == "median") & (rows["N"] == 10)
             & (rows["thesis_profile"] == "VSAT")].iloc[0]
    assert r["profile"] == "slow-vsat" and r["setup"] == "container" and r["table"] == 15
    assert r["thesis"] == 521.24
    assert r["ours"] == pytest.approx(ocpp.loc[("slow-vsat", 10), "median"])
    assert r["diff"] == pytest.approx(r["ours"] - 521.24)
    # every thesis profile the run has, for every statistic of the dissertation's tables
    n1 = rows[(rows["measure"] == "ocpp_rtt") & (rows["N"] == 1)]
    assert set(n1["thesis_profile"]) == {"Reference", "GPRS", "4G", "VSAT"}
    assert set(n1["statistic"]) == {"mean", "std", "median", "min", "max"}
    # 4G falls back to the realistic 4g profile (no slow-4g in this run), and says so
    r4 = n1[n1["thesis_profile"] == "4G"].iloc[0]
    assert r4["profile"] == "4g" and r4["realistic_match"] and "realistic" in r4["differs"]
    assert "Not in this run: 3G (slow-3g), AMPS (slow-amps)." in md
    # iperf: the dissertation's kilobytes per second in bit/s; ping: its one-way latency as added RTT
    ip = rows[(rows["measure"] == "iperf_tcp") & (rows["thesis_profile"] == "VSAT")].set_index("statistic")
    assert ip.loc["configured_kilobytes_per_s", "thesis"] == 40e6
    assert ip.loc["configured_kilobytes_per_s", "ours"] == 40e6
    pg = rows[(rows["measure"] == "ping_rtt") & (rows["thesis_profile"] == "GPRS")].set_index("statistic")
    assert pg.loc["configured_added_rtt", "diff"] == 0.0
    assert "Setup differs in every row: timer, load, containers" in md
    assert "**Where the dissertation's setup differs**" in md and "*timer artefact*:" in md
    assert "thesis_A.png" in res.figures


def test_thesis_vm_tables_for_a_vagrant_run(synth_dir_b, tmp_path):
    res = write_compare([str(synth_dir_b), "thesis-2021"], tmp_path / "v", figures=False)
    _, _, rows = res.thesis_rows[0]
    n1 = rows[(rows["measure"] == "ocpp_rtt") & (rows["N"] == 1)]
    assert set(n1["setup"]) == {"vm"} and set(n1["table"]) == {13}
    assert set(rows[(rows["measure"] == "ocpp_rtt") & (rows["N"] > 1)]["setup"]) == {"container"}
    res = write_compare([str(synth_dir_b), "thesis-2021-containers"], tmp_path / "c", figures=False)
    _, _, rows = res.thesis_rows[0]
    assert set(rows["setup"]) == {"container"}


def test_thesis_against_a_run_without_its_profiles(tmp_path, synth):
    d = synth.make_run(tmp_path, profiles=["3g"], fleets=[(1, 1)], incomplete=False, outage=False)
    res = write_compare([str(d), "thesis-2021"], tmp_path / "o", figures=False)
    _, _, rows = res.thesis_rows[0]
    assert set(rows["thesis_profile"]) == {"3G"} and rows["realistic_match"].all()
    d2 = synth.make_run(tmp_path / "x", profiles=["slow-amps"], fleets=[(1, 1)], incomplete=False, outage=False,
                        label="amps")
    _, _, rows2 = write_compare([str(d2), "thesis-2021"], tmp_path / "p", figures=False).thesis_rows[0]
    assert set(rows2["profile"]) == {"slow-amps"}
    assert not math.isnan(rows2[(rows2["statistic"] == "median") & (rows2["N"] == 1)]["ours"].iloc[0])


def test_compare_on_an_empty_run_does_not_crash(tmp_path, synth_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = write_compare([str(empty), str(synth_dir), "thesis-2021"], tmp_path / "e", workers=1)
    md = res.markdown.read_text()
    assert "manifest.json`: missing" in md
    assert "Nothing to compare" in md
    assert "This run has none of the dissertation's profiles" in md


def test_cli_compare(synth_dir, synth_dir_b, tmp_path, capsys):
    assert main(["compare", str(synth_dir), str(synth_dir_b), "thesis-2021", "-o", str(tmp_path / "c"),
                 "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "B vs A: OCPP RTT" in out
    assert "A vs thesis-2021: OCPP median Reference->none N=1: dissertation 14.36 ms" in out
    assert "B vs thesis-2021: OCPP median Reference->none N=1: dissertation 22.79 ms" in out  # VM table 13
    assert (tmp_path / "c" / "compare.html").exists()


@pytest.mark.parametrize("args, message", [
    (["thesis-2021"], "needs two or more targets"),
    (["thesis-2021", "thesis-2021-vm"], "at least one results directory"),
    (["RUN", "thesis-2022"], "unknown target; built-in targets: thesis-2021"),
    (["RUN", "/no/such/dir"], "/no/such/dir: no such results directory"),
])
def test_cli_compare_errors(args, message, synth_dir, capsys):
    args = [str(synth_dir) if a == "RUN" else a for a in args]
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labkit: error:") and message in err and len(err.splitlines()) == 1


def test_hodges_lehmann_in_compare_is_exact_on_small_samples(tmp_path, synth):
    a = load_run(synth.make_run(tmp_path / "a", profiles=["none"], fleets=[(1, 1)], incomplete=False,
                                outage=False, seed=1))
    b = load_run(synth.make_run(tmp_path / "b", profiles=["none"], fleets=[(1, 1)], incomplete=False,
                                outage=False, seed=2))
    oc = compare_pair(a, b)["ocpp"].iloc[0]
    x = a.calls[a.calls["outcome"] == "ok"]["rtt_ms"].to_numpy()
    y = b.calls[b.calls["outcome"] == "ok"]["rtt_ms"].to_numpy()
    assert oc["hl_shift"] == pytest.approx(np.median((y[None, :] - x[:, None]).ravel()), abs=1e-4)


def test_compare_sets_what_ran_side_by_side_and_flags_a_difference(synth, synth_dir, tmp_path, capsys):
    b = synth.make_run(tmp_path / "b", seed=11, event_loop="asyncio", validation="sync", incomplete=False,
                       outage=False, label="synthetic-asyncio")
    res = write_compare([str(synth_dir), str(b)], tmp_path / "c", figures=False)
    md = res.markdown.read_text()
    assert "> **What ran differs between the runs:** " in md
    assert "fleets: event loop: A uvloop, B asyncio" in md and "CSMS: schema validation: A fast, B sync" in md
    assert "| fleets: event loop | uvloop | asyncio |" in md
    assert "| fleets: Python | 3.11.9 | 3.11.9 |" in md  # side by side, the same ones too
    differs = dict(res.runtime_differs)
    assert differs["fleets: event loop"] == {"A": "uvloop", "B": "asyncio"}
    assert "fleets: Python" not in differs
    assert md.index("What ran differs") < md.index("## B against A")
    assert main(["compare", str(synth_dir), str(b), "-o", str(tmp_path / "cli"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "what ran differs: fleets: event loop: A uvloop, B asyncio" in out
    # the same settings: nothing flagged
    same = write_compare([str(synth_dir), str(synth.make_run(tmp_path / "s", seed=3, incomplete=False,
                                                                 outage=False, label="same"))],
                         tmp_path / "c2", figures=False)
    assert "What ran differs" not in same.markdown.read_text() and same.runtime_differs == []


def test_compare_with_a_format_1_run_does_not_flag_what_it_does_not_know(synth_dir, synth_dir_v1, tmp_path):
    res = write_compare([str(synth_dir_v1), str(synth_dir)], tmp_path / "c", figures=False)
    md = res.markdown.read_text()
    assert "What ran differs" not in md  # A (format /1) does not say which loop it ran
    assert "Not recorded in every run" in md and "fleets: event loop" in md
    assert "| fleets: event loop | — | uvloop |" in md
    # B's transaction faults are listed as suspect under B
    assert "- **suspect**: `cells/vsat__n10x1__r1/ocpp/`: 2 transaction message(s) LOST" in md


def test_compare_sets_the_echo_probe_side_by_side(synth_dir, synth_dir_b, tmp_path):
    res = write_compare([str(synth_dir), str(synth_dir_b)], tmp_path / "c", figures=False)
    assert "*Echo probe RTT (labkit's own, microsecond resolution)*" in res.markdown.read_text()
    echo = res.pairs[0][1]["echo"].set_index(["profile", "direction"])
    assert len(echo) == 10 and (echo["n_a"] > 30).all()
