"""Proof that lab traffic takes the shaped path through the gateway, checked before any measurement.

A management network (Vagrant's NAT interface, the netns management bridge) is a second path between
hosts. For every EVSE host and the CPO this module checks, over SSH:

1. the kernel's route to the peer's data address goes via the gateway's address on the host's data
   interface (``ip -j route get``);
2. a probe with TTL 1 towards the peer expires at the gateway (the first hop *is* the gateway);
3. the peer's reply arrives with its TTL lowered by exactly one (the way back crosses the gateway too).

Any failure raises ``PathError``: labkit refuses to measure a path it cannot vouch for. A lost probe proves
nothing either way (a loaded machine or the gateway's ICMP rate limit can drop one), so each probe is tried up
to ``ATTEMPTS`` times, about a second apart, before it counts as unanswered; the attempts are recorded.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from labkit.errors import LabkitError
from labkit.inventory import HostConn, Inventory
from labkit.remote import Remote


class PathError(LabkitError):
    """Lab traffic would not cross the gateway."""


def _route(remote: Remote, src: HostConn, dst_addr: str) -> dict[str, Any]:
    out = remote.run(src, f"ip -j route get {shlex.quote(dst_addr)}").stdout
    routes = json.loads(out or "[]")
    return routes[0] if routes else {}


#: tries per probe; the pause between tries (1.1 s) outlasts the gateway's per-destination ICMP rate limit
ATTEMPTS = 3


def _retry(cmd: str, answered: str) -> str:
    """Shell that runs ``cmd`` up to ATTEMPTS times, until its output matches the grep pattern ``answered``;
    prints every try's output, each followed by a line ``@@try N@@``."""
    return (f"for n in $(seq 1 {ATTEMPTS}); do out=$({cmd} 2>&1); echo \"$out\"; echo \"@@try $n@@\"; "
            f"echo \"$out\" | grep -qiE '{answered}' && break; sleep 1.1; done")


def _probe_script(dst: str, ttl_probe: bool) -> str:
    # a TTL-1 probe (must expire at the gateway), then a normal ping (read the reply TTL)
    dst = shlex.quote(dst)
    normal = _retry(f"ping -n -c 1 -W 2 {dst}", "ttl=[0-9]+")
    if not ttl_probe:
        return normal
    return _retry(f"ping -n -c 1 -W 2 -t 1 {dst}", "time to live exceeded|ttl exceeded") + \
        f"; echo '@@labkit@@'; {normal}"


def _tries(out: str) -> int:
    found = re.findall(r"@@try (\d+)@@", out)
    return int(found[-1]) if found else 0


def check_pair(remote: Remote, src: HostConn, dst: HostConn, src_net: str, dst_net: str,
               gateway: HostConn, ttl_probe: bool = True) -> dict[str, Any]:
    """Check the path src -> dst; return the evidence; raise PathError when it does not cross the gateway.

    The TTL-1 probe is optional per pair because the gateway rate-limits the ICMP errors it sends to one
    source (about one a second after a small burst): the CPO probes one EVSE, every EVSE probes the CPO.
    """
    dst_addr = dst.addresses[dst_net]
    gw_addr = gateway.addresses[src_net]
    iface = src.ifaces.get(src_net)
    route = _route(remote, src, dst_addr)
    evidence: dict[str, Any] = {"src": src.name, "dst": dst.name, "dst_addr": dst_addr, "route": route}
    if route.get("gateway") != gw_addr or (iface and route.get("dev") != iface):
        raise PathError(f"refusing to measure: {src.name} reaches {dst.name} ({dst_addr}) via "
                        f"{route.get('gateway', 'a direct route')} dev {route.get('dev', '?')}, "
                        f"not via the gateway {gw_addr} dev {iface}")
    probe = remote.run(src, _probe_script(dst_addr, ttl_probe), check=False).stdout
    parts = probe.split("@@labkit@@\n")
    if ttl_probe:
        expired = parts[0]
        m = re.search(r"From (\S+?):? .*(?:Time to live exceeded|ttl exceeded)", expired, re.I)
        if not m or m.group(1) != gw_addr:
            lines = [ln for ln in expired.strip().splitlines() if ln and not ln.startswith("@@")]
            what = f"expired at {m.group(1)}" if m else f"no answer to {_tries(expired)} tries"
            raise PathError(f"refusing to measure: a TTL-1 probe from {src.name} to {dst_addr} did not expire at "
                            f"the gateway {gw_addr} ({what}; {lines[-1] if lines else 'no output'})")
        evidence["ttl1_expired_at"] = m.group(1)
        evidence["ttl1_tries"] = _tries(expired)
    reply = parts[-1]
    ttl_m = re.search(r"ttl=(\d+)", reply)
    if not ttl_m:
        raise PathError(f"refusing to measure: {src.name} got no reply from {dst.name} ({dst_addr}) "
                        f"to {_tries(reply)} pings")
    evidence["reply_ttl"] = int(ttl_m.group(1))
    evidence["reply_tries"] = _tries(reply)
    return evidence


def check(remote: Remote, inventory: Inventory, evse_names: list[str] | None = None) -> dict[str, Any]:
    """Check every EVSE <-> CPO path (both directions, in parallel); return the evidence for provenance."""
    from concurrent.futures import ThreadPoolExecutor

    gw, cpo = inventory.gateway, inventory.cpo
    evses = [h for h in inventory.evses if evse_names is None or h.name in evse_names]
    jobs = [(e, cpo, "evse", "cpo", True) for e in evses] + [(cpo, e, "cpo", "evse", i == 0)
                                                            for i, e in enumerate(evses)]
    with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
        results = list(pool.map(lambda j: check_pair(remote, j[0], j[1], j[2], j[3], gw, j[4]), jobs))
    ttls = remote.run_many([cpo] + evses, "cat /proc/sys/net/ipv4/ip_default_ttl")
    for ev in results:
        start = int(ttls[ev["dst"]].stdout.strip())
        if ev["reply_ttl"] != start - 1:
            raise PathError(f"refusing to measure: the reply from {ev['dst']} to {ev['src']} arrived with TTL "
                            f"{ev['reply_ttl']}, expected {start - 1} (one hop through the gateway)")
    return {"ok": True, "pairs": results}
