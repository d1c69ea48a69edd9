"""The hosts backend: a lab on machines that already exist, named by an Ansible inventory.

``discover`` reads the inventory (``labkit.hostsinventory``), reaches every host over SSH (host keys checked
against known_hosts; an unknown key accepted only when asked, a changed key never), checks that labkit may act
as root there (root login, or ``sudo -n``), and finds each host's data interface and address: the one the
inventory gives (``labkit_cpo_address``, ``labkit_evse_address``) or else the one address the host holds in the
lab's data network; then that every endpoint routes the other data network through the gateway (else: which way
it routes, and the route to add; with ``add_routes``, labkit adds it, journalled). Otherwise it changes nothing
on any host, and returns the ``Inventory`` the rest of labkit works from. Any problem is one ``ConfigError``
(exit 2) naming the inventory file, the host's line and the host.

``HostsBackend`` (``labkit up -i INVENTORY``) places nothing: ``up`` discovers, then makes what labkit needs on
each machine, every change journalled first (``labkit.hostchanges``): a working directory ``WORKDIR`` (made with
``mkdir``, so a machine another lab holds is refused: the directory is the machine's claim), the gateway's
forwarding and the endpoints' TCP settings (the values before are kept). Provisioning then installs labkit from
the wheelhouse inside that directory. ``down`` clears the shaping, stops the process groups labkit started (by
the pid files in the directory, each checked against its process's start time), and undoes the journal, newest
first: the machines are as they were.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import paramiko

from labkit.backends.base import HostState
from labkit.errors import BackendError, ConfigError, LabkitError
from labkit.hostchanges import MARKER, HostChanges
from labkit.hostsinventory import InventoryHost, load_lab_hosts
from labkit.inventory import HostConn, Inventory
from labkit.labdir import LabDir
from labkit.model import Networks
from labkit.remote import Remote
from labkit.sshkeys import offered_host_key

#: labkit's directory on an existing machine: pid files, logs, the bench's files and labkit's venv. One name
#: for every lab, made with ``mkdir``: a machine in one lab is refused by another until ``down``.
WORKDIR = "/tmp/labkit-hosts"
#: where the wheelhouse installs labkit (``wheelhouse.install_host`` uses the venv's parent as its root)
LABKIT = f"{WORKDIR}/labkit/venv/bin/labkit"
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
                            workdir=WORKDIR))
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
            key = offered_host_key(h.ssh_host, h.ssh_port, timeout)
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
                if add_routes is not None:  # what `down` needs to reach the hosts, before any route changes
                    add_routes.record("host-conns", hosts=[asdict(h) for h in conns])
                ends = [h for h in conns if h.role != "gateway"]
                for h, problem in zip(ends, pool.map(fixed, ends), strict=True):
                    if problem:
                        raise fail(h, problem[0])
    return inv


#: kernel-chosen root qdiscs have handle 0:; anything else on a gateway's data interface is someone's shaping,
#: which labkit's would replace and its ``clear`` would delete
_DEFAULT_HANDLE = "0:"

#: stop the process groups whose pid files are in the directory (``remote.start`` writes them just before the
#: command starts, from the command's own shell): only a process that started within 5 s of its pid file was
#: started by labkit (a pid reused since is someone else's); TERM, then KILL after 5 s
_STOP = r"""wd=$1; token=$2
[ "$(cat -- "$wd/.labkit-made" 2>/dev/null)" = "$token" ] || exit 0
btime=$(awk '/^btime/ {print $2}' /proc/stat); hz=$(getconf CLK_TCK)
pids=
for f in "$wd"/*.pid; do
  [ -f "$f" ] || continue
  pid=$(head -c 32 -- "$f"); case $pid in ''|*[!0-9]*) continue;; esac
  [ -r "/proc/$pid/stat" ] || continue
  ticks=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $20}')
  d=$(( btime + ticks / hz - $(stat -c %Y -- "$f") )); [ "${d#-}" -le 5 ] || continue
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; pids="$pids $pid"
done
for i in $(seq 50); do
  alive=; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break; sleep 0.1
done
for p in $pids; do kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
exit 0"""


class HostsBackend:
    """Existing machines named by an Ansible inventory (``labkit up -i``); see the module docstring."""

    name = "hosts"

    def available(self) -> tuple[bool, str]:
        return False, "the hosts backend needs an inventory (labkit up -i INVENTORY)"

    def preflight(self, lab: Any, labdir: LabDir) -> None:
        # the inventory as a file: syntax, groups, roles, variables (one line, exit 2); no host is reached yet
        hosts = load_lab_hosts(lab.spec.inventory)
        n = sum(h.role == "evse" for h in hosts)
        if "evse" in lab.spec.model_fields_set and lab.spec.evse != n:
            raise ConfigError(f"--evse: the inventory {lab.spec.inventory} has {n} evse hosts, not {lab.spec.evse} "
                              "(leave --evse out: the inventory says)")

    def up(self, lab: Any, labdir: LabDir, progress: Any = None) -> Inventory:
        from labkit import provision

        progress = progress or (lambda *a, **k: None)
        spec = lab.spec
        labdir.record("backend", name=self.name, lab=lab.name, inventory=str(Path(spec.inventory).resolve()))
        progress("reaching the machines over SSH", 0, None)
        inv = discover(spec.inventory, lab.name, spec.networks,
                       accept_new_keys=labdir.path / "known_hosts" if spec.accept_new_host_keys else None,
                       add_routes=labdir if spec.routes else None)
        for h in inv.hosts:
            h.workdir, h.labkit = WORKDIR, LABKIT
        labdir.record("host-conns", hosts=[asdict(h) for h in inv.hosts])
        inv.details.update(install="wheelhouse", workdir=WORKDIR)
        path = str(spec.inventory)
        lines = {h.name: h.line for h in load_lab_hosts(path)}
        with Remote(inv) as remote:
            changes = HostChanges(labdir, remote)
            gw = inv.gateway
            for net, dev in gw.ifaces.items():
                shown = remote.run(gw, f"tc -j qdisc show dev {shlex.quote(dev)} root", sudo=True).stdout
                found = json.loads(shown or "[]")
                theirs = [q for q in found if q.get("handle") != _DEFAULT_HANDLE]
                if theirs:
                    raise ConfigError.at(f"host {gw.name}", f"{dev} (the {net} side) has a qdisc of its own "
                                         f"({theirs[0].get('kind')} {theirs[0].get('handle')}), which labkit's "
                                         f"shaping would replace; remove it first (tc qdisc del dev {dev} root)",
                                         file=path, line=lines.get(gw.name))

            def prepare(h: HostConn) -> None:
                changes.make_dir(h, WORKDIR)
                if h.role == "gateway":
                    changes.set_sysctl(h, "net.ipv4.ip_forward", "1")
                else:
                    for key, value in {**provision.TCP_MEM, **provision.TCP_CC}.items():
                        changes.set_sysctl(h, key, value)

            done = 0
            with ThreadPoolExecutor(max_workers=min(32, len(inv.hosts))) as pool:
                futures = {h.name: pool.submit(prepare, h) for h in inv.hosts}
                for h in inv.hosts:
                    try:
                        futures[h.name].result()
                    except LabkitError as exc:
                        if "File exists" in str(exc):
                            raise ConfigError.at(f"host {h.name}", f"{WORKDIR} exists: the machine is in another "
                                                 "lab (labkit down there first), or a lab's down did not finish",
                                                 file=path, line=lines.get(h.name)) from None
                        raise
                    done += 1
                    progress("preparing the machines", done, len(inv.hosts))
        return inv

    def status(self, lab: Any, labdir: LabDir) -> list[HostState]:
        # whether each machine answers is lifecycle.status's SSH probe; labkit does not run these machines
        return [HostState(h.name, h.role, True, "existing machine") for h in lab.hosts]

    def down(self, labdir: LabDir, progress: Any = None) -> None:
        """Clear the shaping, stop labkit's processes and undo every journalled change, on every host."""
        progress = progress or (lambda *a, **k: None)
        journal = labdir.journal()
        conns = [e for e in journal if e["kind"] == "host-conns"]
        if not conns:
            return  # no machine was changed
        if labdir.inventory_file.exists():
            inv = Inventory.load(labdir.inventory_file)
        else:
            inv = Inventory(lab=labdir.name, backend=self.name, hosts=[HostConn(**h) for h in conns[-1]["hosts"]])
        problems: list[str] = []
        dirs = {e["host"]: e for e in journal if e["kind"] == "host-dir"}
        with Remote(inv) as remote:
            if _ours(remote, inv.gateway, dirs.get(inv.gateway.name)):  # this lab prepared the gateway
                progress("clearing the shaping", 0, None)
                from labkit import shaping

                try:
                    shaping.clear(remote, inv, labdir=labdir)
                except LabkitError as exc:
                    problems.append(f"{inv.gateway.name}: {exc}")

            def stop(h: HostConn) -> str | None:
                e = dirs.get(h.name)
                if e is None:
                    return None
                try:
                    remote.run(h, f"sh -c {shlex.quote(_STOP)} stop {shlex.quote(e['path'])} "
                                  f"{shlex.quote(e['token'])}", sudo=True, timeout=30)
                except LabkitError as exc:
                    return f"{h.name}: stopping labkit's processes: {exc}"
                return None

            progress("stopping labkit's processes", 0, None)
            with ThreadPoolExecutor(max_workers=min(32, len(inv.hosts))) as pool:
                problems += [p for p in pool.map(stop, inv.hosts) if p]
            progress("putting the machines back", 0, None)
            problems += HostChanges(labdir, remote).undo()
        if problems:
            raise BackendError(f"could not put every machine back: {problems[0]}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                               + f"; the journal stays: labkit down --lab {labdir.name} again")


def _ours(remote: Remote, h: HostConn, made: dict | None) -> bool:
    """Whether the directory of ``h`` is this lab's (its ``host-dir`` journal entry's token is in it): a lab
    refused because another holds the machine must not touch what that other lab set up."""
    if made is None:
        return False
    try:
        got = remote.run(h, f"cat -- {shlex.quote(made['path'] + '/' + MARKER)}", check=False, timeout=30)
    except LabkitError:
        return True  # unreachable: try, and let the clear say what failed
    return got.ok and got.stdout.strip() == made["token"]
