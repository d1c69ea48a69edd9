"""Tables from a tiny hand-written results directory with known numbers, and profile ordering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from labkit import resultsformat as RF
from labkit.analysis import tables as T
from labkit.analysis.load import load_run
from labkit.analysis.order import fmt_num, fmt_rate, profile_order

#: this tiny run is of format /1: the calls columns without those added in /2
CALLS_HEADER = ",".join(c for c in RF.CALLS.columns if c not in RF.CALLS.added) + "\n"


def write_cell(run: Path, cid: str, profile: str, hosts: int, sph: int, added: float, up_bps, down_bps,
               ping_rtts: list[float | None], calls: list[tuple[str, float | None, str]]) -> None:
    c = run / "cells" / cid
    (c / "ocpp").mkdir(parents=True)
    (c / "cell.json").write_text(json.dumps({
        "id": cid, "profile": profile, "evse_hosts": [f"evse{i + 1}" for i in range(hosts)],
        "stations_per_host": sph, "repeat": 1, "status": "complete",
        "phases": {"iperf": {"status": "skipped"}},
        "expected": {"added_rtt_ms": added, "uplink_rate_bps": up_bps, "downlink_rate_bps": down_bps,
                     "loss_pct": {"up": 0, "down": 0}}}))
    lines = ["src,dst,direction,seq,t_wall,rtt_ms,lost\n"]
    for k, rtt in enumerate(ping_rtts, 1):
        for d, s_, t_ in (("up", "evse1", "cpo"), ("down", "cpo", "evse1")):
            lines.append(f"{s_},{t_},{d},{k},,,1\n" if rtt is None else f"{s_},{t_},{d},{k},{1000 + k},{rtt},0\n")
    (c / "ping.csv").write_text("".join(lines))
    rows = [CALLS_HEADER]
    for k, (action, rtt, outcome) in enumerate(calls):
        rows.append(f"r,evse1,cs1,1.6,{action},{1000 + k},{k},{'' if rtt is None else rtt},{outcome},"
                    f"{'NotImplemented' if outcome == 'call_error' else ''},100,50,,1\n")
    (c / "ocpp" / "calls-evse1.csv").write_text("".join(rows))


@pytest.fixture
def tiny(tmp_path) -> Path:
    run = tmp_path / "20240101T000000Z-tiny"
    run.mkdir()
    write_cell(run, "none__n1x1__r1", "none", 1, 1, 0.0, None, None, [0.1, 0.2, 0.3, None],
               [("Heartbeat", 2.0, "ok"), ("Heartbeat", 4.0, "ok"), ("MeterValues", 3.0, "ok"),
                ("DataTransfer", 2.5, "call_error"), ("MeterValues", None, "timeout")])
    write_cell(run, "slow-x__n1x1__r1", "slow-x", 1, 1, 200.0, 400e3, None, [200.5, 201.0, 199.0],
               [("Heartbeat", 202.0, "ok"), ("MeterValues", 205.0, "ok"), ("MeterValues", 150.0, "ok")])
    write_cell(run, "4g__n2x5__r1", "4g", 2, 5, 50.0, 10e6, 40e6, [51.0, 52.0],
               [("Heartbeat", 55.0, "ok"), ("MeterValues", 57.0, "ok")])
    (run / "manifest.json").write_text(json.dumps({"format": "labkit-results/1", "run_id": run.name,
                                                   "status": "complete", "backend": "netns", "engine": "netem"}))
    return run


def test_ping_table_numbers(tiny):
    r = load_run(tiny)
    # only the monitor samples this tiny run lacks are reported (iperf was skipped on purpose)
    assert [p.where.split("/")[-1] for p in r.problems] == ["monitor.csv"] * 3, [str(p) for p in r.problems]
    t = T.ping_table(r).set_index(["profile", "direction"])
    none = t.loc[("none", "up")]
    assert none["n"] == 3 and none["lost"] == 1 and none["lost_pct"] == pytest.approx(25.0)
    assert none["median"] == pytest.approx(0.2) and none["base_ms"] == pytest.approx(0.2)
    sx = t.loc[("slow-x", "down")]
    assert sx["median"] == pytest.approx(200.5)
    assert sx["excess_ms"] == pytest.approx(200.5 - 200.0 - 0.2)
    assert sx["below_added"] == 1  # the 199.0 ms reply: faster than the configured delay


def test_profile_order_in_tables(tiny):
    r = load_run(tiny)
    assert T.order_of(r) == ["none", "4g", "slow-x"]
    assert list(dict.fromkeys(T.ping_table(r)["profile"])) == ["none", "4g", "slow-x"]


def test_ocpp_table_uses_ok_calls_only_and_counts_n(tiny):
    r = load_run(tiny)
    t = T.ocpp_table(r).set_index(["profile", "stations"])
    none = t.loc[("none", 1)]
    assert none["n"] == 3 and none["median"] == pytest.approx(3.0) and none["mean"] == pytest.approx(3.0)
    assert none["std"] == pytest.approx(np.std([2.0, 4.0, 3.0], ddof=1))
    assert t.loc[("slow-x", 1)]["below_added"] == 1
    assert ("4g", 10) in t.index  # N = EVSE hosts x stations per host
    lo, hi = none["median_ci_lo"], none["median_ci_hi"]
    assert 2.0 <= lo <= 3.0 <= hi <= 4.0


def test_outcome_table(tiny):
    t = T.outcome_table(load_run(tiny)).set_index("profile")
    row = t.loc["none"]
    assert (row["calls"], row["ok"], row["call_error"], row["timeout"]) == (5, 3, 1, 1)
    assert row["failed_pct"] == pytest.approx(40.0)
    assert "NotImplemented ×1" in row["errors"]


def test_overhead_is_ocpp_median_minus_ping_median(tiny):
    t = T.overhead_table(load_run(tiny)).set_index(["profile", "stations", "action"])
    hb = t.loc[("none", 1, "Heartbeat")]
    assert hb["ocpp_median_ms"] == pytest.approx(3.0)
    assert hb["baseline"] == "ping"  # format /1: no echo probe
    assert hb["baseline_median_ms"] == pytest.approx(0.2)  # both directions pooled
    assert hb["overhead_ms"] == pytest.approx(2.8)


def _echo(run: Path, cid: str, rtts: list[float | None]) -> None:
    lines = [",".join(RF.ECHO.columns) + "\n"]
    for k, rtt in enumerate(rtts, 1):
        for d, s_, t_ in (("up", "evse1", "cpo"), ("down", "cpo", "evse1")):
            lines.append(f"{s_},{t_},{d},{k},,,1\n" if rtt is None else f"{s_},{t_},{d},{k},{1000 + k},{rtt},0\n")
    (run / "cells" / cid / "echo.csv").write_text("".join(lines))


def test_overhead_uses_the_echo_rtt_where_a_profile_has_it(tiny):
    _echo(tiny, "none__n1x1__r1", [0.15, 0.35, 0.25, None, 0.05])
    _echo(tiny, "slow-x__n1x1__r1", [200.123, 200.456])
    r = load_run(tiny)
    assert len(r.echo) == 14 and r.echo["lost"].sum() == 2
    net = T.network_rtt(r).set_index("profile")
    assert net.loc["none", "baseline"] == "echo" and net.loc["none", "median_ms"] == pytest.approx(0.2)
    assert net.loc["4g", "baseline"] == "ping" and net.loc["4g", "median_ms"] == pytest.approx(51.5)
    t = T.overhead_table(r).set_index(["profile", "stations", "action"])
    hb = t.loc[("none", 1, "Heartbeat")]
    assert (hb["baseline"], hb["baseline_median_ms"], hb["overhead_ms"]) == ("echo", pytest.approx(0.2),
                                                                             pytest.approx(2.8))
    sx = t.loc[("slow-x", 1, "MeterValues")]  # MeterValues 205 and 150: median 177.5
    assert sx["baseline"] == "echo" and sx["overhead_ms"] == pytest.approx(177.5 - (200.123 + 200.456) / 2)
    assert t.loc[("4g", 10, "Heartbeat")]["baseline"] == "ping"
    # the cross-check: echo median against ping median per profile and direction
    x = T.echo_ping_table(r).set_index(["profile", "direction"])
    assert set(x.index.get_level_values(0)) == {"none", "slow-x"}  # 4g has no echo
    up = x.loc[("slow-x", "up")]
    assert up["echo_median_ms"] == pytest.approx(200.2895) and up["ping_median_ms"] == pytest.approx(200.5)
    assert up["diff_ms"] == pytest.approx(200.2895 - 200.5) and up["echo_n"] == 2 and up["ping_lost"] == 0
    assert x.loc[("none", "down")]["echo_lost"] == 1


def test_tables_on_an_empty_run_are_empty_frames(tmp_path):
    r = load_run(tmp_path)
    for f in (T.ping_table, T.iperf_table, T.ocpp_table, T.outcome_table, T.overhead_table, T.csms_table,
              T.cpu_table, T.events_table, T.network_rtt, T.echo_ping_table, T.runtime_table):
        out = f(r)
        assert out.empty and len(out.columns) > 2, f.__name__


def test_iperf_and_events_on_synthetic(synth_run):
    ip = T.iperf_table(synth_run)
    tcp = ip[(ip["proto"] == "tcp") & (ip["profile"] == "4g")].set_index("direction")
    assert tcp.loc["up", "configured_bps"] == 10e6 and tcp.loc["down", "configured_bps"] == 40e6
    assert 50 < tcp.loc["up", "pct_of_configured"] < 100
    ev = T.events_table(synth_run)
    assert list(ev["cell"]) == ["4g__n10x1__r1"]
    assert ev.iloc[0]["disconnected"] == 10 and ev.iloc[0]["reconnected"] == 10
    assert ev.iloc[0]["downtime_median_ms"] > 6000  # the 6 s outage plus detection and back-off


def test_profile_order_rules():
    exp = {"none": (0, math.nan), "4g": (50, 10e6), "3g": (100, 2e6), "vsat": (600, 2e6), "gprs": (300, 50e3),
           "slow-vsat": (500, 40e6), "slow-4g": (100, 80e6), "slow-3g": (200, 8e6), "slow-gprs": (200, 400e3),
           "slow-amps": (250, 112e3)}
    names = ["slow-amps", "vsat", "slow-3g", "none", "gprs", "slow-vsat", "4g", "slow-gprs", "3g", "slow-4g"]
    assert profile_order(names, exp) == ["none", "4g", "3g", "gprs", "vsat", "slow-4g", "slow-3g", "slow-gprs",
                                         "slow-amps", "slow-vsat"]
    # without recorded expectations: well-known names, fast to slow, unknown names last
    assert profile_order(["vsat", "zzz", "gprs", "none", "4g"]) == ["none", "4g", "gprs", "vsat", "zzz"]


def test_formatting():
    assert fmt_rate(112e3) == "112 kbit/s" and fmt_rate(40e6) == "40 Mbit/s" and fmt_rate(2.4e9) == "2.4 Gbit/s"
    assert fmt_rate(float("nan")) == "—" and fmt_rate(float("inf")) == "unlimited"
    assert fmt_num(1.23456) == "1.23" and fmt_num(float("nan")) == "—" and fmt_num(0.0004) == "0.0004"
