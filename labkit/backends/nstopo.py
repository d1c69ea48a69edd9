"""A lab's topology in network namespaces, as ``ip`` commands: the one builder of the netns backend, the
shaping tests' data path (tests/shaping/shaping_topo.py) and the benchmarks' (benchmarks/sim_netns.py).

The layout (docs/architecture.md, "netns backend"): one namespace per host and a switch namespace holding a
bridge per network (``cpo``, ``evse``, and ``mgmt`` when the topology has a management network). Each host
has one veth per data network into that network's bridge (``eth1``; the gateway ``eth1`` CPO side, ``eth2``
EVSE side) and, with a management network, ``mgmt0`` into the ``mgmt`` bridge, whose ``uplink`` is the peer
of one veth in this machine's own namespace (the root link). Addresses and routes are the lab model's
(``labkit.backends.common``): the other data network through the gateway, no default route.

What is pure here (a ``Topology`` in, command strings out, in the style of Mininet's small functions, and
pinned by tests/test_nstopo.py like a dry run):

- ``create_commands``: the namespaces, the root link and its address (names and a route that are
  machine-wide: the netns backend runs this under the machine lock, after journalling each name);
- ``veth_commands``, ``switch_commands``, ``host_commands``: the veths, the switch's bridges and ports, and
  each host's addresses and route;
- ``plan``: all of them in order, one ``Batch`` (input for ``ip [-n NS] -batch -``) per step and namespace;
- ``SWITCH_SYSCTLS`` and ``host_sysctls``: what each namespace sets in /proc/sys.

``build`` runs a whole plan and the sysctls (the tests' and benchmarks' topologies, which have no sshd) and
``destroy`` removes such a topology; ``run_batches``, ``run_ip`` and ``set_sysctls`` are the parts of
``build``, which the netns backend runs itself between its journal, its lock and the sshd it starts in each
host (which also sets the host's sysctls); its ``down`` removes what its journal lists.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from labkit.backends import common
from labkit.errors import BackendError
from labkit.model import Host, Lab

#: the bridges of the data networks, in the switch namespace (and ``mgmt`` with a management network)
DATA_NETWORKS = ("cpo", "evse")

#: the switch namespace: no IPv6 (nothing there has an address), and bridged frames do not go through the
#: switch namespace's iptables (br_netfilter, loaded by Docker for one, would otherwise pass them there)
SWITCH_SYSCTLS = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1",
                  "net/bridge/bridge-nf-call-iptables": "0", "net/bridge/bridge-nf-call-ip6tables": "0"}
#: keys of ``SWITCH_SYSCTLS`` that exist only while br_netfilter is loaded
SWITCH_OPTIONAL = frozenset({"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"})


def ns_name(lab: str, host: str) -> str:
    """The namespace of a lab's host."""
    return f"lk-{lab}-{host}"


def switch_ns(lab: str) -> str:
    """The switch namespace of a lab."""
    return f"lk-{lab}-sw"


def root_link(lab: str) -> str:
    """The lab's veth in this machine's own namespace (into the management bridge)."""
    return f"lk{lab}"[:15]


@dataclass(frozen=True)
class Mgmt:
    """A management network: its subnet, each host's address on it and the root link (which gets ``.1``)."""

    network: ipaddress.IPv4Network
    addresses: Mapping[str, ipaddress.IPv4Address]
    root_link: str

    @classmethod
    def for_lab(cls, lab: Lab, network: ipaddress.IPv4Network, root_link: str) -> Mgmt:
        """Hosts from ``.2`` in the lab's order (cpo, gw, evse1, ...)."""
        return cls(network, {h.name: network[2 + i] for i, h in enumerate(lab.hosts)}, root_link)


@dataclass(frozen=True)
class Topology:
    """The namespaces that place a lab: its hosts and networks (``lab``), the name of each host's namespace
    (``namespaces``) and of the switch, an optional management network, and the host interfaces
    (``ifaces``: host name -> {data network: interface}; hosts not named there use ``common.data_links``)."""

    lab: Lab
    switch: str
    namespaces: Mapping[str, str]
    mgmt: Mgmt | None = None
    ifaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def for_lab(cls, lab: Lab, mgmt: Mgmt | None = None) -> Topology:
        """The netns backend's names: ``lk-<lab>-<host>`` and ``lk-<lab>-sw``."""
        return cls(lab, switch_ns(lab.name), {h.name: ns_name(lab.name, h.name) for h in lab.hosts}, mgmt)

    @classmethod
    def prefixed(cls, lab: Lab, prefix: str, ifaces: Mapping[str, Mapping[str, str]] | None = None,
                 hosts: Mapping[str, str] | None = None) -> Topology:
        """Names for a topology without the lab machinery (tests, benchmarks): ``<prefix>-<host>`` (or
        ``<prefix>-<hosts[host]>``) and ``<prefix>-sw``; no management network."""
        hosts = hosts or {}
        return cls(lab, f"{prefix}-sw", {h.name: f"{prefix}-{hosts.get(h.name, h.name)}" for h in lab.hosts},
                   None, dict(ifaces or {}))

    def host_ifaces(self, h: Host) -> dict[str, str]:
        """{data network: interface} of host ``h``, in ``common.data_links`` order (the CPO side first)."""
        given = self.ifaces.get(h.name, {})
        return {net: given.get(net, local) for local, net in common.data_links(h)}

    @property
    def all_namespaces(self) -> list[str]:
        """The switch first, then the hosts in the lab's order."""
        return [self.switch] + [self.namespaces[h.name] for h in self.lab.hosts]


@dataclass(frozen=True)
class Batch:
    """Commands for ``ip -batch -`` in namespace ``ns`` (None: this machine's own)."""

    ns: str | None
    commands: tuple[str, ...]

    @property
    def args(self) -> list[str]:
        return (["-n", self.ns] if self.ns else []) + ["-batch", "-"]

    @property
    def input(self) -> str:
        return "\n".join(self.commands) + "\n"


def _port(net: str, host: str) -> str:
    """A host's port on a bridge, in the switch namespace: ``c-cpo``, ``e-evse1``, ``m-gw``."""
    return f"{net[0]}-{host}"


def create_commands(topo: Topology) -> list[str]:
    """Root namespace: every namespace, and with a management network the root link (its peer ``uplink`` in
    the switch) and the root link's address, hence the route to the management network."""
    cmds = [f"netns add {n}" for n in topo.all_namespaces]
    if topo.mgmt:
        m = topo.mgmt
        cmds += [f"link add name {m.root_link} type veth peer name uplink netns {topo.switch}",
                 f"addr add {m.network[1]}/{m.network.prefixlen} dev {m.root_link}"]
    return cmds


def veth_commands(topo: Topology) -> list[str]:
    """Root namespace: each host's veths, created straight in the switch and in the host (so no name is ever
    taken in this machine's own namespace), then the root link up."""
    cmds = []
    sw = topo.switch
    for h in topo.lab.hosts:
        ns = topo.namespaces[h.name]
        if topo.mgmt:
            cmds.append(f"link add name {_port('mgmt', h.name)} netns {sw} type veth peer name mgmt0 netns {ns}")
        for net, local in topo.host_ifaces(h).items():
            cmds.append(f"link add name {_port(net, h.name)} netns {sw} type veth peer name {local} netns {ns}")
    if topo.mgmt:
        cmds.append(f"link set {topo.mgmt.root_link} up")
    return cmds


def switch_commands(topo: Topology) -> list[str]:
    """Switch namespace: a bridge per network, every host's port on its bridge."""
    bridges = DATA_NETWORKS + (("mgmt",) if topo.mgmt else ())
    cmds = []
    for bridge in bridges:
        cmds += [f"link add {bridge} type bridge forward_delay 0", f"link set {bridge} up"]
    if topo.mgmt:
        cmds += ["link set dev uplink master mgmt", "link set dev uplink up"]
    cmds.append("link set lo up")
    for h in topo.lab.hosts:
        nets = (["mgmt"] if topo.mgmt else []) + list(topo.host_ifaces(h))
        for net in nets:
            cmds += [f"link set {_port(net, h.name)} master {net}", f"link set {_port(net, h.name)} up"]
    return cmds


def host_commands(topo: Topology, h: Host) -> list[str]:
    """Host ``h``'s namespace: loopback, its management address, its data addresses and its route."""
    cmds = ["link set lo up"]
    if topo.mgmt:
        m = topo.mgmt
        cmds += [f"addr add {m.addresses[h.name]}/{m.network.prefixlen} dev mgmt0", "link set mgmt0 up"]
    return cmds + common.address_commands(topo.lab, h, topo.host_ifaces(h))


def plan(topo: Topology) -> list[Batch]:
    """The whole topology, one batch per step and namespace, in order: ``create_commands`` and
    ``veth_commands`` (this machine's namespace), ``switch_commands``, then ``host_commands`` of each host."""
    return ([Batch(None, tuple(create_commands(topo))), Batch(None, tuple(veth_commands(topo))),
             Batch(topo.switch, tuple(switch_commands(topo)))]
            + [Batch(topo.namespaces[h.name], tuple(host_commands(topo, h))) for h in topo.lab.hosts])


def host_sysctls(h: Host) -> dict[str, str]:
    """/proc/sys values of a host's namespace: no IPv6; only the gateway forwards."""
    return {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1",
            "net/ipv4/ip_forward": "1" if h.role == "gateway" else "0"}


def sysctl_script(values: Mapping[str, str], optional: Iterable[str] = ()) -> str:
    """``sh -c`` text that writes ``values`` (/proc/sys paths -> value); a key in ``optional`` may be missing."""
    optional = set(optional)
    parts = []
    for key, value in values.items():
        suffix = " 2>/dev/null || true" if key in optional else ""
        parts.append(f"echo {value} > /proc/sys/{key}{suffix}")
    return "; ".join(parts)


# -- running it ----------------------------------------------------------------------------------------------

PreExec = Callable[[], None] | None


def run_ip(args: list[str], *, input: str | None = None, check: bool = True,
           preexec_fn: PreExec = None) -> subprocess.CompletedProcess:
    """``ip ARGS``; a failure is a one-line BackendError (``ip <first args>: <ip's last line>``)."""
    proc = subprocess.run(["ip", *args], input=input, capture_output=True, text=True, preexec_fn=preexec_fn)
    if check and proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise BackendError(f"ip {' '.join(args[:6])}: {last}")
    return proc


def run_batches(batches: Iterable[Batch], ip: Callable[..., subprocess.CompletedProcess] = run_ip) -> None:
    """Each batch through ``ip(args, input=...)`` (``run_ip`` unless given), in order."""
    for b in batches:
        ip(b.args, input=b.input)


def set_sysctls(ns: str, values: Mapping[str, str], optional: Iterable[str] = (), *,
                preexec_fn: PreExec = None) -> None:
    """Write ``values`` in namespace ``ns`` (one process); BackendError when a required one fails."""
    proc = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", sysctl_script(values, optional)],
                          capture_output=True, text=True, preexec_fn=preexec_fn)
    if proc.returncode != 0:
        raise BackendError(f"{ns}: sysctl failed: {proc.stderr.strip()}")


def build(topo: Topology, *, preexec_fn: PreExec = None) -> None:
    """Create the whole topology and set every namespace's sysctls (for a topology whose hosts run no sshd,
    which would set theirs). On failure some of it may exist: ``destroy`` removes it."""
    run_batches(plan(topo), lambda args, input: run_ip(args, input=input, preexec_fn=preexec_fn))
    set_sysctls(topo.switch, SWITCH_SYSCTLS, SWITCH_OPTIONAL, preexec_fn=preexec_fn)
    for h in topo.lab.hosts:
        set_sysctls(topo.namespaces[h.name], host_sysctls(h), preexec_fn=preexec_fn)


def destroy(topo: Topology) -> None:
    """Kill every process in the topology's namespaces and delete them (and the root link), whatever exists.
    For tests and benchmarks: the netns backend removes what its journal lists instead."""
    for ns in topo.all_namespaces:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    if topo.mgmt:
        run_ip(["link", "del", topo.mgmt.root_link], check=False)
    for ns in reversed(topo.all_namespaces):
        run_ip(["netns", "del", ns], check=False)
