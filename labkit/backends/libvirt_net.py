"""libvirt resources of the vagrant backend: the lab's isolated networks, the management subnet chosen against
everything this machine already uses, the storage pool, and box images preloaded into it with virsh.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labkit.backends.base import Progress, no_progress
from labkit.backends.vagrant_cmd import run, vagrant_home, virsh
from labkit.errors import BackendError, LabkitError
from labkit.model import Lab

POOL = "default"
POOL_DIR = "/var/lib/libvirt/images"
#: where the management networks of libvirt labs are taken from (one free /24 each)
MGMT_POOL = ipaddress.IPv4Network("10.251.0.0/16")


def network_xml(name: str, bridge: str, net: ipaddress.IPv4Network | None) -> str:
    """An isolated network: no <forward> (nothing leaves this machine), no DNS (dnsmasq forwards no queries).

    With ``net`` (the management network) the host takes its first address and DHCP hands out the rest;
    without (the data networks) the host has no address on it at all and there is no DHCP.
    """
    lines = ["<network>", f"  <name>{name}</name>", f"  <bridge name='{bridge}' stp='off' delay='0'/>"]
    if net is not None:
        hosts = list(net.hosts())
        lines += ["  <dns enable='no'/>",
                  f"  <ip address='{hosts[0]}' netmask='{net.netmask}'>",
                  f"    <dhcp><range start='{hosts[min(9, len(hosts) - 1)]}' end='{hosts[-1]}'/></dhcp>",
                  "  </ip>"]
    lines.append("</network>")
    return "\n".join(lines) + "\n"


def libvirt_networks() -> dict[str, str]:
    """Every libvirt network (name -> its XML)."""
    cp = virsh("net-list", "--all", "--name", check=False)
    out = {}
    for name in cp.stdout.split():
        x = virsh("net-dumpxml", name, check=False)
        if x.returncode == 0:
            out[name] = x.stdout
    return out


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for xml in libvirt_networks().values():
        for addr, mask in re.findall(r"<ip[^>]*address='([\d.]+)'[^>]*(?:netmask|prefix)='([\d.]+)'", xml):
            try:
                used.append(ipaddress.IPv4Network(f"{addr}/{mask}", strict=False))
            except ValueError:
                pass
    try:
        routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"], check=False).stdout or "[]")
    except json.JSONDecodeError:
        routes = []
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    try:
        addrs = json.loads(run(["ip", "-j", "-4", "addr"], check=False).stdout or "[]")
    except json.JSONDecodeError:
        addrs = []
    for link in addrs:
        for a in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False))
    return used


def choose_mgmt_network(lab: Lab) -> ipaddress.IPv4Network:
    """The lab file's ``networks.mgmt``, else the first /24 of 10.251.0.0/16 nothing here uses."""
    if lab.spec.networks.mgmt is not None:
        return lab.spec.networks.mgmt
    used = _used_networks() + [lab.spec.networks.cpo, lab.spec.networks.evse]
    for cand in MGMT_POOL.subnets(new_prefix=24):
        if not any(cand.overlaps(u) for u in used):
            return cand
    raise BackendError(f"no free /24 left in {MGMT_POOL} for the management network: set networks.mgmt")


@contextmanager
def host_lock(name: str) -> Iterator[None]:
    """A machine-wide lock across labs (in every LABKIT_HOME): ``libvirt-networks`` is labkit.machine's main
    lock (management subnets are chosen against every backend's), ``libvirt-pool`` one of its own."""
    from labkit import machine

    with machine.machine_lock(wait=3600, what=name, name="machine" if name == "libvirt-networks" else name):
        yield


def ensure_pool() -> None:
    """libvirt's ``default`` storage pool (vagrant-libvirt would create the same)."""
    if virsh("pool-info", POOL, check=False).returncode == 0:
        if "running" not in virsh("pool-info", POOL).stdout:
            virsh("pool-start", POOL)
        return
    virsh("pool-define-as", POOL, "dir", "--target", POOL_DIR)
    virsh("pool-build", POOL, check=False)
    virsh("pool-start", POOL)
    virsh("pool-autostart", POOL, check=False)


def box_volume_name(box: str, version: str, image: Path) -> str:
    """The volume name vagrant-libvirt (0.11) gives a box image in the storage pool."""
    if not version or version == "0":
        version = f"0_{int(image.stat().st_mtime)}"
    return box.replace("/", "-VAGRANTSLASH-") + f"_vagrant_box_image_{version}_box.img"


def preload_box_volume(box: str, version: str | None, progress: Progress = no_progress) -> str | None:
    """Put a libvirt box's image into the storage pool with virsh (seconds) so vagrant-libvirt does not
    upload it through its own slow stream (minutes). Returns the volume name, or None when not applicable."""
    base = vagrant_home() / "boxes" / box.replace("/", "-VAGRANTSLASH-")
    if not base.is_dir():
        return None
    versions = sorted((p.name for p in base.iterdir() if (p / "libvirt" / "box.img").exists()),
                      key=_version_key)
    if version:
        versions = [v for v in versions if v == version]
    if not versions:
        return None
    v = versions[-1]
    image = base / v / "libvirt" / "box.img"
    meta = json.loads((base / v / "libvirt" / "metadata.json").read_text())
    if meta.get("disks"):
        return None  # box format v2: leave it to vagrant-libvirt
    name = box_volume_name(box, v, image)
    with host_lock("libvirt-pool"):
        ensure_pool()
        if virsh("vol-info", "--pool", POOL, name, check=False).returncode == 0:
            return name
        progress(f"loading box {box} {v} into libvirt pool {POOL}", 0, None)
        size_gb = int(meta.get("virtual_size", 0)) or 2
        virsh("vol-create-as", POOL, name, f"{size_gb}G", "--format", "qcow2")
        try:
            virsh("vol-upload", "--pool", POOL, name, str(image), timeout=1800)
        except LabkitError:
            virsh("vol-delete", "--pool", POOL, name, check=False)
            raise
    return name


def _version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.\-_]", v))
