"""What every backend that places hosts on this machine does alike.

- the topology's wiring: which data networks a host sits on (``data_links``), the route each endpoint needs
  so that the other data network is reached through the gateway (``endpoint_route``), and the ``ip``
  commands that give a host its data addresses and that route (``address_commands``);
- management subnets: whether a subnet is free on this machine (``route_conflict``: routes in any table, and
  the management networks of other labs of any backend recorded in their lab directories) and the first free
  one in a pool (``free_subnet``), always called under ``labkit.machine.machine_lock``;
- letting the lab's namespaces pick TCP congestion control (``allow_congestion_control``, machine-wide and
  reference-counted);
- the ``HostConn`` every backend returns for a host it placed (``host_conn``).

The netns backend places hosts as namespaces, the docker backend as containers; both use these, so the two
labs have the same addresses, routes and management rules.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from labkit import machine
from labkit.inventory import HostConn
from labkit.labdir import LabDir, list_labs
from labkit.model import Host, Lab

#: the file in a lab directory that names its management subnet (read by ``route_conflict`` of other labs)
MGMT_FILE = {"netns": "netns.json", "docker": "docker.json"}


def data_links(h: Host) -> list[tuple[str, str]]:
    """(interface in the host, data network) for each data network the host sits on."""
    if h.role == "gateway":
        return [("eth1", "cpo"), ("eth2", "evse")]
    return [("eth1", "cpo" if h.role == "cpo" else "evse")]


def endpoint_route(lab: Lab, h: Host) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address] | None:
    """(destination, via) of the one route an endpoint needs: the other data network, through the gateway.
    None for the gateway (it sits on both)."""
    nets, gw = lab.spec.networks, lab.gateway
    if h.role == "cpo":
        return nets.evse, gw.addresses["cpo"]
    if h.role == "evse":
        return nets.cpo, gw.addresses["evse"]
    return None


def address_commands(lab: Lab, h: Host, ifaces: dict[str, str]) -> list[str]:
    """``ip`` subcommands (for ``ip -batch``) that put the host's data addresses on its interfaces
    (``ifaces``: data network -> interface) and add its route through the gateway."""
    nets = lab.spec.networks
    cmds = []
    for net, local in ifaces.items():
        cmds += [f"addr add {h.addresses[net]}/{getattr(nets, net).prefixlen} dev {local}", f"link set {local} up"]
    route = endpoint_route(lab, h)
    if route:
        dst, via = route
        net = "cpo" if h.role == "cpo" else "evse"
        cmds.append(f"route add {dst} via {via} dev {ifaces[net]}")
    return cmds


def route_conflict(net: ipaddress.IPv4Network, exclude_lab: str | None = None,
                   extra: Iterable[tuple[str, ipaddress.IPv4Network]] = ()) -> str | None:
    """Another route, lab management network or ``extra`` (description, network) that overlaps ``net``."""
    proc = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        for r in json.loads(proc.stdout):
            dst = r.get("dst", "")
            if not dst or dst == "default":
                continue
            try:
                other = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            except ValueError:
                continue
            if other.overlaps(net):
                return f"route {dst} ({r.get('dev', '?')})"
    for name in list_labs():
        if name == exclude_lab:
            continue
        for meta_name in MGMT_FILE.values():
            meta = LabDir(name).path / meta_name
            if not meta.exists():
                continue
            try:
                other = ipaddress.IPv4Network(json.loads(meta.read_text())["mgmt"])
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
            if other.overlaps(net):
                return f"lab {name!r} management network {other}"
    for what, other in extra:
        if other.overlaps(net):
            return what
    return None


def free_subnet(pool: ipaddress.IPv4Network, need: int, prefix: int,
                conflict: Callable[[ipaddress.IPv4Network], str | None]) -> ipaddress.IPv4Network | None:
    """The first subnet of ``pool`` with room for ``need`` hosts (a /``prefix`` unless too small) on which
    ``conflict`` finds nothing; None when the pool is full."""
    if need >= 2 ** (32 - prefix) - 2:
        prefix = 20
    for candidate in pool.subnets(new_prefix=prefix):
        if not conflict(candidate):
            return candidate
    return None


def host_conn(h: Host, *, ssh_host: str, key_file: str, known_hosts: str, labkit: str, workdir: str,
              ifaces: dict[str, str], user: str = "root", sudo: bool = False, port: int = 22) -> HostConn:
    """How the rest of labkit reaches host ``h``."""
    return HostConn(name=h.name, role=h.role, ssh_host=ssh_host, ssh_port=port, user=user, key_file=key_file,
                    known_hosts=known_hosts, sudo=sudo, addresses={k: str(v) for k, v in h.addresses.items()},
                    ifaces=dict(ifaces), labkit=labkit, workdir=workdir, index=h.index)


_CC = Path("/proc/sys/net/ipv4")


def allow_congestion_control(labdir: LabDir, name: str) -> None:
    """Let the lab's namespaces choose congestion control ``name``.

    Outside the machine's own namespace, Linux only lets a namespace pick an algorithm listed in
    ``tcp_allowed_congestion_control`` (EPERM otherwise), and some machines list only their default (BBR
    here). Add ``name`` when the kernel has it. The setting is machine-wide and shared by every lab that
    needs it (labkit.machine counts them): the last lab to go down puts the value from before back."""
    allowed_file = _CC / "tcp_allowed_congestion_control"
    try:
        if name not in (_CC / "tcp_available_congestion_control").read_text().split():
            subprocess.run(["modprobe", f"tcp_{name}"], capture_output=True, check=False)
            if name not in (_CC / "tcp_available_congestion_control").read_text().split():
                return  # the kernel lacks it: provisioning reads back what the hosts really run
        labdir.record("shared-setting", path=str(allowed_file), value=name)
        with machine.machine_lock(what="tcp_allowed_congestion_control"):
            machine.share_setting(labdir, str(allowed_file), name, lambda before: f"{before} {name}".strip())
    except OSError:
        return


def release_shared_settings(labdir: LabDir, journal: list[dict]) -> None:
    """At ``down``: this lab no longer needs the machine-wide settings its journal lists (the last lab to
    go puts each value from before back)."""
    shared = [e for e in journal if e["kind"] == "shared-setting"]
    if shared:
        with machine.machine_lock(what="putting machine-wide settings back"):
            for e in reversed(shared):
                machine.release_setting(labdir, e["path"])
