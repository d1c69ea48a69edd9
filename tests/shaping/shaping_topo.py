"""The data path of a 1-EVSE lab for shaping tests and benchmarks: EVSE -> gateway -> CPO, without SSH.

The namespaces are built by the netns backend's own builder (``labkit.backends.nstopo``), so the path is a
lab's: the hosts ``<prefix>-cpo``, ``<prefix>-gw`` and ``<prefix>-evse`` (host ``evse1``) on the bridges of a
switch namespace ``<prefix>-sw``, with the lab's default addresses, interfaces (the gateway's ``eth1`` CPO side,
``eth2`` EVSE side) and routes; only the management network and the sshd are left out. A
``LocalNetnsRemote`` offers the ``labkit.remote.Remote`` calls shaping.py uses (run, start, stop, put, get) by
running commands with ``ip netns exec`` instead of SSH. Nothing here is a mock of tc, netfilter or the engine:
they are the real kernel and the real ``labkit shaper`` process.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from labkit.backends import common, nstopo
from labkit.errors import RemoteError
from labkit.inventory import HostConn, Inventory
from labkit.model import LabSpec, build_lab
from labkit.profiles import ProfileSet

#: the lab these namespaces place: CPO, gateway and one EVSE, default networks
LAB = build_lab(LabSpec(evse=1))
CPO_ADDR = str(LAB.cpo.addresses["cpo"])  # 192.168.10.10
GW_CPO_ADDR = str(LAB.gateway.addresses["cpo"])  # 192.168.10.1
GW_EVSE_ADDR = str(LAB.gateway.addresses["evse"])  # 192.168.20.1
EVSE_ADDR = str(LAB.evses[0].addresses["evse"])  # 192.168.20.11

REPO = Path(__file__).resolve().parents[2]
ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


def sh(cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({r.returncode}): {r.stderr.strip()}")
    return r


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exited: int
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0


@dataclass
class Topo:
    prefix: str
    workdir: Path
    labkit: str
    inventory: Inventory = field(init=False)
    _cc_restore: tuple[str, str] | None = field(default=None, init=False, repr=False)

    @property
    def topology(self) -> nstopo.Topology:
        return nstopo.Topology.prefixed(LAB, self.prefix, hosts={"evse1": "evse"})

    @property
    def ns(self) -> dict[str, str]:
        """Host name -> namespace (the switch namespace is ``topology.switch``)."""
        return dict(self.topology.namespaces)

    def up(self) -> Topo:
        self.down()
        topo = self.topology
        nstopo.build(topo)  # namespaces, veths, bridges, addresses, routes; the gateway forwards
        self._allow_cubic()
        # Endpoint TCP buffers large enough for the longest, fastest profiles (BDP of 100 Mbit/s x 600 ms):
        # what the lab's provisioning must also set on the CPO and EVSE hosts.
        for n in (self.ns["evse1"], self.ns["cpo"]):
            sh(f"ip netns exec {n} sysctl -qw net.ipv4.tcp_rmem='4096 131072 33554432' "
               f"net.ipv4.tcp_wmem='4096 16384 33554432' net.ipv4.tcp_congestion_control=cubic")
        self.workdir.mkdir(parents=True, exist_ok=True)
        hosts = []
        for h in LAB.hosts:
            wd = self.workdir / h.name
            wd.mkdir(parents=True, exist_ok=True)
            hosts.append(common.host_conn(h, ssh_host=self.ns[h.name], key_file="", known_hosts="",
                                          labkit=self.labkit, workdir=str(wd), ifaces=topo.host_ifaces(h)))
        self.inventory = Inventory(lab=self.prefix, backend="netns-fixture", hosts=hosts,
                                   details={"namespaces": self.ns, "switch": topo.switch})
        return self

    def _allow_cubic(self) -> None:
        """Let the namespaces choose CUBIC, as the netns backend does (``common.allow_congestion_control``).

        A namespace may only pick an algorithm listed in the machine's ``tcp_allowed_congestion_control``;
        a fresh machine may list only its default (EPERM otherwise). The value before is kept and put back
        by ``down`` unless someone changed it again since."""
        before = ALLOWED_CC.read_text().strip()
        if "cubic" in before.split():
            return
        if "cubic" not in (ALLOWED_CC.parent / "tcp_available_congestion_control").read_text().split():
            sh("modprobe tcp_cubic", check=False)
        after = f"{before} cubic".strip()
        ALLOWED_CC.write_text(after + "\n")
        self._cc_restore = (before, after)

    def down(self) -> None:
        if self._cc_restore is not None:
            before, after = self._cc_restore
            self._cc_restore = None
            if ALLOWED_CC.read_text().strip() == after:
                ALLOWED_CC.write_text(before + "\n")
        nstopo.destroy(self.topology)

    def exec(self, host: str, cmd: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return sh(f"ip netns exec {self.ns[host]} {cmd}", check=check, timeout=timeout)


class LocalNetnsRemote:
    """The subset of labkit.remote.Remote that shaping.py uses, over ``ip netns exec`` (no SSH)."""

    def __init__(self, topo: Topo):
        self.topo = topo

    def _ns(self, host: HostConn) -> str:
        return self.topo.ns[host.name]

    def run(self, host: HostConn, command: str, *, sudo: bool = False, check: bool = True,
            timeout: float | None = 60) -> RunResult:
        full = f"ip netns exec {self._ns(host)} sh -c {shlex.quote(command)}"
        r = subprocess.run(full, shell=True, capture_output=True, text=True, timeout=timeout)
        res = RunResult(r.stdout, r.stderr, r.returncode, command)
        if check and r.returncode != 0:
            raise RemoteError(f"{host.name}: {command!r} exited {r.returncode}: {r.stderr.strip()[:300]}")
        return res

    def start(self, host: HostConn, name: str, command: str, *, sudo: bool = False) -> int:
        """Detached like labkit.remote.Remote.start: own session, reparented to init, pid in workdir/name.pid."""
        pidfile, logfile = (shlex.quote(f"{host.workdir}/{name}.{x}") for x in ("pid", "log"))
        inner = f"echo $$ > {pidfile}; exec {command}"
        script = (f"mkdir -p {shlex.quote(host.workdir)} && rm -f {pidfile} && "
                  f"setsid sh -c {shlex.quote(inner)} > {logfile} 2>&1 < /dev/null & "
                  f"for i in $(seq 50); do [ -s {pidfile} ] && break; sleep 0.02; done; cat {pidfile}")
        res = self.run(host, script)
        return int(res.stdout.strip().splitlines()[-1])

    def stop(self, host: HostConn, name: str, *, sudo: bool = False, timeout: float = 5.0) -> bool:
        """SIGTERM the recorded pid, wait, then SIGKILL (as labkit.remote.Remote.stop)."""
        q = shlex.quote(f"{host.workdir}/{name}.pid")
        steps = int(max(timeout, 0.1) / 0.05)
        script = (f"p=$(cat {q} 2>/dev/null) || exit 3; kill -0 \"$p\" 2>/dev/null || {{ rm -f {q}; exit 3; }}; "
                  f"kill -TERM \"$p\"; i=0; while kill -0 \"$p\" 2>/dev/null && [ $i -lt {steps} ]; do "
                  f"sleep 0.05; i=$((i+1)); done; kill -0 \"$p\" 2>/dev/null && kill -KILL \"$p\"; rm -f {q}; exit 0")
        return self.run(host, script, check=False).exited == 0

    def put(self, host: HostConn, local_path: str, remote_path: str) -> None:
        Path(remote_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, remote_path)

    def get(self, host: HostConn, remote_path: str, local_path: str) -> None:
        shutil.copyfile(remote_path, local_path)

    def close(self) -> None:
        pass


def labkit_bin() -> str:
    """The labkit command of the running interpreter's environment."""
    cand = Path(sys.executable).with_name("labkit")
    return str(cand) if cand.exists() else "labkit"


def profiles_from(text: str, filename: str = "test-profiles.yaml") -> ProfileSet:
    """Profiles from YAML text (as a file of that name would give them)."""
    ps = ProfileSet()
    ps.merge_text(textwrap.dedent(text), filename)
    return ps
