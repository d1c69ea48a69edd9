"""Independent "machines" for the hosts backend's tests, built without labkit's backend code.

Each machine is a network namespace ``lkh<tok>-<host>`` running its own sshd (in its own UTS namespace, so
``hostname`` answers the machine's name, and mount namespace with a private /tmp) on a management address in a
free /24 of 10.236.0.0/16, reached from this machine only through a bridge the fixture makes (one veth per
machine). sshd lets in two non-root users made with useradd, with the fixture's key: one with passwordless sudo
(a file in /etc/sudoers.d), one without; host keys go into a known_hosts file. Data networks: the CPO and the
gateway on one bridge, the gateway and the EVSE machines on another (both bridges in a switch namespace); the
gateway forwards, the endpoints route the other data network through it and have no default route.

Everything created is first listed in ``self._undo``; ``teardown`` undoes it in reverse (sshd by pid, the
processes left in the namespaces, namespaces, links, users, sudoers file, files), each step on its own.
``sweep_stale`` removes what a killed fixture left (its owner file names a dead process). Subnets are chosen
under the lock file /run/lkh-fixture.lock, which stays.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MGMT_POOL = ipaddress.IPv4Network("10.236.0.0/16")
CPO_NET = ipaddress.IPv4Network("192.168.10.0/24")
EVSE_NET = ipaddress.IPv4Network("192.168.20.0/24")
LOCK = Path("/run/lkh-fixture.lock")
CC_AVAILABLE = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")


def sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if ns:
        argv = ("ip", "netns", "exec", ns, *argv)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def ip_batch(cmds: list[str], ns: str | None = None) -> None:
    argv = ["ip", "-batch", "-"] if ns is None else ["ip", "-n", ns, "-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(cmds) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip -batch in {ns or 'the main namespace'}: {proc.stderr.strip()}")


def routes_overlapping(net: ipaddress.IPv4Network) -> list[str]:
    out = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    hits = []
    for r in out:
        dst = r.get("dst", "")
        if dst and dst != "default":
            other = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            if other.overlaps(net):
                hits.append(f"{dst} dev {r.get('dev', '?')}")
    return hits


def _process_id(pid: int) -> str:
    """pid and start time: a pid alone may have been reused."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{pid} {start}"


def sweep_stale() -> list[str]:
    """Remove what fixtures whose process died (SIGKILL, a crash) left behind; returns their tokens.

    Only names this fixture makes are touched (``/run/lkh-<4 hex>`` with an owner file, namespaces
    ``lkh<tok>-*``, links ``lkh<tok>*``, users ``lkh<tok>`` and ``lkh<tok>n``, ``/etc/sudoers.d/lkh-<tok>``);
    the processes left in those namespaces are that fixture's sshd and its sessions."""
    swept = []
    for d in Path("/run").glob("lkh-*"):
        tok = d.name[4:]
        if not (len(tok) == 4 and all(c in "0123456789abcdef" for c in tok)) or not d.is_dir():
            continue
        owner = (d / "owner").read_text() if (d / "owner").exists() else ""
        pid = int(owner.split()[0]) if owner.split() else 0
        if owner and pid and _process_id(pid) == owner:
            continue  # its fixture is alive
        m = Machines.__new__(Machines)
        Machines.__init__(m, base=d)
        m.tok, m.user, m.nosudo_user = tok, f"lkh{tok}", f"lkh{tok}n"
        m.sudoers, m.bridge, m.switch = Path(f"/etc/sudoers.d/lkh-{tok}"), f"lkh{tok}br", f"lkh{tok}-sw"
        netns = sh("ip", "netns", "list").stdout.split("\n")
        m._undo = [("dir", lambda m=m: shutil.rmtree(m.dir, ignore_errors=True)),
                   ("sudoers", lambda m=m: m.sudoers.unlink(missing_ok=True))]
        m._undo += [(f"user {u}", lambda u=u: sh("userdel", u, check=False)) for u in (m.user, m.nosudo_user)]
        links = [ln.split(":")[1].strip().split("@")[0] for ln in sh("ip", "-o", "link").stdout.splitlines()]
        m._undo += [(f"link {ln}", lambda ln=ln: sh("ip", "link", "del", ln, check=False))
                    for ln in links if ln.startswith(f"lkh{tok}")]
        m._undo += [(f"netns {ns}", lambda ns=ns, m=m: m._delete_ns(ns))
                    for ns in (line.split()[0] for line in netns if line.strip()) if ns.startswith(f"lkh{tok}-")]
        m.teardown()
        swept.append(tok)
    return swept


@dataclass
class Machine:
    name: str
    role: str
    ns: str
    mgmt: str  # management address (sshd listens here)
    data: dict[str, str] = field(default_factory=dict)  # data network -> address
    ifaces: dict[str, str] = field(default_factory=dict)  # data network -> interface
    sshd_pid: int = 0


class Machines:
    """``Machines(n_evse).build()``; ``teardown()`` always (also after a failed build)."""

    def __init__(self, n_evse: int = 1, base: Path | None = None):
        self.tok = secrets.token_hex(2)
        while Path(f"/run/lkh-{self.tok}").exists():
            self.tok = secrets.token_hex(2)
        self.n_evse = n_evse
        self.user = f"lkh{self.tok}"
        self.nosudo_user = f"lkh{self.tok}n"  # same key, no sudo: for the "no sudo" refusal
        self.dir = base or Path(f"/run/lkh-{self.tok}")  # root-owned, 0755: sshd's StrictModes accept it
        self.sudoers = Path(f"/etc/sudoers.d/lkh-{self.tok}")
        self.bridge = f"lkh{self.tok}br"
        self.switch = f"lkh{self.tok}-sw"
        self.machines: list[Machine] = []
        self.mgmt_net: ipaddress.IPv4Network | None = None
        self._undo: list[tuple[str, Callable[[], None]]] = []

    # -- paths --------------------------------------------------------------------------------------------
    @property
    def key_file(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def machine(self, name: str) -> Machine:
        return next(m for m in self.machines if m.name == name)

    # -- build --------------------------------------------------------------------------------------------
    def build(self) -> Machines:
        t0 = time.monotonic()
        names = [("cpo", "cpo"), ("gw", "gateway")] + [(f"evse{i}", "evse") for i in range(1, self.n_evse + 1)]
        self._files()  # first: its owner file lets sweep_stale() remove the rest after a SIGKILL
        with open(LOCK, "a") as lock:  # two fixtures must not pick the same subnet
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.mgmt_net = self._free_subnet()
            self._undo.append(("bridge", lambda: sh("ip", "link", "del", self.bridge, check=False)))
            ip_batch([f"link add {self.bridge} type bridge",
                      f"addr add {self.mgmt_net[254]}/24 dev {self.bridge}", f"link set {self.bridge} up"])
        self._user()
        self._allow_cubic()
        self._ns(self.switch)
        ip_batch(["link add cpo type bridge", "link add evse type bridge", "link set cpo up", "link set evse up",
                  "link set lo up"], ns=self.switch)
        for i, (name, role) in enumerate(names):
            m = Machine(name, role, f"lkh{self.tok}-{name}", str(self.mgmt_net[10 + i]))
            self.machines.append(m)
            self._wire(m, i)
        for m in self.machines:
            self._sshd(m)
        self._write_known_hosts()
        for m in self.machines:
            self._wait_ssh(m)
        self.build_seconds = time.monotonic() - t0
        return self

    def _free_subnet(self) -> ipaddress.IPv4Network:
        for net in MGMT_POOL.subnets(new_prefix=24):
            if not routes_overlapping(net):
                return net
        raise RuntimeError(f"no free /24 in {MGMT_POOL}")

    def _files(self) -> None:
        self._undo.append(("files", lambda: shutil.rmtree(self.dir, ignore_errors=True)))
        self.dir.mkdir(mode=0o755)
        os.chmod(self.dir, 0o755)
        (self.dir / "owner").write_text(_process_id(os.getpid()))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lkh-{self.tok}", "-f", str(self.key_file))
        auth = self.dir / "authorized_keys"
        auth.write_text(self.key_file.with_suffix(".pub").read_text())
        os.chmod(auth, 0o644)

    def _user(self) -> None:
        for user in (self.user, self.nosudo_user):
            home = self.dir / f"home-{user}"
            self._undo.append((f"user {user}", lambda user=user: sh("userdel", user, check=False)))
            # '*' (not '!'): no password, but not a locked account, so sshd lets the key in without PAM
            sh("useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--password", "*",
               "--user-group", user)
            home.mkdir(mode=0o755)
            shutil.chown(home, user, user)
        self._undo.append(("sudoers", lambda: self.sudoers.unlink(missing_ok=True)))
        tmp = self.sudoers.with_name(f".lkh-{self.tok}.tmp")  # sudo skips names with a '.'
        tmp.write_text(f"{self.user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        os.chmod(tmp, 0o440)
        sh("visudo", "-c", "-q", "-f", str(tmp))
        tmp.replace(self.sudoers)

    def _allow_cubic(self) -> None:
        """Let the machines' root pick CUBIC, as root on a machine of its own can: outside the first network
        namespace Linux allows only the algorithms in ``tcp_allowed_congestion_control`` (this machine lists
        its default, BBR). Put back at teardown unless someone changed it since."""
        allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
        before = allowed.read_text().strip()
        if "cubic" in before.split() or "cubic" not in CC_AVAILABLE.read_text().split():
            return
        after = f"{before} cubic"

        def undo() -> None:
            if allowed.read_text().strip() == after:
                allowed.write_text(before + "\n")

        self._undo.append(("tcp_allowed_congestion_control", undo))
        allowed.write_text(after + "\n")

    def _ns(self, ns: str) -> None:
        self._undo.append((f"netns {ns}", lambda: self._delete_ns(ns)))
        sh("ip", "netns", "add", ns)

    def _wire(self, m: Machine, i: int) -> None:
        self._ns(m.ns)
        host_end = f"lkh{self.tok}m{i}"
        # deleted explicitly: a namespace's veths go with it, but only once the kernel gets round to it
        self._undo.append((f"link {host_end}", lambda: sh("ip", "link", "del", host_end, check=False)))
        ip_batch([f"link add {host_end} type veth peer name mgmt0 netns {m.ns}",
                  f"link set {host_end} master {self.bridge}", f"link set {host_end} up"])
        cmds = ["link set lo up", f"addr add {m.mgmt}/24 dev mgmt0", "link set mgmt0 up"]
        nets = ["cpo", "evse"] if m.role == "gateway" else [m.role]
        for j, net in enumerate(nets, 1):
            dev, sw_end = f"eth{j}", f"p{i}e{j}"
            ip_batch([f"link add {sw_end} type veth peer name {dev} netns {m.ns}",
                      f"link set {sw_end} master {net}", f"link set {sw_end} up"], ns=self.switch)
            netw = CPO_NET if net == "cpo" else EVSE_NET
            offset = 1 if m.role == "gateway" else (10 if m.role == "cpo" else 10 + int(m.name[4:]))
            m.data[net], m.ifaces[net] = str(netw[offset]), dev
            cmds += [f"addr add {netw[offset]}/{netw.prefixlen} dev {dev}", f"link set {dev} up"]
        if m.role == "cpo":
            cmds.append(f"route add {EVSE_NET} via {CPO_NET[1]} dev eth1")
        elif m.role == "evse":
            cmds.append(f"route add {CPO_NET} via {EVSE_NET[1]} dev eth1")
        ip_batch(cmds, ns=m.ns)
        sh("sysctl", "-q", "-w", f"net.ipv4.ip_forward={1 if m.role == 'gateway' else 0}", ns=m.ns)

    def _sshd(self, m: Machine) -> None:
        hd = self.dir / m.name
        hd.mkdir(mode=0o755)
        key = hd / "ssh_host_ed25519_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", m.name, "-f", str(key))
        cfg = hd / "sshd_config"
        cfg.write_text(f"""ListenAddress {m.mgmt}
Port 22
HostKey {key}
AuthorizedKeysFile {self.dir / 'authorized_keys'}
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {self.user} {self.nosudo_user}
StrictModes yes
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        sh("/usr/sbin/sshd", "-t", "-f", str(cfg))
        log = open(hd / "sshd.log", "ab")
        # its own UTS namespace (`hostname` answers the machine's name) and mount namespace with a private
        # /tmp, as on a machine of its own; every step execs: one pid
        argv = ["ip", "netns", "exec", m.ns, "unshare", "--uts", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", 'hostname "$1" && mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp && shift && '
                'exec "$@"', "sh", m.name, "/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        m.sshd_pid = proc.pid
        self._undo.append((f"sshd {m.name}", lambda: self._stop(proc)))

    def _write_known_hosts(self) -> None:
        lines = []
        for m in self.machines:
            pub = (self.dir / m.name / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{m.mgmt} {pub[0]} {pub[1]}\n")
        self.known_hosts.write_text("".join(lines))

    def _wait_ssh(self, m: Machine, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((m.mgmt, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = (self.dir / m.name / "sshd.log").read_text(errors="replace").strip()
                raise RuntimeError(f"sshd of {m.name} on {m.mgmt} did not answer in {timeout} s: {log}")
            time.sleep(0.05)

    # -- inventory ----------------------------------------------------------------------------------------
    def inventory(self, fmt: str = "yaml", *, addresses: bool = True, path: Path | None = None,
                  extra: dict[str, dict[str, object]] | None = None) -> Path:
        """Write an Ansible inventory of the machines (``yaml`` or ``ini``); ``addresses``: give each data
        address as ``labkit_<net>_address``; ``extra``: more variables per host name."""

        def hvars(m: Machine) -> dict[str, object]:
            v: dict[str, object] = {"ansible_host": m.mgmt}
            if addresses:
                v.update({f"labkit_{net}_address": a for net, a in m.data.items()})
            v.update((extra or {}).get(m.name, {}))
            return v

        common = {"ansible_user": self.user, "ansible_ssh_private_key_file": str(self.key_file),
                  "ansible_become": True, "labkit_known_hosts": str(self.known_hosts)}
        path = path or self.dir / ("inventory.yml" if fmt == "yaml" else "inventory.ini")
        if fmt == "yaml":
            groups = {role: {"hosts": {m.name: hvars(m) for m in self.machines if m.role == role}}
                      for role in ("cpo", "gateway", "evse")}
            path.write_text(json.dumps({"all": {"vars": common, "children": groups}}, indent=2) + "\n")
        else:
            out = []
            for role in ("cpo", "gateway", "evse"):
                out.append(f"[{role}]")
                for m in self.machines:
                    if m.role == role:
                        out.append(" ".join([m.name] + [f"{k}={v}" for k, v in hvars(m).items()]))
                out.append("")
            out.append("[all:vars]")
            out += [f"{k}={v}" for k, v in common.items()]
            path.write_text("\n".join(out) + "\n")
        return path

    # -- teardown -----------------------------------------------------------------------------------------
    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _delete_ns(self, ns: str) -> None:
        # what is left in the namespace was started there by this fixture's sshd (sessions): end it by pid
        for _ in range(50):
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        sh("ip", "netns", "del", ns, check=False)

    def teardown(self) -> list[str]:
        """Undo everything (reverse order); returns what could not be undone."""
        failed = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                failed.append(f"{what}: {exc}")
        return failed

    def leftovers(self) -> list[str]:
        """What of this fixture still exists on the machine (empty after a clean teardown)."""
        left = []
        netns = sh("ip", "netns", "list").stdout
        left += [line.split()[0] for line in netns.splitlines() if line.startswith(f"lkh{self.tok}-")]
        links = sh("ip", "-o", "link").stdout
        left += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f"lkh{self.tok}" in line]
        for user in (self.user, self.nosudo_user):
            if sh("getent", "passwd", user, check=False).returncode == 0:
                left.append(f"user {user}")
        for p in (self.sudoers, self.dir):
            if p.exists():
                left.append(str(p))
        for m in self.machines:
            if m.sshd_pid and Path(f"/proc/{m.sshd_pid}").exists():
                left.append(f"sshd pid {m.sshd_pid}")
        return left
