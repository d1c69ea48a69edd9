"""Run a bench plan on a lab that is up and write its results directory.

Before anything changes: the plan is validated against the lab and the known profiles, every host must
answer over SSH and the data path must cross the gateway. Then, per cell: apply the profile (read back),
ping both ways, iperf3 both ways, the OCPP phase; the link is cleared at the end. Ctrl-C (or SIGTERM)
stops cleanly: what was collected is kept, the run is marked incomplete, the link is cleared. A guard
process does the same if bench is killed outright. ``resume`` finishes an interrupted run.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit import __version__, pathcheck
from labkit.bench import link, probes
from labkit.bench.guard import Guard
from labkit.bench.ocpp import OcppPhase
from labkit.bench.plan import Cell, Plan, tcp_timing, validate
from labkit.bench.provenance import controller_facts, hosts_facts
from labkit.bench.results import FORMAT, RunDir, iso, write_json
from labkit.bench.summary import write_summary
from labkit.errors import LabkitError
from labkit.lifecycle import LabHandle, open_lab

ProgressFn = Callable[[str, int, "int | None"], None]


def _quiet(message: str, done: int = 0, total: int | None = None) -> None:
    return None


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _estimate_s(plan: Plan, cell: Cell, added_rtt_ms: float) -> float:
    rtt = added_rtt_ms / 1000.0
    t = 5.0
    if cell.baselines:
        t += 2 * (plan.ping_count * plan.ping_interval_s + rtt + 2)  # ping, then labkit's echo probe
        seconds, omit = tcp_timing(plan, added_rtt_ms)
        t += 2 * (seconds + omit + 3 * rtt + 1) + 2 * (plan.udp_seconds + 1)
    if plan.ocpp_phase:
        if plan.scenario == "thesis-2021":
            t += 8 + 6 * rtt + plan.meter_values * (plan.meter_interval_s + rtt)
        else:
            t += plan.session_duration_s + 5
    return t


class Bench:
    def __init__(self, handle: LabHandle, plan: Plan, *, results_root: Path, argv: list[str],
                 progress: ProgressFn = _quiet, label: str = "", resume: Path | None = None,
                 log: Callable[[str], None] = lambda s: None, secret: str | None = None):
        self.handle = handle
        self.plan = plan
        self.results_root = results_root
        self.argv = argv
        self.progress = progress
        self.label = label
        self.resume = resume
        self.log = log
        self.inv = handle.inventory
        self.expected = {p: link.expected(p) for p in plan.profiles}
        self.secret = secret  # the OCPP Basic auth password: handed to the OCPP phase only, never recorded
        self.tls = None  # the lab's certificates (labcerts.LabTLS) when a cell runs security profile 2 or 3
        #: the schedule every cell's OCPP phase runs (labkit.profiles.Schedule), or None
        self.schedule = link.schedule(plan.schedule) if plan.schedule else None

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> RunDir:
        with self.handle.labdir.lock(wait=0), self.handle.remote() as remote:
            self.remote = remote
            try:
                remote.wait(self.inv.hosts, timeout=5 if self.inv.backend == "netns" else 30)
            except LabkitError as exc:
                raise LabkitError(f"lab {self.handle.lab.name!r} is not answering: {exc}") from None
            evidence = pathcheck.check(remote, self.inv)
            if any(s is not None and s.tls for s in self.plan.securities()):
                from labkit.bench import labcerts

                self.progress("the lab's certificates", 0, None)
                self.tls = labcerts.ensure(self.handle.labdir.path, self.handle.lab.name, self.inv.cpo)
            run = self._open_run(evidence)
            guard = Guard(self.handle.lab.name, run.path).start()
            previous = signal.getsignal(signal.SIGTERM)

            def on_term(signum, frame):  # noqa: ARG001
                raise Interrupted()

            signal.signal(signal.SIGTERM, on_term)
            status, reason = "running", ""
            try:
                cells = self.plan.cells()
                t0 = time.monotonic()
                total_est = sum(_estimate_s(self.plan, c, self.expected[c.profile].get("added_rtt_ms") or 0)
                                for c in cells)
                for i, cell in enumerate(cells):
                    if run.cell_complete(cell.id):
                        continue
                    left = max(0.0, total_est - (time.monotonic() - t0))
                    sec = f" {cell.security.label}" if cell.security else ""
                    self.cell_prefix = (f"[{i + 1}/{len(cells)}] {cell.profile}{sec} n={cell.stations} "
                                        f"~{left / 60:.0f} min left")
                    self._run_cell(run, cell)
                failed = [c for c in run.manifest()["cells"] if c["status"] != "complete"]
                if failed:
                    # a run with a failed cell is never complete: its cell.json says which phase and why
                    first = run.cell_meta(failed[0]["id"]) or {}
                    why = next((f"{name}: {ph.get('error', ph.get('status'))}" for name, ph in
                                first.get("phases", {}).items() if ph.get("status") != "complete"), "")
                    status = "incomplete"
                    reason = (f"{len(failed)} of {len(cells)} cells failed; first {failed[0]['id']}"
                              + (f" ({why})" if why else ""))
                else:
                    status = "complete"
            except KeyboardInterrupt:
                status, reason = "incomplete", "interrupted (Ctrl-C or SIGTERM)"
                raise
            except LabkitError as exc:
                status, reason = "incomplete", str(exc)
                raise
            except Exception as exc:
                status, reason = "incomplete", f"{type(exc).__name__}: {exc}"
                (run.path / "error.txt").write_text(traceback.format_exc())
                raise
            finally:
                signal.signal(signal.SIGTERM, previous)
                self._finish(run, status, reason)
                guard.release()
        return run

    def _open_run(self, evidence: dict[str, Any]) -> RunDir:
        inv = self.inv
        if self.resume:
            run = RunDir.open(self.resume)
            m = run.manifest()
            m.setdefault("resumed", []).append({"at": iso(), "command": self.argv, "pid": os.getpid()})
            m.update(status="running", pid=os.getpid(), reason="")
            run.write_manifest(m)
            return run
        run = RunDir.create(self.results_root, self.handle.lab.name, self.label)
        self.progress("recording provenance", 0, None)
        lab_dict = self.handle.lab.to_dict()
        manifest = {
            "format": FORMAT, "run_id": run.run_id, "status": "running", "reason": "", "pid": os.getpid(),
            "command": self.argv, "started": iso(), "ended": None, "seed": self.plan.seed,
            "labkit": __version__, "lab": lab_dict, "backend": inv.backend, "backend_details": inv.details,
            "engine": None, "plan": self.plan.to_dict(),
            "inventory": [{"name": h.name, "role": h.role, "addresses": h.addresses, "ifaces": h.ifaces}
                          for h in inv.hosts],
            "hosts": hosts_facts(self.remote, inv.hosts), "controller": controller_facts(),
            "clocks": {"start": self._clocks()},
            "profiles": {p: link.spec(p) for p in self.plan.profiles}, "path_check": evidence,
            "cells": [{"id": c.id, "dir": f"cells/{c.id}", "profile": c.profile, "evse_hosts": c.evse_hosts,
                       "stations_per_host": c.stations_per_host, "repeat": c.repeat, "status": "pending",
                       **({"security": c.security.to_dict()} if c.security else {})}
                      for c in self.plan.cells()],
        }
        if self.tls is not None:
            manifest["tls"] = self.tls.describe()
        if self.schedule is not None:
            # provenance: the schedule as written (its phases, the file and line it came from)
            manifest["schedule"] = {**self.schedule.to_dict(), "cycles": self.plan.schedule_cycles,
                                    "profiles_files": list(self.plan.profiles_files)}
            for c in manifest["cells"]:
                c["schedule"] = self.schedule.name
        run.write_manifest(manifest)
        return run

    def _set_cell_status(self, run: RunDir, cell: Cell, status: str, **extra: Any) -> None:
        m = run.manifest()
        for c in m["cells"]:
            if c["id"] == cell.id:
                c["status"] = status
                c.update(extra)
        run.write_manifest(m)

    def _phase(self, meta: dict[str, Any], name: str, fn: Callable[[], Any], cell_dir: Path, *,
               fatal: bool = False) -> Any:
        self.progress(f"{self.cell_prefix}: {name}", 0, None)
        ph = meta["phases"][name] = {"started": time.time(), "status": "running"}
        write_json(cell_dir / "cell.json", meta)
        try:
            out = fn()
            ph.update(status="complete", ended=time.time())
            return out
        except KeyboardInterrupt:
            ph.update(status="interrupted", ended=time.time())
            raise
        except LabkitError as exc:
            ph.update(status="failed", ended=time.time(), error=str(exc))
            self.log(f"labkit bench: {meta['id']}: {name} failed: {exc}")
            if fatal:
                raise
            return None
        finally:
            write_json(cell_dir / "cell.json", meta)

    def _run_cell(self, run: RunDir, cell: Cell) -> None:
        inv, r, plan = self.inv, self.remote, self.plan
        cell_dir = run.fresh_cell_dir(cell.id)
        evses = inv.evses[: cell.evse_hosts]
        expected = self.expected[cell.profile]
        meta: dict[str, Any] = {
            "id": cell.id, "profile": cell.profile, "evse_hosts": cell.evse_hosts,
            "evse_host_names": [h.name for h in evses], "stations_per_host": cell.stations_per_host,
            "repeat": cell.repeat, "baselines": cell.baselines, "status": "running", "started": iso(),
            "ended": None, "phases": {}, "profile_spec": link.spec(cell.profile), "expected": expected,
        }
        if cell.security is not None:
            meta["security"] = cell.security.to_dict()
        if self.schedule is not None:
            from labkit.resultsformat import SCHEDULE_FILE

            meta["schedule"] = {"name": self.schedule.name, "text": self.schedule.text, "file": SCHEDULE_FILE}
        self._set_cell_status(run, cell, "running")
        status = "incomplete"
        if plan.pcap:
            self._pcap_start()
        try:
            applied = self._phase(meta, "shape", lambda: link.apply(r, inv, self.handle.labdir, cell.profile),
                                  cell_dir, fatal=True)
            meta["applied"] = applied
            meta["engine"] = (applied or {}).get("engine")
            if meta["engine"]:
                m = run.manifest()
                if m.get("engine") in (None, meta["engine"]):
                    run.update_manifest(engine=meta["engine"])
            wait_s = 2 + 3 * (expected.get("added_rtt_ms") or 0) / 1000
            if cell.baselines and plan.ping_count:
                rows = self._phase(meta, "ping", lambda: probes.run_pings(
                    r, cell_dir, evses[0], inv.cpo, plan.ping_count, plan.ping_interval_s, wait_s), cell_dir)
                if rows:
                    probes.write_ping_csv(cell_dir / "ping.csv", rows)
                # labkit's own probe (microsecond RTTs: ping prints whole ms above 100 ms), same count and pacing,
                # after ping rather than beside it so neither loads the other's path
                rows = self._phase(meta, "echo", lambda: probes.run_echo(
                    r, cell_dir, evses[0], inv.cpo, plan.ping_count, plan.ping_interval_s, wait_s), cell_dir)
                if rows:
                    probes.write_echo_csv(cell_dir / "echo.csv", rows)
            rates = [v for v in (expected.get("uplink_rate_bps"), expected.get("downlink_rate_bps")) if v]
            tcp_seconds, tcp_omit = tcp_timing(plan, expected.get("added_rtt_ms") or 0, min(rates, default=None))
            if cell.baselines and (tcp_seconds or plan.udp_seconds):
                up = expected.get("uplink_rate_bps") or 0
                down = expected.get("downlink_rate_bps") or 0
                # UDP at half the bottleneck (or 10 Mbit/s unshaped): loss and jitter, not queue overflow
                udp_up = int(min(up / 2, 10e6)) if up else 10_000_000
                udp_down = int(min(down / 2, 10e6)) if down else 10_000_000
                raw = self._phase(meta, "iperf", lambda: probes.run_iperf(
                    r, cell_dir, evses[0], inv.cpo, seconds=tcp_seconds, omit=tcp_omit,
                    udp_seconds=plan.udp_seconds, udp_rate_up_bps=max(udp_up, 8000),
                    udp_rate_down_bps=max(udp_down, 8000)), cell_dir)
                if raw:
                    meta["iperf"] = {k: probes.iperf_figures(v) for k, v in raw.items()}
                    meta["udp_rate_bps"] = {"up": max(udp_up, 8000), "down": max(udp_down, 8000)}
                    meta["tcp_test_s"] = {"seconds": tcp_seconds, "omit": tcp_omit}
            if plan.ocpp_phase:
                phase = OcppPhase(r, inv, plan, cell, cell_dir, run.run_id, self.progress,
                                  gateway_procs=link.engine_processes(inv), secret=self.secret, tls=self.tls,
                                  schedule=self.schedule, schedule_engine=meta["engine"],
                                  schedule_remote=self.handle.remote)
                phase_progress = self.progress

                def prog(msg, done=0, total=None):
                    phase_progress(f"{self.cell_prefix}: {msg}", done, total)

                phase.progress = prog
                meta["ocpp"] = self._phase(meta, "ocpp", phase.run, cell_dir)
                if phase.outage_log:
                    meta["outage"] = phase.outage_log
                if self.schedule is not None:
                    res = phase.schedule_result
                    meta["schedule"].update(ended_by=res.get("ended_by"), holds=res.get("holds"),
                                            phases=len(res.get("phases") or []))
            # the link must still be what was applied after the measurements (a changed qdisc, an engine that
            # died): the cell fails otherwise. After a schedule: the phase it left, in the schedule's frame
            if self.schedule is not None and plan.ocpp_phase:
                self._phase(meta, "verify", lambda: link.reverify_schedule(r, inv, phase.schedule_result,
                                                                           self.schedule), cell_dir)
            else:
                self._phase(meta, "verify", lambda: link.reverify(r, inv, cell.profile, engine=meta["engine"]),
                            cell_dir)
            try:
                meta["link_end"] = link.end_state(r, inv)
            except LabkitError as exc:
                meta["link_end"] = {"error": str(exc)}
            failed = [n for n, p in meta["phases"].items() if p["status"] == "failed"]
            status = "failed" if failed else "complete"
        finally:
            if plan.pcap:
                meta["pcap"] = self._pcap_collect(cell_dir)
            meta.update(status=status, ended=iso())
            write_json(cell_dir / "cell.json", meta)
            self._set_cell_status(run, cell, status)

    def _pcap_start(self) -> None:
        gw = self.inv.gateway
        for iface in sorted(gw.ifaces.values()):
            self.remote.start(gw, f"pcap-{iface}", shlex.join(["tcpdump", "-n", "-U", "-s", "256", "-i", iface,
                                                                "-w", f"{gw.workdir}/{iface}.pcap"]), sudo=True)

    def _pcap_collect(self, cell_dir: Path) -> list[str]:
        gw = self.inv.gateway
        saved = []
        for _net, iface in sorted(gw.ifaces.items()):
            self.remote.stop(gw, f"pcap-{iface}", sudo=True, signal="INT")
            local = cell_dir / "pcap" / f"{gw.name}-{iface}.pcap"
            try:
                self.remote.get(gw, f"{gw.workdir}/{iface}.pcap", local)
                saved.append(str(local.relative_to(cell_dir)))
            except LabkitError as exc:
                self.log(f"labkit bench: pcap {iface}: {exc}")
        return saved

    def _finish(self, run: RunDir, status: str, reason: str) -> None:
        cleared = False
        try:
            self.progress("clearing the link", 0, None)
            from labkit.bench.ocpp import OUTAGE_RULE

            self.remote.run(self.inv.gateway, f"while iptables -D FORWARD {OUTAGE_RULE} 2>/dev/null; do :; done",
                            sudo=True, check=False)
            link.clear(self.remote, self.inv, self.handle.labdir)
            cleared = True
        except BaseException as exc:  # noqa: BLE001 - the guard will try again
            self.log(f"labkit bench: could not clear the link: {exc}")
        try:
            write_summary(run.path)
        except Exception as exc:  # noqa: BLE001
            self.log(f"labkit bench: summary.csv not written: {exc}")
        m = run.manifest()
        for c in m["cells"]:
            if c["status"] == "running":
                c["status"] = "incomplete"
        m.update(status=status if status != "running" else "incomplete", reason=reason, ended=iso(),
                 link_cleared=cleared)
        run.write_manifest(m)
        end = self._clocks()  # after the status is written: a second Ctrl-C here loses only this
        m = run.manifest()
        m.setdefault("clocks", {})["end"] = end
        run.write_manifest(m)

    def _clocks(self) -> dict[str, Any]:
        """Each host's clock offset from this machine's (labkit.clocks, over SSH): what puts the wall-clock stamps
        of several machines on one time line. RTTs do not need it (each is timed on one host's monotonic clock).
        A host that cannot be measured is recorded with the reason."""
        from labkit import clocks

        out: dict[str, Any] = {}
        for h in self.inv.hosts:
            try:
                out[h.name] = clocks.measure(self.remote, h).to_dict()
            except LabkitError as exc:
                out[h.name] = {"error": str(exc)}
        return out


def run_bench(lab_name: str, plan: Plan, *, results_root: Path, argv: list[str] | None = None,
              progress: ProgressFn = _quiet, label: str = "", resume: Path | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), secret: str | None = None) -> RunDir:
    """Validate everything, then run; returns the results directory. ``secret``: the OCPP Basic auth password
    (the plan records ``auth: basic``, never the password)."""
    handle = open_lab(lab_name)
    if resume is not None:
        stored = RunDir.open(resume).manifest()
        plan = Plan.from_dict(stored["plan"])
        if stored.get("lab", {}).get("spec", {}).get("name") != lab_name:
            from labkit.errors import ConfigError

            raise ConfigError(f"--resume: {resume} was run on lab {stored['lab']['spec']['name']!r}, not {lab_name!r}")
    link.use_profiles_files(plan.profiles_files)
    if plan.schedule:
        link.schedule(plan.schedule)  # known, and its profiles too (file, line and field), before anything changes
    validate(plan, lab_evse=len(handle.inventory.evses), known_profiles=link.known_profiles())
    if resume is not None and plan.auth == "basic" and not secret:
        from labkit.errors import ConfigError

        raise ConfigError("--resume: this run used a password (auth: basic): give it again with --password-file "
                          "or LABKIT_OCPP_PASSWORD")
    plan.auth = "basic" if secret else "none"
    if secret is None and plan.needs_password():
        import secrets

        # security profiles 1 and 2 without a password given: one made for this run, known to nobody else
        secret = secrets.token_urlsafe(24)
    bench = Bench(handle, plan, results_root=results_root, argv=argv or sys.argv, progress=progress,
                  label=label, resume=resume, log=log, secret=secret)
    return bench.run()
