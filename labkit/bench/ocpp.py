"""The OCPP phase of a cell: the CSMS on the CPO, one fleet per EVSE host, monitors, an optional outage or
schedule.

Everything is started over SSH as background processes (``labkit csms``, ``labkit fleet``,
``labkit monitor``), followed through the status files they rewrite every second, stopped with SIGTERM
(they flush on the way out) and collected into the cell directory. An outage cuts the data path on the
gateway (an iptables DROP rule in FORWARD: 100% loss both ways, under either engine) for a while.

A schedule (``labkit bench --schedule``) runs in a thread of its own with its own SSH connection
(``labkit.schedules.run``): its first phase is applied whole before the CSMS starts, its clock starts when
the fleets have been started (as an outage's does), each next phase is switched in place at its time, and
it is stopped when the fleets are done (the phase that holds then ends; an outage is lifted). What it ran is
written to the cell's ``schedule.json`` after every phase (``labkit.resultsformat.SCHEDULE``).
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import resultsformat as RF
from labkit.bench.labcerts import LabTLS
from labkit.bench.plan import Cell, Plan
from labkit.errors import LabkitError, RemoteError
from labkit.inventory import HostConn, Inventory
from labkit.remote import Remote

CSMS_PORT = 9000
#: how long the CSMS may take to listen while its process is alive (a crash ends the wait at once): its
#: imports and schema compilation took over 20 s in a software-emulated (TCG) VM on a loaded machine
CSMS_READY_TIMEOUT_S = 180
OUTAGE_RULE = "-m comment --comment labkit-outage -j DROP"
#: a fleet whose status file (rewritten every second) has not changed for this long has stalled: a full disk,
#: a stopped process. Generous: 10,000 stations over TLS delayed a status write by 3.5 s at most.
STATUS_STALE_S = 30.0


class PhaseError(LabkitError):
    """The OCPP phase could not run (a process died, nothing answered)."""


class StatusWatch:
    """When each host's status file last changed (its ``t_wall``), on this machine's monotonic clock: the
    hosts' clocks are never compared with this one's, only each stamp with the one before."""

    def __init__(self, stale_s: float = STATUS_STALE_S):
        self.stale_s = stale_s
        self._last: dict[str, tuple[Any, float]] = {}

    def see(self, host: str, status: dict | None, now: float) -> None:
        if not status:
            return
        stamp = status.get("t_wall")
        last = self._last.get(host)
        if last is None or last[0] != stamp:
            self._last[host] = (stamp, now)

    def stale(self, now: float, hosts: list[str]) -> dict[str, float]:
        """Of ``hosts``, those seen before whose status has not changed for over ``stale_s``: host -> seconds."""
        out = {}
        for h in hosts:
            last = self._last.get(h)
            if last is not None and now - last[1] > self.stale_s:
                out[h] = now - last[1]
        return out


@dataclass
class OcppPhase:
    remote: Remote
    inventory: Inventory
    plan: Plan
    cell: Cell
    cell_dir: Path
    run_id: str
    progress: Callable[[str, int, int | None], None]
    gateway_procs: dict[str, str] = field(default_factory=dict)  # name -> pid file (the shaping engine)
    outage_log: dict[str, Any] = field(default_factory=dict)
    #: the HTTP Basic auth password (OCPP security profiles 1 and 2), or None; never in argv, logs or results:
    #: it reaches the hosts as a file in a private directory, removed once the CSMS and the fleets have read it
    secret: str | None = field(default=None, repr=False)
    _secret_files: dict[str, str] = field(default_factory=dict, repr=False)
    #: the lab's certificates (security profiles 2 and 3): pushed per host into a private directory
    tls: LabTLS | None = field(default=None, repr=False)
    _tls_dirs: dict[str, str] = field(default_factory=dict, repr=False)
    #: the schedule the link runs during the phase (labkit.profiles.Schedule), the engine the cell's profile was
    #: applied with, and how to open the schedule's own SSH connection (a Remote factory)
    schedule: Any = None
    schedule_engine: str | None = None
    schedule_remote: Callable[[], Remote] | None = field(default=None, repr=False)
    #: what labkit.schedules.run returned (also in the cell's schedule.json); {} until it ended
    schedule_result: dict[str, Any] = field(default_factory=dict)
    _sched: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the CSMS was started / was found gone when the phase stopped it (it runs until stopped: it failed)
    _csms_started: bool = field(default=False, repr=False)
    _csms_exited: bool = field(default=False, repr=False)

    @property
    def uses_password(self) -> bool:
        sec = self.cell.security
        return bool(self.secret) and (sec is None or sec.profile in (1, 2))

    @property
    def evses(self) -> list[HostConn]:
        return self.inventory.evses[: self.cell.evse_hosts]

    # -- commands -----------------------------------------------------------------------------------
    def csms_command(self, cpo: HostConn) -> str:
        wd = cpo.workdir
        hb = max(1, int(round(self.plan.heartbeat_s)))
        args = [cpo.labkit, "csms", "--listen", f"{cpo.addresses['cpo']}:{CSMS_PORT}",
                "--heartbeat-interval", str(hb), "--out", f"{wd}/csms.csv", "--status", f"{wd}/csms-status.json"]
        if cpo.name in self._secret_files:
            args += ["--password-file", self._secret_files[cpo.name]]
        sec = self.cell.security
        if sec is not None:
            args += ["--security-profile", str(sec.profile)]
            if sec.tls:
                d = self._tls_dirs[cpo.name]
                for stem in ("server", "server-rsa"):
                    args += ["--tls-cert", f"{d}/{stem}.pem", "--tls-key", f"{d}/{stem}.key"]
                if sec.profile == 3:
                    args += ["--client-ca", f"{d}/ca.pem"]
        return shlex.join(args)

    def fleet_command(self, evse: HostConn) -> str:
        p, wd = self.plan, evse.workdir
        cpo = self.inventory.cpo
        sec = self.cell.security
        scheme = "wss" if sec is not None and sec.tls else "ws"
        args = [
            evse.labkit, "fleet", "--url", f"{scheme}://{cpo.addresses['cpo']}:{CSMS_PORT}/",
            "--stations", str(self.cell.stations_per_host), "--scenario", p.scenario, "--ocpp", p.ocpp,
            "--id-prefix", f"{evse.name}-cs", "--host-label", evse.name, "--run-id", self.run_id,
            "--seed", str(p.seed * 1000 + evse.index), "--heartbeat", f"{p.heartbeat_s:g}",
            "--out", f"{wd}/calls.csv", "--events", f"{wd}/events.csv", "--status", f"{wd}/fleet-status.json",
        ]
        if p.ws_ping_interval_s is not None:
            timeout = p.ws_ping_timeout_s if p.ws_ping_timeout_s is not None else p.ws_ping_interval_s
            args += ["--ping-interval", f"{p.ws_ping_interval_s:g}", "--ping-timeout", f"{timeout:g}",
                     "--close-timeout", f"{max(timeout, 1):g}"]
        if evse.name in self._secret_files:
            args += ["--password-file", self._secret_files[evse.name]]
        if sec is not None and sec.tls:
            d = self._tls_dirs[evse.name]
            args += ["--ca", f"{d}/ca.pem", "--tls-version", str(sec.tls_version),
                     "--tls-resumption" if sec.resumption else "--no-tls-resumption"]
            if sec.profile == 3:
                args += ["--cert-dir", d]
        if p.scenario == "thesis-2021":
            args += ["--meter-values", str(p.meter_values), "--meter-interval", f"{p.meter_interval_s:g}"]
        else:
            args += ["--duration", f"{p.session_duration_s:g}", "--meter-interval", f"{p.meter_interval_s:g}"]
            if p.think_time_s is not None:
                args += ["--think-time", f"{p.think_time_s:g}"]
        return shlex.join(args)

    # -- run ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r, cpo, gw = self.remote, self.inventory.cpo, self.inventory.gateway
        hosts = [cpo, gw] + self.evses
        def fresh(h: HostConn) -> str:
            wd = shlex.quote(h.workdir)
            files = " ".join(f"{wd}/{f}" for f in ("calls.csv", "events.csv", "csms.csv", "monitor.csv"))
            return f"mkdir -p {wd} && rm -f {files} {wd}/*-status.json"

        r.run_many(hosts, fresh, sudo=True)
        sec = self.cell.security
        summary: dict[str, Any] = {"started": time.time(), "auth": "basic" if self.uses_password else "none"}
        if sec is not None:
            summary["security"] = sec.to_dict()
        try:
            if self.uses_password:
                self._push_secret([cpo] + self.evses)
            if sec is not None and sec.tls:
                self.progress("ocpp: certificates to the hosts", 0, None)
                self._push_tls(cpo)
            if self.schedule is not None:
                self.progress(f"ocpp: schedule {self.schedule.name}: first phase", 0, None)
                self._schedule_start()
            self.progress("ocpp: starting the CSMS", 0, None)
            r.start(cpo, "csms", self.csms_command(cpo), sudo=True, nofile=1048576)
            self._csms_started = True
            t_csms = time.monotonic()
            self._wait_status(cpo, "csms-status.json", lambda s: s.get("phase") == "listening", "csms",
                              CSMS_READY_TIMEOUT_S)
            summary["csms_ready_s"] = round(time.monotonic() - t_csms, 2)
            self._start_monitors(hosts)
            self.progress("ocpp: starting the fleets", 0, len(self.evses))
            r.start_many(self.evses, "fleet", self.fleet_command, sudo=True, nofile=1048576)
            if self.uses_password:
                # a fleet writes its status file only after reading its configuration, the password included
                self._each(self.evses, lambda h: self._wait_status(h, "fleet-status.json", lambda s: True, "fleet",
                                                                  CSMS_READY_TIMEOUT_S))
                self._forget_secret()
            if self.schedule is not None:
                self._sched["begin"].set()  # the schedule's clock starts with the stations
            summary["fleets"] = self._follow()
        finally:
            self._forget_secret()
            self._schedule_stop()
            self._restore_link()
            self._stop_all(hosts)
            self._forget_tls()  # after the fleets stopped: a station loads its key at its first connection
            summary["ended"] = time.time()
            self._collect(hosts)
            summary.update(self._final_statuses())
        if self._csms_exited:  # it runs until stopped: gone before that, it failed (a full disk: csms.csv cut)
            log = (self.cell_dir / "logs" / "csms.log")
            text = log.read_text(errors="replace").strip()[-300:] if log.exists() else ""
            raise PhaseError(f"{cpo.name}: the CSMS exited during the run: {text or self._with_space(cpo)}")
        why = (summary.get("csms") or {}).get("write_error")
        if why:
            raise PhaseError(f"{cpo.name}: the CSMS could not write its results: {why}")
        if self.outage_log:
            summary["outage"] = self.outage_log
        if self.schedule is not None:
            res = self.schedule_result
            summary["schedule"] = {"name": self.schedule.name, "file": RF.SCHEDULE_FILE,
                                   "ended_by": res.get("ended_by"), "holds": res.get("holds"),
                                   "phases": len(res.get("phases") or [])}
            error = self._sched.get("error")
            if error is not None:
                raise PhaseError(f"schedule {self.schedule.name!r}: {error}")
        return summary

    # -- schedule -----------------------------------------------------------------------------------
    def _schedule_start(self) -> None:
        """Start the schedule's thread; return once its first phase is applied whole (raise if it was not)."""
        from labkit import schedules
        from labkit.bench import link

        if self.schedule_remote is None:
            raise PhaseError("a schedule needs its own connection to the gateway (schedule_remote)")
        st: dict[str, Any] = {"stop": threading.Event(), "begin": threading.Event(), "applied": threading.Event(),
                              "error": None, "phase": None}
        self._sched = st
        ps = link.profile_set()
        n = len(self.schedule.phases)

        def ready() -> None:
            st["applied"].set()
            while not st["begin"].wait(0.2):
                if st["stop"].is_set():
                    return

        def on_phase(rec: Any) -> None:
            st["phase"] = f"phase {rec.index + 1}/{n} {rec.label}" + (f" (pass {rec.cycle + 1})"
                                                                       if self.schedule.repeat else "")

        def body() -> None:
            remote = None
            try:
                remote = self.schedule_remote()
                self.schedule_result = schedules.run(
                    remote, self.inventory, self.schedule, ps, engine=self.schedule_engine or "auto", seed=1,
                    stop=st["stop"], on_phase=on_phase, record=self.cell_dir / RF.SCHEDULE_FILE,
                    max_cycles=self.plan.schedule_cycles, ready=ready,
                    clock_hosts=[h.name for h in (self.inventory.cpo, *self.evses)])
            except BaseException as exc:  # noqa: BLE001 - reported by the phase (the link was cleared)
                st["error"] = exc
            finally:
                if remote is not None:
                    remote.close()
                st["applied"].set()

        thread = threading.Thread(target=body, name="labkit-schedule", daemon=True)
        st["thread"] = thread
        thread.start()
        if not st["applied"].wait(180):
            raise PhaseError(f"schedule {self.schedule.name!r}: its first phase was not applied within 180 s")
        if st["error"] is not None:
            raise PhaseError(f"schedule {self.schedule.name!r}: {st['error']}")

    def _schedule_check(self) -> None:
        error = self._sched.get("error")
        if error is not None:
            raise PhaseError(f"schedule {self.schedule.name!r} stopped: {error}")

    def _schedule_stop(self) -> None:
        """End the schedule (the phase that holds ends now; an outage is lifted) and wait for its thread."""
        thread = self._sched.get("thread")
        if thread is None:
            return
        self._sched["stop"].set()
        thread.join(120)
        if thread.is_alive() and self._sched.get("error") is None:
            self._sched["error"] = LabkitError("the schedule did not stop within 120 s")
            return
        res = self.schedule_result
        if res.get("ended_by") == "last phase holds" and res.get("phases"):
            # a last phase without a duration held until now, the end of the OCPP phase: its end, gateway's clock
            from labkit import shaping
            from labkit.bench.results import write_json

            try:
                res["phases"][-1]["applied_end"] = shaping.gateway_clock(self.remote, self.inventory)["applied_at"]
                res["ended"] = time.time()
                write_json(self.cell_dir / RF.SCHEDULE_FILE, res)
            except LabkitError as exc:
                res.setdefault("problems", []).append(f"the last phase's end was not recorded: {exc}")

    # -- the password -----------------------------------------------------------------------------------
    def _each(self, hosts: list[HostConn], fn: Callable[[HostConn], Any]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, max(len(hosts), 1))) as pool:
            return list(pool.map(fn, hosts))

    def _push_secret(self, hosts: list[HostConn]) -> None:
        """Write the password to a private directory on each host (``mktemp -d``: 0700), as a 0600 file over
        SFTP; the commands name that file (``--password-file``)."""
        lab = shlex.quote(f"labkit-secret-{self.inventory.lab}.XXXXXXXX")

        def push(h: HostConn) -> tuple[str, str]:
            d = self.remote.run(h, f"mktemp -d -p \"${{TMPDIR:-/tmp}}\" {lab}").stdout.strip()
            path = f"{d}/ocpp-password"
            self.remote.write_secret(h, path, self.secret + "\n")
            return h.name, path

        self._secret_files.update(self._each(hosts, push))

    def _forget_secret(self) -> None:
        files, self._secret_files = dict(self._secret_files), {}
        if not files:
            return
        hosts = [self.inventory.host(n) for n in files]
        self._each(hosts, lambda h: self.remote.run(
            h, f"rm -rf {shlex.quote(str(Path(files[h.name]).parent))}", sudo=True, check=False))

    def _push_tls(self, cpo: HostConn) -> None:
        """The CSMS's certificates and keys to the CPO, each station's to its EVSE host (profile 3), the CA's
        certificate to all; each into a private directory of its own (``labcerts.push``)."""
        from labkit.bench import labcerts
        from labkit.sim.tlsca import station_ids

        if self.tls is None:
            raise PhaseError("security profile with TLS but no lab certificates (labcerts.ensure)")
        tls, lab = self.tls, self.inventory.lab
        wanted = {cpo.name: tls.server_files()}
        for h in self.evses:
            ids = station_ids(f"{h.name}-cs", self.cell.stations_per_host) if self.cell.security.profile == 3 else []
            wanted[h.name] = tls.station_files(ids)
        hosts = [cpo] + self.evses
        self._tls_dirs.update(self._each(hosts, lambda h: (h.name, labcerts.push(self.remote, h, lab,
                                                                                   wanted[h.name]))))

    def _forget_tls(self) -> None:
        dirs, self._tls_dirs = dict(self._tls_dirs), {}
        if dirs:
            hosts = [self.inventory.host(n) for n in dirs]
            self._each(hosts, lambda h: self.remote.run(h, f"rm -rf {shlex.quote(dirs[h.name])}", sudo=True,
                                                        check=False))

    def _start_monitors(self, hosts: list[HostConn]) -> None:
        def cmd(h: HostConn) -> str:
            procs = {"cpo": {"csms": "csms.pid"}, "evse": {"fleet": "fleet.pid"}}.get(h.role, {})
            args = [h.labkit, "monitor", "--out", f"{h.workdir}/monitor.csv", "--host", h.name,
                    "--role", h.role]
            for name, pidfile in procs.items():
                args += ["--proc", f"{name}={h.workdir}/{pidfile}"]
            if h.role == "gateway":
                for name, pidfile in self.gateway_procs.items():
                    args += ["--proc", f"{name}={pidfile}"]
            return shlex.join(args)

        self.remote.start_many(hosts, "monitor", cmd, sudo=True)

    def _wait_status(self, h: HostConn, name: str, ready: Callable[[dict], bool], proc: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self._status(h, name)
            if st and ready(st):
                return st
            if not self.remote.alive(h, proc, sudo=True):
                raise PhaseError(f"{h.name}: {proc} exited: {self.remote.read_log(h, proc, sudo=True).strip()[-300:]}")
            time.sleep(0.2)
        raise PhaseError(f"{h.name}: {proc} not ready after {timeout:.0f} s")

    def _status(self, h: HostConn, name: str) -> dict | None:
        try:
            text = self.remote.read_text(h, f"{h.workdir}/{name}")
        except RemoteError:
            return None
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None

    def _follow(self) -> dict[str, Any]:
        """Poll the fleets until all are finished; cut and restore the link for an outage."""
        p = self.plan
        t0 = time.monotonic()
        per_call = max(self.plan.meter_interval_s, 0.05) + 1.0
        expected_s = (p.meter_values * per_call + 30) if p.scenario == "thesis-2021" else p.session_duration_s + 60
        if p.outage:
            expected_s += p.outage.duration_s + 120
        deadline = t0 + 3 * expected_s + 120
        statuses: dict[str, dict] = {}
        watch = StatusWatch()
        looked = t0  # when the processes were last checked for being alive (every 5 s)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, len(self.evses))) as pool:
            while True:
                elapsed = time.monotonic() - t0
                if p.outage:
                    self._outage_step(elapsed)
                if self.schedule is not None:
                    self._schedule_check()
                latest = pool.map(lambda h: self._status(h, "fleet-status.json"), self.evses)
                now = time.monotonic()
                for h, st in zip(self.evses, latest, strict=True):
                    if st:
                        statuses[h.name] = st
                        watch.see(h.name, st, now)
                        if st.get("write_error"):
                            raise PhaseError(f"{h.name}: the fleet could not write its results: {st['write_error']}")
                done = [s for s in statuses.values() if s.get("finished")]
                connected = sum(s.get("stations_connected", 0) for s in statuses.values())
                calls = sum(s.get("calls_done", 0) for s in statuses.values())
                expected = sum((s.get("calls_expected") or 0) for s in statuses.values()) or None
                phase = f"{self._sched['phase']}, " if self._sched.get("phase") else ""
                self.progress(f"ocpp: {phase}{connected}/{self.cell.stations} stations connected, {len(done)}/"
                              f"{len(self.evses)} fleets done", calls, expected)
                if len(done) == len(self.evses):
                    break
                if time.monotonic() > deadline:
                    raise PhaseError(f"the fleets did not finish within {deadline - t0:.0f} s")
                missing = [h for h in self.evses if not statuses.get(h.name, {}).get("finished")]
                stale = watch.stale(now, [h.name for h in missing])
                if stale:
                    name, secs = max(stale.items(), key=lambda kv: kv[1])
                    host = self.inventory.host(name)
                    log = self.remote.read_log(host, "fleet", sudo=True).strip()[-200:]
                    raise PhaseError(f"{name}: the fleet's status file has not changed for {secs:.0f} s "
                                     f"({self._with_space(host, log)})")
                if now - looked >= 5.0:
                    looked = now
                    dead = [h.name for h in missing if not self.remote.alive(h, "fleet", sudo=True)]
                    if dead:
                        # one more look: it may have finished between the two reads
                        late = [n for n in dead if (self._status(self.inventory.host(n), "fleet-status.json") or {})
                                .get("finished")]
                        dead = [n for n in dead if n not in late]
                        if dead:
                            host = self.inventory.host(dead[0])
                            log = self.remote.read_log(host, "fleet", sudo=True).strip()[-300:]
                            raise PhaseError(f"{dead[0]}: the fleet exited before finishing: "
                                             f"{log or self._with_space(host)}")
                    cpo = self.inventory.cpo
                    if not self.remote.alive(cpo, "csms", sudo=True):
                        log = self.remote.read_log(cpo, "csms", sudo=True).strip()[-300:]
                        raise PhaseError(f"{cpo.name}: the CSMS exited during the run: {log or self._with_space(cpo)}")
                time.sleep(1.0)
        return statuses

    # -- outage -------------------------------------------------------------------------------------
    def _outage_step(self, elapsed: float) -> None:
        o = self.plan.outage
        gw = self.inventory.gateway
        if not self.outage_log and elapsed >= o.at_s:
            self.remote.run(gw, f"iptables -I FORWARD 1 {OUTAGE_RULE}", sudo=True)
            self.outage_log = {"start_s": o.at_s, "duration_s": o.duration_s, "t_wall_start": time.time(),
                               "method": "iptables -I FORWARD DROP on the gateway (100% loss both ways)"}
            self.progress("ocpp: link cut (outage)", 0, None)
        elif self.outage_log and "t_wall_end" not in self.outage_log and elapsed >= o.at_s + o.duration_s:
            self._restore_link()

    def _restore_link(self) -> None:
        if self.outage_log and "t_wall_end" not in self.outage_log:
            gw = self.inventory.gateway
            self.remote.run(gw, f"while iptables -D FORWARD {OUTAGE_RULE} 2>/dev/null; do :; done", sudo=True,
                            check=False)
            self.outage_log["t_wall_end"] = time.time()

    # -- stop and collect ---------------------------------------------------------------------------
    def _with_space(self, h: HostConn, log: str = "") -> str:
        """``log`` (or "its log is empty") and the free space where the process writes: a full disk is the
        usual reason a simulator stalls or stops with no word."""
        res = self.remote.run(h, f"df -Pk {shlex.quote(h.workdir)} | tail -n 1", check=False)
        fields = res.stdout.split()
        free = f"{h.workdir} has {fields[3]} KiB free" if len(fields) >= 4 and fields[3].isdigit() else ""
        return "; ".join(x for x in (log.strip() or "its log is empty", free) if x)

    def _stop_all(self, hosts: list[HostConn]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def stop(h: HostConn) -> None:
            try:
                for name in ("fleet", "csms", "monitor"):
                    was_running = self.remote.stop(h, name, sudo=True, timeout=15 if name == "fleet" else 5)
                    if name == "csms" and h.role == "cpo" and not was_running and self._csms_started:
                        self._csms_exited = True
            except RemoteError:
                pass

        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            list(pool.map(stop, hosts))

    def _collect(self, hosts: list[HostConn]) -> None:
        collect(self.remote, hosts, self.cell_dir)

    def _final_statuses(self) -> dict[str, Any]:
        """The CSMS's and each fleet's last status as collected (what really ran: event loop, validation mode,
        versions, counters), for cell.json's ``ocpp`` summary."""
        out: dict[str, Any] = {}
        logs = self.cell_dir / "logs"
        try:
            out["csms"] = json.loads((logs / "csms-status.json").read_text())
        except (OSError, ValueError):
            pass
        fleets = {}
        for h in self.evses:
            try:
                fleets[h.name] = json.loads((logs / f"fleet-status-{h.name}.json").read_text())
            except (OSError, ValueError):
                pass
        if fleets:
            out["fleets"] = fleets
        return out


def collect(remote: Remote, hosts: list[HostConn], cell_dir: Path) -> None:
    """Fetch what the OCPP phase left on the hosts into the cell directory (also used by the guard)."""
    from concurrent.futures import ThreadPoolExecutor

    ocpp_dir = cell_dir / "ocpp"
    logs = cell_dir / "logs"
    ocpp_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)

    def fetch(h: HostConn) -> None:
        wanted = [("monitor.csv", cell_dir / "monitors" / f"{h.name}.csv")]
        if h.role == "cpo":
            wanted += [("csms.csv", ocpp_dir / "csms.csv"), ("csms.log", logs / "csms.log"),
                       ("csms-status.json", logs / "csms-status.json")]
        if h.role == "evse":
            wanted += [("calls.csv", ocpp_dir / f"calls-{h.name}.csv"),
                       ("events.csv", ocpp_dir / f"events-{h.name}.csv"),
                       ("fleet.log", logs / f"fleet-{h.name}.log"),
                       ("fleet-status.json", logs / f"fleet-status-{h.name}.json")]
        for remote_name, local in wanted:
            text = remote.read_text(h, f"{h.workdir}/{remote_name}")
            if text is not None:
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(text)

    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        list(pool.map(fetch, hosts))
    merge_csv(sorted((cell_dir / "monitors").glob("*.csv")), cell_dir / "monitor.csv")


def merge_csv(parts: list[Path], out: Path) -> None:
    """Concatenate CSV files with the same header (torn last lines dropped)."""
    header = None
    lines: list[str] = []
    for part in parts:
        rows = part.read_text().splitlines()
        if not rows:
            continue
        if header is None:
            header = rows[0]
        width = header.count(",")
        lines += [r for r in rows[1:] if r.count(",") == width]
    if header is not None:
        out.write_text("\n".join([header] + lines) + "\n")
