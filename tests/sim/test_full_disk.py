"""A full disk is a recorded failure, not a silent gap: the fleet and the CSMS stop and exit 1 saying which file
could not be written and how many rows were lost (labkit/sim/samples.py).

The disk is real: each process runs in a mount namespace of its own (``unshare --mount``) with a 64 KiB tmpfs
over its results directory, so nothing is mounted where the rest of this machine sees it. Before this was
handled, a fleet whose calls file hit ENOSPC stayed alive doing nothing until it was killed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.sim.samples import read_rows
from tests.conftest import needs_root
from tests.sim.conftest import _env, stop

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")]

#: enough calls to fill 64 KiB in well under a second
BUSY = ["--stations", "3", "--meter-values", "2000", "--meter-interval", "0.001", "--step-interval", "0.01",
        "--jitter", "0"]


def on_small_disk(small: Path, *argv: str) -> list[str]:
    """``argv`` run in a private mount namespace with a 64 KiB tmpfs mounted on ``small``."""
    small.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o size=64k labkit-test-full "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(small), *argv]


def fleet_argv(url: str, calls: Path, events: Path, status: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "labkit", "fleet", "--url", url, "--out", str(calls), "--events", str(events),
            "--status", str(status), "--host-label", "evse1", "--run-id", "t1", *(args or BUSY)]


def test_fleet_stops_and_says_which_file_when_its_disk_fills(csms_factory, tmp_path):
    csms = csms_factory()
    small = tmp_path / "small"
    status = tmp_path / "fleet.json"  # on the big disk, so the test can read what the fleet said
    t0 = time.monotonic()
    p = subprocess.run(on_small_disk(small, *fleet_argv(csms.url, small / "calls.csv", tmp_path / "events.csv",
                                                        status)),
                       capture_output=True, text=True, timeout=60, env=_env(None))
    assert p.returncode == 1, p.stderr
    assert time.monotonic() - t0 < 30
    st = json.loads(status.read_text())
    assert st["phase"] == "failed" and st["finished"] is False and st["stop_reason"] == "results write failed"
    assert "calls.csv: No space left on device" in st["write_error"] and "not written" in st["write_error"]
    assert st["calls_done"] > 0  # it ran until the disk was full
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("labkit fleet: results not written: ") and "No space left on device" in last, p.stderr
    assert "Traceback" not in p.stderr
    assert not list(small.iterdir())  # the tmpfs was the namespace's own


def test_fleet_with_everything_on_a_full_disk_exits_instead_of_hanging(csms_factory, tmp_path):
    """Calls, events, status and its log (stdout and stderr, as in a bench) all on the disk that fills: the fleet
    can tell no one but its exit status. Before, it spun at a full core, ignoring SIGTERM and growing by GBs: on
    its way to stop, a transaction message's call lost its cancellation (Python 3.11's wait_for can drop one when
    the answer arrives at the same moment), was sent again on the connection being closed, and a send to a closed
    WebSocket fails without suspending, so the retry loop never let the connection's reader or the stop run. The
    CSMS's rate limit (close 1008 at 1,000 messages/s) makes the timing that showed it here every time."""
    csms = csms_factory()
    small = tmp_path / "small"
    argv = on_small_disk(small, "sh", "-c", 'cd "$1" && shift && exec "$@" > fleet.log 2>&1', "sh", str(small),
                         *fleet_argv(csms.url, small / "calls.csv", small / "events.csv", small / "fleet.json",
                                     "--stations", "1", "--meter-values", "2000", "--meter-interval", "0.001",
                                     "--heartbeat", "2"))  # as a bench runs it: a heartbeat shares the lock
    env = {k: v for k, v in _env(None).items() if k != "PYTHONUNBUFFERED"}  # as a bench starts it
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1, p.stderr
    assert time.monotonic() - t0 < 30


def test_csms_stops_and_exits_1_when_csms_csv_cannot_be_written(tmp_path):
    small = tmp_path / "small"
    status = tmp_path / "csms.json"
    argv = on_small_disk(small, sys.executable, "-m", "labkit", "csms", "--listen", "127.0.0.1:0", "--out",
                         str(small / "csms.csv"), "--status", str(status))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(None))
    try:
        line = proc.stdout.readline()
        assert "listening on ws://" in line, line
        port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        subprocess.run(fleet_argv(f"ws://127.0.0.1:{port}/", tmp_path / "calls.csv", tmp_path / "events.csv",
                                  tmp_path / "fleet.json") + ["--duration", "5", "--drain-timeout", "1"],
                       capture_output=True, text=True, timeout=60, env=_env(None))
        rc = proc.wait(30)  # it stopped by itself: nobody sent it a signal
    finally:
        stop(proc)
    err = proc.stderr.read()
    assert rc == 1, err
    st = json.loads(status.read_text())
    assert st["phase"] == "failed" and st["stop_reason"] == "results write failed"
    assert "csms.csv: No space left on device" in st["write_error"], st
    assert "labkit csms: results not written: " in err and "Traceback" not in err, err
    # its stations saw it go: the loss of their connection is a sample on their side
    events = {r["event"] for r in read_rows(tmp_path / "events.csv")}
    assert "disconnected" in events, events
