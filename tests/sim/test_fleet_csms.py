"""The fleet against the CSMS over real WebSockets: timing, CallErrors, timeouts, link drops, both versions."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from tests.sim.conftest import run_fleet
from tests.sim.delayproxy import DelayProxy

FAST = ["--step-interval", "0.01", "--meter-interval", "0.01", "--jitter", "0"]
TX_ACTIONS = {"1.6": {"StartTransaction", "MeterValues", "StopTransaction"}, "2.0.1": {"TransactionEvent"}}
TX_ACTIONS_ANY = {"1.6": ",MeterValues,", "2.0.1": ",TransactionEvent,"}


def ok(rows, action=None):
    return [r for r in rows if r["outcome"] == "ok" and (action is None or r["action"] == action)]


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
def test_thesis_scenario_completes_with_every_call_recorded(csms_factory, tmp_path, version):
    csms = csms_factory()
    run = run_fleet(tmp_path, csms.url, "--stations", "3", "--ocpp", version, "--meter-values", "25", *FAST)
    assert run.rc == 0, run.stderr
    scenario = [r for r in run.calls if r["action"] != "Heartbeat"]
    assert len(scenario) == 3 * (4 + 25) and all(r["outcome"] == "ok" for r in scenario)
    assert {r["station_id"] for r in run.calls} == {"cs001", "cs002", "cs003"}
    assert {r["ocpp_version"] for r in run.calls} == {version}
    assert run.status["finished"] is True and run.status["calls_expected"] == 3 * 29
    assert run.status["calls_done"] == 3 * 29 and run.status["errors"] == 0
    assert run.status["calls_total"] == len(run.calls)
    for r in run.calls:
        assert float(r["rtt_ms"]) > 0 and int(r["req_bytes"]) > 0 and int(r["resp_bytes"]) > 0
        assert r["run_id"] == "t1" and r["host"] == "evse1" and r["attempt"] == "1"
    # the CSMS saw every call and timed its own handling
    handled = [r for r in csms.rows() if r["outcome"] == "ok"]
    assert len(handled) == len(run.calls)
    assert all(0 < float(r["handle_ms"]) < 1000 for r in handled)


def test_no_rtt_below_the_added_delay_and_no_lock_wait_in_rtt(csms_factory, tmp_path):
    """150 ms each way added on the path: every RTT >= 300 ms. Heartbeats (every 0.4 s) must wait for
    the call lock while meter values are back to back; that wait must not be in their RTT (it would
    make them about 600 ms). The margins leave 250 ms for a busy machine."""
    csms = csms_factory()
    with DelayProxy(csms.port, 0.150) as proxy:
        run = run_fleet(
            tmp_path,
            f"ws://127.0.0.1:{proxy.port}/",
            "--stations",
            "2",
            "--meter-values",
            "20",
            "--meter-interval",
            "0",
            "--step-interval",
            "0",
            "--heartbeat",
            "0.4",
            "--jitter",
            "0",
        )
    assert run.rc == 0, run.stderr
    rtts = [float(r["rtt_ms"]) for r in ok(run.calls)]
    assert len(rtts) >= 2 * 24
    assert min(rtts) >= 300.0
    hb = [float(r["rtt_ms"]) for r in ok(run.calls, "Heartbeat")]
    assert len(hb) >= 4
    # a heartbeat that waited for a meter value's round trip would show about 600 ms
    assert max(hb) < 550.0, hb
    assert statistics.median(rtts) < 450.0


def test_call_error_and_timeout_are_samples(csms_factory, tmp_path):
    csms = csms_factory("--not-implemented", "Authorize", "--no-answer", "Heartbeat")
    run = run_fleet(
        tmp_path,
        csms.url,
        "--stations",
        "1",
        "--meter-values",
        "3",
        "--call-timeout",
        "0.3",
        "--heartbeat",
        "0.2",
        *FAST,
    )
    assert run.rc == 0, run.stderr
    auth = [r for r in run.calls if r["action"] == "Authorize"]
    assert len(auth) == 1 and auth[0]["outcome"] == "call_error" and auth[0]["error_code"] == "NotImplemented"
    assert float(auth[0]["rtt_ms"]) > 0
    hb = [r for r in run.calls if r["action"] == "Heartbeat"]
    assert hb and all(r["outcome"] == "timeout" and r["rtt_ms"] == "" for r in hb)
    assert run.status["errors_by_outcome"]["timeout"] == len(hb)
    # the CSMS recorded the error it sent and the message it did not answer
    codes = [(r["action"], r["outcome"], r["error_code"]) for r in csms.rows()]
    assert ("Authorize", "call_error", "NotImplemented") in codes
    assert any(a == "Heartbeat" and o == "no_answer" for a, o, _ in codes)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize("mode", ["cut", "blackhole"])
def test_link_drop_mid_transaction_loses_no_transaction_message(csms_factory, tmp_path, version, mode):
    csms = csms_factory()
    n = 60
    with DelayProxy(csms.port, 0.002) as proxy:

        def outage() -> None:
            # start the outage once the transaction is under way (the fleet may be slow to start)
            calls = tmp_path / "calls.csv"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if calls.exists() and calls.read_text().count(TX_ACTIONS_ANY[version]) >= 8:
                    break
                time.sleep(0.05)
            if mode == "cut":
                proxy.cut(1.5)
            else:
                proxy.blackhole()
                time.sleep(1.5)
                proxy.restore()

        t = threading.Thread(target=outage)
        t.start()
        run = run_fleet(
            tmp_path,
            f"ws://127.0.0.1:{proxy.port}/",
            "--stations",
            "1",
            "--ocpp",
            version,
            "--meter-values",
            str(n),
            "--meter-interval",
            "0.05",
            "--step-interval",
            "0.05",
            "--backoff-min",
            "0.2",
            "--backoff-max",
            "0.5",
            "--ping-interval",
            "0.3",
            "--ping-timeout",
            "0.3",
            "--call-timeout",
            "5",
            "--jitter",
            "0",
        )
        t.join()
    assert run.rc == 0, run.stderr
    events = [e["event"] for e in run.events]
    assert "disconnected" in events and "reconnected" in events and "queue_flushed" in events, events
    rec = next(e for e in run.events if e["event"] == "reconnected")
    assert float(rec["downtime_ms"]) > 0
    tx = [r for r in run.calls if r["action"] in TX_ACTIONS[version]]
    delivered = ok(tx)
    assert len(delivered) == n + 2, (len(delivered), [(r["action"], r["outcome"]) for r in tx])
    queued = [r for r in delivered if r["queued_ms"]]
    assert queued and all(float(r["queued_ms"]) > 0 for r in queued)
    # the CSMS received every transaction message at least once (a reply lost with the link means a retry)
    got = [r for r in csms.rows() if r["outcome"] == "ok" and r["action"] in TX_ACTIONS[version]]
    assert len(got) >= n + 2
    assert run.status["queued"] == 0


def test_session_scenario_with_measurands(csms_factory, tmp_path):
    csms = csms_factory("--heartbeat-interval", "1")
    run = run_fleet(
        tmp_path,
        csms.url,
        "--stations",
        "4",
        "--scenario",
        "session",
        "--ocpp",
        "2.0.1",
        "--sessions",
        "2",
        "--think-time",
        "0.1",
        "--meter-interval",
        "0.1",
        "--charge-time",
        "0.5",
        "--seed",
        "7",
    )
    assert run.rc == 0, run.stderr
    actions = [r["action"] for r in run.calls]
    assert actions.count("Authorize") == 8 and all(r["outcome"] == "ok" for r in run.calls)
    assert "Heartbeat" in actions  # at the interval the CSMS gave (1 s)
    tx = [r for r in run.calls if r["action"] == "TransactionEvent"]
    assert len(tx) >= 8 * 3
    # a 2.0.1 meter sample with five measurands is larger than the Started/Ended events
    assert max(int(r["req_bytes"]) for r in tx) > 700


def test_basic_auth(csms_factory, tmp_path):
    """The CSMS takes its password from a file, the fleet from the environment; a wrong one gets HTTP 401."""
    secret = tmp_path / "csms.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    csms = csms_factory("--password-file", str(secret))
    good = run_fleet(
        tmp_path / "good",
        csms.url,
        "--stations",
        "2",
        "--meter-values",
        "2",
        *FAST,
        env={"LABKIT_OCPP_PASSWORD": "s3cret"},
    )
    assert good.rc == 0 and good.calls and all(r["outcome"] == "ok" for r in good.calls)
    bad = run_fleet(
        tmp_path / "bad",
        csms.url,
        "--stations",
        "1",
        "--meter-values",
        "2",
        "--duration",
        "1.5",
        "--drain-timeout",
        "0",
        "--backoff-min",
        "0.2",
        *FAST,
        env={"LABKIT_OCPP_PASSWORD": "wrong"},
    )
    assert bad.rc == 1  # no station ever connected
    failed = [e for e in bad.events if e["event"] == "connect_failed"]
    assert failed and "401" in failed[0]["detail"]
    assert not any(e["event"] == "connected" for e in bad.events)
    refused = [r for r in csms.rows() if r["outcome"] == "refused"]
    assert refused and {(r["station_id"], r["error_code"]) for r in refused} == {("cs001", "Unauthorized")}
