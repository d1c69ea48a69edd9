"""Run a schedule on the lab's gateway: each phase in turn at its planned time, switched in place, with when
each phase started and ended as applied on the gateway.

A schedule (``labkit.profiles.Schedule``) is a list of phases, each a profile or the outage, for a duration;
it runs once (the last phase may last until stopped) or repeats. Its profiles are laid out in one common
frame (``labkit.tc.frame_for``) and the first phase is applied whole (``labkit.shaping.apply``, read back and
verified). Then, for each next phase:

- before its planned time, the engine's parameters for it are staged on the gateway (``shaping.stage``);
- at its planned time (this machine's monotonic clock from the moment the first phase held), one command
  (over channels kept open to the gateway where there is SSH, ``labkit.gwchannel``) switches the link in
  place (``shaping.switch``: ``tc class change`` / ``tc qdisc change``, SIGHUP to the engine, the gateway's
  clock), or cuts it (``shaping.outage``: an iptables DROP at the top of FORWARD).
  During an outage the link underneath is already switched to the phase that follows, so the outage's end
  is one rule removed;
- the link is read back and verified against that phase's plan (``verify=True``), as ``labkit shape`` does
  for one profile; a difference clears the link and stops the schedule with a ShapingError.

Every phase is recorded with its planned start (this machine's clock), when the switch was sent and
returned, the gateway's clock once it was applied (``applied_start``: the end of the tc changes, or the
engine's own time of its swap when later) and ``applied_end`` (the next phase's ``applied_start``, or the
stop). ``latency_ms`` is applied minus planned, on this machine's clock: the gateway's clock offset is measured over
SSH (``labkit.clocks``) once the first phase holds and again at the end, recorded as ``gateway_clock`` (start
and end, each with its uncertainty), and the start offset is taken off ``applied_start`` (on netns the offset is
zero within a fraction of a millisecond; a VM's clock can be seconds off). ``applied_start``/``applied_end``
stay as the gateway read them. The controller's ``returned`` bounds the applied time independently.
A stop (``stop`` event, e.g. Ctrl-C) ends the current phase at once; the link keeps the phase that held (an
outage is lifted).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit import clocks, gwchannel, shaping, tc
from labkit.errors import LabkitError
from labkit.inventory import Inventory
from labkit.profiles import Profile, ProfileSet, Schedule

#: switching needs the engine's parameters staged before the planned time; stage this early at most (s)
STAGE_AHEAD_S = 1.0


@dataclass
class PhaseRecord:
    """One phase as it ran."""

    index: int  # position in the schedule
    cycle: int  # pass through the schedule (0, then 1, 2 ... when it repeats)
    label: str  # the profile as written, or "outage"
    profile: str  # the profile the link held (for an outage: the one underneath)
    outage: bool
    planned_start: float  # this machine's wall clock
    planned_end: float | None
    sent: float | None = None  # this machine's clock: the switch command sent ...
    returned: float | None = None  # ... and returned
    applied_start: float | None = None  # the gateway's clock once the phase held
    applied_end: float | None = None
    engine_at: float | None = None  # the engine's own time of its parameter swap (userspace)
    latency_ms: float | None = None  # applied_start - planned_start
    switch: dict[str, Any] = field(default_factory=dict)  # the commands and their timings
    verified: bool | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScheduleError(LabkitError):
    """A schedule could not run to its end (the link was cleared)."""


def _order(schedule: Schedule, max_cycles: int | None) -> Iterator[tuple[int, int]]:
    """(cycle, phase index) in the order they run."""
    cycle = 0
    while True:
        for i in range(len(schedule.phases)):
            yield cycle, i
        cycle += 1
        if not schedule.repeat or (max_cycles is not None and cycle >= max_cycles):
            return


def underlying(schedule: Schedule, profiles: ProfileSet, i: int) -> Profile:
    """The profile the link holds during phase ``i``: its own, or for an outage the next profile phase (the
    link comes back as that phase), wrapping round when the schedule repeats, else the one before it."""
    phases = schedule.phases
    if phases[i].profile is not None:
        return profiles.get(phases[i].profile)
    n = len(phases)
    for k in range(1, n + 1):
        j = i + k
        if j >= n:
            if not schedule.repeat:
                break
            j %= n
        if phases[j].profile is not None:
            return profiles.get(phases[j].profile)
    for j in range(i - 1, -1, -1):
        if phases[j].profile is not None:
            return profiles.get(phases[j].profile)
    raise ValueError(f"schedule {schedule.name!r} has no profile phase")  # refused when it was read


def plans(schedule: Schedule, profiles: ProfileSet, inv: Inventory, engine: str,
          seed: int = 1) -> tuple[tc.Frame, dict[str, tc.Plan]]:
    """The schedule's frame and each of its profiles' plan in that frame (pure, but for the inventory)."""
    profs = profiles.schedule_profiles(schedule)
    frame = tc.frame_for(profs)
    return frame, {p.name: shaping.phase_plan(p, inv, engine, frame, seed) for p in profs}


def _write(record: Path | None, data: dict[str, Any]) -> None:
    if record is None:
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(record)


def _offset(remote: shaping.RemoteLike, host: Any) -> dict[str, Any] | None:
    """A host's clock offset (``labkit.clocks``), or None where commands do not go over SSH (a remote that runs
    them on this machine, as the tests' namespace topology does: one clock)."""
    if not hasattr(remote, "connect"):
        return None
    try:
        return clocks.measure(remote, host).to_dict()
    except LabkitError as exc:
        return {"error": str(exc)}


def _gateway_offset(remote: shaping.RemoteLike, inv: Inventory) -> dict[str, Any] | None:
    return _offset(remote, inv.gateway)


def run(remote: shaping.RemoteLike, inv: Inventory, schedule: Schedule, profiles: ProfileSet, *,
        engine: str = "auto", seed: int = 1, verify: bool = True, stop: threading.Event | None = None,
        on_phase: Callable[[PhaseRecord], None] | None = None, record: Path | None = None,
        max_cycles: int | None = None, clock_hosts: Sequence[str] = (),
        ready: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``schedule`` on the gateway until it ends (or ``stop`` is set, or ``max_cycles`` passes of a
    repeating one); return (and write to ``record``, after every phase) what ran. ``profiles`` is the set
    the schedule was read from (``ProfileSet.schedule`` checked it). A failure clears the link. ``ready``, when
    given, is called once the first phase is applied whole and before the schedule's clock starts; it may
    block (``labkit bench`` starts its stations meanwhile, so that the phases count from their start)."""
    stop = stop or threading.Event()
    gw = inv.gateway
    eng = shaping.choose_engine(remote, gw, engine)
    frame, by_name = plans(schedule, profiles, inv, eng, seed)
    out: dict[str, Any] = {"schedule": schedule.to_dict(), "engine": eng, "seed": seed,
                           "frame": frame.to_dict(), "gateway": gw.name, "phases": [], "ended_by": None}
    records: list[PhaseRecord] = []

    def save() -> None:
        out["phases"] = [r.to_dict() for r in records]
        _write(record, out)

    chan: gwchannel.GatewayChannels | None = None
    try:
        first = underlying(schedule, profiles, 0)
        state = shaping.apply(remote, inv, first, engine=eng, seed=seed, frame=frame)
        pid = state.get("engine_pid")
        status = (state.get("engine_process") or {}).get("status") or {}
        if pid and "params" not in status:
            # an engine from a labkit without live parameters: SIGHUP would end it (and so stop all traffic)
            raise ScheduleError(f"the userspace engine on {gw.name} cannot change parameters in place (it is "
                                f"older than this labkit: install the same labkit on the gateway)")
        current = by_name[first.name]
        chan = gwchannel.open_channels(remote, gw)
        out["channels"] = chan is not None
        clock = out["gateway_clock"] = {"start": _gateway_offset(remote, inv)}
        skew = (clock["start"] or {}).get("offset_s") or 0.0
        if clock_hosts:  # the hosts whose stamps are compared with the phases (a bench's stations and CSMS)
            out["host_clocks"] = {"start": {h: _offset(remote, h) for h in clock_hosts}}
        if ready is not None:
            ready()
        cut = False
        seq = 0
        t0 = time.monotonic()
        t0_wall = time.time()
        out["started"] = t0_wall
        offset = 0.0
        prev: PhaseRecord | None = None
        for cycle, i in _order(schedule, max_cycles):
            phase = schedule.phases[i]
            below = underlying(schedule, profiles, i)
            rec = PhaseRecord(index=i, cycle=cycle, label=phase.label, profile=below.name, outage=phase.outage,
                              planned_start=t0_wall + offset,
                              planned_end=None if phase.duration_s is None else t0_wall + offset + phase.duration_s)
            target = by_name[below.name]
            if prev is None:  # the first phase: applied whole above
                if phase.outage:
                    sw = shaping.outage(remote, inv, True, chan)
                    cut = True
                else:
                    sw = shaping.gateway_clock(remote, inv, chan)
                rec.sent, rec.returned, rec.applied_start = sw["sent"], sw["returned"], sw["applied_at"]
                rec.switch = {"apply": {"applied_at": state.get("applied_at")}, **sw}
            else:
                # stage the engine's next parameters while the phase before runs, then wait for the moment
                if target is not current:
                    staged_seq = seq + 1
                    wait = t0 + offset - STAGE_AHEAD_S - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                    shaping.stage(remote, inv, target, staged_seq)
                wait = t0 + offset - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
                if stop.is_set():
                    break
                steps: dict[str, Any] = {}
                if phase.outage and not cut:
                    steps["outage"] = shaping.outage(remote, inv, True, chan)
                    cut = True
                    first_step = steps["outage"]
                    if target is not current:  # the link underneath becomes the next phase while cut
                        seq += 1
                        steps["underneath"] = shaping.switch(remote, inv, current, target, seq=seq, engine_pid=pid,
                                                            chan=chan)
                        current = target
                elif phase.outage:
                    first_step = steps["clock"] = shaping.gateway_clock(remote, inv, chan)
                else:
                    if target is not current:
                        seq += 1
                        steps["switch"] = shaping.switch(remote, inv, current, target, seq=seq, engine_pid=pid,
                                                        chan=chan)
                        current = target
                    if cut:
                        steps["restore"] = shaping.outage(remote, inv, False, chan)
                        cut = False
                    if not steps:
                        steps["clock"] = shaping.gateway_clock(remote, inv, chan)
                    first_step = steps.get("restore") or steps.get("switch") or steps["clock"]
                    rec.engine_at = (steps.get("switch") or {}).get("engine_at")
                rec.sent = min(s["sent"] for s in steps.values())
                rec.returned = first_step["returned"]
                rec.applied_start = first_step.get("applied_at")
                if rec.applied_start is None and first_step.get("applied_local") is not None:
                    # over the tc channel: this machine's clock once tc answered, on the gateway's clock
                    rec.applied_start = first_step["applied_local"] + skew
                rec.switch = steps
            if rec.applied_start is not None:
                rec.latency_ms = ((rec.applied_start - skew - rec.planned_start) * 1000.0
                                  if prev is not None else None)
                if prev is not None:
                    prev.applied_end = rec.applied_start
            if verify and prev is not None:
                got = shaping.read_back(remote if chan is None else gwchannel.ViaShell(remote, chan), inv,
                                        engine_pid=pid)
                rec.problems = shaping.verify(current, below, got)
                rec.verified = not rec.problems
                if rec.problems:
                    records.append(rec)
                    raise ScheduleError(f"schedule {schedule.name!r}, phase {i + 1} ({phase.label}) on {gw.name} "
                                        f"does not read back as planned: {'; '.join(rec.problems)}")
            elif prev is None:
                rec.verified = state.get("verified")
            records.append(rec)
            prev = rec
            save()
            if on_phase is not None:
                on_phase(rec)
            if phase.duration_s is None:
                break  # the last phase lasts until stopped: the link keeps it
            offset += phase.duration_s
        else:
            # the last phase of a schedule that ends: wait out its duration
            wait = t0 + offset - time.monotonic()
            if not (wait > 0 and stop.wait(wait)):
                out["ended_by"] = "end"
        if out["ended_by"] is None:
            out["ended_by"] = "stopped" if stop.is_set() else "last phase holds"
        if cut or (prev is not None and out["ended_by"] != "last phase holds"):
            # the phase that held ends now (an outage is lifted: the link keeps the profile underneath)
            end = shaping.outage(remote, inv, False, chan) if cut else shaping.gateway_clock(remote, inv, chan)
            cut = False
            if prev is not None:
                prev.applied_end = end["applied_at"]
                prev.switch["end"] = end
        out["ended"] = time.time()
        out["holds"] = current.profile
        clock["end"] = _gateway_offset(remote, inv)
        if clock_hosts:
            out["host_clocks"]["end"] = {h: _offset(remote, h) for h in clock_hosts}
        save()
        return out
    except BaseException as exc:
        out["ended_by"] = f"failed: {exc}" if isinstance(exc, Exception) else f"interrupted: {type(exc).__name__}"
        out["ended"] = time.time()
        try:
            shaping.clear(remote, inv)
            out["cleared"] = True
        except LabkitError as clear_exc:
            out["cleared"] = f"failed: {clear_exc}"
        save()
        if isinstance(exc, ScheduleError | shaping.ShapingError):
            raise ScheduleError(f"{exc} (the link was cleared)") from None
        raise
    finally:
        if chan is not None:
            chan.close()


def latencies(result: dict[str, Any]) -> list[float]:
    """The planned-to-applied latency (ms) of every switch a run recorded (the first phase has none)."""
    return [p["latency_ms"] for p in result.get("phases", []) if p.get("latency_ms") is not None]
