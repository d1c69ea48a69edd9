"""``labkit profiles``, ``labkit shape`` and the hidden ``labkit shaper run`` (the engine, run on the gateway)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from labkit.errors import ConfigError, LabkitError

PROFILES_OPT = click.option("--profiles", "profiles_files", multiple=True, type=click.Path(dir_okay=False),
                            help="Extra profiles file(s), read after the shipped profiles.yaml (same names override).")


def _load(profiles_files: tuple[str, ...]):
    """The shipped profiles, then $LABKIT_PROFILES (as every other command reads them), then --profiles."""
    import os

    from labkit.profiles import PROFILES_ENV, load_profiles

    extras = [p for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    return load_profiles(extras + list(profiles_files))


def _fmt_dir(d) -> str:
    from labkit.units import format_rate

    if not d.shaped:
        return "-"
    parts = [f"trace {d.trace.name}" if d.trace else format_rate(d.rate_bps) if d.rate_bps else "no limit"]
    if d.delay_ms or d.jitter_ms:
        j = ""
        if d.jitter_ms:
            j = f" ±{d.jitter_ms:g} ms" if d.distribution == "uniform" else f" σ {d.jitter_ms:g} ms"
        parts.append(f"{d.delay_ms:g} ms{j}")
    if d.loss_pct:
        parts.append(f"{d.loss_text} loss")
    return ", ".join(parts)


@click.group("profiles", invoke_without_command=True)
@PROFILES_OPT
@click.option("--family", type=click.Choice(["realistic", "slow", "custom"]), help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def profiles(ctx: click.Context, profiles_files: tuple[str, ...], family: str | None, as_json: bool) -> None:
    """The named network profiles: both directions, added RTT, bottleneck rate.

    uplink is EVSE -> CPO, downlink CPO -> EVSE. Rates in bit/s, delays one-way.
    """
    ctx.ensure_object(dict)
    ctx.obj["profiles_files"] = profiles_files
    if ctx.invoked_subcommand is not None:
        return
    from labkit.units import format_rate

    ps = _load(profiles_files)
    rows = [p for p in ps.profiles.values() if family is None or p.family == family]
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"labkit profiles ({' + '.join(ps.files)})", title_justify="left")
    for col in ("name", "family", "uplink (EVSE→CPO)", "downlink (CPO→EVSE)", "added RTT", "bottleneck"):
        table.add_column(col, overflow="fold")
    for p in rows:
        names = p.name + (f" ({', '.join(p.aliases)})" if p.aliases else "")
        table.add_row(names, p.family, _fmt_dir(p.uplink), _fmt_dir(p.downlink), f"{p.added_rtt_ms:g} ms",
                      format_rate(p.bottleneck_bps) if p.bottleneck_bps else "-")
    Console(width=max(120, Console().width)).print(table)


@profiles.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def profiles_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Everything a profile sets, expanded, with its sources."""
    from labkit import tc
    from labkit.units import format_rate

    ps = _load(ctx.obj.get("profiles_files", ()))
    p = ps.get(name)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    out = [f"{p.name}: {p.description}", f"  family: {p.family}    defined at: {p.origin}"]
    if p.aliases:
        out.append(f"  aliases: {', '.join(p.aliases)}")
    if p.symmetric:
        out.append("  written with 'both:' -- the same values in each direction, as below")
    for dname, d in (("uplink (EVSE -> CPO)", p.uplink), ("downlink (CPO -> EVSE)", p.downlink)):
        out.append(f"  {dname}:")
        if not d.shaped:
            out.append("    unshaped")
            continue
        out.append(f"    rate:      {format_rate(d.rate_bps)}" + (f" ({d.rate_bps} bit/s)" if d.rate_bps else ""))
        jit = (f"uniform ±{d.jitter_ms:g} ms" if d.distribution == "uniform" else
               f"normal, sd {d.jitter_ms:g} ms (cut at ±{d.jitter_span_ms:g} ms)") if d.jitter_ms else "none"
        out.append(f"    delay:     {d.delay_ms:g} ms one-way (from {d.min_delay_ms:g} to {d.max_delay_ms:g} ms)")
        out.append(f"    jitter:    {jit}{'; may reorder' if d.reorder else ''}")
        out.append(f"    loss:      {d.loss_text}    corrupt: {d.corrupt_pct:g} %    "
                   f"duplicate: {d.duplicate_pct:g} %")
        if d.gemodel is not None:
            g = d.gemodel
            out.append(f"               (Gilbert-Elliott: p {g.p * 100:.6g} %, r {g.r * 100:.6g} %, 1-h "
                       f"{g.bad_loss * 100:g} %, 1-k {g.good_loss * 100:g} %)")
        if d.queue_pkts:
            out.append(f"    queue:     {d.queue_pkts} packets")
    out.append(f"  added RTT: {p.added_rtt_ms:g} ms (at least {p.min_added_rtt_ms:g} ms)    bottleneck: "
               f"{format_rate(p.bottleneck_bps) if p.bottleneck_bps else 'none'}")
    if p.notes:
        out.append(f"  notes: {p.notes}")
    out.append("  sources:")
    out.extend(f"    - {s}" for s in p.sources)
    out.append("  tc (netem engine, gateway eth1 = CPO side, eth2 = EVSE side):")
    for d, iface in (("uplink", "eth1"), ("downlink", "eth2")):
        for c in tc.tc_commands(p, iface, d, "netem"):
            out.append(f"    {c}")
    click.echo("\n".join(out))


def _lab(lab: str):
    from labkit.inventory import Inventory
    from labkit.labdir import LabDir

    labdir = LabDir(lab)
    if not labdir.inventory_file.exists():
        raise LabkitError(f"lab {lab!r} is not up (no {labdir.inventory_file}); run 'labkit up' first")
    return labdir, Inventory.load(labdir.inventory_file)


def _remote(inv):
    try:
        from labkit.remote import Remote
    except ModuleNotFoundError as exc:  # pragma: no cover - until the remote module lands
        raise LabkitError(f"labkit.remote is not available: {exc}") from None
    return Remote(inv)


@click.command("shape")
@click.argument("profile", required=False)
@click.option("--lab", default="lab", envvar="LABKIT_LAB", show_default=True, help="The lab to shape.")
@click.option("--engine", type=click.Choice(["auto", "netem", "userspace"]), default="auto", show_default=True,
              help="netem where the gateway's kernel has it, else the userspace engine.")
@click.option("--seed", type=int, default=None,
              help="Seed of the engine's random choices (default 1; with --verify: the running engine's).")
@click.option("--clear", "do_clear", is_flag=True, help="Remove all shaping (an unshaped link).")
@click.option("--show", "do_show", is_flag=True, help="Read back what the gateway holds now.")
@click.option("--verify", "do_verify", is_flag=True,
              help="Check that the gateway still holds PROFILE, value by value, without applying anything "
                   "(exit status 1 on a difference).")
@click.option("--schedule", "schedule_name", default=None, metavar="NAME",
              help="Run the schedule NAME (profiles.yaml 'schedules:'): each phase switched in place at its time, "
                   "until it ends or Ctrl-C; the phases as applied are saved in the lab directory (schedule.json).")
@click.option("--cycles", type=click.IntRange(min=1), default=None,
              help="With --schedule: stop a repeating schedule after this many passes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@PROFILES_OPT
def shape(profile: str | None, lab: str, engine: str, seed: int | None, do_clear: bool, do_show: bool,
          do_verify: bool, schedule_name: str | None, cycles: int | None, as_json: bool,
          profiles_files: tuple[str, ...]) -> None:
    """Give the lab's link a profile (both directions), or --clear it, or --show it, or run a --schedule.

    A new profile replaces the old one whole. What was applied is read back from the gateway, compared
    with the plan value by value (a difference clears the link and exits 1) and saved in the lab directory
    (shaping.json). PROFILE --verify repeats the comparison later without changing anything. A schedule's
    phases are switched in place (no connection is reset) and each is read back after its switch.
    """
    if sum(bool(x) for x in (profile, do_clear, do_show, schedule_name)) != 1:
        raise ConfigError("shape: give exactly one of PROFILE, --clear, --show or --schedule")
    if do_verify and not profile:
        raise ConfigError("shape: --verify needs the PROFILE to compare with")
    if cycles is not None and not schedule_name:
        raise ConfigError("shape: --cycles goes with --schedule")
    if schedule_name:
        _run_schedule(schedule_name, lab, engine, 1 if seed is None else seed, cycles, as_json, profiles_files)
        return
    from labkit import shaping

    prof = _load(profiles_files).get(profile) if profile else None  # before anything is touched
    labdir, inv = _lab(lab)
    remote = _remote(inv)
    try:
        if do_show:
            state = shaping.show(remote, inv)
        elif do_verify:
            state = shaping.reverify(remote, inv, prof, engine=None if engine == "auto" else engine, seed=seed)
        elif do_clear:
            with labdir.lock():
                state = shaping.clear(remote, inv)
                (labdir.path / "shaping.json").unlink(missing_ok=True)
        else:
            with labdir.lock():
                state = shaping.apply(remote, inv, prof, engine=engine, seed=1 if seed is None else seed,
                                      record=labdir.path / "shaping.json")
    finally:
        remote.close()
    if as_json:
        click.echo(json.dumps(state, indent=2, default=str))
        return
    click.echo(_describe(state, prof, do_clear, do_verify))


def _run_schedule(name: str, lab: str, engine: str, seed: int, cycles: int | None, as_json: bool,
                  profiles_files: tuple[str, ...]) -> None:
    """``labkit shape --schedule NAME``: validated whole before the lab is touched (exit 2)."""
    import signal
    import threading

    from labkit import schedules, shaping

    ps = _load(profiles_files)
    sch = ps.schedule(name)
    labdir, inv = _lab(lab)
    remote = _remote(inv)
    stop = threading.Event()
    before = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def show(rec) -> None:
        if as_json:
            return
        late = "" if rec.latency_ms is None else f", applied {rec.latency_ms:.1f} ms after its planned time"
        what = f"outage (underneath: {rec.profile})" if rec.outage else rec.profile
        dur = sch.phases[rec.index].duration_s
        click.echo(f"phase {rec.index + 1}/{len(sch.phases)}{f' (pass {rec.cycle + 1})' if sch.repeat else ''}: "
                   f"{what} {'until stopped' if dur is None else f'for {dur:g} s'}{late}"
                   f"{'' if rec.verified is None else ', read back: ' + ('as planned' if rec.verified else 'WRONG')}")

    try:
        with labdir.lock():
            if not as_json:
                click.echo(f"{inv.gateway.name}: schedule {sch.name}: {sch.text}")
            result = schedules.run(remote, inv, sch, ps, engine=engine, seed=seed, stop=stop, on_phase=show,
                                   record=labdir.path / "schedule.json", max_cycles=cycles)
            state = shaping.read_back(remote, inv)
            state.update({"profile": result.get("holds"), "engine": result["engine"], "schedule": sch.name,
                          "frame": result["frame"]})
            shaping._save(labdir.path / "shaping.json", state)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        remote.close()
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    lat = schedules.latencies(result)
    summary = (f"; planned-to-applied switch: median {sorted(lat)[len(lat) // 2]:.1f} ms, max {max(lat):.1f} ms"
               if lat else "")
    click.echo(f"{inv.gateway.name}: schedule {sch.name} {result['ended_by']}; the link holds "
               f"{result.get('holds')}{summary} (lab directory: schedule.json)")


def _describe(state: dict, prof, cleared: bool, verified_only: bool = False) -> str:
    lines = []
    if cleared:
        lines.append(f"{state['gateway']}: shaping cleared (read back: nothing left)")
    elif prof is not None and verified_only:
        lines.append(f"{state['gateway']}: holds {prof.name} ({state['engine']} engine), every value verified "
                     f"by read-back; nothing changed")
        lines.append(f"  {prof.summary()}")
    elif prof is not None:
        lines.append(f"{state['gateway']}: {prof.name} applied with the {state['engine']} engine, "
                     f"every value verified by read-back")
        lines.append(f"  {prof.summary()}")
    for d, info in state["directions"].items():
        kinds = [q.get("kind") for q in info["qdisc"]] if isinstance(info["qdisc"], list) else [str(info["qdisc"])]
        lines.append(f"  {d:8} {info['iface']}: qdiscs {', '.join(k for k in kinds if k) or '(default)'}")
    if state.get("rules"):
        lines.append("  rules: " + " | ".join(state["rules"]))
    eng = state.get("engine_process") or {}
    st = eng.get("status")
    if st:
        alive = "alive" if eng.get("alive") else ("exited" if st.get("state") == "stopped" else "DEAD")
        lines.append(f"  userspace engine pid {eng.get('pid')} ({alive}, state {st.get('state')}, "
                     f"delays from {st.get('arrival', '?')} arrival, spin {st.get('spin_us', '?')} us "
                     f"({st.get('spins', '?')} spins), report {eng.get('status_age_s', '?')} s old)")
        for q in st.get("queues", []):
            lat = q.get("lateness", {})
            pk = q.get("pickup", {})
            k = q.get("kernel", {})
            lines.append(f"    {q['direction']:8} queue {q['queue']}: seen {q['seen']}, lost {q['dropped_loss']}, "
                         f"released {q['released']}, pending {q['pending']}, kernel drops "
                         f"{k.get('dropped_queue_full', '?')}+{k.get('dropped_socket_full', '?')}; lateness "
                         f"median {lat.get('median_ms')} ms, p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms; "
                         f"pickup median {pk.get('median_ms')} ms, p99 {pk.get('p99_ms')} ms")
    if eng.get("warning"):
        lines.append(f"  WARNING: {eng['warning']}")
    return "\n".join(lines)


@click.group("shaper", hidden=True)
def shaper() -> None:
    """The userspace shaping engine (runs on the gateway; started by 'labkit shape')."""


@shaper.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The engine's configuration (written by labkit shape).")
def shaper_run(config_path: str) -> None:
    """Serve the NFQUEUE queues of CONFIG until SIGTERM."""
    from labkit.nfq.engine import run_from_file

    try:
        run_from_file(config_path)
    except PermissionError as exc:
        raise LabkitError(f"the shaping engine needs root (CAP_NET_ADMIN): {exc}") from None
    except OSError as exc:
        raise LabkitError(f"the shaping engine failed: {exc}") from None
    sys.stdout.flush()


@shaper.command("follow")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The change loop's configuration (written by labkit shape).")
def shaper_follow(config_path: str) -> None:
    """Apply a recorded trace's steps in place at their times (netem engine) until SIGTERM."""
    from labkit.tracefollow import run_from_file

    if run_from_file(config_path) != 0:
        raise LabkitError("the trace's change loop stopped: a change failed (see its status file)")


__all__ = ["profiles", "shape", "shaper", "Path"]
