"""Apply a profile on the lab's gateway over SSH, read back what the kernel holds, clear it; pick the engine.

Everything goes through a ``labkit.remote.Remote``-like object (``run``, ``start``, ``stop``, ``put``), so the
same code shapes a namespace gateway and a VM. A new profile replaces the old one whole: the old engine and
rules go first, the qdiscs are replaced, the new engine starts and binds its queues before the NFQUEUE
rules send it traffic. Afterwards the qdiscs, classes, rules and the engine's own report are read back,
checked against the plan and returned (and saved where the caller asks): that is what "applied" means.

A schedule's phases (``labkit.schedules``) are applied once in their common frame (``apply(frame=...)``) and
then switched in place (``stage`` the engine's next parameters, ``switch`` at the planned moment: ``tc class
change`` / ``tc qdisc change`` and SIGHUP to the engine in one command, stamped with the gateway's clock); an
``outage`` is an iptables DROP rule at the top of FORWARD (``outage``), as the bench's.

A profile with a recorded trace (``Direction.trace``): under the userspace engine the trace file is copied to the
gateway's workdir and the engine follows it (and holds the rate); under netem the link is applied at the
trace's first step, read back, and then the change loop (``labkit shaper follow``, labkit.tracefollow) is
started on the gateway to apply each next step in place. What is verified for a traced direction: under the
userspace engine no qdisc of labkit's on its interface and the engine running the planned trace (name,
format, sha256, queue) with the direction's other parameters; under netem the tree and every value of the step
in force (the change loop's report says which; the one before is accepted too, for a change between the two
reads) and the change loop alive, not failed.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from labkit import gwchannel, tc
from labkit.errors import ConfigError, LabkitError, RemoteError
from labkit.inventory import HostConn, Inventory
from labkit.profiles import Profile
from labkit.units import format_rate

ENGINES = ("auto", "netem", "userspace")
ENGINE_PROC = "shaper"
#: the netem engine's change loop for traces (labkit.tracefollow)
TRACER_PROC = "tracer"
TRACER_CONFIG_NAME = "tracer.json"
CONFIG_NAME = "shaper.json"
STATUS_NAME = "shaper-status.json"
#: a schedule's next parameters for the engine, read on SIGHUP
CONTROL_NAME = "shaper-next.json"
#: the rule that cuts the link (the bench's outage uses the same): 100 % loss both ways, under either engine
OUTAGE_RULE = "-m comment --comment labkit-outage -j DROP"
#: how long a switched engine may take to report its new parameters (s)
SWITCH_CONFIRM_TIMEOUT = 3.0
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


def control_path(gw: HostConn) -> str:
    return f"{gw.workdir.rstrip('/')}/{CONTROL_NAME}"


def _tolerant(cmds: list[str]) -> str:
    return "; ".join(f"{c} >/dev/null 2>&1" for c in cmds) + "; true"


def _strict(cmds: list[str]) -> str:
    return " && ".join(cmds)


def stop_engine(remote: RemoteLike, gw: HostConn) -> None:
    """Stop the userspace engine and a trace's change loop (whichever runs)."""
    for name in (TRACER_PROC, ENGINE_PROC):
        try:
            remote.stop(gw, name, sudo=gw.sudo, timeout=5)
        except RemoteError:
            pass
    # a stopped change loop's report would be read as the next profile's
    _run(remote, gw, f"rm -f {shlex.quote(gw.workdir.rstrip('/') + '/tracer-status.json')}", check=False)


def engine_pidfiles(inv: Inventory) -> dict[str, str]:
    """The pid files of the userspace engine and of a trace's change loop on the gateway (``remote.start`` writes
    ``workdir/<name>.pid``): what a killed bench's guard stops."""
    wd = inv.gateway.workdir.rstrip("/")
    return {"engine": f"{wd}/{ENGINE_PROC}.pid", "tracer": f"{wd}/{TRACER_PROC}.pid"}


def _shaping_file(labdir: Any) -> Path:
    return Path(getattr(labdir, "path", labdir)) / "shaping.json"


def clear(remote: RemoteLike, inv: Inventory, *, labdir: Any = None) -> dict[str, Any]:
    """Remove every trace of labkit's shaping from the gateway and read back to confirm.

    With ``labdir`` (a LabDir or a path), its ``shaping.json`` goes too."""
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    # rules first (with no engine they would drop traffic), then the engine, then the qdiscs; a schedule's
    # outage rule goes too
    _run(remote, gw, _tolerant(tc.clear_nfqueue_rules()) + "; " + OUTAGE_OFF)
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


def _resolve(profile: Profile | str) -> Profile:
    if isinstance(profile, str):
        from labkit import profiles as _profiles

        return _profiles.get(profile)  # an unknown name fails here, before anything is touched
    return profile


def _mismatch(problems: list[str]) -> str:
    return "; ".join(problems)


def apply(remote: RemoteLike, inv: Inventory, profile: Profile | str, *, engine: str | None = "auto",
          seed: int = 1, record: Path | None = None, labdir: Any = None,
          frame: tc.Frame | None = None) -> dict[str, Any]:
    """Give the gateway ``profile`` (a Profile or a name; replacing any other), read it back, verify it.

    Every value the kernel (and the userspace engine) reports is compared with the plan (``verify``). On a
    mismatch the link is cleared and a ShapingError names each differing value; nothing is recorded.
    Returns the applied state; saves it to ``record`` or to ``labdir``'s shaping.json when given. With a
    schedule's ``frame``, the profile is applied as that schedule's phase (``switch`` then changes it)."""
    profile = _resolve(profile)
    engine = engine or "auto"
    if record is None and labdir is not None:
        record = _shaping_file(labdir)
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    eng = choose_engine(remote, gw, engine)
    config_path, status_path = _paths(gw)
    plan = tc.plan(profile, uplink_iface=ifaces["uplink"], downlink_iface=ifaces["downlink"], engine=eng,
                   seed=seed, status_file=status_path, frame=frame,
                   control_file=control_path(gw) if frame is not None else None)
    started = time.time()
    # the old profile goes whole: rules, engine, qdiscs (and the record of it)
    if record is not None:
        Path(record).unlink(missing_ok=True)
    _run(remote, gw, _tolerant(tc.clear_nfqueue_rules()) + "; " + OUTAGE_OFF)
    stop_engine(remote, gw)
    # another profile may need another tree of qdiscs (HTB or not, netem or pfifo): the old qdiscs go, then the new
    # ones are added (a gap of a few ms). A schedule's phases share one tree and change in place (labkit.schedules)
    _run(remote, gw, _tolerant([c for d in tc.DIRECTIONS for c in tc.clear_tc_commands(ifaces[d])]))
    pid = None
    try:
        for d in tc.DIRECTIONS:
            if plan.tc[d]:
                _run(remote, gw, _strict(plan.tc[d]))
        if plan.engine_config is not None:
            _put_files(remote, gw, plan.files)
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
    if problems:
        # what the kernel holds is not the profile: nothing may be measured on it
        try:
            clear(remote, inv)
            cleared = "the link was cleared"
        except LabkitError as exc:
            cleared = f"clearing the link failed too ({exc})"
        raise ShapingError(f"profile {profile.name!r} on {gw.name} does not read back as planned, {cleared}: "
                           f"{_mismatch(problems)}")
    if plan.follower is not None:
        try:
            state["trace_follower"] = start_follower(remote, gw, plan.follower)
        except (RemoteError, ShapingError) as exc:
            try:
                clear(remote, inv)
            except LabkitError:
                pass
            raise ShapingError(f"profile {profile.name!r} on {gw.name}: the trace's change loop did not start, the "
                               f"link was cleared: {exc}") from None
    if record is not None:
        _save(record, state)
    return state


def _put_files(remote: RemoteLike, gw: HostConn, files: dict[str, str]) -> None:
    """Copy the files a plan needs (the traces the engine follows) into the gateway's workdir."""
    if not files:
        return
    _run(remote, gw, f"mkdir -p {shlex.quote(gw.workdir)}")
    for there, here in files.items():
        remote.put(gw, here, there)


def start_follower(remote: RemoteLike, gw: HostConn, config: dict[str, Any]) -> dict[str, Any]:
    """Start the netem engine's change loop for a trace on the gateway; returns its first report."""
    wd = gw.workdir.rstrip("/")
    path = f"{wd}/{TRACER_CONFIG_NAME}"
    status = config["status_file"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(config, fh)
        local = fh.name
    try:
        _run(remote, gw, f"mkdir -p {shlex.quote(gw.workdir)} && rm -f {shlex.quote(status)} "
                         f"{shlex.quote(config['log_file'])}")
        remote.put(gw, local, path)
    finally:
        Path(local).unlink(missing_ok=True)
    pid = remote.start(gw, TRACER_PROC, shlex.join([gw.labkit, "shaper", "follow", "--config", path]), sudo=gw.sudo)
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        st = _json_file(remote, gw, status)
        if st and st.get("state") in ("running", "done"):
            return {"pid": pid, "status": st}
        if st and st.get("state") == "failed":
            raise ShapingError(f"the trace's change loop failed: {st.get('error')}")
        if _run(remote, gw, f"kill -0 {int(pid)} 2>/dev/null", check=False).exited != 0:
            raise ShapingError(f"the trace's change loop exited at start{_log_tail(remote, gw, TRACER_PROC)}")
        time.sleep(0.05)
    raise ShapingError(f"the trace's change loop did not start within {ENGINE_START_TIMEOUT:g} s")


def _json_file(remote: RemoteLike, gw: HostConn, path: str) -> dict | None:
    r = _run(remote, gw, f"cat {shlex.quote(path)} 2>/dev/null", check=False)
    if r.exited != 0 or not r.stdout.strip():
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return None


# -- a schedule: in-place switches and the outage ----------------------------------------------------------------
#: the gateway's clock, in seconds (coreutils' date; the last line of every switch command)
GW_CLOCK = "date +%s.%N"
OUTAGE_ON = f"iptables -w -I FORWARD 1 {OUTAGE_RULE}"
OUTAGE_OFF = f"while iptables -w -D FORWARD {OUTAGE_RULE} 2>/dev/null; do :; done"


def phase_plan(profile: Profile, inv: Inventory, engine: str, frame: tc.Frame, seed: int = 1) -> tc.Plan:
    """The plan of ``profile`` as a phase of a schedule with ``frame`` on this gateway."""
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    _, status_path = _paths(gw)
    return tc.plan(profile, uplink_iface=ifaces["uplink"], downlink_iface=ifaces["downlink"], engine=engine,
                   seed=seed, status_file=status_path, frame=frame, control_file=control_path(gw))


def stage(remote: RemoteLike, inv: Inventory, plan: tc.Plan, seq: int) -> None:
    """Put the engine's parameters of ``plan`` where its next SIGHUP reads them (written aside, then renamed,
    so the engine never reads half a file). Nothing to do without the engine."""
    if plan.engine_config is None:
        return
    gw = inv.gateway
    path = control_path(gw)
    data = {"seq": seq, "profile": plan.profile, "queues": plan.engine_config["queues"]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(data, fh, indent=1)
        local = fh.name
    try:
        remote.put(gw, local, f"{path}.tmp")
    finally:
        Path(local).unlink(missing_ok=True)
    _run(remote, gw, f"mv -f {shlex.quote(path + '.tmp')} {shlex.quote(path)}")


def _gw_times(out: str) -> list[float]:
    """The clock readings a command printed (one number a line; anything else is left out)."""
    times = []
    for ln in (out or "").splitlines():
        try:
            times.append(float(ln.strip()))
        except ValueError:
            continue
    return times


def _gw_time(out: str) -> float | None:
    times = _gw_times(out)
    return times[-1] if times else None


def switch(remote: RemoteLike, inv: Inventory, old: tc.Plan, new: tc.Plan, *, seq: int,
           engine_pid: int | None, chan: gwchannel.GatewayChannels | None = None) -> dict[str, Any]:
    """Move the gateway from phase ``old`` to phase ``new`` in place, in one command: the tc changes, then
    SIGHUP to the engine (which reads what ``stage`` put there with this ``seq``), then the gateway's clock.
    Waits until the engine reports ``seq`` running. Returns when it was sent and returned (this machine's
    clock), the gateway's clock after the changes (``gateway_time``), the engine's own time of the swap
    (``engine_at``) and when the new phase held (``applied_at``: the later of the tc changes and the swap).
    A failed command or an engine that refuses or does not confirm is a ShapingError.

    With ``chan`` (labkit.gwchannel) a switch of tc changes alone goes over the open tc channel: then
    ``applied_local`` (this machine's clock once tc answered) stands for the gateway's clock, which it does not
    read; a switch that signals the engine goes over the open shell."""
    gw = inv.gateway
    cmds = tc.switch_commands(old, new)
    hup = new.engine_config is not None and old.engine_config != new.engine_config
    if hup:
        if not engine_pid:
            raise ShapingError(f"switching to {new.profile!r} on {gw.name}: the userspace engine's pid is unknown")
        cmds.append(f"kill -HUP {int(engine_pid)}")
    if chan is not None and not hup and cmds and all(gwchannel.batch_line(c) for c in cmds):
        # over the open tc channel: done when it answers (this machine's clock; no gateway clock read)
        try:
            r = chan.tc_batch(cmds)
        except (gwchannel.ChannelError, RemoteError, OSError) as exc:
            raise ShapingError(f"switching {old.profile!r} -> {new.profile!r} on {gw.name} failed: {exc}") from None
        return {"from": old.profile, "to": new.profile, "commands": cmds, "sent": r["sent"],
                "returned": r["returned"], "gateway_time": None, "engine_at": None, "seq": None,
                "channel": r["channel"], "applied_local": r["returned"], "applied_at": None}
    sent = time.time()
    try:
        if chan is not None:  # over the open shell: no new SSH command, no sudo
            r = chan.shell(" && ".join(cmds + [GW_CLOCK]))
            if r["exited"] != 0:
                tail = (r["stderr"].strip() or r["stdout"].strip()).splitlines()
                raise RemoteError(f"exit {r['exited']}: {tail[-1] if tail else 'no output'}")
            stdout = r["stdout"]
        else:
            stdout = _run(remote, gw, " && ".join(cmds + [GW_CLOCK]), timeout=30).stdout
    except (RemoteError, gwchannel.ChannelError, OSError) as exc:
        raise ShapingError(f"switching {old.profile!r} -> {new.profile!r} on {gw.name} failed: {exc}") from None
    out: dict[str, Any] = {"from": old.profile, "to": new.profile, "commands": cmds, "sent": sent,
                           "returned": time.time(), "gateway_time": _gw_time(stdout), "engine_at": None,
                           "seq": seq if hup else None, "channel": "shell" if chan is not None else "command"}
    if hup:
        deadline = time.monotonic() + SWITCH_CONFIRM_TIMEOUT
        while True:
            params = (_engine_status(remote, gw, chan) or {}).get("params") or {}
            if params.get("seq") == seq:
                out["engine_at"] = params.get("at")
                break
            if params.get("error") and str(params["error"]).startswith(f"seq {seq}:"):
                raise ShapingError(f"the userspace engine on {gw.name} refused the parameters of {new.profile!r}: "
                                   f"{params['error']}")
            if time.monotonic() > deadline:
                raise ShapingError(f"the userspace engine on {gw.name} did not report the parameters of "
                                   f"{new.profile!r} within {SWITCH_CONFIRM_TIMEOUT:g} s{_log_tail(remote, gw)}")
            time.sleep(0.01)
    # applied: when the tc changes were done (the gateway's clock just after them) and the engine swapped
    times = [out["engine_at"]] if hup else []
    if tc.switch_commands(old, new) or not hup:
        times.append(out["gateway_time"])
    times = [t for t in times if t is not None]
    out["applied_at"] = max(times) if times else None
    return out


def outage(remote: RemoteLike, inv: Inventory, on: bool,
           chan: gwchannel.GatewayChannels | None = None) -> dict[str, Any]:
    """Cut the link (``on``: a DROP rule at the top of FORWARD, before labkit's shaping) or restore it (every
    such rule removed). Returns when the command was sent and returned and the gateway's clock before
    (``gateway_before``) and after (``gateway_time``, ``applied_at``) the rule changed."""
    gw = inv.gateway
    sent = time.time()
    # The gateway's clock before and after the rule changes: the rule takes effect in between. (iptables-nft
    # returns from a deletion 14-18 ms after it asked, here, and the rule stops matching before that.)
    # Restoring removes the one rule this cut inserted, reads the clock, then sweeps any duplicate.
    cmd = (f"{GW_CLOCK} && {OUTAGE_ON} && {GW_CLOCK}" if on else
           f"{GW_CLOCK} && iptables -w -D FORWARD {OUTAGE_RULE} && {GW_CLOCK}; {OUTAGE_OFF}")
    try:
        if chan is not None:
            r = chan.shell(cmd)
            if r["exited"] != 0:
                detail = (r["stderr"].strip() or r["stdout"].strip()).splitlines()
                raise RemoteError(f"exit {r['exited']}: {detail[-1] if detail else 'no output'}")
            stdout = r["stdout"]
        else:
            stdout = _run(remote, gw, cmd).stdout
    except (RemoteError, gwchannel.ChannelError, OSError) as exc:
        raise ShapingError(f"{'cutting' if on else 'restoring'} the link on {gw.name} failed: {exc}") from None
    stamps = _gw_times(stdout)
    before, at = (stamps[-2], stamps[-1]) if len(stamps) >= 2 else (None, None)
    return {"outage": on, "sent": sent, "returned": time.time(), "gateway_before": before, "gateway_time": at,
            "applied_at": at}


def gateway_clock(remote: RemoteLike, inv: Inventory,
                  chan: gwchannel.GatewayChannels | None = None) -> dict[str, Any]:
    """The gateway's clock now (and when this machine asked and heard back)."""
    sent = time.time()
    if chan is not None:
        at = chan.shell(GW_CLOCK)["gateway_time"]
    else:
        at = _gw_time(_run(remote, inv.gateway, GW_CLOCK).stdout)
    return {"sent": sent, "returned": time.time(), "gateway_time": at, "applied_at": at}


def engine_in_use(state: dict[str, Any]) -> str:
    """Which engine a read-back shows: ``userspace`` when labkit's NFQUEUE rules or engine are there, else
    ``netem`` (a rate-only profile looks the same under both: HTB with a pfifo leaf)."""
    eng = state.get("engine_process") or {}
    if state.get("rules") or eng.get("alive") or (eng.get("status") or {}).get("state") == "running":
        return "userspace"
    return "netem"


def reverify(remote: RemoteLike, inv: Inventory, profile: Profile | str, *, engine: str | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """Check what the gateway holds *now* against ``profile``, changing nothing: the same read-back and
    value-by-value comparison as ``apply``, for a caller that must know the link is still what it applied
    (before each measurement). ``engine`` is the one it was applied with (default: as the read-back shows);
    ``seed``, when given, must be the engine's. Raises ShapingError naming every differing value."""
    profile = _resolve(profile)
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    state = read_back(remote, inv)
    eng = engine if engine not in (None, "auto") else engine_in_use(state)
    if eng not in tc.ENGINES:
        raise ConfigError(f"--engine: unknown engine {eng!r} (allowed: {', '.join(tc.ENGINES)})")
    _, status_path = _paths(gw)
    running_seed = ((state.get("engine_process") or {}).get("status") or {}).get("seed")
    plan = tc.plan(profile, uplink_iface=ifaces["uplink"], downlink_iface=ifaces["downlink"], engine=eng,
                   seed=seed if seed is not None else (running_seed if isinstance(running_seed, int) else 1),
                   status_file=status_path)
    problems = verify(plan, profile, state)
    state.update({"profile": profile.name, "engine": eng, "plan": plan.to_dict(), "expected": profile.expected(),
                  "problems": problems, "verified": not problems, "reverified_at": time.time()})
    if problems:
        raise ShapingError(f"profile {profile.name!r} on {gw.name}: the link no longer holds what the profile "
                           f"plans (nothing was changed): {_mismatch(problems)}")
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
    cmd = shlex.join([gw.labkit, "shaper", "run", "--config", config_path])
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


def _log_tail(remote: RemoteLike, gw: HostConn, name: str = ENGINE_PROC) -> str:
    """The last line of the engine's log (``remote.start`` keeps it in workdir/<name>.log), for errors."""
    path = f"{gw.workdir.rstrip('/')}/{name}.log"
    r = _run(remote, gw, f"tail -n 3 {shlex.quote(path)} 2>/dev/null", check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return f": {lines[-1].strip()}" if lines else f" (no log in {path})"


def _engine_status(remote: RemoteLike, gw: HostConn, chan: gwchannel.GatewayChannels | None = None) -> dict | None:
    _, status_path = _paths(gw)
    cmd = f"cat {shlex.quote(status_path)} 2>/dev/null"
    if chan is not None:
        got = chan.shell(cmd)
        exited, stdout = got["exited"], got["stdout"]
    else:
        r = _run(remote, gw, cmd, check=False)
        exited, stdout = r.exited, r.stdout
    if exited != 0 or not stdout.strip():
        return None
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


# -- read back ----------------------------------------------------------------------------------------------------
def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def read_back(remote: RemoteLike, inv: Inventory, *, engine_pid: int | None = None) -> dict[str, Any]:
    """What the gateway holds now: per interface ``tc -j qdisc show`` and ``tc -d -j class show`` (JSON from
    iproute2 6.2 on, text before: both are parsed), the version of tc, the NFQUEUE rules with their counters
    and the FORWARD chain's jump, and (``engine_process``) the userspace engine's report and whether its
    process is alive."""
    gw = inv.gateway
    ifaces = gateway_ifaces(inv)
    out: dict[str, Any] = {"gateway": gw.name, "ifaces": ifaces, "read_at": time.time(), "directions": {}}
    v = _run(remote, gw, "tc -V", check=False)
    out["tc_version"] = (v.stdout or "").strip()
    for d, iface in ifaces.items():
        q = _run(remote, gw, f"tc -j qdisc show dev {shlex.quote(iface)}")
        c = _run(remote, gw, f"tc -d -j class show dev {shlex.quote(iface)}")
        out["directions"][d] = {"iface": iface, "qdisc": _json_or_text(q.stdout), "class": _json_or_text(c.stdout)}
    r = _run(remote, gw, f"iptables -w -S {tc.CHAIN} 2>/dev/null; echo; "
                         f"iptables -w -L {tc.CHAIN} -n -v -x 2>/dev/null", check=False)
    rules, _, counters = r.stdout.partition("\n\n")
    out["rules"] = [ln for ln in rules.splitlines() if ln.strip()]
    out["rule_counters"] = counters.strip()
    f = _run(remote, gw, "iptables -w -S FORWARD 2>/dev/null", check=False)
    out["forward_rules"] = [ln for ln in f.stdout.splitlines() if ln.strip()]
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
        alive = _run(remote, gw, _alive_cmd(int(pid)), check=False).exited == 0
        engine["pid"] = pid
        engine["alive"] = alive
        if status:
            engine["status_age_s"] = round(time.time() - float(status.get("updated", 0)), 3)
    uses_queue = any("NFQUEUE" in ln for ln in out["rules"])
    if uses_queue and not (engine.get("alive") and status and status.get("state") == "running"):
        engine["warning"] = ("NFQUEUE rules are in place but the userspace engine is not running: the kernel "
                             "drops every packet of the shaped directions (fail-closed)")
    out["engine_process"] = engine
    tracer_status = _json_file(remote, gw, f"{gw.workdir.rstrip('/')}/tracer-status.json")
    if tracer_status is not None:
        tpid = tracer_status.get("pid")
        alive = bool(tpid) and _run(remote, gw, _alive_cmd(int(tpid)), check=False).exited == 0
        out["trace_follower"] = {"pid": tpid, "alive": alive, "status": tracer_status}
    return out


def _alive_cmd(pid: int) -> str:
    """Exit 0 when process ``pid`` lives: exists and is not a zombie (a killed engine whose parent has not
    reaped it yet still answers ``kill -0``)."""
    return f"kill -0 {pid} 2>/dev/null && [ \"$(sed 's/.*) //' /proc/{pid}/stat | cut -c1)\" != Z ]"


def _qdiscs(state: dict, d: str) -> list[dict]:
    q = state["directions"][d]["qdisc"]
    return q if isinstance(q, list) else []


# -- what tc prints, as ranges ---------------------------------------------------------------------------------------
# tc prints some values rounded. A value read back is therefore turned into the range of kernel values that
# print that way, a planned value into the range of kernel values tc may make of it, and the two must meet.
# Each rounding is tc's own (iproute2 5.15 to 6.15, read on a netem kernel: tests/shaping/data/README.md):
#
# - rates: tc holds them in whole bytes per second (``1001bit`` becomes 125 byte/s = 1000 bit/s), so up to
#   7 bit/s below the plan; ``tc class show`` before iproute2 6.2 prints text (no JSON), where a rate is cut to
#   a whole number of its printed unit (``1234567bit`` prints as ``1234Kbit``);
# - sizes (HTB burst): before iproute2 6.15 tc turns a burst into whole microseconds and 64 ns ticks and back,
#   rounding down twice (3028 B at 26.8 kbit/s reads 3027 B): up to 2 us of the rate plus a byte below the
#   plan; from 6.15 it rounds the ticks up: up to one 64 ns tick of the rate plus a byte above. The text form
#   prints ``4Kb`` / ``1Mb`` for sizes within 16 / 1024 bytes of a multiple of 1024 / 1048576;
# - delay and jitter: before iproute2 6.9 tc gives netem 64 ns ticks (rounded down: 12345 us runs as
#   12344.96 us) and prints whole microseconds rounded down (12344 us); from 6.9 it gives and prints
#   nanoseconds. JSON prints seconds with six significant digits (%g: 1.234567 s prints as 1.23457);
# - loss, corruption, duplication: netem holds a fraction of 2^32 - 1, and JSON prints that fraction with six
#   significant digits;
# - counts (limits, quantum) and the htb default class are exact.
U32 = 0xFFFFFFFF
PSCHED_TICK_US = 0.064  # the kernel's packet-scheduler tick (PSCHED_SHIFT 6: 64 ns)


def _g6_half(x: float) -> float:
    """Half a unit in the last place of ``x`` printed with %g (six significant digits)."""
    if x == 0:
        return 0.0
    return 0.5 * 10 ** (math.floor(math.log10(abs(x))) - 5)


def _meet(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] + 1e-9 and b[0] <= a[1] + 1e-9


_RATE_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
               "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


Reading = tuple[float, float, float]  # (lowest, highest kernel value that prints so, the value printed)


def _text_rate(text: str) -> Reading | None:
    """``1234Kbit`` -> the range of bit/s tc prints that way (it cuts to a whole number of the unit)."""
    m = re.fullmatch(r"(\d+)([KMGT]i?|)bit", text)
    if not m:
        return None
    unit = _RATE_UNITS[m.group(2)]
    n = int(m.group(1)) * unit
    return (n, n + unit - 1, n)


def _text_size(text: str) -> Reading | None:
    """``3027b`` / ``4Kb`` / ``1Mb`` (optionally ``/cell``) -> the range of bytes tc prints that way."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(b|Kb|Mb)(?:/\d+)?", text)
    if not m:
        return None
    n = float(m.group(1))
    if m.group(2) == "b":
        return (n, n, n)
    if m.group(2) == "Kb":
        return (n * 1024 - 15, n * 1024 + 15, n * 1024)
    return (n * 1048576 - 1023, n * 1048576 + 1023, n * 1048576)


def _handle(value: Any) -> str:
    """A qdisc handle as tc's text prints it: ``"10:"`` (JSON from 6.2 gives a class's leaf as ``"0x10"``)."""
    text = str(value)
    if text.startswith("0x"):
        return f"{int(text, 16):x}:"
    return text


def parse_classes(out: Any) -> list[dict[str, Any]]:
    """``tc [-d] -j class show`` as records: kind, handle, root, parent, leaf, and for HTB the ranges of
    rate/ceil (bit/s) and burst/cburst (bytes) and the quantum. iproute2 before 6.2 ignores ``-j`` for
    classes and prints text; 6.2 and later print JSON (rates in byte/s, sizes in bytes)."""
    records: list[dict[str, Any]] = []
    if isinstance(out, list):
        for c in out:
            rec: dict[str, Any] = {"kind": c.get("class"), "handle": c.get("handle"), "root": bool(c.get("root")),
                                   "parent": c.get("parent"), "leaf": _handle(c["leaf"]) if c.get("leaf") else None}
            for key in ("rate", "ceil"):
                if isinstance(c.get(key), int):
                    rec[key] = (c[key] * 8,) * 3
            for key in ("burst", "cburst"):
                if isinstance(c.get(key), int):
                    rec[key] = (c[key],) * 3
            if isinstance(c.get("quantum"), int):
                rec["quantum"] = c["quantum"]
            records.append(rec)
        return records
    for line in str(out or "").splitlines():
        m = re.match(r"class (\S+) (\S+) (?:root|parent (\S+)) (?:leaf (\S+) )?(.*)$", line.strip())
        if not m:
            continue
        rec = {"kind": m.group(1), "handle": m.group(2), "root": m.group(3) is None, "parent": m.group(3),
               "leaf": m.group(4)}
        words = m.group(5).split()
        for key, value in zip(words, words[1:], strict=False):
            if key in ("rate", "ceil") and key not in rec:
                rec[key] = _text_rate(value)
            elif key in ("burst", "cburst") and key not in rec:
                rec[key] = _text_size(value)
            elif key == "quantum" and value.isdigit():
                rec["quantum"] = int(value)
        records.append(rec)
    return records


def _fmt_rate(bps: float) -> str:
    return format_rate(bps)


def _fmt_us(us: float) -> str:
    return f"{us / 1000:.6g} ms" if us >= 1000 or us == 0 else f"{us:.6g} us"


def _fmt_bytes(n: float) -> str:
    return f"{n:.0f} bytes"


def _fmt_pct(p: float) -> str:
    return f"{p:.6g} %"


class _Check:
    """Collects the differences of one direction as ``<direction> (<where>) <field>: applied X, planned Y``."""

    def __init__(self, where: str):
        self.where = where
        self.problems: list[str] = []

    def add(self, field: str, applied: str, planned: str) -> None:
        self.problems.append(f"{self.where} {field}: applied {applied}, planned {planned}")

    @staticmethod
    def pair(fmt, applied: float, planned: float) -> tuple[str, str]:
        a, p = fmt(applied), fmt(planned)
        if a == p:  # both print the same when rounded for people: say the exact figures
            unit = {_fmt_rate: " bit/s", _fmt_us: " us", _fmt_pct: " %", _fmt_bytes: " bytes"}.get(fmt, "")
            a, p = f"{applied:.12g}{unit}", f"{planned:.12g}{unit}"
        return a, p

    def exact(self, field: str, applied: Any, planned: Any, fmt=str) -> None:
        if applied != planned:
            self.add(field, "none" if applied is None else fmt(applied), "none" if planned is None else fmt(planned))

    def ranged(self, field: str, read: Reading | None, planned: tuple[float, float], planned_value: float,
               fmt) -> None:
        if read is None:
            self.add(field, "unreadable", fmt(planned_value))
        elif not _meet(read[:2], planned):
            self.add(field, *self.pair(fmt, read[2], planned_value))


def _rate_range(bps: int) -> tuple[float, float]:
    # tc holds whole bytes per second
    return (bps - 7, bps)


def _burst_range(size: int, rate_bps: int) -> tuple[float, float]:
    # tc's round trip of a burst through whole microseconds and 64 ns ticks (see the table above)
    per_us = rate_bps / 8 / 1e6
    return (size - 2 * per_us - 1, size + PSCHED_TICK_US * per_us + 1)


def _delay_ok(read_s: float, planned_us: int) -> bool:
    read_us = read_s * 1e6
    half = _g6_half(read_s) * 1e6
    # kernel value: planned rounded down to a 64 ns tick (tc < 6.9) or exact; read: cut to a whole us (tc < 6.9)
    # or exact, then %g
    return _meet((read_us - half, read_us + half + 1.0), (planned_us - PSCHED_TICK_US, planned_us))


def _fraction_ok(read: float, planned_pct: float) -> bool:
    # netem holds rint(p * (2^32 - 1)); JSON prints the fraction with %g
    return abs(read - planned_pct / 100.0) <= _g6_half(read) + 1.0 / U32


def _check_netem(c: _Check, n: tc.Netem, opts: dict[str, Any]) -> None:
    c.exact("netem limit", opts.get("limit"), n.limit, lambda v: f"{v} packets")
    delay = opts.get("delay") or {}
    d_s, j_s = float(delay.get("delay", 0) or 0), float(delay.get("jitter", 0) or 0)
    if not _delay_ok(d_s, n.delay_us):
        c.add("netem delay", *c.pair(_fmt_us, d_s * 1e6, n.delay_us))
    if not _delay_ok(j_s, n.jitter_us):
        c.add("netem jitter", *c.pair(_fmt_us, j_s * 1e6, n.jitter_us))
    # netem does not report its delay distribution (the kernel keeps the table and dumps no trace of it)
    for key, field, planned in (("loss-random", "loss", n.loss_pct), ("corrupt", "corrupt", n.corrupt_pct),
                                ("duplicate", "duplicate", n.duplicate_pct)):
        got = float((opts.get(key) or {}).get(field, 0) or 0)
        if not _fraction_ok(got, planned):
            c.add(f"netem {field}", *c.pair(_fmt_pct, got * 100, planned))
    for key in ("delay", "loss-random", "corrupt", "duplicate"):
        corr = (opts.get(key) or {}).get("correlation", 0) or 0
        if corr:
            c.add(f"netem {key} correlation", _fmt_pct(float(corr) * 100), "0 %")
    _check_gemodel(c, n, opts.get("loss-gemodel"))
    for key in ("loss-state", "reorder", "slot"):
        if key in opts:
            c.add(f"netem {key}", json.dumps(opts[key], sort_keys=True), "none")
    if opts.get("ecn"):
        c.add("netem ecn", "on", "off")
    if opts.get("gap"):
        c.add("netem gap", str(opts["gap"]), "0")
    rate = opts.get("rate") or {}
    got_rate = rate.get("rate")
    if n.rate_bps is None:
        if got_rate:
            c.add("netem rate", _fmt_rate(got_rate * 8), "none")
    elif not isinstance(got_rate, int):
        c.add("netem rate", "none", _fmt_rate(n.rate_bps))
    elif not _meet((got_rate * 8, got_rate * 8), _rate_range(n.rate_bps)):
        c.add("netem rate", *c.pair(_fmt_rate, got_rate * 8, n.rate_bps))
    for key in ("packetoverhead", "cellsize", "celloverhead"):
        if rate.get(key):
            c.add(f"netem rate {key}", str(rate[key]), "0")


def _check_gemodel(c: _Check, n: tc.Netem, got: Any) -> None:
    """netem's ``loss gemodel``: tc -j prints it as {"p", "r", "1-h", "1-k"}, each a fraction with six
    significant digits (iproute2's q_netem.c, from 5.2 on)."""
    if n.gemodel is None:
        if got:
            c.add("netem loss-gemodel", json.dumps(got, sort_keys=True), "none")
        return
    if not isinstance(got, dict):
        c.add("netem loss gemodel", "none", " ".join(f"{k} {_fmt_pct(v)}" for k, v in
                                                      zip(tc.GEMODEL_KEYS, n.gemodel, strict=True)))
        return
    for key, planned in zip(tc.GEMODEL_KEYS, n.gemodel, strict=True):
        value = got.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            c.add(f"netem loss gemodel {key}", "unreadable" if key in got else "none", _fmt_pct(planned))
        elif not _fraction_ok(float(value), planned):
            c.add(f"netem loss gemodel {key}", *c.pair(_fmt_pct, float(value) * 100, planned))


def _check_leaf(c: _Check, leaf: tc.Netem | tc.Fifo, q: dict[str, Any] | None, role: str) -> None:
    kind = "netem" if isinstance(leaf, tc.Netem) else "pfifo"
    if q is None:
        c.add(role, "none", f"{kind} {tc.LEAF_HANDLE}")
        return
    if q.get("kind") != kind or q.get("handle") != tc.LEAF_HANDLE:
        c.add(role, f"{q.get('kind')} {q.get('handle')}", f"{kind} {tc.LEAF_HANDLE}")
        return
    opts = q.get("options") or {}
    if isinstance(leaf, tc.Netem):
        _check_netem(c, leaf, opts)
    else:
        c.exact("pfifo limit", opts.get("limit"), leaf.limit, lambda v: f"{v} packets")


def _check_htb(c: _Check, h: tc.HtbClass, root: dict[str, Any], class_out: Any) -> str | None:
    """The HTB root's default class and class 1:10's values; returns the class's leaf handle."""
    default = (root.get("options") or {}).get("default")
    try:
        default_class = int(str(default), 16)
    except ValueError:
        default_class = None
    c.exact("htb default class", default_class, h.default_class, lambda v: f"{v:x}")
    classes = [r for r in parse_classes(class_out) if r.get("kind") == "htb"]
    cls = next((r for r in classes if r.get("handle") == tc.CLASS_ID), None)
    if cls is None:
        c.add(f"htb class {tc.CLASS_ID}", "none", f"rate {_fmt_rate(h.rate_bps)}")
        return None
    for r in classes:
        if r is not cls:
            c.add(f"htb class {r.get('handle')}", "present", "none")
    if not cls["root"]:
        c.add(f"htb class {tc.CLASS_ID} parent", str(cls.get("parent")), "root")
    for key, planned in (("rate", h.rate_bps), ("ceil", h.ceil_bps)):
        c.ranged(f"htb {key}", cls.get(key), _rate_range(planned), planned, _fmt_rate)
    for key, planned in (("burst", h.burst_bytes), ("cburst", h.cburst_bytes)):
        rate = h.rate_bps if key == "burst" else h.ceil_bps
        c.ranged(f"htb {key}", cls.get(key), _burst_range(planned, rate), planned, _fmt_bytes)
    if "quantum" in cls:  # printed with -d only (read_back asks for it)
        c.exact("htb quantum", cls["quantum"], h.quantum, lambda v: f"{v} bytes")
    return cls.get("leaf")


#: qdisc kinds labkit applies; the kernel's own defaults (noqueue, mq, pfifo_fast, fq_codel) are not these
LABKIT_KINDS = ("htb", "netem", "pfifo", "tbf")


def verify_direction(direction: str, iface: str, lay: tc.Layout, qdisc_out: Any, class_out: Any) -> list[str]:
    """Differences between one direction's planned layout and ``tc -j qdisc show`` / ``tc -d -j class show``
    of its interface."""
    c = _Check(f"{direction} ({iface})")
    if not isinstance(qdisc_out, list):
        c.add("qdiscs", f"unreadable ({str(qdisc_out)[:60]!r})", "tc -j output")
        return c.problems
    # the ingress side (ingress, clsact) is not labkit's
    qdiscs = [q for q in qdisc_out if q.get("kind") not in ("ingress", "clsact")]
    root = next((q for q in qdiscs if q.get("root")), None)
    if lay.empty:
        if root is not None and root.get("kind") in LABKIT_KINDS:
            c.add("root qdisc", f"{root.get('kind')} {root.get('handle')}", "the interface's default (unshaped)")
        return c.problems
    seen = []
    if lay.htb is not None:
        if root is None or root.get("kind") != "htb" or root.get("handle") != tc.ROOT_HANDLE:
            c.add("root qdisc", f"{root.get('kind')} {root.get('handle')}" if root else "none",
                  f"htb {tc.ROOT_HANDLE}")
            return c.problems
        seen.append(root)
        class_leaf = _check_htb(c, lay.htb, root, class_out)
        leaves = [q for q in qdiscs if q.get("parent") == tc.CLASS_ID]
        leaf = leaves[0] if leaves else None
        _check_leaf(c, lay.leaf, leaf, f"leaf qdisc of {tc.CLASS_ID}")
        seen.extend(leaves[:1])
        if leaf is not None and class_leaf is not None and class_leaf != leaf.get("handle"):
            c.add(f"htb class {tc.CLASS_ID} leaf", str(class_leaf), str(leaf.get("handle")))
    else:
        _check_leaf(c, lay.leaf, root, "root qdisc")
        seen.append(root)
    for q in qdiscs:
        if q not in seen:
            c.add(f"qdisc {q.get('kind')} {q.get('handle')} (parent {q.get('parent', 'root')})", "present", "none")
    return c.problems


def _rule_specs(plan: tc.Plan) -> list[str]:
    """The ``iptables -S`` lines the plan's rules give in chain LABKIT-SHAPE."""
    return [r.split("iptables -w ", 1)[1] for r in plan.rules if f" -A {tc.CHAIN} " in r]


def _check_engine(plan: tc.Plan, state: dict[str, Any]) -> list[str]:
    """The userspace engine: alive, running the plan's profile, and per queue the parameters it reports
    running (delay, jitter, distribution, reorder, loss, corrupt, duplicate, queue length) equal to the plan;
    each queue bound in the kernel. The engine holds what it was given (ns, probabilities) and reports it
    unrounded, so the comparison is exact."""
    problems = []
    cfg = plan.engine_config or {}
    eng = state.get("engine_process") or {}
    status = eng.get("status") or {}
    if not eng.get("alive") or status.get("state") != "running":
        last = f"its last report says {status['state']}" if status.get("state") else "no report"
        return [f"userspace engine: applied {'dead' if eng.get('pid') else 'not running'} ({last}), "
                f"planned running"]
    age = eng.get("status_age_s")
    if isinstance(age, (int, float)) and age > STATUS_STALE_S:
        problems.append(f"userspace engine report: applied {age:g} s old, planned at most {STATUS_STALE_S:g} s")
    if status.get("profile") != cfg.get("profile"):
        problems.append(f"userspace engine profile: applied {status.get('profile')!r}, planned {cfg.get('profile')!r}")
    if "seed" in cfg and status.get("seed") != cfg["seed"]:
        problems.append(f"userspace engine seed: applied {status.get('seed')}, planned {cfg['seed']}")
    served = {q.get("queue"): q for q in status.get("queues", [])}
    ifaces = plan.ifaces
    for num, want in (cfg.get("queues") or {}).items():
        d = want["direction"]
        path = (f"{ifaces['downlink']} -> {ifaces['uplink']}" if d == "uplink"
                else f"{ifaces['uplink']} -> {ifaces['downlink']}")
        c = _Check(f"{d} ({path}, NFQUEUE {num})")
        got = served.pop(int(num), None)
        if got is None:
            c.add("engine queue", "not served", "served")
            problems += c.problems
            continue
        run = got.get("running")
        if not isinstance(run, dict):
            c.add("engine parameters", "not reported (an engine older than this labkit)", "reported")
            problems += c.problems
            continue
        c.exact("engine direction", run.get("direction"), d)
        for key, field in (("delay_ns", "delay_ms"), ("jitter_ns", "jitter_ms")):
            planned_ns = int(round(want[field] * 1e6))
            c.exact(f"engine {key[:-3]}", run.get(key), planned_ns, lambda v: _fmt_us(v / 1000))
        if want["jitter_ms"]:
            c.exact("engine distribution", run.get("distribution"), want["distribution"])
        c.exact("engine reorder", run.get("reorder"), want["reorder"])
        for key, field in (("loss", "loss_pct"), ("corrupt", "corrupt_pct"), ("duplicate", "duplicate_pct")):
            applied = run.get(key)
            if applied != want[field] / 100.0:
                c.add(f"engine {key}", "none" if applied is None else _fmt_pct(applied * 100),
                      _fmt_pct(want[field]))
        _check_engine_gemodel(c, run.get("gemodel"), want.get("gemodel"))
        if want.get("trace") is not None or run.get("trace") is not None:
            planned_trace = None if want.get("trace") is None else {
                k: want["trace"][k] for k in ("name", "format", "sha256", "queue_pkts")}
            got_trace = run.get("trace")
            if got_trace is not None:
                got_trace = {k: got_trace.get(k) for k in ("name", "format", "sha256", "queue_pkts")}
            if got_trace != planned_trace:
                c.add("engine trace", json.dumps(got_trace, sort_keys=True), json.dumps(planned_trace, sort_keys=True))
        c.exact("engine queue length", run.get("maxlen"), want["maxlen"], lambda v: f"{v} packets")
        if "kernel" not in got:
            c.add("engine queue binding", "not bound in the kernel", "bound")
        problems += c.problems
    for num, got in sorted(served.items(), key=lambda kv: str(kv[0])):
        problems.append(f"{got.get('direction')} (NFQUEUE {num}) engine queue: applied served, planned none")
    return problems


def _check_engine_gemodel(c: _Check, applied: Any, planned: dict[str, float] | None) -> None:
    """The engine's Gilbert-Elliott parameters (probabilities, reported unrounded) against the plan's
    (percent): exact, as for its other values."""
    if planned is None:
        if applied:
            c.add("engine loss gemodel", json.dumps(applied, sort_keys=True), "none")
        return
    if not isinstance(applied, dict):
        c.add("engine loss gemodel", "none", " ".join(f"{k} {_fmt_pct(planned[k])}" for k in tc.GEMODEL_KEYS))
        return
    for key in tc.GEMODEL_KEYS:
        got = applied.get(key)
        if got != planned[key] / 100.0:
            c.add(f"engine loss gemodel {key}", "none" if got is None else _fmt_pct(got * 100), _fmt_pct(planned[key]))


def verify(plan: tc.Plan, profile: Profile, state: dict) -> list[str]:
    """Differences between the plan and what was read back (empty: applied as planned), value by value:
    qdiscs and their handles, the HTB default class and class 1:10 (rate, ceil, burst, cburst, quantum), the
    leaf (netem: limit, delay, jitter, loss, corruption, duplication, its ordering rate and nothing else;
    pfifo: limit), labkit's rules, and under the userspace engine what the engine reports running. Each
    difference reads ``<direction> (<interface>) <field>: applied X, planned Y``."""
    problems: list[str] = []
    for d in tc.DIRECTIONS:
        lay = plan.layouts.get(d) or tc.layout(profile, d, plan.engine)
        read = state["directions"][d]
        if plan.follower is not None and profile.direction(d).trace is not None and "trace_follower" in state:
            problems += _verify_traced(plan, profile, d, state)
            continue
        problems += verify_direction(d, plan.ifaces[d], lay, read["qdisc"], read["class"])
    want_rules = _rule_specs(plan)
    have_rules = [ln for ln in state.get("rules", []) if ln.startswith(f"-A {tc.CHAIN} ")]
    if want_rules != have_rules:
        problems.append(f"rules in {tc.CHAIN}: applied {have_rules or 'none'}, planned {want_rules or 'none'}")
    jump = f"-A FORWARD -j {tc.CHAIN}"
    jumps = [ln for ln in state.get("forward_rules", []) if ln.strip() == jump]
    if want_rules and "forward_rules" in state and len(jumps) != 1:
        problems.append(f"FORWARD jumps to {tc.CHAIN}: applied {len(jumps)}, planned 1")
    if not want_rules and jumps:
        problems.append(f"FORWARD jumps to {tc.CHAIN}: applied {len(jumps)}, planned 0")
    if plan.follower is not None and "trace_follower" in state:
        fol = state["trace_follower"]
        st = fol.get("status") or {}
        if st.get("state") == "failed" or not fol.get("alive"):
            problems.append(f"trace change loop: applied {st.get('state') or 'dead'} ({st.get('error') or 'not alive'})"
                            f", planned running")
    if plan.engine == "userspace" and plan.engine_config is not None:
        problems += _check_engine(plan, state)
    elif (state.get("engine_process") or {}).get("alive"):
        problems.append(f"userspace engine: applied running (pid {state['engine_process'].get('pid')}), "
                        f"planned none")
    return problems


def _verify_traced(plan: tc.Plan, profile: Profile, d: str, state: dict) -> list[str]:
    """A traced direction under netem: the layout of the step the change loop reports in force, or of the one
    before it (the loop may have changed the link between the read of tc and the read of its report)."""
    st = (state["trace_follower"].get("status") or {}).get("directions", {}).get(d) or {}
    step = st.get("step", 0)
    steps = tc.trace_steps(profile.direction(d))
    read = state["directions"][d]
    first = None
    for i in (step, (step - 1) % len(steps)):
        lay = tc.trace_layout(profile, d, steps[i])
        got = verify_direction(d, plan.ifaces[d], lay, read["qdisc"], read["class"])
        if not got:
            return []
        first = first if first is not None else got
    return [f"{p} (trace step {step})" for p in first or []]


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
    if (state.get("trace_follower") or {}).get("alive"):
        problems.append(f"the trace's change loop (pid {state['trace_follower'].get('pid')}) is still running")
    return problems


def show(remote: RemoteLike, inv: Inventory) -> dict[str, Any]:
    """The gateway's current shaping (read back), for ``labkit shape --show``."""
    return read_back(remote, inv)


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)
