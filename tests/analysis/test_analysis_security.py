"""OCPP security variants in the analysis: the ``security`` column, tables that keep variants apart, the
connection set-up and reconnection tables, and the report's set-up section.

The exact figures come from a tiny hand-written results directory; the report and the figure from SYNTHETIC
runs (tests/analysis/synthetic.py with ``security``), which are made-up numbers, not measurements.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from labkit import resultsformat as RF
from labkit.analysis import tables as T
from labkit.analysis.load import CELL_ID_RE, load_run
from labkit.analysis.order import parse_security_label, security_order
from labkit.analysis.report import write_report

SP3 = "sat__n1x2__r1__sp3-tls13"
SP0 = "sat__n1x2__r1__sp0"
T0 = 1_714_557_600.0  # 2024-05-01 10:00 UTC
OUTAGE_END = T0 + 20.0
TLS13 = "tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384"


def _csv(path: Path, table: RF.Table, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(table.columns)] + [",".join(str(r.get(c, "")) for c in table.columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _ev(station: str, t: float, event: str, detail: str = "", conn: int | str = "", downtime: float | str = "") -> dict:
    return {"run_id": "r", "host": "evse1", "station_id": station, "t_wall": f"{T0 + t:.3f}", "event": event,
            "detail": detail, "downtime_ms": downtime, "connection": conn}


def _call(station: str, t: float, rtt: float, conn: int = 1) -> dict:
    return {"run_id": "r", "host": "evse1", "station_id": station, "ocpp_version": "1.6", "action": "Heartbeat",
            "t_wall": f"{T0 + t:.3f}", "t_mono_ns": int(t * 1e9), "rtt_ms": rtt, "outcome": "ok", "req_bytes": 57,
            "resp_bytes": 70, "attempt": 1, "message_id": f"{station}-{t}", "connection": conn}


#: the sp3-tls13 cell's events: two stations, each a first connection, a BootNotification, the outage
#: (link back at +20 s), one failed attempt during it, a reconnection (cs1 resumes its TLS session, cs2 not)
SP3_EVENTS = [
    _ev("cs1", 0.0, "connected", conn=1),
    _ev("cs1", 0.001, "handshake", f"tcp_ms=100 tls_ms=110 ws_ms=105 {TLS13} resumed=0 tls_out=1298 tls_in=1328", 1),
    _ev("cs2", 0.5, "connected", conn=1),
    _ev("cs2", 0.501, "handshake", f"tcp_ms=102 tls_ms=130 ws_ms=101 {TLS13} resumed=0 tls_out=1300 tls_in=1330", 1),
    _ev("cs1", 0.2, "booted", "boot_ms=101 since_connect_ms=420", 1),
    _ev("cs2", 0.7, "booted", "boot_ms=103 since_connect_ms=440", 1),
    _ev("cs1", 12.0, "disconnected", "keepalive ping timeout", 1),
    _ev("cs2", 13.0, "disconnected", "keepalive ping timeout", 1),
    _ev("cs2", 15.0, "connect_failed", "TimeoutError (during tcp)", 2),
    _ev("cs1", 21.5, "reconnected", "", 2, 9500),
    _ev("cs1", 21.501, "handshake", f"tcp_ms=100 tls_ms=101 ws_ms=100 {TLS13} resumed=1 tls_out=1024 tls_in=241", 2),
    _ev("cs2", 23.0, "reconnected", "", 2, 10000),
    _ev("cs2", 23.001, "handshake", f"tcp_ms=104 tls_ms=220 ws_ms=102 {TLS13} resumed=0 tls_out=1298 tls_in=1328", 2),
]
#: the sp0 cell's: plain WebSocket, one station reconnects after the outage
SP0_EVENTS = [
    _ev("cs1", 0.0, "connected", conn=1),
    _ev("cs1", 0.001, "handshake", "tcp_ms=100 ws_ms=100 tls=none", 1),
    _ev("cs2", 0.5, "connected", conn=1),
    _ev("cs2", 0.501, "handshake", "tcp_ms=104 ws_ms=106 tls=none", 1),
    _ev("cs1", 0.3, "booted", "boot_ms=100 since_connect_ms=300", 1),
    _ev("cs1", 12.0, "disconnected", "keepalive ping timeout", 1),
    _ev("cs1", 20.4, "reconnected", "", 2, 8400),
    _ev("cs1", 20.401, "handshake", "tcp_ms=100 ws_ms=101 tls=none", 2),
]


def _cell(run: Path, cid: str, security: dict | None, events: list[dict], calls: list[dict],
          outage: bool = True) -> dict:
    c = run / "cells" / cid
    cj = {"id": cid, "profile": "sat", "evse_hosts": ["evse1"], "stations_per_host": 2, "repeat": 1,
          "status": "complete", "baselines": False, "phases": {"iperf": {"status": "skipped"}},
          "expected": {"added_rtt_ms": 100.0, "min_added_rtt_ms": 100.0, "uplink_rate_bps": None,
                       "downlink_rate_bps": None, "uplink_loss_pct": 0, "downlink_loss_pct": 0}}
    if outage:
        cj["outage"] = {"start_s": 10.0, "duration_s": 10.0, "t_wall_start": T0 + 10.0, "t_wall_end": OUTAGE_END,
                        "method": "test"}
    if security:
        cj["security"] = security
    c.mkdir(parents=True)
    (c / "cell.json").write_text(json.dumps(cj))
    _csv(c / "ocpp" / "events-evse1.csv", RF.EVENTS, events)
    _csv(c / "ocpp" / "calls-evse1.csv", RF.CALLS, calls)
    (c / "monitor.csv").write_text(",".join(RF.MONITOR.columns) + "\n")
    return {"id": cid, "dir": f"cells/{cid}", "profile": "sat", "evse_hosts": 1, "stations_per_host": 2,
            "repeat": 1, "status": "complete", **({"security": security} if security else {})}


@pytest.fixture
def sec_run(tmp_path) -> Path:
    """Two security variants of one link profile (100 ms added RTT), N = 2, with an outage in both."""
    run = tmp_path / "20240501T100000Z-sec"
    run.mkdir()
    sp3 = {"profile": 3, "tls_version": "1.3", "resumption": True, "label": "sp3-tls13"}
    sp0 = {"profile": 0, "tls_version": None, "resumption": None, "label": "sp0"}
    cells = [_cell(run, SP3, sp3, SP3_EVENTS, [_call("cs1", 1, 110.0), _call("cs2", 2, 120.0)]),
             _cell(run, SP0, sp0, SP0_EVENTS, [_call("cs1", 1, 105.0)])]
    (run / "manifest.json").write_text(json.dumps({
        "format": RF.FORMAT, "run_id": run.name, "status": "complete", "backend": "netns", "engine": "netem",
        "plan": {"auth": "basic", "security_profiles": [0, 3]}, "cells": cells}))
    return run


# -- the cells' security variant ---------------------------------------------------------------------------
def test_cells_carry_the_security_variant(sec_run):
    r = load_run(sec_run)
    c = r.cells.set_index("cell")
    assert c.loc[SP3, "security"] == "sp3-tls13" and c.loc[SP3, "security_profile"] == 3
    assert c.loc[SP3, "tls_version"] == "1.3" and c.loc[SP3, "tls_resumption"] is True
    assert c.loc[SP0, "security"] == "sp0" and c.loc[SP0, "tls_version"] == ""
    assert r.security_split
    ev = r.with_cells(r.events)
    assert set(ev.loc[ev["cell"] == SP3, "security"]) == {"sp3-tls13"}
    calls = r.with_cells(r.calls)
    assert set(calls.loc[calls["cell"] == SP0, "security"]) == {"sp0"}


def test_cell_id_fallback_accepts_the_security_suffix(tmp_path):
    m = CELL_ID_RE.match("vsat__n2x25__r3__sp3-tls12-nores")
    assert m and (m["profile"], m["hosts"], m["sph"], m["repeat"], m["security"]) == ("vsat", "2", "25", "3",
                                                                                      "sp3-tls12-nores")
    m = CELL_ID_RE.match("slow-4g__n1x1__r1")
    assert m and m["profile"] == "slow-4g" and m["security"] is None
    assert CELL_ID_RE.match("vsat__n2x25__r3__") is None
    # a cell with neither cell.json nor a manifest entry: all of it from the id
    run = tmp_path / "r"
    (run / "cells" / "vsat__n2x25__r3__sp3-tls12-nores").mkdir(parents=True)
    (run / "cells" / "vsat__n1x1__r1").mkdir(parents=True)
    r = load_run(run)
    c = r.cells.set_index("cell")
    row = c.loc["vsat__n2x25__r3__sp3-tls12-nores"]
    assert (row["profile"], row["stations"], row["repeat"]) == ("vsat", 50, 3)
    assert (row["security"], row["security_profile"], row["tls_version"], row["tls_resumption"]) == (
        "sp3-tls12-nores", 3, "1.2", False)
    old = c.loc["vsat__n1x1__r1"]
    assert old["security"] == "" and old["security_profile"] == 0 and old["tls_resumption"] is None
    assert not any("cannot tell the profile" in p.what for p in r.problems)


def test_security_labels_parse_and_sort():
    assert parse_security_label("sp2-tls12-nores") == {"profile": 2, "tls_version": "1.2", "resumption": False}
    assert parse_security_label("sp1") == {"profile": 1, "tls_version": None, "resumption": None}
    for bad in ("sp3", "sp1-tls13", "sp4", "tls13", ""):
        assert parse_security_label(bad) is None, bad
    assert security_order(["sp3-tls13", "sp3-tls12-nores", "x", "sp0", "sp3-tls12", "", "sp2-tls13-nores",
                           "sp2-tls13"]) == ["", "sp0", "sp2-tls13", "sp2-tls13-nores", "sp3-tls12",
                                             "sp3-tls12-nores", "sp3-tls13", "x"]


def test_variant_from_the_id_or_from_the_plan(sec_run):
    """Without ``security`` objects the ids' labels stand; a cell with neither is sp1 under HTTP Basic auth
    (``plan.auth``), and a run of such cells is not split."""
    for cj in (sec_run / "cells").glob("*/cell.json"):
        data = json.loads(cj.read_text())
        data.pop("security")
        cj.write_text(json.dumps(data))
    m = json.loads((sec_run / "manifest.json").read_text())
    for c in m["cells"]:
        c.pop("security")
    (sec_run / "manifest.json").write_text(json.dumps(m))
    r = load_run(sec_run)
    assert dict(zip(r.cells["cell"], r.cells["security"], strict=True)) == {SP3: "sp3-tls13", SP0: "sp0"}
    assert r.security_split
    # an old-style run: no labels anywhere, HTTP Basic auth
    (sec_run / "cells" / SP0).rename(sec_run / "cells" / "sat__n1x2__r1")
    m["cells"] = [dict(m["cells"][1], id="sat__n1x2__r1", dir="cells/sat__n1x2__r1")]
    (sec_run / "manifest.json").write_text(json.dumps(m))
    shutil.rmtree(sec_run / "cells" / SP3)
    r = load_run(sec_run)
    assert list(r.cells["security"]) == [""] and list(r.cells["security_profile"]) == [1]
    assert not r.security_split and T.unlabelled_variant(r) == "sp1"
    assert list(T.setup_table(r)["security"]) == ["sp1"]
    assert "security" not in T.ocpp_table(r).columns


# -- the tables keep the variants apart --------------------------------------------------------------------
def test_ocpp_tables_split_by_security(sec_run):
    r = load_run(sec_run)
    oc = T.ocpp_table(r)
    assert list(oc.columns[:3]) == ["profile", "security", "stations"]
    assert list(oc["security"]) == ["sp0", "sp3-tls13"]  # variant order, not file order
    assert list(oc["median"]) == [105.0, 115.0] and list(oc["n"]) == [1, 2]
    out = T.outcome_table(r)
    assert list(out["security"]) == ["sp0", "sp3-tls13"] and list(out["calls"]) == [1, 2]
    ev = T.events_table(r).set_index("security")
    assert ev.loc["sp3-tls13", "reconnected"] == 2 and ev.loc["sp3-tls13", "connect_failed"] == 1
    assert ev.loc["sp0", "reconnected"] == 1
    assert "security" in T.cpu_table(r).columns
    assert T.variant_order(r) == ["sat · sp0", "sat · sp3-tls13"]
    assert list(T.variant_view(r, oc)["profile"]) == ["sat · sp0", "sat · sp3-tls13"]


def test_setup_table_exact(sec_run):
    r = load_run(sec_run)
    st = T.setup_table(r)
    assert list(st.columns) == T.SETUP_COLUMNS
    assert list(st["security"]) == ["sp0", "sp3-tls13"]
    s3 = st.set_index("security").loc["sp3-tls13"]
    assert (s3["profile"], s3["stations"], s3["tls"]) == ("sat", 2, "TLSv1.3")
    assert (s3["connections"], s3["first_connections"], s3["booted"]) == (4, 2, 2)
    expect = {"tcp_median_ms": 101.0, "tcp_p90_ms": 101.8, "tls_median_ms": 120.0, "tls_p90_ms": 128.0,
              "ws_median_ms": 103.0, "ws_p90_ms": 104.6, "setup_median_ms": 324.0, "setup_p90_ms": 331.2,
              "tls_rtts": 1.2, "setup_rtts": 3.24, "boot_median_ms": 102.0, "boot_p90_ms": 102.8,
              "since_connect_median_ms": 430.0, "since_connect_p90_ms": 438.0, "tls_out_median_bytes": 1299.0,
              "tls_in_median_bytes": 1329.0, "resumed_pct": 25.0, "added_rtt_ms": 100.0}
    for k, v in expect.items():
        assert s3[k] == pytest.approx(v), k
    assert s3["connect_failed"] == 1 and s3["failure_reasons"] == "TimeoutError (during tcp) ×1"
    s0 = st.set_index("security").loc["sp0"]
    assert s0["tls"] == "none" and (s0["connections"], s0["first_connections"], s0["booted"]) == (3, 2, 1)
    assert s0["setup_median_ms"] == pytest.approx(205.0) and s0["setup_rtts"] == pytest.approx(2.05)
    for k in ("tls_median_ms", "tls_rtts", "tls_out_median_bytes", "resumed_pct"):
        assert math.isnan(s0[k]), k
    assert s0["connect_failed"] == 0 and s0["failure_reasons"] == ""


def test_reconnect_table_exact(sec_run):
    r = load_run(sec_run)
    rc = T.reconnect_table(r)
    assert list(rc.columns) == T.RECONNECT_COLUMNS
    assert list(rc["security"]) == ["sp0", "sp3-tls13"]
    s3 = rc.set_index("security").loc["sp3-tls13"]
    assert (s3["outage_cells"], s3["stations"], s3["stations_reconnected"], s3["reconnections"]) == (1, 2, 2, 2)
    expect = {"tcp_median_ms": 102.0, "tls_median_ms": 160.5, "ws_median_ms": 101.0, "setup_median_ms": 363.5,
              "setup_p90_ms": 413.5, "tls_rtts": 1.605, "setup_rtts": 3.635, "resumed_pct": 50.0,
              "setup_resumed_median_ms": 301.0, "setup_not_resumed_median_ms": 426.0,
              "restored_to_reconnected_median_ms": 2250.0, "restored_to_reconnected_p90_ms": 2850.0}
    for k, v in expect.items():
        assert s3[k] == pytest.approx(v), k
    s0 = rc.set_index("security").loc["sp0"]
    assert (s0["stations"], s0["stations_reconnected"], s0["reconnections"]) == (2, 1, 1)
    assert s0["setup_median_ms"] == pytest.approx(201.0) and math.isnan(s0["resumed_pct"])
    assert s0["restored_to_reconnected_median_ms"] == pytest.approx(400.0)


def test_reconnections_before_the_link_came_back_are_not_counted(sec_run):
    """A handshake on a second connection before ``t_wall_end`` is not a reconnection after the outage."""
    f = sec_run / "cells" / SP0 / "ocpp" / "events-evse1.csv"
    f.write_text(f.read_text().replace(f"{T0 + 20.4:.3f}", f"{T0 + 19.0:.3f}")
                 .replace(f"{T0 + 20.401:.3f}", f"{T0 + 19.001:.3f}"))
    rc = T.reconnect_table(load_run(sec_run)).set_index("security")
    assert rc.loc["sp0", "reconnections"] == 0 and rc.loc["sp0", "stations_reconnected"] == 0
    assert math.isnan(rc.loc["sp0", "setup_median_ms"])
    assert rc.loc["sp3-tls13", "reconnections"] == 2


def test_connection_numbers_counted_when_absent(sec_run):
    """Without the ``connection`` column, a station's handshakes are numbered in time order."""
    for f in (sec_run / "cells").glob("*/ocpp/events-evse1.csv"):
        lines = f.read_text().splitlines()
        f.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    r = load_run(sec_run)
    assert not r.has_column("events", SP3, "connection")
    hs = T.handshakes(r)
    assert sorted(hs.loc[hs["cell"] == SP3, "connection"]) == [1, 1, 2, 2]
    assert T.setup_table(r).set_index("security").loc["sp3-tls13", "first_connections"] == 2
    assert T.reconnect_table(r).set_index("security").loc["sp3-tls13", "setup_median_ms"] == pytest.approx(363.5)


# -- a run without security variants ----------------------------------------------------------------------
def test_a_run_without_security_is_not_split(synth_run):
    r = synth_run
    assert set(r.cells["security"]) == {""} and not r.security_split
    assert set(T.security_variants(r)) == {"sp0"}
    assert list(T.ocpp_table(r).columns[:3]) == ["profile", "stations", "added_rtt_ms"]
    assert "security" not in T.outcome_table(r).columns and "security" not in T.overhead_table(r).columns
    assert "security" not in T.events_table(r).columns and "security" not in T.csms_table(r).columns
    from labkit.analysis.transactions import tx_table

    assert "security" not in tx_table(r).columns
    assert T.variant_order(r) == T.order_of(r)
    assert T.handshakes(r).empty and T.setup_table(r).empty


def test_report_of_a_run_without_handshakes_has_no_setup_section(synth_dir, tmp_path):
    md = write_report(synth_dir, tmp_path, figures=False).markdown.read_text()
    assert "Connection set-up" not in md and " · sp" not in md and "OCPP security variants" not in md


def test_handshakes_without_a_security_sweep(synth, tmp_path):
    """A fleet that recorded handshakes, in a run that swept no security variant: the set-up table names the
    one variant (sp0), the other tables stay as they were."""
    d = synth.make_run(tmp_path, profiles=["none", "4g"], fleets=[(1, 1)], meter_values=3, incomplete=False,
                       outage=False, handshakes=True, label="synthetic-hs")
    r = load_run(d)
    assert not r.security_split
    st = T.setup_table(r)
    assert list(st["security"]) == ["sp0", "sp0"] and set(st["tls"]) == {"none"}
    assert st["tls_median_ms"].isna().all() and (st["booted"] == 1).all()
    assert "security" not in T.ocpp_table(r).columns
    md = write_report(d, tmp_path / "r", figures=False).markdown.read_text()
    assert "## Connection set-up (security profiles)" in md and " · sp0" not in md


# -- SYNTHETIC runs with security variants: the report --------------------------------------------------
VARIANTS = [{"profile": 0}, {"profile": 2, "tls_version": "1.2", "resumption": True},
            {"profile": 3, "tls_version": "1.3", "resumption": True},
            {"profile": 3, "tls_version": "1.2", "resumption": False}]


@pytest.fixture(scope="module")
def sec_synth(synth, tmp_path_factory) -> Path:
    return synth.make_run(tmp_path_factory.mktemp("sec"), profiles=["none", "4g"], fleets=[(1, 1), (10, 1)],
                              meter_values=4, incomplete=False, label="synthetic-sec", security=VARIANTS)


def _check_legible():
    """The legibility check of test_analysis_report.py, loaded by path (tests/analysis is not a package)."""
    name = "labkit_tests_analysis_report_checks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_analysis_report.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name].check_legible


def test_synthetic_round_trips(sec_synth):
    """TLS 1.2 takes two round trips, TLS 1.3 one; a resumed TLS 1.2 session one (made-up, but through the
    whole pipeline: events written, read, tabled)."""
    r = load_run(sec_synth)
    st = T.setup_table(r).set_index(["profile", "security", "stations"])
    assert st.loc[("4g", "sp2-tls12", 1), "tls_rtts"] == pytest.approx(2.0, abs=0.35)
    assert st.loc[("4g", "sp3-tls13", 1), "tls_rtts"] == pytest.approx(1.0, abs=0.35)
    assert st.loc[("4g", "sp3-tls13", 1), "tls_out_median_bytes"] == 1298
    rc = T.reconnect_table(r).set_index("security")
    assert rc.loc["sp2-tls12", "resumed_pct"] == 100.0 and rc.loc["sp2-tls12", "tls_rtts"] == pytest.approx(1.0,
                                                                                                          abs=0.35)
    assert rc.loc["sp3-tls12-nores", "resumed_pct"] == 0.0
    assert rc.loc["sp3-tls12-nores", "tls_rtts"] == pytest.approx(2.0, abs=0.35)
    assert math.isnan(rc.loc["sp0", "resumed_pct"])


def test_report_has_the_setup_section_and_figure(sec_synth, tmp_path, monkeypatch):
    from labkit.analysis import figures as F

    check = _check_legible()
    seen: dict[str, list[str]] = {}
    real = F.save

    def checking_save(fig, out_dir, name, fmt="png"):
        seen[name] = check(fig)
        return real(fig, out_dir, name, fmt)

    monkeypatch.setattr(F, "save", checking_save)
    res = write_report(sec_synth, tmp_path, workers=1)
    md = res.markdown.read_text()
    assert "## Connection set-up (security profiles)" in md
    assert "*Connection set-up, first connections (medians)*" in md and "*Reconnections after the outage" in md
    assert md.index("## Outages and reconnections") < md.index("## Connection set-up")
    assert "| OCPP security variants | sp0, sp2-tls12, sp3-tls12-nores, sp3-tls13 |" in md
    # the OCPP tables name profile and variant, never one without the other
    assert "| ms | none · sp0 | none · sp2-tls12 | none · sp3-tls12-nores | none · sp3-tls13 | 4g · sp0 |" in md
    assert "setup.png" in res.figures and "figures/setup.png" in md
    data = (tmp_path / "figures" / "setup.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert seen.get("setup") == [], seen.get("setup")
    bad = {k: v for k, v in seen.items() if v}
    assert not bad, bad
    head = (tmp_path / "tables" / "setup.csv").read_text().splitlines()[0]
    assert head == ",".join(T.SETUP_COLUMNS)
    head = (tmp_path / "tables" / "reconnect.csv").read_text().splitlines()[0]
    assert head == ",".join(T.RECONNECT_COLUMNS)
    assert "security" in (tmp_path / "tables" / "ocpp_rtt_n1.csv").read_text().splitlines()[0].split(",")


def test_compare_matches_security_variants(sec_synth, synth_dir_b, tmp_path):
    """A run without variants (sp0) against one that swept them: only sp0 is compared, the rest is listed
    as only in one run; the thesis comparison picks one variant and says so."""
    from labkit.analysis.compare import compare_pair, write_compare
    from labkit.analysis.thesis import compare_run

    a, b = load_run(synth_dir_b), load_run(sec_synth)
    res = compare_pair(a, b)
    assert set(res["ocpp"]["profile"]) == {"none · sp0", "4g · sp0"}
    only_b = {k[0] for w, k in res["ocpp_only"] if w == "B"}
    assert {"4g · sp3-tls13", "none · sp2-tls12", "4g · sp3-tls12-nores"} <= only_b
    assert set(res["outcomes"]["profile"]) == {"none · sp0", "4g · sp0"}
    # runs without variants are compared as before
    assert set(compare_pair(a, a)["ocpp"]["profile"]) == set(T.ocpp_table(a)["profile"])
    rows, notes = compare_run(b)
    assert any("security variant sp0" in n for n in notes)
    assert len(rows) and rows["ours"].notna().any()
    md = write_compare([str(synth_dir_b), str(sec_synth)], tmp_path, figures=False).markdown.read_text()
    assert "| OCPP security variants | sp0 | sp0, sp2-tls12, sp3-tls12-nores, sp3-tls13 |" in md
