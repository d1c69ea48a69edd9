"""Fixtures for the simulator tests: a real ``labkit csms`` process and a runner for ``labkit fleet``.

Everything talks over real WebSockets on loopback (127.0.0.1, ports chosen by the kernel); the link
delay and outages come from tests/sim/delayproxy.py (netem stand-in, see there).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit.sim.samples import read_rows

PY = sys.executable


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """The test's environment without a password that might leak in from outside, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_OCPP_PASSWORD"}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


@dataclass
class CsmsProc:
    proc: subprocess.Popen
    port: int
    out: Path
    status: Path
    scheme: str = "ws"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def rows(self) -> list[dict]:
        return list(read_rows(self.out))


def start_csms(tmp: Path, *args: str, env: dict[str, str] | None = None) -> CsmsProc:
    out, status = tmp / "csms.csv", tmp / "csms.json"
    proc = subprocess.Popen(
        [PY, "-m", "labkit", "csms", "--listen", "127.0.0.1:0", "--out", str(out), "--status", str(status), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
    )
    line = proc.stdout.readline()
    scheme = "wss" if "listening on wss://" in line else "ws"
    if f"listening on {scheme}://" not in line:
        proc.kill()
        raise RuntimeError(f"csms did not start: {line!r} {proc.stderr.read()}")
    port = int(line.split(f"{scheme}://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return CsmsProc(proc, port, out, status, scheme)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode


@pytest.fixture
def csms_factory(tmp_path):
    """Start CSMS processes (``csms_factory(*flags)``); all are stopped at the end, whatever happened."""
    procs: list[CsmsProc] = []

    def make(*args: str, env: dict[str, str] | None = None) -> CsmsProc:
        d = tmp_path / f"csms{len(procs)}"
        d.mkdir()
        c = start_csms(d, *args, env=env)
        procs.append(c)
        return c

    yield make
    for c in procs:
        stop(c.proc)


@dataclass
class FleetRun:
    rc: int
    stdout: str
    stderr: str
    calls: list[dict]
    events: list[dict]
    status: dict


def run_fleet(tmp: Path, url: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> FleetRun:
    import json

    tmp.mkdir(parents=True, exist_ok=True)
    calls, events, status = tmp / "calls.csv", tmp / "events.csv", tmp / "fleet.json"
    for f in (calls, events, status):
        f.unlink(missing_ok=True)
    p = subprocess.run(
        [
            PY,
            "-m",
            "labkit",
            "fleet",
            "--url",
            url,
            "--out",
            str(calls),
            "--events",
            str(events),
            "--status",
            str(status),
            "--host-label",
            "evse1",
            "--run-id",
            "t1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(env),
    )
    return FleetRun(
        p.returncode,
        p.stdout,
        p.stderr,
        list(read_rows(calls)) if calls.exists() else [],
        list(read_rows(events)) if events.exists() else [],
        json.loads(status.read_text()) if status.exists() else {},
    )
