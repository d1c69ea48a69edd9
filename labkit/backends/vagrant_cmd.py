"""Process helpers around the ``vagrant`` and ``virsh`` commands, and what they tell about this machine.

Running a command with one-line errors (``run``), ``virsh`` on labkit's libvirt URI, the vagrant binary, the
environment labkit gives every vagrant process (``LAB_MARK`` names the lab), its plugins and installed boxes,
whether libvirt answers and whether KVM works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from labkit import vagrantfile
from labkit.errors import BackendError
from labkit.labdir import LabDir

LIBVIRT_URI = vagrantfile.LIBVIRT_URI
#: environment variable that marks every vagrant process labkit starts for a lab (its lab directory)
LAB_MARK = "LABKIT_VAGRANT_LAB"


def run(cmd: list[str], *, timeout: float = 120, check: bool = True, env: dict | None = None,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except FileNotFoundError:
        raise BackendError(f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from None
    if check and cp.returncode != 0:
        msg = (cp.stderr.strip() or cp.stdout.strip()).splitlines()
        raise BackendError(f"`{' '.join(cmd)}` failed: {msg[-1] if msg else f'exit status {cp.returncode}'}")
    return cp


def virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return run(["virsh", "-q", "-c", LIBVIRT_URI, *args], check=check, timeout=timeout)


def kvm_usable() -> tuple[bool, str]:
    """Whether hardware virtualisation works here (``/dev/kvm`` and the CPU's vmx/svm flag)."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False, "cannot read /proc/cpuinfo"
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return False, "the CPU shows no vmx/svm flag (no hardware virtualisation; /dev/kvm cannot run guests)"
    return True, "KVM"


def vagrant_bin() -> str | None:
    return shutil.which("vagrant")


def vagrant_env(labdir: LabDir | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["VAGRANT_NO_COLOR"] = "1"
    env.setdefault("VAGRANT_CHECKPOINT_DISABLE", "1")  # no phoning home
    if labdir is not None:
        env[LAB_MARK] = str(labdir.path)
    return env


def vagrant_plugins() -> list[str]:
    cp = run([vagrant_bin() or "vagrant", "plugin", "list", "--machine-readable"], timeout=60, check=False,
             env=vagrant_env())
    return [line.split(",", 3)[3] for line in cp.stdout.splitlines() if ",plugin-name," in line]


def libvirt_reachable() -> tuple[bool, str]:
    if not shutil.which("virsh"):
        return False, "virsh is not installed (Debian: apt install libvirt-clients)"
    cp = virsh("uri", check=False, timeout=15)
    if cp.returncode != 0:
        return False, (f"cannot connect to libvirt at {LIBVIRT_URI} (is libvirtd running? start it with "
                       "`libvirtd -d` or `systemctl start libvirtd`)")
    return True, LIBVIRT_URI


def box_list() -> list[tuple[str, str, str]]:
    """(name, provider, version) of every installed box."""
    cp = run([vagrant_bin() or "vagrant", "box", "list", "--machine-readable"], timeout=60, env=vagrant_env())
    boxes, cur = [], {}
    for line in cp.stdout.splitlines():
        parts = line.split(",", 3)
        if len(parts) < 4:
            continue
        kind, data = parts[2], parts[3]
        if kind == "box-name":
            cur = {"name": data}
        elif kind == "box-provider":
            cur["provider"] = data
        elif kind == "box-version":
            cur["version"] = data
            boxes.append((cur.get("name", ""), cur.get("provider", ""), data))
    return boxes


def vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
