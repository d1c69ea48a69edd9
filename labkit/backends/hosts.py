"""The hosts backend (start): a lab on machines that already exist, named by an Ansible inventory.

``discover`` reads the inventory (``labkit.hostsinventory``), reaches every host over SSH (host keys checked
against known_hosts), checks that labkit may act as root there (root login, or ``sudo -n``), and finds each
host's data interface and address: the one the inventory gives (``labkit_cpo_address``,
``labkit_evse_address``) or else the one address the host holds in the lab's data network; then that every
endpoint routes the other data network through the gateway (else: which way it routes, and the route to
add). It changes nothing on any host and returns the ``Inventory`` the rest of labkit works from. Any
problem is one ``ConfigError`` (exit 2) naming the inventory file, the host's line and the host.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit.errors import ConfigError, LabkitError
from labkit.hostsinventory import InventoryHost, load_lab_hosts
from labkit.inventory import HostConn, Inventory
from labkit.model import Networks
from labkit.remote import Remote

#: the data networks each role sits on
ROLE_NETS = {"cpo": ("cpo",), "gateway": ("cpo", "evse"), "evse": ("evse",)}


def _conns(lab: str, hosts: list[InventoryHost]) -> list[HostConn]:
    out, n = [], 0
    for h in hosts:
        if h.role == "evse":
            n += 1
        out.append(HostConn(name=h.name, role=h.role, ssh_host=h.ssh_host, ssh_port=h.ssh_port, user=h.user,
                            key_file=h.key_file, known_hosts=h.known_hosts, sudo=h.sudo,
                            addresses=dict(h.addresses), index=n if h.role == "evse" else 0,
                            workdir=f"/tmp/labkit-{lab}"))
    return out


def _addresses(text: str) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(interface, address/prefix) for every IPv4 address in ``ip -j -4 addr show`` output."""
    out = []
    for link in json.loads(text or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                out.append((link["ifname"], ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")))
    return out


def find_data(h: HostConn, held: list[tuple[str, ipaddress.IPv4Interface]], networks: Networks) -> str | None:
    """Fill ``h.addresses`` and ``h.ifaces`` from the addresses the host holds; a problem, or None."""
    for net in ROLE_NETS[h.role]:
        subnet = getattr(networks, net)
        given = h.addresses.get(net)
        if given is not None:
            if ipaddress.IPv4Address(given) not in subnet:
                return f"labkit_{net}_address {given} is not in the lab's {net} network {subnet}"
            found = [(dev, a) for dev, a in held if str(a.ip) == given]
            if not found:
                return f"labkit_{net}_address {given} is on none of its interfaces"
        else:
            found = [(dev, a) for dev, a in held if a.ip in subnet]
            if not found:
                return f"holds no address in the lab's {net} network {subnet} (or set labkit_{net}_address)"
            if len(found) > 1:
                listed = ", ".join(f"{a.ip} on {dev}" for dev, a in found)
                return f"holds several addresses in the {net} network {subnet} ({listed}): set labkit_{net}_address"
        dev, a = found[0]
        if a.network != subnet:
            return f"{a.ip} on {dev} is in {a.network}, not the lab's {net} network {subnet}"
        h.addresses[net], h.ifaces[net] = str(a.ip), dev
    if h.role == "gateway" and h.ifaces["cpo"] == h.ifaces["evse"]:
        return (f"a gateway needs one interface per data network, but {h.ifaces['cpo']} holds both "
                f"{h.addresses['cpo']} and {h.addresses['evse']}")
    return None


def route_problem(h: HostConn, gateway: HostConn, route: dict | None, held: list[tuple[str, ipaddress.IPv4Interface]],
                  networks: Networks) -> str | None:
    """Why endpoint ``h``'s route to the other data network (``ip -j route get`` of a peer there; None when
    the kernel has none) does not cross the gateway, and what to do; None when it does."""
    own = "cpo" if h.role == "cpo" else "evse"
    other = "evse" if own == "cpo" else "cpo"
    subnet, via, dev = getattr(networks, other), gateway.addresses[own], h.ifaces[own]
    fix = f"ip route replace {subnet} via {via} dev {dev}"
    bypass = [(d, a) for d, a in held if a.ip in subnet]
    if bypass:
        d, a = bypass[0]
        return (f"holds {a.ip} on {d} in the {other} network {subnet}: its traffic to that network would not "
                f"cross the gateway (remove that address, or use another machine)")
    if not route:
        return f"has no route to the {other} network {subnet}; add one through the gateway: {fix}"
    if route.get("gateway") != via or route.get("dev") != dev:
        how = f"via {route['gateway']}" if route.get("gateway") else "directly"
        return (f"routes the {other} network {subnet} {how} dev {route.get('dev', '?')}, not through the "
                f"gateway {via} dev {dev}; fix with: {fix}")
    return None


def discover(inventory_path: str | Path, lab: str = "lab", networks: Networks | None = None, *,
             base: Path | None = None, connect_timeout: float = 10.0, check_routes: bool = True) -> Inventory:
    """Reach every host of the inventory, check root, find its data interfaces and (``check_routes``) that
    each endpoint routes the other data network through the gateway; change nothing."""
    networks = networks or Networks()
    path = str(inventory_path)
    hosts = load_lab_hosts(inventory_path, base=base)
    lines = {h.name: h.line for h in hosts}
    conns = _conns(lab, hosts)
    inv = Inventory(lab=lab, backend="hosts", hosts=conns, details={"inventory": str(Path(path).resolve())})

    def fail(h: HostConn, problem: str) -> ConfigError:
        return ConfigError.at(f"host {h.name}", problem, file=path, line=lines.get(h.name))

    def probe(h: HostConn) -> str | None:
        try:
            remote.connect(h)
            who = remote.run(h, "id -u", check=False, timeout=connect_timeout)
            if not who.ok:
                return f"'id -u' failed over SSH (exit {who.exited})"
            if who.stdout.strip() != "0":
                if not h.sudo:
                    return f"user {h.user} is not root and ansible_become is false"
                s = remote.run(h, "sudo -n true", check=False, timeout=connect_timeout)
                if not s.ok:
                    tail = (s.stderr.strip() or s.stdout.strip()).splitlines()
                    return f"no passwordless sudo for {h.user} (sudo -n true: {tail[-1] if tail else s.exited})"
            addrs = remote.run(h, "ip -j -4 addr show", check=False, timeout=connect_timeout)
            if not addrs.ok:
                return "'ip -j -4 addr show' failed (iproute2 missing?)"
            held[h.name] = _addresses(addrs.stdout)
            return find_data(h, held[h.name], networks)
        except LabkitError as exc:
            return str(exc).split(": ", 1)[-1]

    def route(h: HostConn) -> str | None:
        peer = inv.cpo.addresses["cpo"] if h.role == "evse" else inv.evses[0].addresses["evse"]
        try:
            r = remote.run(h, f"ip -j -4 route get {shlex.quote(peer)}", check=False, timeout=connect_timeout)
            found = json.loads(r.stdout or "[]") if r.ok else []
        except (LabkitError, ValueError) as exc:
            return str(exc).split(": ", 1)[-1]
        return route_problem(h, inv.gateway, found[0] if found else None, held[h.name], networks)

    held: dict[str, list[tuple[str, ipaddress.IPv4Interface]]] = {}
    with Remote(inv, connect_timeout=connect_timeout) as remote:
        with ThreadPoolExecutor(max_workers=min(32, len(conns))) as pool:
            for h, problem in zip(conns, pool.map(probe, conns), strict=True):
                if problem:
                    raise fail(h, problem)
            if check_routes:
                ends = [h for h in conns if h.role != "gateway"]
                for h, problem in zip(ends, pool.map(route, ends), strict=True):
                    if problem:
                        raise fail(h, problem)
    return inv
