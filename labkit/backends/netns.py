"""The netns backend: each lab host is a Linux network namespace on this machine, running its own sshd.

Layout for lab ``L`` (see docs/architecture.md):

- ``lk-L-sw``: a switch namespace with three bridges, ``cpo``, ``evse`` and ``mgmt``;
- ``lk-L-<host>``: one namespace per host with ``mgmt0`` on the management bridge, ``eth1`` on its data
  bridge (the gateway: ``eth1`` CPO side, ``eth2`` EVSE side);
- ``lkL`` (root namespace): one veth into the management bridge, so this machine reaches every sshd.

Routes send the other data network through the gateway and nothing else leaves a host (no default route).
Every namespace, link and daemon is journalled in the lab directory before it is created; ``down`` deletes
the journalled namespaces after killing every process inside them, so a SIGKILL mid-``up`` leaves nothing
that ``down`` cannot remove. Hosts are provisioned over real SSH like VMs.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from labkit import machine, sshkeys
from labkit.backends.base import HostState, Progress, no_progress
from labkit.errors import BackendError, ConfigError
from labkit.inventory import HostConn, Inventory
from labkit.labdir import LabDir, list_labs
from labkit.model import Host, Lab
from labkit.provision import CONGESTION_CONTROL

SSHD = "/usr/sbin/sshd"
MGMT_POOL = ipaddress.IPv4Network("10.250.0.0/16")
MGMT_PREFIX = 22


def ns_name(lab: str, host: str) -> str:
    return f"lk-{lab}-{host}"


def switch_ns(lab: str) -> str:
    return f"lk-{lab}-sw"


def root_link(lab: str) -> str:
    return f"lk{lab}"[:15]


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int = os.getpid()) -> None:
    """preexec_fn: SIGKILL this child when labkit dies, so a killed ``up`` cannot race ``down``."""
    _LIBC.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _ip(args: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], input=input, capture_output=True, text=True, preexec_fn=_die_with_parent)
    if check and proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise BackendError(f"ip {' '.join(args[:6])}: {last}")
    return proc


def existing_namespaces() -> set[str]:
    proc = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return set()
    return {entry["name"] for entry in json.loads(proc.stdout)}


def ns_pids(ns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


class NetnsBackend:
    name = "netns"

    def available(self) -> tuple[bool, str]:
        if sys.platform != "linux":
            return False, "network namespaces need Linux"
        if shutil.which("ip") is None:
            return False, "iproute2 ('ip') is not installed"
        if not Path(SSHD).exists():
            return False, f"openssh-server is not installed ({SSHD} missing)"
        if os.geteuid() != 0:
            return False, "network namespaces need root (run labkit with sudo)"
        return True, "ok"

    # -- preflight: decide everything, change nothing ------------------------------------------------
    def preflight(self, lab: Lab, labdir: LabDir) -> None:
        if os.geteuid() != 0:
            raise ConfigError("backend: netns needs root to create network namespaces (run: sudo labkit up ...)")
        ok, why = self.available()
        if not ok:
            raise ConfigError(f"backend: netns is not usable here: {why}")
        for tool in ("ping", "iperf3", "tc", "unshare"):
            if shutil.which(tool) is None:
                raise ConfigError(f"backend: netns needs '{tool}' on this machine (see README: install.sh)")
        self._check_names_free(lab)
        if lab.spec.networks.mgmt is not None:
            conflict = _route_conflict(lab.spec.networks.mgmt, exclude_lab=lab.name)
            if conflict:
                raise ConfigError(f"networks.mgmt: {lab.spec.networks.mgmt} overlaps {conflict} on this machine")

    @staticmethod
    def _check_names_free(lab: Lab) -> None:
        """Refuse a lab whose namespace or interface names exist already (another lab of that name, maybe in
        another LABKIT_HOME)."""
        clash = sorted(n for n in existing_namespaces() if n.startswith(f"lk-{lab.name}-"))
        if clash:
            raise ConfigError(f"name: namespaces of a lab named {lab.name!r} already exist ({clash[0]}, ...); "
                              f"run 'labkit down --lab {lab.name}' or choose another --name")
        if _ip(["link", "show", root_link(lab.name)], check=False).returncode == 0:
            raise ConfigError(f"name: interface {root_link(lab.name)} already exists; "
                              f"run 'labkit down --lab {lab.name}' or choose another --name")

    def mgmt_network(self, lab: Lab) -> ipaddress.IPv4Network:
        """The lab's management subnet: the one asked for, or the first free one (call under the machine lock,
        and create its route before releasing it)."""
        if lab.spec.networks.mgmt is not None:
            conflict = _route_conflict(lab.spec.networks.mgmt, exclude_lab=lab.name)
            if conflict:
                raise ConfigError(f"networks.mgmt: {lab.spec.networks.mgmt} overlaps {conflict} on this machine")
            return lab.spec.networks.mgmt
        need = lab.spec.evse + 3
        prefix = MGMT_PREFIX if need < 2 ** (32 - MGMT_PREFIX) - 2 else 20
        for candidate in MGMT_POOL.subnets(new_prefix=prefix):
            if not _route_conflict(candidate, exclude_lab=lab.name):
                return candidate
        raise BackendError(f"no free management network left in {MGMT_POOL}; set networks.mgmt in the lab file")

    # -- up -------------------------------------------------------------------------------------------
    def up(self, lab: Lab, labdir: LabDir, progress: Progress = no_progress) -> Inventory:
        total_steps = 5
        progress("keys", 0, total_steps)
        labdir.record("backend", name=self.name, lab=lab.name)
        keys = sshkeys.lab_keys(labdir, [h.name for h in lab.hosts])
        sw = switch_ns(lab.name)
        names = [sw] + [ns_name(lab.name, h.name) for h in lab.hosts]
        _allow_congestion_control(labdir, CONGESTION_CONTROL)
        progress("namespaces and links", 1, total_steps)
        # Namespace and interface names and the management subnet are machine-wide: they are checked, journalled
        # and created under the machine-wide lock, so two labs coming up at once (in any LABKIT_HOME) never both
        # see the same subnet free, and a lab whose names are taken meanwhile is refused before its journal names
        # anything it does not own (its rollback removes only what is journalled).
        with machine.machine_lock(what="placing namespaces and choosing a management subnet"):
            self._check_names_free(lab)
            mgmt = self.mgmt_network(lab)
            mgmt_addr = {h.name: mgmt[2 + i] for i, h in enumerate(lab.hosts)}
            labdir.write_json("netns.json", {"mgmt": str(mgmt),
                                             "mgmt_addresses": {k: str(v) for k, v in mgmt_addr.items()}})
            for n in names:
                labdir.record("netns", name=n)
            labdir.record("link", name=root_link(lab.name))
            batch = [f"netns add {n}" for n in names]
            batch.append(f"link add name {root_link(lab.name)} type veth peer name uplink netns {sw}")
            _ip(["-batch", "-"], input="\n".join(batch) + "\n")
            _ip(["addr", "add", f"{mgmt[1]}/{mgmt.prefixlen}", "dev", root_link(lab.name)])
        sshkeys.write_known_hosts(labdir, {str(mgmt_addr[n]): keys.host_public[n] for n in mgmt_addr})
        batch = []
        for h in lab.hosts:
            ns = ns_name(lab.name, h.name)
            batch.append(f"link add name m-{h.name} netns {sw} type veth peer name mgmt0 netns {ns}")
            for local, net in _data_links(h):
                batch.append(f"link add name {net[0]}-{h.name} netns {sw} type veth peer name {local} netns {ns}")
        _ip(["-batch", "-"], input="\n".join(batch) + "\n")
        _ip(["link", "set", root_link(lab.name), "up"])

        progress("addresses and routes", 2, total_steps)
        sw_batch = []
        for bridge in ("cpo", "evse", "mgmt"):
            sw_batch += [f"link add {bridge} type bridge forward_delay 0", f"link set {bridge} up"]
        sw_batch += ["link set dev uplink master mgmt", "link set dev uplink up", "link set lo up"]
        for h in lab.hosts:
            sw_batch += [f"link set m-{h.name} master mgmt", f"link set m-{h.name} up"]
            for _, net in _data_links(h):
                sw_batch += [f"link set {net[0]}-{h.name} master {net}", f"link set {net[0]}-{h.name} up"]
        _ip(["-n", sw, "-batch", "-"], input="\n".join(sw_batch) + "\n")
        _sysctls(sw, {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1",
                      "net/bridge/bridge-nf-call-iptables": "0", "net/bridge/bridge-nf-call-ip6tables": "0"},
                 optional={"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"})
        nets = lab.spec.networks
        gw = lab.gateway
        for h in lab.hosts:
            ns = ns_name(lab.name, h.name)
            cmds = ["link set lo up", f"addr add {mgmt_addr[h.name]}/{mgmt.prefixlen} dev mgmt0", "link set mgmt0 up"]
            for local, net in _data_links(h):
                prefix = getattr(nets, net).prefixlen
                cmds += [f"addr add {h.addresses[net]}/{prefix} dev {local}", f"link set {local} up"]
            if h.role == "cpo":
                cmds.append(f"route add {nets.evse} via {gw.addresses['cpo']} dev eth1")
            elif h.role == "evse":
                cmds.append(f"route add {nets.cpo} via {gw.addresses['evse']} dev eth1")
            _ip(["-n", ns, "-batch", "-"], input="\n".join(cmds) + "\n")

        progress("sshd on every host", 3, total_steps)
        # sshd's privilege-separation directory; the openssh-server package normally creates it at boot
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        procs = []
        for h in lab.hosts:
            ns = ns_name(lab.name, h.name)
            hd = labdir.host_dir(h.name)
            (hd / "work").mkdir(parents=True, exist_ok=True)
            cfg = sshkeys.write_sshd_config(labdir, h.name, str(mgmt_addr[h.name]))
            sysctl = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1",
                      "net/ipv4/ip_forward": "1" if h.role == "gateway" else "0"}
            labdir.record("sshd", ns=ns, host=h.name, pidfile=str(hd / "sshd.pid"))
            procs.append((h.name, subprocess.Popen(
                ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--propagation", "private",
                 "sh", "-c", sshd_script(h.name, sysctl, hd, labdir.keys / "authorized_keys", cfg)],
                preexec_fn=_die_with_parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        for name, p in procs:
            out, err = p.communicate(timeout=30)
            if p.returncode != 0:
                text = (err or out).strip()
                why = text.splitlines()[-1] if text else f"exit {p.returncode}"
                raise BackendError(f"{name}: sshd did not start: {why}")

        venv_labkit = str(Path(sys.executable).with_name("labkit"))
        hosts = []
        for h in lab.hosts:
            ifaces = {net: local for local, net in _data_links(h)}
            hosts.append(HostConn(
                name=h.name, role=h.role, ssh_host=str(mgmt_addr[h.name]), ssh_port=22, user="root",
                key_file=str(keys.client_key), known_hosts=str(keys.known_hosts), sudo=False,
                addresses={k: str(v) for k, v in h.addresses.items()}, ifaces=ifaces,
                labkit=venv_labkit, workdir=str(labdir.host_dir(h.name) / "work"), index=h.index))
        progress("ready", total_steps, total_steps)
        return Inventory(lab=lab.name, backend=self.name, hosts=hosts,
                         details={"mgmt": str(mgmt), "namespaces": names, "switch": sw,
                                  "root_link": root_link(lab.name)})

    # -- status ---------------------------------------------------------------------------------------
    def status(self, lab: Lab, labdir: LabDir) -> list[HostState]:
        present = existing_namespaces()
        states = []
        for h in lab.hosts:
            ns = ns_name(lab.name, h.name)
            if ns not in present:
                states.append(HostState(h.name, h.role, False, "namespace missing"))
                continue
            pid_file = labdir.host_dir(h.name) / "sshd.pid"
            sshd_ok = False
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), 0)
                    sshd_ok = True
                except (ValueError, ProcessLookupError, PermissionError):
                    sshd_ok = False
            states.append(HostState(h.name, h.role, sshd_ok, f"netns {ns}" + ("" if sshd_ok else ", sshd not running")))
        return states

    # -- down -----------------------------------------------------------------------------------------
    def down(self, labdir: LabDir, progress: Progress = no_progress) -> None:
        journal = labdir.journal()
        namespaces = [e["name"] for e in journal if e["kind"] == "netns"]
        links = [e["name"] for e in journal if e["kind"] == "link"]
        present = existing_namespaces()
        ours = [n for n in namespaces if n in present]
        total = len(ours) + len(links)
        progress("stopping processes", 0, total)
        # Every process inside the lab's namespaces was started by labkit for this lab.
        victims: set[int] = set()
        for n in ours:
            victims.update(ns_pids(n))
        victims.discard(os.getpid())
        _kill_all(victims)
        done = 0
        for link in reversed(links):
            _ip(["link", "del", link], check=False)
            done += 1
        errors = []
        for n in reversed(ours):
            proc = _ip(["netns", "del", n], check=False)
            if proc.returncode != 0 and n in existing_namespaces():
                errors.append(f"{n}: {proc.stderr.strip()}")
            done += 1
            progress("deleting namespaces", done, total)
        for e in reversed([e for e in journal if e["kind"] == "sysctl"]):
            _restore_sysctl(e)
        shared = [e for e in journal if e["kind"] == "shared-setting"]
        if shared:
            with machine.machine_lock(what="putting machine-wide settings back"):
                for e in reversed(shared):
                    machine.release_setting(labdir, e["path"])
        if errors:
            raise BackendError(f"could not delete namespace {errors[0]}")


_CC = Path("/proc/sys/net/ipv4")


def _allow_congestion_control(labdir: LabDir, name: str) -> None:
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


def _restore_sysctl(entry: dict) -> None:
    """Put back a machine-wide value an older labkit's ``up`` changed, unless someone changed it again since."""
    path = Path(entry["path"])
    try:
        if path.read_text().strip() == entry["after"]:
            path.write_text(entry["before"] + "\n")
    except OSError:
        pass


def sshd_script(host: str, sysctl: dict[str, str], host_dir: Path, authorized_keys: Path, config: Path) -> str:
    """The shell that starts one host's sshd inside its namespace (run by ``unshare --uts --mount``).

    In the host's private mount namespace: the machine's ``~root/.bashrc`` is masked (a clean login
    environment, as on a fresh VM: pyenv's start-up there costs 150 ms a command), a tmpfs over /etc/ssh
    receives the host key, the lab's authorized_keys and the config (sshd_config's paths name them there, so
    sshd's StrictModes checks a root-owned path whatever the lab directory's path is), the hostname is set,
    the config is tested, and sshd runs in the foreground of a background job whose pid goes to
    ``sshd.pid``. Every path from the lab directory is quoted."""
    q = shlex.quote
    d = sshkeys.SSHD_DIR
    lines = ["set -e"]
    lines += [f"echo {q(v)} > /proc/sys/{k}" for k, v in sysctl.items()]
    lines += [
        'f=$(getent passwd root | cut -d: -f6)/.bashrc',
        'if [ -f "$f" ]; then mount --bind /dev/null "$f"; fi',
        f"mount -t tmpfs -o mode=0755,size=4m labkit-ssh {d}",
        f"cp {q(str(host_dir / 'ssh_host_ed25519_key'))} {d}/ssh_host_ed25519_key",
        f"cp {q(str(authorized_keys))} {d}/authorized_keys",
        f"cp {q(str(config))} {d}/sshd_config",
        f"chmod 600 {d}/ssh_host_ed25519_key {d}/authorized_keys",
        f"hostname {q(host)}",
        f"{SSHD} -t -f {d}/sshd_config",
        f"{SSHD} -D -f {d}/sshd_config -E {q(str(host_dir / 'sshd.log'))} </dev/null >/dev/null 2>&1 &",
        f"echo $! > {q(str(host_dir / 'sshd.pid'))}",
    ]
    return "\n".join(lines) + "\n"


def _data_links(h: Host) -> list[tuple[str, str]]:
    """(interface in the host, data network) for each data network the host sits on."""
    if h.role == "gateway":
        return [("eth1", "cpo"), ("eth2", "evse")]
    return [("eth1", "cpo" if h.role == "cpo" else "evse")]


def _sysctls(ns: str, values: dict[str, str], optional: set[str] = frozenset()) -> None:
    parts = []
    for key, value in values.items():
        suffix = " 2>/dev/null || true" if key in optional else ""
        parts.append(f"echo {value} > /proc/sys/{key}{suffix}")
    proc = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", "; ".join(parts)], capture_output=True, text=True,
                          preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        raise BackendError(f"{ns}: sysctl failed: {proc.stderr.strip()}")


def _kill_all(pids: set[int], timeout: float = 3.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
                # a zombie child of ours still answers kill(0); reap it if we can
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        alive.discard(pid)
                except ChildProcessError:
                    pass
            except ProcessLookupError:
                alive.discard(pid)
        if alive:
            time.sleep(0.05)
    for pid in alive:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _route_conflict(net: ipaddress.IPv4Network, exclude_lab: str | None = None) -> str | None:
    """Another route or lab management network on this machine that overlaps ``net``."""
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
        meta = LabDir(name).path / "netns.json"
        if meta.exists():
            try:
                other = ipaddress.IPv4Network(json.loads(meta.read_text())["mgmt"])
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
            if other.overlaps(net):
                return f"lab {name!r} management network {other}"
    return None
