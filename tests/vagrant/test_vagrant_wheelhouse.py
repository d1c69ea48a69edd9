"""The wheelhouse: labkit's own wheel, the host-side dependencies, and the install a VM runs, here on this
machine into a venv made without pip, through the same commands (a local stand-in for SSH: the SSH path
itself is proven by the VM end-to-end test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass

import pytest

from labkit import wheelhouse
from labkit.errors import BackendError


def test_labkit_wheel_carries_the_shipped_files(tmp_path):
    whl = wheelhouse.build_labkit_wheel(tmp_path)
    assert whl.name.startswith("labkit-") and "+h" in whl.name and whl.name.endswith("-py3-none-any.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for must in ("labkit/__init__.py", "labkit/cli/sim.py", "labkit/_data/profiles.yaml",
                 "labkit/_data/Vagrantfile.j2", "labkit/_data/provisioning/install-wheels.py"):
        assert must in names, must
    assert not any("__pycache__" in n for n in names)
    dist = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert b"labkit = labkit.__main__:main" in zipfile.ZipFile(whl).read(dist)
    # the same content gives the same name (so an unchanged checkout is not reinstalled)
    again = tmp_path / "again"
    again.mkdir()
    assert wheelhouse.build_labkit_wheel(again).name == whl.name


def test_targets_and_platform_tags():
    t = wheelhouse.Target("3.12", "aarch64", "2.39")
    assert t.tag == "cp312-aarch64-glibc2.39"
    assert t.platforms()[0] == "manylinux_2_39_aarch64" and "manylinux2014_aarch64" in t.platforms()
    assert "manylinux_2_5_aarch64" in t.platforms()
    out = json.dumps({"python": "3.10", "machine": "x86_64", "libc": ["glibc", "2.35"]})
    with pytest.raises(BackendError, match="the host has Python 3.10; labkit needs 3.11 or newer"):
        wheelhouse.probe_target(lambda cmd: out)
    with pytest.raises(BackendError, match="cannot run python3 on the host"):
        wheelhouse.probe_target(lambda cmd: "sh: python3: not found")


@dataclass
class _Res:
    stdout: str
    stderr: str
    exited: int


class LocalRemote:
    """``run`` and ``put`` of labkit.remote.Remote, on this machine (no SSH)."""

    def __init__(self):
        self.commands: list[str] = []

    def run(self, host, command, *, sudo=False, check=True, timeout=None):
        self.commands.append(command)
        cp = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout or 600)
        if check and cp.returncode != 0:
            raise RuntimeError(f"{command}: {cp.stderr}")
        return _Res(cp.stdout, cp.stderr, cp.returncode)

    def run_many(self, hosts, command, **kw):
        return {h.name: self.run(h, command, **kw) for h in hosts}

    def put(self, host, local, remote):
        shutil.copyfile(local, remote)


@dataclass
class _Host:
    name: str
    labkit: str
    user: str = "root"


@pytest.mark.slow
def test_install_without_pip_runs_the_host_commands(tmp_path):
    """The wheels are gathered with pip download once (cached); the venv has no pip; labkit's host-side
    commands then start from it, and a second install with the same wheelhouse is skipped."""
    if shutil.which("python3") is None:
        pytest.skip("needs python3")
    host = _Host("local", str(tmp_path / "opt" / "venv" / "bin" / "labkit"),
                 user=subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip())
    remote = LocalRemote()
    seconds = wheelhouse.install(remote, [host])
    assert set(seconds) == {"local"}
    venv = tmp_path / "opt" / "venv"
    assert not (venv / "bin" / "pip").exists()  # no pip was needed, none was installed
    for cmd in (["csms", "--help"], ["fleet", "--help"], ["shaper", "--help"], ["monitor", "--help"]):
        cp = subprocess.run([str(venv / "bin" / "labkit"), *cmd], capture_output=True, text=True)
        assert cp.returncode == 0, cp.stderr
    # only the host-side dependencies: the analysis stack stays on the controlling machine
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import pandas"], capture_output=True)
    assert probe.returncode != 0
    stamp = json.loads((tmp_path / "opt" / "installed.json").read_text())
    assert any(r.startswith("ocpp==") for r in stamp["requirements"])
    n = len(remote.commands)
    wheelhouse.install(remote, [host])
    assert not any("install-wheels.py" in c for c in remote.commands[n:])  # unchanged: skipped
    assert sys.version_info >= wheelhouse.MIN_PYTHON
