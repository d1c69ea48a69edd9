"""Apply a profile on the lab's gateway over SSH, read back what the kernel holds, clear it; pick the engine.

Everything goes through a ``labkit.remote.Remote``-like object (``run``, ``start``, ``stop``, ``put``), so the
same code shapes a namespace gateway and a VM. A new profile replaces the old one whole: the old engine and
rules go first, the qdiscs are replaced, the new engine starts and binds its queues before the NFQUEUE
rules send it traffic. Afterwards the qdiscs, classes, rules and the engine's own report are read back,
checked against the plan and returned (and saved where the caller asks): that is what "applied" means.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from labkit import tc
from labkit.errors import ConfigError, LabkitError, RemoteError
from labkit.inventory import HostConn, Inventory
from labkit.profiles import Profile
from labkit.units import format_rate

ENGINES = ("auto", "netem", "userspace")
ENGINE_PROC = "shaper"
CONFIG_NAME = "shaper.json"
STATUS_NAME = "shaper-status.json"
#: how long the engine may take to bind its queues (s)
ENGINE_START_TIMEOUT = 20.0
#: the engine writes its status every second; older than this means it is gone or stuck
STATUS_STALE_S = 5.0


class RemoteLike(Protocol):
    def run(self, host: HostConn, command: str, *, sudo: bool = False, check: bool = True,
            timeout: float | None = None) -> Any: ...

    def start(self, host: HostConn, name: str, command: str, *, sudo: bool = False) -> int: ...

    def stop(self, host: HostConn, name: str, *, sudo: bool = False, timeout: float = 5.0) -> Any: ...

    def put(self, host: HostConn, local_path: str, remote_path: str) -> Any: ...


class ShapingError(LabkitError):
    """Applying, reading back or clearing the shaping failed."""


def gateway_ifaces(inv: Inventory) -> dict[str, str]:
    """direction -> the gateway interface it leaves by (uplink: CPO-facing, downlink: EVSE-facing)."""
    gw = inv.gateway
    try:
        return {"uplink": gw.ifaces["cpo"], "downlink": gw.ifaces["evse"]}
    except KeyError as exc:
        raise ShapingError(f"gateway {gw.name!r} has no interface for network {exc.args[0]!r} in the inventory "
                           f"(ifaces: {gw.ifaces})") from None


def _run(remote: RemoteLike, host: HostConn, cmd: str, *, check: bool = True, timeout: float = 30) -> Any:
    return remote.run(host, cmd, sudo=host.sudo, check=check, timeout=timeout)


# -- engine detection -------------------------------------------------------------------------------------------
NETEM_PROBE = (
    "ip link add lkprobe0 type veth peer name lkprobe1 >/dev/null 2>&1 || exit 3; "
    "tc qdisc add dev lkprobe0 root netem delay 1ms >/dev/null 2>&1; rc=$?; "
    "ip link del lkprobe0 >/dev/null 2>&1; exit $rc"
)


def detect_engine(remote: RemoteLike, gw: HostConn) -> str:
    """``netem`` if the gateway's kernel accepts a netem qdisc (tried on a throwaway veth), else ``userspace``."""
    r = _run(remote, gw, "modprobe -q sch_netem 2>/dev/null; " + NETEM_PROBE, check=False)
    return "netem" if r.exited == 0 else "userspace"


def choose_engine(remote: RemoteLike, gw: HostConn, requested: str = "auto") -> str:
    if requested not in ENGINES:
        raise ConfigError(f"--engine: unknown engine {requested!r} (allowed: {', '.join(ENGINES)})")
    found = detect_engine(remote, gw)
    if requested == "auto":
        return found
    if requested == "netem" and found != "netem":
        raise ConfigError(f"--engine: netem is not available on {gw.name} (its kernel has no sch_netem); "
                          f"use --engine userspace or auto")
    return requested


# -- apply / clear --------------------------------------------------------------------------------------------------
def _paths(gw: HostConn) -> tuple[str, str]:
    wd = gw.workdir.rstrip("/")
    return f"{wd}/{CONFIG_NAME}", f"{wd}/{STATUS_NAME}"


def _tolerant(cmds: list[str]) -> str:
    return "; ".join(f"{c} >/dev/null 2>&1" for c in cmds) + "; true"


def _strict(cmds: list[str]) -> str:
    return " && ".join(cmds)


def stop_engine(remote: RemoteLike, gw: HostConn) -> None:
    try:
        remote.stop(gw, ENGINE_PROC, sudo=gw.sudo, timeout=5)
    except RemoteError:
        pass


def engine_pidfiles(inv: Inventory) -> dict[str, str]:
    """The pid file of the userspace engine on the gateway (``remote.start`` writes ``workdir/<name>.pid``)."""
    return {"engine": f"{inv.gateway.workdir.rstrip('/')}/{ENGINE_PROC}.pid"}


def _shaping_file(labdir: Any) -> Path:
    return Path(getattr(labdir, "path", labdir)) / "shaping.json"


def clear(remote: RemoteLike, inv: Inventory, *, labdir: Any = None) -> dict[str, Any]:
    """Remove every trace of labkit's shaping from the gateway and read back to confirm.

    With ``labdir`` (a LabDir or a path), its ``shaping.json`` goes too."""
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    # rules first (with no engine they would drop traffic), then the engine, then the qdiscs
    _run(remote, gw, _tolerant(tc.clear_nfqueue_rules()))
    stop_engine(remote, gw)
    cmds = [c for d in tc.DIRECTIONS for c in tc.clear_tc_commands(ifaces[d])]
    _run(remote, gw, _tolerant(cmds))
    state = read_back(remote, inv)
    problems = [p for p in _leftovers(state)]
    state["problems"] = problems
    state["cleared"] = not problems
    if problems:
        raise ShapingError(f"clear left shaping behind on {gw.name}: {'; '.join(problems)}")
    if labdir is not None:
        _shaping_file(labdir).unlink(missing_ok=True)
    return state


def apply(remote: RemoteLike, inv: Inventory, profile: Profile | str, *, engine: str | None = "auto",
          seed: int = 1, record: Path | None = None, labdir: Any = None) -> dict[str, Any]:
    """Give the gateway ``profile`` (a Profile or a name; replacing any other), read it back, verify it.

    Returns the applied state; saves it to ``record`` or to ``labdir``'s shaping.json when given."""
    if isinstance(profile, str):
        from labkit import profiles as _profiles

        profile = _profiles.get(profile)  # an unknown name fails here, before anything is touched
    engine = engine or "auto"
    if record is None and labdir is not None:
        record = _shaping_file(labdir)
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    eng = choose_engine(remote, gw, engine)
    config_path, status_path = _paths(gw)
    plan = tc.plan(profile, uplink_iface=ifaces["uplink"], downlink_iface=ifaces["downlink"], engine=eng,
                   seed=seed, status_file=status_path)
    started = time.time()
    # the old profile goes whole: rules, engine, qdiscs
    _run(remote, gw, _tolerant(tc.clear_nfqueue_rules()))
    stop_engine(remote, gw)
    # HTB cannot be changed in place: the old qdiscs go, then the new ones are added (a gap of a few ms)
    _run(remote, gw, _tolerant([c for d in tc.DIRECTIONS for c in tc.clear_tc_commands(ifaces[d])]))
    pid = None
    try:
        for d in tc.DIRECTIONS:
            if plan.tc[d]:
                _run(remote, gw, _strict(plan.tc[d]))
        if plan.engine_config is not None:
            pid = _start_engine(remote, gw, plan.engine_config, config_path, status_path)
            _run(remote, gw, _strict(plan.rules))
    except (RemoteError, ShapingError) as exc:
        try:
            clear(remote, inv)
        except LabkitError:
            pass
        raise ShapingError(f"applying profile {profile.name!r} on {gw.name} failed and was rolled back: "
                           f"{exc}") from None
    state = read_back(remote, inv, engine_pid=pid)
    problems = verify(plan, profile, state)
    state.update({
        "profile": profile.name, "profile_spec": profile.to_dict(), "engine": eng, "seed": seed,
        "plan": plan.to_dict(), "expected": profile.expected(), "applied_at": started, "engine_pid": pid,
        "problems": problems, "verified": not problems,
    })
    if record is not None:
        _save(record, state)
    if problems:
        raise ShapingError(f"profile {profile.name!r} on {gw.name} does not read back as planned: "
                           f"{'; '.join(problems)}")
    return state


def _start_engine(remote: RemoteLike, gw: HostConn, config: dict, config_path: str, status_path: str) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(config, fh, indent=1)
        local = fh.name
    try:
        _run(remote, gw, f"mkdir -p {shlex.quote(gw.workdir)} && rm -f {shlex.quote(status_path)}")
        remote.put(gw, local, config_path)
    finally:
        Path(local).unlink(missing_ok=True)
    cmd = f"{gw.labkit} shaper run --config {shlex.quote(config_path)}"
    pid = remote.start(gw, ENGINE_PROC, cmd, sudo=gw.sudo)
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        status = _engine_status(remote, gw)
        if status and status.get("state") == "running":
            return pid
        if status and status.get("state") in ("failed", "stopped"):
            raise ShapingError(f"the userspace engine on {gw.name} stopped at start: {status.get('error')}"
                               f"{_log_tail(remote, gw)}")
        if _run(remote, gw, f"kill -0 {int(pid)} 2>/dev/null", check=False).exited != 0:
            raise ShapingError(f"the userspace engine on {gw.name} exited at start{_log_tail(remote, gw)}")
        time.sleep(0.1)
    raise ShapingError(f"the userspace engine on {gw.name} did not start within {ENGINE_START_TIMEOUT:g} s"
                       f"{_log_tail(remote, gw)}")


def _log_tail(remote: RemoteLike, gw: HostConn) -> str:
    """The last line of the engine's log (``remote.start`` keeps it in workdir/<name>.log), for errors."""
    path = f"{gw.workdir.rstrip('/')}/{ENGINE_PROC}.log"
    r = _run(remote, gw, f"tail -n 3 {shlex.quote(path)} 2>/dev/null", check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return f": {lines[-1].strip()}" if lines else f" (no log in {path})"


def _engine_status(remote: RemoteLike, gw: HostConn) -> dict | None:
    _, status_path = _paths(gw)
    r = _run(remote, gw, f"cat {shlex.quote(status_path)} 2>/dev/null", check=False)
    if r.exited != 0 or not r.stdout.strip():
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return None


# -- read back ----------------------------------------------------------------------------------------------------
def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def read_back(remote: RemoteLike, inv: Inventory, *, engine_pid: int | None = None) -> dict[str, Any]:
    """What the gateway holds now: per interface ``tc -j qdisc``/``tc -j class``, the NFQUEUE rules with their
    counters, and (``engine_process``) the userspace engine's report and whether its process is alive."""
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    out: dict[str, Any] = {"gateway": gw.name, "ifaces": ifaces, "read_at": time.time(), "directions": {}}
    for d, iface in ifaces.items():
        q = _run(remote, gw, f"tc -j qdisc show dev {shlex.quote(iface)}")
        c = _run(remote, gw, f"tc -j class show dev {shlex.quote(iface)}")
        out["directions"][d] = {"iface": iface, "qdisc": _json_or_text(q.stdout), "class": _json_or_text(c.stdout)}
    r = _run(remote, gw, f"iptables -w -S {tc.CHAIN} 2>/dev/null; echo; "
                         f"iptables -w -L {tc.CHAIN} -n -v -x 2>/dev/null", check=False)
    rules, _, counters = r.stdout.partition("\n\n")
    out["rules"] = [ln for ln in rules.splitlines() if ln.strip()]
    out["rule_counters"] = counters.strip()
    status = _engine_status(remote, gw)
    pid = engine_pid or (status or {}).get("pid")
    if pid and status and status.get("state") == "running":
        # ask the engine for a fresh report (SIGUSR1) rather than one up to a second old
        before = status.get("updated")
        _run(remote, gw, f"kill -USR1 {int(pid)} 2>/dev/null; sleep 0.1", check=False)
        for _ in range(10):
            fresh = _engine_status(remote, gw)
            if fresh and fresh.get("updated") != before:
                status = fresh
                break
            time.sleep(0.05)
    engine: dict[str, Any] = {"status": status}  # the userspace engine's process and its own report
    if pid:
        alive = _run(remote, gw, f"kill -0 {int(pid)} 2>/dev/null", check=False).exited == 0
        engine["pid"] = pid
        engine["alive"] = alive
        if status:
            engine["status_age_s"] = round(time.time() - float(status.get("updated", 0)), 3)
    uses_queue = any("NFQUEUE" in ln for ln in out["rules"])
    if uses_queue and not (engine.get("alive") and status and status.get("state") == "running"):
        engine["warning"] = ("NFQUEUE rules are in place but the userspace engine is not running: the kernel "
                             "drops every packet of the shaped directions (fail-closed)")
    out["engine_process"] = engine
    return out


def _qdiscs(state: dict, d: str) -> list[dict]:
    q = state["directions"][d]["qdisc"]
    return q if isinstance(q, list) else []


def _class_rate_bps(class_out: Any) -> int | None:
    """The rate of class 1:10 from ``tc -j class show`` (JSON) or its text form (older iproute2)."""
    if isinstance(class_out, list):
        for c in class_out:
            if c.get("handle") == tc.CLASS_ID and "rate" in c:
                return int(c["rate"]) * 8  # tc's JSON gives bytes per second
        return None
    m = re.search(r"class htb 1:10 .*?rate (\d+(?:\.\d+)?)([KMG]?)bit", str(class_out))
    if not m:
        return None
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)])


def verify(plan: tc.Plan, profile: Profile, state: dict) -> list[str]:
    """Differences between the plan and what was read back (empty: applied as planned)."""
    problems = []
    for d in tc.DIRECTIONS:
        direction = profile.direction(d)
        kinds = {q.get("kind"): q for q in _qdiscs(state, d)}
        iface = plan.ifaces[d]
        if direction.rate_bps is not None:
            if "htb" not in kinds:
                problems.append(f"{d} ({iface}): no htb qdisc")
                continue
            rate = _class_rate_bps(state["directions"][d]["class"])
            if rate is None or abs(rate - direction.rate_bps) > max(0.01 * direction.rate_bps, 1000):
                problems.append(f"{d} ({iface}): class rate {format_rate(rate) if rate else 'missing'}, "
                                f"planned {format_rate(direction.rate_bps)}")
            leaf = "netem" if (plan.engine == "netem" and direction.needs_delay_line) else "pfifo"
            if leaf not in kinds:
                problems.append(f"{d} ({iface}): no {leaf} leaf")
        elif direction.needs_delay_line and plan.engine == "netem":
            if "netem" not in kinds:
                problems.append(f"{d} ({iface}): no netem qdisc")
        elif "htb" in kinds or "netem" in kinds:
            problems.append(f"{d} ({iface}): should be unshaped but holds {', '.join(k for k in kinds if k)}")
    if plan.engine == "userspace" and plan.engine_config is not None:
        want = {int(q) for q in plan.engine_config["queues"]}
        have = {int(m.group(1)) for ln in state["rules"] for m in [re.search(r"--queue-num (\d+)", ln)] if m}
        if want != have:
            problems.append(f"NFQUEUE rules for queues {sorted(have)}, planned {sorted(want)}")
        eng = state["engine_process"]
        if not eng.get("alive"):
            problems.append("the userspace engine is not running")
    elif state["rules"]:
        problems.append(f"unexpected rules in {tc.CHAIN}")
    return problems


def _leftovers(state: dict) -> list[str]:
    problems = []
    for d in tc.DIRECTIONS:
        kinds = [q.get("kind") for q in _qdiscs(state, d)]
        bad = [k for k in kinds if k in ("htb", "netem", "pfifo", "tbf")]
        if bad:
            problems.append(f"{d} ({state['directions'][d]['iface']}) still holds {', '.join(bad)}")
    if state["rules"]:
        problems.append(f"chain {tc.CHAIN} still exists")
    eng = state.get("engine_process", {})
    if eng.get("alive"):
        problems.append(f"the userspace engine (pid {eng.get('pid')}) is still running")
    return problems


def show(remote: RemoteLike, inv: Inventory) -> dict[str, Any]:
    """The gateway's current shaping (read back), for ``labkit shape --show``."""
    return read_back(remote, inv)


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)
