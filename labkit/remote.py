"""Reaching lab hosts: Fabric (over paramiko) connections, parallel commands, background processes, files.

This is the only way labkit touches a host once it is up, on namespaces and on VMs alike. Host keys are
checked strictly when the backend knows them (netns: the lab's own known_hosts); the client key is the
lab's own. Every command is logged to the lab's log when a log file is given.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from labkit.errors import RemoteError
from labkit.inventory import HostConn, Inventory


@dataclass
class RunResult:
    host: str
    command: str
    stdout: str
    stderr: str
    exited: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exited == 0


def _config() -> Config:
    """A Fabric configuration that reads no files: no ~/.ssh/config or /etc/ssh/ssh_config (a ``Host *``
    ProxyJump, User or Port there must not apply to a lab's hosts) and no Fabric/Invoke config files or
    FABRIC_* environment; everything a lab connection needs is given explicitly."""
    return Config(lazy=True, ssh_config=paramiko.SSHConfig())


def _connection(host: HostConn, connect_timeout: float) -> Connection:
    conn = Connection(
        host=host.ssh_host,
        user=host.user,
        port=host.ssh_port,
        config=_config(),
        connect_timeout=connect_timeout,
        connect_kwargs={
            "key_filename": [host.key_file] if host.key_file else None,
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": connect_timeout,
            "auth_timeout": connect_timeout,
        },
    )
    client = conn.client
    if host.known_hosts:
        client.load_host_keys(host.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    return conn


class Remote:
    """Connections to every host of an inventory, opened lazily and reused."""

    def __init__(self, inventory: Inventory, *, log: Path | None = None, connect_timeout: float = 10.0,
                 max_parallel: int = 32):
        self.inventory = inventory
        self.connect_timeout = connect_timeout
        self.max_parallel = max_parallel
        self._conns: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._log = open(log, "a", encoding="utf-8") if log else None
        self._log_lock = threading.Lock()

    # -- connections --------------------------------------------------------------------------------
    def host(self, name_or_host: str | HostConn) -> HostConn:
        if isinstance(name_or_host, HostConn):
            return name_or_host
        return self.inventory.host(name_or_host)

    def conn(self, host: str | HostConn) -> Connection:
        h = self.host(host)
        with self._lock:
            c = self._conns.get(h.name)
            if c is None:
                c = self._conns[h.name] = _connection(h, self.connect_timeout)
        return c

    def connect(self, host: str | HostConn) -> Connection:
        """Open the SSH session now (raises RemoteError with the reason); a no-op when already open."""
        h = self.host(host)
        conn = self.conn(h)
        if conn.is_connected:
            return conn
        with self._lock:
            host_lock = self._host_locks.setdefault(h.name, threading.Lock())
        with host_lock:  # threads sharing a host must not open its connection twice
            if conn.is_connected:
                return conn
            return self._open(h, conn)

    def _open(self, h: HostConn, conn: Connection) -> Connection:
        try:
            conn.open()
            # Commands are small request/response exchanges: without TCP_NODELAY each one waits for a
            # delayed ACK (about 40 ms a command).
            conn.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._discard(h.name, conn)
            raise RemoteError(f"{h.name}: cannot reach {h.user}@{h.ssh_host}:{h.ssh_port} over SSH: "
                              f"{_reason(exc)}") from None

    def _discard(self, name: str, conn: Connection | None = None) -> None:
        """Forget a host's connection and close it (its socket and transport thread), so that a host that keeps
        failing (a wrong host key, sshd flooded) does not pile up half-open connections."""
        with self._lock:
            current = self._conns.get(name)
            if conn is None or current is conn:
                self._conns.pop(name, None)
            conn = conn or current
        if conn is not None:
            # Fabric's close() does nothing unless the connection is up; a connection whose host key or
            # authentication failed still holds paramiko's transport (a socket and a thread): close the client.
            for close in (conn.close, conn.client.close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing what failed to open
                    pass

    def wait(self, hosts: Iterable[HostConn] | None = None, timeout: float = 60.0,
             progress: Callable[[int, int], None] | None = None) -> None:
        """Wait until every host answers a command over SSH; raise naming those that never did."""
        pending = {h.name: h for h in (hosts if hosts is not None else self.inventory.hosts)}
        total = len(pending)
        deadline = time.monotonic() + timeout
        last_error: dict[str, str] = {}

        def probe(h: HostConn) -> tuple[str, str | None]:
            try:
                self.connect(h).run("true", hide=True, in_stream=False, timeout=self.connect_timeout)
                return h.name, None
            except Exception as exc:  # noqa: BLE001 - every failure means "not yet"
                self._discard(h.name)
                return h.name, _reason(exc)

        with ThreadPoolExecutor(max_workers=min(self.max_parallel, max(total, 1))) as pool:
            while pending:
                for name, err in pool.map(probe, list(pending.values())):
                    if err is None:
                        pending.pop(name, None)
                    else:
                        last_error[name] = err
                if progress:
                    progress(total - len(pending), total)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    names = ", ".join(sorted(pending)[:5]) + (" ..." if len(pending) > 5 else "")
                    first = last_error.get(sorted(pending)[0], "no answer")
                    raise RemoteError(f"{len(pending)} host(s) never answered over SSH within {timeout:.0f} s: "
                                      f"{names} ({first})")
                time.sleep(0.2)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------------
    def run(self, host: str | HostConn, command: str, *, sudo: bool = False, check: bool = True,
            timeout: float | None = None) -> RunResult:
        """Run a shell command on a host; ``sudo`` only takes effect where the host needs it."""
        h = self.host(host)
        full = f"sudo -n sh -c {shlex.quote(command)}" if (sudo and h.sudo) else command
        t0 = time.monotonic()
        try:
            res = self.connect(h).run(full, hide=True, warn=True, in_stream=False, timeout=timeout)
            out = RunResult(h.name, command, res.stdout, res.stderr, res.exited, time.monotonic() - t0)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._discard(h.name)
            raise RemoteError(f"{h.name}: SSH failed running {command!r}: {_reason(exc)}") from None
        except CommandTimedOut:
            raise RemoteError(f"{h.name}: {command!r} did not finish within {timeout} s") from None
        self._write_log(out)
        if check and not out.ok:
            detail = (out.stderr.strip() or out.stdout.strip()).splitlines()
            tail = detail[-1] if detail else "no output"
            raise RemoteError(f"{h.name}: {command!r} failed (exit {out.exited}): {tail}")
        return out

    def run_many(self, hosts: Iterable[str | HostConn], command: str | Callable[[HostConn], str], *,
                 sudo: bool = False, check: bool = True, timeout: float | None = None) -> dict[str, RunResult]:
        """Run on several hosts in parallel; ``command`` may be a function of the host."""
        hs = [self.host(h) for h in hosts]

        def one(h: HostConn) -> RunResult:
            cmd = command(h) if callable(command) else command
            return self.run(h, cmd, sudo=sudo, check=check, timeout=timeout)

        results: dict[str, RunResult] = {}
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, max(len(hs), 1))) as pool:
            futures = {h.name: pool.submit(one, h) for h in hs}
            for name, fut in futures.items():
                try:
                    results[name] = fut.result()
                except RemoteError as exc:
                    errors.append(str(exc))
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise RemoteError(errors[0] + more)
        return results

    # -- background processes ------------------------------------------------------------------------
    def _paths(self, h: HostConn, name: str) -> tuple[str, str]:
        return f"{h.workdir}/{name}.pid", f"{h.workdir}/{name}.log"

    def start(self, host: str | HostConn, name: str, command: str, *, sudo: bool = False,
              nofile: int | None = None) -> int:
        """Start ``command`` detached (own session), its pid in ``workdir/name.pid``, output in ``name.log``.

        ``nofile`` raises the open-files limit first (a fleet of thousands of stations needs one per socket).
        """
        h = self.host(host)
        pidfile, logfile = self._paths(h, name)
        limit = f"ulimit -n {nofile} 2>/dev/null || ulimit -n $(ulimit -Hn); " if nofile else ""
        inner = f"echo $$ > {shlex.quote(pidfile)}; {limit}exec {command}"
        # the braces keep '&' on the setsid command alone: without them the whole '&&' list went to the
        # background in a subshell that held the SSH channel open until the command exited
        script = (f"mkdir -p {shlex.quote(h.workdir)} && rm -f {shlex.quote(pidfile)} && "
                  f"{{ setsid sh -c {shlex.quote(inner)} > {shlex.quote(logfile)} 2>&1 < /dev/null & }}; "
                  f"for i in $(seq 50); do [ -s {shlex.quote(pidfile)} ] && break; sleep 0.02; done; "
                  f"cat {shlex.quote(pidfile)}")
        res = self.run(h, script, sudo=sudo)
        try:
            return int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RemoteError(f"{h.name}: could not start {name}: {res.stderr.strip() or 'no pid'}") from None

    def start_many(self, hosts: Iterable[str | HostConn], name: str, command: Callable[[HostConn], str], *,
                   sudo: bool = False, nofile: int | None = None) -> dict[str, int]:
        """``start`` on several hosts in parallel; returns their pids."""
        hs = [self.host(h) for h in hosts]
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, max(len(hs), 1))) as pool:
            futures = {h.name: pool.submit(self.start, h, name, command(h), sudo=sudo, nofile=nofile) for h in hs}
            return {n: f.result() for n, f in futures.items()}

    def alive(self, host: str | HostConn, name: str, *, sudo: bool = False) -> bool:
        h = self.host(host)
        pidfile, _ = self._paths(h, name)
        res = self.run(h, f"kill -0 $(cat {shlex.quote(pidfile)} 2>/dev/null) 2>/dev/null", sudo=sudo, check=False)
        return res.ok

    def stop(self, host: str | HostConn, name: str, *, sudo: bool = False, timeout: float = 5.0,
             signal: str = "TERM") -> bool:
        """Signal the recorded pid, wait up to ``timeout``, then SIGKILL. True if it was running."""
        h = self.host(host)
        pidfile, _ = self._paths(h, name)
        q = shlex.quote(pidfile)
        steps = int(max(timeout, 0.1) / 0.05)
        script = (f"p=$(cat {q} 2>/dev/null) || exit 3; kill -0 \"$p\" 2>/dev/null || {{ rm -f {q}; exit 3; }}; "
                  f"kill -{signal} \"$p\"; i=0; while kill -0 \"$p\" 2>/dev/null && [ $i -lt {steps} ]; do "
                  f"sleep 0.05; i=$((i+1)); done; kill -0 \"$p\" 2>/dev/null && kill -KILL \"$p\"; rm -f {q}; exit 0")
        res = self.run(h, script, sudo=sudo, check=False)
        return res.exited == 0

    def read_log(self, host: str | HostConn, name: str, *, sudo: bool = False, lines: int = 20) -> str:
        h = self.host(host)
        _, logfile = self._paths(h, name)
        return self.run(h, f"tail -n {lines} {shlex.quote(logfile)} 2>/dev/null", sudo=sudo, check=False).stdout

    # -- files ----------------------------------------------------------------------------------------
    def put(self, host: str | HostConn, local: str | Path, remote: str) -> None:
        h = self.host(host)
        try:
            self.connect(h).put(str(local), remote=remote)
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"{h.name}: cannot copy {local} to {remote}: {_reason(exc)}") from None

    def get(self, host: str | HostConn, remote: str, local: str | Path) -> None:
        h = self.host(host)
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.connect(h).get(remote, local=str(local))
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"{h.name}: cannot fetch {remote}: {_reason(exc)}") from None

    def write_secret(self, host: str | HostConn, remote: str, text: str | bytes) -> None:
        """Write ``text`` (or bytes) to the file ``remote`` over SFTP, readable by its owner only (0600); nothing
        of it reaches a command line or the log (put the file in a private directory: it is 0600 only once
        written)."""
        h = self.host(host)
        try:
            sftp = self.connect(h).sftp()
            with sftp.open(remote, "w") as fh:
                fh.chmod(0o600)
                fh.write(text.encode() if isinstance(text, str) else text)
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"{h.name}: cannot write {remote}: {_reason(exc)}") from None

    def read_text(self, host: str | HostConn, remote: str) -> str | None:
        """A remote file's text over SFTP, or None when it does not exist."""
        h = self.host(host)
        try:
            sftp = self.connect(h).sftp()
            with sftp.open(remote, "r") as fh:
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            raise RemoteError(f"{h.name}: cannot read {remote}: {_reason(exc)}") from None

    # -- logging --------------------------------------------------------------------------------------
    def _write_log(self, res: RunResult) -> None:
        if not self._log:
            return
        with self._log_lock:
            self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {res.host} [{res.exited}] "
                            f"{res.seconds * 1000:.0f}ms $ {res.command}\n")
            if res.exited != 0 and res.stderr:
                self._log.write("    " + res.stderr.strip().replace("\n", "\n    ") + "\n")
            self._log.flush()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, paramiko.BadHostKeyException):
        return "host key does not match the lab's known_hosts"
    if isinstance(exc, paramiko.AuthenticationException):
        return "authentication failed (key refused)"
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return "host key not in the lab's known_hosts"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
