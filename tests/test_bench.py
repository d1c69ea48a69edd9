"""`labkit bench` for real on a netns lab: README command 1, interruption (Ctrl-C, SIGKILL) and resume, an
outage, and errors caught before anything changes. Real sshd, tc, the userspace engine, ping, iperf3 and OCPP.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import lifecycle
from tests.conftest import namespaces, needs_root, run_cli

pytestmark = [needs_root, pytest.mark.slow]

# small but complete cells, for everything except README command 1 itself
SMALL = ["--ping-count", "20", "--ping-interval", "0.05", "--iperf-seconds", "2", "--udp-seconds", "1",
         "--meter-values", "10", "--meter-interval", "0.05"]


def gateway_state(lab: str) -> str:
    """What the gateway has applied, read from the kernel: qdiscs and netfilter rules."""
    ns = f"lk-{lab}-gw"
    out = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                          "tc qdisc show dev eth1; tc qdisc show dev eth2; iptables-save 2>/dev/null"],
                         capture_output=True, text=True).stdout
    return out


def assert_unshaped(lab: str) -> None:
    state = gateway_state(lab)
    assert "htb" not in state and "NFQUEUE" not in state and "netem" not in state, state
    assert "labkit-outage" not in state, state


def ping_median_ms(lab: str) -> float:
    handle = lifecycle.open_lab(lab)
    with handle.remote() as r:
        out = r.run("evse1", f"ping -n -q -c 10 -i 0.05 {handle.inventory.cpo.addresses['cpo']}").stdout
    return float(out.strip().splitlines()[-1].split("=")[1].split("/")[1])


@pytest.fixture
def lab_up(home, lab, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("up", "--name", lab, "--backend", "netns", "--evse", "2") == 0
    return lab


def only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_readme_command_1(home, tmp_path, monkeypatch, capfd):
    """`labkit up && labkit bench vsat`, exactly, in a fresh LABKIT_HOME and working directory."""
    monkeypatch.chdir(tmp_path)
    try:
        assert run_cli("up") == 0
        assert run_cli("bench", "vsat") == 0
        run = only_run(tmp_path / "results")
        m = json.loads((run / "manifest.json").read_text())
        assert m["status"] == "complete" and m["engine"] in ("userspace", "netem") and m["backend"] == "netns"
        assert m["profiles"]["vsat"] and m["hosts"]["gw"]["kernel"] and m["controller"]["labkit"]
        assert m["path_check"]["ok"] and m["command"] == ["labkit", "bench", "vsat"]
        cell = run / "cells" / "vsat__n1x1__r1"
        meta = json.loads((cell / "cell.json").read_text())
        assert meta["status"] == "complete" and meta["applied"]
        for f in ("ping.csv", "ping/evse1-cpo.txt", "ping/cpo-evse1.json", "iperf/tcp-up.json", "iperf/tcp-down.json",
                  "iperf/udp-up.json", "iperf/udp-down.json", "ocpp/calls-evse1.csv", "ocpp/events-evse1.csv",
                  "ocpp/csms.csv", "monitor.csv"):
            assert (cell / f).exists(), f
        with open(cell / "ping.csv") as fh:
            probes = list(csv.DictReader(fh))
        assert len(probes) == 200
        added = meta["expected"]["min_added_rtt_ms"]
        assert all(float(p["rtt_ms"]) >= added for p in probes if p["lost"] == "0")
        # labkit's own probe: the same count, microsecond RTTs (not on ping's 1 ms grid above 100 ms), never
        # below the added delay
        with open(cell / "echo.csv") as fh:
            echoes = list(csv.DictReader(fh))
        assert len(echoes) == 200 and {e["direction"] for e in echoes} == {"up", "down"}
        got = [float(e["rtt_ms"]) for e in echoes if e["lost"] == "0"]
        assert got and all(x >= added for x in got)
        assert any(round(x % 1, 3) not in (0.0, 1.0) for x in got)
        with open(cell / "ocpp" / "calls-evse1.csv") as fh:
            calls = list(csv.DictReader(fh))
        assert sum(1 for c in calls if c["action"] == "MeterValues") == 100
        assert all(float(c["rtt_ms"]) >= added for c in calls if c["outcome"] == "ok")
        monitor = (cell / "monitor.csv").read_text()
        assert ",csms," in monitor and ",fleet," in monitor
        summary = (run / "summary.csv").read_text()
        assert "ping_rtt,up" in summary and "ocpp_rtt,all" in summary
        # the link is unshaped again and the report can be made from the directory alone
        assert_unshaped("lab")
        assert run_cli("report", str(run)) == 0
    finally:
        run_cli("down")


def test_errors_before_anything_changes(home, lab_up, tmp_path, capfd):
    lab = lab_up
    before = gateway_state(lab)
    for argv, code, message in [
        (["bench", "vsta", "--lab", lab], 2, "profile: unknown profile 'vsta'"),
        (["bench", "vsat", "--lab", lab, "--evse", "1,5"], 2, "--evse: 5 EVSE hosts asked, the lab has 2"),
        (["bench", "vsat", "--lab", lab, "--evse", "1,x"], 2, "--evse: '1,x' is not a comma-separated list"),
        (["bench", "vsat", "--lab", lab, "--outage", "soon"], 2, "--outage: 'soon' is not DURATION@AT"),
        (["bench", "vsat", "--lab", lab, "--scenario", "session", "--duration", "-5"], 2, "--duration: must be more "
         "than 0"),
        (["bench", "vsat", "--lab", lab, "--heartbeat", "0"], 2, "--heartbeat: must be more than 0"),
        (["bench", "vsat", "--lab", lab, "--udp-seconds", "-1"], 2, "--udp-seconds: must be 0-3600 s"),
        (["bench", "vsat", "--lab", lab, "--iperf-seconds", "nan"], 2, "--iperf-seconds: must be 0-3600"),
        (["bench", "vsat", "--lab", lab, "--security-profile", "1,4"], 2, "--security-profile: '1,4': each of 0, 1, "
         "2, 3 at most once"),
        (["bench", "vsat", "--lab", lab, "--security-profile", "3", "--tls-version", "1.1"], 2,
         "--tls-version: '1.1': 1.2, 1.3 or 1.2,1.3"),
        (["bench", "vsat", "--lab", lab, "--tls-version", "1.2"], 2, "--tls-version/--tls-resumption: only with "
         "--security-profile 2 or 3"),
        (["bench", "vsat", "--lab", lab, "--security-profile", "2", "--no-ocpp"], 2, "--security-profile: must be "
         "used with the OCPP phase"),
        (["bench", "vsat", "--lab", "nolab"], 1, "lab 'nolab' is not up"),
    ]:
        assert run_cli(*argv) == code, argv
        err = capfd.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()
    assert gateway_state(lab) == before
    # a lab whose hosts do not answer: stop the sshd of one host, then bench refuses before shaping
    pid = int((home / "labs" / lab / "hosts" / "evse2" / "sshd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    assert run_cli("bench", "vsat", "--lab", lab) == 1
    assert "is not answering" in capfd.readouterr().err
    assert gateway_state(lab) == before and not (tmp_path / "results").exists()


def _default_signals() -> None:
    """preexec_fn: the signals this test sends get their default disposition in the bench under test. A
    non-interactive shell starts background jobs (`pytest ... &`, nohup) with SIGINT ignored, Python keeps an
    inherited ignore, and the bench would then never see the test's SIGINT (the Unix convention for background
    jobs, which labkit bench honours: docs/handout.md)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _start_bench(home: Path, lab: str, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labkit", "-q", "bench", "--lab", lab, *extra],
                            cwd=cwd, env=dict(os.environ, LABKIT_HOME=str(home)), preexec_fn=_default_signals,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _phase_running(results: Path, phase: str) -> bool:
    for cell in results.glob("*/cells/*/cell.json"):
        try:
            meta = json.loads(cell.read_text())
        except json.JSONDecodeError:
            continue
        if meta.get("phases", {}).get(phase, {}).get("status") == "running":
            return True
    return False


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_killed_bench_leaves_an_unshaped_link_and_an_incomplete_run(home, lab_up, tmp_path, how):
    lab = lab_up
    base = ping_median_ms(lab)
    # over TLS with client certificates: the stations' keys on the hosts must go too
    proc = _start_bench(home, lab, tmp_path, "3g", "none", *SMALL, "--meter-values", "150", "--security-profile", "3")
    results = tmp_path / "results"
    _wait_for(lambda: _phase_running(results, "ocpp"), 120, "the OCPP phase")
    # wait for some calls (netns: the EVSE's work directory is visible here)
    calls_on_host = home / "labs" / lab / "hosts" / "evse1" / "work" / "calls.csv"
    _wait_for(lambda: calls_on_host.exists() and len(calls_on_host.read_text().splitlines()) > 5, 60, "calls")
    assert "htb" in gateway_state(lab)  # shaped while it runs
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=60)
    assert proc.returncode != 0
    run = only_run(results)

    def marked_and_cleaned() -> bool:
        # the guard marks the run first, then cleans up and records it (guard.ended); bench cleans up itself
        m = json.loads((run / "manifest.json").read_text())
        return m["status"] != "running" and ("guard" not in m or "ended" in m["guard"])

    _wait_for(marked_and_cleaned, 120, "the run to be marked and the link cleared")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "incomplete" and m["reason"]
    assert m["link_cleared"] is True
    assert ("guard" in m) == (how == "SIGKILL")
    assert [c["status"] for c in m["cells"]] == ["incomplete", "pending"]
    cell = run / "cells" / "3g__n1x1__r1__sp3-tls13"
    with open(cell / "ping.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 40  # the samples taken are kept
    calls = (cell / "ocpp" / "calls-evse1.csv").read_text().splitlines()
    assert len(calls) > 3
    assert_unshaped(lab)
    assert ping_median_ms(lab) < base + 1.0
    # nothing of the run is left running on the hosts
    handle = lifecycle.open_lab(lab)
    with handle.remote() as r:
        for h in handle.inventory.hosts:
            for name in ("fleet", "csms", "monitor", "iperf3"):
                assert not r.alive(h, name), (h.name, name)
    assert not glob.glob(f"/tmp/labkit-tls-{lab}.*")  # netns hosts share this machine's /tmp
    if how == "SIGINT":
        # and an interrupted run can be finished
        assert run_cli("bench", "--lab", lab, "--resume", str(run)) == 0
        m = json.loads((run / "manifest.json").read_text())
        assert m["status"] == "complete" and m["resumed"]
        assert [c["status"] for c in m["cells"]] == ["complete", "complete"]
        assert (run / "cells" / "3g__n1x1__r1__sp3-tls13.partial-1").is_dir()


def test_kill_9_of_bench_then_down_still_records_an_interrupted_run(home, lab_up, tmp_path):
    """`kill -9` of bench followed at once by `labkit down`: the guard found no lab, crashed with a traceback in
    guard.log, and the manifest said `running` for ever. The run is recorded as interrupted whatever happens to
    the lab."""
    lab = lab_up
    proc = _start_bench(home, lab, tmp_path, "3g", *SMALL, "--meter-values", "200")
    results = tmp_path / "results"
    _wait_for(lambda: _phase_running(results, "ocpp"), 120, "the OCPP phase")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert run_cli("down", "--lab", lab) == 0
    run = only_run(results)
    _wait_for(lambda: json.loads((run / "manifest.json").read_text())["status"] != "running", 120,
              "the run to be marked")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "incomplete" and "killed" in m["reason"]
    assert m["cells"][0]["status"] == "incomplete"
    _wait_for(lambda: "guard: done" in (run / "guard.log").read_text(), 120, "the guard to finish")
    log = (run / "guard.log").read_text()
    assert "Traceback" not in log, log
    meta = json.loads((run / "cells" / "3g__n1x1__r1" / "cell.json").read_text())
    assert meta["status"] == "incomplete" and meta["phases"]["ocpp"]["status"] == "interrupted"


def test_a_run_with_a_failed_cell_is_never_complete(home, lab_up, tmp_path, capfd):
    """A phase that fails (here the CSMS cannot listen: the port is taken on the CPO) fails its cell, and the run
    is then `incomplete` with the reason, and bench exits non-zero."""
    lab = lab_up
    handle = lifecycle.open_lab(lab)
    with handle.remote() as r:
        r.start("cpo", "blocker", f"iperf3 -s -B {handle.inventory.cpo.addresses['cpo']} -p 9000")
        try:
            r.run("cpo", "for i in $(seq 100); do ss -ltn | grep -q ':9000 ' && exit 0; sleep 0.05; done; exit 1")
            assert run_cli("bench", "none", "--lab", lab, "--baselines", "none", "--meter-values", "3") == 1
        finally:
            r.stop("cpo", "blocker")
    run = only_run(tmp_path / "results")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "incomplete" and m["cells"][0]["status"] == "failed"
    assert "1 of 1 cells failed" in m["reason"] and "cannot listen" in m["reason"], m["reason"]
    assert "incomplete" in capfd.readouterr().out


def test_a_full_disk_on_an_evse_host_fails_the_cell_at_once_with_the_reason(home, lab_up, tmp_path):
    """evse1's work directory on a 64 KiB tmpfs (mounted over SSH, in the mount namespace its processes run in)
    that fills during the OCPP phase: the cell fails within seconds naming the host and the disk, where the bench
    used to wait for its deadline (about half an hour) with the fleet stalled."""
    lab = lab_up
    handle = lifecycle.open_lab(lab)
    wd = handle.inventory.host("evse1").workdir
    with handle.remote() as r:
        r.run("evse1", f"mkdir -p {wd} && mount -t tmpfs -o size=64k labkit-test-full {wd}", sudo=True)
        try:
            t0 = time.monotonic()
            assert run_cli("bench", "none", "--lab", lab, "--baselines", "none", "--meter-values", "2000",
                           "--meter-interval", "0.001") == 1
            took = time.monotonic() - t0
        finally:
            r.run("evse1", f"umount {wd}", sudo=True)
    run = only_run(tmp_path / "results")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "incomplete" and m["cells"][0]["status"] == "failed"
    reason = m["reason"]
    # the fleet said why in its status file, or (its log and status on the same full disk) the bench saw it
    # exit and looked at the disk; it did not stall (that is caught too, 30 s later: StatusWatch)
    assert ("evse1: the fleet exited before finishing: its log is empty; " in reason and " has 0 KiB free" in reason
            or "evse1: the fleet could not write its results: " in reason and "No space left" in reason), reason
    assert took < 120, took


def test_status_watch_flags_a_status_that_stopped_changing():
    from labkit.bench.ocpp import StatusWatch

    w = StatusWatch(stale_s=30)
    w.see("evse1", {"t_wall": 1.0}, now=100.0)
    w.see("evse2", {"t_wall": 5.0}, now=100.0)
    w.see("evse1", None, now=110.0)  # a read that failed changes nothing
    for i in range(40):
        w.see("evse2", {"t_wall": 6.0 + i}, now=101.0 + i)
    assert w.stale(129.0, ["evse1", "evse2"]) == {}
    assert w.stale(131.0, ["evse1", "evse2"]) == {"evse1": 31.0}
    assert w.stale(131.0, ["evse2"]) == {}  # evse1 finished: not asked about
    assert w.stale(131.0, ["evse3"]) == {}  # never seen yet (still starting): not stale


def test_outage_reconnects_and_queued_messages_wait(home, lab_up, tmp_path):
    lab = lab_up
    assert run_cli("bench", "4g", "--lab", lab, "--baselines", "none", "--meter-values", "80",
                   "--meter-interval", "0.25", "--ws-ping", "2", "--outage", "8s@4s") == 0
    run = only_run(tmp_path / "results")
    cell = run / "cells" / "4g__n1x1__r1"
    meta = json.loads((cell / "cell.json").read_text())
    assert meta["outage"]["duration_s"] == 8 and meta["outage"]["t_wall_end"] > meta["outage"]["t_wall_start"]
    with open(cell / "ocpp" / "events-evse1.csv") as fh:
        events = list(csv.DictReader(fh))
    kinds = [e["event"] for e in events]
    assert "disconnected" in kinds and "reconnected" in kinds
    down = [float(e["downtime_ms"]) for e in events if e["event"] == "reconnected"]
    assert down and max(down) >= 2000
    with open(cell / "ocpp" / "calls-evse1.csv") as fh:
        calls = list(csv.DictReader(fh))
    meters = [c for c in calls if c["action"] == "MeterValues" and c["outcome"] == "ok"]
    assert len({c["tx_key"] for c in meters}) == 80  # every meter value acknowledged once or more
    assert any(c["queued_ms"] not in ("", "0", "0.0") for c in calls)  # some waited for the link
    assert_unshaped(lab)

    # Every transaction message traceable (at-least-once delivery): the report's per-station table agrees with
    # a count made here directly from both CSV files, keyed by tx_key.
    with open(cell / "ocpp" / "csms.csv") as fh:
        csms = list(csv.DictReader(fh))
    tx = [c for c in calls if c["tx_key"]]
    sent = {c["tx_key"] for c in tx if c["outcome"] != "send_failed"}
    acked = {c["tx_key"] for c in tx if c["outcome"] == "ok"}
    handled_rows = [r for r in csms if r["tx_key"] and r["outcome"] == "ok"]
    handled = {r["tx_key"] for r in handled_rows}
    duplicates = len(handled_rows) - len(handled)
    lost = sent - handled - acked
    assert len(sent) == 82 and acked == sent  # Start, 80 MeterValues, Stop
    assert all(int(r["attempt"]) >= 1 for r in handled_rows)
    assert sum(1 for r in handled_rows if int(r["attempt"]) > 1) == duplicates
    from labkit.analysis.load import load_run
    from labkit.analysis.transactions import tx_table

    table = tx_table(load_run(run), by_station=True)
    row = table[table["station_id"] == calls[0]["station_id"]].iloc[0]
    assert (int(row["sent"]), int(row["acknowledged"]), int(row["handled"]), int(row["duplicates"]),
            int(row["lost"])) == (len(sent), len(acked), len(handled), duplicates, len(lost))
    assert run_cli("report", str(run)) == 0
    report = (run / "report" / "report.md").read_text()
    assert "Transaction messages" in report


def test_security_profiles_sweep_over_tls_with_the_labs_own_certificates(home, lab_up, tmp_path):
    """One plan runs OCPP security profiles 1, 2 and 3 (TLS 1.2, session resumption on and off) through an
    outage: every connection's set-up is recorded, TLS 1.2's full handshake takes two round trips of the link and
    a resumed one one, profile 3 presents each station's own certificate, and no key or password is left on
    a host or in the results."""
    from labkit.resultsformat import parse_detail

    lab = lab_up
    assert run_cli("bench", "4g", "--lab", lab, "--baselines", "none", "--meter-values", "16", "--meter-interval",
                   "0.25", "--ws-ping", "1", "--outage", "3s@2s", "--evse", "2", "--stations-per-host", "2",
                   "--security-profile", "1,2,3", "--tls-version", "1.2", "--tls-resumption", "both") == 0
    run = only_run(tmp_path / "results")
    m = json.loads((run / "manifest.json").read_text())
    labels = [c["security"]["label"] for c in m["cells"]]
    assert labels == ["sp1", "sp2-tls12", "sp2-tls12-nores", "sp3-tls12", "sp3-tls12-nores"]
    assert len(m["tls"]["ca_sha256"]) == 64 and f"labkit {lab}" in m["tls"]["ca_subject"]
    for c in m["cells"]:
        cell = run / c["dir"]
        sec = c["security"]
        meta = json.loads((cell / "cell.json").read_text())
        assert meta["security"] == sec and meta["status"] == "complete"
        events = []
        for f in sorted((cell / "ocpp").glob("events-*.csv")):
            with open(f) as fh:
                events += list(csv.DictReader(fh))
        shakes = [(int(e["connection"]), parse_detail(e["detail"])) for e in events if e["event"] == "handshake"]
        firsts = [d for n, d in shakes if n == 1]
        again = [d for n, d in shakes if n > 1]
        assert len(firsts) == 4 and again, (c["id"], shakes)  # every station connected, some came back
        assert {d["tls"] for d in firsts + again} == ({"none"} if sec["profile"] == 1 else {"TLSv1.2"})
        assert sum(e["event"] == "booted" for e in events) == 4
        with open(cell / "ocpp" / "csms.csv") as fh:
            csms = list(csv.DictReader(fh))
        assert not [r for r in csms if r["outcome"] == "refused"], c["id"]
        if sec["profile"] == 1:
            continue
        rtt = sorted(float(d["tcp_ms"]) for d in firsts)[0]  # one round trip of the link: TCP's handshake
        assert min(float(d["tls_ms"]) for d in firsts) >= 1.9 * rtt  # a full TLS 1.2 handshake: two round trips
        assert all(d["resumed"] == "0" for d in firsts)
        resumed = [d for d in again if d["resumed"] == "1"]
        if sec["resumption"]:
            assert resumed and min(float(d["tls_ms"]) for d in resumed) < 1.5 * rtt  # abbreviated: one
        else:
            assert not resumed
        # profile 3: the stations' certificates (about 1 kB more from the station than profile 2's handshake)
        out = statistics.median(float(d["tls_out"]) for d in firsts)
        assert (out > 700) == (sec["profile"] == 3), (c["id"], out)
    text = "".join(p.read_text(errors="replace") for p in run.rglob("*") if p.is_file() and p.suffix != ".png")
    assert "PRIVATE KEY" not in text and "--password " not in text
    assert not glob.glob(f"/tmp/labkit-tls-{lab}.*") and not glob.glob(f"/tmp/labkit-secret-{lab}.*")
    assert (home / "labs" / lab / "tls" / "ca.pem").exists()
    assert_unshaped(lab)
    # the report's set-up tables, from these events: TLS 1.2 in about two round trips of the link, resumed in one
    from labkit.analysis.load import load_run
    from labkit.analysis.tables import reconnect_table, setup_table

    loaded = load_run(run)
    setup = setup_table(loaded).set_index("security")
    assert list(setup.index) == labels and (setup["first_connections"] == 4).all()
    assert setup.loc["sp3-tls12", "tls_out_median_bytes"] > setup.loc["sp2-tls12", "tls_out_median_bytes"] + 500
    again = reconnect_table(loaded).set_index("security")
    assert again.loc["sp2-tls12", "resumed_pct"] > 0 and again.loc["sp2-tls12-nores", "resumed_pct"] == 0
    assert run_cli("report", str(run)) == 0
    report = (run / "report" / "report.md").read_text()
    assert "Connection set-up" in report and "sp3-tls12-nores" in report

    # and OCPP 2.0.1 over TLS 1.3 with client certificates, on the same lab and CA
    assert run_cli("bench", "none", "--lab", lab, "--baselines", "none", "--meter-values", "5", "--meter-interval",
                   "0.05", "--evse", "2", "--ocpp", "2.0.1", "--security-profile", "3", "--results",
                   str(tmp_path / "results201")) == 0
    run201 = only_run(tmp_path / "results201")
    cell = run201 / "cells" / "none__n2x1__r1__sp3-tls13"
    assert json.loads((run201 / "manifest.json").read_text())["tls"]["ca_sha256"] == m["tls"]["ca_sha256"]
    events, calls = [], []
    for h in ("evse1", "evse2"):
        with open(cell / "ocpp" / f"events-{h}.csv") as fh:
            events += list(csv.DictReader(fh))
        with open(cell / "ocpp" / f"calls-{h}.csv") as fh:
            calls += list(csv.DictReader(fh))
    assert [parse_detail(e["detail"])["tls"] for e in events if e["event"] == "handshake"] == ["TLSv1.3"] * 2
    assert calls and all(c["outcome"] == "ok" for c in calls)
    assert {c["action"] for c in calls} >= {"BootNotification", "TransactionEvent"}


@pytest.mark.timeout(2400)
def test_reduced_thesis_plan_fills_every_table_and_compares(home, lab_name, tmp_path, monkeypatch, capfd):
    """The dissertation's matrix (tables 9 to 17) at reduced sample sizes: 6 profiles x 1/10/25/50 chargers."""
    monkeypatch.chdir(tmp_path)
    name = lab_name
    try:
        assert run_cli("up", "--name", name, "--backend", "netns", "--evse", "50") == 0
        assert run_cli("bench", "--lab", name, "--plan", "thesis", "--family", "slow", *SMALL,
                       "--meter-values", "5") == 0
        run = only_run(tmp_path / "results")
        m = json.loads((run / "manifest.json").read_text())
        assert len(m["cells"]) == 24 and all(c["status"] == "complete" for c in m["cells"])
        t0 = time.monotonic()
        assert run_cli("report", str(run)) == 0
        assert run_cli("compare", str(run), "thesis-2021") == 0
        elapsed = time.monotonic() - t0
        out = capfd.readouterr().out
        assert "thesis" in out.lower()
        summary = (run / "summary.csv").read_text()
        for profile in ("none", "slow-amps", "slow-gprs", "slow-3g", "slow-4g", "slow-vsat"):
            assert f"{profile},1,1,1,1,ping_rtt,up" in summary
            assert f"{profile},1,1,1,1,tcp_goodput,up" in summary
            for n in (1, 10, 25, 50):
                assert f"{profile}__n{n}x1__r1,{profile},{n},1,{n},1,ocpp_rtt,all" in summary
        print(f"report + compare on the reduced thesis plan: {elapsed:.1f} s")
    finally:
        run_cli("down", "--lab", name)
    assert not {n for n in namespaces() if n.startswith(f"lk-{name}-")}
