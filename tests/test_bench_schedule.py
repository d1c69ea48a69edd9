"""`labkit bench PROFILE --schedule NAME`: the plan's rules without a lab, then for real on a netns lab (real
sshd, the userspace engine switching phases in place, the CSMS and two fleets over WebSockets, an outage
phase), the schedule's phases in the results with their applied times, every transaction message attributed
to a phase, and the report's per-phase table and figure."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from labkit import profiles as P
from labkit.bench.plan import SCHEDULE_HOLD_S, Outage, Plan, schedule_span_s, validate, with_schedule
from labkit.errors import ConfigError
from tests.conftest import needs_root, run_cli

KNOWN = ["4g", "3g", "gprs"]
SCHEDULE_FILE = """\
schedules:
  t-short:
    description: a handover in 22 s, for the tests
    phases: 4g 6 s -> 3g 6 s -> outage 4 s -> 4g
"""


def test_a_schedule_sets_the_phase_to_its_length_unless_told():
    handover = P.get_schedule("handover")  # 4g 120 s -> gprs 60 s -> outage 20 s -> 4g (holds)
    assert schedule_span_s(handover) == 200 + SCHEDULE_HOLD_S
    plan = Plan(profiles=["4g"])
    with_schedule(plan, handover, scenario_given=False, duration_given=False, think_time_given=False)
    assert (plan.schedule, plan.scenario, plan.session_duration_s, plan.think_time_s) == ("handover", "session",
                                                                                          230.0, 0.0)
    plan = Plan(profiles=["4g"], session_duration_s=90.0, think_time_s=5.0)
    with_schedule(plan, handover, scenario_given=False, duration_given=True, think_time_given=True)
    assert (plan.session_duration_s, plan.think_time_s) == (90.0, 5.0)
    plan = Plan(profiles=["4g"], scenario="thesis-2021")
    with_schedule(plan, handover, scenario_given=True, duration_given=False, think_time_given=False)
    assert plan.scenario == "thesis-2021" and plan.think_time_s is None  # ends when the fleets do
    ps = P.ProfileSet()
    ps.merge_file(P.shipped_profiles_path())
    ps.merge_text("schedules:\n  r:\n    repeat: true\n    phases: 4g 10 s -> outage 2 s\n", "r.yaml")
    assert schedule_span_s(ps.schedule("r")) == 12 and schedule_span_s(ps.schedule("r"), 3) == 36
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.schedule == "handover" and again.schedule_cycles is None


@pytest.mark.parametrize("changes, message", [
    ({"outage": Outage(5, 1)}, "--schedule: must be used without --outage"),
    ({"ocpp_phase": False}, "--schedule: must be used with the OCPP phase"),
    ({"name": "thesis"}, "--schedule: must be used without --plan thesis"),
    ({"schedule_cycles": 0}, "--cycles: must be 1 or more, with --schedule"),
])
def test_what_a_schedule_cannot_go_with(changes, message):
    plan = Plan(profiles=["4g"], schedule="handover")
    for k, v in changes.items():
        setattr(plan, k, v)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(plan, lab_evse=2, known_profiles=KNOWN)
    validate(Plan(profiles=["4g"], schedule="handover"), lab_evse=2, known_profiles=KNOWN)


# -- for real ------------------------------------------------------------------------------------------------
def gateway_state(lab: str) -> str:
    return subprocess.run(["ip", "netns", "exec", f"lk-{lab}-gw", "sh", "-c",
                           "tc qdisc show dev eth1; tc qdisc show dev eth2; iptables-save 2>/dev/null"],
                          capture_output=True, text=True).stdout


@needs_root
@pytest.mark.slow
def test_bench_with_a_schedule_records_the_phases_as_applied_and_reports_them(home, lab, tmp_path, monkeypatch,
                                                                               capfd):
    from labkit.analysis import phases as PH
    from labkit.analysis import transactions as X
    from labkit.analysis.load import load_run

    t_start = time.monotonic()
    monkeypatch.chdir(tmp_path)
    assert run_cli("up", "--name", lab, "--backend", "netns", "--evse", "2") == 0
    sched = tmp_path / "short.yaml"
    sched.write_text(SCHEDULE_FILE)
    results = tmp_path / "results"

    # refused before anything changes, one line, exit 2
    before = gateway_state(lab)
    capfd.readouterr()
    for argv, message in [
        (["--schedule", "t-short", "--profiles", str(sched), "--outage", "5s@1s"], "--schedule: must be used without "
         "--outage"),
        (["--schedule", "t-shrot", "--profiles", str(sched)], "schedule: unknown schedule 't-shrot' (did you mean "
         "'t-short'?)"),
        (["--schedule", "t-short", "--profiles", str(sched), "--cycles", "2"], "--cycles: must be 1 or more, with a "
         "repeating schedule"),
    ]:
        assert run_cli("bench", "4g", "--lab", lab, "--results", str(results), *argv) == 2
        err = capfd.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert gateway_state(lab) == before and not results.exists()

    assert run_cli("bench", "4g", "--lab", lab, "--schedule", "t-short", "--profiles", str(sched), "--evse", "2",
                   "--stations-per-host", "2", "--meter-interval", "0.5", "--ws-ping", "2", "--ping-count", "10",
                   "--ping-interval", "0.05", "--iperf-seconds", "1", "--udp-seconds", "0", "--duration", "22",
                   "--results", str(results)) == 0
    (run,) = results.iterdir()
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["format"] == "labkit-results/3"
    assert m["schedule"]["text"] == "4g 6s -> 3g 6s -> outage 4s -> 4g"
    assert m["schedule"]["origin"].startswith(str(sched)) and m["schedule"]["profiles_files"] == [str(sched)]
    assert (m["plan"]["schedule"], m["plan"]["scenario"], m["plan"]["session_duration_s"]) == ("t-short", "session",
                                                                                               22.0)
    cell = run / "cells" / "4g__n2x2__r1"
    meta = json.loads((cell / "cell.json").read_text())
    assert meta["status"] == "complete" and meta["phases"]["verify"]["status"] == "complete"
    assert meta["schedule"] == {"name": "t-short", "text": "4g 6s -> 3g 6s -> outage 4s -> 4g",
                                "file": "schedule.json", "ended_by": "last phase holds", "holds": "4g", "phases": 4}
    assert (cell / "ping.csv").exists() and (cell / "iperf" / "tcp-up.json").exists()  # PROFILE's baselines

    # the phases as applied on the gateway: in order, back to back, on time, read back as planned
    rec = json.loads((cell / "schedule.json").read_text())
    ph = rec["phases"]
    # the switches went over channels kept open; the clocks of the gateway and of every host whose stamps meet
    # the phases were measured over SSH (one machine here: each offset is 0 within its uncertainty)
    assert rec["channels"] is True
    clocks = [rec["gateway_clock"]["start"], rec["gateway_clock"]["end"], *rec["host_clocks"]["start"].values()]
    assert set(rec["host_clocks"]["start"]) == {"cpo", "evse1", "evse2"}
    assert all(abs(c["offset_s"]) <= c["uncertainty_s"] + 1e-6 for c in clocks), clocks
    assert [(p["label"], p["profile"], p["outage"]) for p in ph] == [
        ("4g", "4g", False), ("3g", "3g", False), ("outage", "4g", True), ("4g", "4g", False)]
    starts = [p["applied_start"] for p in ph]
    assert starts == sorted(starts) and all(p["verified"] for p in ph)
    # the last phase has no duration: it held until the fleets were done (--duration 22 from their start)
    assert [p["applied_end"] for p in ph[:-1]] == starts[1:] and ph[-1]["applied_end"] > starts[-1] + 5
    lat = [p["latency_ms"] for p in ph[1:]]
    assert all(0 <= x < 250 for x in lat), lat
    assert np.allclose(np.diff(starts), [6, 6, 4], atol=0.25), np.diff(starts)
    assert ph[0]["applied_start"] <= meta["ocpp"]["started"] + 30

    # every transaction message recorded, delivered, and in exactly one phase
    r = load_run(run)
    keys = X.tx_keys(r)
    assert len(keys) > 100 and keys["sent"].sum() == keys["acknowledged"].sum() == keys["handled"].sum()
    assert keys["lost"].sum() == 0 and keys["never_sent"].sum() == 0
    seq = PH.assign(r, "4g__n2x2__r1", keys["t_issued"])
    assert (seq != PH.BEFORE).all() and set(seq) <= {1, 2, 3, 4, PH.AFTER}
    t = PH.phase_tx_table(r).set_index("seq")
    cell_tx = X.tx_table(r).iloc[0]
    assert all(int(t[c].sum()) == int(cell_tx[c]) for c in X.COUNTS)
    assert all(t.loc[k, "sent"] > 0 for k in (1, 2, 4)), t
    # what each phase did to the calls sent in it: 3g's added RTT on top of 4g's; across the outage no call was
    # answered before the link came back
    exp = {p: P.get(p).expected()["min_added_rtt_ms"] for p in ("4g", "3g")}
    assert t.loc[1, "rtt_median_ms"] >= exp["4g"] and t.loc[4, "rtt_median_ms"] >= exp["4g"]
    assert t.loc[2, "rtt_median_ms"] >= exp["3g"] and t.loc[2, "rtt_median_ms"] > t.loc[1, "rtt_median_ms"] + 30
    calls = r.calls[r.calls["cell"] == "4g__n2x2__r1"]
    out0, out1 = starts[2], starts[3]
    during = calls[(calls["t_wall"] >= out0) & (calls["t_wall"] < out1) & (calls["outcome"] == "ok")]
    assert (during["t_wall"] + during["rtt_ms"] / 1000 >= out1 - 0.01).all(), during
    assert t.loc[3, "calls_failed"] + t.loc[3, "calls_ok"] + t.loc[3, "disconnected"] + t.loc[4, "disconnected"] > 0

    # the report: the phases, the table per phase, the figure
    assert run_cli("report", str(run)) == 0
    md = (run / "report" / "report.md").read_text()
    assert "## The link's schedule: phases over time" in md and "`t-short` (4g 6s -> 3g 6s -> outage 4s -> 4g)" in md
    assert "| 4g__n2x2__r1 | 3 | outage | 4g (cut) |" in md
    assert "figures/schedule_00_4g__n2x2__r1.png" in md
    assert (run / "report" / "figures" / "schedule_00_4g__n2x2__r1.png").stat().st_size > 20_000
    assert (run / "report" / "tables" / "schedule_transactions.csv").exists()
    state = gateway_state(lab)  # the bench cleared the link at the end
    assert "htb" not in state and "NFQUEUE" not in state and "labkit-outage" not in state, state
    assert time.monotonic() - t_start < 120
