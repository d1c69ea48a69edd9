"""The docker backend: each lab host is a container on a Docker engine, as in the dissertation's container lab.

Layout for lab ``L`` (every object carries the labels ``org.labkit.lab=L``, ``org.labkit.labdir=<path>`` and,
for containers, ``org.labkit.role``/``org.labkit.host``):

- networks ``lk-L-cpo`` and ``lk-L-evse``: internal bridges with the lab's data subnets (``net_cpo``
  192.168.10.0/24 and ``net_evse`` 192.168.20.0/24 by default). They are created with
  ``com.docker.network.bridge.inhibit_ipv4``: this machine holds no address on them, so lab traffic has no way
  round the gateway and the machine's own routes never see the lab's data subnets;
- network ``lk-L-mgmt``: an internal bridge for SSH only (this machine holds its first address);
- containers ``lk-L-<host>``: sshd as the main process (under Docker's init), with the lab's host key,
  authorized_keys and sshd_config bind-mounted read-only at /etc/ssh. The gateway gets ``NET_ADMIN`` (tc,
  iptables NFQUEUE) and nothing else beyond Docker's defaults; the other hosts get Docker's defaults.

Kernel settings a container cannot change from inside (/proc/sys is read-only there) are given at creation:
forwarding on the gateway only, IPv6 off, and on the endpoints the TCP settings ``labkit.provision`` pins
(they read back the same as on netns and VMs). The routes through the gateway are set from outside, in each
container's network namespace (the endpoints themselves hold no NET_ADMIN), and the default route Docker gives
every container is removed, so nothing leaves a lab host but its connected subnets.

The engine is driven with the Docker SDK for Python. Every network and container is journalled before it is
created; ``down`` removes exactly what the journal lists and carries this lab's labels, also after a
``kill -9`` of ``up``, and never touches anything else. Provisioning, shaping, the path check and bench run
over SSH exactly as on the other backends: this module only places hosts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit import machine, sshkeys
from labkit.backends import common
from labkit.backends.base import HostState, Progress, no_progress
from labkit.errors import BackendError, ConfigError
from labkit.inventory import Inventory
from labkit.labdir import LabDir
from labkit.model import Host, Lab
from labkit.provision import CONGESTION_CONTROL, TCP_CC, TCP_MEM, TUNED_ROLES

MGMT_POOL = ipaddress.IPv4Network("10.252.0.0/16")
MGMT_PREFIX = 22
VENV = "/opt/labkit/venv"
WORKDIR = "/var/lib/labkit"
SSH_DIR = "/etc/ssh"
LABEL = "org.labkit"
#: the one capability beyond Docker's defaults, and only on the gateway: tc qdiscs and iptables NFQUEUE rules
GATEWAY_CAPS = ["NET_ADMIN"]
CAP_NET_ADMIN = 12
#: the container's main process (under Docker's init): sshd in the foreground, logging to the container's log
SSHD_COMMAND = f"mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f {SSH_DIR}/sshd_config"


def container_name(lab: str, host: str) -> str:
    return f"lk-{lab}-{host}"


def network_name(lab: str, net: str) -> str:
    return f"lk-{lab}-{net}"


def _engine():
    """The engine's client (labkit.dockerimage says how an unreachable engine is reported)."""
    from labkit import dockerimage

    return dockerimage.engine_client()


def _docker_errors():
    import docker.errors

    return docker.errors


def host_sysctls(h: Host) -> dict[str, str]:
    """The kernel settings given to host ``h``'s container at creation (its /proc/sys is read-only inside)."""
    values = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1",
              "net.ipv4.ip_forward": "1" if h.role == "gateway" else "0"}
    if h.role in TUNED_ROLES:
        values.update(TCP_MEM)
        values.update(TCP_CC)
    return values


def unused_address(net: ipaddress.IPv4Network, used: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    """The highest address of ``net`` no host uses: Docker's IPAM reserves one as the network's gateway (this
    machine never holds it on a data network: inhibit_ipv4)."""
    for addr in reversed(list(net.hosts())):
        if addr not in used:
            return addr
    raise ConfigError(f"networks: {net} has no address left for Docker's reserved gateway address")


class DockerBackend:
    name = "docker"

    def available(self) -> tuple[bool, str]:
        try:
            import docker  # noqa: F401
        except ImportError:
            return False, "the Docker SDK for Python is not installed (pip install docker)"
        try:
            _engine().ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not here"
            return False, str(exc).splitlines()[0]
        return True, "ok"

    # -- preflight: decide everything, change nothing ------------------------------------------------
    def preflight(self, lab: Lab, labdir: LabDir) -> None:
        from labkit import dockerimage

        client = _engine()
        facts = dockerimage.engine_facts(client)
        os_name = str(facts.get("operating_system", ""))
        if "Docker Desktop" in os_name:
            raise ConfigError(
                "backend: docker: this engine is Docker Desktop, whose containers run in its own VM and cannot be "
                "reached by address from this machine; run labkit inside a Linux VM (or use --backend vagrant); "
                "see docs/handout.md, 'Docker Desktop'")
        if facts.get("os_type", "linux") != "linux":
            raise ConfigError(f"backend: docker needs an engine running Linux containers (this one: "
                              f"{facts.get('os_type')})")
        if os.geteuid() != 0:
            raise ConfigError("backend: docker needs root: labkit sets each container's routes in its network "
                              "namespace (run: sudo labkit up ...)")
        if not dockerimage.engine_url().startswith("unix://"):
            raise ConfigError(f"backend: docker needs the engine on this machine (DOCKER_HOST is "
                              f"{dockerimage.engine_url()}): labkit reaches the containers over the engine's "
                              f"bridges and enters their network namespaces")
        for tool in ("ip", "nsenter"):
            if shutil.which(tool) is None:
                raise ConfigError(f"backend: docker needs '{tool}' on this machine (see README: install.sh)")
        if lab.spec.docker.image:
            try:
                client.images.get(lab.spec.docker.image)
            except _docker_errors().ImageNotFound:
                raise ConfigError(f"docker.image: no image {lab.spec.docker.image!r} in this engine "
                                  f"(build one: labkit image build)") from None
        self._check_free(client, lab)

    def _check_free(self, client, lab: Lab) -> None:
        """Refuse a lab whose container or network names are taken, or whose data subnets another Docker
        network holds (the engine refuses overlapping pools)."""
        mine = {container_name(lab.name, h.name) for h in lab.hosts}
        mine |= {network_name(lab.name, key) for key in ("mgmt", "cpo", "evse")}
        prefix = f"lk-{lab.name}-"
        taken = [c.name for c in client.containers.list(all=True, filters={"name": prefix}) if c.name in mine]
        taken += [n.name for n in client.networks.list(names=[prefix]) if n.name in mine]
        if taken:
            raise ConfigError(f"name: Docker already has {sorted(taken)[0]!r} (a lab named {lab.name!r}?); run "
                              f"'labkit down --lab {lab.name}' or choose another --name")
        nets = lab.spec.networks
        for key in ("cpo", "evse"):
            want = getattr(nets, key)
            for name, subnet in _engine_subnets(client):
                if subnet.overlaps(want):
                    raise ConfigError(f"networks.{key}: {want} overlaps Docker network {name!r} ({subnet}); "
                                      f"choose another with --{key}-net")

    def _mgmt_network(self, client, lab: Lab) -> ipaddress.IPv4Network:
        taken = [(f"Docker network {n!r} ({s})", s) for n, s in _engine_subnets(client)]
        if lab.spec.networks.mgmt is not None:
            conflict = common.route_conflict(lab.spec.networks.mgmt, lab.name, taken)
            if conflict:
                raise ConfigError(f"networks.mgmt: {lab.spec.networks.mgmt} overlaps {conflict} on this machine")
            return lab.spec.networks.mgmt
        found = common.free_subnet(MGMT_POOL, lab.spec.evse + 3, MGMT_PREFIX,
                                   lambda n: common.route_conflict(n, lab.name, taken))
        if found is None:
            raise BackendError(f"no free management network left in {MGMT_POOL}; set networks.mgmt in the lab file")
        return found

    # -- up -------------------------------------------------------------------------------------------
    def up(self, lab: Lab, labdir: LabDir, progress: Progress = no_progress) -> Inventory:
        from labkit import dockerimage

        total = 5
        labdir.record("backend", name=self.name, lab=lab.name)
        client = _engine()
        progress("image", 0, total)
        if lab.spec.docker.image:
            img = client.images.get(lab.spec.docker.image)
            image = {"tag": lab.spec.docker.image, "id": img.id, "built": False}
        else:
            built = dockerimage.ensure_image(lab.spec.docker.suite, progress=lambda m, d=0, t=None: progress(
                f"image: {m}", 0, total))
            image = {"tag": built.tag, "id": built.id, "built": built.built, "recipe": built.key}
        facts = dockerimage.engine_facts(client)
        progress("keys", 1, total)
        keys = sshkeys.lab_keys(labdir, [h.name for h in lab.hosts])
        _allow_congestion_control(labdir)
        labels = {f"{LABEL}.lab": lab.name, f"{LABEL}.labdir": str(labdir.path)}

        progress("networks", 1, total)
        nets = lab.spec.networks
        with machine.machine_lock(what="creating Docker networks and choosing a management subnet"):
            self._check_free(client, lab)
            mgmt = self._mgmt_network(client, lab)
            mgmt_addr = {h.name: mgmt[2 + i] for i, h in enumerate(lab.hosts)}
            labdir.write_json("docker.json", {"mgmt": str(mgmt),
                                              "mgmt_addresses": {k: str(v) for k, v in mgmt_addr.items()}})
            used = {a for h in lab.hosts for a in h.addresses.values()}
            plan = {"mgmt": (mgmt, mgmt[1], False), "cpo": (nets.cpo, unused_address(nets.cpo, used), True),
                    "evse": (nets.evse, unused_address(nets.evse, used), True)}
            for key, (subnet, gateway, data) in plan.items():
                name = network_name(lab.name, key)
                labdir.record("docker-network", name=name)
                net = _create_network(client, name, subnet, gateway, data, {**labels, f"{LABEL}.network": key})
                if data:
                    _accept_bridged(labdir, lab.name, key, _bridge(net))
        sshkeys.write_known_hosts(labdir, {str(mgmt_addr[n]): keys.host_public[n] for n in mgmt_addr})

        progress("containers", 2, total)
        for h in lab.hosts:
            labdir.record("docker-container", name=container_name(lab.name, h.name), host=h.name)
        ids = {}
        for h in lab.hosts:
            ids[h.name] = self._create_container(client, lab, labdir, h, image["id"], str(mgmt_addr[h.name]),
                                                 labels)
            progress("containers", 2, total)
        for h in lab.hosts:
            try:
                client.api.start(ids[h.name])
            except _docker_errors().APIError as exc:
                raise BackendError(f"{h.name}: its container did not start: {_explain(exc)}") from None

        progress("routes", 3, total)
        with ThreadPoolExecutor(max_workers=min(8, len(lab.hosts))) as pool:
            ifaces = dict(zip([h.name for h in lab.hosts],
                              pool.map(lambda h: _wire(client, lab, h, ids[h.name]), lab.hosts), strict=True))
        caps = _effective_caps(client, ids[lab.gateway.name])
        if not caps >> CAP_NET_ADMIN & 1:
            raise BackendError("gw: the engine did not grant NET_ADMIN to the gateway container (rootless Docker or "
                               "a policy that drops capabilities?): tc and the shaping engine cannot run there")

        hosts = [common.host_conn(h, ssh_host=str(mgmt_addr[h.name]), key_file=str(keys.client_key),
                                  known_hosts=str(keys.known_hosts), labkit=f"{VENV}/bin/labkit", workdir=WORKDIR,
                                  ifaces=ifaces[h.name]) for h in lab.hosts]
        progress("ready", total, total)
        return Inventory(lab=lab.name, backend=self.name, hosts=hosts, details={
            "install": "wheelhouse", "image": image, "engine": facts, "mgmt": str(mgmt),
            "containers": {h.name: {"name": container_name(lab.name, h.name), "id": ids[h.name][:12],
                                    "cap_add": GATEWAY_CAPS if h.role == "gateway" else []} for h in lab.hosts},
            "networks": {k: {"name": network_name(lab.name, k), "subnet": str(v[0]), "internal": True,
                             "inhibit_ipv4": v[2]} for k, v in plan.items()}})

    def _create_container(self, client, lab: Lab, labdir: LabDir, h: Host, image: str, mgmt_addr: str,
                          labels: dict[str, str]) -> str:
        """Create (not start) host ``h``'s container on the management network, then join its data networks."""
        ssh_dir = _ssh_files(labdir, h.name, mgmt_addr)
        api = client.api
        host_config = api.create_host_config(
            binds={str(ssh_dir): {"bind": SSH_DIR, "mode": "ro"}}, init=True,
            cap_add=GATEWAY_CAPS if h.role == "gateway" else None, sysctls=host_sysctls(h),
            network_mode=network_name(lab.name, "mgmt"))
        networking = api.create_networking_config(
            {network_name(lab.name, "mgmt"): api.create_endpoint_config(ipv4_address=mgmt_addr)})
        try:
            created = api.create_container(
                image, command=["/bin/sh", "-c", SSHD_COMMAND],
                name=container_name(lab.name, h.name), hostname=h.name, host_config=host_config,
                networking_config=networking, detach=True,
                labels={**labels, f"{LABEL}.host": h.name, f"{LABEL}.role": h.role})
            for net, addr in h.addresses.items():
                api.connect_container_to_network(created["Id"], network_name(lab.name, net), ipv4_address=str(addr))
        except _docker_errors().APIError as exc:
            raise BackendError(f"{h.name}: Docker refused the container: {_explain(exc)}") from None
        return created["Id"]

    # -- status ---------------------------------------------------------------------------------------
    def status(self, lab: Lab, labdir: LabDir) -> list[HostState]:
        try:
            client = _engine()
        except (BackendError, ConfigError) as exc:
            return [HostState(h.name, h.role, False, str(exc)) for h in lab.hosts]
        states = []
        for h in lab.hosts:
            name = container_name(lab.name, h.name)
            try:
                c = client.containers.get(name)
            except _docker_errors().NotFound:
                states.append(HostState(h.name, h.role, False, "container missing"))
                continue
            running = c.status == "running"
            states.append(HostState(h.name, h.role, running, c.status,
                                    extra={"container": name, "id": c.id[:12], "image": c.attrs.get("Image", "")}))
        return states

    # -- down -----------------------------------------------------------------------------------------
    def down(self, labdir: LabDir, progress: Progress = no_progress) -> None:
        journal = labdir.journal()
        containers = [e["name"] for e in journal if e["kind"] == "docker-container"]
        networks = [e["name"] for e in journal if e["kind"] == "docker-network"]
        if containers or networks:
            _remove(_engine(), labdir, containers, networks, progress)
        for e in reversed([e for e in journal if e["kind"] == "iptables"]):
            _delete_rule(e)
        common.release_shared_settings(labdir, journal)


def _remove(client, labdir: LabDir, containers: list[str], networks: list[str], progress: Progress,
            timeout: float = 60.0) -> None:
    """Remove the journal's containers and networks that carry this lab's labels, until none is left.

    A killed ``up`` may have sent a create that the engine completes after the kill, even after this looked
    (seen under load: the container appeared, and its networks then refused removal while it was attached).
    So each round also takes every container labelled with this lab directory, and rounds go on until the
    networks are gone; once they are, a create still in flight fails in the engine (its network is missing)."""
    errors = _docker_errors()
    flt = {"label": [f"{LABEL}.lab={labdir.name}", f"{LABEL}.labdir={labdir.path}"]}
    total = len(containers) + len(networks)
    deadline = time.monotonic() + timeout

    def remove(cid: str) -> None:
        try:
            client.api.remove_container(cid, force=True)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal already in progress; the next round sees it gone
                raise

    while True:
        # the low-level list (the SDK's containers.list() inspects each one and fails on one removed meanwhile)
        found = {c["Id"] for c in client.api.containers(all=True, filters=flt)}
        for name in containers:
            try:
                c = client.containers.get(name)
            except errors.NotFound:
                continue
            if _ours(c.labels, labdir):
                found.add(c.id)
        progress("removing containers", 0, total)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(remove, found))
        busy = []
        for name in reversed(networks):
            for n in client.networks.list(names=[name]):
                if n.name == name and _ours(n.attrs.get("Labels") or {}, labdir):
                    try:
                        n.remove()
                    except errors.NotFound:
                        pass
                    except errors.APIError as exc:
                        busy.append(f"{name}: {_explain(exc)}")
        progress("removing networks", total, total)
        if not busy and not client.api.containers(all=True, filters=flt):
            return
        if time.monotonic() > deadline:
            raise BackendError(f"docker: could not remove {busy[0] if busy else 'every container'} "
                               f"(run labkit down again)")
        time.sleep(0.5)


def _ours(labels: dict[str, str], labdir: LabDir) -> bool:
    """Whether a Docker object carries this lab's labels (a namesake from another LABKIT_HOME does not)."""
    return labels.get(f"{LABEL}.lab") == labdir.name and labels.get(f"{LABEL}.labdir") == str(labdir.path)


def _engine_subnets(client) -> list[tuple[str, ipaddress.IPv4Network]]:
    out = []
    for n in client.networks.list():
        for pool in ((n.attrs.get("IPAM") or {}).get("Config") or []):
            try:
                out.append((n.name, ipaddress.IPv4Network(pool.get("Subnet", ""), strict=False)))
            except ValueError:
                continue
    return out


def _create_network(client, name: str, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
                    data: bool, labels: dict[str, str]) -> None:
    import docker.types

    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=str(gateway))])
    options = {"com.docker.network.bridge.enable_ip_masquerade": "false"}
    if data:
        options["com.docker.network.bridge.inhibit_ipv4"] = "true"
    try:
        return client.networks.create(name, driver="bridge", internal=True, ipam=ipam, labels=labels,
                                      options=options, check_duplicate=True)
    except _docker_errors().APIError as exc:
        raise BackendError(f"docker network {name} ({subnet}): {_explain(exc)}") from None


def _bridge(net) -> str:
    """The Linux bridge behind a Docker bridge network."""
    return (net.attrs.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{net.id[:12]}"


def accept_rule(lab: str, key: str, bridge: str) -> list[str]:
    """The iptables rule (without chain) that lets frames bridged inside one of the lab's data networks pass."""
    return ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", f"labkit lab {lab} {key}", "-j", "ACCEPT"]


def _accept_bridged(labdir: LabDir, lab: str, key: str, bridge: str) -> None:
    """Let routed lab traffic cross a data network whatever dockerd does to this machine's firewall.

    dockerd loads br_netfilter (``bridge-nf-call-iptables=1``), so frames bridged between two containers go
    through this machine's iptables FORWARD chain, where Docker's rules for an *internal* network drop
    anything whose source or destination is outside the network's subnet: exactly the lab's traffic, routed
    by the gateway container from one data network to the other (measured: the path check's TTL-1 probe
    never reached the gateway). One ACCEPT rule per data bridge in DOCKER-USER (the chain Docker keeps for
    its users' rules, evaluated first) lets frames that stay on that bridge pass; nothing enters or leaves
    the bridge through it. Journalled before it is inserted; ``down`` deletes it."""
    if subprocess.run(["iptables", "-w", "-S", "DOCKER-USER"], capture_output=True).returncode != 0:
        return  # dockerd runs without its iptables rules: nothing to get round
    spec = accept_rule(lab, key, bridge)
    labdir.record("iptables", chain="DOCKER-USER", spec=spec)
    proc = subprocess.run(["iptables", "-w", "-I", "DOCKER-USER", "1", *spec], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError(f"iptables -I DOCKER-USER ({bridge}): {proc.stderr.strip() or proc.returncode}")


def _delete_rule(entry: dict) -> None:
    subprocess.run(["iptables", "-w", "-D", entry["chain"], *entry["spec"]], capture_output=True)


def _explain(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).splitlines()[0]


def _exec(client, cid: str, script: str) -> str:
    res = client.api.exec_create(cid, ["/bin/sh", "-c", script])
    out = client.api.exec_start(res["Id"]).decode(errors="replace")
    rc = client.api.exec_inspect(res["Id"]).get("ExitCode")
    if rc != 0:
        raise BackendError(f"container {cid[:12]}: {script.split(';')[0][:60]}: {out.strip()[-200:] or f'exit {rc}'}")
    return out


def _wire(client, lab: Lab, h: Host, cid: str) -> dict[str, str]:
    """Find which interface holds each data address; replace Docker's default route by the one route through
    the gateway. Done from outside, in the container's network namespace (``nsenter``: the endpoints hold no
    NET_ADMIN, and Docker 20.10's ``exec --privileged`` cannot raise capabilities above a container's bounding
    set). Returns network -> interface."""
    pid = client.api.inspect_container(cid)["State"]["Pid"]
    if not pid:
        raise BackendError(f"{h.name}: its container is not running")
    ns = ["nsenter", "-t", str(pid), "-n", "ip"]
    links = json.loads(_run([*ns, "-j", "-4", "addr", "show"], h.name) or "[]")
    where = {a["local"]: link["ifname"] for link in links for a in link.get("addr_info", [])}
    ifaces = {}
    for net, addr in h.addresses.items():
        if str(addr) not in where:
            raise BackendError(f"{h.name}: its {net} address {addr} is on no interface of its container")
        ifaces[net] = where[str(addr)]
    _run([*ns, "route", "flush", "exact", "0.0.0.0/0"], h.name)
    if h.role == "gateway":
        # Docker's embedded-DNS NAT rules switch connection tracking on in every container's namespace. On the
        # gateway, where the userspace engine holds packets in its delay queue before they are confirmed, a
        # tracked flow then loses its next packets (an ICMP echo id is one flow: pings 2..RTT/interval of every
        # burst were dropped as conntrack insert_failed, measured). The gateway forwards statelessly, as a
        # netns gateway does (no rule there needs tracking): lab traffic is not tracked.
        for dev in ifaces.values():
            _run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-i", dev,
                  "-j", "CT", "--notrack"], h.name)
    route = common.endpoint_route(lab, h)
    if route:
        dst, via = route
        dev = ifaces["cpo" if h.role == "cpo" else "evse"]
        _run([*ns, "route", "replace", str(dst), "via", str(via), "dev", dev], h.name)
    return ifaces


def _run(argv: list[str], host: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise BackendError(f"{host}: {' '.join(argv[4:7])}: {(proc.stderr.strip() or f'exit {proc.returncode}')}")
    return proc.stdout


def _effective_caps(client, cid: str) -> int:
    out = _exec(client, cid, "grep CapEff /proc/1/status")
    try:
        return int(out.split()[-1], 16)
    except (ValueError, IndexError):
        return 0


def _ssh_files(labdir: LabDir, host: str, mgmt_addr: str) -> Path:
    """hosts/<host>/ssh/: what the container's /etc/ssh holds (bind-mounted read-only): the host key, the lab's
    authorized_keys and the same sshd_config as on netns. Root-owned, 0700/0600, so sshd's StrictModes holds."""
    hd = labdir.host_dir(host)
    cfg = sshkeys.write_sshd_config(labdir, host, mgmt_addr)
    d = hd / "ssh"
    d.mkdir(mode=0o700, exist_ok=True)
    for src, dst, mode in ((hd / "ssh_host_ed25519_key", "ssh_host_ed25519_key", 0o600),
                           (labdir.keys / "authorized_keys", "authorized_keys", 0o600),
                           (cfg, "sshd_config", 0o644)):
        shutil.copyfile(src, d / dst)
        os.chmod(d / dst, mode)
    return d


def _allow_congestion_control(labdir: LabDir) -> None:
    """The endpoints' containers are created with ``tcp_congestion_control`` set (labkit.provision); outside the
    machine's own network namespace Linux accepts only an algorithm listed as allowed (see the netns backend).
    Needs root on the engine's machine; elsewhere the containers keep the engine's default (read back and
    recorded by provisioning)."""
    if os.geteuid() == 0:
        common.allow_congestion_control(labdir, CONGESTION_CONTROL)
