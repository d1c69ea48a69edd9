"""The hosts backend (start): a lab on machines that already exist, named by an Ansible inventory.

``discover`` reads the inventory (``labkit.hostsinventory``), reaches every host over SSH (host keys checked
against known_hosts; an unknown key accepted only when asked, a changed key never), checks that labkit may act
as root there (root login, or ``sudo -n``), and finds each host's data interface and address: the one the
inventory gives (``labkit_cpo_address``, ``labkit_evse_address``) or else the one address the host holds in the
lab's data network; then that every endpoint routes the other data network through the gateway (else: which way
it routes, and the route to add; with ``add_routes``, labkit adds it, journalled). Otherwise it changes nothing
on any host, and returns the ``Inventory`` the rest of labkit works from. Any problem is one ``ConfigError``
(exit 2) naming the inventory file, the host's line and the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from labkit.errors import ConfigError, LabkitError
from labkit.hostchanges import HostChanges
from labkit.hostsinventory import InventoryHost, load_lab_hosts
from labkit.inventory import HostConn, Inventory
from labkit.labdir import LabDir
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
                  networks: Networks) -> tuple[str, bool] | None:
    """Why endpoint ``h``'s route to the other data network (``ip -j route get`` of a peer there; None when
    the kernel has none) does not cross the gateway, and what to do, and whether a route fixes it (see
    ``route_fix``); None when it does."""
    own = "cpo" if h.role == "cpo" else "evse"
    other = "evse" if own == "cpo" else "cpo"
    subnet, via, dev = getattr(networks, other), gateway.addresses[own], h.ifaces[own]
    fix = f"ip route replace {subnet} via {via} dev {dev}"
    bypass = [(d, a) for d, a in held if a.ip in subnet]
    if bypass:
        d, a = bypass[0]
        return (f"holds {a.ip} on {d} in the {other} network {subnet}: its traffic to that network would not "
                f"cross the gateway (remove that address, or use another machine)"), False
    if not route:
        return f"has no route to the {other} network {subnet}; add one through the gateway: {fix}", True
    if route.get("gateway") != via or route.get("dev") != dev:
        how = f"via {route['gateway']}" if route.get("gateway") else "directly"
        return (f"routes the {other} network {subnet} {how} dev {route.get('dev', '?')}, not through the "
                f"gateway {via} dev {dev}; fix with: {fix}"), True
    return None


def route_fix(h: HostConn, gateway: HostConn, networks: Networks) -> tuple[str, str, str]:
    """(destination, via, dev) of the route endpoint ``h`` needs: the other data network through the gateway."""
    own = "cpo" if h.role == "cpo" else "evse"
    other = "evse" if own == "cpo" else "cpo"
    return str(getattr(networks, other)), gateway.addresses[own], h.ifaces[own]


def _key_name(h: HostConn) -> str:
    return h.ssh_host if h.ssh_port == 22 else f"[{h.ssh_host}]:{h.ssh_port}"


def offered_key(h: HostConn, timeout: float) -> paramiko.PKey:
    """The host key ``h``'s sshd offers (a key exchange only: no authentication, no command)."""
    sock = socket.create_connection((h.ssh_host, h.ssh_port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()
        sock.close()


def learn_keys(conns: list[HostConn], out: Path, timeout: float) -> dict[str, str | None]:
    """Accept the host keys of hosts that none of their known_hosts files know (as ``ssh -o
    StrictHostKeyChecking=accept-new``), never a key that differs from a known one. Writes ``out`` (0600):
    the known_hosts lines the hosts' files hold, then the keys learnt; every host then checks against ``out``.
    Returns host -> problem (None when its key is known or was learnt)."""
    files = {c.known_hosts for c in conns if c.known_hosts}
    known = paramiko.HostKeys()
    lines: list[str] = []
    for f in sorted(files):
        try:
            known.load(f)
            lines += [ln for ln in Path(f).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
            raise ConfigError(f"{f}: cannot read known_hosts: {exc}") from None

    def one(h: HostConn) -> tuple[str | None, str | None]:
        try:
            key = offered_key(h, timeout)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            return f"cannot reach {h.ssh_host}:{h.ssh_port} to read its host key: {exc}", None
        entries = known.lookup(_key_name(h))
        if entries:
            if entries.get(key.get_name()) == key:
                return None, None
            return (f"host key changed: {h.ssh_host}:{h.ssh_port} offers a {key.get_name()} key "
                    f"(SHA256 {key.fingerprint.split(':', 1)[-1]}) that known_hosts does not hold for it; "
                    "not accepting it"), None
        return None, f"{_key_name(h)} {key.get_name()} {key.get_base64()}"

    with ThreadPoolExecutor(max_workers=min(32, len(conns))) as pool:
        results = dict(zip([c.name for c in conns], pool.map(one, conns), strict=True))
    new = [line for _, line in results.values() if line]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{ln}\n" for ln in lines + new))
    tmp.replace(out)
    for c in conns:
        c.known_hosts = str(out)
    return {name: problem for name, (problem, _) in results.items()}


def discover(inventory_path: str | Path, lab: str = "lab", networks: Networks | None = None, *,
             base: Path | None = None, connect_timeout: float = 10.0, check_routes: bool = True,
             accept_new_keys: Path | None = None, add_routes: LabDir | None = None) -> Inventory:
    """Reach every host of the inventory, check root, find its data interfaces and (``check_routes``) that
    each endpoint routes the other data network through the gateway; change nothing on any host, except
    with ``add_routes`` (``--routes``): then the route an endpoint lacks or takes elsewhere is added through
    the gateway, journalled in that lab directory first (``labkit.hostchanges``; undone at ``down``).

    ``accept_new_keys``: a file (in the lab directory) where the known keys and those of hosts no
    known_hosts file knows are written and then checked against; without it an unknown key is refused."""
    networks = networks or Networks()
    path = str(inventory_path)
    hosts = load_lab_hosts(inventory_path, base=base)
    lines = {h.name: h.line for h in hosts}
    conns = _conns(lab, hosts)
    inv = Inventory(lab=lab, backend="hosts", hosts=conns, details={"inventory": str(Path(path).resolve())})

    def fail(h: HostConn, problem: str) -> ConfigError:
        return ConfigError.at(f"host {h.name}", problem, file=path, line=lines.get(h.name))

    if accept_new_keys is not None:
        problems = learn_keys(conns, Path(accept_new_keys), connect_timeout)
        for h in conns:
            if problems[h.name]:
                raise fail(h, problems[h.name])

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
            try:
                held[h.name] = _addresses(addrs.stdout)
            except (ValueError, KeyError, TypeError) as exc:
                return f"cannot read 'ip -j -4 addr show' output ({exc})"
            return find_data(h, held[h.name], networks)
        except LabkitError as exc:
            return str(exc).split(": ", 1)[-1]

    def route(h: HostConn) -> tuple[str, bool] | None:
        peer = inv.cpo.addresses["cpo"] if h.role == "evse" else inv.evses[0].addresses["evse"]
        try:
            r = remote.run(h, f"ip -j -4 route get {shlex.quote(peer)}", check=False, timeout=connect_timeout)
            found = json.loads(r.stdout or "[]") if r.ok else []
        except (LabkitError, ValueError) as exc:
            return str(exc).split(": ", 1)[-1], False
        return route_problem(h, inv.gateway, found[0] if found else None, held[h.name], networks)

    def fixed(h: HostConn) -> tuple[str, bool] | None:
        """Check ``h``'s route; with ``add_routes``, add the one it lacks (journalled) and check again."""
        problem = route(h)
        if problem and problem[1] and add_routes is not None:
            HostChanges(add_routes, remote).route(h, *route_fix(h, inv.gateway, networks))
            problem = route(h)
        return problem

    held: dict[str, list[tuple[str, ipaddress.IPv4Interface]]] = {}
    with Remote(inv, connect_timeout=connect_timeout) as remote:
        with ThreadPoolExecutor(max_workers=min(32, len(conns))) as pool:
            for h, problem in zip(conns, pool.map(probe, conns), strict=True):
                if problem:
                    raise fail(h, problem)
            if check_routes:
                ends = [h for h in conns if h.role != "gateway"]
                for h, problem in zip(ends, pool.map(fixed, ends), strict=True):
                    if problem:
                        raise fail(h, problem[0])
    return inv
