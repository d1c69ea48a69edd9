"""Fixtures of the interop tests: the simulator tests' CSMS fixture, the locked ocpp-rpc install, ocpp-rpc's
charger (charger.js) run once, and ocpp-rpc's CSMS (csms.js) as a process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sim.conftest import csms_factory  # noqa: F401

HERE = Path(__file__).resolve().parent
NODE, NPM = shutil.which("node"), shutil.which("npm")


@pytest.fixture(scope="session")
def node_modules():
    marker = HERE / "node_modules" / "ocpp-rpc" / "package.json"
    if not marker.exists():
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, capture_output=True, text=True, timeout=300
        )
    return HERE / "node_modules"


def _node_env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment without a password that might leak in from outside, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHARGER_PASSWORD", "LABKIT_OCPP_PASSWORD")}
    return {**env, **(extra or {})}


@dataclass
class ChargerRun:
    rc: int
    report: dict
    stderr: str


def run_charger(
    url: str, protocol: str, identity: str, *options: str, env: dict[str, str] | None = None, timeout: float = 60
) -> ChargerRun:
    """One run of charger.js (its options: --ca, --cert, --key, --password-file, --tls-version; the password
    may also come in ``env`` as CHARGER_PASSWORD) and the JSON line it printed last."""
    p = subprocess.run(
        [NODE, str(HERE / "charger.js"), url, protocol, identity, *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_node_env(env),
    )
    assert p.stdout.strip(), p.stderr
    return ChargerRun(p.returncode, json.loads(p.stdout.strip().splitlines()[-1]), p.stderr)


@dataclass
class TheirCsms:
    url: str
    report: Callable[[], dict]  # stops csms.js (SIGTERM) the first time and returns its JSON report


@pytest.fixture
def their_csms_factory(node_modules):
    """Start csms.js processes (``their_csms_factory(*options)``, its options: --tls-cert, --tls-key,
    --client-ca, --password-file) on 127.0.0.1; all are killed at the end, whatever happened."""
    procs: list[subprocess.Popen] = []

    def make(*options: str) -> TheirCsms:
        proc = subprocess.Popen(
            [NODE, str(HERE / "csms.js"), "0", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_node_env(None),
        )
        procs.append(proc)
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            proc.kill()
            raise RuntimeError(f"csms.js did not start: {line!r} {proc.stderr.read()}")
        _, port, scheme = line.split()
        state: dict = {}

        def report() -> dict:
            if "report" not in state:
                proc.send_signal(signal.SIGTERM)
                out, _ = proc.communicate(timeout=10)
                state["report"] = json.loads(out.strip().splitlines()[-1])
            return state["report"]

        return TheirCsms(f"{scheme}://127.0.0.1:{port}/", report)

    yield make
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
