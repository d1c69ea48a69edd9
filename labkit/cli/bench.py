"""``labkit bench`` (library: labkit.bench.runner) and the host-side ``labkit monitor``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from labkit.errors import ConfigError


@click.command()
@click.argument("profiles", nargs=-1)
@click.option("--lab", "lab_name", default="lab", show_default=True, help="Which lab.")
@click.option("--plan", "plan_name", type=click.Choice(["thesis"]), help="A preset matrix: thesis = the "
              "dissertation's profiles (slow-* and realistic) x 1, 10, 25, 50 chargers, its sample sizes.")
@click.option("--family", type=click.Choice(["slow", "realistic", "both"]), default="both", show_default=True,
              help="With --plan thesis: which profile family.")
@click.option("--evse", "evse_counts", help="EVSE hosts per cell, a list: 1,10,25,50 [default: 1].")
@click.option("--stations-per-host", type=int, help="Charging stations per EVSE host [default: 1].")
@click.option("--repeat", "repeats", type=int, help="Repetitions of every cell [default: 1].")
@click.option("--scenario", help="OCPP scenario: thesis-2021 or session [default: thesis-2021].")
@click.option("--ocpp", help="OCPP version: 1.6 or 2.0.1 [default: 1.6].")
@click.option("--seed", type=int, help="Random seed [default: 2021].")
@click.option("--ping-count", type=int, help="Pings each way [default: 100].")
@click.option("--ping-interval", type=float, help="Seconds between pings [default: 0.2].")
@click.option("--iperf-seconds", type=float,
              help="iperf3 TCP test length per direction, s [default: 10; 20 on paths of 200 ms or more].")
@click.option("--udp-seconds", type=float, help="iperf3 UDP test length per direction, s [default: 5].")
@click.option("--meter-values", type=int, help="thesis-2021: MeterValues per station [default: 100; thesis plan 1000].")
@click.option("--meter-interval", type=float, help="Seconds between MeterValues [default: 0.1].")
@click.option("--heartbeat", type=float, help="Heartbeat interval, s [default: 2, as the dissertation].")
@click.option("--duration", type=float, help="session scenario: seconds per cell [default: 60].")
@click.option("--baselines", type=click.Choice(["first", "every", "none"]),
              help="Ping/iperf3 in the first cell of each profile, every cell, or none [default: first].")
@click.option("--no-ocpp", is_flag=True, help="Baselines only.")
@click.option("--ws-ping", type=float, help="Stations' WebSocket ping interval and timeout, s [default: 20]; "
              "shorter detects an outage sooner.")
@click.option("--pcap", is_flag=True, help="Capture on the gateway's data interfaces (cells/<id>/pcap/).")
@click.option("--outage", help="Cut the link mid-run: DURATION@AT, e.g. 30s@60s (from the OCPP phase start).")
@click.option("--schedule", "schedule_name", metavar="NAME",
              help="During each OCPP phase, run the schedule NAME (profiles.yaml 'schedules:', or a file given with "
              "--profiles): its first phase applied when the phase starts, each next one switched in place at its "
              "time; PROFILE still gives the baselines. Implies --scenario session, --duration the schedule's length "
              "(+30 s when its last phase has no duration) and --think-time 0 unless given. Not with --outage.")
@click.option("--cycles", type=int, help="With --schedule: passes of a repeating schedule [default: until the "
              "OCPP phase ends; --duration defaults to one pass x cycles].")
@click.option("--profiles", "profiles_files", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Extra profiles file(s) (profiles and schedules), read after the shipped profiles.yaml.")
@click.option("--think-time", type=float, help="session scenario: mean idle time of a station before it plugs in, "
              "s [default: the simulator's 60; 0 with --schedule].")
@click.option("--results", "results_root", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Where run directories are written.")
@click.option("--name", "label", default="", help="A label appended to the run directory's name.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), help="Finish an interrupted run.")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="OCPP security profile 1: HTTP Basic auth between the fleets and the CSMS with the password on the "
              "first line of this file (or in LABKIT_OCPP_PASSWORD); never on the command line, never recorded.")
@click.option("--security-profile", "security_profiles",
              help="OCPP security profiles to run, a list: 0 (none), 1 (Basic auth), 2 (Basic auth over TLS), 3 (TLS "
              "with a client certificate per station), e.g. 1,2,3; each link profile runs in each. TLS uses the "
              "lab's own CA. Without this option: profile 1 with --password-file, else 0.")
@click.option("--tls-version", "tls_versions", help="With profiles 2 and 3: the TLS versions the stations ask for, "
              "a list: 1.2, 1.3 or 1.2,1.3 [default: 1.3].")
@click.option("--tls-resumption", type=click.Choice(["on", "off", "both"]),
              help="With profiles 2 and 3: stations resume their TLS session on reconnect (on), never (off), or "
              "cells of both [default: on].")
@click.pass_context
def bench(ctx, profiles, lab_name, plan_name, family, evse_counts, stations_per_host, repeats, scenario, ocpp, seed,
          ping_count, ping_interval, iperf_seconds, udp_seconds, meter_values, meter_interval, heartbeat, duration,
          baselines, no_ocpp, ws_ping, pcap, outage, schedule_name, cycles, profiles_files, think_time, results_root,
          label, resume, password_file, security_profiles, tls_versions, tls_resumption):
    """Baselines and OCPP timings for each PROFILE (e.g. labkit bench vsat gprs)."""
    from labkit.bench import link
    from labkit.bench.plan import (
        THESIS_EVSE,
        Outage,
        Plan,
        parse_counts,
        parse_resumption,
        parse_security_profiles,
        parse_tls_versions,
        thesis_plan,
        with_schedule,
    )
    from labkit.bench.runner import run_bench
    from labkit.progress import Reporter
    from labkit.sim.settings import read_password

    secret = read_password(password_file)

    if resume and (profiles or plan_name or schedule_name or profiles_files):
        raise ConfigError("--resume: takes the plan from the run directory; give no profiles, --plan, --schedule or "
                          "--profiles")
    if plan_name and schedule_name:
        raise ConfigError("--schedule: used without --plan thesis (name the profiles whose baselines to take, e.g. "
                          "labkit bench 4g --schedule handover)")
    if cycles is not None and not schedule_name:
        raise ConfigError("--cycles: goes with --schedule")
    if plan_name == "thesis":
        if profiles:
            raise ConfigError("--plan thesis: names its own profiles; give none (or use --family)")
        plan = Plan(profiles=thesis_plan(family), evse_counts=list(THESIS_EVSE), meter_values=1000, name="thesis")
    else:
        plan = Plan(profiles=list(profiles))
    if evse_counts:
        plan.evse_counts = parse_counts(evse_counts)
    overrides = {"stations_per_host": stations_per_host, "repeats": repeats, "scenario": scenario, "ocpp": ocpp,
                 "seed": seed, "ping_count": ping_count, "ping_interval_s": ping_interval,
                 "iperf_seconds": iperf_seconds, "udp_seconds": udp_seconds, "meter_values": meter_values,
                 "meter_interval_s": meter_interval, "heartbeat_s": heartbeat, "session_duration_s": duration,
                 "baselines": baselines, "ws_ping_interval_s": ws_ping, "think_time_s": think_time}
    for key, value in overrides.items():
        if value is not None:
            setattr(plan, key, value)
    if profiles_files:
        plan.profiles_files = [str(Path(f).resolve()) for f in profiles_files]
        link.use_profiles_files(plan.profiles_files)
    if schedule_name:
        sch = link.schedule(schedule_name)  # unknown name or profile: file, line and field, exit 2
        if cycles is not None and (cycles < 1 or not sch.repeat):
            raise ConfigError(f"--cycles: must be 1 or more, with a repeating schedule (got {cycles}; schedule "
                              f"{sch.name!r} {'repeats' if sch.repeat else 'runs once'})")
        plan.schedule_cycles = cycles
        with_schedule(plan, sch, scenario_given=scenario is not None, duration_given=duration is not None,
                      think_time_given=think_time is not None)
    plan.ocpp_phase = not no_ocpp
    plan.pcap = pcap
    if outage:
        plan.outage = Outage.parse(outage)
    if security_profiles is not None:
        plan.security_profiles = parse_security_profiles(security_profiles)
    if tls_versions is not None:
        plan.tls_versions = parse_tls_versions(tls_versions)
    if tls_resumption is not None:
        plan.tls_resumption = parse_resumption(tls_resumption)
    if (tls_versions or tls_resumption) and not any(sp >= 2 for sp in plan.security_profiles):
        raise ConfigError("--tls-version/--tls-resumption: only with --security-profile 2 or 3")
    with Reporter("bench", quiet=ctx.obj["quiet"]) as rep:
        argv = ctx.obj.get("argv") or ["labkit", *sys.argv[1:]]
        run = run_bench(lab_name, plan, results_root=Path(results_root), argv=argv,
                        progress=rep.update, label=label, resume=Path(resume) if resume else None, log=rep.log,
                        secret=secret)
    m = run.manifest()
    done = sum(1 for c in m["cells"] if c["status"] == "complete")
    why = f" ({m['reason']})" if m.get("reason") else ""
    click.echo(f"{run.path}: {m['status']}, {done}/{len(m['cells'])} cells complete{why} (labkit report {run.path})")
    if m["status"] != "complete" or done != len(m["cells"]):
        raise click.exceptions.Exit(1)


@click.command(hidden=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--host", required=True)
@click.option("--role", required=True)
@click.option("--proc", "procs", multiple=True, metavar="NAME=PIDFILE", help="A process to follow (repeatable).")
@click.option("--interval", type=float, default=1.0, show_default=True)
@click.option("--duration", type=float, default=None)
def monitor(out, host, role, procs, interval, duration):
    """Host side: sample CPU and memory into a CSV until stopped."""
    from labkit import monitor as mon

    parsed = {}
    for item in procs:
        name, sep, pidfile = item.partition("=")
        if not sep or not name or not pidfile:
            raise ConfigError(f"--proc: {item!r} is not NAME=PIDFILE")
        parsed[name] = pidfile
    mon.run(out, host, role, parsed, interval=interval, duration=duration)
