"""Provisioning over SSH: make sure every host can run what labkit will ask of it.

The same code runs on namespaces and on VMs. On netns hosts the file system is shared with this machine, so
labkit is already there, but this is still checked over SSH, which is what proves the VM path. Hosts that
lack labkit get it from a wheelhouse pushed from this machine (labkit.wheelhouse; the vagrant backend).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from labkit.errors import RemoteError
from labkit.inventory import HostConn, Inventory
from labkit.remote import Remote

#: commands each role needs (beyond labkit itself)
NEEDS = {
    "cpo": ["ping", "iperf3"],
    "gateway": ["tc", "ip"],
    "evse": ["ping", "iperf3"],
}


def check_host(remote: Remote, host: HostConn) -> dict[str, str]:
    """Versions of labkit and the tools this host's role needs; raise naming what is missing.

    On the endpoints (CPO, EVSE) the same SSH command also applies the TCP settings (``tune_script``) and
    reads them back, so that a lab of many hosts pays for one round of SSH commands, not two."""
    tools = NEEDS.get(host.role, [])
    script = " ; ".join(
        [f"mkdir -p {shlex.quote(host.workdir)}",
         f"echo labkit=$({shlex.quote(host.labkit)} --version 2>/dev/null | head -n1)"]
        + [f"echo {t}=$(command -v {t} || true)" for t in tools]
        + ([tune_script()] if host.role in TUNED_ROLES else [])
    )
    out = remote.run(host, script, sudo=True).stdout
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    missing = [t for t in tools if not found.get(t)]
    if not found.get("labkit"):
        missing.insert(0, "labkit")
    if missing:
        raise RemoteError(f"{host.name}: missing {', '.join(missing)}")
    return found


#: TCP buffer limits on the endpoints (min default max, bytes): a VSAT-class path (600 ms at 20 Mbit/s) needs a
#: window of 1.5 MB, above Linux's default 6 MB max only just; 32 MB leaves room for slow-start overshoot.
TCP_MEM = {"net.ipv4.tcp_rmem": "4096 131072 33554432", "net.ipv4.tcp_wmem": "4096 16384 33554432"}

#: TCP congestion control on the endpoints. A namespace inherits the machine's choice, and machines differ
#: (some hosts run BBR, which paces below a shaped link's rate on long paths: 85% of 3 Mbit/s at 600 ms RTT,
#: measured here). A charger's modem stack and a stock Linux/Ubuntu VM run CUBIC, so the lab pins it; the
#: value applied is read back and recorded in the run's provenance.
CONGESTION_CONTROL = "cubic"
TCP_CC = {"net.ipv4.tcp_congestion_control": CONGESTION_CONTROL}


#: the roles whose TCP settings labkit sets: the endpoints of every measured connection
TUNED_ROLES = ("cpo", "evse")


def tune_script() -> str:
    """Shell that raises the TCP buffer limits so a long, fast path is limited by the link, not by the window,
    pins the congestion control (TCP_CC), and prints what the host reports back (``key=value`` lines)."""
    settings = {**TCP_MEM, **TCP_CC}
    return "; ".join(f"sysctl -q -w {k}='{v}'" for k, v in settings.items()) + "; " + \
        "; ".join(f"echo {k}=$(sysctl -n {k})" for k in settings)


def provision(remote: Remote, inventory: Inventory,
              progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, dict[str, str]]:
    """Check (and where needed install) labkit and tools on every host, in parallel; tune the endpoints' TCP.

    Returns per host what it reported: labkit's version, the tools' paths and, on the endpoints, the TCP
    settings as read back."""
    from concurrent.futures import ThreadPoolExecutor

    hosts = inventory.hosts
    results: dict[str, dict[str, str]] = {}
    missing_labkit: list[HostConn] = []
    errors: list[str] = []

    def one(h: HostConn):
        try:
            return h, check_host(remote, h), None
        except RemoteError as exc:
            return h, None, str(exc)

    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        for i, (h, found, err) in enumerate(pool.map(one, hosts), 1):
            if progress:
                progress("checking hosts over SSH", i, len(hosts))
            if err and "missing labkit" in err and inventory.details.get("install") == "wheelhouse":
                missing_labkit.append(h)
            elif err:
                errors.append(err)
            else:
                results[h.name] = found
    if errors:
        raise RemoteError(errors[0] + (f" (and {len(errors) - 1} more hosts)" if len(errors) > 1 else ""))
    if missing_labkit:
        from labkit import wheelhouse  # only VMs need it

        wheelhouse.install(remote, missing_labkit, progress=progress)
        for h in missing_labkit:
            results[h.name] = check_host(remote, h)
    return results
