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
from labkit.backends import common, nstopo
from labkit.backends.base import HostState, Progress, no_progress
from labkit.backends.nstopo import ns_name, root_link, switch_ns
from labkit.errors import BackendError, ConfigError
from labkit.inventory import Inventory
from labkit.labdir import LabDir
from labkit.model import Lab
from labkit.provision import CONGESTION_CONTROL

SSHD = "/usr/sbin/sshd"
MGMT_POOL = ipaddress.IPv4Network("10.250.0.0/16")
MGMT_PREFIX = 22


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int = os.getpid()) -> None:
    """preexec_fn: SIGKILL this child when labkit dies, so a killed ``up`` cannot race ``down``."""
    _LIBC.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _ip(args: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return nstopo.run_ip(args, input=input, check=check, preexec_fn=_die_with_parent)


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
            conflict = common.route_conflict(lab.spec.networks.mgmt, exclude_lab=lab.name)
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
            conflict = common.route_conflict(lab.spec.networks.mgmt, exclude_lab=lab.name)
            if conflict:
                raise ConfigError(f"networks.mgmt: {lab.spec.networks.mgmt} overlaps {conflict} on this machine")
            return lab.spec.networks.mgmt
        found = common.free_subnet(MGMT_POOL, lab.spec.evse + 3, MGMT_PREFIX,
                                   lambda net: common.route_conflict(net, exclude_lab=lab.name))
        if found is not None:
            return found
        raise BackendError(f"no free management network left in {MGMT_POOL}; set networks.mgmt in the lab file")

    # -- up -------------------------------------------------------------------------------------------
    def up(self, lab: Lab, labdir: LabDir, progress: Progress = no_progress) -> Inventory:
        total_steps = 5
        progress("keys", 0, total_steps)
        labdir.record("backend", name=self.name, lab=lab.name)
        keys = sshkeys.lab_keys(labdir, [h.name for h in lab.hosts])
        sw = switch_ns(lab.name)
        names = [sw] + [ns_name(lab.name, h.name) for h in lab.hosts]
        common.allow_congestion_control(labdir, CONGESTION_CONTROL)
        progress("namespaces and links", 1, total_steps)
        # Namespace and interface names and the management subnet are machine-wide: they are checked, journalled
        # and created under the machine-wide lock, so two labs coming up at once (in any LABKIT_HOME) never both
        # see the same subnet free, and a lab whose names are taken meanwhile is refused before its journal names
        # anything it does not own (its rollback removes only what is journalled).
        with machine.machine_lock(what="placing namespaces and choosing a management subnet"):
            self._check_names_free(lab)
            mgmt = nstopo.Mgmt.for_lab(lab, self.mgmt_network(lab), root_link(lab.name))
            topo = nstopo.Topology.for_lab(lab, mgmt)
            mgmt_addr = mgmt.addresses
            labdir.write_json("netns.json", {"mgmt": str(mgmt.network),
                                             "mgmt_addresses": {k: str(v) for k, v in mgmt_addr.items()}})
            for n in names:
                labdir.record("netns", name=n)
            labdir.record("link", name=mgmt.root_link)
            create, veths, switch, *host_batches = nstopo.plan(topo)
            nstopo.run_batches([create], ip=_ip)  # the namespaces, the root link and the management route
        sshkeys.write_known_hosts(labdir, {str(mgmt_addr[n]): keys.host_public[n] for n in mgmt_addr})
        nstopo.run_batches([veths], ip=_ip)

        progress("addresses and routes", 2, total_steps)
        nstopo.run_batches([switch], ip=_ip)
        nstopo.set_sysctls(sw, nstopo.SWITCH_SYSCTLS, nstopo.SWITCH_OPTIONAL, preexec_fn=_die_with_parent)
        nstopo.run_batches(host_batches, ip=_ip)

        progress("sshd on every host", 3, total_steps)
        # sshd's privilege-separation directory; the openssh-server package normally creates it at boot
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        procs = []
        for h in lab.hosts:
            ns = ns_name(lab.name, h.name)
            hd = labdir.host_dir(h.name)
            (hd / "work").mkdir(parents=True, exist_ok=True)
            cfg = sshkeys.write_sshd_config(labdir, h.name, str(mgmt_addr[h.name]))
            sysctl = nstopo.host_sysctls(h)
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
        hosts = [common.host_conn(h, ssh_host=str(mgmt_addr[h.name]), key_file=str(keys.client_key),
                                  known_hosts=str(keys.known_hosts), labkit=venv_labkit,
                                  workdir=str(labdir.host_dir(h.name) / "work"), ifaces=topo.host_ifaces(h))
                 for h in lab.hosts]
        progress("ready", total_steps, total_steps)
        return Inventory(lab=lab.name, backend=self.name, hosts=hosts,
                         details={"mgmt": str(mgmt.network), "namespaces": names, "switch": sw,
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
        common.release_shared_settings(labdir, journal)
        if errors:
            raise BackendError(f"could not delete namespace {errors[0]}")


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
