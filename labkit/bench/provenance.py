"""Provenance: what ran where. Kernel, OS, CPUs, memory and tool versions of every host and of this machine."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labkit.inventory import HostConn
from labkit.remote import Remote

#: versions of what affects timing on a host, and the event loop its simulators pick with ``--loop auto``
#: (uvloop where it is installed: labkit.sim.settings.run_loop); the CSMS's and fleets' status files record
#: the loop that really ran (cell.json ``ocpp``)
PY_VERSIONS = ("import sys, importlib.metadata as m, importlib.util as u\n"
               "print('python=' + sys.version.split()[0])\n"
               "for name in ('labkit', 'ocpp', 'websockets', 'uvloop', 'fastjsonschema', 'psutil', 'click'):\n"
               "    try: print(name + '=' + m.version(name))\n"
               "    except Exception as e: print(name + '=missing')\n"
               "print('event_loop=' + ('uvloop' if u.find_spec('uvloop') else 'asyncio'))\n")

HOST_SCRIPT = (
    # an unprivileged SSH user's PATH (vagrant's on a VM) lacks the sbin directories: tc, sysctl and modinfo
    # live there, and without them the manifest said "" and netem "absent" on VMs that have it
    'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH; '
    'echo "kernel=$(uname -r)"; echo "machine=$(uname -m)"; '
    '( . /etc/os-release 2>/dev/null; echo "os=$PRETTY_NAME" ); '
    'echo "cpus=$(nproc)"; echo "mem_bytes=$(awk \'/MemTotal/{print $2*1024}\' /proc/meminfo)"; '
    'echo "iperf3=$(iperf3 --version 2>/dev/null | head -n1)"; echo "tc=$(tc -V 2>/dev/null | head -n1)"; '
    'echo "ping=$(ping -V 2>/dev/null | head -n1)"; '
    'echo "tcp_congestion_control=$(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null)"; '
    'echo "netem=$( (modinfo sch_netem >/dev/null 2>&1 || grep -q sch_netem /proc/modules 2>/dev/null) '
    '&& echo module || '
    '(zcat /proc/config.gz 2>/dev/null | grep -q "^CONFIG_NET_SCH_NETEM=y" && echo builtin) || echo absent)"; '
)


def _parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def host_facts(remote: Remote, host: HostConn) -> dict[str, Any]:
    script = HOST_SCRIPT + f"{shlex.quote(host.python)} -c {shlex.quote(PY_VERSIONS)}"
    res = remote.run(host, script, check=False)
    facts: dict[str, Any] = _parse(res.stdout)
    facts["role"] = host.role
    return facts


def hosts_facts(remote: Remote, hosts: list[HostConn]) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return dict(zip([h.name for h in hosts], pool.map(lambda h: host_facts(remote, h), hosts), strict=True))


def controller_facts() -> dict[str, Any]:
    proc = subprocess.run(["sh", "-c", HOST_SCRIPT], capture_output=True, text=True)
    facts: dict[str, Any] = _parse(proc.stdout)
    script = (PY_VERSIONS + "for name in ('fabric', 'paramiko', 'pandas', 'seaborn'):\n"
              "    try: print(name + '=' + m.version(name))\n    except Exception: print(name + '=missing')\n")
    out = subprocess.run([sys.executable, "-c", script],
                         capture_output=True, text=True).stdout
    facts.update(_parse(out))
    facts["hostname"] = platform.node()
    facts["user"] = os.environ.get("SUDO_USER") or os.environ.get("USER", "")
    return facts
