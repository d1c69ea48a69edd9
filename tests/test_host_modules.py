"""What labkit runs on a lab's hosts imports with the host-side packages alone.

VMs, containers and existing machines get a wheelhouse of ``labkit.wheelhouse.HOST_REQUIREMENTS`` only (no
pydantic, ruamel, Fabric, pandas ...). Here, where everything is installed, a module that pulls in a
controller-only package would work and fail only on a real host (the userspace engine once did, through the
traces it follows: profiles -> pydantic). So each host module is imported in a fresh interpreter that
refuses the controller-only packages, and, once started, the engine's trace code is imported too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from labkit.wheelhouse import HOST_MODULES, HOST_REQUIREMENTS

#: what the controller has and a host does not (pyproject's dependencies beyond HOST_REQUIREMENTS, and theirs)
CONTROLLER_ONLY = ("pydantic", "pydantic_core", "ruamel", "jinja2", "fabric", "invoke", "paramiko", "rich",
                   "cryptography", "vagrant", "pandas", "numpy", "matplotlib", "docker", "scipy", "yaml")

BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on a lab host")
        return None
sys.meta_path.insert(0, Block())
import importlib
for m in sys.argv[2].split(","):
    importlib.import_module(m)
print("ok")
"""


def _imports(modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(CONTROLLER_ONLY), ",".join(modules)],
                          capture_output=True, text=True, timeout=120)


def test_the_blocked_packages_are_not_host_requirements():
    assert not set(CONTROLLER_ONLY) & set(HOST_REQUIREMENTS)


@pytest.mark.parametrize("module", [m for m in HOST_MODULES if m.startswith("labkit")])
def test_each_host_module_imports_without_controller_packages(module):
    r = _imports([module])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_the_blocker_can_fail():
    r = _imports(["labkit.profiles"])
    assert r.returncode != 0 and "pydantic is not installed on a lab host" in r.stderr
