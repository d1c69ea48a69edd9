"""Helpers for the Vagrant backend's tests: what is installed here, and what a lab left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

LIBVIRT = "qemu:///system"
#: the box cache and a shared wheelhouse cache, so each test's private LABKIT_HOME does not download again
CACHE = Path(os.environ.get("LABKIT_BOX_CACHE", "/var/cache/labkit"))


def missing_for_vms() -> str | None:
    from labkit.testbox import missing_for_test_box

    return missing_for_test_box()


def require_or_skip(why: str | None) -> None:
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Vagrant tests, but: {why}")
    pytest.skip(why)


def virsh_names(*args: str) -> set[str]:
    out = subprocess.run(["virsh", "-q", "-c", LIBVIRT, *args], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def leftovers(lab: str) -> dict[str, list[str]]:
    """Everything on this machine that still carries the lab's prefix."""
    prefix = f"lk-{lab}-"
    import psutil

    marked = []
    for p in psutil.process_iter(["pid", "name"]):
        try:
            env = p.environ().get("LABKIT_VAGRANT_LAB", "")
        except (psutil.Error, OSError):
            continue
        if env.endswith(f"/labs/{lab}"):
            marked.append(f"{p.pid} {p.info['name']}")
    out = {
        "domains": sorted(d for d in virsh_names("list", "--all", "--name") if d.startswith(prefix)),
        "networks": sorted(n for n in virsh_names("net-list", "--all", "--name") if n.startswith(prefix)),
        "volumes": sorted(v for v in virsh_names("vol-list", "default") if v.startswith(prefix)),
        "vagrant processes": marked,
    }
    return {k: v for k, v in out.items() if v}


def lab_file(base: Path, dest: Path, **vagrant_overrides) -> Path:
    """The test box's lab file with some ``vagrant:`` settings changed (``libvirt`` is merged)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    data = yaml.load(base.read_text())
    for key, value in vagrant_overrides.items():
        if key == "libvirt":
            data["vagrant"]["libvirt"].update(value)
        else:
            data["vagrant"][key] = value
    with open(dest, "w") as fh:
        yaml.dump(data, fh)
    return dest


def gw_root(lab: str, script: str) -> int:
    """Run a shell script as root on the lab's gateway VM (``labkit ssh``; the Vagrant user has sudo)."""
    import shlex

    from tests.conftest import run_cli

    return run_cli("ssh", "--lab", lab, "gw", f"sudo sh -c {shlex.quote(script)}")


#: a stand-in for a tc that gives netem another delay than it is asked for (installed in /usr/local/sbin,
#: ahead of /usr/sbin in sudo's secure_path): what apply's read-back must catch before a bench measures
LYING_TC = """#!/bin/sh
case "$*" in *netem*"delay {want}us"*) set -- $(echo "$*" | sed 's/delay {want}us/delay {give}us/') ;; esac
exec /usr/sbin/tc "$@"
"""
