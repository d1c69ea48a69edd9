"""The data path of a 1-EVSE lab for the simulator benchmarks: CSMS host <-> gateway <-> EVSE host (prefix ``sm``).

Built by the netns backend's own builder (``labkit.backends.nstopo``), without the management network and
sshd: the hosts' namespaces on the bridges of a switch namespace, the lab's addresses and routes::

    sm<tag>-cpo  smc<tag>0 10.199.1.10/24 --[sm<tag>-sw: bridge cpo]--  smc<tag>1 10.199.1.1/24  sm<tag>-gw
    sm<tag>-evse sme<tag>0 10.199.2.11/24 --[sm<tag>-sw: bridge evse]-- sme<tag>1 10.199.2.1/24  sm<tag>-gw

The gateway forwards (ip_forward=1) and each end host routes the other's network via the gateway, so OCPP and
ping cross two bridges and the gateway's forwarding, like a lab's data path (unshaped). Loopback is up
everywhere, IPv6 off. The host interfaces keep this module's own names (``smc<tag>1`` and ``sme<tag>1`` are the
gateway's, which engine_pickup.py and probe_resolution.py name). Used as a context manager: everything is
removed on exit, also after an error. Needs root.

    sudo .venv/bin/python benchmarks/sim_netns.py   # build it, ping across it, remove it
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.backends import nstopo  # noqa: E402
from labkit.model import LabSpec, Networks, build_lab  # noqa: E402

#: the lab these namespaces place: CPO (the CSMS host), gateway and one EVSE, on networks of their own
LAB = build_lab(LabSpec(evse=1, networks=Networks(cpo=ipaddress.IPv4Network("10.199.1.0/24"),
                                                  evse=ipaddress.IPv4Network("10.199.2.0/24"))))
CPO_ADDR = str(LAB.cpo.addresses["cpo"])  # 10.199.1.10
EVSE_ADDR = str(LAB.evses[0].addresses["evse"])  # 10.199.2.11


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@dataclass
class Path3:
    cpo: str
    gw: str
    evse: str
    cpo_addr: str = CPO_ADDR
    evse_addr: str = EVSE_ADDR
    prefix: tuple[str, ...] = ()  # e.g. ("nice", "-n", "-10"): put before every command
    switch: str = ""
    gw_cpo_if: str = ""  # the gateway's interface towards the CPO (uplink egress)
    gw_evse_if: str = ""  # the gateway's interface towards the EVSE (downlink egress)

    def cmd(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *self.prefix, *argv]


def topology(tag: str) -> nstopo.Topology:
    """The namespaces of tag ``tag``: ``sm<tag>-{cpo,gw,evse,sw}``, interfaces ``smc<tag>0/1``, ``sme<tag>0/1``."""
    c0, c1, e0, e1 = f"smc{tag}0", f"smc{tag}1", f"sme{tag}0", f"sme{tag}1"
    return nstopo.Topology.prefixed(LAB, f"sm{tag}", hosts={"evse1": "evse"},
                                    ifaces={"cpo": {"cpo": c0}, "gw": {"cpo": c1, "evse": e1}, "evse1": {"evse": e0}})


@contextlib.contextmanager
def path3(tag: str = "b") -> Iterator[Path3]:
    """Build the path (removing leftovers with the same tag first); remove it on exit."""
    topo = topology(tag)
    nstopo.destroy(topo)
    ns = topo.namespaces
    gw_ifaces = topo.host_ifaces(LAB.gateway)
    p = Path3(ns["cpo"], ns["gw"], ns["evse1"], switch=topo.switch, gw_cpo_if=gw_ifaces["cpo"],
              gw_evse_if=gw_ifaces["evse"])
    try:
        nstopo.build(topo)
        # many connections from one address: widen the ephemeral port range on the EVSE side
        sh("ip", "netns", "exec", p.evse, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
        sh("ip", "netns", "exec", p.cpo, "sysctl", "-qw", "net.core.somaxconn=8192")
        sh("ip", "netns", "exec", p.evse, "ping", "-c", "1", "-W", "2", CPO_ADDR)
        yield p
    finally:
        nstopo.destroy(topo)


def main() -> int:
    """Build the path with tag ``q``, show one round trip across it, remove it."""
    with path3("q") as p:
        r = sh(*p.cmd(p.evse, "ping", "-n", "-c", "3", "-i", "0.2", p.cpo_addr))
        print(f"{p.evse} -> {p.cpo} ({p.cpo_addr}) via {p.gw}, switch {p.switch}:")
        print(r.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
