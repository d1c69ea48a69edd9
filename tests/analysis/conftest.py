"""Fixtures for the analysis tests: SYNTHETIC results directories (tests/analysis/synthetic.py).

The generator is loaded by path under a private module name, so these tests need no package layout.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest


def _load_synthetic():
    name = "labkit_tests_analysis_synthetic"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("synthetic.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


synthetic = _load_synthetic()


@pytest.fixture(scope="session")
def synth():
    """The synthetic results generator module (``synth.make_run(root, ...)``)."""
    return synthetic


#: the transaction faults of ``synth_dir``: cell -> (duplicate deliveries, lost messages), first station
SYNTH_TX_FAULTS = {"4g__n1x1__r1": (1, 0), "vsat__n10x1__r1": (0, 2), "slow-gprs__n1x25__r1": (2, 1)}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A synthetic netns run (tests plan, format /2): none/4g/vsat/slow-gprs/slow-vsat x N 1/10/25/50, with
    an outage cell, an incomplete cell with a torn CSV line, lost pings, CallErrors and timeouts, the echo
    probe, and transaction faults (``SYNTH_TX_FAULTS``). Shared: copy it (``copy_run``) before changing
    anything."""
    return synthetic.make_run(tmp_path_factory.mktemp("synth_a"), seed=7, tx_faults=SYNTH_TX_FAULTS)


@pytest.fixture(scope="session")
def synth_dir_b(tmp_path_factory) -> Path:
    """A second synthetic run, as if from the vagrant backend, another seed; complete, no outage."""
    return synthetic.make_run(tmp_path_factory.mktemp("synth_b"), seed=11, backend="vagrant",
                              label="synthetic-vm", incomplete=False, outage=False)


@pytest.fixture(scope="session")
def synth_tx_faults() -> dict[str, tuple[int, int]]:
    return dict(SYNTH_TX_FAULTS)


@pytest.fixture(scope="session")
def synth_dir_v1(tmp_path_factory) -> Path:
    """A small synthetic run in the old format (labkit-results/1): no echo probe, no message ids,
    connections or transaction keys, no event loop; with an outage cell."""
    return synthetic.make_run(tmp_path_factory.mktemp("synth_v1"), seed=5, fmt="labkit-results/1",
                              profiles=["none", "4g"], fleets=[(1, 1), (10, 1)], meter_values=10,
                              incomplete=False, label="synthetic-v1")


@pytest.fixture(scope="session")
def synth_run(synth_dir):
    from labkit.analysis.load import load_run

    return load_run(synth_dir)


@pytest.fixture
def copy_run(synth_dir, tmp_path):
    """Returns a function making a writable copy of the synthetic run (for corrupting it)."""
    def _copy() -> Path:
        dst = tmp_path / synth_dir.name
        shutil.copytree(synth_dir, dst)
        return dst
    return _copy


def _iperf3_server_factory():
    """A context manager: start a real iperf3 server on 127.0.0.1 on a free port (ours: verified alive after
    binding); yields the port; killed afterwards (by its pid, which we started)."""
    import socket
    import subprocess
    import time
    from contextlib import contextmanager

    @contextmanager
    def _server():
        srv = None
        try:
            for _ in range(20):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                srv = subprocess.Popen(["iperf3", "-s", "-p", str(port), "-B", "127.0.0.1"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 5
                listening = False
                while time.monotonic() < deadline and srv.poll() is None:
                    with socket.socket() as c:
                        if c.connect_ex(("127.0.0.1", port)) == 0:
                            listening = True
                            break
                    time.sleep(0.05)
                if listening and srv.poll() is None:
                    break
                srv.kill()
                srv.wait(timeout=10)
                srv = None
            assert srv is not None, "could not start an iperf3 server on 127.0.0.1"
            time.sleep(0.2)  # the probe connection above must be finished before a test starts
            yield port
        finally:
            if srv is not None:
                srv.kill()
                srv.wait(timeout=10)

    return _server


@pytest.fixture
def iperf3_server():
    return _iperf3_server_factory()


@pytest.fixture(scope="module")
def iperf3_server_module():
    return _iperf3_server_factory()
