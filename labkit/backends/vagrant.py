"""The vagrant backend: the lab's hosts as Vagrant VMs (providers libvirt and VirtualBox).

``up`` renders the Vagrantfile into ``<labdir>/vagrant/``, creates the libvirt networks itself (isolated:
no NAT, no route out, no DNS forwarding), lets python-vagrant bring the VMs up in parallel with the output
streamed to the progress callback and ``logs/vagrant.log``, turns ``vagrant ssh-config`` into the
inventory, then over SSH and in parallel on every host: finds which interface holds each data address,
routes the other data network via the gateway (and turns forwarding on there), checks the system packages
and installs labkit from a wheelhouse pushed from this machine (``labkit.wheelhouse``).

Every VM, volume and network is written to the lab's journal before it is created, and vagrant runs with
``LABKIT_VAGRANT_LAB`` in its environment, so ``down`` can destroy all of it even after ``up`` was killed.

This module holds the backend itself; the commands it runs are in ``vagrant_cmd``, the libvirt networks,
pool and volumes in ``libvirt_net``, the ``vagrant ssh-config`` parsing in ``vagrant_ssh``. The test box
(``labkit box build``) is ``labkit.testbox``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import vagrantfile
from labkit.backends.base import HostState, Progress, no_progress
from labkit.backends.libvirt_net import (
    POOL,
    choose_mgmt_network,
    host_lock,
    libvirt_networks,
    network_xml,
    preload_box_volume,
)
from labkit.backends.vagrant_cmd import (
    LAB_MARK,
    LIBVIRT_URI,
    box_list,
    kvm_usable,
    libvirt_reachable,
    run,
    vagrant_bin,
    vagrant_env,
    vagrant_plugins,
    virsh,
)
from labkit.backends.vagrant_ssh import parse_ssh_config
from labkit.errors import BackendError, ConfigError
from labkit.inventory import HostConn, Inventory
from labkit.labdir import LabDir
from labkit.model import Lab
from labkit.resources import resource
from labkit.sshkeys import offered_host_key

#: the venv labkit installs on every VM, and the directory it may write to
VENV = "/opt/labkit/venv"
WORKDIR = "/var/lib/labkit"
#: commands every host needs, and the Debian/Ubuntu package that brings each
REQUIRED_COMMANDS = {"python3": "python3", "ip": "iproute2", "tc": "iproute2", "ping": "iputils-ping",
                     "iperf3": "iperf3"}


@dataclass
class _Timer:
    """Records how long each ``with timer(name):`` block took, in seconds, into ``timings``."""

    timings: dict[str, float]

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - t0, 1)


class VagrantBackend:
    """Vagrant VMs; provider from the lab file (``vagrant.provider``), libvirt preferred when ``auto``."""

    name = "vagrant"

    def __init__(self, provider: str | None = None):
        self.provider_override = provider

    # -- what is here ----------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        if not vagrant_bin():
            return False, "vagrant is not installed"
        reasons = []
        for provider in ("libvirt", "virtualbox"):
            ok, why = self._provider_usable(provider, for_auto=True)
            if ok:
                return True, f"vagrant with {provider} ({why})"
            reasons.append(f"{provider}: {why}")
        return False, "; ".join(reasons)

    def _provider_usable(self, provider: str, *, for_auto: bool = False) -> tuple[bool, str]:
        if provider == "libvirt":
            if "vagrant-libvirt" not in vagrant_plugins():
                return False, "the vagrant-libvirt plugin is not installed (Debian: apt install vagrant-libvirt)"
            ok, why = libvirt_reachable()
            if not ok:
                return False, why
            if for_auto:
                kvm, why_not = kvm_usable()
                if not kvm:
                    return False, f"no KVM ({why_not}); software emulation is opt-in: --backend vagrant"
            return True, LIBVIRT_URI
        if provider == "virtualbox":
            if not shutil.which("VBoxManage"):
                return False, "VirtualBox is not installed (VBoxManage not found)"
            return True, "VirtualBox"
        return False, f"unknown provider {provider!r}"

    def resolve_provider(self, lab: Lab) -> str:
        wanted = self.provider_override or lab.spec.vagrant.provider
        if wanted != "auto":
            ok, why = self._provider_usable(wanted)
            if not ok:
                raise BackendError(f"vagrant provider {wanted}: {why}")
            return wanted
        reasons = []
        for provider in ("libvirt", "virtualbox"):
            ok, why = self._provider_usable(provider)
            if ok:
                return provider
            reasons.append(f"{provider}: {why}")
        raise BackendError("no usable Vagrant provider: " + "; ".join(reasons))

    def libvirt_options(self, lab: Lab) -> dict[str, Any]:
        """The lab's libvirt settings, with ``driver: qemu`` added where KVM cannot run guests."""
        opts = dict(lab.spec.vagrant.libvirt)
        if "driver" not in opts and not kvm_usable()[0]:
            opts["driver"] = "qemu"
        return opts

    def render(self, lab: Lab, provider: str, labdir: LabDir | None = None,
               mgmt: ipaddress.IPv4Network | None = None) -> str:
        spec = lab.spec.model_copy(deep=True)
        if provider == "libvirt":
            spec.vagrant.libvirt = self.libvirt_options(lab)
        lab2 = Lab(spec=spec, hosts=lab.hosts)
        return vagrantfile.render(lab2, provider, mgmt=mgmt,
                                  console_dir=labdir.logs if (labdir and provider == "libvirt") else None)

    # -- preflight ---------------------------------------------------------------------------------------
    def preflight(self, lab: Lab, labdir: LabDir) -> None:
        if not vagrant_bin():
            raise BackendError("vagrant is not installed: install Vagrant (Debian: apt install vagrant "
                               "vagrant-libvirt) or use --backend netns")
        provider = self.resolve_provider(lab)
        spec = lab.spec.vagrant
        box = spec.box_for(provider)
        boxes = [b for b in box_list() if b[0] == box and b[1] == provider]
        if spec.box_version:
            boxes = [b for b in boxes if b[2] == spec.box_version]
        if not boxes:
            want = box + (f" version {spec.box_version}" if spec.box_version else "")
            raise BackendError(f"box {want} for provider {provider} is not installed: `vagrant box add {box} "
                               f"--provider {provider}` (needs internet), or `labkit box build` for labkit's "
                               "local test box")
        if provider == "libvirt":
            ours = {e["name"] for e in labdir.journal() if e.get("kind") == "libvirt_network"}
            existing = libvirt_networks()
            for net in ("mgmt", "cpo", "evse"):
                name = vagrantfile.network_name(lab.name, net)
                if name in existing and name not in ours:
                    raise BackendError(f"libvirt network {name} already exists and is not this lab's: remove it "
                                       f"(`virsh net-destroy {name}`) or rename the lab")
            domains = set(virsh("list", "--all", "--name", check=False).stdout.split())
            for h in lab.hosts:
                d = vagrantfile.domain_name(lab.name, h.name)
                if d in domains and d not in {e.get("name") for e in labdir.journal()}:
                    raise BackendError(f"libvirt domain {d} already exists and is not this lab's")
        # vagrant validate on the Vagrantfile this lab would get
        import tempfile

        with tempfile.TemporaryDirectory(prefix="labkit-validate-") as tmp:
            Path(tmp, "Vagrantfile").write_text(self.render(lab, provider))
            cp = run([vagrant_bin(), "validate"], cwd=tmp, check=False, timeout=120, env=vagrant_env())
            if cp.returncode != 0:
                lines = [ln.strip() for ln in (cp.stderr + cp.stdout).splitlines()
                         if ln.strip() and not ln.startswith("==>")]
                raise ConfigError(f"vagrant: the Vagrantfile for lab {lab.name!r} does not validate: "
                                  f"{' '.join(lines[-3:])}")

    # -- up ----------------------------------------------------------------------------------------------
    def up(self, lab: Lab, labdir: LabDir, progress: Progress = no_progress) -> Inventory:
        """Place the VMs and prepare them (routes, system packages); labkit itself is installed by
        ``labkit.provision`` from the wheelhouse (``details["install"] == "wheelhouse"``). The caller
        (labkit.lifecycle) runs ``preflight`` first and ``down`` when this fails."""
        timings: dict[str, float] = {}
        timer = _Timer(timings)
        t_start = time.monotonic()
        provider = self.resolve_provider(lab)
        labdir.create()
        labdir.record("backend", name=self.name, lab=lab.name)
        vdir = labdir.path / "vagrant"
        return self._up(lab, labdir, provider, vdir, timer, timings, t_start, progress)

    def _up(self, lab: Lab, labdir: LabDir, provider: str, vdir: Path, timer: _Timer,
            timings: dict[str, float], t_start: float, progress: Progress) -> Inventory:
        spec = lab.spec.vagrant
        details: dict[str, Any] = {"provider": provider, "box": spec.box_for(provider), "box_version": spec.box_version,
                                   "vagrant_dir": str(vdir), "install": "wheelhouse"}
        labdir.record("vagrant_project", dir=str(vdir), provider=provider)
        vdir.mkdir(parents=True, exist_ok=True)
        mgmt = None
        if provider == "libvirt":
            with timer("networks"), host_lock("libvirt-networks"):
                mgmt = choose_mgmt_network(lab)
                details["mgmt_network"] = str(mgmt)
                details["domain_type"] = self.libvirt_options(lab).get("driver", "kvm")
                for net in ("mgmt", "cpo", "evse"):
                    name = vagrantfile.network_name(lab.name, net)
                    labdir.record("libvirt_network", name=name)
                    xml = network_xml(name, vagrantfile.bridge_name(lab.name, net), mgmt if net == "mgmt" else None)
                    path = vdir / f"network-{net}.xml"
                    path.write_text(xml)
                    if virsh("net-info", name, check=False).returncode != 0:
                        virsh("net-create", str(path))
            for h in lab.hosts:
                dom = vagrantfile.domain_name(lab.name, h.name)
                labdir.record("libvirt_domain", name=dom, volume=f"{dom}.img", pool=POOL)
            with timer("box_volume"):
                preload_box_volume(spec.box_for(provider), spec.box_version, progress)
        else:
            for h in lab.hosts:
                labdir.record("virtualbox_vm", name=vagrantfile.domain_name(lab.name, h.name))
        (vdir / "Vagrantfile").write_text(self.render(lab, provider, labdir, mgmt))

        with timer("vagrant_up"):
            self._vagrant_up(lab, labdir, provider, vdir, progress)
        with timer("ssh_config"):
            hosts = self._inventory_hosts(lab, labdir, vdir)
        inv = Inventory(lab=lab.name, backend=self.name, hosts=hosts, details=details)
        with timer("prepare"):
            self._prepare(lab, labdir, inv, progress, timings)
        timings["total"] = round(time.monotonic() - t_start, 1)
        details["timings_s"] = timings
        inv.save(labdir.inventory_file)
        progress(f"lab {lab.name} is up ({len(hosts)} VMs, {timings['total']:.0f} s)", len(hosts), len(hosts))
        return inv

    def _vagrant(self, labdir: LabDir, vdir: Path, log_name: str = "vagrant.log"):
        import vagrant

        log = labdir.logs / log_name
        labdir.logs.mkdir(parents=True, exist_ok=True)
        return vagrant.Vagrant(str(vdir), env=vagrant_env(labdir),
                               out_cm=vagrant.make_file_cm(str(log)), err_cm=vagrant.make_file_cm(str(log)))

    def _vagrant_up(self, lab: Lab, labdir: LabDir, provider: str, vdir: Path, progress: Progress) -> None:
        """``vagrant up`` (parallel where the provider can), output to the progress display and the log.

        A watchdog bounds what Vagrant does not: vagrant-libvirt waits for a VM's DHCP lease practically
        forever, so a VM that never boots would hang ``up``. A VM without a lease ``boot_timeout`` seconds
        after it started, or a ``vagrant up`` still running long past every timeout, is stopped here."""
        names = lab.host_names
        ready: set[str] = set()
        started: dict[str, float] = {}
        log_path = labdir.logs / "vagrant.log"
        lock = threading.Lock()
        finished = threading.Event()
        failure: list[str] = []
        boot_timeout = lab.spec.vagrant.boot_timeout

        def stream(vm: str | None) -> None:
            v = self._vagrant(labdir, vdir)
            with open(log_path, "a", encoding="utf-8") as log:
                try:
                    for line in v.up(vm_name=vm, provider=provider, no_provision=True, stream_output=True):
                        line = line.rstrip()
                        log.write(line + "\n")
                        log.flush()
                        m = re.match(r"^==> (\S+): (.*)$", line)
                        if m:
                            with lock:
                                if "Machine booted and ready" in m.group(2):
                                    ready.add(m.group(1))
                                if m.group(2).startswith(("Starting domain", "Booting VM")):
                                    started.setdefault(m.group(1), time.monotonic())
                                progress(f"{m.group(1)}: {m.group(2)}", len(ready), len(names))
                except subprocess.CalledProcessError:
                    if failure:
                        raise BackendError(failure[0]) from None
                    raise BackendError(self._up_failure(lab, labdir, log_path)) from None

        def watchdog() -> None:
            t0 = time.monotonic()
            deadline = t0 + 3 * boot_timeout + 900
            leased: set[str] = set()
            while not finished.wait(3):
                now = time.monotonic()
                if provider == "libvirt":
                    with lock:
                        waiting = [(h, t) for h, t in started.items() if h not in leased and h not in ready]
                    for h, t in waiting:
                        dom = vagrantfile.domain_name(lab.name, h)
                        if virsh("domifaddr", dom, "--source", "lease", check=False).stdout.strip():
                            leased.add(h)
                        elif now - t > boot_timeout:
                            failure.append(f"{h}: the VM did not boot within {boot_timeout} s (it never asked for "
                                           f"an address on the management network){self._console_tail(labdir, h)}")
                            break
                if not failure and now > deadline:
                    failure.append(f"vagrant up did not finish within {deadline - t0:.0f} s "
                                   f"(VMs ready: {', '.join(sorted(ready)) or 'none'}; log: {log_path})")
                if failure:
                    progress(failure[0], len(ready), len(names))
                    self._kill_vagrant_processes(labdir)
                    return

        progress(f"vagrant up: {len(names)} VMs with {provider}", 0, len(names))
        dog = threading.Thread(target=watchdog, name="labkit-vagrant-watchdog", daemon=True)
        dog.start()
        try:
            if provider == "libvirt":
                stream(None)  # vagrant-libvirt brings machines up in parallel itself
            else:
                # VirtualBox cannot run one `vagrant up` in parallel: the first VM imports the box (linked
                # clone master), then the others come up at once, one vagrant process each.
                stream(names[0])
                with ThreadPoolExecutor(max_workers=max(1, len(names) - 1)) as pool:
                    for f in [pool.submit(stream, n) for n in names[1:]]:
                        f.result()
        finally:
            finished.set()
            dog.join(timeout=10)
        if failure:
            raise BackendError(failure[0])
        not_running = [s.name for s in self._vagrant(labdir, vdir).status() if s.state != "running"]
        if not_running:
            raise BackendError(f"VMs not running after vagrant up: {', '.join(not_running)} "
                               f"(see {log_path})")

    def _up_failure(self, lab: Lab, labdir: LabDir, log_path: Path) -> str:
        """One line saying what went wrong in ``vagrant up``, from its log and the VMs' console logs."""
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        timeout = re.search(r"Timed out while waiting for the machine to boot|Timeout while waiting for domain "
                            r"to get an IP address|waiting for the machine to boot", text)
        who = sorted(set(re.findall(r"^==> (\S+): (?:Removing domain|An error occurred)", text, re.M)))
        boot_timeout = lab.spec.vagrant.boot_timeout
        if timeout:
            no_ip = [h for h in lab.host_names if f"{h}: Waiting for domain to get an IP address" in text
                     and f"{h}: SSH address" not in text.replace("    ", "")]
            got_ip = [h for h in (who or lab.host_names) if h not in no_ip]
            if no_ip:
                tail = self._console_tail(labdir, no_ip[0])
                return (f"{', '.join(no_ip)}: the VM did not boot within {boot_timeout} s (it never asked for an "
                        f"address on the management network){tail}; log: {log_path}")
            return (f"{', '.join(got_ip)}: the VM booted but SSH never answered within {boot_timeout} s; "
                    f"log: {log_path}")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("==>", "    "))]
        last = " ".join(lines[-3:]) if lines else "no output"
        return f"vagrant up failed{' for ' + ', '.join(who) if who else ''}: {last[:400]} (log: {log_path})"

    def _console_tail(self, labdir: LabDir, host: str) -> str:
        path = labdir.logs / f"console-{host}.log"
        try:
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        if not lines:
            return f" (its console printed nothing: {path})"
        return f" (console, last line: {lines[-1][:160]!r}; {path})"

    def _inventory_hosts(self, lab: Lab, labdir: LabDir, vdir: Path) -> list[HostConn]:
        v = self._vagrant(labdir, vdir)
        cfg = parse_ssh_config(v.ssh_config())
        known_hosts = labdir.keys / "known_hosts"
        labdir.keys.mkdir(parents=True, exist_ok=True)
        import paramiko

        hk = paramiko.HostKeys()
        hosts = []
        for h in lab.hosts:
            c = cfg.get(h.name)
            if c is None:
                raise BackendError(f"{h.name}: `vagrant ssh-config` has no entry for it "
                                   f"(see {labdir.logs / 'vagrant.log'})")
            port = int(c["port"])
            try:
                key = offered_host_key(c["hostname"], port)
            except Exception as exc:
                raise BackendError(f"{h.name}: SSH at {c['hostname']}:{port} does not answer ({exc})") from None
            hk.add(c["hostname"] if port == 22 else f"[{c['hostname']}]:{port}", key.get_name(), key)
            hosts.append(HostConn(
                name=h.name, role=h.role, ssh_host=c["hostname"], ssh_port=port, user=c["user"],
                key_file=c["identityfile"], known_hosts=str(known_hosts), sudo=True,
                addresses={k: str(a) for k, a in h.addresses.items()},
                labkit=f"{VENV}/bin/labkit", workdir=WORKDIR, index=h.index))
        hk.save(str(known_hosts))
        return hosts

    # -- provisioning over SSH (in parallel) -------------------------------------------------------------
    def _prepare(self, lab: Lab, labdir: LabDir, inv: Inventory, progress: Progress,
                 timings: dict[str, Any]) -> None:
        """On every host at once: find the data interfaces, route the other data network via the gateway
        (forwarding on the gateway), make sure the system packages are there."""
        from labkit.remote import Remote

        done: list[str] = []
        lock = threading.Lock()

        def prep(host: HostConn) -> float:
            t0 = time.monotonic()
            self._discover_ifaces(remote, host)
            self._routes(remote, lab, host)
            self._system_packages(remote, host)
            remote.run(host, f"install -d -m 0755 -o {host.user} {WORKDIR}", sudo=True)
            with lock:
                done.append(host.name)
                progress(f"{host.name}: routes and system packages ready", len(done), len(inv.hosts))
            return time.monotonic() - t0

        with Remote(inv, log=labdir.logs / "commands.log", connect_timeout=30) as remote:
            with ThreadPoolExecutor(max_workers=min(16, len(inv.hosts))) as pool:
                per_host = dict(zip([h.name for h in inv.hosts], pool.map(prep, inv.hosts), strict=True))
        timings["prepare_per_host"] = {k: round(v, 1) for k, v in per_host.items()}

    def _discover_ifaces(self, remote, host: HostConn) -> None:
        out = remote.run(host, "ip -j -4 addr show").stdout
        links = json.loads(out)
        where = {a["local"]: link["ifname"] for link in links for a in link.get("addr_info", [])}
        for net, addr in host.addresses.items():
            if addr not in where:
                raise BackendError(f"{host.name}: its {net} address {addr} is on no interface (Vagrant did not "
                                   f"configure the private network; addresses seen: {', '.join(sorted(where))})")
            host.ifaces[net] = where[addr]

    def _routes(self, remote, lab: Lab, host: HostConn) -> None:
        nets = lab.spec.networks
        gw = lab.gateway
        if host.role == "gateway":
            remote.run(host, "sysctl -qw net.ipv4.ip_forward=1", sudo=True)
            return
        if host.role == "cpo":
            other, via, dev = nets.evse, gw.addresses["cpo"], host.ifaces["cpo"]
        else:
            other, via, dev = nets.cpo, gw.addresses["evse"], host.ifaces["evse"]
        remote.run(host, f"ip route replace {other} via {via} dev {dev}", sudo=True)

    def _system_packages(self, remote, host: HostConn) -> None:
        script = resource("provisioning") / "host-packages.sh"
        path = "/tmp/labkit-host-packages.sh"
        remote.put(host, str(script), path)
        pairs = " ".join(f"{c}:{p}" for c, p in REQUIRED_COMMANDS.items())
        r = remote.run(host, f"sh {path} {pairs}", sudo=True, check=False, timeout=900)
        if r.exited != 0:
            missing = re.search(r"^MISSING: (.*)$", r.stdout, re.M)
            what = missing.group(1) if missing else (r.stderr.strip() or r.stdout.strip())[-300:]
            raise BackendError(f"{host.name}: system packages missing and no package mirror reachable from the VM: "
                               f"{what} (use a box that has them, e.g. `labkit box build`, or give the VMs a mirror)")

    # -- status ------------------------------------------------------------------------------------------
    def status(self, lab: Lab, labdir: LabDir) -> list[HostState]:
        vdir = labdir.path / "vagrant"
        roles = {h.name: h.role for h in lab.hosts}
        if not (vdir / "Vagrantfile").exists() or not vagrant_bin():
            return [HostState(h.name, h.role, False, "not created") for h in lab.hosts]
        states = {s.name: s for s in self._vagrant(labdir, vdir, "vagrant-status.log").status()}
        out = []
        for name in lab.host_names:
            s = states.get(name)
            state = (s.state or "unknown") if s else "not created"
            out.append(HostState(name, roles[name], state == "running", state,
                                 {"provider": s.provider} if s and s.provider else {}))
        return out

    # -- down --------------------------------------------------------------------------------------------
    def down(self, labdir: LabDir, progress: Progress = no_progress) -> None:
        journal = labdir.journal()
        errors: list[str] = []
        killed = self._kill_vagrant_processes(labdir)
        if killed:
            progress(f"stopped {killed} vagrant process(es) still running for this lab", 0, None)
        projects = [e for e in journal if e.get("kind") == "vagrant_project"]
        for p in projects:
            vdir = Path(p["dir"])
            if (vdir / "Vagrantfile").exists() and (vdir / ".vagrant").exists() and vagrant_bin():
                progress("vagrant destroy", 0, None)
                try:
                    self._vagrant(labdir, vdir, "vagrant-destroy.log").destroy()
                except (subprocess.CalledProcessError, OSError) as exc:
                    errors.append(f"vagrant destroy: {exc}")  # the sweep below still removes the VMs
        domains = [e for e in journal if e.get("kind") == "libvirt_domain"]
        nets = [e for e in journal if e.get("kind") == "libvirt_network"]
        if (domains or nets) and shutil.which("virsh"):
            existing = set(virsh("list", "--all", "--name", check=False).stdout.split())
            for e in reversed(domains):
                name = e["name"]
                if name in existing:
                    progress(f"removing domain {name}", 0, None)
                    virsh("destroy", name, check=False)
                    cp = virsh("undefine", name, "--remove-all-storage", "--nvram", check=False)
                    if cp.returncode != 0:
                        cp = virsh("undefine", name, "--remove-all-storage", check=False)
                    if cp.returncode != 0 and name in set(virsh("list", "--all", "--name", check=False).stdout.split()):
                        errors.append(f"domain {name}: {cp.stderr.strip()}")
                vol = e.get("volume")
                if vol and virsh("vol-info", "--pool", e.get("pool", POOL), vol, check=False).returncode == 0:
                    cp = virsh("vol-delete", "--pool", e.get("pool", POOL), vol, check=False)
                    if cp.returncode != 0:
                        errors.append(f"volume {vol}: {cp.stderr.strip()}")
            for e in reversed(nets):
                name = e["name"]
                if virsh("net-info", name, check=False).returncode == 0:
                    progress(f"removing network {name}", 0, None)
                    virsh("net-destroy", name, check=False)
                    virsh("net-undefine", name, check=False)  # only if someone made it persistent
                    if virsh("net-info", name, check=False).returncode == 0:
                        errors.append(f"network {name} is still there")
        vbox = [e for e in journal if e.get("kind") == "virtualbox_vm"]
        if vbox and shutil.which("VBoxManage"):
            listed = run(["VBoxManage", "list", "vms"], check=False).stdout
            for e in reversed(vbox):
                if f'"{e["name"]}"' in listed:
                    run(["VBoxManage", "controlvm", e["name"], "poweroff"], check=False)
                    cp = run(["VBoxManage", "unregistervm", e["name"], "--delete"], check=False)
                    if cp.returncode != 0:
                        errors.append(f"VirtualBox VM {e['name']}: {cp.stderr.strip()}")
        if errors:
            raise BackendError("down left things behind: " + "; ".join(errors))
        progress("lab removed", 1, 1)

    def _kill_vagrant_processes(self, labdir: LabDir) -> int:
        """Stop the vagrant processes started for this lab (their environment carries the lab's mark), e.g.
        after ``up`` was killed or interrupted: SIGTERM, then SIGKILL after 15 s. Returns how many."""
        import psutil

        mark = str(labdir.path)
        me = psutil.Process()
        spared = {me.pid} | {p.pid for p in me.parents()}
        procs = []
        for p in psutil.process_iter(["pid"]):
            if p.pid in spared:
                continue
            try:
                if p.environ().get(LAB_MARK) == mark:
                    procs.append(p)
            except (psutil.Error, OSError):
                continue
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        return len(procs)


