"""A three-namespace path for the simulator benchmarks: CSMS host <-> gateway <-> EVSE host (prefix ``sm``).

    sm<tag>-cpo  smc<tag>0 10.199.1.2/24 --veth-- smc<tag>1 10.199.1.1/24  sm<tag>-gw (ip_forward=1)
    sm<tag>-evse sme<tag>0 10.199.2.2/24 --veth-- sme<tag>1 10.199.2.1/24  sm<tag>-gw

Each end host routes the other's network via the gateway, so OCPP and ping cross two veths and the
gateway's forwarding, like a lab's data path (unshaped). Loopback is up everywhere. Used as a context
manager: everything is removed on exit, also after an error. Needs root.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

CPO_ADDR = "10.199.1.2"
EVSE_ADDR = "10.199.2.2"


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

    def cmd(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *self.prefix, *argv]


def _cleanup(tag: str) -> None:
    for ns in (f"sm{tag}-cpo", f"sm{tag}-gw", f"sm{tag}-evse"):
        sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def path3(tag: str = "b") -> Iterator[Path3]:
    """Build the path (removing leftovers with the same tag first); remove it on exit."""
    _cleanup(tag)
    p = Path3(f"sm{tag}-cpo", f"sm{tag}-gw", f"sm{tag}-evse")
    try:
        for ns in (p.cpo, p.gw, p.evse):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        c0, c1, e0, e1 = f"smc{tag}0", f"smc{tag}1", f"sme{tag}0", f"sme{tag}1"
        sh("ip", "link", "add", c0, "netns", p.cpo, "type", "veth", "peer", "name", c1, "netns", p.gw)
        sh("ip", "link", "add", e0, "netns", p.evse, "type", "veth", "peer", "name", e1, "netns", p.gw)
        for ns, dev, addr in (
            (p.cpo, c0, f"{CPO_ADDR}/24"),
            (p.gw, c1, "10.199.1.1/24"),
            (p.evse, e0, f"{EVSE_ADDR}/24"),
            (p.gw, e1, "10.199.2.1/24"),
        ):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "netns", "exec", p.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", p.cpo, "route", "add", "10.199.2.0/24", "via", "10.199.1.1")
        sh("ip", "-n", p.evse, "route", "add", "10.199.1.0/24", "via", "10.199.2.1")
        # many connections from one address: widen the ephemeral port range on the EVSE side
        sh("ip", "netns", "exec", p.evse, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
        sh("ip", "netns", "exec", p.cpo, "sysctl", "-qw", "net.core.somaxconn=8192")
        sh("ip", "netns", "exec", p.evse, "ping", "-c", "1", "-W", "2", CPO_ADDR)
        yield p
    finally:
        _cleanup(tag)
