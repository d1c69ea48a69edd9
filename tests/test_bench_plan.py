"""Bench plans and parsers without a lab: validation before anything changes, ping parsing, summary rows."""

from __future__ import annotations

import json

import pytest

from labkit.bench import probes
from labkit.bench.plan import Outage, Plan, parse_counts, thesis_plan, validate
from labkit.bench.summary import cell_rows
from labkit.errors import ConfigError

KNOWN = ["none", "vsat", "gprs", "slow-vsat"]

# Real output of iputils ping 20221126 (-n -D -O) through a netns lab; the second target does not exist.
PING_OUTPUT = """PING 192.168.10.10 (192.168.10.10) 56(84) bytes of data.
[1795460550.840545] 64 bytes from 192.168.10.10: icmp_seq=1 ttl=63 time=0.038 ms
[1795460551.041309] 64 bytes from 192.168.10.10: icmp_seq=2 ttl=63 time=0.061 ms
[1795460551.245315] no answer yet for icmp_seq=3
[1795460551.449328] 64 bytes from 192.168.10.10: icmp_seq=4 ttl=63 time=0.068 ms
[1795460551.449400] 64 bytes from 192.168.10.10: icmp_seq=4 ttl=63 time=0.071 ms (DUP!)

--- 192.168.10.10 ping statistics ---
5 packets transmitted, 3 received, +1 duplicates, 40% packet loss, time 813ms
rtt min/avg/max/mdev = 0.038/0.060/0.071/0.011 ms
"""


def test_cells_and_baselines_once_per_profile():
    plan = Plan(profiles=["none", "vsat"], evse_counts=[1, 10], repeats=2)
    cells = plan.cells()
    assert len(cells) == 8
    assert cells[0].id == "none__n1x1__r1" and cells[-1].id == "vsat__n10x1__r2"
    assert [c.baselines for c in cells[:4]] == [True, False, True, False]
    assert Plan(profiles=["vsat"], evse_counts=[1, 10], baselines="every").cells()[1].baselines


def test_thesis_plan_covers_the_dissertation_matrix():
    assert thesis_plan("slow") == ["none", "slow-amps", "slow-gprs", "slow-3g", "slow-4g", "slow-vsat"]
    assert thesis_plan("both")[-4:] == ["gprs", "3g", "4g", "vsat"]


@pytest.mark.parametrize("plan, lab_evse, message", [
    (Plan(profiles=["vsta"]), 1, "profile: unknown profile 'vsta' (known: none, vsat, gprs, slow-vsat"),
    (Plan(profiles=[]), 1, "name at least one profile"),
    (Plan(profiles=["vsat"], evse_counts=[1, 10]), 3, "--evse: 10 EVSE hosts asked, the lab has 3"),
    (Plan(profiles=["vsat"], scenario="soak"), 1, "--scenario: must be thesis-2021, session (got 'soak')"),
    (Plan(profiles=["vsat"], ocpp="2.1"), 1, "--ocpp: must be 1.6, 2.0.1 (got '2.1')"),
    (Plan(profiles=["vsat"], repeats=0), 1, "--repeat: must be 1-1000 (got 0)"),
    (Plan(profiles=["vsat"], stations_per_host=0), 1, "--stations-per-host: must be 1-20000"),
    (Plan(profiles=["vsat"], ping_interval_s=0.0001), 1, "--ping-interval: must be 0.002-60 s"),
])
def test_invalid_plans_fail_before_anything_changes(plan, lab_evse, message):
    with pytest.raises(ConfigError) as err:
        validate(plan, lab_evse=lab_evse, known_profiles=KNOWN)
    assert message in str(err.value)


@pytest.mark.parametrize("text, bad", [("1,x", "not a comma-separated list"), ("0,1", "1 or more"),
                                       ("1,1", "repeats a count"), ("", "1 or more")])
def test_parse_counts(text, bad):
    with pytest.raises(ConfigError, match=bad):
        parse_counts(text)
    assert parse_counts("1,10,25,50") == [1, 10, 25, 50]


def test_outage():
    assert Outage.parse("30s@60s") == Outage(30.0, 60.0)
    assert Outage.parse("500ms@1m") == Outage(0.5, 60.0)
    with pytest.raises(ConfigError, match="DURATION@AT"):
        Outage.parse("30s")


def test_ping_parsing_keeps_lost_probes_and_drops_duplicates():
    rows = probes.parse_ping(PING_OUTPUT, 5, "evse1", "cpo", "up")
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["lost"] for r in rows] == [0, 0, 1, 0, 1]
    assert rows[3]["rtt_ms"] == 0.068 and rows[3]["ttl"] == 63
    assert rows[2]["rtt_ms"] == "" and rows[2]["t_wall"] == ""
    summary = probes.summarize_ping(PING_OUTPUT)
    assert summary["packet_transmit"] == 5 and summary["packet_receive"] == 3


def test_summary_rows_count_failures(tmp_path):
    cell = tmp_path / "vsat__n1x1__r1"
    (cell / "ocpp").mkdir(parents=True)
    (cell / "cell.json").write_text(json.dumps({
        "id": "vsat__n1x1__r1", "profile": "vsat", "evse_hosts": 1, "stations_per_host": 1, "repeat": 1,
        "expected": {"added_rtt_ms": 600.0, "uplink_rate_bps": 1e6},
        "iperf": {"tcp-up": {"protocol": "TCP", "goodput_bps": 950000.0},
                  "udp-down": {"protocol": "UDP", "loss_pct": 1.5, "jitter_ms": 2.0, "packets": 200,
                               "lost_packets": 3}}}))
    probes.write_ping_csv(cell / "ping.csv", probes.parse_ping(PING_OUTPUT, 5, "evse1", "cpo", "up"))
    (cell / "ocpp" / "calls-evse1.csv").write_text(
        "run_id,host,station_id,ocpp_version,action,t_wall,t_mono_ns,rtt_ms,outcome,error_code,req_bytes,resp_bytes\n"
        "r,evse1,cs1,1.6,Heartbeat,1,1,601.5,ok,,57,60\n"
        "r,evse1,cs1,1.6,Heartbeat,2,2,,timeout,,57,\n"
        "r,evse1,cs1,1.6,MeterValues,3,3,650.0,ok,,270,2\n"
        "r,evse1,cs1,1.6,Authorize,4,4,620.0,call_error,NotImplemented,60,90\n"
        "r,evse1,cs1,1.6,Heart")  # a torn last line, as after a crash
    rows = {(r["measure"], r["direction"]): r for r in cell_rows(cell)}
    assert rows[("ping_rtt", "up")]["n"] == 3 and rows[("ping_rtt", "up")]["lost"] == 2
    assert rows[("ping_rtt", "up")]["expected"] == 600.0
    assert rows[("tcp_goodput", "up")]["median"] == 950000.0 and rows[("tcp_goodput", "up")]["expected"] == 1e6
    assert rows[("udp_loss", "down")]["median"] == 1.5
    assert rows[("ocpp_rtt", "all")]["n"] == 2 and rows[("ocpp_rtt", "all")]["lost"] == 2
    assert rows[("ocpp_rtt", "Heartbeat")]["median"] == 601.5


def test_tcp_test_length_follows_the_path():
    from labkit.bench.plan import tcp_timing

    assert tcp_timing(Plan(profiles=["x"]), 0) == (10.0, 2.0)
    assert tcp_timing(Plan(profiles=["x"]), 50) == (10.0, 2.0)
    assert tcp_timing(Plan(profiles=["x"]), 600) == (20.0, 13.0)
    assert tcp_timing(Plan(profiles=["x"]), 2000) == (20.0, 15.0)
    assert tcp_timing(Plan(profiles=["x"], iperf_seconds=3, iperf_omit_s=1), 600) == (3, 1)
    # slow links: 30 s, whatever the RTT
    assert tcp_timing(Plan(profiles=["x"]), 600, 26_800) == (30.0, 13.0)
    assert tcp_timing(Plan(profiles=["x"]), 0, 499_999) == (30.0, 2.0)
    assert tcp_timing(Plan(profiles=["x"]), 0, 500_000) == (10.0, 2.0)


def test_security_sweep_cells_ids_and_parsers():
    from labkit.bench.plan import Security, parse_resumption, parse_security_profiles, parse_tls_versions

    plan = Plan(profiles=["none", "vsat"], evse_counts=[1, 2], security_profiles=[1, 3], tls_versions=["1.2", "1.3"],
                tls_resumption=[True, False])
    assert [s.label for s in plan.securities()] == ["sp1", "sp3-tls12", "sp3-tls12-nores", "sp3-tls13",
                                                    "sp3-tls13-nores"]
    cells = plan.cells()
    assert len(cells) == 2 * 5 * 2
    assert cells[0].id == "none__n1x1__r1__sp1" and cells[2].id == "none__n1x1__r1__sp3-tls12"
    assert [c.baselines for c in cells].count(True) == 2  # once per link profile, whatever the variants
    assert len({c.id for c in cells}) == len(cells)
    assert plan.needs_password() and not Plan(profiles=["none"], security_profiles=[0, 3]).needs_password()
    # no sweep: the ids runs have always had
    assert [c.id for c in Plan(profiles=["vsat"]).cells()] == ["vsat__n1x1__r1"]
    assert Security(2, "1.2", True).to_dict() == {"profile": 2, "tls_version": "1.2", "resumption": True,
                                                  "label": "sp2-tls12"}
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert [c.id for c in back.cells()] == [c.id for c in cells]
    assert parse_security_profiles("0, 3") == [0, 3] and parse_tls_versions("1.3,1.2") == ["1.3", "1.2"]
    assert parse_resumption("both") == [True, False]
    for fn, text in [(parse_security_profiles, "1,1"), (parse_security_profiles, "x"), (parse_security_profiles, ""),
                     (parse_tls_versions, "1.0"), (parse_tls_versions, "1.3,1.3"), (parse_resumption, "yes")]:
        with pytest.raises(ConfigError):
            fn(text)
    with pytest.raises(ConfigError, match="--security-profile: must be used with the OCPP phase"):
        validate(Plan(profiles=["vsat"], security_profiles=[3], ocpp_phase=False), lab_evse=1, known_profiles=KNOWN)
