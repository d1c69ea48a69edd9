"""The locally built test box: a small Debian box for the VM end-to-end test (``labkit box build``).

``build_test_box`` debootstraps it (``provisioning/testbox/build.sh``), keyed by a hash of the recipe and cached
in ``BOX_CACHE``, adds it to Vagrant and loads it into libvirt's storage pool. ``default_mirror`` is the Debian
mirror apt already uses on this machine.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labkit.backends.base import Progress, no_progress
from labkit.backends.libvirt_net import preload_box_volume
from labkit.backends.vagrant_cmd import LIBVIRT_URI, box_list, libvirt_reachable, run, vagrant_bin, vagrant_env
from labkit.errors import BackendError
from labkit.resources import resource

BOX_CACHE = Path(os.environ.get("LABKIT_BOX_CACHE", "/var/cache/labkit"))
TEST_BOX_PREFIX = "labkit/test-"


def insecure_public_key() -> Path:
    """Vagrant's well-known insecure public key, as shipped with the installed Vagrant."""
    for pattern in ("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
                    "/usr/lib/ruby/vendor_ruby/vagrant*/keys/vagrant.pub",
                    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
                    "/opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    raise BackendError("cannot find Vagrant's insecure public key (keys/vagrant.pub in the Vagrant installation)")


def default_mirror() -> str:
    """The Debian mirror apt already uses here, else deb.debian.org."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M) or \
            re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text, re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


@dataclass
class TestBox:
    name: str
    version: str
    dir: Path
    built: bool  # False: taken from the cache
    seconds: dict[str, float]

    def lab_yaml(self, driver: str = "qemu") -> str:
        return (f"# the local test box (labkit box build): direct kernel boot, domain type {driver}\n"
                f"backend: vagrant\nvagrant:\n  provider: libvirt\n  box: {self.name}\n"
                f"  box_version: '{self.version}'\n  libvirt:\n    driver: {driver}\n"
                f"  memory: {{cpo: 512, gateway: 384, evse: 384}}\n")


def test_box_recipe(suite: str) -> tuple[str, str]:
    """(recipe key, box version) of the test box: a hash of the build script, the suite and the key."""
    h = hashlib.sha256()
    h.update(resource("provisioning/testbox/build.sh").read_bytes())
    h.update(suite.encode())
    h.update(insecure_public_key().read_bytes())
    key = h.hexdigest()
    return key, f"1.0.{int(key[:8], 16)}"


def build_test_box(suite: str = "bookworm", mirror: str | None = None, *, force: bool = False,
                   progress: Progress = no_progress, log: Callable[[str], None] | None = None) -> TestBox:
    """Build (or take from the cache) the Debian test box, add it to Vagrant and load it into libvirt's pool."""
    if os.geteuid() != 0:
        raise BackendError("labkit box build needs root (debootstrap, chroot)")
    for tool in ("debootstrap", "mkfs.ext4", "qemu-img", "vagrant"):
        if not shutil.which(tool):
            raise BackendError(f"labkit box build needs {tool} (Debian: apt install debootstrap e2fsprogs "
                               "qemu-utils vagrant vagrant-libvirt)")
    key, version = test_box_recipe(suite)
    name = TEST_BOX_PREFIX + suite
    out = BOX_CACHE / "boxes" / f"{suite}-{key[:12]}"
    box_file = out / "labkit-test.box"
    seconds: dict[str, float] = {}
    built = False
    if force or not (out / "catalog.json").exists():
        t0 = time.monotonic()
        progress(f"building {name} {version} in {out} (debootstrap {suite}, a few minutes)", 0, None)
        tmp = out.with_name(out.name + ".tmp")
        cmd = ["bash", str(resource("provisioning/testbox/build.sh")), str(tmp), suite, mirror or default_mirror(),
               str(insecure_public_key()), str(BOX_CACHE / "debs"), str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip())
            if log:
                log(line.rstrip())
            progress(line.rstrip(), 0, None)
        if proc.wait() != 0:
            raise BackendError(f"building the test box failed: {lines[-1] if lines else 'no output'}")
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
        digest = hashlib.sha256(box_file.read_bytes()).hexdigest()
        catalog = {"name": name, "description": f"labkit test box: Debian {suite}, direct kernel boot",
                   "versions": [{"version": version, "providers": [{
                       "name": "libvirt", "url": box_file.as_uri(), "checksum_type": "sha256",
                       "checksum": digest}]}]}
        (out / "catalog.json").write_text(json.dumps(catalog, indent=2))
        (out / "recipe.json").write_text(json.dumps({"key": key, "suite": suite, "version": version}, indent=2))
        seconds["build"] = round(time.monotonic() - t0, 1)
        built = True
    have = [b for b in box_list() if b[0] == name and b[1] == "libvirt" and b[2] == version]
    if not have:
        t0 = time.monotonic()
        progress(f"vagrant box add {name} {version}", 0, None)
        run([vagrant_bin() or "vagrant", "box", "add", "--force", (out / "catalog.json").as_uri()],
            timeout=600, env=vagrant_env())
        seconds["box_add"] = round(time.monotonic() - t0, 1)
    ok, why = libvirt_reachable()
    if ok:
        t0 = time.monotonic()
        preload_box_volume(name, version, progress)
        seconds["pool_load"] = round(time.monotonic() - t0, 1)
    return TestBox(name=name, version=version, dir=out, built=built, seconds=seconds)


def missing_for_test_box() -> str | None:
    """Why a VM lab on the local test box cannot run here, or None: root, the tools, libvirtd answering, the
    vagrant-libvirt plugin (what the VM tests and benchmarks/backends_compare.py check before they start)."""
    if os.geteuid() != 0:
        return "needs root (libvirt's system instance, debootstrap)"
    for tool in ("vagrant", "virsh", "debootstrap", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"needs {tool} (bash .ci/vagrant.sh installs it)"
    if subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "uri"], capture_output=True).returncode != 0:
        return "libvirtd is not running (libvirtd -d)"
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True).stdout
    if "vagrant-libvirt" not in plugins:
        return "needs the vagrant-libvirt plugin"
    return None
